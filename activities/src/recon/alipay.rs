//! The Alipay-style trade bill the sandbox serves (`worker/src/sandbox/alipay/bill.rs`):
//!
//! ```text
//! out_trade_no,trade_no,status,total_amount,refund_amount,paid_at
//! 5f0c...,2026010522001,TRADE_SUCCESS,12.30,0.00,2026-01-05 10:00:00
//! ```
//!
//! UTF-8 CSV (RFC 4180 quoting), one row per trade paid that day (Beijing time): `total_amount`
//! what the customer paid in yuan, `refund_amount` its completed refunds so far, `status` the
//! trade's status when the bill was made (`TRADE_SUCCESS`, `TRADE_FINISHED`, or `TRADE_CLOSED`
//! once refunded in full), `paid_at` Beijing time. Columns are found by their header names, so
//! their order may change; optional `currency` (default CNY) and `fee` (the channel's fee in
//! yuan) columns are read when present. Lines starting with `#` (the comment and summary lines
//! of real Alipay bills) and blank lines are skipped.
//!
//! Each row becomes a payment line and, when `refund_amount` is above zero, a refund line
//! without a refund number carrying that total: this format does not itemise refunds.

use payflow_client::Currency;
use rust_decimal::Decimal;
use tokio::io::AsyncBufRead;

use super::line::{
    LineKind, LineStatus, StatementError, StatementLine, money, parse_amount, parse_beijing_time,
    parse_currency, parse_decimal, parse_id,
};
use super::reader::{LineReader, MAX_LINE_BYTES, quote_open, split_csv};

const OUT_TRADE_NO: &str = "out_trade_no";
const TRADE_NO: &str = "trade_no";
const STATUS: &str = "status";
const TOTAL_AMOUNT: &str = "total_amount";
const REFUND_AMOUNT: &str = "refund_amount";
const PAID_AT: &str = "paid_at";
const CURRENCY: &str = "currency";
const FEE: &str = "fee";

struct Columns {
    count: usize,
    out_trade_no: usize,
    trade_no: usize,
    status: usize,
    total_amount: usize,
    paid_at: usize,
    refund_amount: Option<usize>,
    currency: Option<usize>,
    fee: Option<usize>,
}

impl Columns {
    fn from_header(line: u64, names: &[String]) -> Result<Columns, StatementError> {
        let find = |name: &str| names.iter().position(|n| n.trim() == name);
        let need = |name: &'static str| {
            find(name).ok_or(StatementError::MissingColumn { line, column: name })
        };
        Ok(Columns {
            count: names.len(),
            out_trade_no: need(OUT_TRADE_NO)?,
            trade_no: need(TRADE_NO)?,
            status: need(STATUS)?,
            total_amount: need(TOTAL_AMOUNT)?,
            paid_at: need(PAID_AT)?,
            refund_amount: find(REFUND_AMOUNT),
            currency: find(CURRENCY),
            fee: find(FEE),
        })
    }
}

/// A streaming reader of the sandbox's Alipay-style bill.
pub struct AlipayStatement<R> {
    reader: LineReader<R>,
    channel: String,
    cols: Columns,
    /// The refund line of the row just read, handed out next.
    pending: Option<StatementLine>,
}

impl<R: AsyncBufRead + Unpin> AlipayStatement<R> {
    /// Reads up to and including the header line.
    pub async fn open(channel: &str, reader: R) -> Result<Self, StatementError> {
        let mut reader = LineReader::new(reader);
        let (line, header) = next_record(&mut reader)
            .await?
            .ok_or(StatementError::MissingHeader)?;
        let names = split_csv(&header).ok_or(StatementError::UnterminatedQuote { line })?;
        let cols = Columns::from_header(line, &names)?;
        Ok(AlipayStatement {
            reader,
            channel: channel.to_string(),
            cols,
            pending: None,
        })
    }

    pub async fn next_line(&mut self) -> Result<Option<StatementLine>, StatementError> {
        if let Some(refund) = self.pending.take() {
            return Ok(Some(refund));
        }
        let Some((line, record)) = next_record(&mut self.reader).await? else {
            return Ok(None);
        };
        let fields = split_csv(&record).ok_or(StatementError::UnterminatedQuote { line })?;
        if fields.len() != self.cols.count {
            return Err(StatementError::FieldCount {
                line,
                expected: self.cols.count,
                found: fields.len(),
            });
        }
        let c = &self.cols;
        let currency = match c.currency {
            Some(i) => parse_currency(line, CURRENCY, &fields[i])?,
            None => Currency::Cny,
        };
        let order_no = parse_id(line, OUT_TRADE_NO, &fields[c.out_trade_no])?;
        let trade_no = parse_id(line, TRADE_NO, &fields[c.trade_no])?;
        let status_text = fields[c.status].trim();
        let status = match status_text {
            "TRADE_SUCCESS" | "TRADE_FINISHED" => LineStatus::Paid,
            "TRADE_CLOSED" => LineStatus::FullyRefunded,
            other => {
                return Err(StatementError::UnknownStatus {
                    line,
                    status: other.to_string(),
                });
            }
        };
        let total_text = &fields[c.total_amount];
        let total = parse_amount(line, TOTAL_AMOUNT, total_text, currency)?;
        let amount = money(line, TOTAL_AMOUNT, total_text, total, currency)?;
        let occurred_at_ms = parse_beijing_time(line, PAID_AT, &fields[c.paid_at])?;
        let fee = match c.fee {
            Some(i) if !fields[i].trim().is_empty() => {
                Some(parse_decimal(line, FEE, &fields[i])?.abs())
            }
            _ => None,
        };
        let refunded = match c.refund_amount {
            Some(i) if !fields[i].trim().is_empty() => {
                parse_amount(line, REFUND_AMOUNT, &fields[i], currency)?
            }
            _ => Decimal::ZERO,
        };
        if refunded > Decimal::ZERO {
            let text = &fields[c.refund_amount.unwrap_or_default()];
            self.pending = Some(StatementLine {
                line_no: line,
                channel: self.channel.clone(),
                channel_trade_no: trade_no.clone(),
                channel_refund_no: None,
                order_no: order_no.clone(),
                kind: LineKind::Refund { refund_no: None },
                amount: money(line, REFUND_AMOUNT, text, refunded, currency)?,
                fee: None,
                occurred_at_ms,
                status: LineStatus::RefundSucceeded,
            });
        }
        Ok(Some(StatementLine {
            line_no: line,
            channel: self.channel.clone(),
            channel_trade_no: trade_no,
            channel_refund_no: None,
            order_no,
            kind: LineKind::Payment,
            amount,
            fee,
            occurred_at_ms,
            status,
        }))
    }
}

/// The next CSV record that is not blank or a `#` comment, with the line it starts on; a
/// quoted field may carry it over several physical lines.
async fn next_record<R: AsyncBufRead + Unpin>(
    reader: &mut LineReader<R>,
) -> Result<Option<(u64, String)>, StatementError> {
    loop {
        let Some((line, mut text)) = reader.next_line().await? else {
            return Ok(None);
        };
        if text.trim().is_empty() || text.starts_with('#') {
            continue;
        }
        while quote_open(&text) {
            let Some((_, more)) = reader.next_line().await? else {
                return Err(StatementError::UnterminatedQuote { line });
            };
            text.push('\n');
            text.push_str(&more);
            if text.len() > MAX_LINE_BYTES {
                return Err(StatementError::LineTooLong {
                    line,
                    max: MAX_LINE_BYTES,
                });
            }
        }
        return Ok(Some((line, text)));
    }
}

#[cfg(test)]
mod tests {
    use payflow_client::Money;

    use super::*;

    /// As the sandbox writes it (`statement_csv`): header, rows earliest first, a field quoted
    /// because it holds a comma, a partly and a fully refunded trade.
    const BILL: &str = "out_trade_no,trade_no,status,total_amount,refund_amount,paid_at\n\
        0a1b2c3d4e5f60718293a4b5c6d7e8f9,2026010522001100000001,TRADE_SUCCESS,12.30,0.00,2026-01-05 00:00:01\n\
        \"odd,no\",2026010522001100000002,TRADE_SUCCESS,100.00,30.50,2026-01-05 12:30:00\n\
        1b2c3d4e5f60718293a4b5c6d7e8f90a,2026010522001100000003,TRADE_CLOSED,8.00,8.00,2026-01-05 23:59:59\n";

    async fn read_all(text: &str) -> Result<Vec<StatementLine>, StatementError> {
        let mut p = AlipayStatement::open("alipay", text.as_bytes()).await?;
        let mut out = Vec::new();
        while let Some(l) = p.next_line().await? {
            out.push(l);
        }
        Ok(out)
    }

    fn cny(s: &str) -> Money {
        Money::parse(s, Currency::Cny).unwrap()
    }

    #[tokio::test]
    async fn sandbox_bill_becomes_payment_and_refund_total_lines() {
        let lines = read_all(BILL).await.unwrap();
        assert_eq!(lines.len(), 5);
        assert_eq!(
            lines[0],
            StatementLine {
                line_no: 2,
                channel: "alipay".into(),
                channel_trade_no: "2026010522001100000001".into(),
                channel_refund_no: None,
                order_no: "0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
                kind: LineKind::Payment,
                amount: cny("12.30"),
                fee: None,
                // 2026-01-05 00:00:01 Beijing.
                occurred_at_ms: 1_767_542_401_000,
                status: LineStatus::Paid,
            }
        );
        assert_eq!(lines[1].order_no, "odd,no");
        assert_eq!(lines[1].kind, LineKind::Payment);
        assert_eq!(lines[2].kind, LineKind::Refund { refund_no: None });
        assert_eq!(lines[2].amount, cny("30.50"));
        assert_eq!(lines[2].status, LineStatus::RefundSucceeded);
        assert_eq!(lines[2].line_no, 3);
        assert_eq!(lines[3].status, LineStatus::FullyRefunded);
        assert_eq!(lines[4].kind, LineKind::Refund { refund_no: None });
        assert_eq!(lines[4].amount, cny("8.00"));
    }

    #[tokio::test]
    async fn empty_day_and_reordered_or_extra_columns() {
        let header_only = "out_trade_no,trade_no,status,total_amount,refund_amount,paid_at\n";
        assert!(read_all(header_only).await.unwrap().is_empty());
        let reordered = "# payflow sandbox\npaid_at,fee,trade_no,out_trade_no,total_amount,status,currency\n\
            2026-01-05 10:00:00,0.06,T1,o1,9.90,TRADE_FINISHED,CNY\n\n#summary\n";
        let lines = read_all(reordered).await.unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].line_no, 3);
        assert_eq!(lines[0].fee, Some(Decimal::new(6, 2)));
        assert_eq!(lines[0].fee_minor(), Some(6));
        assert_eq!(lines[0].status, LineStatus::Paid);
    }

    #[tokio::test]
    async fn malformed_lines_are_typed_errors_naming_the_line() {
        let header = "out_trade_no,trade_no,status,total_amount,refund_amount,paid_at\n";
        let good = "o1,T1,TRADE_SUCCESS,1.00,0.00,2026-01-05 10:00:00\n";
        let case = |bad: &str| format!("{header}{good}{bad}");
        let err = |text: String| async move { read_all(&text).await.unwrap_err() };

        let e = err(case("o2,T2,TRADE_SUCCESS,1.00,0.00\n")).await;
        assert!(
            matches!(
                e,
                StatementError::FieldCount {
                    line: 3,
                    expected: 6,
                    found: 5
                }
            ),
            "{e}"
        );
        let e = err(case("o2,T2,TRADE_SUCCESS,1.2.3,0.00,2026-01-05 10:00:00\n")).await;
        assert!(
            matches!(
                e,
                StatementError::Field {
                    line: 3,
                    field: TOTAL_AMOUNT,
                    ..
                }
            ),
            "{e}"
        );
        let e = err(case("o2,T2,TRADE_SUCCESS,0.00,0.00,2026-01-05 10:00:00\n")).await;
        assert!(matches!(e, StatementError::Field { line: 3, .. }), "{e}");
        let e = err(case("o2,T2,WAIT_BUYER_PAY,1.00,0.00,2026-01-05 10:00:00\n")).await;
        assert!(
            matches!(&e, StatementError::UnknownStatus { line: 3, status } if status == "WAIT_BUYER_PAY"),
            "{e}"
        );
        let e = err(case(",T2,TRADE_SUCCESS,1.00,0.00,2026-01-05 10:00:00\n")).await;
        assert!(
            matches!(
                e,
                StatementError::Field {
                    line: 3,
                    field: OUT_TRADE_NO,
                    ..
                }
            ),
            "{e}"
        );
        let e = err(case("o2,T2,TRADE_SUCCESS,1.00,0.00,05/01/2026 10:00\n")).await;
        assert!(
            matches!(
                e,
                StatementError::Field {
                    line: 3,
                    field: PAID_AT,
                    ..
                }
            ),
            "{e}"
        );
        let e = err(case(
            "\"o2,T2,TRADE_SUCCESS,1.00,0.00,2026-01-05 10:00:00\n",
        ))
        .await;
        assert!(
            matches!(e, StatementError::UnterminatedQuote { line: 3 }),
            "{e}"
        );
        let e = err("trade_no,status\n".to_string()).await;
        assert!(
            matches!(
                e,
                StatementError::MissingColumn {
                    line: 1,
                    column: OUT_TRADE_NO
                }
            ),
            "{e}"
        );
        assert!(matches!(
            err(String::new()).await,
            StatementError::MissingHeader
        ));
        // The line number survives into the message operators read.
        assert!(
            err(case("o2,T2,TRADE_SUCCESS,x,0.00,2026-01-05 10:00:00\n"))
                .await
                .to_string()
                .starts_with("line 3:")
        );
    }

    #[tokio::test]
    async fn a_quoted_line_break_continues_the_record() {
        let text = "out_trade_no,trade_no,status,total_amount,refund_amount,paid_at\n\
            \"two\nlines\",T1,TRADE_SUCCESS,1.00,0.00,2026-01-05 10:00:00\n\
            o3,T3,TRADE_SUCCESS,2.00,0.00,2026-01-05 11:00:00\n";
        let lines = read_all(text).await.unwrap();
        assert_eq!(lines[0].order_no, "two\nlines");
        assert_eq!(lines[0].line_no, 2);
        assert_eq!(lines[1].line_no, 4);
    }
}
