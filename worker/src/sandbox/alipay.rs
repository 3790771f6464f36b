//! The sandbox's Alipay gateway: trades (`alipay.trade.precreate`, `.query`, `.close`), refunds
//! (`alipay.trade.refund`, `alipay.trade.fastpay.refund.query`) and transfers
//! (`alipay.fund.trans.uni.transfer`, `alipay.fund.trans.common.query`) and statements
//! (`alipay.data.dataservice.bill.downloadurl.query`, whose address `GET
//! /sandbox/bills/trade/{date}.csv` this server also serves), each in its submodule.

mod bill;
mod payout;
mod refund;
mod trade;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use payflow_activities::channels::alipay::{sign, wire};
use payflow_activities::crypto::rsa_keys::{RsaSigner, RsaVerifier};
use rust_decimal::Decimal;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Clone)]
pub struct SandboxConfig {
    /// The app id we accept and its public key (verifies our requests).
    pub app_id: String,
    pub app_public_key: RsaVerifier,
    /// The sandbox's own signing key (its public half is our `channel_public_key`).
    pub signer: RsaSigner,
    /// Initial behaviour (see [`SandboxHandle::set_knobs`]).
    pub knobs: Knobs,
    /// Waits between notification re-posts until acknowledged with `success`.
    pub notify_retry: Vec<Duration>,
}

/// How the sandbox notifies for a paid order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyMode {
    #[default]
    Once,
    /// Never posts a notification: only a query finds the payment.
    Never,
    /// Posts the same notification twice (same notify id), then a second one with a new id.
    Twice,
}

/// How `alipay.fund.trans.uni.transfer` ends for new payouts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PayoutMode {
    /// Paid at once: `SUCCESS`.
    #[default]
    Succeed,
    /// `DEALING` for this long, then `SUCCESS`.
    Dealing(Duration),
    /// Accepted and failed: status `FAIL`, the query tells `error_code` and `fail_reason`.
    Fail { code: String, reason: String },
    /// Refused outright with this business error (`sub_code`, `sub_msg`); nothing recorded.
    Decline { code: String, message: String },
    /// Paid and recorded, but the answer is HTTP 500: the caller cannot know the outcome.
    AppliedThen5xx,
}

/// Behaviour knobs. Trade knobs apply to orders created from now on (each test has its own
/// sandbox); refund, payout and hang knobs to calls from now on.
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    /// The customer pays this long after precreate; `None`: only when told to.
    pub pay_after: Option<Duration>,
    pub notify: NotifyMode,
    /// The customer pays this amount instead of the order's (a decimal string).
    pub paid_amount: Option<String>,
    /// precreate answers with this business error `(sub_code, sub_msg)`.
    pub decline_precreate: Option<(String, String)>,
    /// The next this-many gateway calls answer HTTP 503.
    pub server_errors: u32,
    /// Refunds answer `fund_change: N` and read as processing in the refund query until this
    /// long after the request, then `REFUND_SUCCESS`.
    pub refund_processing_ms: Option<u64>,
    /// New refunds answer this business error `(sub_code, sub_msg)`, e.g.
    /// `ACQ.SELLER_BALANCE_NOT_ENOUGH`; a repeated `out_request_no` still gets its first answer.
    pub refund_decline: Option<(String, String)>,
    pub payout: PayoutMode,
    /// Transfers above this amount (yuan) are refused with `EXCEED_LIMIT_SM_AMOUNT`.
    pub payout_limit: Option<Decimal>,
    /// When we close an unpaid trade, the sandbox closes it and answers success; this long
    /// later the customer's payment arrives anyway (`TRADE_SUCCESS` in query, and notified):
    /// the late/duplicate payment our side must refund.
    pub pay_after_close_ms: Option<u64>,
    /// Gateway calls of these methods (e.g. `alipay.trade.query`) are accepted and not
    /// answered while they stay listed; clearing the knob lets them proceed.
    pub hang_methods: Vec<String>,
    /// While set, the statement query answers `isp.bill_not_exist` for every day, as Alipay
    /// does until it has generated the day's bill (the morning after); unset (the default), it
    /// serves any day at once, today's trades so far included.
    pub statement_pending: bool,
    /// Differences planted in statements (reconciliation tests); none by default: a day's
    /// statement is then exactly the trades paid that day.
    pub statement: StatementKnobs,
}

/// Differences planted in the statements, for reconciliation tests; read by both sandboxes
/// (each writes its own format). Keys are `out_trade_no`s. Statement knobs apply to statements
/// (and, for `status`, queries) served from now on.
#[derive(Debug, Clone, Default)]
pub struct StatementKnobs {
    /// The next this-many statement queries answer "not generated yet" (Alipay
    /// `isp.bill_not_exist`, WeChat Pay `STATEMENT_CREATING`), then statements are served.
    pub not_ready_times: u32,
    /// Statements are also served for days up to this many days after today (Beijing time),
    /// so a trade moved to the next day's statement can be reconciled the same day.
    pub days_ahead: u32,
    /// Lines of trades the sandbox never had (nor we), each in the statement of its day.
    pub extra: Vec<ExtraLine>,
    /// Trades left out of every statement.
    pub omit: BTreeSet<String>,
    /// A trade's amount (yuan) as its statement line writes it.
    pub amount: BTreeMap<String, Decimal>,
    /// A trade's fee (yuan) as its statement line writes it (else 0.6 % of what was paid).
    pub fee: BTreeMap<String, Decimal>,
    /// A trade's status as the channel has it: in its statement line and (Alipay sandbox) in
    /// its query answers, e.g. `Closed` for a trade the channel refunded or revoked on its own.
    /// (A difference in the statement only would be dismissed by reconciliation, whose
    /// confirming query would find the trade as we have it.)
    pub status: BTreeMap<String, SandboxStatus>,
    /// Trades listed in the statement of the day after the one they were paid (cross-day),
    /// at that day's first second.
    pub next_day: BTreeSet<String>,
}

/// A statement line for a trade nobody has.
#[derive(Debug, Clone)]
pub struct ExtraLine {
    pub out_trade_no: String,
    pub trade_no: String,
    /// Yuan.
    pub amount: Decimal,
    /// When the channel says it was paid (unix ms): the statement it is in.
    pub paid_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxStatus {
    WaitBuyerPay,
    Success,
    /// Closed unpaid, or refunded in full (as Alipay reads it).
    Closed,
}

#[derive(Debug, Clone)]
pub struct SandboxOrder {
    pub out_trade_no: String,
    pub trade_no: String,
    pub total_amount: String,
    /// What the customer paid (differs from `total_amount` only when a knob says so).
    pub paid_amount: String,
    pub status: SandboxStatus,
    /// When the customer paid (unix ms); `None` while unpaid or closed unpaid.
    pub paid_at_ms: Option<i64>,
    pub notify_mode: NotifyMode,
    pub notify_url: Option<String>,
    /// Notification posts made and how many were acknowledged.
    pub notifications_sent: u32,
    pub acknowledged: bool,
    /// The customer pays this long after our close (knob `pay_after_close_ms` at precreate).
    pub pay_after_close: Option<Duration>,
    /// Refunds in the order they were accepted (refused ones leave no record).
    pub refunds: Vec<SandboxRefund>,
}

impl SandboxOrder {
    /// Refunded so far (completed refunds only).
    pub fn refunded(&self) -> Decimal {
        self.refunds
            .iter()
            .filter(|r| r.status == SandboxRefundStatus::Success)
            .map(|r| r.amount)
            .sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxRefundStatus {
    Processing,
    Success,
}

#[derive(Debug, Clone)]
pub struct SandboxRefund {
    pub out_request_no: String,
    pub amount: Decimal,
    pub reason: String,
    pub status: SandboxRefundStatus,
    /// When money moved (unix ms).
    pub refunded_at_ms: Option<i64>,
    /// `alipay.trade.refund` calls with this `out_request_no` (repeats included).
    pub requests: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxPayoutStatus {
    Dealing,
    Success,
    Fail { code: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct SandboxPayout {
    pub out_biz_no: String,
    /// Alipay's transfer order id.
    pub order_id: String,
    pub amount: Decimal,
    pub payee_account: String,
    pub payee_name: String,
    pub remark: String,
    pub status: SandboxPayoutStatus,
    /// How many times money actually left for this `out_biz_no` (never more than 1).
    pub executed: u32,
    /// `alipay.fund.trans.uni.transfer` calls with this `out_biz_no` (repeats included).
    pub submits: u32,
    /// When money left (unix ms).
    pub paid_at_ms: Option<i64>,
}

struct Inner {
    cfg: SandboxConfig,
    /// Where we listen: the statement address's host when a request names none.
    addr: SocketAddr,
    knobs: Mutex<Knobs>,
    /// Gateway calls received, by method (what the channel "saw").
    calls: Mutex<HashMap<String, u32>>,
    orders: Mutex<HashMap<String, SandboxOrder>>,
    payouts: Mutex<HashMap<String, SandboxPayout>>,
    /// Bumped on every change so observers can wait for a condition.
    changed: watch::Sender<u64>,
    http: reqwest::Client,
    /// Source of channel-side ids (trade numbers, transfer orders).
    next_id: Mutex<u64>,
}

impl Inner {
    fn knobs(&self) -> Knobs {
        self.knobs.lock().expect("sandbox lock").clone()
    }

    fn next_id(&self) -> u64 {
        let mut n = self.next_id.lock().expect("sandbox lock");
        *n += 1;
        *n
    }
}

/// A running sandbox: its address, its orders, and a way to wait for them to change.
#[derive(Clone)]
pub struct SandboxHandle {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl SandboxHandle {
    pub fn gateway_url(&self) -> String {
        format!("http://{}/gateway.do", self.addr)
    }

    pub fn order(&self, out_trade_no: &str) -> Option<SandboxOrder> {
        self.inner
            .orders
            .lock()
            .expect("sandbox lock")
            .get(out_trade_no)
            .cloned()
    }

    /// One refund of a trade, by our `out_request_no`.
    pub fn refund(&self, out_trade_no: &str, out_request_no: &str) -> Option<SandboxRefund> {
        self.order(out_trade_no)?
            .refunds
            .into_iter()
            .find(|r| r.out_request_no == out_request_no)
    }

    /// A payout by our `out_biz_no`.
    pub fn payout(&self, out_biz_no: &str) -> Option<SandboxPayout> {
        self.inner
            .payouts
            .lock()
            .expect("sandbox lock")
            .get(out_biz_no)
            .cloned()
    }

    /// How many times money actually left for `out_biz_no` (0 when unknown or not paid).
    pub fn payouts_executed(&self, out_biz_no: &str) -> u32 {
        self.payout(out_biz_no).map_or(0, |p| p.executed)
    }

    /// Changes the behaviour (see [`Knobs`] for what applies to existing orders).
    pub fn set_knobs(&self, knobs: Knobs) {
        *self.inner.knobs.lock().expect("sandbox lock") = knobs;
        // Hung calls re-check their knob.
        bump(&self.inner);
    }

    /// Changes some knobs, keeping the others.
    pub fn update_knobs(&self, f: impl FnOnce(&mut Knobs)) {
        f(&mut self.inner.knobs.lock().expect("sandbox lock"));
        bump(&self.inner);
    }

    pub fn knobs(&self) -> Knobs {
        self.inner.knobs()
    }

    /// How many gateway calls of `method` (e.g. `alipay.trade.precreate`) were received (calls
    /// refused by the `server_errors` knob are not counted; hung ones are).
    pub fn calls(&self, method: &str) -> u32 {
        self.inner
            .calls
            .lock()
            .expect("sandbox lock")
            .get(method)
            .copied()
            .unwrap_or(0)
    }

    /// Marks the order paid now and starts notifying.
    pub fn pay(&self, out_trade_no: &str) -> bool {
        trade::pay(&self.inner, out_trade_no)
    }

    /// Waits until `f` holds for the order, or the deadline passes.
    pub async fn wait_for(
        &self,
        out_trade_no: &str,
        deadline: Duration,
        f: impl Fn(&SandboxOrder) -> bool,
    ) -> Option<SandboxOrder> {
        let mut found = None;
        self.wait_until(deadline, |h| {
            found = h.order(out_trade_no).filter(|o| f(o));
            found.is_some()
        })
        .await;
        found
    }

    /// Waits until `f` holds for the sandbox (orders, refunds, payouts, calls), or the
    /// deadline passes; `true` when it held.
    pub async fn wait_until(
        &self,
        deadline: Duration,
        mut f: impl FnMut(&SandboxHandle) -> bool,
    ) -> bool {
        super::wait_for_change(&self.inner.changed, deadline, || f(self)).await
    }
}

fn bump(inner: &Inner) {
    inner.changed.send_modify(|v| *v += 1);
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Yuan with two decimals, as Alipay writes amounts.
fn yuan(amount: Decimal) -> String {
    let mut a = amount;
    a.rescale(2);
    a.to_string()
}

/// A positive amount in yuan with at most two decimals.
fn parse_yuan(text: &str) -> Option<Decimal> {
    let d: Decimal = text.trim().parse().ok()?;
    (d > Decimal::ZERO && d.normalize().scale() <= 2).then_some(d)
}

/// A business failure node (`40004`).
fn business_failed(sub_code: &str, sub_msg: &str) -> serde_json::Value {
    json!({"code": wire::CODE_BUSINESS_FAILED, "msg": "Business Failed", "sub_code": sub_code, "sub_msg": sub_msg})
}

fn invalid_arguments(sub_code: &str, sub_msg: &str) -> serde_json::Value {
    json!({"code": "40002", "msg": "Invalid Arguments", "sub_code": sub_code, "sub_msg": sub_msg})
}

/// A response node, or a bare HTTP error status instead of a response.
type Answer = Result<serde_json::Value, StatusCode>;

pub async fn spawn(listener: TcpListener, cfg: SandboxConfig) -> std::io::Result<SandboxHandle> {
    payflow_activities::tls::ensure_crypto_provider();
    let addr = listener.local_addr()?;
    let (changed, _) = watch::channel(0);
    let inner = Arc::new(Inner {
        knobs: Mutex::new(cfg.knobs.clone()),
        calls: Mutex::new(HashMap::new()),
        cfg,
        addr,
        orders: Mutex::new(HashMap::new()),
        payouts: Mutex::new(HashMap::new()),
        changed,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?,
        next_id: Mutex::new(0),
    });
    let app = Router::new()
        .route("/gateway.do", post(gateway))
        .route("/sandbox/orders/{out_trade_no}/pay", post(control_pay))
        .route("/sandbox/bills/trade/{file}", get(bill::download))
        .with_state(inner.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "sandbox server stopped");
        }
    });
    Ok(SandboxHandle { addr, inner })
}

async fn control_pay(State(inner): State<Arc<Inner>>, Path(no): Path<String>) -> StatusCode {
    if trade::pay(&inner, &no) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

/// Holds the call while the `hang_methods` knob lists its method.
async fn hang_while_listed(inner: &Inner, method: &str) {
    let mut rx = inner.changed.subscribe();
    loop {
        rx.borrow_and_update();
        if !inner
            .knobs
            .lock()
            .expect("sandbox lock")
            .hang_methods
            .iter()
            .any(|m| m == method)
        {
            return;
        }
        tracing::info!(method, "sandbox: hanging");
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn gateway(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> Response {
    let params: BTreeMap<String, String> = match serde_urlencoded::from_bytes(&body) {
        Ok(p) => p,
        Err(_) => return (StatusCode::BAD_REQUEST, "bad form").into_response(),
    };
    let method = params.get("method").cloned().unwrap_or_default();
    {
        let mut knobs = inner.knobs.lock().expect("sandbox lock");
        if knobs.server_errors > 0 {
            knobs.server_errors -= 1;
            return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
        }
    }
    *inner
        .calls
        .lock()
        .expect("sandbox lock")
        .entry(method.clone())
        .or_default() += 1;
    bump(&inner);
    hang_while_listed(&inner, &method).await;
    let answer: Answer = if params.get("app_id") != Some(&inner.cfg.app_id) {
        Ok(invalid_arguments("isv.invalid-app-id", "invalid app id"))
    } else if sign::verify_request(&params, &inner.cfg.app_public_key).is_err() {
        Ok(invalid_arguments(
            "isv.invalid-signature",
            "invalid signature",
        ))
    } else {
        let biz: serde_json::Value = params
            .get("biz_content")
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(serde_json::Value::Null);
        let out_trade_no = biz["out_trade_no"].as_str().unwrap_or_default().to_string();
        match method.as_str() {
            wire::PRECREATE => Ok(trade::precreate(&inner, &params, &biz, &out_trade_no)),
            wire::QUERY => Ok(trade::query(&inner, &out_trade_no)),
            wire::CLOSE => Ok(trade::close(&inner, &out_trade_no)),
            wire::REFUND => Ok(refund::refund(&inner, &biz)),
            wire::REFUND_QUERY => Ok(refund::query(&inner, &biz)),
            wire::TRANSFER => payout::transfer(&inner, &biz),
            wire::TRANSFER_QUERY => Ok(payout::query(&inner, &biz)),
            wire::BILL_URL_QUERY => {
                // The statement lives on this server, under the name the caller reached it by.
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map_or_else(|| inner.addr.to_string(), str::to_string);
                Ok(bill::url_query(&inner, &biz, &format!("http://{host}")))
            }
            _ => Ok(invalid_arguments("isv.invalid-method", "unknown method")),
        }
    };
    let node = match answer {
        Ok(node) => node,
        Err(status) => return (status, "internal error").into_response(),
    };
    match sign::sign_response(&method, &node, &inner.cfg.signer) {
        Ok(body) => ([("content-type", "application/json;charset=utf-8")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
