//! WeChat Pay API v3 adapter (direct merchant, Native QR payments), faithful to the real
//! protocol so it works against WeChat Pay when configured: JSON over HTTPS, requests signed
//! with the merchant's API key (`Authorization: WECHATPAY2-SHA256-RSA2048 ...`), every answer
//! and notification verified against the platform public key named by `Wechatpay-Serial`,
//! notification resources decrypted with the API v3 key. `sign` holds the signature rules,
//! `notify` the notification checks, `wire` the JSON shapes.
//!
//! Mapping to payflow:
//! - `trade_state`: `SUCCESS` and `REFUND` (paid, then refunded: refunds are tracked apart)
//!   are [`TradeState::Paid`]; `NOTPAY`, `USERPAYING` and `ACCEPT` (accepted, awaiting the
//!   debit) are [`TradeState::WaitingForPayment`]; `CLOSED`, `REVOKED` and `PAYERROR` are
//!   [`TradeState::Closed`]. `PAYERROR` is a failed payment that WeChat Pay tells the merchant
//!   to re-order: the trade no longer collects, and should the customer still pay it, the
//!   notification of a paid closed order starts the late-payment refund.
//! - Refund `status`: `SUCCESS` -> [`RefundState::Succeeded`], `PROCESSING` ->
//!   [`RefundState::Processing`], `CLOSED` -> [`RefundState::Failed`], and `ABNORMAL` ->
//!   [`RefundState::Failed`] with code `ABNORMAL`: the customer's account could not be
//!   credited (card cancelled or frozen) and the refund waits for manual handling in the
//!   merchant platform, which may still pay it out later; it is logged as a warning and left
//!   to operators and reconciliation.
//! - Errors: HTTP 5xx, 429, timeouts, `SYSTEM_ERROR` and `FREQUENCY_LIMITED` are
//!   [`ChannelError::Transient`]; a 4xx with a code is [`ChannelError::Declined`] (the
//!   operations turn the codes they expect into outcomes: `ORDERPAID` on close is
//!   [`CloseOutcome::AlreadyPaid`], `ORDER_NOT_EXIST` on query is [`TradeState::NotFound`]);
//!   an answer that fails verification, is unsigned while successful, or does not parse is
//!   [`ChannelError::Untrusted`]. Error answers without signature headers are read (WeChat
//!   Pay refuses some requests, e.g. a bad request signature, before signing), as the official
//!   SDKs do; a signed one must verify. Every outcome built on an error answer is one a later
//!   signed answer confirms (a close refused as paid is confirmed by query; a refused refund
//!   is looked up before it counts as failed).
//! - WeChat Pay has no payout in this API set: [`Channel::payout`] and
//!   [`Channel::query_payout`] are declined with `payflow.UNSUPPORTED`.
//! - Notifications come as JSON with signature headers: [`Channel::verify_notice_http`]. The
//!   acknowledgement is an HTTP 200 or 204 with an empty body, so [`Channel::ack_body`] is `""`.

pub mod notify;
pub mod sign;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use payflow_client::{Currency, Money};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretBox};
use serde::de::DeserializeOwned;

use super::{
    Channel, ChannelError, CloseOutcome, NoticeError, PayoutRequest, PayoutState, PrecreateRequest,
    PrecreateResponse, RefundRequest, RefundResult, RefundState, StatementFile, StatementUrl,
    TradeQuery, TradeState, VerifiedNotice, statement,
};
use crate::crypto::CryptoError;
use crate::crypto::rsa_keys::{RsaSigner, RsaVerifier};
use crate::recon::StatementFormat;

/// The merchant's API v3 key: 32 bytes, the AES-256-GCM key of notification resources.
pub struct ApiV3Key(SecretBox<[u8; 32]>);

impl ApiV3Key {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ApiV3Key(SecretBox::new(Box::new(bytes)))
    }

    /// The key as the merchant platform sets it: 32 characters, used as their bytes.
    pub fn from_text(text: &str) -> Result<Self, CryptoError> {
        let bytes: [u8; 32] = text.as_bytes().try_into().map_err(|_| CryptoError::Key {
            what: "WeChat Pay API v3 key".into(),
            reason: format!("must be 32 bytes, not {}", text.len()),
        })?;
        Ok(Self::from_bytes(bytes))
    }

    fn expose(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl Clone for ApiV3Key {
    fn clone(&self) -> Self {
        Self::from_bytes(*self.expose())
    }
}

impl fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiV3Key([REDACTED])")
    }
}

/// Configuration of one WeChat Pay merchant (direct mode).
#[derive(Debug, Clone)]
pub struct WechatConfig {
    /// Channel name in payflow (e.g. `wechat`).
    pub name: String,
    /// `https://api.mch.weixin.qq.com` (a path prefix, as a sandbox may use, is kept).
    pub base_url: url::Url,
    /// Merchant id (`mchid`).
    pub mchid: String,
    /// The app the payments are for (`appid`).
    pub appid: String,
    /// Serial number of the merchant API certificate whose key signs our requests.
    pub merchant_serial_no: String,
    pub merchant_private_key: RsaSigner,
    /// Platform public keys by serial (`Wechatpay-Serial`): platform certificate serials or
    /// `PUB_KEY_ID_...` ids. Several during a rotation; an unknown serial is never trusted.
    pub platform_keys: Vec<(String, RsaVerifier)>,
    pub api_v3_key: ApiV3Key,
    pub connect_timeout: Duration,
    /// Bounds every call end to end; a call that runs out is `Transient`.
    pub request_timeout: Duration,
}

pub struct WechatChannel {
    cfg: WechatConfig,
    http: reqwest::Client,
}

/// Codes of the refund request that refuse it for good (when no refund of that number
/// exists): not enough balance, a trade that cannot be refunded (`INVALID_REQUEST`: not paid,
/// fully refunded, too old, amount above what is left), bad parameters, a frozen payer
/// account, no such trade.
const REFUND_REFUSALS: &[&str] = &[
    "NOT_ENOUGH",
    "INVALID_REQUEST",
    "PARAM_ERROR",
    "USER_ACCOUNT_ABNORMAL",
    "RESOURCE_NOT_EXISTS",
    "ORDER_NOT_EXIST",
];

/// WeChat Pay limits (characters).
const DESCRIPTION_MAX: usize = 127;
const REFUND_REASON_MAX: usize = 80;

fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// RFC 3339 in Beijing time, as WeChat Pay writes times: `2026-01-05T10:34:56+08:00`.
pub fn format_time(ms: i64) -> String {
    let utc: DateTime<Utc> = DateTime::from_timestamp_millis(ms).unwrap_or_default();
    utc.with_timezone(&beijing())
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string()
}

fn now_secs() -> i64 {
    Utc::now().timestamp()
}

/// An amount to send: CNY only, in fen, within WeChat Pay's 32-bit amounts.
pub fn money_to_fen(amount: &Money) -> Result<i64, ChannelError> {
    if amount.currency() != Currency::Cny {
        return Err(ChannelError::Declined {
            code: "payflow.UNSUPPORTED_CURRENCY".into(),
            message: format!("WeChat Pay moves CNY, not {}", amount.currency()),
        });
    }
    let fen = amount.minor_units();
    if fen > i64::from(i32::MAX) {
        return Err(ChannelError::Declined {
            code: "payflow.AMOUNT_TOO_LARGE".into(),
            message: format!("{amount} is more than WeChat Pay's largest amount"),
        });
    }
    Ok(fen)
}

/// An amount WeChat Pay answered, in fen.
pub fn fen_to_money(fen: i64) -> Result<Money, ChannelError> {
    Money::from_minor(fen, Currency::Cny)
        .map_err(|e| ChannelError::Untrusted(format!("amount {fen} fen: {e}")))
}

fn require_cny_currency(currency: Option<&str>) -> Result<(), ChannelError> {
    match currency {
        None => Ok(()),
        Some(c) if c == wire::CURRENCY_CNY => Ok(()),
        Some(c) => Err(ChannelError::Untrusted(format!("amount in {c:?}, not CNY"))),
    }
}

/// WeChat Pay's `trade_state` in payflow's terms (see the module documentation).
pub fn trade_state(state: &str) -> Option<TradeState> {
    Some(match state {
        "SUCCESS" | "REFUND" => TradeState::Paid,
        "NOTPAY" | "USERPAYING" | "ACCEPT" => TradeState::WaitingForPayment,
        "CLOSED" | "REVOKED" | "PAYERROR" => TradeState::Closed,
        _ => return None,
    })
}

/// A refund `status` in payflow's terms; `refund_fen` is this refund's amount, needed when
/// it succeeded.
pub fn refund_state(status: &str, refund_fen: Option<i64>) -> Result<RefundResult, ChannelError> {
    let (state, refunded_amount) = match status {
        "SUCCESS" => match refund_fen {
            Some(fen) => (RefundState::Succeeded, Some(fen_to_money(fen)?)),
            None => {
                return Err(ChannelError::Untrusted(
                    "refund succeeded without amount.refund".into(),
                ));
            }
        },
        "PROCESSING" => (RefundState::Processing, None),
        "CLOSED" => (
            RefundState::Failed {
                code: "CLOSED".into(),
                message: "refund closed by WeChat Pay".into(),
            },
            None,
        ),
        "ABNORMAL" => {
            tracing::warn!(
                "WeChat Pay refund ABNORMAL: the customer's account could not be credited; \
                 it needs manual handling in the merchant platform"
            );
            (
                RefundState::Failed {
                    code: "ABNORMAL".into(),
                    message: "refund abnormal: the customer's account could not be credited; \
                              needs manual handling in the WeChat Pay merchant platform"
                        .into(),
                },
                None,
            )
        }
        other => {
            return Err(ChannelError::Untrusted(format!(
                "unknown refund status {other:?}"
            )));
        }
    };
    Ok(RefundResult {
        state,
        refunded_amount,
    })
}

/// Classifies an error answer (already verified when signed).
pub fn classify_error(what: &str, status: u16, body: &str) -> ChannelError {
    let parsed = serde_json::from_str::<wire::ErrorBody>(body)
        .ok()
        .filter(|e| !e.code.is_empty());
    match parsed {
        Some(e) if wire::TRANSIENT_CODES.contains(&e.code.as_str()) => {
            ChannelError::Transient(format!("{what}: HTTP {status} {}: {}", e.code, e.message))
        }
        _ if status >= 500 || status == 429 => {
            ChannelError::Transient(format!("{what}: HTTP {status}"))
        }
        Some(e) if (400..500).contains(&status) => ChannelError::Declined {
            code: e.code,
            message: e.message,
        },
        _ => ChannelError::Untrusted(format!("{what}: unexpected HTTP {status} answer")),
    }
}

/// Checks an answer: verifies its signature (required on success), then returns the body of
/// a 2xx answer or the classified error.
fn accept_answer(
    what: &str,
    status: u16,
    signed: Result<Option<sign::SignatureHeaders>, sign::VerifyError>,
    body: &[u8],
    platform_keys: &[(String, RsaVerifier)],
    now_secs: i64,
) -> Result<String, ChannelError> {
    // Server errors are retried whatever they say; nothing is concluded from them.
    if status >= 500 || status == 429 {
        return Err(classify_error(what, status, &String::from_utf8_lossy(body)));
    }
    let success = (200..300).contains(&status);
    match signed.map_err(|e| ChannelError::Untrusted(format!("{what}: answer {e}")))? {
        Some(headers) => {
            sign::verify(&headers, body, platform_keys, now_secs)
                .map_err(|e| ChannelError::Untrusted(format!("{what}: answer {e}")))?;
        }
        None if success => {
            return Err(ChannelError::Untrusted(format!(
                "{what}: unsigned HTTP {status} answer"
            )));
        }
        None => {}
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| ChannelError::Untrusted(format!("{what}: answer is not UTF-8")))?;
    if success {
        Ok(text)
    } else {
        Err(classify_error(what, status, &text))
    }
}

fn parse<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, ChannelError> {
    serde_json::from_str(text).map_err(|e| ChannelError::Untrusted(format!("{what}: {e}")))
}

fn is_not_found(code: &str) -> bool {
    wire::CODES_NOT_FOUND.contains(&code)
}

fn not_found_trade() -> TradeQuery {
    TradeQuery {
        state: TradeState::NotFound,
        channel_trade_no: None,
        paid_amount: None,
    }
}

fn refund_not_found() -> RefundResult {
    RefundResult {
        state: RefundState::NotFound,
        refunded_amount: None,
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Checks that an answer is about what we asked for.
fn same(what: &str, field: &str, answered: Option<&str>, asked: &str) -> Result<(), ChannelError> {
    match answered {
        Some(a) if a != asked => Err(ChannelError::Untrusted(format!(
            "{what}: answer for {field} {a:?}, not {asked:?}"
        ))),
        _ => Ok(()),
    }
}

/// Maps the query answer (or its error) of trade `out_trade_no`.
fn query_result(
    answer: Result<String, ChannelError>,
    out_trade_no: &str,
    appid: &str,
    mchid: &str,
) -> Result<TradeQuery, ChannelError> {
    let text = match answer {
        Ok(text) => text,
        Err(ChannelError::Declined { code, .. }) if is_not_found(&code) => {
            return Ok(not_found_trade());
        }
        Err(e) => return Err(e),
    };
    let tx: wire::Transaction = parse("query", &text)?;
    same(
        "query",
        "out_trade_no",
        tx.out_trade_no.as_deref(),
        out_trade_no,
    )?;
    same("query", "mchid", tx.mchid.as_deref(), mchid)?;
    same("query", "appid", tx.appid.as_deref(), appid)?;
    let state = tx
        .trade_state
        .as_deref()
        .and_then(trade_state)
        .ok_or_else(|| {
            ChannelError::Untrusted(format!("unknown trade_state {:?}", tx.trade_state))
        })?;
    let paid_amount = if state == TradeState::Paid {
        let amount = tx.amount.as_ref();
        require_cny_currency(amount.and_then(|a| a.currency.as_deref()))?;
        match amount.and_then(|a| a.total) {
            Some(fen) => Some(fen_to_money(fen)?),
            None => {
                return Err(ChannelError::Untrusted(
                    "paid trade without amount.total".into(),
                ));
            }
        }
    } else {
        None
    };
    Ok(TradeQuery {
        state,
        channel_trade_no: tx.transaction_id.filter(|t| !t.is_empty()),
        paid_amount,
    })
}

/// Maps the close answer: 204, or the refusals that say where the trade stands.
fn close_result(answer: Result<String, ChannelError>) -> Result<CloseOutcome, ChannelError> {
    match answer {
        Ok(_) => Ok(CloseOutcome::Closed),
        // Paid meanwhile: the caller confirms with a query.
        Err(ChannelError::Declined { code, .. }) if code == wire::CODE_ORDERPAID => {
            Ok(CloseOutcome::AlreadyPaid)
        }
        // Closed before, or never created: nothing can be paid.
        Err(ChannelError::Declined { code, .. })
            if code == wire::CODE_ORDER_CLOSED || is_not_found(&code) =>
        {
            Ok(CloseOutcome::Closed)
        }
        Err(e) => Err(e),
    }
}

/// Maps a refund (or refund query) answer about refund `out_refund_no` of `out_trade_no`;
/// `asked` is the amount requested, when known.
fn refund_answer(
    what: &str,
    text: &str,
    out_trade_no: &str,
    out_refund_no: &str,
    asked: Option<&Money>,
) -> Result<RefundResult, ChannelError> {
    let r: wire::Refund = parse(what, text)?;
    same(
        what,
        "out_refund_no",
        r.out_refund_no.as_deref(),
        out_refund_no,
    )?;
    same(
        what,
        "out_trade_no",
        r.out_trade_no.as_deref(),
        out_trade_no,
    )?;
    let amount = r.amount.as_ref();
    require_cny_currency(amount.and_then(|a| a.currency.as_deref()))?;
    let status = r
        .status
        .as_deref()
        .ok_or_else(|| ChannelError::Untrusted(format!("{what}: answer without status")))?;
    let result = refund_state(status, amount.and_then(|a| a.refund))?;
    if let (Some(refunded), Some(asked)) = (result.refunded_amount.as_ref(), asked)
        && refunded.amount() > asked.amount()
    {
        return Err(ChannelError::Untrusted(format!(
            "refunded {refunded}, more than the {asked} asked"
        )));
    }
    Ok(result)
}

/// Maps the refund query answer (or its error).
fn refund_query_result(
    answer: Result<String, ChannelError>,
    out_trade_no: &str,
    out_refund_no: &str,
) -> Result<RefundResult, ChannelError> {
    match answer {
        Ok(text) => refund_answer("refund query", &text, out_trade_no, out_refund_no, None),
        Err(ChannelError::Declined { code, .. }) if is_not_found(&code) => Ok(refund_not_found()),
        Err(e) => Err(e),
    }
}

/// Maps the trade bill answer (or its error).
fn statement_result(answer: Result<String, ChannelError>) -> Result<StatementUrl, ChannelError> {
    trade_bill_result(answer).map(|(url, _)| url)
}

/// Maps the trade bill answer (or its error), with the SHA-1 (lowercase hex) it announces for
/// the file when `hash_type` is `SHA1`. `STATEMENT_CREATING`: not ready; `NO_STATEMENT_EXIST`:
/// no trade that day, an empty statement.
fn trade_bill_result(
    answer: Result<String, ChannelError>,
) -> Result<(StatementUrl, Option<String>), ChannelError> {
    let text = match answer {
        Ok(text) => text,
        Err(ChannelError::Declined { code, .. }) if code == wire::CODE_STATEMENT_CREATING => {
            return Ok((StatementUrl::NotReady, None));
        }
        Err(ChannelError::Declined { code, .. }) if code == wire::CODE_NO_STATEMENT_EXIST => {
            return Ok((StatementUrl::Empty, None));
        }
        Err(e) => return Err(e),
    };
    let r: wire::TradeBillResponse = parse("trade bill", &text)?;
    let sha1 = match (r.hash_type.as_deref(), r.hash_value) {
        (Some(t), Some(v)) if t.eq_ignore_ascii_case("SHA1") => Some(v.to_ascii_lowercase()),
        _ => None,
    };
    match r.download_url.as_deref() {
        Some(text) => match url::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {
                Ok((StatementUrl::Ready(text.to_string()), sha1))
            }
            _ => Err(ChannelError::Untrusted(format!(
                "download_url {text:?} is not an http(s) address"
            ))),
        },
        None => Err(ChannelError::Untrusted(
            "trade bill answer without download_url".into(),
        )),
    }
}

fn unsupported(what: &str) -> ChannelError {
    ChannelError::Declined {
        code: "payflow.UNSUPPORTED".into(),
        message: format!("WeChat Pay has no {what} in payflow's API set"),
    }
}

impl WechatChannel {
    pub fn new(cfg: WechatConfig) -> Result<Self, ChannelError> {
        if cfg.platform_keys.is_empty() {
            return Err(ChannelError::Untrusted(
                "no WeChat Pay platform public key configured: nothing could be verified".into(),
            ));
        }
        crate::tls::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // WeChat Pay refuses requests without a User-Agent.
            .user_agent(concat!("payflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ChannelError::Transient(format!("http client: {e}")))?;
        Ok(WechatChannel { cfg, http })
    }

    /// `base_url` + `path` (a constant of `wire`) + `segments` (each percent-encoded as one
    /// path segment) + `query`.
    fn url(
        &self,
        path: &str,
        segments: &[&str],
        query: &[(&str, &str)],
    ) -> Result<url::Url, ChannelError> {
        let mut url = self.cfg.base_url.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .map_err(|_| {
                ChannelError::Untrusted(format!("base_url {} has no path", self.cfg.base_url))
            })?
            .pop_if_empty()
            .extend(path.split('/').filter(|s| !s.is_empty()))
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// The `Authorization` header of a request to `url`.
    fn authorization(
        &self,
        what: &str,
        method: &str,
        url: &url::Url,
        body: &str,
    ) -> Result<String, ChannelError> {
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        sign::authorization(
            &self.cfg.mchid,
            &self.cfg.merchant_serial_no,
            &self.cfg.merchant_private_key,
            method,
            &path_and_query,
            now_secs(),
            &sign::nonce(),
            body,
        )
        .map_err(|e| ChannelError::Transient(format!("{what}: signing: {e}")))
    }

    /// Sends a signed request and returns the verified body of a 2xx answer.
    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        url: url::Url,
        body: Option<String>,
    ) -> Result<String, ChannelError> {
        let body_text = body.unwrap_or_default();
        let authorization = self.authorization(what, method.as_str(), &url, &body_text)?;
        let mut request = self
            .http
            .request(method.clone(), url)
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, "application/json");
        if method != reqwest::Method::GET {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body_text);
        }
        let resp = request
            .send()
            .await
            .map_err(|e| ChannelError::Transient(format!("{what}: {e}")))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ChannelError::Transient(format!("{what}: reading body: {e}")))?;
        let signed = sign::SignatureHeaders::read(|name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
        let answer = accept_answer(
            what,
            status,
            signed,
            &body,
            &self.cfg.platform_keys,
            now_secs(),
        );
        if let Err(e) = &answer {
            let request_id = headers.get("Request-ID").and_then(|v| v.to_str().ok());
            tracing::debug!(what, status, ?request_id, error = %e, "WeChat Pay answer refused or error");
        }
        answer
    }

    async fn post_json<B: serde::Serialize>(
        &self,
        what: &str,
        url: url::Url,
        body: &B,
    ) -> Result<String, ChannelError> {
        let body = serde_json::to_string(body).expect("request bodies serialise");
        self.call(what, reqwest::Method::POST, url, Some(body))
            .await
    }

    async fn get(&self, what: &str, url: url::Url) -> Result<String, ChannelError> {
        self.call(what, reqwest::Method::GET, url, None).await
    }

    fn prepay_body(&self, req: &PrecreateRequest) -> Result<wire::NativePrepay, ChannelError> {
        Ok(wire::NativePrepay {
            appid: self.cfg.appid.clone(),
            mchid: self.cfg.mchid.clone(),
            description: truncate(&req.subject, DESCRIPTION_MAX),
            out_trade_no: req.out_trade_no.clone(),
            time_expire: Some(format_time(req.expires_at_ms)),
            notify_url: req.notify_url.clone(),
            amount: wire::Amount {
                total: money_to_fen(&req.amount)?,
                currency: Some(wire::CURRENCY_CNY.into()),
            },
        })
    }
}

#[async_trait::async_trait]
impl Channel for WechatChannel {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn precreate(&self, req: &PrecreateRequest) -> Result<PrecreateResponse, ChannelError> {
        let body = self.prepay_body(req)?;
        let url = self.url(wire::PATH_NATIVE, &[], &[])?;
        let text = self.post_json("native prepay", url, &body).await?;
        let r: wire::NativePrepayResponse = parse("native prepay", &text)?;
        match r.code_url {
            Some(qr_code) if !qr_code.is_empty() => Ok(PrecreateResponse { qr_code }),
            _ => Err(ChannelError::Untrusted(
                "native prepay answer without code_url".into(),
            )),
        }
    }

    async fn query(&self, out_trade_no: &str) -> Result<TradeQuery, ChannelError> {
        let url = self.url(
            wire::PATH_BY_OUT_TRADE_NO,
            &[out_trade_no],
            &[("mchid", &self.cfg.mchid)],
        )?;
        let answer = self.get("query", url).await;
        query_result(answer, out_trade_no, &self.cfg.appid, &self.cfg.mchid)
    }

    async fn close(&self, out_trade_no: &str) -> Result<CloseOutcome, ChannelError> {
        let url = self.url(wire::PATH_BY_OUT_TRADE_NO, &[out_trade_no, "close"], &[])?;
        let body = wire::CloseBody {
            mchid: self.cfg.mchid.clone(),
        };
        close_result(self.post_json("close", url, &body).await)
    }

    /// The refund request needs the trade's total, which [`RefundRequest`] does not carry: it
    /// is read from a trade query first (which also tells a trade that was never paid, and so
    /// has nothing to refund). No refund `notify_url` is set: refunds are confirmed by query.
    async fn refund(&self, req: &RefundRequest) -> Result<RefundResult, ChannelError> {
        let refund_fen = money_to_fen(&req.amount)?;
        let trade = self.query(&req.out_trade_no).await?;
        let total_fen = match (trade.state, trade.paid_amount) {
            (TradeState::Paid, Some(paid)) => paid.minor_units(),
            (state, _) => {
                return Ok(RefundResult {
                    state: RefundState::Failed {
                        code: "payflow.TRADE_NOT_PAID".into(),
                        message: format!("the trade is {state:?} at WeChat Pay"),
                    },
                    refunded_amount: None,
                });
            }
        };
        let body = wire::RefundBody {
            out_trade_no: req.out_trade_no.clone(),
            out_refund_no: req.out_request_no.clone(),
            reason: Some(truncate(&req.reason, REFUND_REASON_MAX)).filter(|r| !r.is_empty()),
            amount: wire::RefundAmount {
                refund: refund_fen,
                total: total_fen,
                currency: wire::CURRENCY_CNY.into(),
            },
        };
        let url = self.url(wire::PATH_REFUNDS, &[], &[])?;
        match self.post_json("refund", url, &body).await {
            Ok(text) => refund_answer(
                "refund",
                &text,
                &req.out_trade_no,
                &req.out_request_no,
                Some(&req.amount),
            ),
            Err(ChannelError::Declined { code, message }) => {
                // A refusal counts only if no refund of this number exists (an earlier attempt
                // whose answer was lost may have gone through).
                match self
                    .query_refund(&req.out_trade_no, &req.out_request_no)
                    .await?
                {
                    RefundResult {
                        state: RefundState::NotFound,
                        ..
                    } if REFUND_REFUSALS.contains(&code.as_str()) => Ok(RefundResult {
                        state: RefundState::Failed { code, message },
                        refunded_amount: None,
                    }),
                    RefundResult {
                        state: RefundState::NotFound,
                        ..
                    } => Err(ChannelError::Declined { code, message }),
                    existing => Ok(existing),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn query_refund(
        &self,
        out_trade_no: &str,
        out_request_no: &str,
    ) -> Result<RefundResult, ChannelError> {
        let url = self.url(wire::PATH_REFUNDS, &[out_request_no], &[])?;
        let answer = self.get("refund query", url).await;
        refund_query_result(answer, out_trade_no, out_request_no)
    }

    async fn payout(&self, _req: &PayoutRequest) -> Result<PayoutState, ChannelError> {
        Err(unsupported("payout"))
    }

    async fn query_payout(&self, _out_biz_no: &str) -> Result<PayoutState, ChannelError> {
        Err(unsupported("payout query"))
    }

    /// The trade bill (`bill_type=ALL`) of `date`, Beijing time. The `download_url` is itself a
    /// v3 API address: the download must be a signed `GET` too, and its SHA1 is `hash_value`.
    async fn statement_url(&self, date: chrono::NaiveDate) -> Result<StatementUrl, ChannelError> {
        let bill_date = date.format("%Y-%m-%d").to_string();
        let url = self.url(
            wire::PATH_TRADEBILL,
            &[],
            &[
                ("bill_date", &bill_date),
                ("bill_type", wire::BILL_TYPE_ALL),
            ],
        )?;
        statement_result(self.get("trade bill", url).await)
    }

    /// The trade bill, downloaded with a signed `GET` from the `download_url` (which must be on
    /// the configured API host: our signature never goes anywhere else) and checked against
    /// the SHA-1 of the signed answer as it is read. The file itself is not signed, as at
    /// WeChat Pay.
    async fn open_statement(&self, date: chrono::NaiveDate) -> Result<StatementFile, ChannelError> {
        let format = StatementFormat::WechatTradeAll;
        let bill_date = date.format("%Y-%m-%d").to_string();
        let url = self.url(
            wire::PATH_TRADEBILL,
            &[],
            &[
                ("bill_date", &bill_date),
                ("bill_type", wire::BILL_TYPE_ALL),
            ],
        )?;
        let (download, sha1) = match trade_bill_result(self.get("trade bill", url).await)? {
            (StatementUrl::Ready(u), sha1) => (u, sha1),
            (StatementUrl::NotReady, _) => return Ok(StatementFile::NotReady),
            (StatementUrl::Empty, _) => return Ok(StatementFile::Empty { format }),
        };
        let download = url::Url::parse(&download)
            .map_err(|e| ChannelError::Untrusted(format!("download_url: {e}")))?;
        if download.origin() != self.cfg.base_url.origin() {
            return Err(ChannelError::Untrusted(format!(
                "download_url {download} is not on the API host {}",
                self.cfg.base_url
            )));
        }
        if sha1.is_none() {
            tracing::warn!(channel = %self.cfg.name, %date, "trade bill without a SHA1 hash_value");
        }
        let what = "trade bill download";
        let authorization = self.authorization(what, "GET", &download, "")?;
        let resp = self
            .http
            .get(download)
            .header(AUTHORIZATION, authorization)
            .timeout(statement::DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(|e| ChannelError::Transient(format!("{what}: {e}")))?;
        Ok(StatementFile::Ready {
            format,
            body: statement::response_body(what, resp, sha1)?,
        })
    }

    /// WeChat Pay notifications are JSON with signature headers, not forms.
    fn verify_notice(
        &self,
        _params: &BTreeMap<String, String>,
    ) -> Result<VerifiedNotice, NoticeError> {
        Err(NoticeError::Malformed(
            "WeChat Pay notifications are JSON signed in Wechatpay-* headers: use verify_notice_http"
                .into(),
        ))
    }

    fn verify_notice_http(
        &self,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<VerifiedNotice, NoticeError> {
        let keys = notify::NoticeKeys {
            platform_keys: &self.cfg.platform_keys,
            api_v3_key: self.cfg.api_v3_key.expose(),
            appid: &self.cfg.appid,
            mchid: &self.cfg.mchid,
        };
        notify::verify_notice(headers, body, &keys, now_secs())
    }

    /// An HTTP 200 (or 204) with an empty body acknowledges a WeChat Pay v3 notification;
    /// any other status makes it retry.
    fn ack_body(&self) -> &'static str {
        ""
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Test-only keys, made for these tests with `openssl genpkey -algorithm RSA` and used
    //! nowhere else; the fixed signature vectors were computed with `openssl dgst -sha256
    //! -sign`, and the AES-GCM vector with Python's `cryptography`, so they check our code
    //! against other implementations.

    use super::*;

    pub const MERCHANT_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDXw4EE97khpepN\n\
w6UOmZVgW43mwm9SyVnwFzRa7GhxK5fLAvtSLusHHhmVyZ3Vmq+PCe03vemD7awQ\n\
lHLxxSmpDXkwyZar82V4op5+5F8cCoQ1AFlgewVkuiwuaGjaXMiS191S1KdAvC32\n\
OtbCYnSGNQaBGPKiyAFuwwMwX84Jd4doGp5WFtf/WquoxW6IYH/pxsJw8uaNjWB8\n\
ZXNGzohbW9G/50rFFMaLeJgXem7TG9Wt5I5nV4od1jUD7T4rw3fHsegv5Robspab\n\
CKdmiVJFe1WMTlgAHu8KGy6IoLn6M775Dvc6zzzbAbBjt7fT425O2zqLn9HiWjnq\n\
FbNBWcAlAgMBAAECggEAZoCYBiKjvmMClVAJVY7MIrtMBiE/3s4OXpu/gSSHl6AU\n\
nFr9x3THrhl0IS9nvsceeS9HlXAxBD6AvF2x378BhDEE7pMOdAENJ0rmTjUzI/Cx\n\
DzbrvwSistApViC/E2H53Z0UpZmmHYBou24HgdBhODLvtJwEBSZMW/DkTnJtQRw6\n\
zYAzg/hR/q7LzBs+U/h/F8lD76/fqTOetUiQ1+euiFkb0gWUBrmcjNZ+Da5ff2Ln\n\
mtBU5hD6U/yYPioHF2NpoTbHII5PysdtqyIdi1r3TgMgKTcNSTzUS4Zu6CCAjMOl\n\
0bHT9+stsj5+y3HI+elY6nCrqacHS4/YwWDQy9yefwKBgQD3PF/85uucfqU+2moW\n\
LTlwLrZQRHcXrQ2/DYF2wEmUSmVBDJD6dw7Vel6hWbhyGPKLCTxqS7rmLnqbsIu5\n\
g2L0X1piC5C82usve3cgYeniqBSkOqmGwOgBDLOgOwOLmia4HwLdc+YNzMJLoJEA\n\
JBGjvfnEXugSL8VJx1jlP01ocwKBgQDfaYY8xjumErk+lr2AHibxE0iO0A+40M7U\n\
U5HGGPwNFSfId8M+VylIiXkGFj9rFgKjYJ8EPRxke6xsUotMVLfgRSzs0xFzo0PP\n\
56Mu/DtUyQ3sHD3jtTrF+g9rrqv8/DeUwD12ZFgBFbyVUfP0AS+D/rK/1yywJfcl\n\
03gPW6xHBwKBgQDMJ4HHz1N9naKMXUU+3MdSWHBZpb+FwHPacKeYTL41gp1L8rmA\n\
6XFJXMvphrHlHa6imtTVnYVO79B04XrvjIvY6Sg0UAKLwGZ2hghfqBq+/DZXSs2U\n\
JZUu0LM/O5v42ijg31K5VSwB9zP1yTgTGrWqNYSa4BfYdLP/8Wn5m6Uq+wKBgFmj\n\
ZkfGJbKpeofhRWE9N9SsLwWV92jo5sOMUEXSSncZUN//JWhC4n6HIfbOQF2/9AkH\n\
QGYb+uNaN8EykU9sAmbKeo7+1Na34AJv5yp363pGPP7KCg7t7Qn4He3PpJQZwlc9\n\
lquE8UZmKUckHaR+QUlNjPyp4fU/Fl2n7lkDKClLAoGBANtJ5fYY/ajcNTgRASmV\n\
mgBuzV/uJMWv2r8q66XePdMlHjs9F+ZyIvSAjy5mXM0r228XcVs4X9VWivCvc7s3\n\
BeQYt3ecboNAGS4sU4dtPlOtj+L4TqRZVkR5q6NXMXteO4F9jpia98m3f3NNcKqo\n\
B+hbmN3KnFrpUDTWK5HhR9MW\n\
-----END PRIVATE KEY-----\n\
";
    pub const MERCHANT_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA18OBBPe5IaXqTcOlDpmV\n\
YFuN5sJvUslZ8Bc0WuxocSuXywL7Ui7rBx4Zlcmd1ZqvjwntN73pg+2sEJRy8cUp\n\
qQ15MMmWq/NleKKefuRfHAqENQBZYHsFZLosLmho2lzIktfdUtSnQLwt9jrWwmJ0\n\
hjUGgRjyosgBbsMDMF/OCXeHaBqeVhbX/1qrqMVuiGB/6cbCcPLmjY1gfGVzRs6I\n\
W1vRv+dKxRTGi3iYF3pu0xvVreSOZ1eKHdY1A+0+K8N3x7HoL+UaG7KWmwinZolS\n\
RXtVjE5YAB7vChsuiKC5+jO++Q73Os882wGwY7e30+NuTts6i5/R4lo56hWzQVnA\n\
JQIDAQAB\n\
-----END PUBLIC KEY-----\n\
";
    pub const PLATFORM_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCf9CyCO/pKc03G\n\
hMxeyIt7mvmfeXHw977drMmid1GFcem+wB3EgSxEQMkdkh68jOBauGz1pcSo9UJO\n\
nfjZ0Oj3HW2IOSW7BaLkLjsWpIeYXl+YOodJ480dKZ4F5a0GV3NbRuY0GlicTea1\n\
p6C/r8NVdPKQ8JBEa1frfNNoM6jmpH83rYrk8BvpPSiJ5KiYtuvouFz+0w+96oVY\n\
ZdLwGzqJjRhCyWVSR7OrXPJP+kvYy9qsc+/s8Iv9KCR+AK+6E8lsdPxSXgtuuT7X\n\
fgbQVsck/RGla7N+1QPPtrLGc6nh/HPGglz7nXlNRKigOIQ/Ur2ntA2Kr2p1Zm8j\n\
kCWkzYXVAgMBAAECggEAB9yDV39FJOWX2/ro5Husx01tmVXpsLMscU6ttktw+UMI\n\
/vQIQoEqwMwCVm65DgFKgYrw5/3WtYsgUCbZdTMcUBDlMj3EyfVT9S0EgG9jrqxs\n\
vFmcDpigmx9Rge6w20/u/nx0kfj9g+kcPq9XajRkQE34IgGAxawU7SD8bvGjCnrV\n\
VFKSlm1e6XeJGfTqFAUYxKKyQtX2+KqTBPy1GfuihwTS18OtOmBfSpXYUOz2YQ5y\n\
G7vxmCyoC/h7ixMj7vWEydcU5KUk/suV1cE4w8K8E7Jb7din4t4/HSH487asB33w\n\
ktiwYmvaHUcDhLytbwV5/6+YgZkkK+sjXbHV8V2GXQKBgQDPIfsk2dWtuncYcO79\n\
1L6k1BfvSo7dGDXhXnXPDNiJ4sulfLmHzoJfuXhrD/wGKVa3nEr6fPK98+dGZUkr\n\
5iu8bTlw6ZR/lW3iVmtiCeExdkuK9shqUahUuLSWoTQVT82W9L/+HHPrdTJMPXUr\n\
2X3p0YJegX0ju1fnzZvxYzTXDwKBgQDFsMReLM4vAqCpsK7E/6Tr8KpfHgjDaCVd\n\
rDq3xaLRgOViMggoD69CYi9TShCbhUS4tOolCSBcQK/wA64ixtYHfAYoAOfvhQBI\n\
m4jdwz2QuG9FVaetrM5siUqWaIRZgWpi/vYsE4USFfmoyMw7uuFiK21bVGk204ty\n\
NTFaEm202wKBgFP4Kp/dz0oGdZFq9vff7wlTEgDn8NKgpfcfHBM72ezMDFKiJXRw\n\
u1mjDrYYXMsCpyz4J000qhNndTKMjQVG4iQZA1hK2PB/23QOJKox5yDuG+HR+Z1g\n\
TSVLW6pU35BkMawovEx/rF6fvCw8HewQ14KadIdrZxe9Mv291KIe3aTxAoGAIpAP\n\
JO/sdGefM0vCooqXiPCguNSFb7SLo97yvSJ+nuZMNGjO6EIlwBNudr9iO+6G30wy\n\
C5uW3sooeGwMS+Q7kz9pzCCsbEHylL8spKj34I9+VL7u+/xUcsFmGvnW+dcYhIpS\n\
+83F3C2fYpUIsACyWvmAuxD8/CrsHGGUaU0DhTUCgYBCH8WpcpExjTRy2J5io0NS\n\
QxOnFUY6aReNM8GKBzYO7PjJuVCw+vvMEf98jWni2c35Ha/gX71vlx9vxbQDKCuI\n\
g3bg+gwx4QroeZUn9OmJA7JzhiXOSsnPdYwl7lnHQr6oMl90DM6t6Bs+OP3q0kZI\n\
4Ym18IejeiZA6XRPoWzhQA==\n\
-----END PRIVATE KEY-----\n\
";
    pub const PLATFORM_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
    pub const MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD2C6E8B5D";
    pub const MCHID: &str = "1230000109";
    pub const APPID: &str = "wxd678efh567hg6787";
    pub const API_V3_KEY: &str = "0123456789abcdefghijklmnopqrstuv";

    pub fn merchant() -> RsaSigner {
        RsaSigner::from_text(MERCHANT_KEY_PEM, "test merchant key").unwrap()
    }

    pub fn platform() -> RsaSigner {
        RsaSigner::from_text(PLATFORM_KEY_PEM, "test platform key").unwrap()
    }

    pub fn platform_keys() -> Vec<(String, RsaVerifier)> {
        vec![(PLATFORM_SERIAL.to_string(), platform().verifier())]
    }

    pub fn api_v3_key() -> [u8; 32] {
        API_V3_KEY.as_bytes().try_into().unwrap()
    }

    pub fn config(base_url: &str) -> WechatConfig {
        WechatConfig {
            name: "wechat".into(),
            base_url: url::Url::parse(base_url).unwrap(),
            mchid: MCHID.into(),
            appid: APPID.into(),
            merchant_serial_no: MERCHANT_SERIAL.into(),
            merchant_private_key: merchant(),
            platform_keys: platform_keys(),
            api_v3_key: ApiV3Key::from_text(API_V3_KEY).unwrap(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use serde_json::json;

    fn cny(text: &str) -> Money {
        Money::parse(text, Currency::Cny).unwrap()
    }

    fn declined(code: &str) -> ChannelError {
        ChannelError::Declined {
            code: code.into(),
            message: format!("{code} message"),
        }
    }

    #[test]
    fn amounts_convert_exactly_between_fen_and_money() {
        for (fen, yuan) in [(1, "0.01"), (10, "0.10"), (100, "1.00"), (8888, "88.88")] {
            assert_eq!(fen_to_money(fen), Ok(cny(yuan)), "{fen}");
            assert_eq!(money_to_fen(&cny(yuan)), Ok(fen), "{yuan}");
        }
        assert_eq!(money_to_fen(&cny("21474836.47")), Ok(i64::from(i32::MAX)));
        assert!(matches!(
            money_to_fen(&cny("21474836.48")),
            Err(ChannelError::Declined { code, .. }) if code == "payflow.AMOUNT_TOO_LARGE"
        ));
        let usd = Money::parse("1.00", Currency::Usd).unwrap();
        assert!(matches!(
            money_to_fen(&usd),
            Err(ChannelError::Declined { code, .. }) if code == "payflow.UNSUPPORTED_CURRENCY"
        ));
        for fen in [0, -1] {
            assert!(matches!(fen_to_money(fen), Err(ChannelError::Untrusted(_))));
        }
    }

    #[test]
    fn every_trade_state_maps() {
        for (state, want) in [
            ("SUCCESS", TradeState::Paid),
            ("REFUND", TradeState::Paid),
            ("NOTPAY", TradeState::WaitingForPayment),
            ("USERPAYING", TradeState::WaitingForPayment),
            ("ACCEPT", TradeState::WaitingForPayment),
            ("CLOSED", TradeState::Closed),
            ("REVOKED", TradeState::Closed),
            ("PAYERROR", TradeState::Closed),
        ] {
            assert_eq!(trade_state(state), Some(want), "{state}");
        }
        assert_eq!(trade_state("success"), None);
        assert_eq!(trade_state("TRADE_SUCCESS"), None);
    }

    #[test]
    fn every_refund_status_maps() {
        assert_eq!(
            refund_state("SUCCESS", Some(1000)),
            Ok(RefundResult {
                state: RefundState::Succeeded,
                refunded_amount: Some(cny("10.00")),
            })
        );
        assert!(matches!(
            refund_state("SUCCESS", None),
            Err(ChannelError::Untrusted(_))
        ));
        assert_eq!(
            refund_state("PROCESSING", Some(1000)).unwrap(),
            RefundResult {
                state: RefundState::Processing,
                refunded_amount: None,
            }
        );
        for status in ["CLOSED", "ABNORMAL"] {
            let r = refund_state(status, Some(1000)).unwrap();
            assert!(
                matches!(&r.state, RefundState::Failed { code, .. } if code == status),
                "{status}: {r:?}"
            );
            assert_eq!(r.refunded_amount, None);
        }
        assert!(matches!(
            refund_state("REFUNDING", None),
            Err(ChannelError::Untrusted(_))
        ));
    }

    #[test]
    fn error_classification() {
        let body = |code: &str| json!({"code": code, "message": "why"}).to_string();
        let transient = |e: &ChannelError| matches!(e, ChannelError::Transient(_));
        // Server errors and rate limits: retry, whatever the body.
        assert!(transient(&classify_error("q", 500, &body("SYSTEM_ERROR"))));
        assert!(transient(&classify_error(
            "q",
            502,
            "<html>bad gateway</html>"
        )));
        assert!(transient(&classify_error("q", 503, "")));
        assert!(transient(&classify_error(
            "q",
            429,
            &body("FREQUENCY_LIMITED")
        )));
        // "Try again" codes, whatever the status.
        assert!(transient(&classify_error(
            "q",
            403,
            &body("FREQUENCY_LIMITED")
        )));
        assert!(transient(&classify_error("q", 400, &body("SYSTEM_ERROR"))));
        // Definite answers.
        for (status, code) in [
            (400, "ORDERPAID"),
            (400, "ORDER_CLOSED"),
            (403, "NOT_ENOUGH"),
            (400, "PARAM_ERROR"),
            (400, "INVALID_REQUEST"),
            (404, "ORDER_NOT_EXIST"),
            (401, "SIGN_ERROR"),
        ] {
            assert_eq!(
                classify_error("q", status, &body(code)),
                ChannelError::Declined {
                    code: code.into(),
                    message: "why".into()
                },
                "{code}"
            );
        }
        // A 4xx without a code, or a redirect: not an answer we can read.
        for (status, text) in [(400, "oops"), (404, "{}"), (302, ""), (100, "")] {
            assert!(
                matches!(
                    classify_error("q", status, text),
                    ChannelError::Untrusted(_)
                ),
                "{status}"
            );
        }
    }

    fn signed(body: &[u8], at: i64) -> Option<sign::SignatureHeaders> {
        Some(sign::sign_as_platform(&platform(), PLATFORM_SERIAL, at, "n0nce", body).unwrap())
    }

    #[test]
    fn answers_are_verified_before_they_are_read() {
        let keys = platform_keys();
        let now = 1_767_580_496;
        let ok = br#"{"code_url":"weixin://wxpay/bizpayurl?pr=x"}"#;
        assert_eq!(
            accept_answer("p", 200, Ok(signed(ok, now)), ok, &keys, now),
            Ok(String::from_utf8(ok.to_vec()).unwrap())
        );
        // A 204 signs the empty body.
        assert_eq!(
            accept_answer("c", 204, Ok(signed(b"", now)), b"", &keys, now),
            Ok(String::new())
        );
        let untrusted =
            |r: Result<String, ChannelError>| matches!(r, Err(ChannelError::Untrusted(_)));
        // Unsigned success, tampered body, unknown serial, probe, stale, partial headers.
        assert!(untrusted(accept_answer("p", 200, Ok(None), ok, &keys, now)));
        let tampered = br#"{"code_url":"weixin://wxpay/bizpayurl?pr=y"}"#;
        assert!(untrusted(accept_answer(
            "p",
            200,
            Ok(signed(ok, now)),
            tampered,
            &keys,
            now
        )));
        let mut other = signed(ok, now).unwrap();
        other.serial = "0000".into();
        assert!(untrusted(accept_answer(
            "p",
            200,
            Ok(Some(other)),
            ok,
            &keys,
            now
        )));
        let mut probe = signed(ok, now).unwrap();
        probe.signature = sign::probe_signature();
        assert!(untrusted(accept_answer(
            "p",
            200,
            Ok(Some(probe)),
            ok,
            &keys,
            now
        )));
        assert!(untrusted(accept_answer(
            "p",
            200,
            Ok(signed(ok, now - 360)),
            ok,
            &keys,
            now
        )));
        assert!(untrusted(accept_answer(
            "p",
            200,
            Err(sign::VerifyError::Missing(sign::HEADER_NONCE)),
            ok,
            &keys,
            now
        )));
        // Error answers: read when unsigned, verified when signed.
        let paid = br#"{"code":"ORDERPAID","message":"paid"}"#;
        let declined_paid = Err(ChannelError::Declined {
            code: "ORDERPAID".into(),
            message: "paid".into(),
        });
        assert_eq!(
            accept_answer("c", 400, Ok(None), paid, &keys, now),
            declined_paid
        );
        assert_eq!(
            accept_answer("c", 400, Ok(signed(paid, now)), paid, &keys, now),
            declined_paid
        );
        let closed = br#"{"code":"ORDER_CLOSED","message":"paid"}"#;
        assert!(untrusted(accept_answer(
            "c",
            400,
            Ok(signed(paid, now)),
            closed,
            &keys,
            now
        )));
        // Server errors are retried without being read or verified.
        assert!(matches!(
            accept_answer("q", 500, Ok(None), b"", &keys, now),
            Err(ChannelError::Transient(_))
        ));
    }

    fn tx(state: &str, total: Option<i64>) -> String {
        let mut v = json!({
            "appid": APPID, "mchid": MCHID, "out_trade_no": "T1",
            "transaction_id": "4200000001202601050000000001", "trade_type": "NATIVE",
            "trade_state": state, "trade_state_desc": "desc",
            "amount": {"total": total, "payer_total": total, "currency": "CNY", "payer_currency": "CNY"}
        });
        if total.is_none() {
            v.as_object_mut().unwrap().remove("amount");
        }
        v.to_string()
    }

    fn query(answer: Result<String, ChannelError>) -> Result<TradeQuery, ChannelError> {
        query_result(answer, "T1", APPID, MCHID)
    }

    #[test]
    fn query_mapping() {
        assert_eq!(
            query(Ok(tx("SUCCESS", Some(8888)))),
            Ok(TradeQuery {
                state: TradeState::Paid,
                channel_trade_no: Some("4200000001202601050000000001".into()),
                paid_amount: Some(cny("88.88")),
            })
        );
        assert_eq!(
            query(Ok(tx("REFUND", Some(8888)))).unwrap().paid_amount,
            Some(cny("88.88"))
        );
        let waiting = json!({"appid": APPID, "mchid": MCHID, "out_trade_no": "T1",
            "trade_state": "NOTPAY", "trade_state_desc": "not paid", "amount": {"currency": "CNY"}});
        assert_eq!(
            query(Ok(waiting.to_string())),
            Ok(TradeQuery {
                state: TradeState::WaitingForPayment,
                channel_trade_no: None,
                paid_amount: None,
            })
        );
        assert_eq!(
            query(Ok(tx("CLOSED", Some(8888)))).unwrap().state,
            TradeState::Closed
        );
        for code in ["ORDER_NOT_EXIST", "ORDERNOTEXIST", "RESOURCE_NOT_EXISTS"] {
            assert_eq!(query(Err(declined(code))), Ok(not_found_trade()), "{code}");
        }
        assert_eq!(
            query(Err(declined("PARAM_ERROR"))),
            Err(declined("PARAM_ERROR"))
        );
        let busy = ChannelError::Transient("busy".into());
        assert_eq!(query(Err(busy.clone())), Err(busy));
        // Answers that cannot be trusted.
        let other_trade = tx("SUCCESS", Some(1)).replace("\"T1\"", "\"T2\"");
        let other_mch = tx("SUCCESS", Some(1)).replace(MCHID, "1999999999");
        let usd = tx("SUCCESS", Some(1)).replace("\"CNY\"", "\"USD\"");
        for text in [
            tx("SUCCESS", None),
            tx("SUCCESS", Some(0)),
            tx("WHATEVER", Some(1)),
            other_trade,
            other_mch,
            usd,
            "not json".into(),
        ] {
            assert!(
                matches!(query(Ok(text.clone())), Err(ChannelError::Untrusted(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn close_mapping() {
        assert_eq!(close_result(Ok(String::new())), Ok(CloseOutcome::Closed));
        assert_eq!(
            close_result(Err(declined("ORDERPAID"))),
            Ok(CloseOutcome::AlreadyPaid)
        );
        for code in ["ORDER_CLOSED", "ORDER_NOT_EXIST"] {
            assert_eq!(close_result(Err(declined(code))), Ok(CloseOutcome::Closed));
        }
        assert_eq!(
            close_result(Err(declined("PARAM_ERROR"))),
            Err(declined("PARAM_ERROR"))
        );
    }

    fn refund_json(status: &str, refund: i64) -> String {
        json!({
            "refund_id": "50000000382019052709732678859", "out_refund_no": "R1",
            "transaction_id": "4200000001202601050000000001", "out_trade_no": "T1",
            "channel": "ORIGINAL", "status": status, "create_time": "2026-01-05T10:50:00+08:00",
            "amount": {"total": 8888, "refund": refund, "payer_total": 8888, "payer_refund": refund, "currency": "CNY"}
        })
        .to_string()
    }

    #[test]
    fn refund_answers() {
        let asked = cny("10.00");
        let answer = |text: &str| refund_answer("refund", text, "T1", "R1", Some(&asked));
        assert_eq!(
            answer(&refund_json("SUCCESS", 1000)),
            Ok(RefundResult {
                state: RefundState::Succeeded,
                refunded_amount: Some(asked),
            })
        );
        assert_eq!(
            answer(&refund_json("PROCESSING", 1000)).unwrap().state,
            RefundState::Processing
        );
        assert!(matches!(
            answer(&refund_json("ABNORMAL", 1000)).unwrap().state,
            RefundState::Failed { code, .. } if code == "ABNORMAL"
        ));
        let more = refund_json("SUCCESS", 1001);
        let other = refund_json("SUCCESS", 1000).replace("\"R1\"", "\"R2\"");
        let no_status = refund_json("SUCCESS", 1000).replace("\"status\"", "\"state\"");
        for text in [more, other, no_status] {
            assert!(
                matches!(answer(&text), Err(ChannelError::Untrusted(_))),
                "{text}"
            );
        }
        let q = |a| refund_query_result(a, "T1", "R1");
        assert_eq!(
            q(Ok(refund_json("SUCCESS", 1234))).unwrap().refunded_amount,
            Some(cny("12.34"))
        );
        assert_eq!(
            q(Err(declined("RESOURCE_NOT_EXISTS"))),
            Ok(refund_not_found())
        );
        assert_eq!(q(Err(declined("NO_AUTH"))), Err(declined("NO_AUTH")));
    }

    #[test]
    fn statement_mapping() {
        let url = "https://api.mch.weixin.qq.com/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMMR8cNXqaA_Cv_isgaUtBzp4QtiozLO";
        let ok = json!({"hash_type": "SHA1", "hash_value": "79bb0f45fc4c42234a918000b2668d689e2bde04", "download_url": url});
        assert_eq!(
            statement_result(Ok(ok.to_string())),
            Ok(StatementUrl::Ready(url.into()))
        );
        assert_eq!(
            statement_result(Err(declined("STATEMENT_CREATING"))),
            Ok(StatementUrl::NotReady)
        );
        // A day without any trade has no bill, and never will: an empty statement.
        assert_eq!(
            statement_result(Err(declined("NO_STATEMENT_EXIST"))),
            Ok(StatementUrl::Empty)
        );
        assert_eq!(
            trade_bill_result(Ok(ok.to_string())).unwrap().1.as_deref(),
            Some("79bb0f45fc4c42234a918000b2668d689e2bde04")
        );
        assert_eq!(
            statement_result(Err(declined("INVALID_REQUEST"))),
            Err(declined("INVALID_REQUEST"))
        );
        for text in [
            json!({"hash_type": "SHA1"}).to_string(),
            json!({"download_url": "file:///etc/passwd"}).to_string(),
            json!({"download_url": "bill.csv"}).to_string(),
        ] {
            assert!(
                matches!(
                    statement_result(Ok(text.clone())),
                    Err(ChannelError::Untrusted(_))
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn times_are_rfc3339_beijing() {
        // 2026-01-05T02:34:56Z
        assert_eq!(format_time(1_767_580_496_000), "2026-01-05T10:34:56+08:00");
    }

    #[test]
    fn api_v3_key_is_32_bytes_and_never_printed() {
        let key = ApiV3Key::from_text(API_V3_KEY).unwrap();
        assert_eq!(key.clone().expose(), &api_v3_key());
        assert_eq!(format!("{key:?}"), "ApiV3Key([REDACTED])");
        assert!(!format!("{:?}", config("http://127.0.0.1:1/")).contains(API_V3_KEY));
        assert!(ApiV3Key::from_text("short").is_err());
    }

    #[tokio::test]
    async fn payouts_are_unsupported_and_forms_are_not_notifications() {
        let ch = WechatChannel::new(config("http://127.0.0.1:1/")).unwrap();
        let req = PayoutRequest {
            out_biz_no: "P1".into(),
            amount: cny("1.00"),
            payee_account: "a".into(),
            payee_name: "b".into(),
            remark: String::new(),
        };
        for e in [
            ch.payout(&req).await.unwrap_err(),
            ch.query_payout("P1").await.unwrap_err(),
        ] {
            assert!(
                matches!(e, ChannelError::Declined { code, .. } if code == "payflow.UNSUPPORTED")
            );
        }
        assert!(matches!(
            ch.verify_notice(&BTreeMap::new()),
            Err(NoticeError::Malformed(_))
        ));
        assert_eq!(ch.ack_body(), "");
        assert_eq!(ch.name(), "wechat");
        let mut no_keys = config("http://127.0.0.1:1/");
        no_keys.platform_keys.clear();
        assert!(WechatChannel::new(no_keys).is_err());
    }

    #[test]
    fn the_default_verify_notice_http_reads_an_alipay_form() {
        use crate::channels::alipay::{AlipayChannel, AlipayConfig, sign as alipay_sign};
        crate::tls::ensure_crypto_provider();
        let alipay_key = platform();
        let ch = AlipayChannel::new(AlipayConfig {
            name: "alipay".into(),
            gateway_url: url::Url::parse("https://openapi.alipay.com/gateway.do").unwrap(),
            app_id: "2021000000000001".into(),
            app_private_key: merchant(),
            alipay_public_key: alipay_key.verifier(),
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        })
        .unwrap();
        let mut params: BTreeMap<String, String> = [
            ("notify_id", "ac05099524730693a8b330c5ecf72da9786"),
            ("notify_time", "2026-01-05 10:40:00"),
            ("app_id", "2021000000000001"),
            ("out_trade_no", "T1"),
            ("trade_no", "2026010522001"),
            ("trade_status", "TRADE_SUCCESS"),
            ("total_amount", "88.88"),
            ("sign_type", "RSA2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        alipay_sign::sign_notify(&mut params, &alipay_key).unwrap();
        let body = serde_urlencoded::to_string(&params).unwrap();
        let notice = ch
            .verify_notice_http(&BTreeMap::new(), body.as_bytes())
            .unwrap();
        assert_eq!(notice, ch.verify_notice(&params).unwrap());
        assert_eq!(notice.out_trade_no, "T1");
        assert_eq!(notice.total_amount.as_deref(), Some("88.88"));
        let tampered = body.replace("88.88", "8.88");
        assert_eq!(
            ch.verify_notice_http(&BTreeMap::new(), tampered.as_bytes()),
            Err(NoticeError::BadSignature)
        );
    }

    /// A WeChat Pay stand-in: checks every request's signature with the merchant key, keeps
    /// trades and refunds, answers signed with the platform key (or, by `Mode`, not quite).
    mod fake {
        use std::sync::{Arc, Mutex};

        use axum::Router;
        use axum::body::{Body, Bytes};
        use axum::extract::State;
        use axum::http::{HeaderMap, Method, Uri};
        use axum::response::Response;
        use serde_json::{Value, json};

        use super::super::fixtures::*;
        use super::super::{sign, wire};
        use crate::crypto::rsa_keys::RsaVerifier;

        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub enum Mode {
            #[default]
            Normal,
            ServerError,
            Tamper,
            UnknownSerial,
            Probe,
            Stale,
            Unsigned,
            Hang,
        }

        #[derive(Default)]
        pub struct Fake {
            pub mode: Mode,
            /// out_trade_no -> (trade_state, total fen)
            pub trades: std::collections::BTreeMap<String, (String, i64)>,
            pub refunds: std::collections::BTreeMap<String, Value>,
            /// (method, path and query, body) of every correctly signed request.
            pub requests: Vec<(String, String, String)>,
            pub bill_ready: bool,
        }

        pub type Shared = Arc<Mutex<Fake>>;

        pub async fn start() -> (Shared, String) {
            let shared: Shared = Arc::default();
            let app = Router::new().fallback(handle).with_state(shared.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            (shared, format!("http://{addr}/"))
        }

        fn error(status: u16, code: &str) -> (u16, Vec<u8>) {
            let body = json!({"code": code, "message": format!("{code} (fake)")});
            (status, body.to_string().into_bytes())
        }

        fn ok(body: &Value) -> (u16, Vec<u8>) {
            (200, body.to_string().into_bytes())
        }

        fn transaction(no: &str, state: &str, total: i64) -> Value {
            let mut v = json!({
                "appid": APPID, "mchid": MCHID, "out_trade_no": no, "trade_type": "NATIVE",
                "trade_state": state, "trade_state_desc": state,
                "amount": {"total": total, "currency": "CNY"}
            });
            if matches!(state, "SUCCESS" | "REFUND") {
                v["transaction_id"] = json!(format!("42000000012026010500{no}"));
                v["success_time"] = json!("2026-01-05T10:40:00+08:00");
                v["amount"]["payer_total"] = json!(total);
                v["amount"]["payer_currency"] = json!("CNY");
            }
            v
        }

        fn route(st: &mut Fake, method: &Method, path: &str, body: &str) -> (u16, Vec<u8>) {
            if st.mode == Mode::ServerError {
                return error(500, "SYSTEM_ERROR");
            }
            let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            match (method.as_str(), segments.as_slice()) {
                ("POST", ["v3", "pay", "transactions", "native"]) => {
                    let req: wire::NativePrepay = serde_json::from_str(body).unwrap();
                    assert_eq!((req.appid.as_str(), req.mchid.as_str()), (APPID, MCHID));
                    st.trades
                        .entry(req.out_trade_no.clone())
                        .or_insert(("NOTPAY".into(), req.amount.total));
                    ok(
                        &json!({"code_url": format!("weixin://wxpay/bizpayurl?pr={}", req.out_trade_no)}),
                    )
                }
                ("GET", ["v3", "pay", "transactions", "out-trade-no", no]) => {
                    match st.trades.get(*no) {
                        Some((state, total)) => ok(&transaction(no, state, *total)),
                        None => error(404, "ORDER_NOT_EXIST"),
                    }
                }
                ("POST", ["v3", "pay", "transactions", "out-trade-no", no, "close"]) => {
                    assert_eq!(body, format!(r#"{{"mchid":"{MCHID}"}}"#));
                    match st.trades.get_mut(*no) {
                        Some((state, _)) if state == "SUCCESS" => error(400, "ORDERPAID"),
                        Some((state, _)) => {
                            *state = "CLOSED".into();
                            (204, Vec::new())
                        }
                        None => error(404, "ORDER_NOT_EXIST"),
                    }
                }
                ("POST", ["v3", "refund", "domestic", "refunds"]) => {
                    let req: wire::RefundBody = serde_json::from_str(body).unwrap();
                    if let Some(existing) = st.refunds.get(&req.out_refund_no) {
                        return ok(existing);
                    }
                    match st.trades.get(&req.out_trade_no) {
                        Some((state, total)) if state == "SUCCESS" || state == "REFUND" => {
                            if req.amount.total != *total {
                                return error(400, "PARAM_ERROR");
                            }
                            if req.amount.refund > *total {
                                return error(400, "INVALID_REQUEST");
                            }
                            let refund = json!({
                                "refund_id": format!("5030000001{}", req.out_refund_no),
                                "out_refund_no": req.out_refund_no,
                                "transaction_id": format!("42000000012026010500{}", req.out_trade_no),
                                "out_trade_no": req.out_trade_no, "channel": "ORIGINAL",
                                "user_received_account": "balance", "status": "PROCESSING",
                                "create_time": "2026-01-05T10:50:00+08:00", "funds_account": "AVAILABLE",
                                "amount": {"total": total, "refund": req.amount.refund,
                                    "payer_total": total, "payer_refund": req.amount.refund,
                                    "settlement_refund": req.amount.refund, "settlement_total": total,
                                    "discount_refund": 0, "currency": "CNY"}
                            });
                            st.refunds.insert(req.out_refund_no.clone(), refund.clone());
                            ok(&refund)
                        }
                        Some(_) => error(400, "INVALID_REQUEST"),
                        None => error(404, "RESOURCE_NOT_EXISTS"),
                    }
                }
                ("GET", ["v3", "refund", "domestic", "refunds", no]) => {
                    match st.refunds.get_mut(*no) {
                        // Refunds complete by the time they are queried.
                        Some(refund) => {
                            refund["status"] = json!("SUCCESS");
                            refund["success_time"] = json!("2026-01-05T10:51:00+08:00");
                            ok(refund)
                        }
                        None => error(404, "RESOURCE_NOT_EXISTS"),
                    }
                }
                ("GET", ["v3", "bill", "tradebill"]) if st.bill_ready => ok(&json!({
                    "hash_type": "SHA1",
                    "hash_value": "79bb0f45fc4c42234a918000b2668d689e2bde04",
                    "download_url": "https://api.mch.weixin.qq.com/v3/billdownload/file?token=t0k3n"
                })),
                ("GET", ["v3", "bill", "tradebill"]) => error(400, "STATEMENT_CREATING"),
                _ => error(404, "RESOURCE_NOT_EXISTS"),
            }
        }

        async fn handle(
            State(shared): State<Shared>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let body = String::from_utf8(body.to_vec()).unwrap();
            let authorization = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let merchant_key = RsaVerifier::from_text(MERCHANT_PUBLIC_PEM, "merchant").unwrap();
            let mode = shared.lock().unwrap().mode;
            if mode == Mode::Hang {
                tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            }
            let (status, mut answer) = match sign::verify_request(
                authorization,
                method.as_str(),
                path_and_query,
                &body,
                &merchant_key,
            ) {
                // WeChat Pay refuses a bad request signature without signing its answer.
                Err(_) => {
                    let (status, answer) = error(401, "SIGN_ERROR");
                    return Response::builder()
                        .status(status)
                        .body(Body::from(answer))
                        .unwrap();
                }
                Ok(fields) => {
                    assert_eq!(fields.mchid, MCHID);
                    assert_eq!(fields.serial_no, MERCHANT_SERIAL);
                    assert_eq!(fields.nonce_str.len(), 32);
                    let mut st = shared.lock().unwrap();
                    st.requests.push((
                        method.to_string(),
                        path_and_query.to_string(),
                        body.clone(),
                    ));
                    route(&mut st, &method, uri.path(), &body)
                }
            };
            let now = chrono::Utc::now().timestamp();
            let at = if mode == Mode::Stale { now - 360 } else { now };
            let mut signed =
                sign::sign_as_platform(&platform(), PLATFORM_SERIAL, at, &sign::nonce(), &answer)
                    .unwrap();
            match mode {
                // A 204 carries no body: tamper with the signed nonce instead.
                Mode::Tamper if answer.is_empty() => signed.nonce.push('x'),
                Mode::Tamper => answer.push(b' '),
                Mode::UnknownSerial => signed.serial = "7132D72A03E93CDDF8C03BBD1F37EEDF".into(),
                Mode::Probe => signed.signature = sign::probe_signature(),
                _ => {}
            }
            let mut builder = Response::builder()
                .status(status)
                .header("Request-ID", "08F78BB5AF0610D302E9B3A1E06DEE3E");
            if !answer.is_empty() {
                builder = builder.header("Content-Type", "application/json");
            }
            if mode != Mode::Unsigned {
                for (name, value) in signed.pairs() {
                    builder = builder.header(name, value);
                }
            }
            builder.body(Body::from(answer)).unwrap()
        }
    }

    fn precreate_req(no: &str, amount: &str) -> PrecreateRequest {
        PrecreateRequest {
            out_trade_no: no.into(),
            amount: cny(amount),
            subject: "Green tea".into(),
            notify_url: "https://pay.example.com/channels/wechat/notify".into(),
            expires_at_ms: 1_767_581_396_000,
        }
    }

    fn refund_req(no: &str, refund_no: &str, amount: &str) -> RefundRequest {
        RefundRequest {
            out_trade_no: no.into(),
            out_request_no: refund_no.into(),
            amount: cny(amount),
            reason: "customer asked".into(),
        }
    }

    fn last_request(fake: &fake::Shared) -> (String, String, serde_json::Value) {
        let st = fake.lock().unwrap();
        let (method, path, body) = st.requests.last().cloned().unwrap();
        let body = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&body).unwrap()
        };
        (method, path, body)
    }

    fn set_trade_state(fake: &fake::Shared, no: &str, state: &str) {
        fake.lock().unwrap().trades.get_mut(no).unwrap().0 = state.into();
    }

    #[tokio::test]
    async fn native_payment_query_and_close_against_a_signed_server() {
        let (fake, base) = fake::start().await;
        let ch = WechatChannel::new(config(&base)).unwrap();

        assert_eq!(ch.query("T404").await, Ok(not_found_trade()));
        let prepay = ch.precreate(&precreate_req("T1", "88.88")).await.unwrap();
        assert_eq!(prepay.qr_code, "weixin://wxpay/bizpayurl?pr=T1");
        let (method, path, body) = last_request(&fake);
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("POST", "/v3/pay/transactions/native")
        );
        assert_eq!(
            body,
            json!({
                "appid": APPID, "mchid": MCHID, "description": "Green tea",
                "out_trade_no": "T1", "time_expire": "2026-01-05T10:49:56+08:00",
                "notify_url": "https://pay.example.com/channels/wechat/notify",
                "amount": {"total": 8888, "currency": "CNY"}
            })
        );

        assert_eq!(
            ch.query("T1").await,
            Ok(TradeQuery {
                state: TradeState::WaitingForPayment,
                channel_trade_no: None,
                paid_amount: None,
            })
        );
        let (method, path, _) = last_request(&fake);
        assert_eq!(
            (method.as_str(), path.as_str()),
            (
                "GET",
                "/v3/pay/transactions/out-trade-no/T1?mchid=1230000109"
            )
        );

        set_trade_state(&fake, "T1", "SUCCESS");
        assert_eq!(
            ch.query("T1").await,
            Ok(TradeQuery {
                state: TradeState::Paid,
                channel_trade_no: Some("42000000012026010500T1".into()),
                paid_amount: Some(cny("88.88")),
            })
        );
        assert_eq!(ch.close("T1").await, Ok(CloseOutcome::AlreadyPaid));

        ch.precreate(&precreate_req("T2", "0.01")).await.unwrap();
        assert_eq!(ch.close("T2").await, Ok(CloseOutcome::Closed));
        let (method, path, body) = last_request(&fake);
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("POST", "/v3/pay/transactions/out-trade-no/T2/close")
        );
        assert_eq!(body, json!({"mchid": MCHID}));
        assert_eq!(ch.query("T2").await.unwrap().state, TradeState::Closed);
        // Closing again, or closing what never existed: closed.
        assert_eq!(ch.close("T404").await, Ok(CloseOutcome::Closed));
    }

    #[tokio::test]
    async fn refund_reads_the_trade_total_then_refunds_and_queries() {
        let (fake, base) = fake::start().await;
        let ch = WechatChannel::new(config(&base)).unwrap();
        ch.precreate(&precreate_req("T1", "88.88")).await.unwrap();
        // Not paid: nothing to refund.
        assert!(matches!(
            ch.refund(&refund_req("T1", "R0", "1.00")).await.unwrap().state,
            RefundState::Failed { code, .. } if code == "payflow.TRADE_NOT_PAID"
        ));
        set_trade_state(&fake, "T1", "SUCCESS");

        let r = ch.refund(&refund_req("T1", "R1", "10.00")).await.unwrap();
        assert_eq!(
            r,
            RefundResult {
                state: RefundState::Processing,
                refunded_amount: None,
            }
        );
        let (method, path, body) = last_request(&fake);
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("POST", "/v3/refund/domestic/refunds")
        );
        assert_eq!(
            body,
            json!({
                "out_trade_no": "T1", "out_refund_no": "R1", "reason": "customer asked",
                "amount": {"refund": 1000, "total": 8888, "currency": "CNY"}
            })
        );

        let done = RefundResult {
            state: RefundState::Succeeded,
            refunded_amount: Some(cny("10.00")),
        };
        assert_eq!(ch.query_refund("T1", "R1").await, Ok(done.clone()));
        let (method, path, _) = last_request(&fake);
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("GET", "/v3/refund/domestic/refunds/R1")
        );
        // The same refund no again is the same refund.
        assert_eq!(ch.refund(&refund_req("T1", "R1", "10.00")).await, Ok(done));
        assert_eq!(ch.query_refund("T1", "R404").await, Ok(refund_not_found()));

        // Refused (more than the trade), and no refund R2 exists: failed for good.
        assert_eq!(
            ch.refund(&refund_req("T1", "R2", "100.00")).await,
            Ok(RefundResult {
                state: RefundState::Failed {
                    code: "INVALID_REQUEST".into(),
                    message: "INVALID_REQUEST (fake)".into(),
                },
                refunded_amount: None,
            })
        );
        let (method, path, _) = last_request(&fake);
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("GET", "/v3/refund/domestic/refunds/R2")
        );
    }

    #[tokio::test]
    async fn trade_bill_url() {
        let (fake, base) = fake::start().await;
        let ch = WechatChannel::new(config(&base)).unwrap();
        let date = chrono::NaiveDate::from_ymd_opt(2026, 1, 5).unwrap();
        assert_eq!(ch.statement_url(date).await, Ok(StatementUrl::NotReady));
        let (method, path, _) = last_request(&fake);
        assert_eq!(
            (method.as_str(), path.as_str()),
            (
                "GET",
                "/v3/bill/tradebill?bill_date=2026-01-05&bill_type=ALL"
            )
        );
        fake.lock().unwrap().bill_ready = true;
        assert_eq!(
            ch.statement_url(date).await,
            Ok(StatementUrl::Ready(
                "https://api.mch.weixin.qq.com/v3/billdownload/file?token=t0k3n".into()
            ))
        );
    }

    #[tokio::test]
    async fn answers_that_fail_verification_are_untrusted_and_server_errors_transient() {
        let (fake, base) = fake::start().await;
        let ch = WechatChannel::new(config(&base)).unwrap();
        ch.precreate(&precreate_req("T1", "1.00")).await.unwrap();
        for (mode, transient) in [
            (fake::Mode::ServerError, true),
            (fake::Mode::Tamper, false),
            (fake::Mode::UnknownSerial, false),
            (fake::Mode::Probe, false),
            (fake::Mode::Stale, false),
            (fake::Mode::Unsigned, false),
        ] {
            fake.lock().unwrap().mode = mode;
            // The query answers 200 with a body, the close of an unpaid trade 204 without one.
            let errors = [
                ch.query("T1").await.unwrap_err(),
                ch.close("T1").await.unwrap_err(),
            ];
            for e in errors {
                if transient {
                    assert!(matches!(e, ChannelError::Transient(_)), "{mode:?}: {e:?}");
                } else {
                    assert!(matches!(e, ChannelError::Untrusted(_)), "{mode:?}: {e:?}");
                }
            }
        }
        fake.lock().unwrap().mode = fake::Mode::Normal;
        // Signed with a key the server does not know: refused before anything is processed.
        let mut wrong_key = config(&base);
        wrong_key.merchant_private_key = platform();
        let ch = WechatChannel::new(wrong_key).unwrap();
        assert_eq!(
            ch.query("T1").await,
            Err(ChannelError::Declined {
                code: "SIGN_ERROR".into(),
                message: "SIGN_ERROR (fake)".into()
            })
        );
    }

    #[tokio::test]
    async fn timeouts_and_unreachable_servers_are_transient() {
        let (fake, base) = fake::start().await;
        fake.lock().unwrap().mode = fake::Mode::Hang;
        let mut cfg = config(&base);
        cfg.request_timeout = Duration::from_millis(300);
        let ch = WechatChannel::new(cfg).unwrap();
        assert!(matches!(
            ch.query("T1").await,
            Err(ChannelError::Transient(_))
        ));
        // Nothing listens on port 1.
        let ch = WechatChannel::new(config("http://127.0.0.1:1/")).unwrap();
        assert!(matches!(
            ch.query("T1").await,
            Err(ChannelError::Transient(_))
        ));
    }
}
