//! The standard statement line: what every channel's statement format is normalised into
//! before it is stored and compared, and the typed errors of a malformed statement.

use std::str::FromStr;

use payflow_client::{Currency, Money};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// What a line is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LineKind {
    Payment,
    /// A refund of the trade. `refund_no` is our refund id (Alipay `out_request_no`, WeChat
    /// `out_refund_no`); `None` when the format reports only the trade's refunded total so far
    /// (the sandbox's Alipay-style bill): one such line per trade, compared with the sum of our
    /// succeeded refunds of the order.
    Refund {
        refund_no: Option<String>,
    },
}

impl LineKind {
    /// `Payment` or `Refund`, as stored.
    pub fn as_str(&self) -> &'static str {
        match self {
            LineKind::Payment => "Payment",
            LineKind::Refund { .. } => "Refund",
        }
    }

    pub fn refund_no(&self) -> Option<&str> {
        match self {
            LineKind::Payment => None,
            LineKind::Refund { refund_no } => refund_no.as_deref(),
        }
    }
}

/// The channel's status of the line, normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LineStatus {
    /// The trade is paid (Alipay `TRADE_SUCCESS` / `TRADE_FINISHED`, WeChat `SUCCESS`).
    Paid,
    /// Paid, then refunded in full (the sandbox bill's `TRADE_CLOSED`).
    FullyRefunded,
    /// Paid, then revoked: the money went back (WeChat `REVOKED`).
    Revoked,
    RefundSucceeded,
    /// Accepted by the channel, not final when the statement was cut.
    RefundProcessing,
    /// Closed or abnormal at the channel: no money returned (WeChat `CLOSED`, `REFUNDCLOSE`,
    /// `ABNORMAL`, `CHANGE`).
    RefundFailed,
}

impl LineStatus {
    pub const ALL: [LineStatus; 6] = [
        LineStatus::Paid,
        LineStatus::FullyRefunded,
        LineStatus::Revoked,
        LineStatus::RefundSucceeded,
        LineStatus::RefundProcessing,
        LineStatus::RefundFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LineStatus::Paid => "Paid",
            LineStatus::FullyRefunded => "FullyRefunded",
            LineStatus::Revoked => "Revoked",
            LineStatus::RefundSucceeded => "RefundSucceeded",
            LineStatus::RefundProcessing => "RefundProcessing",
            LineStatus::RefundFailed => "RefundFailed",
        }
    }

    pub fn parse(s: &str) -> Option<LineStatus> {
        LineStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// One line of a channel statement in the standard form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// Where the line starts in the statement file (1-based).
    pub line_no: u64,
    /// Our name of the channel that served the statement.
    pub channel: String,
    /// The channel's trade number (Alipay `trade_no`, WeChat `transaction_id`); on a refund
    /// line, the refunded trade's.
    pub channel_trade_no: String,
    /// The channel's own refund number, when the format gives one.
    pub channel_refund_no: Option<String>,
    /// Our order id, the `out_trade_no` we sent.
    pub order_no: String,
    pub kind: LineKind,
    /// The payment's amount, or the refund's.
    pub amount: Money,
    /// The channel's fee on this line as a non-negative amount: charged on a payment, given
    /// back on a refund. `None` when the format reports no fee (then it is not compared).
    /// Exact as in the file (WeChat writes five decimals); see [`StatementLine::fee_minor`].
    pub fee: Option<Decimal>,
    /// When the channel says it happened (unix ms): paid, or refund accepted.
    pub occurred_at_ms: i64,
    pub status: LineStatus,
}

impl StatementLine {
    /// The fee in minor units, rounded half-up: channels settle fees in whole minor units,
    /// and our ledger books them so.
    pub fn fee_minor(&self) -> Option<i64> {
        let scale = self.amount.currency().minor_units();
        self.fee.map(|fee| {
            let mut f = fee.round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero);
            f.rescale(scale);
            i64::try_from(f.mantissa()).unwrap_or(i64::MAX)
        })
    }
}

/// A statement that cannot be read. Every error about the content names its line (1-based,
/// as an editor shows it).
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error("reading line {line}: {source}")]
    Io {
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line} is not UTF-8 text (a GBK bill must be decoded first)")]
    NotUtf8 { line: u64 },
    #[error("line {line} is longer than {max} bytes")]
    LineTooLong { line: u64, max: usize },
    #[error("line {line}: a quoted field is never closed")]
    UnterminatedQuote { line: u64 },
    #[error("the statement has no header line")]
    MissingHeader,
    #[error("line {line}: the header has no column {column:?}")]
    MissingColumn { line: u64, column: &'static str },
    #[error("line {line}: {found} fields where the header has {expected}")]
    FieldCount {
        line: u64,
        expected: usize,
        found: usize,
    },
    #[error("line {line}: field {field:?} = {value:?}: {reason}")]
    Field {
        line: u64,
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("line {line}: unknown status {status:?}")]
    UnknownStatus { line: u64, status: String },
    #[error("line {line}: summary {field:?} says {stated}, the lines add up to {computed}")]
    SummaryMismatch {
        line: u64,
        field: String,
        stated: String,
        computed: String,
    },
    #[error("line {line}: malformed summary: {reason}")]
    Summary { line: u64, reason: String },
    #[error("line {line}: more data after the summary")]
    AfterSummary { line: u64 },
    #[error("the statement ends without its summary lines (truncated download?)")]
    MissingSummary,
}

impl StatementError {
    /// The line the error is about, when it is about one.
    pub fn line(&self) -> Option<u64> {
        match self {
            StatementError::Io { line, .. }
            | StatementError::NotUtf8 { line }
            | StatementError::LineTooLong { line, .. }
            | StatementError::UnterminatedQuote { line }
            | StatementError::MissingColumn { line, .. }
            | StatementError::FieldCount { line, .. }
            | StatementError::Field { line, .. }
            | StatementError::UnknownStatus { line, .. }
            | StatementError::SummaryMismatch { line, .. }
            | StatementError::Summary { line, .. }
            | StatementError::AfterSummary { line } => Some(*line),
            StatementError::MissingHeader | StatementError::MissingSummary => None,
        }
    }
}

pub(crate) fn field_error(
    line: u64,
    field: &'static str,
    value: &str,
    reason: impl Into<String>,
) -> StatementError {
    StatementError::Field {
        line,
        field,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A decimal number as statements write it: digits with an optional point and sign. No
/// exponents or thousands separators (a spreadsheet-mangled `4.2E+27` is refused, not read).
pub(crate) fn parse_decimal(
    line: u64,
    field: &'static str,
    text: &str,
) -> Result<Decimal, StatementError> {
    let t = text.trim();
    let digits = t.strip_prefix('-').unwrap_or(t);
    let ok = !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().any(|c| c.is_ascii_digit());
    if !ok {
        return Err(field_error(line, field, text, "not a decimal number"));
    }
    Decimal::from_str(t).map_err(|e| field_error(line, field, text, e.to_string()))
}

/// An amount of `currency`: zero or more, exact to the currency's minor unit.
pub(crate) fn parse_amount(
    line: u64,
    field: &'static str,
    text: &str,
    currency: Currency,
) -> Result<Decimal, StatementError> {
    let d = parse_decimal(line, field, text)?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(field_error(line, field, text, "negative amount"));
    }
    if d.normalize().scale() > currency.minor_units() {
        return Err(field_error(
            line,
            field,
            text,
            format!(
                "more than {} decimal places for {currency}",
                currency.minor_units()
            ),
        ));
    }
    Ok(d)
}

/// A line's amount: positive.
pub(crate) fn money(
    line: u64,
    field: &'static str,
    text: &str,
    amount: Decimal,
    currency: Currency,
) -> Result<Money, StatementError> {
    Money::new(amount, currency).map_err(|e| field_error(line, field, text, e.to_string()))
}

pub(crate) fn parse_currency(
    line: u64,
    field: &'static str,
    text: &str,
) -> Result<Currency, StatementError> {
    text.trim()
        .parse()
        .map_err(|_| field_error(line, field, text, "unknown currency"))
}

/// A Beijing-time `yyyy-MM-dd HH:mm:ss` (the time zone of both Alipay's and WeChat Pay's
/// statements) as unix ms. Runs of spaces between date and time are tolerated (older WeChat
/// bills wrote two).
pub(crate) fn parse_beijing_time(
    line: u64,
    field: &'static str,
    text: &str,
) -> Result<i64, StatementError> {
    let normalised = text.split_whitespace().collect::<Vec<_>>().join(" ");
    crate::channels::alipay::sign::parse_time(&normalised)
        .ok_or_else(|| field_error(line, field, text, "not a yyyy-MM-dd HH:mm:ss time"))
}

/// A required identifier: non-empty after trimming.
pub(crate) fn parse_id(
    line: u64,
    field: &'static str,
    text: &str,
) -> Result<String, StatementError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(field_error(line, field, text, "empty"));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_with_fee(fee: &str) -> StatementLine {
        StatementLine {
            line_no: 2,
            channel: "wechat".into(),
            channel_trade_no: "4200".into(),
            channel_refund_no: None,
            order_no: "o1".into(),
            kind: LineKind::Payment,
            amount: Money::parse("9.90", Currency::Cny).unwrap(),
            fee: Some(Decimal::from_str(fee).unwrap()),
            occurred_at_ms: 0,
            status: LineStatus::Paid,
        }
    }

    #[test]
    fn fees_round_half_up_to_minor_units() {
        assert_eq!(line_with_fee("0.05940").fee_minor(), Some(6));
        assert_eq!(line_with_fee("0.00500").fee_minor(), Some(1));
        assert_eq!(line_with_fee("0.00499").fee_minor(), Some(0));
        assert_eq!(line_with_fee("0.60").fee_minor(), Some(60));
        assert_eq!(line_with_fee("0").fee_minor(), Some(0));
    }

    #[test]
    fn numbers_are_exact_decimals_or_errors_naming_the_line() {
        assert_eq!(
            parse_amount(3, "amount", "12.30", Currency::Cny).unwrap(),
            Decimal::new(1230, 2)
        );
        assert_eq!(
            parse_amount(3, "amount", "0", Currency::Cny).unwrap(),
            Decimal::ZERO
        );
        for bad in ["", "abc", "1e5", "4.00123E+27", "1,000.00", "-", "."] {
            let e = parse_amount(7, "amount", bad, Currency::Cny).unwrap_err();
            assert_eq!(e.line(), Some(7), "{bad}");
        }
        assert!(parse_amount(7, "amount", "-1.00", Currency::Cny).is_err());
        assert!(parse_amount(7, "amount", "1.001", Currency::Cny).is_err());
        assert!(parse_amount(7, "amount", "1.00", Currency::Jpy).is_ok());
        assert!(parse_amount(7, "amount", "1.50", Currency::Jpy).is_err());
        assert_eq!(
            parse_decimal(1, "fee", "-0.05940").unwrap(),
            Decimal::new(-5940, 5)
        );
    }

    #[test]
    fn times_are_beijing_time() {
        // 2026-01-05 00:00:00 +08:00 = 2026-01-04T16:00:00Z.
        assert_eq!(
            parse_beijing_time(1, "t", "2026-01-05 00:00:00").unwrap(),
            1_767_542_400_000
        );
        assert_eq!(
            parse_beijing_time(1, "t", "2026-01-05  00:00:00").unwrap(),
            1_767_542_400_000
        );
        assert!(parse_beijing_time(4, "t", "2026-01-05T00:00:00").is_err());
    }

    #[test]
    fn statuses_round_trip() {
        for s in LineStatus::ALL {
            assert_eq!(LineStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(LineStatus::parse("nope"), None);
    }
}
