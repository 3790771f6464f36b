//! Payment contract: what a service sends to start a payment and what it gets back.

use serde::{Deserialize, Serialize};

use crate::ids::{MerchantId, OrderNo, ProductId, WalletId};
use crate::money::Money;

/// Default time a payment stays payable.
pub const DEFAULT_EXPIRY_SECS: u64 = 15 * 60;

/// A request to collect money from a customer for a merchant order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRequest {
    pub merchant_id: MerchantId,
    /// The merchant's order number: the idempotency key of the payment.
    pub merchant_order_no: OrderNo,
    pub amount: Money,
    pub product_id: ProductId,
    /// What the customer sees (channel `subject`), 1 to 128 characters.
    pub subject: String,
    /// Overrides the merchant's configured notify URL (must be on its allowlist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_url: Option<String>,
    /// Seconds until an unpaid order is closed; default 15 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    /// A recharge: the payment tops up this wallet (`wallet:{owner}`) instead of the
    /// merchant's balance, with no fee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recharge_wallet: Option<WalletId>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("subject must be 1 to 128 characters")]
    Subject,
    #[error("expiry must be between 60 seconds and 2 days")]
    Expiry,
    #[error("notify_url {0:?} is not an absolute http(s) URL")]
    NotifyUrl(String),
}

impl PaymentRequest {
    /// Shape checks that need no configuration; merchant, product and URL allowlist checks
    /// happen in the workflow's validation step against the configured merchants.
    pub fn validate(&self) -> Result<(), RequestError> {
        let n = self.subject.chars().count();
        if n == 0 || n > 128 || self.subject.chars().any(char::is_control) {
            return Err(RequestError::Subject);
        }
        if let Some(secs) = self.expires_in_secs
            && !(60..=2 * 24 * 3600).contains(&secs)
        {
            return Err(RequestError::Expiry);
        }
        if let Some(url) = &self.notify_url {
            match url::Url::parse(url) {
                Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.has_host() => {}
                _ => return Err(RequestError::NotifyUrl(url.clone())),
            }
        }
        Ok(())
    }

    pub fn expires_in_secs(&self) -> u64 {
        self.expires_in_secs.unwrap_or(DEFAULT_EXPIRY_SECS)
    }
}

/// The payment order's state. Transitions live in `payflow-workflows` (`state::payment`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PayState {
    Created,
    Pending,
    Succeeded,
    Failed,
    Closed,
    PartiallyRefunded,
    Refunded,
    Exception,
}

impl PayState {
    pub const ALL: [PayState; 8] = [
        PayState::Created,
        PayState::Pending,
        PayState::Succeeded,
        PayState::Failed,
        PayState::Closed,
        PayState::PartiallyRefunded,
        PayState::Refunded,
        PayState::Exception,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PayState::Created => "Created",
            PayState::Pending => "Pending",
            PayState::Succeeded => "Succeeded",
            PayState::Failed => "Failed",
            PayState::Closed => "Closed",
            PayState::PartiallyRefunded => "PartiallyRefunded",
            PayState::Refunded => "Refunded",
            PayState::Exception => "Exception",
        }
    }

    pub fn parse(s: &str) -> Option<PayState> {
        PayState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for PayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The channel's prepay credential, returned to the caller as soon as it is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepay {
    /// payflow's order id (sent to the channel as `out_trade_no`).
    pub order_id: String,
    pub channel: String,
    /// What the customer scans or opens (e.g. a QR code URL).
    pub qr_code: String,
    /// Unix milliseconds after which the order is closed if unpaid.
    pub expires_at_ms: i64,
}

/// A definite refusal by a channel, kept with the channel's own code and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelFailure {
    pub code: String,
    pub message: String,
}

/// What a channel told us asynchronously; untrusted until confirmed by a channel query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelNotice {
    pub channel: String,
    pub notify_id: String,
    pub channel_trade_no: Option<String>,
    /// The channel's own status word (e.g. `TRADE_SUCCESS`).
    pub trade_status: String,
    /// As the channel wrote it (decimal string); compared only after the confirming query.
    pub total_amount: Option<String>,
}

/// An operator's decision on a payment in `Exception` (the `resolve` signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resolution {
    /// Keep the money actually paid: the order succeeds with the paid amount.
    Accept,
    /// Return the money actually paid to the customer; the order ends `Refunded`.
    Refund,
}

/// The payment as services and operators see it (the workflow's `status` query).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentStatus {
    pub workflow_id: String,
    pub merchant_id: MerchantId,
    pub merchant_order_no: OrderNo,
    pub amount: Money,
    pub state: PayState,
    pub order_id: Option<String>,
    pub channel: Option<String>,
    pub channel_trade_no: Option<String>,
    pub prepay: Option<Prepay>,
    pub failure: Option<ChannelFailure>,
    /// Notifications received from the channel (for operators; each confirmed by a query).
    pub notices_received: u32,
    /// Channel queries made (active queries plus confirmations).
    pub queries_made: u32,
    pub paid_at_ms: Option<i64>,
    pub closed_at_ms: Option<i64>,
    /// What the channel collected, when it differs from `amount` (an exception to resolve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_amount: Option<Money>,
    /// The operator's decision on an exception, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn req() -> PaymentRequest {
        PaymentRequest {
            merchant_id: MerchantId::parse("m1").unwrap(),
            merchant_order_no: OrderNo::parse("o1").unwrap(),
            amount: Money::parse("1.00", Currency::Cny).unwrap(),
            product_id: ProductId::parse("qr").unwrap(),
            subject: "tea".into(),
            notify_url: None,
            expires_in_secs: None,
            recharge_wallet: None,
        }
    }

    #[test]
    fn validates_shape() {
        assert!(req().validate().is_ok());
        let mut r = req();
        r.subject = String::new();
        assert_eq!(r.validate(), Err(RequestError::Subject));
        let mut r = req();
        r.expires_in_secs = Some(5);
        assert_eq!(r.validate(), Err(RequestError::Expiry));
        let mut r = req();
        r.notify_url = Some("ftp://x".into());
        assert!(matches!(r.validate(), Err(RequestError::NotifyUrl(_))));
        assert_eq!(req().expires_in_secs(), DEFAULT_EXPIRY_SECS);
    }

    #[test]
    fn pay_state_names_round_trip() {
        for s in PayState::ALL {
            assert_eq!(PayState::parse(s.as_str()), Some(s));
        }
    }
}
