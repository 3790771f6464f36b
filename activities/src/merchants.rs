//! Merchants as configured: status, notify URL and its allowlist, webhook secret, and how
//! they want callbacks acknowledged. A notify URL is checked when the payment is created
//! (allowlisted host, https unless plain http is allowed for it, no IP literal the merchant may
//! not reach), so a bad URL is refused then rather than failing every delivery.

use std::collections::BTreeMap;

use payflow_client::MerchantId;

use crate::crypto::webhook::WebhookSecret;
use crate::notify::guard::AddressPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MerchantStatus {
    Enabled,
    /// Blacklisted: no payment is accepted and no callback is sent (events are kept).
    Blocked,
}

#[derive(Debug, Clone)]
pub struct Merchant {
    pub id: MerchantId,
    pub status: MerchantStatus,
    /// Default notify URL for callbacks.
    pub notify_url: Option<url::Url>,
    /// Hosts a notify URL (default or per request) may point at.
    pub allowed_notify_hosts: Vec<String>,
    pub webhook_secret: WebhookSecret,
    /// When set, a delivery succeeds only if the 2xx body is exactly this text (e.g. `success`).
    pub expect_body: Option<String>,
    pub risk: crate::risk::RiskLimits,
    /// Which notify URLs may use plain http (https only by default).
    pub plain_http: PlainHttp,
    /// Which addresses callbacks may reach (SSRF guard); IP-literal URLs are checked when the
    /// payment is created, names when each callback is delivered.
    pub network: AddressPolicy,
}

/// Plain-http notify URLs: a dev/test allowance, never a default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PlainHttp {
    #[default]
    Never,
    /// For any of the merchant's allowed hosts.
    AnyHost,
    /// For these hosts only.
    Hosts(Vec<String>),
}

impl PlainHttp {
    fn allows(&self, host: &str) -> bool {
        match self {
            PlainHttp::Never => false,
            PlainHttp::AnyHost => true,
            PlainHttp::Hosts(hosts) => hosts.iter().any(|h| h.eq_ignore_ascii_case(host)),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MerchantError {
    #[error("unknown merchant {0}")]
    Unknown(String),
    #[error("merchant {0} is blocked")]
    Blocked(String),
    #[error("notify URL {0:?} is not allowed for this merchant")]
    NotifyUrlNotAllowed(String),
    #[error("merchant {0} has no notify URL")]
    NoNotifyUrl(String),
    #[error("notify URL {0:?} must use https (plain http is not allowed for this merchant)")]
    PlainHttpNotAllowed(String),
    #[error("notify URL {url:?}: {reason}")]
    AddressNotAllowed { url: String, reason: String },
}

impl Merchant {
    /// The URL a callback goes to: the request's override if allowed, else the default.
    pub fn notify_url(&self, override_url: Option<&str>) -> Result<url::Url, MerchantError> {
        let url = match override_url {
            Some(u) => {
                url::Url::parse(u).map_err(|_| MerchantError::NotifyUrlNotAllowed(u.to_string()))?
            }
            None => self
                .notify_url
                .clone()
                .ok_or_else(|| MerchantError::NoNotifyUrl(self.id.to_string()))?,
        };
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let allowed = self
            .allowed_notify_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host));
        if !allowed {
            return Err(MerchantError::NotifyUrlNotAllowed(url.to_string()));
        }
        match url.scheme() {
            "https" => {}
            "http" if self.plain_http.allows(&host) => {}
            "http" => return Err(MerchantError::PlainHttpNotAllowed(url.to_string())),
            _ => return Err(MerchantError::NotifyUrlNotAllowed(url.to_string())),
        }
        // An IP literal is refused now; a name is checked against what it resolves to at
        // each delivery.
        self.network
            .check_url(&url)
            .map_err(|e| MerchantError::AddressNotAllowed {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(url)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Merchants {
    by_id: BTreeMap<MerchantId, Merchant>,
}

impl Merchants {
    pub fn insert(&mut self, m: Merchant) {
        self.by_id.insert(m.id.clone(), m);
    }

    pub fn get(&self, id: &MerchantId) -> Result<&Merchant, MerchantError> {
        self.by_id
            .get(id)
            .ok_or_else(|| MerchantError::Unknown(id.to_string()))
    }

    /// The merchant if it may take payments now.
    pub fn enabled(&self, id: &MerchantId) -> Result<&Merchant, MerchantError> {
        let m = self.get(id)?;
        match m.status {
            MerchantStatus::Enabled => Ok(m),
            MerchantStatus::Blocked => Err(MerchantError::Blocked(id.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merchant(notify_url: &str, hosts: &[&str]) -> Merchant {
        Merchant {
            id: MerchantId::parse("m1").unwrap(),
            status: MerchantStatus::Enabled,
            notify_url: Some(url::Url::parse(notify_url).unwrap()),
            allowed_notify_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            webhook_secret: WebhookSecret::parse(&WebhookSecret::generate()).unwrap(),
            expect_body: None,
            risk: crate::risk::RiskLimits::default(),
            plain_http: PlainHttp::Never,
            network: AddressPolicy::default(),
        }
    }

    #[test]
    fn https_only_unless_plain_http_is_allowed_for_the_host() {
        let mut m = merchant(
            "http://shop.example/notify",
            &["shop.example", "dev.example"],
        );
        let err = m.notify_url(None).unwrap_err();
        assert_eq!(
            err,
            MerchantError::PlainHttpNotAllowed("http://shop.example/notify".into())
        );
        assert!(err.to_string().contains("must use https"), "{err}");
        assert!(m.notify_url(Some("https://shop.example/cb")).is_ok());
        m.plain_http = PlainHttp::Hosts(vec!["DEV.example".into()]);
        assert!(m.notify_url(None).is_err());
        assert!(m.notify_url(Some("http://dev.example/cb")).is_ok());
        m.plain_http = PlainHttp::AnyHost;
        assert!(m.notify_url(None).is_ok());
        // Other schemes and hosts outside the allowlist stay refused.
        assert!(matches!(
            m.notify_url(Some("ftp://shop.example/cb")),
            Err(MerchantError::NotifyUrlNotAllowed(_))
        ));
        assert!(matches!(
            m.notify_url(Some("https://evil.example/cb")),
            Err(MerchantError::NotifyUrlNotAllowed(_))
        ));
    }

    #[test]
    fn ip_literal_urls_to_private_or_metadata_addresses_are_refused_at_creation() {
        let mut m = merchant(
            "http://127.0.0.1:8080/notify",
            &["127.0.0.1", "169.254.169.254"],
        );
        m.plain_http = PlainHttp::AnyHost;
        let err = m.notify_url(None).unwrap_err();
        assert!(
            matches!(&err, MerchantError::AddressNotAllowed { reason, .. } if reason.contains("loopback")),
            "{err}"
        );
        let metadata = Some("http://169.254.169.254/latest/meta-data/");
        assert!(m.notify_url(metadata).is_err());
        m.network.allow_private_network = true;
        assert!(m.notify_url(None).is_ok());
        // The metadata endpoint stays refused even on a private-network allowance.
        let err = m.notify_url(metadata).unwrap_err();
        assert!(err.to_string().contains("cloud metadata"), "{err}");
    }
}
