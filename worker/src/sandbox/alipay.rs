//! The sandbox's Alipay gateway: `alipay.trade.precreate`, `.query`, `.close`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use payflow_activities::channels::alipay::{sign, wire};
use payflow_activities::crypto::rsa_keys::{RsaSigner, RsaVerifier};
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

/// Behaviour knobs for orders created from now on (each test has its own sandbox).
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxStatus {
    WaitBuyerPay,
    Success,
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
    pub notify_mode: NotifyMode,
    pub notify_url: Option<String>,
    /// Notification posts made and how many were acknowledged.
    pub notifications_sent: u32,
    pub acknowledged: bool,
}

struct Inner {
    cfg: SandboxConfig,
    knobs: Mutex<Knobs>,
    /// Gateway calls answered, by method (what the channel "saw").
    calls: Mutex<HashMap<String, u32>>,
    orders: Mutex<HashMap<String, SandboxOrder>>,
    /// Bumped on every change so observers can wait for a condition.
    changed: watch::Sender<u64>,
    http: reqwest::Client,
    next_trade: Mutex<u64>,
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

    /// Changes how orders created from now on behave.
    pub fn set_knobs(&self, knobs: Knobs) {
        *self.inner.knobs.lock().expect("sandbox lock") = knobs;
    }

    /// How many gateway calls of `method` (e.g. `alipay.trade.precreate`) were answered.
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
        pay(&self.inner, out_trade_no)
    }

    /// Waits until `f` holds for the order, or the deadline passes.
    pub async fn wait_for(
        &self,
        out_trade_no: &str,
        deadline: Duration,
        f: impl Fn(&SandboxOrder) -> bool,
    ) -> Option<SandboxOrder> {
        let mut rx = self.inner.changed.subscribe();
        let check = || self.order(out_trade_no).filter(|o| f(o));
        tokio::time::timeout(deadline, async {
            loop {
                if let Some(o) = check() {
                    return o;
                }
                if rx.changed().await.is_err() {
                    // The sandbox stopped; nothing more will change.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .ok()
    }
}

fn bump(inner: &Inner) {
    inner.changed.send_modify(|v| *v += 1);
}

pub async fn spawn(listener: TcpListener, cfg: SandboxConfig) -> std::io::Result<SandboxHandle> {
    payflow_activities::tls::ensure_crypto_provider();
    let addr = listener.local_addr()?;
    let (changed, _) = watch::channel(0);
    let inner = Arc::new(Inner {
        knobs: Mutex::new(cfg.knobs.clone()),
        calls: Mutex::new(HashMap::new()),
        cfg,
        orders: Mutex::new(HashMap::new()),
        changed,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?,
        next_trade: Mutex::new(0),
    });
    let app = Router::new()
        .route("/gateway.do", post(gateway))
        .route("/sandbox/orders/{out_trade_no}/pay", post(control_pay))
        .with_state(inner.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "sandbox server stopped");
        }
    });
    Ok(SandboxHandle { addr, inner })
}

async fn control_pay(State(inner): State<Arc<Inner>>, Path(no): Path<String>) -> StatusCode {
    if pay(&inner, &no) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

fn pay(inner: &Arc<Inner>, out_trade_no: &str) -> bool {
    let (notify_url, mode) = {
        let mut orders = inner.orders.lock().expect("sandbox lock");
        let Some(o) = orders.get_mut(out_trade_no) else {
            return false;
        };
        if o.status != SandboxStatus::WaitBuyerPay {
            return o.status == SandboxStatus::Success;
        }
        o.status = SandboxStatus::Success;
        (o.notify_url.clone(), o.notify_mode)
    };
    bump(inner);
    tracing::info!(out_trade_no, "sandbox: customer paid");
    let Some(url) = notify_url else {
        return true;
    };
    let id = format!("{}{}", out_trade_no, rand::random::<u32>());
    let ids = match mode {
        NotifyMode::Never => vec![],
        NotifyMode::Once => vec![id],
        // The same notification twice, and another one under a second id.
        NotifyMode::Twice => vec![id.clone(), id, format!("{out_trade_no}-again")],
    };
    for notify_id in ids {
        tokio::spawn(notify_until_acknowledged(
            inner.clone(),
            out_trade_no.to_string(),
            url.clone(),
            notify_id,
        ));
    }
    true
}

/// Posts the signed notification, re-posting on the retry schedule until the answer is
/// exactly `success`.
async fn notify_until_acknowledged(
    inner: Arc<Inner>,
    out_trade_no: String,
    url: String,
    notify_id: String,
) {
    let mut waits = inner.cfg.notify_retry.clone().into_iter();
    loop {
        let Some(order) = inner
            .orders
            .lock()
            .expect("sandbox lock")
            .get(&out_trade_no)
            .cloned()
        else {
            return;
        };
        let mut p = BTreeMap::new();
        let now = chrono::Utc::now().timestamp_millis();
        p.insert("notify_time".to_string(), sign::format_time(now));
        p.insert("notify_type".to_string(), "trade_status_sync".to_string());
        p.insert("notify_id".to_string(), notify_id.clone());
        p.insert("app_id".to_string(), inner.cfg.app_id.clone());
        p.insert("charset".to_string(), "utf-8".to_string());
        p.insert("version".to_string(), "1.0".to_string());
        p.insert("sign_type".to_string(), "RSA2".to_string());
        p.insert("trade_no".to_string(), order.trade_no.clone());
        p.insert("out_trade_no".to_string(), out_trade_no.clone());
        p.insert("trade_status".to_string(), "TRADE_SUCCESS".to_string());
        p.insert("total_amount".to_string(), order.paid_amount.clone());
        p.insert("gmt_payment".to_string(), sign::format_time(now));
        if sign::sign_notify(&mut p, &inner.cfg.signer).is_err() {
            return;
        }
        let acked = match inner.http.post(&url).form(&p).send().await {
            Ok(r) => r.text().await.map(|t| t == "success").unwrap_or(false),
            Err(_) => false,
        };
        if let Some(o) = inner
            .orders
            .lock()
            .expect("sandbox lock")
            .get_mut(&out_trade_no)
        {
            o.notifications_sent += 1;
            o.acknowledged |= acked;
        }
        bump(&inner);
        if acked {
            return;
        }
        match waits.next() {
            Some(w) => tokio::time::sleep(w).await,
            None => return,
        }
    }
}

async fn gateway(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
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
    let fail = |code: &str, msg: &str, sub_code: &str, sub_msg: &str| json!({"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg});
    let node = if params.get("app_id") != Some(&inner.cfg.app_id) {
        fail(
            "40002",
            "Invalid Arguments",
            "isv.invalid-app-id",
            "invalid app id",
        )
    } else if sign::verify_request(&params, &inner.cfg.app_public_key).is_err() {
        fail(
            "40002",
            "Invalid Arguments",
            "isv.invalid-signature",
            "invalid signature",
        )
    } else {
        let biz: serde_json::Value = params
            .get("biz_content")
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(serde_json::Value::Null);
        let out_trade_no = biz["out_trade_no"].as_str().unwrap_or_default().to_string();
        match method.as_str() {
            wire::PRECREATE => precreate(&inner, &params, &biz, &out_trade_no),
            wire::QUERY => query(&inner, &out_trade_no),
            wire::CLOSE => close(&inner, &out_trade_no),
            _ => fail(
                "40002",
                "Invalid Arguments",
                "isv.invalid-method",
                "unknown method",
            ),
        }
    };
    match sign::sign_response(&method, &node, &inner.cfg.signer) {
        Ok(body) => ([("content-type", "application/json;charset=utf-8")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn precreate(
    inner: &Arc<Inner>,
    params: &BTreeMap<String, String>,
    biz: &serde_json::Value,
    out_trade_no: &str,
) -> serde_json::Value {
    let total = biz["total_amount"].as_str().unwrap_or_default().to_string();
    if out_trade_no.is_empty() || total.is_empty() {
        return json!({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.INVALID_PARAMETER", "sub_msg": "missing out_trade_no or total_amount"});
    }
    let knobs = inner.knobs.lock().expect("sandbox lock").clone();
    if let Some((code, msg)) = &knobs.decline_precreate {
        return json!({"code": "40004", "msg": "Business Failed", "sub_code": code, "sub_msg": msg});
    }
    let created = {
        let mut orders = inner.orders.lock().expect("sandbox lock");
        if let Some(existing) = orders.get(out_trade_no) {
            // Alipay answers a repeated precreate of the same unpaid order with the same QR.
            if existing.total_amount != total {
                return json!({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.CONTEXT_INCONSISTENT", "sub_msg": "order details changed"});
            }
            false
        } else {
            let mut n = inner.next_trade.lock().expect("sandbox lock");
            *n += 1;
            orders.insert(
                out_trade_no.to_string(),
                SandboxOrder {
                    out_trade_no: out_trade_no.to_string(),
                    trade_no: format!("2026{:012}", *n),
                    paid_amount: knobs.paid_amount.clone().unwrap_or_else(|| total.clone()),
                    total_amount: total,
                    status: SandboxStatus::WaitBuyerPay,
                    notify_mode: knobs.notify,
                    notify_url: params.get("notify_url").cloned(),
                    notifications_sent: 0,
                    acknowledged: false,
                },
            );
            true
        }
    };
    bump(inner);
    if created && let Some(delay) = knobs.pay_after {
        let inner = inner.clone();
        let no = out_trade_no.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            pay(&inner, &no);
        });
    }
    json!({
        "code": "10000",
        "msg": "Success",
        "out_trade_no": out_trade_no,
        "qr_code": format!("https://qr.sandbox.payflow.local/{out_trade_no}"),
    })
}

fn query(inner: &Arc<Inner>, out_trade_no: &str) -> serde_json::Value {
    let orders = inner.orders.lock().expect("sandbox lock");
    match orders.get(out_trade_no) {
        None => {
            json!({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST", "sub_msg": "trade does not exist"})
        }
        Some(o) => {
            let status = match o.status {
                SandboxStatus::WaitBuyerPay => "WAIT_BUYER_PAY",
                SandboxStatus::Success => "TRADE_SUCCESS",
                SandboxStatus::Closed => "TRADE_CLOSED",
            };
            json!({
                "code": "10000",
                "msg": "Success",
                "trade_no": o.trade_no,
                "out_trade_no": o.out_trade_no,
                "trade_status": status,
                "total_amount": if o.status == SandboxStatus::Success { &o.paid_amount } else { &o.total_amount },
            })
        }
    }
}

fn close(inner: &Arc<Inner>, out_trade_no: &str) -> serde_json::Value {
    let node = {
        let mut orders = inner.orders.lock().expect("sandbox lock");
        match orders.get_mut(out_trade_no) {
            None => {
                json!({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_NOT_EXIST", "sub_msg": "trade does not exist"})
            }
            Some(o) if o.status == SandboxStatus::Success => {
                json!({"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.TRADE_STATUS_ERROR", "sub_msg": "trade is paid"})
            }
            Some(o) => {
                o.status = SandboxStatus::Closed;
                json!({"code": "10000", "msg": "Success", "trade_no": o.trade_no, "out_trade_no": o.out_trade_no})
            }
        }
    };
    bump(inner);
    node
}
