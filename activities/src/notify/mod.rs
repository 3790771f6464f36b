//! Merchant callback delivery over HTTP: one signed attempt, recorded, never retried here
//! (the Notification workflow owns the retry schedule with durable timers).

use std::time::{Duration, Instant};

use payflow_client::DeliveryAttempt;

use crate::crypto::webhook::WebhookSecret;

/// How one delivery is made.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            connect_timeout: Duration::from_secs(3),
            total_timeout: Duration::from_secs(10),
        }
    }
}

/// One callback to send.
pub struct Callback<'a> {
    pub url: &'a url::Url,
    pub event_id: &'a str,
    pub body: &'a [u8],
    pub secret: &'a WebhookSecret,
    /// Success requires a 2xx whose body is exactly this, when set.
    pub expect_body: Option<&'a str>,
    pub attempt: u32,
}

pub struct Deliverer {
    http: reqwest::Client,
}

impl Deliverer {
    pub fn new(policy: &DeliveryPolicy) -> Result<Self, reqwest::Error> {
        crate::tls::ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.total_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .user_agent("payflow-webhooks/1")
            .build()?;
        Ok(Deliverer { http })
    }

    /// Makes one attempt and reports what happened; HTTP failures are outcomes, not errors.
    pub async fn deliver(&self, cb: Callback<'_>) -> DeliveryAttempt {
        let now = chrono::Utc::now();
        let timestamp = now.timestamp();
        let signature = cb.secret.sign(cb.event_id, timestamp, cb.body);
        let started = Instant::now();
        let result = self
            .http
            .post(cb.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", cb.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(cb.body.to_vec())
            .send()
            .await;
        let mut attempt = DeliveryAttempt {
            number: cb.attempt,
            at_ms: now.timestamp_millis(),
            url: cb.url.to_string(),
            status: None,
            latency_ms: 0,
            error: None,
            delivered: false,
        };
        match result {
            Err(e) => attempt.error = Some(describe(&e)),
            Ok(resp) => {
                let status = resp.status();
                attempt.status = Some(status.as_u16());
                // Read a bounded body: only needed to compare with the expected ack text.
                let body = resp.text().await.unwrap_or_default();
                let body_ok = match cb.expect_body {
                    Some(expected) => body.trim() == expected,
                    None => true,
                };
                attempt.delivered = status.is_success() && body_ok;
                if !attempt.delivered {
                    attempt.error = Some(if status.is_success() {
                        "unexpected acknowledgement body".to_string()
                    } else {
                        format!("HTTP {status}")
                    });
                }
            }
        }
        attempt.latency_ms = started.elapsed().as_millis() as u64;
        attempt
    }
}

/// A short, secret-free description of a transport error.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        let mut msg = e.to_string();
        msg.truncate(200);
        msg
    }
}
