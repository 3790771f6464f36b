//! The typed names of payflow's workflows and their messages, as services see them.
//!
//! These are the SDK's definition traits (a name plus input/output types) implemented on marker
//! types, so a service can start and signal payflow workflows while depending on this crate
//! only. `payflow-workflows` implements each name (its `#[run(name = ...)]` attributes use the
//! constants below, and a test checks the two agree).

use temporalio_common::{
    HasWorkflowDefinition, QueryDefinition, SignalDefinition, UpdateDefinition, WorkflowDefinition,
};

use crate::ledger::{LedgerAnswer, LedgerRequest};
use crate::notification::{NotificationRequest, NotificationStatus};
use crate::payment::{ChannelNotice, PaymentRequest, PaymentStatus, Prepay, Resolution};
use crate::recon::{ReconDailyRequest, ReconRequest, ReconStatus, ReconSummary};
use crate::refund::{RefundRequest, RefundStatus};
use crate::transfer::{
    PayoutDecision, PayoutRequest, PayoutStatus, TransferRequest, TransferStatus,
};
use crate::versioned::Versioned;

/// Workflow, signal, query and update names: the wire contract.
pub mod names {
    pub const PAYMENT: &str = "Payment";
    pub const NOTIFICATION: &str = "Notification";
    pub const REFUND: &str = "Refund";
    pub const TRANSFER: &str = "Transfer";
    pub const PAYOUT: &str = "Payout";
    pub const LEDGER_READ: &str = "LedgerRead";
    pub const RECONCILIATION: &str = "Reconciliation";
    /// Started by the daily Temporal Schedule: starts yesterday's `Reconciliation`.
    pub const RECON_DAILY: &str = "ReconDaily";

    /// Signal from the ingress: the channel says something happened to the payment.
    pub const CHANNEL_NOTIFIED: &str = "channel_notified";
    /// Update used by `pay` for the early return of the prepay credential.
    pub const PREPAY: &str = "prepay";
    /// Update: the merchant closes an unpaid payment.
    pub const CLOSE: &str = "close";
    /// Operator signal: decide a payment in `Exception` (accept or refund).
    pub const RESOLVE: &str = "resolve";
    /// Operator signal: approve or reject a payout waiting for review.
    pub const REVIEW: &str = "review";
    /// Query answered by every payflow workflow.
    pub const STATUS: &str = "status";

    /// Operator signal: deliver again now (after exhaustion: a fresh attempt cycle).
    pub const RESEND: &str = "resend";
    /// Operator signal: skip the current wait before the next attempt.
    pub const RETRY_NOW: &str = "retry_now";
    /// Worker to Notification: the merchant it waits for has room now.
    pub const WAKE: &str = "wake";
    /// Operator signal: a reconciliation parked in `Manual` tries again (a fresh statement
    /// retry cycle).
    pub const RETRY: &str = "retry";
}

/// Task queues. Notifications get their own so a slow merchant never holds payment work.
pub mod task_queues {
    pub const PAYMENTS: &str = "payflow-payments";
    pub const NOTIFY_REALTIME: &str = "payflow-notify-realtime";
    pub const NOTIFY_BATCH: &str = "payflow-notify-batch";
    /// Deliveries whose first attempt failed or had to wait for the merchant continue here,
    /// with their own worker slots, so waiting for a bad merchant never delays first attempts.
    pub const NOTIFY_RETRY: &str = "payflow-notify-retry";
    /// Reconciliation runs (long downloads and many channel queries) and their daily starter,
    /// on worker slots of their own.
    pub const RECON: &str = "payflow-recon";
}

macro_rules! workflow_def {
    ($(#[$doc:meta])* $name:ident, $wf_name:expr, $input:ty, $output:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;
        impl WorkflowDefinition for $name {
            type Input = $input;
            type Output = $output;
            fn name(&self) -> &str {
                $wf_name
            }
        }
        impl HasWorkflowDefinition for $name {
            type Run = $name;
        }
    };
}

macro_rules! message_def {
    ($(#[$doc:meta])* signal $name:ident, $wf:ty, $msg:expr, $input:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;
        impl SignalDefinition for $name {
            type Workflow = $wf;
            type Input = $input;
            fn name(&self) -> &str {
                $msg
            }
        }
    };
    ($(#[$doc:meta])* query $name:ident, $wf:ty, $msg:expr, $input:ty, $output:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;
        impl QueryDefinition for $name {
            type Workflow = $wf;
            type Input = $input;
            type Output = $output;
            fn name(&self) -> &str {
                $msg
            }
        }
    };
    ($(#[$doc:meta])* update $name:ident, $wf:ty, $msg:expr, $input:ty, $output:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;
        impl UpdateDefinition for $name {
            type Workflow = $wf;
            type Input = $input;
            type Output = $output;
            fn name(&self) -> &str {
                $msg
            }
        }
    };
}

workflow_def!(
    /// `pay/{merchant}/{merchant_order_no}`: one payment, from prepay to the merchant's callback.
    PaymentWorkflow, names::PAYMENT, Versioned<PaymentRequest>, PaymentStatus
);
message_def!(
    /// The channel's asynchronous notification, forwarded by the ingress.
    signal ChannelNotified, PaymentWorkflow, names::CHANNEL_NOTIFIED, ChannelNotice
);
message_def!(
    /// Waits until the channel's prepay credential is known and returns it. Carries the
    /// caller's request so a repeated order no with different terms is refused as a conflict.
    update PrepayUpdate, PaymentWorkflow, names::PREPAY, PaymentRequest, Prepay
);
message_def!(
    /// Closes an unpaid payment; answers the final state.
    update ClosePayment, PaymentWorkflow, names::CLOSE, (), crate::payment::PayState
);
message_def!(
    query PaymentStatusQuery, PaymentWorkflow, names::STATUS, (), PaymentStatus
);

message_def!(
    /// Operator decision on a payment in `Exception`.
    signal ResolvePayment, PaymentWorkflow, names::RESOLVE, Resolution
);

workflow_def!(
    /// `refund/{merchant}/{merchant_refund_no}`: reserve, hold, refund at the channel, confirm.
    RefundWorkflow, names::REFUND, RefundRequest, RefundStatus
);
message_def!(
    query RefundStatusQuery, RefundWorkflow, names::STATUS, (), RefundStatus
);

workflow_def!(
    /// `transfer/{transfer_no}`: wallet to wallet inside the ledger (hold, confirm).
    TransferWorkflow, names::TRANSFER, TransferRequest, TransferStatus
);
message_def!(
    query TransferStatusQuery, TransferWorkflow, names::STATUS, (), TransferStatus
);

workflow_def!(
    /// `payout/{merchant}/{payout_no}`: hold, review when large, submit once, query until
    /// definite, post or void.
    PayoutWorkflow, names::PAYOUT, PayoutRequest, PayoutStatus
);
message_def!(
    query PayoutStatusQuery, PayoutWorkflow, names::STATUS, (), PayoutStatus
);
message_def!(
    /// Operator review of a large payout.
    signal ReviewPayout, PayoutWorkflow, names::REVIEW, PayoutDecision
);

workflow_def!(
    /// `ledger-read/{uuid}`: one read of the ledger through Temporal, so services need no
    /// database access of their own.
    LedgerReadWorkflow, names::LEDGER_READ, LedgerRequest, LedgerAnswer
);

workflow_def!(
    /// `recon/{channel}/{yyyy-mm-dd}`: download the channel's statement of the day (retried
    /// until available, else parked `Manual`), compare both ways, confirm each difference with
    /// the channel, record, report.
    ReconciliationWorkflow, names::RECONCILIATION, ReconRequest, ReconSummary
);
message_def!(
    query ReconStatusQuery, ReconciliationWorkflow, names::STATUS, (), ReconStatus
);
message_def!(
    /// Operator: try a run parked in `Manual` again.
    signal RetryReconciliation, ReconciliationWorkflow, names::RETRY, ()
);
workflow_def!(
    /// Started by the schedule `recon-daily/{channel}`: starts yesterday's (Beijing time)
    /// `recon/{channel}/{date}` and returns its workflow id.
    ReconDailyWorkflow, names::RECON_DAILY, ReconDailyRequest, String
);

workflow_def!(
    /// `notify/{merchant}/{event_id}`: sign, deliver, retry on a schedule, park for resend.
    NotificationWorkflow, names::NOTIFICATION, Versioned<NotificationRequest>, NotificationStatus
);
message_def!(
    query NotificationStatusQuery, NotificationWorkflow, names::STATUS, (), NotificationStatus
);
message_def!(
    signal Resend, NotificationWorkflow, names::RESEND, ()
);
message_def!(
    signal RetryNow, NotificationWorkflow, names::RETRY_NOW, ()
);
message_def!(
    /// Sent by the worker's merchant gate to a deferred delivery when its merchant has room.
    signal Wake, NotificationWorkflow, names::WAKE, ()
);

/// Search attributes payflow workflows upsert, with their Temporal types. Registered by
/// `payflow dev` / the test harness (dev server flags) and `payflow admin setup` (clusters).
pub mod search_attributes {
    use temporalio_common::search_attributes::SearchAttributeKey;

    pub const MERCHANT_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("MerchantId");
    pub const ORDER_NO: SearchAttributeKey<String> = SearchAttributeKey::keyword("OrderNo");
    pub const PAY_STATE: SearchAttributeKey<String> = SearchAttributeKey::keyword("PayState");
    pub const CHANNEL: SearchAttributeKey<String> = SearchAttributeKey::keyword("Channel");
    pub const AMOUNT_MINOR: SearchAttributeKey<i64> = SearchAttributeKey::int("AmountMinor");
    pub const NOTIFY_STATE: SearchAttributeKey<String> = SearchAttributeKey::keyword("NotifyState");
    pub const RECON_STATE: SearchAttributeKey<String> = SearchAttributeKey::keyword("ReconState");

    /// `(name, type)` as `temporal server start-dev --search-attribute NAME=TYPE` takes them.
    pub const ALL: [(&str, &str); 7] = [
        ("MerchantId", "Keyword"),
        ("OrderNo", "Keyword"),
        ("PayState", "Keyword"),
        ("Channel", "Keyword"),
        ("AmountMinor", "Int"),
        ("NotifyState", "Keyword"),
        ("ReconState", "Keyword"),
    ];
}
