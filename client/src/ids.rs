//! Validated identifiers and the workflow ids built from them.
//!
//! Workflow ids make starts idempotent: one business id, one workflow, never a second payment.
//! Identifiers are restricted to `[A-Za-z0-9_-]` so they can be embedded in workflow ids
//! (`pay/{merchant}/{order}`), channel fields and URLs without escaping.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn check(kind: &'static str, value: &str, max: usize) -> Result<(), IdError> {
    let err = |reason| IdError {
        kind,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(err("must not be empty"));
    }
    if value.len() > max {
        return Err(err("too long"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(err("only letters, digits, '_' and '-' are allowed"));
    }
    Ok(())
}

macro_rules! validated_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check($kind, &value, $max)?;
                Ok(Self(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_id!(
    /// A merchant's id as configured in payflow.
    MerchantId, "merchant id", 32
);
validated_id!(
    /// The merchant's own order number (`out_trade_no` on the merchant side); unique per merchant.
    OrderNo, "merchant order no", 64
);
validated_id!(
    /// The merchant's own refund number: the idempotency key of a refund; unique per merchant.
    RefundNo, "merchant refund no", 64
);
validated_id!(
    /// The caller's transfer number: the idempotency key of an internal transfer.
    TransferNo, "transfer no", 64
);
validated_id!(
    /// The merchant's payout number: the idempotency key of a payout (withdrawal).
    PayoutNo, "payout no", 64
);
validated_id!(
    /// The owner of a wallet account (`wallet:{owner}`): a customer or a merchant.
    WalletId, "wallet id", 64
);
validated_id!(
    /// A product id: what the merchant sells through which channel (routing input).
    ProductId, "product id", 32
);
validated_id!(
    /// A merchant notification event id: stable across delivery attempts (`webhook-id`).
    EventId, "event id", 96
);

/// `pay/{merchant}/{merchant_order_no}`
pub fn payment_workflow_id(merchant: &MerchantId, order_no: &OrderNo) -> String {
    format!("pay/{merchant}/{order_no}")
}

/// `refund/{merchant}/{merchant_refund_no}`
pub fn refund_workflow_id(merchant: &MerchantId, refund_no: &RefundNo) -> String {
    format!("refund/{merchant}/{refund_no}")
}

/// `transfer/{transfer_no}`
pub fn transfer_workflow_id(transfer_no: &TransferNo) -> String {
    format!("transfer/{transfer_no}")
}

/// `payout/{merchant}/{payout_no}`
pub fn payout_workflow_id(merchant: &MerchantId, payout_no: &PayoutNo) -> String {
    format!("payout/{merchant}/{payout_no}")
}

/// `notify/{merchant}/{event_id}`
pub fn notification_workflow_id(merchant: &MerchantId, event_id: &EventId) -> String {
    format!("notify/{merchant}/{event_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids_and_rejects_others() {
        assert!(MerchantId::parse("m-1_a").is_ok());
        assert!(MerchantId::parse("").is_err());
        assert!(MerchantId::parse("m/1").is_err());
        assert!(OrderNo::parse("o 1").is_err());
        assert!(OrderNo::parse("x".repeat(65)).is_err());
        assert!(OrderNo::parse("x".repeat(64)).is_ok());
    }

    #[test]
    fn workflow_ids() {
        let m = MerchantId::parse("m1").unwrap();
        let o = OrderNo::parse("o-42").unwrap();
        assert_eq!(payment_workflow_id(&m, &o), "pay/m1/o-42");
        let r = RefundNo::parse("r-1").unwrap();
        assert_eq!(refund_workflow_id(&m, &r), "refund/m1/r-1");
        let e = EventId::parse("pay-abc-succeeded").unwrap();
        assert_eq!(
            notification_workflow_id(&m, &e),
            "notify/m1/pay-abc-succeeded"
        );
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<MerchantId>("\"m/1\"").is_err());
        assert_eq!(
            serde_json::from_str::<MerchantId>("\"m1\"")
                .unwrap()
                .as_str(),
            "m1"
        );
    }
}
