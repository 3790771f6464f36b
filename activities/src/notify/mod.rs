//! Merchant callback delivery over HTTP: one signed attempt, recorded, never retried here
//! (the Notification workflow owns the retry schedule with durable timers).
//!
//! Each merchant gets its own reqwest client, built at start-up from its configuration,
//! because what differs between merchants lives in the client: timeouts, the TLS trust
//! ([`trust`]), the egress (direct or a forward proxy) and the SSRF guard's resolver
//! ([`guard`]). All clients use rustls with TLS 1.2 minimum and follow no redirects.

pub mod guard;
pub mod trust;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use payflow_client::{DeliveryAttempt, MerchantId};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;

use crate::crypto::rsa_keys::RsaSigner;
use crate::crypto::webhook::{WebhookSecret, signed_content};
use guard::{AddressNotAllowed, AddressPolicy, GuardedResolver};
use trust::{Trust, TrustError};

/// The header carrying the platform's RSA signature, for merchants configured for it.
pub const RSA_SIGNATURE_HEADER: &str = "payflow-signature-rsa";

/// The most of a merchant's answer that is read (only compared with the expected ack text).
const MAX_ACK_BODY: usize = 4096;

/// Defaults for every merchant's delivery (`[notify]`).
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

/// How one merchant's callbacks travel.
#[derive(Debug, Clone)]
pub struct MerchantTransport {
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
    /// Which addresses may be connected to (SSRF guard).
    pub network: AddressPolicy,
    pub trust: Trust,
    /// Every callback goes through this forward proxy (`http://host:port`); none: direct.
    pub proxy: Option<url::Url>,
    /// Also sign with the platform RSA key (`payflow-signature-rsa`).
    pub sign_rsa: bool,
}

impl MerchantTransport {
    /// Direct, system roots, public addresses only, no RSA signature.
    pub fn new(policy: &DeliveryPolicy) -> Self {
        MerchantTransport {
            connect_timeout: policy.connect_timeout,
            total_timeout: policy.total_timeout,
            network: AddressPolicy::default(),
            trust: Trust::default(),
            proxy: None,
            sign_rsa: false,
        }
    }
}

/// A merchant's transport that cannot be built (start-up errors).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("proxy {url}: {reason}")]
    Proxy { url: String, reason: String },
    #[error("HTTP client: {0}")]
    Client(String),
    #[error("RSA signing is asked for but no platform key is configured")]
    NoPlatformKey,
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

/// What one delivery did.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The attempt as recorded (refusals too: `error` says why, nothing was sent).
    pub attempt: DeliveryAttempt,
    /// Set when nothing was sent because the configuration forbids it: retrying cannot
    /// help until the configuration (or, for a name, its DNS) changes.
    pub refused: Option<Refusal>,
}

/// Why a callback was not sent at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The URL's host is, or resolves only to, addresses the merchant may not reach.
    #[error("{0}")]
    AddressNotAllowed(AddressNotAllowed),
    #[error("no delivery transport is configured for merchant {0}")]
    UnknownMerchant(String),
    #[error("RSA signing failed: {0}")]
    Signing(String),
}

struct MerchantClient {
    http: reqwest::Client,
    network: AddressPolicy,
    sign_rsa: bool,
}

pub struct Deliverer {
    clients: HashMap<MerchantId, MerchantClient>,
    /// Signs `payflow-signature-rsa`; its public half is what `payflow keys public` prints.
    platform_key: Option<RsaSigner>,
    provider: Arc<CryptoProvider>,
    /// The system-roots verifier, loaded once and shared by merchants without own trust.
    system: Option<Arc<dyn ServerCertVerifier>>,
}

impl Deliverer {
    pub fn new(platform_key: Option<RsaSigner>) -> Self {
        crate::tls::ensure_crypto_provider();
        Deliverer {
            clients: HashMap::new(),
            platform_key,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            system: None,
        }
    }

    /// Builds the merchant's client; replaces one built before for the same merchant.
    pub fn add_merchant(
        &mut self,
        id: MerchantId,
        t: &MerchantTransport,
    ) -> Result<(), DeliveryError> {
        if t.sign_rsa && self.platform_key.is_none() {
            return Err(DeliveryError::NoPlatformKey);
        }
        let provider = &self.provider;
        let system = &mut self.system;
        let verifier = t.trust.verifier(provider, || match system {
            Some(v) => Ok(v.clone()),
            None => {
                let v = trust::system_verifier(provider)?;
                *system = Some(v.clone());
                Ok(v)
            }
        })?;
        let tls = trust::client_config(provider, verifier)?;
        let proxy_host = t
            .proxy
            .as_ref()
            .and_then(|p| p.host_str().map(str::to_string));
        let builder = reqwest::Client::builder()
            .connect_timeout(t.connect_timeout)
            .timeout(t.total_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("payflow-webhooks/1")
            // Our rustls config carries the TLS 1.2 minimum and the merchant's trust.
            .tls_backend_preconfigured(tls)
            .dns_resolver(GuardedResolver::new(t.network, proxy_host));
        let builder = match &t.proxy {
            Some(p) => {
                let proxy = reqwest::Proxy::all(p.as_str()).map_err(|e| DeliveryError::Proxy {
                    url: p.to_string(),
                    reason: e.to_string(),
                })?;
                builder.proxy(proxy)
            }
            // Never an environment proxy (HTTP_PROXY...): egress is configured per merchant.
            None => builder.no_proxy(),
        };
        let http = builder
            .build()
            .map_err(|e| DeliveryError::Client(describe(&e)))?;
        self.clients.insert(
            id,
            MerchantClient {
                http,
                network: t.network,
                sign_rsa: t.sign_rsa,
            },
        );
        Ok(())
    }

    /// Makes one attempt and reports what happened; HTTP failures are outcomes, not errors.
    pub async fn deliver(&self, merchant: &MerchantId, cb: Callback<'_>) -> Delivery {
        let now = chrono::Utc::now();
        let started = Instant::now();
        let mut attempt = DeliveryAttempt {
            number: cb.attempt,
            at_ms: now.timestamp_millis(),
            url: cb.url.to_string(),
            status: None,
            latency_ms: 0,
            error: None,
            delivered: false,
        };
        let refuse = |mut attempt: DeliveryAttempt, why: Refusal| {
            attempt.error = Some(why.to_string());
            Delivery {
                attempt,
                refused: Some(why),
            }
        };
        let Some(client) = self.clients.get(merchant) else {
            return refuse(attempt, Refusal::UnknownMerchant(merchant.to_string()));
        };
        // reqwest never asks the resolver about IP literals: they are checked here.
        if let Err(e) = client.network.check_url(cb.url) {
            return refuse(attempt, Refusal::AddressNotAllowed(e));
        }
        let timestamp = now.timestamp();
        let mut request = client
            .http
            .post(cb.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", cb.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                cb.secret.sign(cb.event_id, timestamp, cb.body),
            );
        if client.sign_rsa {
            let key = self
                .platform_key
                .as_ref()
                .expect("add_merchant refuses sign_rsa without a platform key");
            match key.sign_base64(&signed_content(cb.event_id, timestamp, cb.body)) {
                Ok(sig) => request = request.header(RSA_SIGNATURE_HEADER, sig),
                Err(e) => return refuse(attempt, Refusal::Signing(e.to_string())),
            }
        }
        let result = request.body(cb.body.to_vec()).send().await;
        let mut refused = None;
        match result {
            Err(e) => match find_in_chain::<AddressNotAllowed>(&e) {
                Some(not_allowed) => {
                    let why = Refusal::AddressNotAllowed(not_allowed.clone());
                    attempt.error = Some(why.to_string());
                    refused = Some(why);
                }
                None => attempt.error = Some(describe(&e)),
            },
            Ok(resp) => {
                let status = resp.status();
                attempt.status = Some(status.as_u16());
                let body_ok = match cb.expect_body {
                    Some(expected) => read_bounded(resp, MAX_ACK_BODY)
                        .await
                        .is_some_and(|body| String::from_utf8_lossy(&body).trim() == expected),
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
        Delivery { attempt, refused }
    }
}

/// The body, unless it is longer than `limit` or cannot be read in time.
async fn read_bounded(mut resp: reqwest::Response, limit: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        if body.len() + chunk.len() > limit {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

/// The first error of type `T` in `e`'s source chain. `io::Error::source` skips the error it
/// wraps (rustls and resolver errors travel inside io errors), so those are opened here.
fn find_in_chain<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        cur = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => err.source(),
        };
    }
    None
}

/// The innermost error's text (e.g. "Connection refused (os error 111)").
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut cur = e;
    loop {
        let next = match cur.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|i| i as &(dyn StdError + 'static)),
            None => cur.source(),
        };
        match next {
            Some(n) => cur = n,
            None => return cur.to_string(),
        }
    }
}

/// A short, secret-free description of a transport error.
fn describe(e: &reqwest::Error) -> String {
    let mut msg = if let Some(tls) = find_in_chain::<rustls::Error>(e) {
        match tls {
            // The `Display` of `Other` is its `Debug`; ours (pin mismatch) reads better.
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                format!("TLS: invalid peer certificate: {other}")
            }
            other => format!("TLS: {other}"),
        }
    } else if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        format!("connection failed: {}", root_cause(e))
    } else {
        e.to_string()
    };
    if msg.len() > 200 {
        let mut end = 200;
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        msg.truncate(end);
    }
    msg
}
