//! # payflow-workflows
//!
//! Deterministic workflow code: no I/O, no clocks, no randomness except through the workflow
//! context. Each business noun has its workflow (`payment`, `refund`, `notification`) and its pure state
//! machine under `state/`. Activities are named through their typed definitions from
//! `payflow-activities`; workflow code never calls store or HTTP code directly.

pub mod ledger_read;
pub mod merchant_events;
pub mod notification;
pub mod options;
pub mod payment;
pub mod payout;
pub mod reconciliation;
pub mod refund;
pub mod schedule;
pub mod state;
pub mod transfer;
pub mod versioning;

pub use ledger_read::LedgerRead;
pub use notification::Notification;
pub use payment::Payment;
pub use payout::Payout;
pub use reconciliation::{ReconDaily, Reconciliation};
pub use refund::Refund;
pub use transfer::Transfer;
