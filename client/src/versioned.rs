//! Workflow inputs that carry the version of the workflow code their starter chose.
//!
//! A workflow change is normally guarded by `ctx.patched(..)`, and each patch costs every new
//! run a marker event and a `TemporalChangeVersion` search attribute upsert (a visibility
//! write): two of a callback's nine history events. A run started through this client says in
//! its input which version it starts at instead, so a new run asks no patch that its version
//! already implies. Old inputs (no version) deserialize as version 0 and run as before.

use serde::{Deserialize, Serialize};

/// The version this client starts Payment and Notification workflows at.
///
/// 1: a Payment runs `payment-v3` and a Notification `notify-v2` without their markers.
/// 2: a Payment makes its callback's first try itself and starts a Notification only for a
///    callback that try did not deliver (a Notification runs as at 1).
/// Workers must be upgraded before clients: a worker from before version 1 ignores the field
/// and asks its patches, which replays on later workers too (see
/// `payflow_workflows::versioning`), but a worker from before those patches would not.
pub const WORKFLOW_VERSION: u32 = 2;

/// A workflow's start input: the request as services build it, plus the code version.
///
/// On the wire the request's own fields, and `payflow_workflow_version` when not 0, so a
/// worker that predates this type reads it as the plain request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned<R> {
    #[serde(flatten)]
    pub request: R,
    #[serde(
        default,
        rename = "payflow_workflow_version",
        skip_serializing_if = "is_zero"
    )]
    pub version: u32,
}

impl<R> Versioned<R> {
    /// `request` at this client's [`WORKFLOW_VERSION`].
    pub fn current(request: R) -> Self {
        Versioned {
            request,
            version: WORKFLOW_VERSION,
        }
    }

    /// `request` as a client from before versioned starts sent it (version 0).
    pub fn unversioned(request: R) -> Self {
        Versioned {
            request,
            version: 0,
        }
    }
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        EventId, MerchantId, Money, NotificationRequest, OrderNo, PaymentRequest, Priority,
        ProductId,
    };

    fn payment() -> PaymentRequest {
        PaymentRequest {
            merchant_id: MerchantId::parse("m1").unwrap(),
            merchant_order_no: OrderNo::parse("o-1").unwrap(),
            amount: Money::parse("12.34", "CNY".parse().unwrap()).unwrap(),
            product_id: ProductId::parse("qr").unwrap(),
            subject: "tea".to_string(),
            notify_url: Some("https://m1.example/notify".to_string()),
            expires_in_secs: None,
            recharge_wallet: None,
        }
    }

    #[test]
    fn a_versioned_payment_is_the_request_plus_its_version() {
        let json = serde_json::to_value(Versioned::current(payment())).unwrap();
        let mut plain = serde_json::to_value(payment()).unwrap();
        plain
            .as_object_mut()
            .unwrap()
            .insert("payflow_workflow_version".into(), WORKFLOW_VERSION.into());
        assert_eq!(json, plain);
        // A worker that predates the wrapper reads the request as it was.
        let old: PaymentRequest = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(old, payment());
        let back: Versioned<PaymentRequest> = serde_json::from_value(json).unwrap();
        assert_eq!(back, Versioned::current(payment()));
    }

    #[test]
    fn an_input_without_a_version_is_version_0() {
        let plain = serde_json::to_vec(&payment()).unwrap();
        let read: Versioned<PaymentRequest> = serde_json::from_slice(&plain).unwrap();
        assert_eq!(read.version, 0);
        assert_eq!(read.request, payment());
        // And version 0 is written as the plain request.
        assert_eq!(
            serde_json::to_vec(&Versioned::unversioned(payment())).unwrap(),
            plain
        );
    }

    #[test]
    fn a_notification_keeps_its_payload_through_the_wrapper() {
        let req = NotificationRequest {
            merchant_id: MerchantId::parse("m1").unwrap(),
            event_id: EventId::parse("evt_1").unwrap(),
            event_type: "payment.succeeded".into(),
            data: serde_json::json!({"amount": {"amount": "1.00", "currency": "CNY"}, "n": 1.5}),
            priority: Priority::Batch,
            notify_url: None,
            resume: None,
        };
        let json = serde_json::to_vec(&Versioned::current(req.clone())).unwrap();
        let back: Versioned<NotificationRequest> = serde_json::from_slice(&json).unwrap();
        assert_eq!(back.request, req);
        assert_eq!(back.version, WORKFLOW_VERSION);
    }

    #[test]
    fn a_malformed_version_is_an_error() {
        let mut json = serde_json::to_value(payment()).unwrap();
        json.as_object_mut()
            .unwrap()
            .insert("payflow_workflow_version".into(), "one".into());
        assert!(serde_json::from_value::<Versioned<PaymentRequest>>(json).is_err());
    }
}
