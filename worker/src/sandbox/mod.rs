//! `payflow sandbox`: a local payment channel speaking the Alipay OpenAPI protocol.
//!
//! It signs its responses and notifications with its own key pair, verifies our requests with
//! the app public key, keeps orders in memory, and posts notifications to the `notify_url` of
//! each order, re-posting on its retry schedule until it receives exactly `success`, as the
//! real channel does. Customers "pay" after a configured delay, or when told to through the
//! control endpoint `POST /sandbox/orders/{out_trade_no}/pay`.

pub mod alipay;

pub use alipay::{
    Knobs, NotifyMode, PayoutMode, SandboxConfig, SandboxHandle, SandboxOrder, spawn,
};
