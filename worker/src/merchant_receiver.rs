//! A merchant's callback endpoint, for `payflow dev` and tests: verifies each callback's
//! Standard Webhooks signature (and the RSA header with the platform public key, when it is
//! given one), records it, and answers as configured (`success`, or a failure status while
//! "down").

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use payflow_activities::crypto::rsa_keys::RsaVerifier;
use payflow_activities::crypto::webhook::WebhookSecret;
use payflow_activities::notify::RSA_SIGNATURE_HEADER;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct ReceivedCallback {
    pub webhook_id: String,
    pub timestamp: i64,
    pub body: serde_json::Value,
    pub signature_valid: bool,
    /// The `payflow-signature-rsa` header checked with the platform public key: `None` when
    /// absent (or the receiver has no key), else whether it verified.
    pub rsa_signature_valid: Option<bool>,
    /// What the receiver answered.
    pub answered: u16,
}

struct Inner {
    secret: WebhookSecret,
    platform_key: Option<RsaVerifier>,
    received: Mutex<Vec<ReceivedCallback>>,
    /// Answer 503 to this many calls before accepting (a merchant that is down for a while).
    fail_first: Mutex<u32>,
    changed: watch::Sender<u64>,
}

#[derive(Clone)]
pub struct MerchantReceiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl MerchantReceiver {
    pub async fn spawn(
        listener: TcpListener,
        secret: WebhookSecret,
        platform_key: Option<RsaVerifier>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (changed, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            secret,
            platform_key,
            received: Mutex::new(Vec::new()),
            fail_first: Mutex::new(0),
            changed,
        });
        let app = Router::new()
            .route("/notify", post(receive))
            .with_state(inner.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "merchant receiver stopped");
            }
        });
        Ok(MerchantReceiver { addr, inner })
    }

    pub fn notify_url(&self) -> String {
        format!("http://{}/notify", self.addr)
    }

    /// Answer 503 to the next `n` callbacks.
    pub fn fail_next(&self, n: u32) {
        *self.inner.fail_first.lock().expect("receiver lock") = n;
    }

    pub fn received(&self) -> Vec<ReceivedCallback> {
        self.inner.received.lock().expect("receiver lock").clone()
    }

    /// Waits until `f` holds over everything received so far, or the deadline passes.
    pub async fn wait_for(
        &self,
        deadline: Duration,
        f: impl Fn(&[ReceivedCallback]) -> bool,
    ) -> Option<Vec<ReceivedCallback>> {
        let mut rx = self.inner.changed.subscribe();
        tokio::time::timeout(deadline, async {
            loop {
                let got = self.received();
                if f(&got) {
                    return got;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await
        .ok()
    }
}

async fn receive(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let webhook_id = header("webhook-id");
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or_default();
    let signature_valid = inner
        .secret
        .verify(&webhook_id, timestamp, &body, &header("webhook-signature"))
        .is_ok();
    let rsa = header(RSA_SIGNATURE_HEADER);
    let rsa_signature_valid = match (&inner.platform_key, rsa.is_empty()) {
        (Some(key), false) => {
            let signed = [
                webhook_id.as_bytes(),
                b".",
                timestamp.to_string().as_bytes(),
                b".",
                &body,
            ]
            .concat();
            Some(key.verify_base64(&signed, &rsa).is_ok())
        }
        _ => None,
    };
    let (status, text) = {
        let mut fail = inner.fail_first.lock().expect("receiver lock");
        if !signature_valid || rsa_signature_valid == Some(false) {
            (StatusCode::UNAUTHORIZED, "bad signature")
        } else if *fail > 0 {
            *fail -= 1;
            (StatusCode::SERVICE_UNAVAILABLE, "down")
        } else {
            (StatusCode::OK, "success")
        }
    };
    inner
        .received
        .lock()
        .expect("receiver lock")
        .push(ReceivedCallback {
            webhook_id,
            timestamp,
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
            signature_valid,
            rsa_signature_valid,
            answered: status.as_u16(),
        });
    inner.changed.send_modify(|v| *v += 1);
    (status, text)
}
