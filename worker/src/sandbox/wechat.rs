//! The sandbox's WeChat Pay API v3 server (direct merchant, Native QR payments), speaking the
//! protocol our adapter (`payflow_activities::channels::wechat`) speaks to the real one:
//!
//! | request | answer |
//! |---|---|
//! | `POST /v3/pay/transactions/native` | `{"code_url": "weixin://wxpay/bizpayurl?pr=..."}` |
//! | `GET /v3/pay/transactions/out-trade-no/{no}?mchid=` | the transaction |
//! | `POST /v3/pay/transactions/out-trade-no/{no}/close` | 204, no body |
//! | `POST /v3/refund/domestic/refunds` | the refund |
//! | `GET /v3/refund/domestic/refunds/{out_refund_no}` | the refund |
//! | `GET /v3/bill/tradebill?bill_date=&bill_type=ALL` | `hash_type`, `hash_value`, `download_url` |
//! | `GET /v3/billdownload/file?token=` | the trade bill (plain text, see below) |
//!
//! Every request must carry a valid `Authorization: WECHATPAY2-SHA256-RSA2048 mchid=..,
//! nonce_str=..,signature=..,timestamp=..,serial_no=..`: the sandbox rebuilds the signed
//! message `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n` itself from the request line and the
//! raw body it received and checks it with the merchant's public key, and checks the `mchid`,
//! the certificate serial and the timestamp (5 minutes either way); a request that fails is
//! answered `401 {"code":"SIGN_ERROR","message":..}`. Every answer (errors included) is signed
//! with the platform key: `Wechatpay-Timestamp`, `-Nonce`, `-Signature`, `-Serial` over
//! `TIMESTAMP\nNONCE\nBODY\n`. The bill download is the exception, as at WeChat Pay: a raw file,
//! checked against the `hash_value` (SHA1) of the signed `tradebill` answer.
//!
//! State and knobs follow the Alipay sandbox ([`super::alipay`]): trades in memory (amounts in
//! fen), the same [`Knobs`] (`pay_after`, `notify`, `paid_amount`, `decline_precreate`,
//! `server_errors`, `refund_processing_ms`, `refund_decline`, `pay_after_close_ms`,
//! `hang_methods` naming the operations of [`op`], `statement_pending`; payout knobs do not
//! apply: WeChat Pay has no payout here), the control endpoint `POST
//! /sandbox/orders/{out_trade_no}/pay`. When the customer pays, the sandbox posts a
//! `TRANSACTION.SUCCESS` notification to the trade's `notify_url`: the transaction encrypted
//! with AEAD_AES_256_GCM under the API v3 key (`resource`), the body signed with the platform
//! key, re-posted on the retry schedule (signed afresh each time) until answered with a 2xx.
//!
//! Trade states: `NOTPAY`, `SUCCESS`, `REFUND` (paid, with a refund accepted; WeChat Pay does not
//! close a refunded trade), `CLOSED`. Sandbox simplifications: `notify_url` may be plain http
//! (loopback), `time_expire` is kept but not enforced (we close at expiry), bill types other
//! than `ALL` and gzip bills are refused.
//!
//! The trade bill of a day (Beijing time) has WeChat Pay's layout: a header line, one line per
//! payment of that day (`SUCCESS`, dated when paid) and per refund accepted that day (`REFUND`,
//! with its `退款状态` as the bill is cut: `SUCCESS` or `PROCESSING`), every field prefixed with
//! a backtick (commas stay inside fields: readers split on `` ,` ``), then the summary header and
//! the summary line; amounts in yuan, fees with five decimals (the sandbox charges 0.60%, rounded
//! half-up to the fen, given back on refunds), lines ending in `\r\n`. A day without any line
//! has no bill (`NO_STATEMENT_EXIST`), as at WeChat Pay; a day not begun yet, or bills held by
//! the `statement_pending` or `statement.not_ready_times` knobs, answer `STATEMENT_CREATING`
//! (not generated yet). The other statement knobs plant differences in payment lines, as in the
//! Alipay sandbox (a `Closed` status is written `REVOKED`; queries are not affected). Each
//! `tradebill` answer cuts the bill then and keeps it under its download token, so the file
//! always matches its `hash_value`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, FixedOffset, NaiveDate};
use payflow_activities::channels::wechat::{self as adapter, notify, sign, wire};
use payflow_activities::crypto::rsa_keys::{RsaSigner, RsaVerifier};
use rand::Rng;
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretBox};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::alipay::{Knobs, NotifyMode, SandboxRefundStatus, SandboxStatus};

/// The operations, as [`WechatSandboxHandle::calls`] counts them and `Knobs::hang_methods`
/// names them.
pub mod op {
    /// `POST /v3/pay/transactions/native`
    pub const NATIVE: &str = "native";
    /// `GET /v3/pay/transactions/out-trade-no/{no}`
    pub const QUERY: &str = "query";
    /// `POST /v3/pay/transactions/out-trade-no/{no}/close`
    pub const CLOSE: &str = "close";
    /// `POST /v3/refund/domestic/refunds`
    pub const REFUND: &str = "refund";
    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`
    pub const REFUND_QUERY: &str = "refund_query";
    /// `GET /v3/bill/tradebill`
    pub const TRADEBILL: &str = "tradebill";
    /// `GET /v3/billdownload/file`
    pub const BILL_DOWNLOAD: &str = "billdownload";
}

/// Where the bill download lives (the `download_url` of `tradebill`).
pub const PATH_BILL_DOWNLOAD: &str = "/v3/billdownload/file";
/// The sandbox's channel fee: 0.60% (six per mille), as the bill shows it.
const FEE_PER_MILLE: i64 = 6;
const FEE_RATE_TEXT: &str = "0.60%";
/// The customer, as the bill and the transaction name them (`payer.openid`).
const PAYER_OPENID: &str = "oSandboxPayer0000000000000000";

/// The merchant's API v3 key: 32 bytes (the key as set in the merchant platform is 32
/// characters, used as their bytes).
pub type ApiV3Secret = SecretBox<[u8; 32]>;

/// Reads an API v3 key from its text; the error never shows the key.
pub fn api_v3_key(text: &str) -> Result<ApiV3Secret, String> {
    let bytes: [u8; 32] = text
        .trim()
        .as_bytes()
        .try_into()
        .map_err(|_| format!("API v3 key must be 32 bytes, not {}", text.trim().len()))?;
    Ok(SecretBox::new(Box::new(bytes)))
}

pub struct WechatSandboxConfig {
    pub appid: String,
    pub mchid: String,
    /// The merchant API certificate our requests must name (`serial_no`) and its public key.
    pub merchant_serial_no: String,
    pub merchant_public_key: RsaVerifier,
    /// The platform key that signs answers and notifications, and its serial
    /// (`Wechatpay-Serial`; its public half is our `channel_public_key`).
    pub platform_signer: RsaSigner,
    pub platform_serial: String,
    /// Encrypts notification resources.
    pub api_v3_key: ApiV3Secret,
    /// Initial behaviour (see [`WechatSandboxHandle::set_knobs`]).
    pub knobs: Knobs,
    /// Waits between notification re-posts until acknowledged with a 2xx.
    pub notify_retry: Vec<Duration>,
}

#[derive(Debug, Clone)]
pub struct WechatTrade {
    pub out_trade_no: String,
    /// WeChat Pay's trade number (reported once paid).
    pub transaction_id: String,
    pub code_url: String,
    pub description: String,
    /// The order amount, fen.
    pub total: i64,
    /// What the customer pays, fen (differs from `total` only when a knob says so).
    pub paid: i64,
    pub status: SandboxStatus,
    pub time_expire: Option<String>,
    /// When the customer paid (unix ms); `None` while unpaid or closed unpaid.
    pub paid_at_ms: Option<i64>,
    pub notify_mode: NotifyMode,
    pub notify_url: String,
    /// Notification posts made, and whether one was answered with a 2xx.
    pub notifications_sent: u32,
    pub acknowledged: bool,
    /// The customer pays this long after our close (knob `pay_after_close_ms` at prepay).
    pub pay_after_close: Option<Duration>,
    /// Refunds in the order they were accepted (refused ones leave no record).
    pub refunds: Vec<WechatRefund>,
}

impl WechatTrade {
    /// `trade_state` as WeChat Pay answers it.
    pub fn trade_state(&self) -> &'static str {
        match self.status {
            SandboxStatus::WaitBuyerPay => "NOTPAY",
            SandboxStatus::Success if self.refunds.is_empty() => "SUCCESS",
            SandboxStatus::Success => "REFUND",
            SandboxStatus::Closed => "CLOSED",
        }
    }

    /// Refunded so far (completed refunds only), fen.
    pub fn refunded(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.status == SandboxRefundStatus::Success)
            .map(|r| r.amount)
            .sum()
    }
}

#[derive(Debug, Clone)]
pub struct WechatRefund {
    pub out_refund_no: String,
    /// WeChat Pay's refund id.
    pub refund_id: String,
    /// Fen.
    pub amount: i64,
    pub reason: Option<String>,
    pub status: SandboxRefundStatus,
    pub created_at_ms: i64,
    /// When money moved (unix ms).
    pub refunded_at_ms: Option<i64>,
    /// Refund requests with this `out_refund_no` (repeats included).
    pub requests: u32,
}

/// A notification as the sandbox posts it: headers and the exact body they sign.
#[derive(Debug, Clone)]
pub struct SignedNotification {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

struct Inner {
    cfg: WechatSandboxConfig,
    /// Where we listen: the bill address's host when a request names none.
    addr: SocketAddr,
    knobs: Mutex<Knobs>,
    /// Calls received, by operation.
    calls: Mutex<HashMap<&'static str, u32>>,
    /// Requests refused with `SIGN_ERROR`.
    sign_errors: AtomicU64,
    trades: Mutex<HashMap<String, WechatTrade>>,
    /// Bills handed out by `tradebill`, by download token (the file the hash was made of).
    bills: Mutex<HashMap<String, String>>,
    /// Bumped on every change so observers can wait for a condition.
    changed: watch::Sender<u64>,
    http: reqwest::Client,
    /// Source of channel-side ids.
    next_id: AtomicU64,
}

impl Inner {
    fn knobs(&self) -> Knobs {
        self.knobs.lock().expect("sandbox lock").clone()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }
}

/// A running WeChat Pay sandbox: its address, its trades, and a way to wait for them to change.
#[derive(Clone)]
pub struct WechatSandboxHandle {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl WechatSandboxHandle {
    /// The API base URL (our channel's `gateway_url`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn trade(&self, out_trade_no: &str) -> Option<WechatTrade> {
        self.inner
            .trades
            .lock()
            .expect("sandbox lock")
            .get(out_trade_no)
            .cloned()
    }

    /// A refund by our `out_refund_no`.
    pub fn refund(&self, out_refund_no: &str) -> Option<WechatRefund> {
        let trades = self.inner.trades.lock().expect("sandbox lock");
        find_refund(&trades, out_refund_no).map(|(_, r)| r.clone())
    }

    /// Changes the behaviour: trade knobs apply to trades created from now on, the others to
    /// calls from now on.
    pub fn set_knobs(&self, knobs: Knobs) {
        *self.inner.knobs.lock().expect("sandbox lock") = knobs;
        // Hung calls re-check their knob.
        self.inner.bump();
    }

    /// Changes some knobs, keeping the others.
    pub fn update_knobs(&self, f: impl FnOnce(&mut Knobs)) {
        f(&mut self.inner.knobs.lock().expect("sandbox lock"));
        self.inner.bump();
    }

    pub fn knobs(&self) -> Knobs {
        self.inner.knobs()
    }

    /// How many calls of `operation` (one of [`op`]) were received (calls refused by the
    /// `server_errors` knob are not counted; hung ones and ones refused for their signature
    /// are).
    pub fn calls(&self, operation: &str) -> u32 {
        self.inner
            .calls
            .lock()
            .expect("sandbox lock")
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Requests refused because their `Authorization` did not verify.
    pub fn sign_errors(&self) -> u64 {
        self.inner.sign_errors.load(Ordering::Relaxed)
    }

    /// The customer pays the trade now; notifications start. `false` for an unknown or closed
    /// trade.
    pub fn pay(&self, out_trade_no: &str) -> bool {
        settle(&self.inner, out_trade_no, false)
    }

    /// The payment notification of a paid trade as the sandbox would post it now, under
    /// notification id `id` (to replay or tamper with in tests); `None` unless paid.
    pub fn notification(&self, out_trade_no: &str, id: &str) -> Option<SignedNotification> {
        let trade = self.trade(out_trade_no)?;
        trade.paid_at_ms?;
        notification(&self.inner, &trade, id)
    }

    /// Waits until `f` holds for the trade, or the deadline passes.
    pub async fn wait_for(
        &self,
        out_trade_no: &str,
        deadline: Duration,
        f: impl Fn(&WechatTrade) -> bool,
    ) -> Option<WechatTrade> {
        let mut found = None;
        self.wait_until(deadline, |h| {
            found = h.trade(out_trade_no).filter(|t| f(t));
            found.is_some()
        })
        .await;
        found
    }

    /// Waits until `f` holds for the sandbox, or the deadline passes; `true` when it held.
    pub async fn wait_until(
        &self,
        deadline: Duration,
        mut f: impl FnMut(&WechatSandboxHandle) -> bool,
    ) -> bool {
        super::wait_for_change(&self.inner.changed, deadline, || f(self)).await
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

fn beijing_time(ms: i64) -> DateTime<FixedOffset> {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&beijing())
}

fn random_text(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Fen as yuan with two decimals (`-0.27` for -27).
fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", fen.abs() / 100, fen.abs() % 100)
}

/// A fee as the bill writes it: yuan with five decimals.
fn fee_text(fen: i64) -> String {
    format!("{}000", yuan(fen))
}

/// The sandbox's fee on `fen`, rounded half-up to the fen.
fn fee(fen: i64) -> i64 {
    (fen * FEE_PER_MILLE + 500) / 1000
}

/// A yuan amount of a statement knob in fen (`None` below a fen's precision).
fn fen_of(yuan: Decimal) -> Option<i64> {
    use rust_decimal::prelude::ToPrimitive;
    let fen = yuan * Decimal::from(100);
    fen.fract().is_zero().then(|| fen.to_i64()).flatten()
}

/// A positive yuan amount (the `paid_amount` knob) in fen.
fn yuan_to_fen(text: &str) -> Option<i64> {
    use rust_decimal::prelude::ToPrimitive;
    let fen = text.trim().parse::<Decimal>().ok()? * Decimal::from(100);
    (fen > Decimal::ZERO && fen.fract().is_zero())
        .then(|| fen.to_i64())
        .flatten()
}

// ---------------------------------------------------------------------------------------------
// Requests and answers

/// A request as it arrived: the request line, the headers and the raw body.
struct Received {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.uri.query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Answer> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Answer::error(StatusCode::BAD_REQUEST, "PARAM_ERROR", &e.to_string()))
    }
}

enum Body {
    Json(Value),
    /// 204
    Empty,
    /// A bill file: sent as is, not signed (checked against `hash_value`).
    File(String),
}

struct Answer {
    status: StatusCode,
    body: Body,
}

impl Answer {
    fn ok(body: Value) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: Body::Json(body),
        }
    }

    fn no_content() -> Answer {
        Answer {
            status: StatusCode::NO_CONTENT,
            body: Body::Empty,
        }
    }

    /// WeChat Pay's error body: `{"code": .., "message": ..}`.
    fn error(status: StatusCode, code: &str, message: &str) -> Answer {
        Answer {
            status,
            body: Body::Json(json!({"code": code, "message": message})),
        }
    }

    fn param_error(message: &str) -> Answer {
        Answer::error(StatusCode::BAD_REQUEST, "PARAM_ERROR", message)
    }
}

/// Checks a request's `Authorization` against what was received: scheme and fields, the
/// merchant, the certificate serial, the timestamp window, and the signature over the message
/// rebuilt here from the request line and the raw body.
fn authenticate(cfg: &WechatSandboxConfig, r: &Received, now: i64) -> Result<(), String> {
    let value = r
        .headers
        .get(header::AUTHORIZATION)
        .ok_or("no Authorization header")?
        .to_str()
        .map_err(|_| "Authorization is not text")?;
    let fields = sign::parse_authorization(value).ok_or(
        "Authorization is not WECHATPAY2-SHA256-RSA2048 with mchid, nonce_str, signature, \
         timestamp and serial_no",
    )?;
    if fields.mchid != cfg.mchid {
        return Err(format!("mchid {:?} is not this merchant", fields.mchid));
    }
    if !fields
        .serial_no
        .eq_ignore_ascii_case(&cfg.merchant_serial_no)
    {
        return Err(format!(
            "serial_no {:?} names no API certificate of this merchant",
            fields.serial_no
        ));
    }
    let timestamp: i64 = fields
        .timestamp
        .parse()
        .ok()
        .filter(|_| fields.timestamp.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| format!("timestamp {:?} is not a unix time", fields.timestamp))?;
    if (now - timestamp).abs() > sign::WINDOW_SECS {
        return Err(format!(
            "timestamp {timestamp} is more than 5 minutes from now ({now})"
        ));
    }
    let path_and_query = r.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut message = Vec::with_capacity(r.body.len() + 200);
    for part in [
        r.method.as_str().as_bytes(),
        path_and_query.as_bytes(),
        fields.timestamp.as_bytes(),
        fields.nonce_str.as_bytes(),
        &r.body,
    ] {
        message.extend_from_slice(part);
        message.push(b'\n');
    }
    cfg.merchant_public_key
        .verify_base64(&message, &fields.signature)
        .map_err(|_| "signature does not verify with the merchant's public key".to_string())
}

/// Signs an answer with the platform key (bill files excepted) and sends it.
fn respond(inner: &Inner, answer: Answer) -> Response {
    let (text, content_type) = match answer.body {
        Body::Json(v) => (v.to_string(), Some("application/json")),
        Body::Empty => (String::new(), None),
        Body::File(text) => {
            return (
                answer.status,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                text,
            )
                .into_response();
        }
    };
    let signed = match sign::sign_as_platform(
        &inner.cfg.platform_signer,
        &inner.cfg.platform_serial,
        now_secs(),
        &sign::nonce(),
        text.as_bytes(),
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "wechat sandbox: cannot sign an answer");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut response = (answer.status, text).into_response();
    let headers = response.headers_mut();
    if let Some(ct) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    let request_id = format!("sandbox-{}", random_text(16));
    for (name, value) in signed
        .pairs()
        .into_iter()
        .chain([("Request-ID", request_id.as_str())])
    {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    response
}

/// Holds the call while the `hang_methods` knob lists its operation.
async fn hang_while_listed(inner: &Inner, operation: &str) {
    let mut rx = inner.changed.subscribe();
    loop {
        rx.borrow_and_update();
        if !inner
            .knobs
            .lock()
            .expect("sandbox lock")
            .hang_methods
            .iter()
            .any(|m| m == operation)
        {
            return;
        }
        tracing::info!(operation, "wechat sandbox: hanging");
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// What every call goes through: the `server_errors` knob, counting, the `hang_methods` knob,
/// the signature check; then `answer`, signed.
async fn serve(
    inner: Arc<Inner>,
    operation: &'static str,
    r: Received,
    answer: impl FnOnce(&Arc<Inner>, &Received) -> Answer,
) -> Response {
    {
        let mut knobs = inner.knobs.lock().expect("sandbox lock");
        if knobs.server_errors > 0 {
            knobs.server_errors -= 1;
            drop(knobs);
            return respond(
                &inner,
                Answer::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "SYSTEM_ERROR",
                    "系统错误",
                ),
            );
        }
    }
    *inner
        .calls
        .lock()
        .expect("sandbox lock")
        .entry(operation)
        .or_default() += 1;
    inner.bump();
    hang_while_listed(&inner, operation).await;
    if let Err(why) = authenticate(&inner.cfg, &r, now_secs()) {
        inner.sign_errors.fetch_add(1, Ordering::Relaxed);
        inner.bump();
        tracing::warn!(operation, %why, "wechat sandbox: request signature refused");
        return respond(
            &inner,
            Answer::error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", &why),
        );
    }
    let a = answer(&inner, &r);
    respond(&inner, a)
}

// ---------------------------------------------------------------------------------------------
// Server

pub async fn spawn(
    listener: TcpListener,
    cfg: WechatSandboxConfig,
) -> std::io::Result<WechatSandboxHandle> {
    payflow_activities::tls::ensure_crypto_provider();
    let addr = listener.local_addr()?;
    let (changed, _) = watch::channel(0);
    let inner = Arc::new(Inner {
        knobs: Mutex::new(cfg.knobs.clone()),
        cfg,
        addr,
        calls: Mutex::new(HashMap::new()),
        sign_errors: AtomicU64::new(0),
        trades: Mutex::new(HashMap::new()),
        bills: Mutex::new(HashMap::new()),
        changed,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?,
        next_id: AtomicU64::new(0),
    });
    let by_out_trade_no = wire::PATH_BY_OUT_TRADE_NO;
    let app = Router::new()
        .route(wire::PATH_NATIVE, post(native))
        .route(&format!("{by_out_trade_no}/{{no}}"), get(query))
        .route(&format!("{by_out_trade_no}/{{no}}/close"), post(close))
        .route(wire::PATH_REFUNDS, post(refund))
        .route(&format!("{}/{{no}}", wire::PATH_REFUNDS), get(refund_query))
        .route(wire::PATH_TRADEBILL, get(tradebill))
        .route(PATH_BILL_DOWNLOAD, get(bill_download))
        .route("/sandbox/orders/{out_trade_no}/pay", post(control_pay))
        .with_state(inner.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "wechat sandbox server stopped");
        }
    });
    Ok(WechatSandboxHandle { addr, inner })
}

async fn control_pay(State(inner): State<Arc<Inner>>, Path(no): Path<String>) -> StatusCode {
    if settle(&inner, &no, false) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

fn received(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Received {
    Received {
        method,
        uri,
        headers,
        body,
    }
}

async fn native(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = received(method, uri, headers, body);
    serve(inner, op::NATIVE, r, native_answer).await
}

async fn query(
    State(inner): State<Arc<Inner>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = received(method, uri, headers, body);
    serve(inner, op::QUERY, r, |inner, r| query_answer(inner, r, &no)).await
}

async fn close(
    State(inner): State<Arc<Inner>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = received(method, uri, headers, body);
    serve(inner, op::CLOSE, r, |inner, r| close_answer(inner, r, &no)).await
}

async fn refund(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = received(method, uri, headers, body);
    serve(inner, op::REFUND, r, refund_answer).await
}

async fn refund_query(
    State(inner): State<Arc<Inner>>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = received(method, uri, headers, body);
    serve(inner, op::REFUND_QUERY, r, |inner, _| {
        refund_query_answer(inner, &no)
    })
    .await
}

async fn tradebill(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = received(method, uri, headers, body);
    serve(inner, op::TRADEBILL, r, tradebill_answer).await
}

async fn bill_download(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = received(method, uri, headers, body);
    serve(inner, op::BILL_DOWNLOAD, r, bill_download_answer).await
}

// ---------------------------------------------------------------------------------------------
// Trades

/// `out_trade_no`: 6 to 32 letters, digits, `_-|*`.
fn valid_out_trade_no(no: &str) -> bool {
    (6..=32).contains(&no.len())
        && no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*".contains(&b))
}

/// `out_refund_no`: 1 to 64 letters, digits, `_-|*@`.
fn valid_out_refund_no(no: &str) -> bool {
    (1..=64).contains(&no.len())
        && no
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-|*@".contains(&b))
}

fn native_answer(inner: &Arc<Inner>, r: &Received) -> Answer {
    let req: wire::NativePrepay = match r.json() {
        Ok(req) => req,
        Err(a) => return a,
    };
    let cfg = &inner.cfg;
    if req.mchid != cfg.mchid {
        return Answer::param_error("mchid differs from the Authorization's");
    }
    if req.appid != cfg.appid {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "APPID_MCHID_NOT_MATCH",
            "appid和mch_id不匹配",
        );
    }
    if !valid_out_trade_no(&req.out_trade_no) {
        return Answer::param_error("out_trade_no must be 6 to 32 letters, digits or _-|*");
    }
    let description_len = req.description.chars().count();
    if description_len == 0 || description_len > 127 {
        return Answer::param_error("description must be 1 to 127 characters");
    }
    if req.amount.total < 1 || req.amount.total > i64::from(i32::MAX) {
        return Answer::param_error("amount.total must be a positive number of fen");
    }
    if req
        .amount
        .currency
        .as_deref()
        .is_some_and(|c| c != wire::CURRENCY_CNY)
    {
        return Answer::param_error("amount.currency must be CNY");
    }
    // WeChat Pay wants an https notify_url without query; the sandbox also takes plain http
    // (loopback ingress).
    let notify_ok = url::Url::parse(&req.notify_url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.query().is_none());
    if !notify_ok {
        return Answer::param_error("notify_url must be an http(s) address without query");
    }
    let knobs = inner.knobs();
    if let Some((code, message)) = &knobs.decline_precreate {
        return Answer::error(StatusCode::FORBIDDEN, code, message);
    }
    let (code_url, created) = {
        let mut trades = inner.trades.lock().expect("sandbox lock");
        if let Some(existing) = trades.get(&req.out_trade_no) {
            // The same order again, unpaid and with the same details: the same code_url.
            if existing.status != SandboxStatus::WaitBuyerPay
                || existing.total != req.amount.total
                || existing.description != req.description
            {
                return Answer::error(StatusCode::FORBIDDEN, "OUT_TRADE_NO_USED", "商户订单号重复");
            }
            (existing.code_url.clone(), false)
        } else {
            let n = inner.next_id();
            let date = beijing_time(now_ms()).format("%Y%m%d");
            let code_url = format!("weixin://wxpay/bizpayurl?pr={}", random_text(9));
            trades.insert(
                req.out_trade_no.clone(),
                WechatTrade {
                    out_trade_no: req.out_trade_no.clone(),
                    transaction_id: format!("4200000000{date}{n:010}"),
                    code_url: code_url.clone(),
                    description: req.description.clone(),
                    total: req.amount.total,
                    paid: knobs
                        .paid_amount
                        .as_deref()
                        .and_then(yuan_to_fen)
                        .unwrap_or(req.amount.total),
                    status: SandboxStatus::WaitBuyerPay,
                    time_expire: req.time_expire.clone(),
                    paid_at_ms: None,
                    notify_mode: knobs.notify,
                    notify_url: req.notify_url.clone(),
                    notifications_sent: 0,
                    acknowledged: false,
                    pay_after_close: knobs.pay_after_close_ms.map(Duration::from_millis),
                    refunds: Vec::new(),
                },
            );
            (code_url, true)
        }
    };
    inner.bump();
    if created && let Some(delay) = knobs.pay_after {
        let inner = inner.clone();
        let no = req.out_trade_no.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            settle(&inner, &no, false);
        });
    }
    Answer::ok(json!({ "code_url": code_url }))
}

/// The transaction as the query answers it (and, paid, as a notification carries it).
fn transaction(cfg: &WechatSandboxConfig, t: &WechatTrade, trade_state: &str) -> Value {
    let desc = match trade_state {
        "NOTPAY" => "订单未支付",
        "SUCCESS" => "支付成功",
        "REFUND" => "订单发生过退款",
        _ => "订单已关闭",
    };
    let mut v = json!({
        "appid": cfg.appid,
        "mchid": cfg.mchid,
        "out_trade_no": t.out_trade_no,
        "trade_state": trade_state,
        "trade_state_desc": desc,
    });
    match t.paid_at_ms {
        Some(at) => {
            v["transaction_id"] = json!(t.transaction_id);
            v["trade_type"] = json!("NATIVE");
            v["bank_type"] = json!("OTHERS");
            v["attach"] = json!("");
            v["success_time"] = json!(adapter::format_time(at));
            v["payer"] = json!({ "openid": PAYER_OPENID });
            v["amount"] = json!({
                "total": t.paid,
                "payer_total": t.paid,
                "currency": wire::CURRENCY_CNY,
                "payer_currency": wire::CURRENCY_CNY,
            });
        }
        None => {
            v["amount"] = json!({ "total": t.total, "payer_currency": wire::CURRENCY_CNY });
        }
    }
    v
}

fn query_answer(inner: &Arc<Inner>, r: &Received, no: &str) -> Answer {
    match r.query_param("mchid") {
        None => return Answer::param_error("mchid is required"),
        Some(m) if m != inner.cfg.mchid => {
            return Answer::param_error("mchid differs from the Authorization's");
        }
        Some(_) => {}
    }
    let trades = inner.trades.lock().expect("sandbox lock");
    match trades.get(no) {
        None => Answer::error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"),
        Some(t) => Answer::ok(transaction(&inner.cfg, t, t.trade_state())),
    }
}

fn close_answer(inner: &Arc<Inner>, r: &Received, no: &str) -> Answer {
    let body: wire::CloseBody = match r.json() {
        Ok(b) => b,
        Err(a) => return a,
    };
    if body.mchid != inner.cfg.mchid {
        return Answer::param_error("mchid differs from the Authorization's");
    }
    let late_payment = {
        let mut trades = inner.trades.lock().expect("sandbox lock");
        match trades.get_mut(no) {
            None => {
                return Answer::error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在");
            }
            Some(t) if t.status == SandboxStatus::Success => {
                return Answer::error(StatusCode::BAD_REQUEST, "ORDERPAID", "订单已支付");
            }
            // Closing a closed trade again is a success, as at WeChat Pay.
            Some(t) => {
                let late = (t.status == SandboxStatus::WaitBuyerPay)
                    .then_some(t.pay_after_close)
                    .flatten();
                t.status = SandboxStatus::Closed;
                late
            }
        }
    };
    inner.bump();
    if let Some(delay) = late_payment {
        let inner = inner.clone();
        let no = no.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            settle(&inner, &no, true);
        });
    }
    Answer::no_content()
}

/// The customer pays: an open trade, or (`even_if_closed`, knob `pay_after_close_ms`) a trade
/// we closed unpaid. Notifications start. `true` when the trade is (now) paid.
fn settle(inner: &Arc<Inner>, out_trade_no: &str, even_if_closed: bool) -> bool {
    let (notify_url, mode) = {
        let mut trades = inner.trades.lock().expect("sandbox lock");
        let Some(t) = trades.get_mut(out_trade_no) else {
            return false;
        };
        let payable = t.status == SandboxStatus::WaitBuyerPay
            || (even_if_closed && t.status == SandboxStatus::Closed && t.paid_at_ms.is_none());
        if !payable {
            return t.status == SandboxStatus::Success;
        }
        t.status = SandboxStatus::Success;
        t.paid_at_ms = Some(now_ms());
        (t.notify_url.clone(), t.notify_mode)
    };
    inner.bump();
    tracing::info!(
        out_trade_no,
        even_if_closed,
        "wechat sandbox: customer paid"
    );
    let id = format!("EV-{}", uuid::Uuid::new_v4().simple());
    let ids = match mode {
        NotifyMode::Never => vec![],
        NotifyMode::Once => vec![id],
        // The same notification twice, and another one under a second id.
        NotifyMode::Twice => vec![
            id.clone(),
            id,
            format!("EV-{}", uuid::Uuid::new_v4().simple()),
        ],
    };
    for id in ids {
        tokio::spawn(notify_until_acknowledged(
            inner.clone(),
            out_trade_no.to_string(),
            notify_url.clone(),
            id,
        ));
    }
    true
}

/// A `TRANSACTION.SUCCESS` notification of `trade`: the transaction encrypted with the API v3
/// key, the body signed with the platform key, now.
fn notification(inner: &Inner, trade: &WechatTrade, id: &str) -> Option<SignedNotification> {
    let cfg = &inner.cfg;
    let plain = transaction(cfg, trade, "SUCCESS").to_string();
    let resource = notify::encrypt_resource(
        cfg.api_v3_key.expose_secret(),
        &random_text(notify::NONCE_LEN),
        wire::ORIGINAL_TYPE_TRANSACTION,
        wire::ORIGINAL_TYPE_TRANSACTION,
        plain.as_bytes(),
    );
    let envelope = json!({
        "id": id,
        "create_time": adapter::format_time(now_ms()),
        "resource_type": "encrypt-resource",
        "event_type": "TRANSACTION.SUCCESS",
        "summary": "支付成功",
        "resource": resource,
    });
    let body = envelope.to_string().into_bytes();
    let signed = sign::sign_as_platform(
        &cfg.platform_signer,
        &cfg.platform_serial,
        now_secs(),
        &sign::nonce(),
        &body,
    )
    .map_err(|e| tracing::error!(error = %e, "wechat sandbox: cannot sign a notification"))
    .ok()?;
    let mut headers: Vec<(String, String)> = signed
        .pairs()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    headers.push(("Content-Type".into(), "application/json".into()));
    Some(SignedNotification { headers, body })
}

/// Posts the notification, signed afresh each time, on the retry schedule until a 2xx answer.
async fn notify_until_acknowledged(
    inner: Arc<Inner>,
    out_trade_no: String,
    url: String,
    id: String,
) {
    let mut waits = inner.cfg.notify_retry.clone().into_iter();
    loop {
        let Some(trade) = inner
            .trades
            .lock()
            .expect("sandbox lock")
            .get(&out_trade_no)
            .cloned()
        else {
            return;
        };
        let Some(n) = notification(&inner, &trade, &id) else {
            return;
        };
        let mut request = inner.http.post(&url).body(n.body);
        for (k, v) in &n.headers {
            request = request.header(k, v);
        }
        let acked = match request.send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        };
        if let Some(t) = inner
            .trades
            .lock()
            .expect("sandbox lock")
            .get_mut(&out_trade_no)
        {
            t.notifications_sent += 1;
            t.acknowledged |= acked;
        }
        inner.bump();
        if acked {
            return;
        }
        match waits.next() {
            Some(w) => tokio::time::sleep(w).await,
            None => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Refunds

fn find_refund<'a>(
    trades: &'a HashMap<String, WechatTrade>,
    out_refund_no: &str,
) -> Option<(&'a WechatTrade, &'a WechatRefund)> {
    trades.values().find_map(|t| {
        t.refunds
            .iter()
            .find(|r| r.out_refund_no == out_refund_no)
            .map(|r| (t, r))
    })
}

/// The refund as the refund and the refund query answer it.
fn refund_json(t: &WechatTrade, r: &WechatRefund) -> Value {
    let status = match r.status {
        SandboxRefundStatus::Processing => "PROCESSING",
        SandboxRefundStatus::Success => "SUCCESS",
    };
    let mut v = json!({
        "refund_id": r.refund_id,
        "out_refund_no": r.out_refund_no,
        "transaction_id": t.transaction_id,
        "out_trade_no": t.out_trade_no,
        "channel": "ORIGINAL",
        "user_received_account": "支付用户零钱",
        "create_time": adapter::format_time(r.created_at_ms),
        "status": status,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": t.paid,
            "refund": r.amount,
            "payer_total": t.paid,
            "payer_refund": r.amount,
            "settlement_total": t.paid,
            "settlement_refund": r.amount,
            "discount_refund": 0,
            "currency": wire::CURRENCY_CNY,
        },
    });
    if let Some(at) = r.refunded_at_ms {
        v["success_time"] = json!(adapter::format_time(at));
    }
    v
}

fn refund_answer(inner: &Arc<Inner>, r: &Received) -> Answer {
    let req: wire::RefundBody = match r.json() {
        Ok(req) => req,
        Err(a) => return a,
    };
    if !valid_out_refund_no(&req.out_refund_no) {
        return Answer::param_error("out_refund_no must be 1 to 64 letters, digits or _-|*@");
    }
    if req.amount.refund < 1 || req.amount.total < 1 {
        return Answer::param_error("amount.refund and amount.total must be positive fen");
    }
    if req.amount.currency != wire::CURRENCY_CNY {
        return Answer::param_error("amount.currency must be CNY");
    }
    if req.reason.as_ref().is_some_and(|r| r.chars().count() > 80) {
        return Answer::param_error("reason must be at most 80 characters");
    }
    let knobs = inner.knobs();
    let processing = knobs.refund_processing_ms.map(Duration::from_millis);
    let answer = {
        let mut trades = inner.trades.lock().expect("sandbox lock");
        // A repeated out_refund_no is the same refund: never refunded twice.
        if let Some((t, existing)) = find_refund(&trades, &req.out_refund_no) {
            if t.out_trade_no != req.out_trade_no || existing.amount != req.amount.refund {
                return Answer::error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "a refund with this out_refund_no has other details",
                );
            }
            let no = t.out_trade_no.clone();
            let t = trades.get_mut(&no).expect("found above");
            let existing = t
                .refunds
                .iter_mut()
                .find(|r| r.out_refund_no == req.out_refund_no)
                .expect("found above");
            existing.requests += 1;
            let existing = existing.clone();
            let answer = Answer::ok(refund_json(t, &existing));
            drop(trades);
            inner.bump();
            return answer;
        }
        if let Some((code, message)) = &knobs.refund_decline {
            return Answer::error(StatusCode::FORBIDDEN, code, message);
        }
        let Some(t) = trades.get_mut(&req.out_trade_no) else {
            return Answer::error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "订单不存在");
        };
        if t.status != SandboxStatus::Success {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "the trade is not paid",
            );
        }
        if req.amount.total != t.paid {
            return Answer::param_error("amount.total is not the order's amount");
        }
        let accepted: i64 = t.refunds.iter().map(|r| r.amount).sum();
        if accepted + req.amount.refund > t.paid {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                "申请退款金额超过订单可退金额",
            );
        }
        let n = inner.next_id();
        let now = now_ms();
        let date = beijing_time(now).format("%Y%m%d");
        t.refunds.push(WechatRefund {
            out_refund_no: req.out_refund_no.clone(),
            refund_id: format!("50300000000{date}{n:010}"),
            amount: req.amount.refund,
            reason: req.reason.clone(),
            status: if processing.is_some() {
                SandboxRefundStatus::Processing
            } else {
                SandboxRefundStatus::Success
            },
            created_at_ms: now,
            refunded_at_ms: processing.is_none().then_some(now),
            requests: 1,
        });
        Answer::ok(refund_json(t, t.refunds.last().expect("just pushed")))
    };
    inner.bump();
    tracing::info!(out_trade_no = %req.out_trade_no, out_refund_no = %req.out_refund_no, fen = req.amount.refund, ?processing, "wechat sandbox: refund accepted");
    if let Some(delay) = processing {
        let inner = inner.clone();
        let no = req.out_refund_no.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            complete_refund(&inner, &no);
        });
    }
    answer
}

/// A processing refund goes through.
fn complete_refund(inner: &Inner, out_refund_no: &str) {
    {
        let mut trades = inner.trades.lock().expect("sandbox lock");
        let Some(r) = trades
            .values_mut()
            .flat_map(|t| t.refunds.iter_mut())
            .find(|r| r.out_refund_no == out_refund_no)
        else {
            return;
        };
        r.status = SandboxRefundStatus::Success;
        r.refunded_at_ms = Some(now_ms());
    }
    inner.bump();
}

fn refund_query_answer(inner: &Arc<Inner>, out_refund_no: &str) -> Answer {
    let trades = inner.trades.lock().expect("sandbox lock");
    match find_refund(&trades, out_refund_no) {
        None => Answer::error(StatusCode::NOT_FOUND, "RESOURCE_NOT_EXISTS", "退款单不存在"),
        Some((t, r)) => Answer::ok(refund_json(t, r)),
    }
}

// ---------------------------------------------------------------------------------------------
// Trade bill

/// Header of the `ALL` trade bill.
pub const BILL_HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";
/// Header of the summary that ends every trade bill.
pub const BILL_SUMMARY_HEADER: &str =
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额";

/// One bill line: every field prefixed with a backtick (so spreadsheets keep long numbers as
/// text, and readers split on `` ,` ``); a backtick or a line break inside a field would break
/// the format, so it becomes a space.
fn bill_line<S: AsRef<str>>(fields: &[S]) -> String {
    fields
        .iter()
        .map(|f| format!("`{}", f.as_ref().replace(['`', '\r', '\n'], " ")))
        .collect::<Vec<_>>()
        .join(",")
}

/// One line of a bill and the amounts (fen) the summary adds up: 应结订单金额, 退款金额,
/// 手续费, 订单金额, 申请退款金额.
struct BillRow {
    at_ms: i64,
    line: String,
    settled: i64,
    refunded: i64,
    fee: i64,
    ordered: i64,
    refund_asked: i64,
}

/// The line of `t`'s payment (`refund` none) or of one of its refunds, at `at_ms`.
fn bill_row(
    cfg: &WechatSandboxConfig,
    t: &WechatTrade,
    at_ms: i64,
    refund: Option<&WechatRefund>,
) -> BillRow {
    let (state, refund_id, out_refund_no, refund_type, refund_status) = match refund {
        None => ("SUCCESS", "0", "0", "", ""),
        Some(r) => (
            "REFUND",
            r.refund_id.as_str(),
            r.out_refund_no.as_str(),
            "ORIGINAL",
            match r.status {
                SandboxRefundStatus::Processing => "PROCESSING",
                SandboxRefundStatus::Success => "SUCCESS",
            },
        ),
    };
    let row = match refund {
        None => BillRow {
            at_ms,
            line: String::new(),
            settled: t.paid,
            refunded: 0,
            fee: fee(t.paid),
            ordered: t.paid,
            refund_asked: 0,
        },
        // The fee on the refunded part comes back.
        Some(r) => BillRow {
            at_ms,
            line: String::new(),
            settled: 0,
            refunded: r.amount,
            fee: -fee(r.amount),
            ordered: 0,
            refund_asked: r.amount,
        },
    };
    let time = beijing_time(at_ms).format("%Y-%m-%d %H:%M:%S").to_string();
    let [settled, zero, refunded, fee, ordered, refund_asked] = [
        yuan(row.settled),
        yuan(0),
        yuan(row.refunded),
        fee_text(row.fee),
        yuan(row.ordered),
        yuan(row.refund_asked),
    ];
    let fields: [&str; 27] = [
        &time,
        &cfg.appid,
        &cfg.mchid,
        "0",
        "",
        &t.transaction_id,
        &t.out_trade_no,
        PAYER_OPENID,
        "NATIVE",
        state,
        "OTHERS",
        wire::CURRENCY_CNY,
        &settled,
        &zero,
        refund_id,
        out_refund_no,
        &refunded,
        &zero,
        refund_type,
        refund_status,
        &t.description,
        "",
        &fee,
        FEE_RATE_TEXT,
        &ordered,
        &refund_asked,
        "",
    ];
    BillRow {
        line: bill_line(&fields),
        ..row
    }
}

/// The `ALL` bill of `date` (Beijing), or `None` when that day has no line. The statement
/// knobs plant differences in payment lines (omitted, another amount or fee, `REVOKED` for a
/// `Closed` status, moved to the next day) and add lines of trades nobody has.
fn trade_bill(inner: &Inner, date: NaiveDate) -> Option<String> {
    let planted = inner.knobs().statement;
    let on_date = |ms: &i64| beijing_time(*ms).date_naive() == date;
    let mut rows: Vec<BillRow> = Vec::new();
    {
        let trades = inner.trades.lock().expect("sandbox lock");
        for t in trades.values() {
            let no = &t.out_trade_no;
            let paid_at = t.paid_at_ms.map(|at| {
                if planted.next_day.contains(no) {
                    let next = beijing_time(at).date_naive() + chrono::Days::new(1);
                    payflow_activities::recon::compare::day_window(next).0
                } else {
                    at
                }
            });
            if let Some(at) = paid_at.filter(on_date)
                && !planted.omit.contains(no)
            {
                let mut planted_trade = t.clone();
                if let Some(amount) = planted.amount.get(no).and_then(|a| fen_of(*a)) {
                    planted_trade.paid = amount;
                }
                let mut row = bill_row(&inner.cfg, &planted_trade, at, None);
                let mut fields: Vec<String> = row
                    .line
                    .strip_prefix('`')
                    .unwrap_or(&row.line)
                    .split(",`")
                    .map(str::to_string)
                    .collect();
                // The fee on what was paid, whatever amount the line shows, unless planted.
                row.fee = planted
                    .fee
                    .get(no)
                    .and_then(|f| fen_of(*f))
                    .unwrap_or_else(|| fee(t.paid));
                fields[22] = fee_text(row.fee);
                if planted.status.get(no) == Some(&SandboxStatus::Closed) {
                    fields[9] = "REVOKED".into();
                }
                row.line = bill_line(&fields);
                rows.push(row);
            }
            for r in &t.refunds {
                if on_date(&r.created_at_ms) {
                    rows.push(bill_row(&inner.cfg, t, r.created_at_ms, Some(r)));
                }
            }
        }
    }
    for x in planted.extra.iter().filter(|x| on_date(&x.paid_at_ms)) {
        let Some(paid) = fen_of(x.amount) else {
            continue;
        };
        let ghost = WechatTrade {
            out_trade_no: x.out_trade_no.clone(),
            transaction_id: x.trade_no.clone(),
            code_url: String::new(),
            description: "unknown".into(),
            total: paid,
            paid,
            status: SandboxStatus::Success,
            time_expire: None,
            paid_at_ms: Some(x.paid_at_ms),
            notify_mode: NotifyMode::Never,
            notify_url: String::new(),
            notifications_sent: 0,
            acknowledged: false,
            pay_after_close: None,
            refunds: Vec::new(),
        };
        rows.push(bill_row(&inner.cfg, &ghost, x.paid_at_ms, None));
    }
    if rows.is_empty() {
        return None;
    }
    rows.sort_by(|a, b| (a.at_ms, &a.line).cmp(&(b.at_ms, &b.line)));
    let sum = |pick: fn(&BillRow) -> i64| -> i64 { rows.iter().map(pick).sum() };
    let summary = bill_line(&[
        rows.len().to_string(),
        yuan(sum(|r| r.settled)),
        yuan(sum(|r| r.refunded)),
        yuan(0),
        fee_text(sum(|r| r.fee)),
        yuan(sum(|r| r.ordered)),
        yuan(sum(|r| r.refund_asked)),
    ]);
    let mut text = String::new();
    for line in std::iter::once(BILL_HEADER.to_string())
        .chain(rows.into_iter().map(|r| r.line))
        .chain([BILL_SUMMARY_HEADER.to_string(), summary])
    {
        text.push_str(&line);
        text.push_str("\r\n");
    }
    Some(text)
}

fn tradebill_answer(inner: &Arc<Inner>, r: &Received) -> Answer {
    let Some(date) = r
        .query_param("bill_date")
        .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
    else {
        return Answer::param_error("bill_date must be YYYY-MM-DD");
    };
    if r.query_param("bill_type")
        .is_some_and(|t| t != wire::BILL_TYPE_ALL)
    {
        return Answer::param_error("the sandbox serves bill_type ALL only");
    }
    if r.query_param("tar_type").is_some() {
        return Answer::param_error("the sandbox serves uncompressed bills only");
    }
    // Not generated yet (held by a knob, or a day not begun): ask again later.
    let creating = {
        let mut knobs = inner.knobs.lock().expect("sandbox lock");
        let last_day = beijing_time(now_ms()).date_naive()
            + chrono::Days::new(u64::from(knobs.statement.days_ahead));
        let held = knobs.statement.not_ready_times > 0;
        if held {
            knobs.statement.not_ready_times -= 1;
        }
        held || knobs.statement_pending || date > last_day
    };
    if creating {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            wire::CODE_STATEMENT_CREATING,
            "账单生成中",
        );
    }
    // A day without any trade has no bill, and never will.
    let Some(bill) = trade_bill(inner, date) else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            wire::CODE_NO_STATEMENT_EXIST,
            "账单文件不存在",
        );
    };
    // The statement lives on this server, under the name the caller reached it by.
    let host = r
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| inner.addr.to_string(), str::to_string);
    let token = random_text(48);
    let hash = sha1_hex(bill.as_bytes());
    inner
        .bills
        .lock()
        .expect("sandbox lock")
        .insert(token.clone(), bill);
    Answer::ok(json!({
        "hash_type": "SHA1",
        "hash_value": hash,
        "download_url": format!("http://{host}{PATH_BILL_DOWNLOAD}?token={token}"),
    }))
}

fn bill_download_answer(inner: &Arc<Inner>, r: &Received) -> Answer {
    let bill = r
        .query_param("token")
        .and_then(|t| inner.bills.lock().expect("sandbox lock").get(&t).cloned());
    match bill {
        Some(text) => Answer {
            status: StatusCode::OK,
            body: Body::File(text),
        },
        None => Answer::error(
            StatusCode::NOT_FOUND,
            "RESOURCE_NOT_EXISTS",
            "no bill for this token",
        ),
    }
}

/// SHA-1 as lowercase hex: the `hash_value` of a bill (what WeChat's `hash_type` SHA1 names).
/// Integrity of a download, not a security boundary (the answer carrying it is signed).
fn sha1_hex(data: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    //! The real WeChat Pay adapter against this sandbox over loopback HTTP, and requests made by
    //! hand to check what the sandbox refuses. Waits are on conditions, never fixed sleeps.

    use std::collections::BTreeMap;
    use std::sync::OnceLock;

    use payflow_activities::channels::wechat::{ApiV3Key, WechatChannel, WechatConfig};
    use payflow_activities::channels::{
        Channel, ChannelError, CloseOutcome, PrecreateRequest, RefundRequest, RefundState,
        StatementUrl, TradeState,
    };
    use payflow_client::{Currency, Money};

    use super::*;

    const APPID: &str = "wx0000000000000001";
    const MCHID: &str = "1900000001";
    const MERCHANT_SERIAL: &str = "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C";
    const PLATFORM_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
    const API_V3_KEY: &str = "0123456789abcdefghijklmnopqrstuv";
    const WAIT: Duration = Duration::from_secs(10);
    /// Nothing listens there: notifications to it fail at once.
    const NOWHERE: &str = "http://127.0.0.1:9/channels/wechat/notify";

    /// Our merchant key and the platform key, generated once (RSA keygen is slow).
    fn keys() -> &'static (RsaSigner, RsaSigner) {
        static KEYS: OnceLock<(RsaSigner, RsaSigner)> = OnceLock::new();
        KEYS.get_or_init(|| {
            let (merchant, _) = RsaSigner::generate().expect("merchant key");
            let (platform, _) = RsaSigner::generate().expect("platform key");
            (merchant, platform)
        })
    }

    struct Rig {
        sandbox: WechatSandboxHandle,
        channel: Arc<WechatChannel>,
    }

    async fn rig(knobs: Knobs, notify_retry: Vec<Duration>) -> Rig {
        let (merchant, platform) = keys();
        let sandbox = spawn(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            WechatSandboxConfig {
                appid: APPID.into(),
                mchid: MCHID.into(),
                merchant_serial_no: MERCHANT_SERIAL.into(),
                merchant_public_key: merchant.verifier(),
                platform_signer: platform.clone(),
                platform_serial: PLATFORM_SERIAL.into(),
                api_v3_key: api_v3_key(API_V3_KEY).unwrap(),
                knobs,
                notify_retry,
            },
        )
        .await
        .unwrap();
        let channel = WechatChannel::new(WechatConfig {
            name: "wechat".into(),
            base_url: sandbox.base_url().parse().unwrap(),
            mchid: MCHID.into(),
            appid: APPID.into(),
            merchant_serial_no: MERCHANT_SERIAL.into(),
            merchant_private_key: merchant.clone(),
            platform_keys: vec![(PLATFORM_SERIAL.into(), platform.verifier())],
            api_v3_key: ApiV3Key::from_text(API_V3_KEY).unwrap(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        })
        .unwrap();
        Rig {
            sandbox,
            channel: Arc::new(channel),
        }
    }

    fn cny(text: &str) -> Money {
        Money::parse(text, Currency::Cny).unwrap()
    }

    fn prepay(no: &str, amount: &str, notify_url: &str) -> PrecreateRequest {
        PrecreateRequest {
            out_trade_no: no.into(),
            amount: cny(amount),
            subject: "Green tea, large".into(),
            notify_url: notify_url.into(),
            expires_at_ms: now_ms() + 900_000,
        }
    }

    fn refund(no: &str, refund_no: &str, amount: &str) -> RefundRequest {
        RefundRequest {
            out_trade_no: no.into(),
            out_request_no: refund_no.into(),
            amount: cny(amount),
            reason: "returned".into(),
        }
    }

    /// Sends a request with the given `Authorization` (none when `None`).
    async fn send(
        method: reqwest::Method,
        url: &str,
        authorization: Option<String>,
        body: &str,
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new().request(method, url);
        if let Some(a) = authorization {
            request = request.header("Authorization", a);
        }
        if !body.is_empty() {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        request.send().await.unwrap()
    }

    /// An `Authorization` for `method url body` signed by `signer` as merchant `mchid` with
    /// certificate `serial`, at `timestamp`.
    fn authorization(
        signer: &RsaSigner,
        mchid: &str,
        serial: &str,
        method: &str,
        url: &str,
        timestamp: i64,
        body: &str,
    ) -> String {
        let u = url::Url::parse(url).unwrap();
        let path_and_query = match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        };
        sign::authorization(
            mchid,
            serial,
            signer,
            method,
            &path_and_query,
            timestamp,
            &sign::nonce(),
            body,
        )
        .unwrap()
    }

    fn ours(method: &str, url: &str, body: &str) -> String {
        authorization(
            &keys().0,
            MCHID,
            MERCHANT_SERIAL,
            method,
            url,
            now_secs(),
            body,
        )
    }

    /// The answer's platform signature verifies; returns its status and body.
    async fn verified(resp: reqwest::Response) -> (u16, String) {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap();
        let signed = sign::SignatureHeaders::read(|n| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap()
        .expect("a signed answer");
        let platform_keys = vec![(PLATFORM_SERIAL.to_string(), keys().1.verifier())];
        sign::verify(&signed, &body, &platform_keys, now_secs()).expect("platform signature");
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn the_adapter_and_the_sandbox_speak_the_same_protocol() {
        let knobs = Knobs {
            notify: NotifyMode::Never,
            ..Knobs::default()
        };
        let Rig { sandbox, channel } = rig(knobs, vec![]).await;
        let unknown = channel.query("T0000000").await.unwrap();
        assert_eq!(unknown.state, TradeState::NotFound);

        let first = channel
            .precreate(&prepay("T1000001", "12.34", NOWHERE))
            .await
            .unwrap();
        assert!(
            first.qr_code.starts_with("weixin://wxpay/bizpayurl?pr="),
            "{first:?}"
        );
        // The same order again: the same code_url; other details: refused.
        let again = channel
            .precreate(&prepay("T1000001", "12.34", NOWHERE))
            .await
            .unwrap();
        assert_eq!(again, first);
        let changed = channel
            .precreate(&prepay("T1000001", "12.35", NOWHERE))
            .await;
        assert!(
            matches!(&changed, Err(ChannelError::Declined { code, .. }) if code == "OUT_TRADE_NO_USED"),
            "{changed:?}"
        );
        assert_eq!(sandbox.calls(op::NATIVE), 3);
        let trade = sandbox.trade("T1000001").unwrap();
        assert_eq!(
            (trade.total, trade.description.as_str()),
            (1234, "Green tea, large")
        );
        assert!(
            trade
                .time_expire
                .as_deref()
                .is_some_and(|t| t.ends_with("+08:00"))
        );

        let waiting = channel.query("T1000001").await.unwrap();
        assert_eq!(waiting.state, TradeState::WaitingForPayment);
        assert_eq!(waiting.channel_trade_no, None);

        assert!(sandbox.pay("T1000001"));
        let paid = channel.query("T1000001").await.unwrap();
        assert_eq!(paid.state, TradeState::Paid);
        assert_eq!(paid.paid_amount, Some(cny("12.34")));
        assert_eq!(
            paid.channel_trade_no.as_deref(),
            Some(trade.transaction_id.as_str())
        );
        assert_eq!(trade.transaction_id.len(), 28);
        assert_eq!(
            channel.close("T1000001").await.unwrap(),
            CloseOutcome::AlreadyPaid
        );

        // Refunds: idempotent by out_refund_no, never above what was paid.
        let r1 = channel
            .refund(&refund("T1000001", "R1", "2.34"))
            .await
            .unwrap();
        assert_eq!(r1.state, RefundState::Succeeded);
        assert_eq!(r1.refunded_amount, Some(cny("2.34")));
        assert_eq!(sandbox.trade("T1000001").unwrap().trade_state(), "REFUND");
        assert_eq!(
            channel.query("T1000001").await.unwrap().state,
            TradeState::Paid,
            "a refunded trade was paid"
        );
        let repeat = channel
            .refund(&refund("T1000001", "R1", "2.34"))
            .await
            .unwrap();
        assert_eq!(repeat, r1);
        assert_eq!(sandbox.refund("R1").unwrap().requests, 2);
        assert_eq!(sandbox.trade("T1000001").unwrap().refunded(), 234);
        let over = channel
            .refund(&refund("T1000001", "R2", "10.01"))
            .await
            .unwrap();
        assert!(
            matches!(&over.state, RefundState::Failed { code, .. } if code == "INVALID_REQUEST"),
            "{over:?}"
        );
        assert!(sandbox.refund("R2").is_none());
        assert_eq!(
            channel.query_refund("T1000001", "R1").await.unwrap().state,
            RefundState::Succeeded
        );
        assert_eq!(
            channel.query_refund("T1000001", "R9").await.unwrap().state,
            RefundState::NotFound
        );

        // An unpaid trade closes (twice is fine) and can no longer be paid.
        channel
            .precreate(&prepay("T1000002", "1.00", NOWHERE))
            .await
            .unwrap();
        assert_eq!(
            channel.close("T1000002").await.unwrap(),
            CloseOutcome::Closed
        );
        assert_eq!(
            channel.close("T1000002").await.unwrap(),
            CloseOutcome::Closed
        );
        assert_eq!(
            channel.query("T1000002").await.unwrap().state,
            TradeState::Closed
        );
        assert!(!sandbox.pay("T1000002"));
        let not_paid = channel
            .refund(&refund("T1000002", "R3", "1.00"))
            .await
            .unwrap();
        assert!(
            matches!(not_paid.state, RefundState::Failed { .. }),
            "{not_paid:?}"
        );
        assert_eq!(
            sandbox.sign_errors(),
            0,
            "every request of the adapter verified"
        );
    }

    #[tokio::test]
    async fn requests_that_do_not_verify_are_refused_with_sign_error() {
        let Rig { sandbox, .. } = rig(Knobs::default(), vec![]).await;
        let url = format!("{}{}", sandbox.base_url(), wire::PATH_NATIVE);
        let body = json!({
            "appid": APPID, "mchid": MCHID, "description": "tea", "out_trade_no": "T2000001",
            "notify_url": NOWHERE, "amount": {"total": 100, "currency": "CNY"},
        })
        .to_string();
        let good = ours("POST", &url, &body);
        let (merchant, platform) = keys();
        let old = now_secs() - 10 * 60;
        let refused = [
            // Signed for another body (the amount changed on the way).
            (Some(good.clone()), body.replace("100", "1")),
            (None, body.clone()),
            (
                Some(good.replace(AUTH_SCHEMA_FOR_TEST, "WECHATPAY2-SHA256-RSA1024")),
                body.clone(),
            ),
            // Signed with a key that is not the merchant's.
            (
                Some(authorization(
                    platform,
                    MCHID,
                    MERCHANT_SERIAL,
                    "POST",
                    &url,
                    now_secs(),
                    &body,
                )),
                body.clone(),
            ),
            (
                Some(authorization(
                    merchant,
                    "1900000002",
                    MERCHANT_SERIAL,
                    "POST",
                    &url,
                    now_secs(),
                    &body,
                )),
                body.clone(),
            ),
            (
                Some(authorization(
                    merchant,
                    MCHID,
                    PLATFORM_SERIAL,
                    "POST",
                    &url,
                    now_secs(),
                    &body,
                )),
                body.clone(),
            ),
            (
                Some(authorization(
                    merchant,
                    MCHID,
                    MERCHANT_SERIAL,
                    "POST",
                    &url,
                    old,
                    &body,
                )),
                body.clone(),
            ),
        ];
        let count = refused.len() as u64;
        for (authorization, body) in refused {
            let resp = send(reqwest::Method::POST, &url, authorization.clone(), &body).await;
            let (status, text) = verified(resp).await;
            assert_eq!(status, 401, "{authorization:?}: {text}");
            let error: wire::ErrorBody = serde_json::from_str(&text).unwrap();
            assert_eq!(error.code, "SIGN_ERROR", "{text}");
            assert!(!error.message.is_empty());
        }
        assert_eq!(sandbox.sign_errors(), count);
        assert!(sandbox.trade("T2000001").is_none(), "nothing created");
        // The same request, signed right, goes through; so does a GET signed over its query.
        let (status, text) =
            verified(send(reqwest::Method::POST, &url, Some(good), &body).await).await;
        assert_eq!(status, 200, "{text}");
        let query = format!(
            "{}{}/T2000001?mchid={MCHID}",
            sandbox.base_url(),
            wire::PATH_BY_OUT_TRADE_NO
        );
        let signed = ours("GET", &query, "");
        let (status, text) =
            verified(send(reqwest::Method::GET, &query, Some(signed.clone()), "").await).await;
        assert_eq!(status, 200, "{text}");
        let tx: wire::Transaction = serde_json::from_str(&text).unwrap();
        assert_eq!(tx.trade_state.as_deref(), Some("NOTPAY"));
        // The query string is signed too.
        let other = query.replace(MCHID, "1900000002");
        let (status, _) =
            verified(send(reqwest::Method::GET, &other, Some(signed), "").await).await;
        assert_eq!(status, 401);
        assert_eq!(sandbox.sign_errors(), count + 1);
    }

    const AUTH_SCHEMA_FOR_TEST: &str = sign::AUTH_SCHEMA;

    /// A merchant endpoint that checks notifications with the adapter and refuses the first.
    /// What a receiver made of each notification it got.
    type Verdicts = Arc<Mutex<Vec<Result<payflow_activities::channels::VerifiedNotice, String>>>>;

    async fn receiver(channel: Arc<WechatChannel>) -> (String, Verdicts) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = got.clone();
        let app = Router::new().route(
            "/notify",
            post(move |headers: HeaderMap, body: Bytes| {
                let channel = channel.clone();
                let seen = seen.clone();
                async move {
                    let map: BTreeMap<String, String> = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                        .collect();
                    let verdict = channel
                        .verify_notice_http(&map, &body)
                        .map_err(|e| e.to_string());
                    let mut seen = seen.lock().unwrap();
                    seen.push(verdict);
                    if seen.len() == 1 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, got)
    }

    #[tokio::test]
    async fn a_paid_trade_is_notified_encrypted_and_signed_until_acknowledged() {
        let Rig { sandbox, channel } =
            rig(Knobs::default(), vec![Duration::from_millis(20); 3]).await;
        let (url, got) = receiver(channel.clone()).await;
        channel
            .precreate(&prepay("T3000001", "12.34", &url))
            .await
            .unwrap();
        assert!(sandbox.pay("T3000001"));
        let trade = sandbox
            .wait_for("T3000001", WAIT, |t| t.acknowledged)
            .await
            .expect("acknowledged");
        assert_eq!(trade.notifications_sent, 2, "refused once, re-posted");
        let got = got.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        let notices: Vec<_> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            notices[0].notify_id, notices[1].notify_id,
            "one notification, re-posted"
        );
        assert_eq!(notices[0].out_trade_no, "T3000001");
        assert_eq!(notices[0].trade_status, "SUCCESS");
        assert_eq!(notices[0].total_amount.as_deref(), Some("12.34"));
        assert_eq!(
            notices[0].channel_trade_no.as_deref(),
            Some(trade.transaction_id.as_str())
        );

        // What a test can replay: verifies as posted, and not once tampered with.
        let n = sandbox.notification("T3000001", "EV-replay").unwrap();
        let headers: BTreeMap<String, String> = n.headers.iter().cloned().collect();
        let notice = channel.verify_notice_http(&headers, &n.body).unwrap();
        assert_eq!(notice.notify_id, "EV-replay");
        let envelope: wire::Notification = serde_json::from_slice(&n.body).unwrap();
        assert_eq!(envelope.event_type, "TRANSACTION.SUCCESS");
        assert_eq!(
            envelope.resource.algorithm,
            wire::ALGORITHM_AEAD_AES_256_GCM
        );
        assert!(
            !String::from_utf8_lossy(&n.body).contains("T3000001"),
            "encrypted"
        );
        let mut tampered = n.body.clone();
        let at = tampered.iter().position(|b| *b == b'R').unwrap();
        tampered[at] = b'r';
        assert!(channel.verify_notice_http(&headers, &tampered).is_err());
        assert!(sandbox.notification("T0000009", "EV-x").is_none());
    }

    #[tokio::test]
    async fn knobs_shape_refunds_errors_and_late_payments() {
        let knobs = Knobs {
            notify: NotifyMode::Never,
            refund_processing_ms: Some(100),
            paid_amount: Some("9.99".into()),
            ..Knobs::default()
        };
        let Rig { sandbox, channel } = rig(knobs, vec![]).await;
        channel
            .precreate(&prepay("T4000001", "10.00", NOWHERE))
            .await
            .unwrap();
        sandbox.pay("T4000001");
        // The customer paid another amount: the channel says so.
        let paid = channel.query("T4000001").await.unwrap();
        assert_eq!(paid.paid_amount, Some(cny("9.99")));

        let processing = channel
            .refund(&refund("T4000001", "R40", "1.00"))
            .await
            .unwrap();
        assert_eq!(processing.state, RefundState::Processing);
        assert!(
            sandbox
                .wait_until(WAIT, |s| s
                    .refund("R40")
                    .is_some_and(|r| r.status == SandboxRefundStatus::Success))
                .await
        );
        let done = channel.query_refund("T4000001", "R40").await.unwrap();
        assert_eq!(done.state, RefundState::Succeeded);
        assert_eq!(done.refunded_amount, Some(cny("1.00")));

        sandbox.update_knobs(|k| {
            k.refund_decline = Some(("NOT_ENOUGH".into(), "基本账户余额不足".into()));
        });
        let declined = channel
            .refund(&refund("T4000001", "R41", "1.00"))
            .await
            .unwrap();
        assert!(
            matches!(&declined.state, RefundState::Failed { code, .. } if code == "NOT_ENOUGH"),
            "{declined:?}"
        );

        sandbox.update_knobs(|k| k.server_errors = 1);
        let busy = channel.query("T4000001").await;
        assert!(matches!(busy, Err(ChannelError::Transient(_))), "{busy:?}");
        assert!(channel.query("T4000001").await.is_ok());

        sandbox.update_knobs(|k| {
            k.decline_precreate = Some(("NO_AUTH".into(), "商户无权限".into()));
        });
        let refused = channel
            .precreate(&prepay("T4000002", "1.00", NOWHERE))
            .await;
        assert!(
            matches!(&refused, Err(ChannelError::Declined { code, .. }) if code == "NO_AUTH"),
            "{refused:?}"
        );

        // Paid after we closed it: the trade reads paid again.
        sandbox.set_knobs(Knobs {
            notify: NotifyMode::Never,
            pay_after_close_ms: Some(50),
            ..Knobs::default()
        });
        channel
            .precreate(&prepay("T4000003", "3.00", NOWHERE))
            .await
            .unwrap();
        assert_eq!(
            channel.close("T4000003").await.unwrap(),
            CloseOutcome::Closed
        );
        sandbox
            .wait_for("T4000003", WAIT, |t| t.status == SandboxStatus::Success)
            .await
            .expect("late payment");
        assert_eq!(
            channel.query("T4000003").await.unwrap().state,
            TradeState::Paid
        );

        // A hung query proceeds once released.
        sandbox.update_knobs(|k| k.hang_methods = vec![op::QUERY.into()]);
        let before = sandbox.calls(op::QUERY);
        let hung = tokio::spawn({
            let channel = channel.clone();
            async move { channel.query("T4000003").await }
        });
        assert!(
            sandbox
                .wait_until(WAIT, |s| s.calls(op::QUERY) > before)
                .await
        );
        assert!(!hung.is_finished());
        sandbox.update_knobs(|k| k.hang_methods.clear());
        assert_eq!(hung.await.unwrap().unwrap().state, TradeState::Paid);
    }

    #[tokio::test]
    async fn the_trade_bill_has_wechat_pay_s_format() {
        let knobs = Knobs {
            notify: NotifyMode::Never,
            ..Knobs::default()
        };
        let Rig { sandbox, channel } = rig(knobs, vec![]).await;
        let today = beijing_time(now_ms()).date_naive();
        // No trade today yet: no bill, and none to wait for (an empty statement).
        assert_eq!(
            channel.statement_url(today).await.unwrap(),
            StatementUrl::Empty
        );
        channel
            .precreate(&prepay("T5000001", "12.34", NOWHERE))
            .await
            .unwrap();
        sandbox.pay("T5000001");
        channel
            .refund(&refund("T5000001", "R50", "2.34"))
            .await
            .unwrap();

        let url = format!(
            "{}{}?bill_date={}&bill_type=ALL",
            sandbox.base_url(),
            wire::PATH_TRADEBILL,
            today.format("%Y-%m-%d")
        );
        let (status, text) =
            verified(send(reqwest::Method::GET, &url, Some(ours("GET", &url, "")), "").await).await;
        assert_eq!(status, 200, "{text}");
        let answer: wire::TradeBillResponse = serde_json::from_str(&text).unwrap();
        assert_eq!(answer.hash_type.as_deref(), Some("SHA1"));
        let download = answer.download_url.unwrap();
        assert!(
            download.contains("/v3/billdownload/file?token="),
            "{download}"
        );
        // The adapter finds it too.
        assert!(matches!(
            channel.statement_url(today).await.unwrap(),
            StatementUrl::Ready(u) if u.contains("/v3/billdownload/file?token=")
        ));

        // The download is a signed GET too.
        let unsigned = send(reqwest::Method::GET, &download, None, "").await;
        assert_eq!(unsigned.status().as_u16(), 401);
        let resp = send(
            reqwest::Method::GET,
            &download,
            Some(ours("GET", &download, "")),
            "",
        )
        .await;
        assert_eq!(resp.status().as_u16(), 200);
        let bill = resp.text().await.unwrap();
        assert_eq!(Some(sha1_hex(bill.as_bytes())), answer.hash_value);
        let lines: Vec<&str> = bill.split("\r\n").collect();
        assert_eq!(lines.len(), 6, "{bill}");
        assert_eq!(lines[0], BILL_HEADER);
        assert_eq!(lines[5], "", "every line ends in CRLF");
        let trade = sandbox.trade("T5000001").unwrap();
        let r50 = sandbox.refund("R50").unwrap();
        let fields = |line: &str| -> Vec<String> {
            let fields: Vec<String> = line
                .strip_prefix('`')
                .expect("backtick-prefixed")
                .split(",`")
                .map(str::to_string)
                .collect();
            fields
        };
        let header_len = BILL_HEADER.split(',').count();
        let pay = fields(lines[1]);
        assert_eq!(pay.len(), header_len);
        assert_eq!(
            &pay[1..13],
            [
                APPID,
                MCHID,
                "0",
                "",
                &trade.transaction_id,
                "T5000001",
                PAYER_OPENID,
                "NATIVE",
                "SUCCESS",
                "OTHERS",
                "CNY",
                "12.34"
            ]
        );
        // A comma stays inside its field.
        assert_eq!(pay[20], "Green tea, large");
        assert_eq!(&pay[22..26], ["0.07000", "0.60%", "12.34", "0.00"]);
        let back = fields(lines[2]);
        assert_eq!(back.len(), header_len);
        assert_eq!(
            &back[9..20],
            [
                "REFUND",
                "OTHERS",
                "CNY",
                "0.00",
                "0.00",
                &r50.refund_id,
                "R50",
                "2.34",
                "0.00",
                "ORIGINAL",
                "SUCCESS"
            ]
        );
        assert_eq!(&back[22..26], ["-0.01000", "0.60%", "0.00", "2.34"]);
        assert_eq!(lines[3], BILL_SUMMARY_HEADER);
        assert_eq!(lines[4], "`2,`12.34,`2.34,`0.00,`0.06000,`12.34,`2.34");

        // A refund still processing is on the bill of the day it was accepted, as processing.
        sandbox.update_knobs(|k| k.refund_processing_ms = Some(600_000));
        channel
            .refund(&refund("T5000001", "R51", "1.00"))
            .await
            .unwrap();
        let StatementUrl::Ready(again) = channel.statement_url(today).await.unwrap() else {
            panic!("no bill");
        };
        let resp = send(
            reqwest::Method::GET,
            &again,
            Some(ours("GET", &again, "")),
            "",
        )
        .await;
        let bill = resp.text().await.unwrap();
        let lines: Vec<&str> = bill.split("\r\n").collect();
        assert_eq!(lines.len(), 7, "{bill}");
        assert_eq!(
            &fields(lines[3])[15..20],
            ["R51", "1.00", "0.00", "ORIGINAL", "PROCESSING"]
        );
        assert_eq!(lines[5], "`3,`12.34,`3.34,`0.00,`0.05000,`12.34,`3.34");

        // Tomorrow, or while a knob holds bills back: not generated yet. A day without
        // trades: no bill at all.
        assert_eq!(
            channel
                .statement_url(today.succ_opt().unwrap())
                .await
                .unwrap(),
            StatementUrl::NotReady
        );
        assert_eq!(
            channel
                .statement_url(today.pred_opt().unwrap())
                .await
                .unwrap(),
            StatementUrl::Empty
        );
        sandbox.update_knobs(|k| k.statement.not_ready_times = 1);
        assert_eq!(
            channel.statement_url(today).await.unwrap(),
            StatementUrl::NotReady
        );
        assert!(matches!(
            channel.statement_url(today).await.unwrap(),
            StatementUrl::Ready(_)
        ));
        sandbox.update_knobs(|k| k.statement_pending = true);
        assert_eq!(
            channel.statement_url(today).await.unwrap(),
            StatementUrl::NotReady
        );
    }

    /// The statement knobs plant differences in the bill, which the adapter downloads (a
    /// signed GET, streamed, checked against its SHA-1) and the reconciliation parser reads.
    #[tokio::test]
    async fn statement_knobs_plant_differences_in_the_bill() {
        use payflow_activities::channels::StatementFile;
        use payflow_activities::recon::{LineStatus, StatementParser};

        let knobs = Knobs {
            notify: NotifyMode::Never,
            ..Knobs::default()
        };
        let Rig { sandbox, channel } = rig(knobs, vec![]).await;
        let today = beijing_time(now_ms()).date_naive();
        for (no, amount) in [
            ("T6000001", "10.00"),
            ("T6000002", "20.00"),
            ("T6000003", "30.00"),
            ("T6000004", "40.00"),
            ("T6000005", "50.00"),
        ] {
            channel
                .precreate(&prepay(no, amount, NOWHERE))
                .await
                .unwrap();
            sandbox.pay(no);
        }
        sandbox.update_knobs(|k| {
            k.statement = crate::sandbox::StatementKnobs {
                not_ready_times: 1,
                days_ahead: 1,
                extra: vec![crate::sandbox::ExtraLine {
                    out_trade_no: "ghost".into(),
                    trade_no: "4200009999".into(),
                    amount: Decimal::new(777, 2),
                    paid_at_ms: now_ms(),
                }],
                omit: ["T6000002".to_string()].into(),
                amount: [("T6000003".to_string(), Decimal::new(3100, 2))].into(),
                fee: [("T6000004".to_string(), Decimal::new(99, 2))].into(),
                status: [("T6000005".to_string(), SandboxStatus::Closed)].into(),
                next_day: ["T6000001".to_string()].into(),
            }
        });
        let read = |file: StatementFile| async move {
            let StatementFile::Ready { format, body } = file else {
                panic!("no statement: {file:?}");
            };
            let mut parser = StatementParser::open(format, "wechat", body).await.unwrap();
            let mut lines = Vec::new();
            while let Some(l) = parser.next_line().await.unwrap() {
                lines.push(l);
            }
            lines
        };
        assert!(matches!(
            channel.open_statement(today).await.unwrap(),
            StatementFile::NotReady
        ));
        let lines = read(channel.open_statement(today).await.unwrap()).await;
        let by_order = |no: &str| lines.iter().find(|l| l.order_no == no).cloned();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(by_order("T6000001").is_none() && by_order("T6000002").is_none());
        let amount = by_order("T6000003").unwrap();
        // Another amount; the fee is still the one on what was paid (0.6 % of 30.00).
        assert_eq!(amount.amount, cny("31.00"));
        assert_eq!(amount.fee_minor(), Some(18));
        assert_eq!(by_order("T6000004").unwrap().fee_minor(), Some(99));
        assert_eq!(by_order("T6000005").unwrap().status, LineStatus::Revoked);
        assert_eq!(by_order("ghost").unwrap().amount, cny("7.77"));
        // The cross-day trade is in tomorrow's bill, at its first second.
        let tomorrow = read(
            channel
                .open_statement(today.succ_opt().unwrap())
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(tomorrow.len(), 1);
        assert_eq!(tomorrow[0].order_no, "T6000001");
        assert_eq!(
            tomorrow[0].occurred_at_ms,
            payflow_activities::recon::compare::day_window(today.succ_opt().unwrap()).0
        );
    }

    #[test]
    fn amounts_are_fen() {
        assert_eq!(yuan(1234), "12.34");
        assert_eq!(yuan(5), "0.05");
        assert_eq!(yuan(-27), "-0.27");
        assert_eq!(fee_text(-1), "-0.01000");
        // 0.6 %, half-up to the fen.
        assert_eq!((fee(1234), fee(234), fee(83), fee(84)), (7, 1, 0, 1));
        assert_eq!(yuan_to_fen("12.34"), Some(1234));
        assert_eq!(yuan_to_fen("7"), Some(700));
        for bad in ["0.001", "-1.00", "0", "abc"] {
            assert_eq!(yuan_to_fen(bad), None, "{bad}");
        }
        assert!(api_v3_key(API_V3_KEY).is_ok());
        let err = api_v3_key("short").unwrap_err();
        assert!(!err.contains("short"), "{err}");
    }
}
