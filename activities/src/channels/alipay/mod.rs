//! Alipay OpenAPI adapter (RSA2), faithful to the real protocol so it works against Alipay's
//! sandbox when configured: form POST to the gateway, signed requests, verified responses and
//! notifications. `sign` holds the canonical-string rules, `wire` the JSON shapes.

pub mod sign;
pub mod wire;

use std::collections::BTreeMap;
use std::time::Duration;

use payflow_client::{Currency, Money};
use serde::de::DeserializeOwned;

use super::{
    Channel, ChannelError, CloseOutcome, NoticeError, PayoutRequest, PayoutState, PrecreateRequest,
    PrecreateResponse, RefundRequest, RefundResult, RefundState, StatementFile, StatementUrl,
    TradeQuery, TradeState, VerifiedNotice, statement,
};
use crate::crypto::rsa_keys::{RsaSigner, RsaVerifier};
use crate::recon::StatementFormat;

/// Configuration of one Alipay app.
#[derive(Debug, Clone)]
pub struct AlipayConfig {
    /// Channel name in payflow (e.g. `alipay`).
    pub name: String,
    /// e.g. `https://openapi.alipay.com/gateway.do`
    pub gateway_url: url::Url,
    pub app_id: String,
    pub app_private_key: RsaSigner,
    pub alipay_public_key: RsaVerifier,
    pub connect_timeout: Duration,
    /// Bounds every gateway call end to end; a call that runs out is `Transient`.
    pub request_timeout: Duration,
}

pub struct AlipayChannel {
    cfg: AlipayConfig,
    http: reqwest::Client,
}

impl AlipayChannel {
    pub fn new(cfg: AlipayConfig) -> Result<Self, ChannelError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ChannelError::Transient(format!("http client: {e}")))?;
        Ok(AlipayChannel { cfg, http })
    }

    /// The common request parameters, signed.
    fn signed_params(
        &self,
        method: &str,
        biz_content: String,
        notify_url: Option<&str>,
    ) -> Result<BTreeMap<String, String>, ChannelError> {
        let mut p = BTreeMap::new();
        p.insert("app_id".into(), self.cfg.app_id.clone());
        p.insert("method".into(), method.into());
        p.insert("format".into(), "JSON".into());
        p.insert("charset".into(), "utf-8".into());
        p.insert("sign_type".into(), "RSA2".into());
        p.insert(
            "timestamp".into(),
            sign::format_time(chrono::Utc::now().timestamp_millis()),
        );
        p.insert("version".into(), "1.0".into());
        if let Some(url) = notify_url {
            p.insert("notify_url".into(), url.into());
        }
        p.insert("biz_content".into(), biz_content);
        sign::sign_request(&mut p, &self.cfg.app_private_key)
            .map_err(|e| ChannelError::Transient(format!("signing: {e}")))?;
        Ok(p)
    }

    /// POSTs a signed request and returns the verified response node.
    async fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        biz_content: String,
        notify_url: Option<&str>,
    ) -> Result<(R, wire::Common), ChannelError> {
        let params = self.signed_params(method, biz_content, notify_url)?;
        let resp = self
            .http
            .post(self.cfg.gateway_url.clone())
            .form(&params)
            .send()
            .await
            .map_err(|e| ChannelError::Transient(format!("{method}: {e}")))?;
        let status = resp.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(ChannelError::Transient(format!("{method}: HTTP {status}")));
        }
        if !status.is_success() {
            return Err(ChannelError::Untrusted(format!("{method}: HTTP {status}")));
        }
        let body = resp
            .text()
            .await
            .map_err(|e| ChannelError::Transient(format!("{method}: reading body: {e}")))?;
        let (node, sign) = sign::split_response(&body, method).map_err(ChannelError::Untrusted)?;
        let common: wire::Common = serde_json::from_str(node)
            .map_err(|e| ChannelError::Untrusted(format!("{method}: {e}")))?;
        match sign {
            Some(sig) => self
                .cfg
                .alipay_public_key
                .verify_base64(node.as_bytes(), &sig)
                .map_err(|e| ChannelError::Untrusted(format!("{method}: {e}")))?,
            // Alipay leaves some gateway errors unsigned; an unsigned success is never trusted.
            None if common.code == wire::CODE_SUCCESS => {
                return Err(ChannelError::Untrusted(format!(
                    "{method}: unsigned success response"
                )));
            }
            None => {}
        }
        decode(method, node)
    }
}

/// Types a verified response node; the channel's "system error / busy" answers are transient.
fn decode<R: DeserializeOwned>(
    method: &str,
    node: &str,
) -> Result<(R, wire::Common), ChannelError> {
    let common: wire::Common = serde_json::from_str(node)
        .map_err(|e| ChannelError::Untrusted(format!("{method}: {e}")))?;
    if common.code == wire::CODE_UNAVAILABLE
        || common.sub_code.as_deref().is_some_and(is_system_error)
    {
        return Err(ChannelError::Transient(format!(
            "{method}: {} {}",
            common.code,
            common.sub_msg.as_deref().unwrap_or(&common.msg)
        )));
    }
    let typed: R = serde_json::from_str(node)
        .map_err(|e| ChannelError::Untrusted(format!("{method}: {e}")))?;
    Ok((typed, common))
}

/// Trade APIs say `ACQ.SYSTEM_ERROR`, fund APIs plain `SYSTEM_ERROR`.
fn is_system_error(sub_code: &str) -> bool {
    sub_code.ends_with("SYSTEM_ERROR") || sub_code.ends_with("SYSTEM_BUSY")
}

fn declined(c: &wire::Common) -> ChannelError {
    ChannelError::Declined {
        code: c.sub_code.clone().unwrap_or_else(|| c.code.clone()),
        message: c.sub_msg.clone().unwrap_or_else(|| c.msg.clone()),
    }
}

/// Alipay accounts in CNY; amounts are yuan with two decimals.
fn parse_amount(text: &str) -> Result<Money, ChannelError> {
    Money::parse(text, Currency::Cny)
        .map_err(|e| ChannelError::Untrusted(format!("amount {text:?}: {e}")))
}

/// Like [`parse_amount`], but Alipay's `"0.00"` (a field it fills without a value) is `None`.
fn parse_optional_amount(text: &str) -> Result<Option<Money>, ChannelError> {
    match text.trim().parse::<rust_decimal::Decimal>() {
        Ok(d) if d.is_zero() => Ok(None),
        _ => parse_amount(text).map(Some),
    }
}

fn require_cny(amount: &Money) -> Result<(), ChannelError> {
    if amount.currency() == Currency::Cny {
        Ok(())
    } else {
        Err(ChannelError::Declined {
            code: "payflow.UNSUPPORTED_CURRENCY".into(),
            message: format!("Alipay moves CNY, not {}", amount.currency()),
        })
    }
}

/// `alipay.trade.refund` sub-codes that definitely refuse the refund: no money moved.
const REFUND_REFUSALS: &[&str] = &[
    "ACQ.TRADE_NOT_EXIST",
    "ACQ.TRADE_STATUS_ERROR",
    "ACQ.TRADE_HAS_CLOSE",
    "ACQ.TRADE_HAS_FINISHED",
    "ACQ.TRADE_NOT_ALLOW_REFUND",
    "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
    "ACQ.REASON_TRADE_REFUND_FEE_ERR",
    "ACQ.REFUND_FEE_ERROR",
    "ACQ.SELLER_BALANCE_NOT_ENOUGH",
    "ACQ.REASON_TRADE_BEEN_FREEZEN",
    "ACQ.INVALID_PARAMETER",
];

/// `alipay.fund.trans.uni.transfer` sub-codes that definitely refuse the transfer.
const PAYOUT_REFUSALS: &[&str] = &[
    "PAYEE_NOT_EXIST",
    "PAYEE_USERINFO_ERROR",
    "PAYEE_ACCOUNT_STATUS_ERROR",
    "PAYEE_ACC_OCUPIED",
    "PAYER_BALANCE_NOT_ENOUGH",
    "PAYER_STATUS_ERROR",
    "PAYER_PAYEE_CANNOT_SAME",
    "PERMIT_CHECK_PERM_LIMITED",
    "EXCEED_LIMIT_SM_AMOUNT",
    "EXCEED_LIMIT_DM_AMOUNT",
    "EXCEED_LIMIT_SM_MIN_AMOUNT",
    "INVALID_PARAMETER",
];

/// Reads a failed answer to a money-moving call: `Some((code, message))` for a definite
/// refusal, `None` when the outcome is not certain (e.g. a repeat with different details, whose
/// original may have gone through) and only a query can tell. Gateway errors (arguments,
/// signature, permission: anything but a business failure) refuse the call before any
/// processing and stay errors.
fn refusal(
    method: &str,
    c: &wire::Common,
    definite: &[&str],
) -> Result<Option<(String, String)>, ChannelError> {
    if c.code != wire::CODE_BUSINESS_FAILED {
        return Err(declined(c));
    }
    let message = c.sub_msg.clone().unwrap_or_else(|| c.msg.clone());
    match c.sub_code.as_deref() {
        Some(code) if definite.contains(&code) => Ok(Some((code.to_string(), message))),
        other => {
            tracing::warn!(method, sub_code = ?other, %message, "not a definite refusal; confirm by query");
            Ok(None)
        }
    }
}

fn refund_processing() -> RefundResult {
    RefundResult {
        state: RefundState::Processing,
        refunded_amount: None,
    }
}

/// The `biz_content` of `alipay.trade.refund`.
fn refund_biz(req: &RefundRequest) -> String {
    serde_json::to_string(&wire::RefundBiz {
        out_trade_no: req.out_trade_no.clone(),
        refund_amount: req.amount.amount_string(),
        out_request_no: req.out_request_no.clone(),
        refund_reason: Some(req.reason.clone()).filter(|r| !r.is_empty()),
    })
    .expect("biz content serialises")
}

/// Maps the answer of `alipay.trade.refund`.
fn refund_result(
    c: &wire::Common,
    r: &wire::RefundResponse,
    req: &RefundRequest,
) -> Result<RefundResult, ChannelError> {
    if c.code != wire::CODE_SUCCESS {
        return Ok(match refusal(wire::REFUND, c, REFUND_REFUSALS)? {
            Some((code, message)) => RefundResult {
                state: RefundState::Failed { code, message },
                refunded_amount: None,
            },
            None => refund_processing(),
        });
    }
    if r.out_trade_no
        .as_deref()
        .is_some_and(|n| n != req.out_trade_no)
    {
        return Err(ChannelError::Untrusted(format!(
            "refund answer for another trade: {:?}",
            r.out_trade_no
        )));
    }
    match r.fund_change.as_deref() {
        Some("Y") => {
            // send_back_fee is this refund's amount when given (refund_fee sums all refunds of
            // the trade); without it, what moved is what we asked: Alipay refunds exactly the
            // requested amount or refuses.
            let amount = match r.send_back_fee.as_deref() {
                Some(text) => parse_optional_amount(text)?.unwrap_or(req.amount),
                None => req.amount,
            };
            if amount.amount() > req.amount.amount() {
                return Err(ChannelError::Untrusted(format!(
                    "refunded {amount}, more than the {} asked",
                    req.amount
                )));
            }
            Ok(RefundResult {
                state: RefundState::Succeeded,
                refunded_amount: Some(amount),
            })
        }
        // No money moved by this call: not yet, or a repeat of a refund made before. Only the
        // refund query tells which.
        Some("N") => Ok(refund_processing()),
        other => Err(ChannelError::Untrusted(format!("fund_change {other:?}"))),
    }
}

/// Maps the answer of `alipay.trade.fastpay.refund.query`.
fn refund_query_result(
    c: &wire::Common,
    r: &wire::RefundQueryResponse,
    out_request_no: &str,
) -> Result<RefundResult, ChannelError> {
    if c.code != wire::CODE_SUCCESS {
        // No trade, so no refund of it.
        if c.sub_code.as_deref() == Some("ACQ.TRADE_NOT_EXIST") {
            return Ok(RefundResult {
                state: RefundState::NotFound,
                refunded_amount: None,
            });
        }
        return Err(declined(c));
    }
    if r.out_request_no
        .as_deref()
        .is_some_and(|n| n != out_request_no)
    {
        return Err(ChannelError::Untrusted(format!(
            "refund query answer for another refund: {:?}",
            r.out_request_no
        )));
    }
    match (r.refund_status.as_deref(), r.refund_amount.as_deref()) {
        (Some("REFUND_SUCCESS"), Some(amount)) => Ok(RefundResult {
            state: RefundState::Succeeded,
            refunded_amount: Some(parse_amount(amount)?),
        }),
        (Some("REFUND_SUCCESS"), None) => Err(ChannelError::Untrusted(
            "refund succeeded without refund_amount".into(),
        )),
        // Alipay answers an unknown out_request_no with an empty success.
        (None, None) => Ok(RefundResult {
            state: RefundState::NotFound,
            refunded_amount: None,
        }),
        _ => Ok(refund_processing()),
    }
}

/// The `biz_content` of `alipay.fund.trans.uni.transfer`.
fn transfer_biz(req: &PayoutRequest) -> String {
    serde_json::to_string(&wire::TransferBiz {
        out_biz_no: req.out_biz_no.clone(),
        trans_amount: req.amount.amount_string(),
        product_code: wire::PRODUCT_TRANS_ACCOUNT_NO_PWD.into(),
        biz_scene: wire::BIZ_SCENE_DIRECT_TRANSFER.into(),
        order_title: None,
        payee_info: wire::Participant {
            identity: req.payee_account.clone(),
            identity_type: wire::IDENTITY_ALIPAY_LOGON_ID.into(),
            name: Some(req.payee_name.clone()).filter(|n| !n.is_empty()),
        },
        remark: Some(req.remark.clone()).filter(|r| !r.is_empty()),
    })
    .expect("biz content serialises")
}

/// A transfer order's status, shared by the transfer answer and the transfer query.
fn transfer_state(
    status: Option<&str>,
    order_id: Option<&str>,
    error_code: Option<&str>,
    fail_reason: Option<&str>,
) -> Result<PayoutState, ChannelError> {
    match status {
        Some("SUCCESS") => match order_id {
            Some(id) if !id.is_empty() => Ok(PayoutState::Succeeded {
                channel_order_id: id.to_string(),
            }),
            _ => Err(ChannelError::Untrusted(
                "transfer succeeded without order_id".into(),
            )),
        },
        Some("DEALING" | "WAIT_PAY" | "INIT") => Ok(PayoutState::Processing),
        // REFUND: paid, then bounced back to us; CLOSED: never paid. Either way nothing left us.
        Some(s @ ("FAIL" | "REFUND" | "CLOSED")) => Ok(PayoutState::Failed {
            code: error_code.unwrap_or(s).to_string(),
            message: fail_reason.unwrap_or("transfer not paid").to_string(),
        }),
        other => Err(ChannelError::Untrusted(format!(
            "unknown transfer status {other:?}"
        ))),
    }
}

/// Maps the answer of `alipay.fund.trans.uni.transfer`.
fn payout_result(
    c: &wire::Common,
    r: &wire::TransferResponse,
    req: &PayoutRequest,
) -> Result<PayoutState, ChannelError> {
    if c.code != wire::CODE_SUCCESS {
        return Ok(match refusal(wire::TRANSFER, c, PAYOUT_REFUSALS)? {
            Some((code, message)) => PayoutState::Failed { code, message },
            None => PayoutState::Processing,
        });
    }
    if r.out_biz_no.as_deref().is_some_and(|n| n != req.out_biz_no) {
        return Err(ChannelError::Untrusted(format!(
            "transfer answer for another payout: {:?}",
            r.out_biz_no
        )));
    }
    transfer_state(r.status.as_deref(), r.order_id.as_deref(), None, None)
}

/// Maps the answer of `alipay.fund.trans.common.query`.
fn payout_query_result(
    c: &wire::Common,
    r: &wire::TransferQueryResponse,
    out_biz_no: &str,
) -> Result<PayoutState, ChannelError> {
    if c.code != wire::CODE_SUCCESS {
        if c.sub_code.as_deref() == Some("ORDER_NOT_EXIST") {
            return Ok(PayoutState::NotFound);
        }
        return Err(declined(c));
    }
    if r.out_biz_no.as_deref().is_some_and(|n| n != out_biz_no) {
        return Err(ChannelError::Untrusted(format!(
            "transfer query answer for another payout: {:?}",
            r.out_biz_no
        )));
    }
    transfer_state(
        r.status.as_deref(),
        r.order_id.as_deref(),
        r.error_code.as_deref(),
        r.fail_reason.as_deref(),
    )
}

/// The `biz_content` of `alipay.data.dataservice.bill.downloadurl.query` for a daily trade bill.
fn bill_url_biz(date: chrono::NaiveDate) -> String {
    serde_json::to_string(&wire::BillUrlBiz {
        bill_type: wire::BILL_TYPE_TRADE.into(),
        bill_date: date.format("%Y-%m-%d").to_string(),
    })
    .expect("biz content serialises")
}

/// Maps the answer of `alipay.data.dataservice.bill.downloadurl.query`.
fn statement_url_result(
    c: &wire::Common,
    r: &wire::BillUrlResponse,
) -> Result<StatementUrl, ChannelError> {
    if c.code != wire::CODE_SUCCESS {
        return match c.sub_code.as_deref() {
            Some(wire::SUB_BILL_NOT_EXIST) => Ok(StatementUrl::NotReady),
            // This API's "unknown error, try again later" (system errors are caught by decode).
            Some("isp.unknow-error") => Err(ChannelError::Transient(format!(
                "{}: {} {}",
                wire::BILL_URL_QUERY,
                c.code,
                c.sub_msg.as_deref().unwrap_or(&c.msg)
            ))),
            _ => Err(declined(c)),
        };
    }
    match r.bill_download_url.as_deref() {
        Some(text) => match url::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                Ok(StatementUrl::Ready(text.to_string()))
            }
            _ => Err(ChannelError::Untrusted(format!(
                "bill_download_url {text:?} is not an http(s) address"
            ))),
        },
        None => Err(ChannelError::Untrusted(
            "bill url query succeeded without bill_download_url".into(),
        )),
    }
}

#[async_trait::async_trait]
impl Channel for AlipayChannel {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn precreate(&self, req: &PrecreateRequest) -> Result<PrecreateResponse, ChannelError> {
        if req.amount.currency() != Currency::Cny {
            return Err(ChannelError::Declined {
                code: "payflow.UNSUPPORTED_CURRENCY".into(),
                message: format!("Alipay collects CNY, not {}", req.amount.currency()),
            });
        }
        let biz = wire::PrecreateBiz {
            out_trade_no: req.out_trade_no.clone(),
            total_amount: req.amount.amount_string(),
            subject: req.subject.clone(),
            time_expire: Some(sign::format_time(req.expires_at_ms)),
        };
        let biz = serde_json::to_string(&biz).expect("biz content serialises");
        let (r, common): (wire::PrecreateResponse, _) = self
            .call(wire::PRECREATE, biz, Some(&req.notify_url))
            .await?;
        if common.code != wire::CODE_SUCCESS {
            return Err(declined(&common));
        }
        let qr_code = r
            .qr_code
            .ok_or_else(|| ChannelError::Untrusted("precreate success without qr_code".into()))?;
        Ok(PrecreateResponse { qr_code })
    }

    async fn query(&self, out_trade_no: &str) -> Result<TradeQuery, ChannelError> {
        let biz = serde_json::to_string(&wire::TradeRefBiz {
            out_trade_no: out_trade_no.into(),
        })
        .expect("biz content serialises");
        let (r, common): (wire::QueryResponse, _) = self.call(wire::QUERY, biz, None).await?;
        if common.code != wire::CODE_SUCCESS {
            if common.sub_code.as_deref() == Some("ACQ.TRADE_NOT_EXIST") {
                return Ok(TradeQuery {
                    state: TradeState::NotFound,
                    channel_trade_no: None,
                    paid_amount: None,
                });
            }
            return Err(declined(&common));
        }
        let state = match r.trade_status.as_deref() {
            Some("WAIT_BUYER_PAY") => TradeState::WaitingForPayment,
            Some("TRADE_SUCCESS") | Some("TRADE_FINISHED") => TradeState::Paid,
            Some("TRADE_CLOSED") => TradeState::Closed,
            other => {
                return Err(ChannelError::Untrusted(format!(
                    "unknown trade_status {other:?}"
                )));
            }
        };
        let paid_amount = match (state, r.total_amount.as_deref()) {
            (TradeState::Paid, Some(a)) => Some(parse_amount(a)?),
            (TradeState::Paid, None) => {
                return Err(ChannelError::Untrusted(
                    "paid trade without total_amount".into(),
                ));
            }
            _ => None,
        };
        Ok(TradeQuery {
            state,
            channel_trade_no: r.trade_no,
            paid_amount,
        })
    }

    async fn close(&self, out_trade_no: &str) -> Result<CloseOutcome, ChannelError> {
        let biz = serde_json::to_string(&wire::TradeRefBiz {
            out_trade_no: out_trade_no.into(),
        })
        .expect("biz content serialises");
        let (_r, common): (wire::CloseResponse, _) = self.call(wire::CLOSE, biz, None).await?;
        if common.code == wire::CODE_SUCCESS {
            return Ok(CloseOutcome::Closed);
        }
        match common.sub_code.as_deref() {
            // Never scanned: nothing to close at the channel.
            Some("ACQ.TRADE_NOT_EXIST") => Ok(CloseOutcome::Closed),
            // Paid (or finished) meanwhile: the caller confirms with a query.
            Some("ACQ.TRADE_STATUS_ERROR") => Ok(CloseOutcome::AlreadyPaid),
            _ => Err(declined(&common)),
        }
    }

    async fn refund(&self, req: &RefundRequest) -> Result<RefundResult, ChannelError> {
        require_cny(&req.amount)?;
        let (r, common): (wire::RefundResponse, _) =
            self.call(wire::REFUND, refund_biz(req), None).await?;
        refund_result(&common, &r, req)
    }

    async fn query_refund(
        &self,
        out_trade_no: &str,
        out_request_no: &str,
    ) -> Result<RefundResult, ChannelError> {
        let biz = serde_json::to_string(&wire::RefundQueryBiz {
            out_trade_no: out_trade_no.into(),
            out_request_no: out_request_no.into(),
        })
        .expect("biz content serialises");
        let (r, common): (wire::RefundQueryResponse, _) =
            self.call(wire::REFUND_QUERY, biz, None).await?;
        refund_query_result(&common, &r, out_request_no)
    }

    async fn payout(&self, req: &PayoutRequest) -> Result<PayoutState, ChannelError> {
        require_cny(&req.amount)?;
        let (r, common): (wire::TransferResponse, _) =
            self.call(wire::TRANSFER, transfer_biz(req), None).await?;
        payout_result(&common, &r, req)
    }

    async fn query_payout(&self, out_biz_no: &str) -> Result<PayoutState, ChannelError> {
        let biz = serde_json::to_string(&wire::TransferQueryBiz {
            product_code: wire::PRODUCT_TRANS_ACCOUNT_NO_PWD.into(),
            biz_scene: wire::BIZ_SCENE_DIRECT_TRANSFER.into(),
            out_biz_no: out_biz_no.into(),
        })
        .expect("biz content serialises");
        let (r, common): (wire::TransferQueryResponse, _) =
            self.call(wire::TRANSFER_QUERY, biz, None).await?;
        payout_query_result(&common, &r, out_biz_no)
    }

    async fn statement_url(&self, date: chrono::NaiveDate) -> Result<StatementUrl, ChannelError> {
        let (r, common): (wire::BillUrlResponse, _) = self
            .call(wire::BILL_URL_QUERY, bill_url_biz(date), None)
            .await?;
        statement_url_result(&common, &r)
    }

    /// The address expires 30 seconds after it is issued: it is fetched at once (a plain GET,
    /// the address carries its own token). Read as the sandbox's CSV trade bill
    /// (`recon::alipay`); real Alipay serves a zip of GBK CSV files, which that parser refuses.
    async fn open_statement(&self, date: chrono::NaiveDate) -> Result<StatementFile, ChannelError> {
        let url = match self.statement_url(date).await? {
            StatementUrl::Ready(url) => url,
            StatementUrl::NotReady => return Ok(StatementFile::NotReady),
            StatementUrl::Empty => {
                return Ok(StatementFile::Empty {
                    format: StatementFormat::AlipayTrade,
                });
            }
        };
        let what = "statement download";
        let resp = self
            .http
            .get(&url)
            .timeout(statement::DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|e| ChannelError::Transient(format!("{what}: {e}")))?;
        Ok(StatementFile::Ready {
            format: StatementFormat::AlipayTrade,
            body: statement::response_body(what, resp, None)?,
        })
    }

    fn verify_notice(
        &self,
        params: &BTreeMap<String, String>,
    ) -> Result<VerifiedNotice, NoticeError> {
        sign::verify_notify(params, &self.cfg.alipay_public_key)
            .map_err(|_| NoticeError::BadSignature)?;
        let get = |k: &str| {
            params
                .get(k)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| NoticeError::Malformed(format!("missing {k}")))
        };
        if get("app_id")? != self.cfg.app_id {
            return Err(NoticeError::WrongApp);
        }
        let notify_time = get("notify_time")?;
        let notify_time_ms = sign::parse_time(&notify_time)
            .ok_or_else(|| NoticeError::Malformed(format!("notify_time {notify_time:?}")))?;
        Ok(VerifiedNotice {
            notify_id: get("notify_id")?,
            out_trade_no: get("out_trade_no")?,
            channel_trade_no: params.get("trade_no").cloned(),
            trade_status: get("trade_status")?,
            total_amount: params.get("total_amount").cloned(),
            notify_time_ms,
        })
    }

    fn ack_body(&self) -> &'static str {
        "success"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny(text: &str) -> Money {
        Money::parse(text, Currency::Cny).unwrap()
    }

    fn refund_req(amount: &str) -> RefundRequest {
        RefundRequest {
            out_trade_no: "T1".into(),
            out_request_no: "R1".into(),
            amount: cny(amount),
            reason: "customer asked".into(),
        }
    }

    fn payout_req() -> PayoutRequest {
        PayoutRequest {
            out_biz_no: "P1".into(),
            amount: cny("100.5"),
            payee_account: "payee@example.com".into(),
            payee_name: "Zhang San".into(),
            remark: "withdrawal".into(),
        }
    }

    fn refund(node: &str, amount: &str) -> Result<RefundResult, ChannelError> {
        let (r, c) = decode(wire::REFUND, node)?;
        refund_result(&c, &r, &refund_req(amount))
    }

    fn refund_query(node: &str) -> Result<RefundResult, ChannelError> {
        let (r, c) = decode(wire::REFUND_QUERY, node)?;
        refund_query_result(&c, &r, "R1")
    }

    fn payout(node: &str) -> Result<PayoutState, ChannelError> {
        let (r, c) = decode(wire::TRANSFER, node)?;
        payout_result(&c, &r, &payout_req())
    }

    fn payout_query(node: &str) -> Result<PayoutState, ChannelError> {
        let (r, c) = decode(wire::TRANSFER_QUERY, node)?;
        payout_query_result(&c, &r, "P1")
    }

    fn succeeded(amount: &str) -> RefundResult {
        RefundResult {
            state: RefundState::Succeeded,
            refunded_amount: Some(cny(amount)),
        }
    }

    fn refund_state(state: RefundState) -> RefundResult {
        RefundResult {
            state,
            refunded_amount: None,
        }
    }

    fn failed(code: &str, message: &str) -> RefundState {
        RefundState::Failed {
            code: code.into(),
            message: message.into(),
        }
    }

    #[test]
    fn biz_contents_use_alipay_names_and_yuan_with_two_decimals() {
        assert_eq!(
            refund_biz(&refund_req("10.5")),
            r#"{"out_trade_no":"T1","refund_amount":"10.50","out_request_no":"R1","refund_reason":"customer asked"}"#
        );
        let mut no_reason = refund_req("0.01");
        no_reason.reason.clear();
        assert_eq!(
            refund_biz(&no_reason),
            r#"{"out_trade_no":"T1","refund_amount":"0.01","out_request_no":"R1"}"#
        );
        assert_eq!(
            transfer_biz(&payout_req()),
            r#"{"out_biz_no":"P1","trans_amount":"100.50","product_code":"TRANS_ACCOUNT_NO_PWD","biz_scene":"DIRECT_TRANSFER","payee_info":{"identity":"payee@example.com","identity_type":"ALIPAY_LOGON_ID","name":"Zhang San"},"remark":"withdrawal"}"#
        );
    }

    #[test]
    fn refund_with_fund_change_is_succeeded_with_this_refunds_amount() {
        // refund_fee is the trade's running total; send_back_fee this refund's amount.
        let node = r#"{"code":"10000","msg":"Success","trade_no":"2026000000000001","out_trade_no":"T1","buyer_logon_id":"159****5620","fund_change":"Y","refund_fee":"30.00","send_back_fee":"10.00","gmt_refund_pay":"2026-01-02 03:04:05"}"#;
        assert_eq!(refund(node, "10.00"), Ok(succeeded("10.00")));
        // Older answers carry send_back_fee "0.00": the amount asked is what moved.
        let node = r#"{"code":"10000","msg":"Success","out_trade_no":"T1","fund_change":"Y","refund_fee":"0.01","send_back_fee":"0.00"}"#;
        assert_eq!(refund(node, "0.01"), Ok(succeeded("0.01")));
        let node = r#"{"code":"10000","msg":"Success","out_trade_no":"T1","fund_change":"Y","refund_fee":"5.00"}"#;
        assert_eq!(refund(node, "5"), Ok(succeeded("5.00")));
    }

    #[test]
    fn refund_without_fund_change_is_processing() {
        let node = r#"{"code":"10000","msg":"Success","out_trade_no":"T1","fund_change":"N","refund_fee":"10.00"}"#;
        assert_eq!(
            refund(node, "10.00"),
            Ok(refund_state(RefundState::Processing))
        );
    }

    #[test]
    fn definite_refund_refusals_are_failed() {
        let node = r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.REFUND_AMT_NOT_EQUAL_TOTAL","sub_msg":"refund amount differs from the trade","out_trade_no":"T1","refund_fee":"0.00","send_back_fee":"0.00"}"#;
        assert_eq!(
            refund(node, "10.00"),
            Ok(refund_state(failed(
                "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL",
                "refund amount differs from the trade"
            )))
        );
        for code in [
            "ACQ.TRADE_NOT_EXIST",
            "ACQ.TRADE_STATUS_ERROR",
            "ACQ.REASON_TRADE_REFUND_FEE_ERR",
        ] {
            let node = format!(
                r#"{{"code":"40004","msg":"Business Failed","sub_code":"{code}","sub_msg":"no"}}"#
            );
            assert_eq!(
                refund(&node, "1.00"),
                Ok(refund_state(failed(code, "no"))),
                "{code}"
            );
        }
    }

    #[test]
    fn refund_errors_that_are_not_definite() {
        // System errors: retry with the same out_request_no.
        let node = r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR","sub_msg":"system busy"}"#;
        assert!(matches!(
            refund(node, "1.00"),
            Err(ChannelError::Transient(_))
        ));
        let node = r#"{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknow-error","sub_msg":"system busy"}"#;
        assert!(matches!(
            refund(node, "1.00"),
            Err(ChannelError::Transient(_))
        ));
        // A repeat with other details: the original refund may exist, so the query decides.
        let node = r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.DISCORDANT_REPEAT_REQUEST","sub_msg":"repeat differs"}"#;
        assert_eq!(
            refund(node, "1.00"),
            Ok(refund_state(RefundState::Processing))
        );
        // Refused at the gateway: nothing was processed.
        let node = r#"{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-signature","sub_msg":"bad sign"}"#;
        assert_eq!(
            refund(node, "1.00"),
            Err(ChannelError::Declined {
                code: "isv.invalid-signature".into(),
                message: "bad sign".into()
            })
        );
    }

    #[test]
    fn refund_answers_that_cannot_be_trusted() {
        let more = r#"{"code":"10000","msg":"Success","out_trade_no":"T1","fund_change":"Y","send_back_fee":"12.00"}"#;
        let no_flag = r#"{"code":"10000","msg":"Success","out_trade_no":"T1"}"#;
        let other_trade =
            r#"{"code":"10000","msg":"Success","out_trade_no":"T2","fund_change":"Y"}"#;
        let fen_fraction = r#"{"code":"10000","msg":"Success","out_trade_no":"T1","fund_change":"Y","send_back_fee":"9.999"}"#;
        for node in [more, no_flag, other_trade, fen_fraction] {
            assert!(
                matches!(refund(node, "10.00"), Err(ChannelError::Untrusted(_))),
                "{node}"
            );
        }
    }

    #[test]
    fn refund_query_mapping() {
        let done = r#"{"code":"10000","msg":"Success","trade_no":"2026000000000001","out_trade_no":"T1","out_request_no":"R1","total_amount":"30.00","refund_amount":"12.34","refund_status":"REFUND_SUCCESS"}"#;
        assert_eq!(refund_query(done), Ok(succeeded("12.34")));
        let pending = r#"{"code":"10000","msg":"Success","out_trade_no":"T1","out_request_no":"R1","total_amount":"30.00","refund_amount":"12.34"}"#;
        assert_eq!(
            refund_query(pending),
            Ok(refund_state(RefundState::Processing))
        );
        let unknown =
            r#"{"code":"10000","msg":"Success","trade_no":"2026000000000001","out_trade_no":"T1"}"#;
        assert_eq!(
            refund_query(unknown),
            Ok(refund_state(RefundState::NotFound))
        );
        let no_trade = r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"no such trade"}"#;
        assert_eq!(
            refund_query(no_trade),
            Ok(refund_state(RefundState::NotFound))
        );
        let busy = r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR","sub_msg":"busy"}"#;
        assert!(matches!(
            refund_query(busy),
            Err(ChannelError::Transient(_))
        ));
        let no_amount = r#"{"code":"10000","msg":"Success","out_trade_no":"T1","out_request_no":"R1","refund_status":"REFUND_SUCCESS"}"#;
        let other_refund = r#"{"code":"10000","msg":"Success","out_trade_no":"T1","out_request_no":"R2","refund_amount":"1.00","refund_status":"REFUND_SUCCESS"}"#;
        for node in [no_amount, other_refund] {
            assert!(
                matches!(refund_query(node), Err(ChannelError::Untrusted(_))),
                "{node}"
            );
        }
    }

    #[test]
    fn transfer_mapping() {
        let ok = r#"{"code":"10000","msg":"Success","out_biz_no":"P1","order_id":"20260101110070000006","pay_fund_order_id":"20260101110070001506","status":"SUCCESS","trans_date":"2026-01-01 10:00:00"}"#;
        assert_eq!(
            payout(ok),
            Ok(PayoutState::Succeeded {
                channel_order_id: "20260101110070000006".into()
            })
        );
        let dealing = r#"{"code":"10000","msg":"Success","out_biz_no":"P1","order_id":"2026","status":"DEALING"}"#;
        assert_eq!(payout(dealing), Ok(PayoutState::Processing));
        let fail = r#"{"code":"10000","msg":"Success","out_biz_no":"P1","order_id":"2026","status":"FAIL"}"#;
        assert_eq!(
            payout(fail),
            Ok(PayoutState::Failed {
                code: "FAIL".into(),
                message: "transfer not paid".into()
            })
        );
        let no_payee = r#"{"code":"40004","msg":"Business Failed","sub_code":"PAYEE_NOT_EXIST","sub_msg":"payee does not exist"}"#;
        assert_eq!(
            payout(no_payee),
            Ok(PayoutState::Failed {
                code: "PAYEE_NOT_EXIST".into(),
                message: "payee does not exist".into()
            })
        );
        let broke = r#"{"code":"40004","msg":"Business Failed","sub_code":"PAYER_BALANCE_NOT_ENOUGH","sub_msg":"balance"}"#;
        assert!(matches!(payout(broke), Ok(PayoutState::Failed { .. })));
        let busy = r#"{"code":"40004","msg":"Business Failed","sub_code":"SYSTEM_ERROR","sub_msg":"busy"}"#;
        assert!(matches!(payout(busy), Err(ChannelError::Transient(_))));
        // Same out_biz_no, other details: the first submit may have paid.
        let inconsistent = r#"{"code":"40004","msg":"Business Failed","sub_code":"PAYMENT_INFO_INCONSISTENCY","sub_msg":"repeat differs"}"#;
        assert_eq!(payout(inconsistent), Ok(PayoutState::Processing));
        let no_order = r#"{"code":"10000","msg":"Success","out_biz_no":"P1","status":"SUCCESS"}"#;
        let odd = r#"{"code":"10000","msg":"Success","out_biz_no":"P1","order_id":"2026","status":"MAYBE"}"#;
        let other = r#"{"code":"10000","msg":"Success","out_biz_no":"P2","order_id":"2026","status":"SUCCESS"}"#;
        for node in [no_order, odd, other] {
            assert!(
                matches!(payout(node), Err(ChannelError::Untrusted(_))),
                "{node}"
            );
        }
    }

    #[test]
    fn transfer_query_mapping() {
        let missing = r#"{"code":"40004","msg":"Business Failed","sub_code":"ORDER_NOT_EXIST","sub_msg":"order does not exist"}"#;
        assert_eq!(payout_query(missing), Ok(PayoutState::NotFound));
        let ok = r#"{"code":"10000","msg":"Success","order_id":"2026X","out_biz_no":"P1","pay_fund_order_id":"2026Y","status":"SUCCESS","trans_amount":"100.50","pay_date":"2026-01-01 10:00:00"}"#;
        assert_eq!(
            payout_query(ok),
            Ok(PayoutState::Succeeded {
                channel_order_id: "2026X".into()
            })
        );
        for status in ["DEALING", "WAIT_PAY"] {
            let node = format!(
                r#"{{"code":"10000","msg":"Success","order_id":"2026X","out_biz_no":"P1","status":"{status}"}}"#
            );
            assert_eq!(payout_query(&node), Ok(PayoutState::Processing), "{status}");
        }
        let fail = r#"{"code":"10000","msg":"Success","order_id":"2026X","out_biz_no":"P1","status":"FAIL","error_code":"PAYEE_ACCOUNT_STATUS_ERROR","fail_reason":"account frozen"}"#;
        assert_eq!(
            payout_query(fail),
            Ok(PayoutState::Failed {
                code: "PAYEE_ACCOUNT_STATUS_ERROR".into(),
                message: "account frozen".into()
            })
        );
        let bounced = r#"{"code":"10000","msg":"Success","order_id":"2026X","out_biz_no":"P1","status":"REFUND","error_code":"BANK_REFUND"}"#;
        assert!(matches!(
            payout_query(bounced),
            Ok(PayoutState::Failed { ref code, .. }) if code == "BANK_REFUND"
        ));
        let denied = r#"{"code":"40006","msg":"Insufficient Permissions","sub_code":"isv.insufficient-isv-permissions","sub_msg":"no permission"}"#;
        assert!(matches!(
            payout_query(denied),
            Err(ChannelError::Declined { .. })
        ));
    }

    fn statement(node: &str) -> Result<StatementUrl, ChannelError> {
        let (r, c) = decode(wire::BILL_URL_QUERY, node)?;
        statement_url_result(&c, &r)
    }

    #[test]
    fn bill_url_query_mapping() {
        let date = chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
        assert_eq!(
            bill_url_biz(date),
            r#"{"bill_type":"trade","bill_date":"2026-01-05"}"#
        );
        let url = "http://dwbillcenter.alipay.com/downloadBillFile.resource?bizType=trade&userId=20885&fileType=csv.zip&bizDates=20260105&downloadFileName=20885_20260105.csv.zip&fileId=%2Ftrade%2F20885%2F20260105&timestamp=1767657600&token=abc";
        let ok = format!(r#"{{"code":"10000","msg":"Success","bill_download_url":"{url}"}}"#);
        assert_eq!(statement(&ok), Ok(StatementUrl::Ready(url.into())));
        let not_yet = r#"{"code":"40004","msg":"Business Failed","sub_code":"isp.bill_not_exist","sub_msg":"bill does not exist"}"#;
        assert_eq!(statement(not_yet), Ok(StatementUrl::NotReady));
        let bad_date = r#"{"code":"40004","msg":"Business Failed","sub_code":"isv.invalid-arguments","sub_msg":"bill_date is invalid"}"#;
        assert_eq!(
            statement(bad_date),
            Err(ChannelError::Declined {
                code: "isv.invalid-arguments".into(),
                message: "bill_date is invalid".into()
            })
        );
        let denied = r#"{"code":"40006","msg":"Insufficient Permissions","sub_code":"isv.insufficient-isv-permissions","sub_msg":"no permission"}"#;
        assert!(matches!(
            statement(denied),
            Err(ChannelError::Declined { .. })
        ));
        for busy in [
            r#"{"code":"20000","msg":"Service Currently Unavailable","sub_code":"isp.unknow-error","sub_msg":"system busy"}"#,
            r#"{"code":"40004","msg":"Business Failed","sub_code":"isp.unknow-error","sub_msg":"unknown error"}"#,
            r#"{"code":"40004","msg":"Business Failed","sub_code":"ACQ.SYSTEM_ERROR","sub_msg":"busy"}"#,
        ] {
            assert!(
                matches!(statement(busy), Err(ChannelError::Transient(_))),
                "{busy}"
            );
        }
        let no_url = r#"{"code":"10000","msg":"Success"}"#;
        let not_a_url = r#"{"code":"10000","msg":"Success","bill_download_url":"bill.csv.zip"}"#;
        let file_url =
            r#"{"code":"10000","msg":"Success","bill_download_url":"file:///etc/passwd"}"#;
        for node in [no_url, not_a_url, file_url] {
            assert!(
                matches!(statement(node), Err(ChannelError::Untrusted(_))),
                "{node}"
            );
        }
    }
}
