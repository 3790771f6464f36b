//! # payflow-activities
//!
//! Every side effect payflow performs, each idempotent:
//! - `channels/`: one module per channel protocol (`alipay`), behind the `Channel` trait;
//! - `store/`: sqlx on SQLite or PostgreSQL: orders (compare-and-set), ledger, notices;
//! - `accounting`: the rules that turn business events into balanced journal entries;
//! - `notify/`: signed HTTP delivery of merchant callbacks;
//! - `crypto/`: RSA2 and Standard Webhooks signatures;
//! - `merchants`, `routing`, `risk`, `health`: configured merchants, products, risk limits and
//!   channel health;
//! - `metrics`: business metrics (payments, callbacks, channel calls, ledger) for Prometheus;
//! - `payment`, `refund`, `transfer`, `payout`, `notification`, `reconciliation`: the Temporal
//!   activities workflows call (`recon/` is the reconciliation library they use).

pub mod accounting;
pub mod channels;
pub mod crypto;
pub mod health;
pub mod ledger_read;
pub mod merchant_gate;
pub mod merchants;
pub mod metrics;
pub mod notification;
pub mod notify;
pub mod payment;
pub mod payout;
pub mod recon;
pub mod reconciliation;
pub mod refund;
pub mod risk;
pub mod routing;
pub mod services;
pub mod store;
pub mod tls;
pub mod transfer;

pub use ledger_read::LedgerActivities;
pub use notification::NotifyActivities;
pub use payment::PaymentActivities;
pub use payout::PayoutActivities;
pub use reconciliation::{ReconActivities, ReconSettings};
pub use refund::RefundActivities;
pub use services::{PaymentTiming, PayoutPolicy, Services, SharedServices};
pub use transfer::TransferActivities;
