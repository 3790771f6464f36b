//! WeChat Pay's trade bill of type `ALL` (`GET /v3/bill/tradebill`, then the `download_url`).
//!
//! ```text
//! 交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注
//! `2026-01-05 10:00:00,`wx..,`1900000001,`0,`,`4200001,`o1,`oUser,`NATIVE,`SUCCESS,`OTHERS,`CNY,`9.90,`0.00,`0,`0,`0.00,`0.00,`,`,`Tea,`,`0.05940,`0.60%,`9.90,`0.00,`
//! `2026-01-05 11:00:00,`wx..,`1900000001,`0,`,`4200001,`o1,`oUser,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`5030001,`r1,`9.90,`0.00,`ORIGINAL,`SUCCESS,`Tea,`,`-0.05940,`0.60%,`9.90,`9.90,`
//! 总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额
//! `2,`9.90,`9.90,`0.00,`0.00000,`19.80,`9.90
//! ```
//!
//! Amounts in yuan. A payment is dated when it was paid, a refund when WeChat Pay accepted it
//! (`交易状态 = REFUND`, with `商户退款单号` = our refund id and `退款状态` as it was when the bill
//! was cut: the bill is a snapshot). Every data field starts with a backtick, so `,`` splits
//! fields even when a product name holds a comma. Columns are found by their header names
//! (WeChat says their order may change). Amounts: a payment's `订单金额` (the order total, as
//! the trade query's `amount.total`) when the column is there and not zero, else
//! `应结订单金额`; a refund's `申请退款金额` when there and not zero, else `退款金额`. `手续费` is
//! the fee (negative on a refund line: fee given back), kept exact (five decimals).
//!
//! The two summary lines are required, and checked against the lines read: the row count and
//! each total whose detail column exists. A download cut short has no summary and is refused.

use std::str::FromStr;

use payflow_client::Currency;
use rust_decimal::Decimal;
use tokio::io::AsyncBufRead;

use super::line::{
    LineKind, LineStatus, StatementError, StatementLine, money, parse_amount, parse_beijing_time,
    parse_currency, parse_decimal, parse_id,
};
use super::reader::{LineReader, split_backticked};

const TIME: &str = "交易时间";
const TRADE_NO: &str = "微信订单号";
const ORDER_NO: &str = "商户订单号";
const TRADE_STATE: &str = "交易状态";
const CURRENCY: &str = "货币种类";
const SETTLEMENT_AMOUNT: &str = "应结订单金额";
const CHANNEL_REFUND_NO: &str = "微信退款单号";
const REFUND_NO: &str = "商户退款单号";
const REFUND_AMOUNT: &str = "退款金额";
const REFUND_STATUS: &str = "退款状态";
const FEE: &str = "手续费";
const ORDER_AMOUNT: &str = "订单金额";
const REQUESTED_REFUND: &str = "申请退款金额";

const SUMMARY_COUNT: &str = "总交易单数";
/// Summary total -> the detail column it adds up.
const SUMMARY_SUMS: [(&str, &str); 6] = [
    ("应结订单总金额", SETTLEMENT_AMOUNT),
    ("退款总金额", REFUND_AMOUNT),
    ("充值券退款总金额", "充值券退款金额"),
    ("手续费总金额", FEE),
    ("订单总金额", ORDER_AMOUNT),
    ("申请退款总金额", REQUESTED_REFUND),
];

struct Columns {
    count: usize,
    time: usize,
    trade_no: usize,
    order_no: usize,
    trade_state: usize,
    settlement_amount: usize,
    currency: Option<usize>,
    channel_refund_no: Option<usize>,
    refund_no: Option<usize>,
    refund_amount: Option<usize>,
    refund_status: Option<usize>,
    fee: Option<usize>,
    order_amount: Option<usize>,
    requested_refund: Option<usize>,
}

/// A streaming reader of a WeChat Pay `ALL` trade bill.
pub struct WechatStatement<R> {
    reader: LineReader<R>,
    channel: String,
    cols: Columns,
    header_line: u64,
    /// Data rows read so far.
    rows: u64,
    /// (summary name, detail column, running sum) for each summary total the header allows.
    sums: Vec<(&'static str, usize, Decimal)>,
    finished: bool,
}

impl<R: AsyncBufRead + Unpin> WechatStatement<R> {
    /// Reads up to and including the header line.
    pub async fn open(channel: &str, reader: R) -> Result<Self, StatementError> {
        let mut reader = LineReader::new(reader);
        let (line, header) = loop {
            match reader.next_line().await? {
                Some((_, text)) if text.trim().is_empty() => continue,
                Some(found) => break found,
                None => return Err(StatementError::MissingHeader),
            }
        };
        let names: Vec<String> = split_backticked(header.trim())
            .into_iter()
            .map(|n| n.trim().to_string())
            .collect();
        let find = |name: &str| names.iter().position(|n| n == name);
        let need = |name: &'static str| {
            find(name).ok_or(StatementError::MissingColumn { line, column: name })
        };
        let cols = Columns {
            count: names.len(),
            time: need(TIME)?,
            trade_no: need(TRADE_NO)?,
            order_no: need(ORDER_NO)?,
            trade_state: need(TRADE_STATE)?,
            settlement_amount: need(SETTLEMENT_AMOUNT)?,
            currency: find(CURRENCY),
            channel_refund_no: find(CHANNEL_REFUND_NO),
            refund_no: find(REFUND_NO),
            refund_amount: find(REFUND_AMOUNT),
            refund_status: find(REFUND_STATUS),
            fee: find(FEE),
            order_amount: find(ORDER_AMOUNT),
            requested_refund: find(REQUESTED_REFUND),
        };
        let sums = SUMMARY_SUMS
            .iter()
            .filter_map(|&(total, detail)| find(detail).map(|i| (total, i, Decimal::ZERO)))
            .collect();
        Ok(WechatStatement {
            reader,
            channel: channel.to_string(),
            cols,
            header_line: line,
            rows: 0,
            sums,
            finished: false,
        })
    }

    pub async fn next_line(&mut self) -> Result<Option<StatementLine>, StatementError> {
        if self.finished {
            return Ok(None);
        }
        loop {
            let Some((line, text)) = self.reader.next_line().await? else {
                return Err(StatementError::MissingSummary);
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            if text.trim_start_matches('`').starts_with(SUMMARY_COUNT) {
                self.read_summary(line, text).await?;
                self.finished = true;
                return Ok(None);
            }
            let fields = split_backticked(text);
            return self.row(line, &fields).map(Some);
        }
    }

    fn row(&mut self, line: u64, fields: &[String]) -> Result<StatementLine, StatementError> {
        let c = &self.cols;
        if fields.len() != c.count {
            return Err(StatementError::FieldCount {
                line,
                expected: c.count,
                found: fields.len(),
            });
        }
        for (total, i, sum) in &mut self.sums {
            let text = fields[*i].trim();
            if !text.is_empty() {
                *sum += parse_decimal(line, column_name(total), text)?;
            }
        }
        self.rows += 1;

        let currency = match c.currency {
            Some(i) if !fields[i].trim().is_empty() => parse_currency(line, CURRENCY, &fields[i])?,
            _ => Currency::Cny,
        };
        let occurred_at_ms = parse_beijing_time(line, TIME, &fields[c.time])?;
        let trade_no = parse_id(line, TRADE_NO, &fields[c.trade_no])?;
        let order_no = parse_id(line, ORDER_NO, &fields[c.order_no])?;
        let fee = match c.fee {
            Some(i) if !fields[i].trim().is_empty() => {
                Some(parse_decimal(line, FEE, &fields[i])?.abs())
            }
            _ => None,
        };
        let header_line = self.header_line;
        let need = |col: Option<usize>, name: &'static str| {
            col.ok_or(StatementError::MissingColumn {
                line: header_line,
                column: name,
            })
        };
        // The first non-zero of the preferred column and the fallback, as a positive Money.
        let amount = |preferred: Option<usize>,
                      preferred_name: &'static str,
                      fallback: usize,
                      fallback_name: &'static str| {
            if let Some(i) = preferred {
                let text = &fields[i];
                if !text.trim().is_empty() {
                    let a = parse_amount(line, preferred_name, text, currency)?;
                    if a > Decimal::ZERO {
                        return money(line, preferred_name, text, a, currency);
                    }
                }
            }
            let text = &fields[fallback];
            let a = parse_amount(line, fallback_name, text, currency)?;
            money(line, fallback_name, text, a, currency)
        };

        let state = fields[c.trade_state].trim();
        let (kind, status, amount, channel_refund_no) = match state {
            "SUCCESS" | "REVOKED" => {
                let status = if state == "SUCCESS" {
                    LineStatus::Paid
                } else {
                    LineStatus::Revoked
                };
                let a = amount(
                    c.order_amount,
                    ORDER_AMOUNT,
                    c.settlement_amount,
                    SETTLEMENT_AMOUNT,
                )?;
                (LineKind::Payment, status, a, None)
            }
            "REFUND" => {
                let refund_no = parse_id(line, REFUND_NO, &fields[need(c.refund_no, REFUND_NO)?])?;
                let status_text = fields[need(c.refund_status, REFUND_STATUS)?].trim();
                let status = match status_text {
                    "SUCCESS" => LineStatus::RefundSucceeded,
                    "PROCESSING" => LineStatus::RefundProcessing,
                    "CLOSED" | "REFUNDCLOSE" | "ABNORMAL" | "CHANGE" => LineStatus::RefundFailed,
                    other => {
                        return Err(StatementError::UnknownStatus {
                            line,
                            status: format!("{REFUND_STATUS} {other}"),
                        });
                    }
                };
                let a = amount(
                    c.requested_refund,
                    REQUESTED_REFUND,
                    need(c.refund_amount, REFUND_AMOUNT)?,
                    REFUND_AMOUNT,
                )?;
                let channel_refund_no = c
                    .channel_refund_no
                    .map(|i| fields[i].trim().to_string())
                    .filter(|no| !no.is_empty());
                (
                    LineKind::Refund {
                        refund_no: Some(refund_no),
                    },
                    status,
                    a,
                    channel_refund_no,
                )
            }
            other => {
                return Err(StatementError::UnknownStatus {
                    line,
                    status: other.to_string(),
                });
            }
        };
        Ok(StatementLine {
            line_no: line,
            channel: self.channel.clone(),
            channel_trade_no: trade_no,
            channel_refund_no,
            order_no,
            kind,
            amount,
            fee,
            occurred_at_ms,
            status,
        })
    }

    /// Reads the summary values after the summary header at `line`, checks them against the
    /// rows read, and that nothing but blank lines follows.
    async fn read_summary(&mut self, line: u64, header: &str) -> Result<(), StatementError> {
        let names: Vec<String> = split_backticked(header)
            .into_iter()
            .map(|n| n.trim().to_string())
            .collect();
        let (values_line, values) = loop {
            match self.reader.next_line().await? {
                Some((_, t)) if t.trim().is_empty() => continue,
                Some((l, t)) => break (l, split_backticked(t.trim())),
                None => {
                    return Err(StatementError::Summary {
                        line,
                        reason: "no values after the summary header".into(),
                    });
                }
            }
        };
        if values.len() != names.len() {
            return Err(StatementError::Summary {
                line: values_line,
                reason: format!("{} values for {} names", values.len(), names.len()),
            });
        }
        let value = |name: &str| {
            names
                .iter()
                .position(|n| n == name)
                .map(|i| values[i].trim())
        };
        let Some(count) = value(SUMMARY_COUNT) else {
            return Err(StatementError::Summary {
                line,
                reason: format!("no {SUMMARY_COUNT}"),
            });
        };
        if count.parse::<u64>().ok() != Some(self.rows) {
            return Err(StatementError::SummaryMismatch {
                line: values_line,
                field: SUMMARY_COUNT.into(),
                stated: count.into(),
                computed: self.rows.to_string(),
            });
        }
        for (total, _, sum) in &self.sums {
            let Some(stated) = value(total) else { continue };
            let stated_value = Decimal::from_str(stated).map_err(|_| StatementError::Summary {
                line: values_line,
                reason: format!("{total} = {stated:?} is not a decimal number"),
            })?;
            if stated_value != *sum {
                return Err(StatementError::SummaryMismatch {
                    line: values_line,
                    field: (*total).into(),
                    stated: stated.into(),
                    computed: sum.to_string(),
                });
            }
        }
        while let Some((l, t)) = self.reader.next_line().await? {
            if !t.trim().is_empty() {
                return Err(StatementError::AfterSummary { line: l });
            }
        }
        Ok(())
    }
}

/// The detail column a summary total adds up (for error messages).
fn column_name(total: &str) -> &'static str {
    SUMMARY_SUMS
        .iter()
        .find(|(t, _)| *t == total)
        .map_or("?", |(_, d)| d)
}

#[cfg(test)]
mod tests {
    use payflow_client::Money;

    use super::*;

    const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
    const PAY: &str = "`2026-01-05 10:00:00,`wx8888888888888888,`1900000109,`0,`,`4200002086202601050745964084,`0a1b2c3d4e5f60718293a4b5c6d7e8f9,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`OTHERS,`CNY,`9.90,`0.00,`0,`0,`0.00,`0.00,`,`,`Tea, green,`,`0.05940,`0.60%,`9.90,`0.00,`";
    const REFUND: &str = "`2026-01-05 11:00:00,`wx8888888888888888,`1900000109,`0,`,`4200002086202601050745964084,`0a1b2c3d4e5f60718293a4b5c6d7e8f9,`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`REFUND,`OTHERS,`CNY,`0.00,`0.00,`50303108562026010501487282563,`rid-1,`3.00,`0.00,`ORIGINAL,`SUCCESS,`Tea, green,`,`-0.01800,`0.60%,`9.90,`3.00,`";
    const SUMMARY_HEADER: &str = "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";
    const SUMMARY: &str = "`2,`9.90,`3.00,`0.00,`0.04140,`19.80,`3.00";

    fn bill(rows: &[&str], summary: &str) -> String {
        let mut s = format!("\u{feff}{HEADER}\r\n");
        for r in rows {
            s.push_str(r);
            s.push_str("\r\n");
        }
        s.push_str(SUMMARY_HEADER);
        s.push_str("\r\n");
        s.push_str(summary);
        s.push_str("\r\n");
        s
    }

    async fn read_all(text: &str) -> Result<Vec<StatementLine>, StatementError> {
        let mut p = WechatStatement::open("wechat", text.as_bytes()).await?;
        let mut out = Vec::new();
        while let Some(l) = p.next_line().await? {
            out.push(l);
        }
        // Reading past the end stays at the end.
        assert!(p.next_line().await?.is_none());
        Ok(out)
    }

    #[tokio::test]
    async fn all_bill_becomes_payment_and_refund_lines() {
        let lines = read_all(&bill(&[PAY, REFUND], SUMMARY)).await.unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            StatementLine {
                line_no: 2,
                channel: "wechat".into(),
                channel_trade_no: "4200002086202601050745964084".into(),
                channel_refund_no: None,
                order_no: "0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
                kind: LineKind::Payment,
                amount: Money::parse("9.90", Currency::Cny).unwrap(),
                fee: Some(Decimal::new(5940, 5)),
                occurred_at_ms: 1_767_578_400_000,
                status: LineStatus::Paid,
            }
        );
        assert_eq!(lines[0].fee_minor(), Some(6));
        let r = &lines[1];
        assert_eq!(
            r.kind,
            LineKind::Refund {
                refund_no: Some("rid-1".into())
            }
        );
        assert_eq!(
            r.channel_refund_no.as_deref(),
            Some("50303108562026010501487282563")
        );
        assert_eq!(r.amount, Money::parse("3.00", Currency::Cny).unwrap());
        assert_eq!(r.fee, Some(Decimal::new(1800, 5)));
        assert_eq!(r.status, LineStatus::RefundSucceeded);
        assert_eq!(r.line_no, 3);
    }

    #[tokio::test]
    async fn an_empty_day_is_a_header_and_a_zero_summary() {
        let text =
            format!("{HEADER}\n{SUMMARY_HEADER}\n`0,`0.00,`0.00,`0.00,`0.00000,`0.00,`0.00\n");
        assert!(read_all(&text).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn statuses_and_amount_fallbacks() {
        let processing = REFUND.replace("`ORIGINAL,`SUCCESS", "`ORIGINAL,`PROCESSING");
        let abnormal = REFUND
            .replace("`ORIGINAL,`SUCCESS", "`ORIGINAL,`ABNORMAL")
            .replace("`rid-1", "`rid-2");
        let revoked = PAY.replace("`SUCCESS", "`REVOKED");
        let summary = "`4,`19.80,`6.00,`0.00,`0.08280,`39.60,`6.00";
        let lines = read_all(&bill(&[&processing, &abnormal, PAY, &revoked], summary))
            .await
            .unwrap();
        let statuses: Vec<_> = lines.iter().map(|l| l.status).collect();
        assert_eq!(
            statuses,
            [
                LineStatus::RefundProcessing,
                LineStatus::RefundFailed,
                LineStatus::Paid,
                LineStatus::Revoked
            ]
        );
        // An older header without 订单金额 / 申请退款金额 falls back to the settlement columns.
        let old_header = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率";
        let cut = |row: &str| row.rsplitn(4, ",`").nth(3).unwrap().to_string();
        let text = format!(
            "{old_header}\n{}\n{}\n总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额\n`2,`9.90,`3.00,`0.00,`0.04140\n",
            cut(PAY),
            cut(REFUND)
        );
        let lines = read_all(&text).await.unwrap();
        assert_eq!(
            lines[0].amount,
            Money::parse("9.90", Currency::Cny).unwrap()
        );
        assert_eq!(
            lines[1].amount,
            Money::parse("3.00", Currency::Cny).unwrap()
        );
    }

    #[tokio::test]
    async fn malformed_bills_are_typed_errors_naming_the_line() {
        // A truncated download: no summary.
        let mut text = format!("{HEADER}\n{PAY}\n");
        assert!(matches!(
            read_all(&text).await.unwrap_err(),
            StatementError::MissingSummary
        ));
        // Summary disagreeing with the lines (a line lost in transfer).
        let e = read_all(&bill(&[PAY], SUMMARY)).await.unwrap_err();
        assert!(
            matches!(&e, StatementError::SummaryMismatch { line: 4, field, .. } if field == SUMMARY_COUNT),
            "{e}"
        );
        let e = read_all(&bill(
            &[PAY, REFUND],
            "`2,`9.90,`3.10,`0.00,`0.04140,`19.80,`3.00",
        ))
        .await
        .unwrap_err();
        assert!(
            matches!(&e, StatementError::SummaryMismatch { field, .. } if field == "退款总金额"),
            "{e}"
        );
        // Data after the summary.
        text = format!("{}{PAY}\n", bill(&[PAY, REFUND], SUMMARY));
        assert!(matches!(
            read_all(&text).await.unwrap_err(),
            StatementError::AfterSummary { line: 6 }
        ));
        // A bad amount, a missing field, an unknown state, an empty refund no.
        let bad_amount = PAY.replace("`9.90,`0.00,`0,", "`9.9.0,`0.00,`0,");
        let e = read_all(&bill(&[REFUND, &bad_amount], SUMMARY))
            .await
            .unwrap_err();
        assert!(matches!(e, StatementError::Field { line: 3, .. }), "{e}");
        let short = PAY.rsplit_once(",`").unwrap().0;
        let e = read_all(&bill(&[short], SUMMARY)).await.unwrap_err();
        assert!(
            matches!(
                e,
                StatementError::FieldCount {
                    line: 2,
                    expected: 27,
                    found: 26
                }
            ),
            "{e}"
        );
        let unknown = PAY.replace("`SUCCESS", "`NOTPAY");
        let e = read_all(&bill(&[&unknown], SUMMARY)).await.unwrap_err();
        assert!(
            matches!(e, StatementError::UnknownStatus { line: 2, .. }),
            "{e}"
        );
        let no_refund_no = REFUND.replace("`rid-1", "`");
        let e = read_all(&bill(&[&no_refund_no], SUMMARY))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                StatementError::Field {
                    line: 2,
                    field: REFUND_NO,
                    ..
                }
            ),
            "{e}"
        );
        let e = read_all("交易时间,微信订单号\n").await.unwrap_err();
        assert!(
            matches!(
                e,
                StatementError::MissingColumn {
                    line: 1,
                    column: ORDER_NO
                }
            ),
            "{e}"
        );
    }
}
