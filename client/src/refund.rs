//! Refund contract: what a service sends to refund (part of) a payment and what it gets back.

use serde::{Deserialize, Serialize};

use crate::ids::{MerchantId, OrderNo, RefundNo};
use crate::money::Money;
use crate::payment::ChannelFailure;

/// A request to give (part of) a paid order's money back to the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub merchant_id: MerchantId,
    /// The paid order to refund (the merchant's order no).
    pub merchant_order_no: OrderNo,
    /// The idempotency key: the same refund no is one refund, never two.
    pub merchant_refund_no: RefundNo,
    pub amount: Money,
    /// Shown to the customer by the channel, 1 to 256 characters.
    pub reason: String,
    /// Who asked. Services always ask as [`RefundKind::Merchant`]; the other kinds are
    /// payflow's own refunds of money it must not keep.
    #[serde(default)]
    pub kind: RefundKind,
}

/// Why money goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum RefundKind {
    /// The merchant refunds a succeeded payment (in full or in part).
    #[default]
    Merchant,
    /// The customer paid an order that was already closed: the payment is returned whole and
    /// the order stays closed.
    LatePayment,
    /// An operator resolved an exception payment (e.g. a wrong amount) by returning it.
    Exception,
}

impl RefundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundKind::Merchant => "Merchant",
            RefundKind::LatePayment => "LatePayment",
            RefundKind::Exception => "Exception",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefundRequestError {
    #[error("reason must be 1 to 256 characters")]
    Reason,
}

impl RefundRequest {
    /// Shape checks that need no database (amounts are positive by construction of [`Money`]);
    /// the paid-amount guard runs in the workflow.
    pub fn validate(&self) -> Result<(), RefundRequestError> {
        let n = self.reason.chars().count();
        if n == 0 || n > 256 || self.reason.chars().any(char::is_control) {
            return Err(RefundRequestError::Reason);
        }
        Ok(())
    }
}

/// A refund's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefundState {
    /// Accepted, funds not yet reserved.
    Requested,
    /// Funds reserved; the channel is refunding (or we are waiting for its definite answer).
    Processing,
    Succeeded,
    /// Refused (guard, balance or the channel's definite answer); nothing moved.
    Failed,
}

impl RefundState {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundState::Requested => "Requested",
            RefundState::Processing => "Processing",
            RefundState::Succeeded => "Succeeded",
            RefundState::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for RefundState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The refund as services and operators see it (the Refund workflow's `status` query and
/// result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundStatus {
    pub workflow_id: String,
    pub merchant_id: MerchantId,
    pub merchant_order_no: OrderNo,
    pub merchant_refund_no: RefundNo,
    pub kind: RefundKind,
    pub amount: Money,
    pub state: RefundState,
    /// payflow's refund id (sent to the channel as its refund request no).
    pub refund_id: Option<String>,
    pub order_id: Option<String>,
    pub channel: Option<String>,
    pub failure: Option<ChannelFailure>,
    /// Channel refund queries made while waiting for a definite answer.
    pub queries_made: u32,
    pub refunded_at_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    #[test]
    fn validates_shape_and_defaults_to_a_merchant_refund() {
        let json = r#"{"merchant_id":"m1","merchant_order_no":"o1","merchant_refund_no":"r1",
            "amount":{"amount":"1.00","currency":"CNY"},"reason":"broken"}"#;
        let req: RefundRequest = serde_json::from_str(json).unwrap();
        assert_eq!(req.kind, RefundKind::Merchant);
        assert!(req.validate().is_ok());
        let mut r = req.clone();
        r.reason = String::new();
        assert_eq!(r.validate(), Err(RefundRequestError::Reason));
        r.reason = "line\nbreak".into();
        assert_eq!(r.validate(), Err(RefundRequestError::Reason));
        // Money itself refuses a zero amount, so a zero refund cannot even be written down.
        assert!(Money::parse("0", Currency::Cny).is_err());
    }
}
