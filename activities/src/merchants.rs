//! Merchants as configured: status, notify URL and its allowlist, webhook secret, and how
//! they want callbacks acknowledged.

use std::collections::BTreeMap;

use payflow_client::MerchantId;

use crate::crypto::webhook::WebhookSecret;

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
        if !allowed || !(url.scheme() == "https" || url.scheme() == "http") {
            return Err(MerchantError::NotifyUrlNotAllowed(url.to_string()));
        }
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
