//! `payflow sandbox`: local payment channels speaking the Alipay OpenAPI protocol
//! ([`alipay`]) and the WeChat Pay API v3 protocol ([`wechat`], its own server, same knobs).
//!
//! Each signs its responses and notifications with its own key pair, verifies our requests with
//! our public key, keeps orders in memory, and posts notifications to the `notify_url` of each
//! order, re-posting on its retry schedule until acknowledged as the real channel wants it
//! (exactly `success` for Alipay, any 2xx for WeChat Pay). Customers "pay" after a configured delay, or when told to through the
//! control endpoint `POST /sandbox/orders/{out_trade_no}/pay`.

pub mod alipay;
pub mod wechat;

pub use alipay::{
    ExtraLine, Knobs, NotifyMode, PayoutMode, SandboxConfig, SandboxHandle, SandboxOrder,
    SandboxStatus, StatementKnobs, spawn,
};
