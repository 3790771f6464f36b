//! # payflow-client
//!
//! The contract between services and payflow: request/response types, [`Money`], validated
//! ids, the typed workflow definitions ([`definitions`]) and the [`Payflow`] facade over the
//! Temporal client. Light on purpose: no database, no HTTP server.
//!
//! Layout: `money` (Money, Currency), `ids` (MerchantId, OrderNo, workflow ids), `payment`,
//! `refund`, `transfer` and `notification` (request/status types), `definitions` (names, task queues, typed
//! workflow/signal/query/update markers), `facade` (`Payflow`), `codec` (payload encryption).

pub mod codec;
pub mod definitions;
pub mod facade;
pub mod ids;
pub mod ledger;
pub mod money;
pub mod notification;
pub mod payment;
pub mod recon;
pub mod refund;
pub mod transfer;
pub mod versioned;

pub use codec::{CodecError, EncryptionCodec, EncryptionKey};
pub use facade::{Payflow, PayflowError, PayflowOptions};
pub use ids::{
    EventId, IdError, MerchantId, OrderNo, PayoutNo, ProductId, RefundNo, TransferNo, WalletId,
};
pub use ledger::{AccountBalanceView, EntryView, LedgerAnswer, LedgerRequest, PostingView};
pub use money::{Currency, Money, MoneyError};
pub use notification::{
    DeliveryAttempt, NotificationRequest, NotificationResume, NotificationStatus, NotifyState,
    Priority,
};
pub use payment::{
    ChannelFailure, ChannelNotice, PayState, PaymentRequest, PaymentStatus, Prepay, RequestError,
    Resolution,
};
pub use recon::{
    ReconDailyRequest, ReconDiscrepancy, ReconDiscrepancyKind, ReconKindCount, ReconRequest,
    ReconRequestError, ReconSide, ReconState, ReconStatus, ReconSubject, ReconSummary, ReconTotal,
    ReconValues,
};
pub use refund::{RefundKind, RefundRequest, RefundRequestError, RefundState, RefundStatus};
pub use transfer::{
    PayoutDecision, PayoutRequest, PayoutState, PayoutStatus, TransferRequest, TransferState,
    TransferStatus,
};
pub use versioned::{Versioned, WORKFLOW_VERSION};

/// The README's examples, compiled as doc tests so they cannot drift from the API.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
