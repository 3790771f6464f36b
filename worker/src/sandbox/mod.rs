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

/// Waits until `check` holds, checking again after each change `changed` announces, or until
/// the deadline passes; `true` when it held. Both sandboxes' `wait_until`.
pub(crate) async fn wait_for_change(
    changed: &tokio::sync::watch::Sender<u64>,
    deadline: std::time::Duration,
    mut check: impl FnMut() -> bool,
) -> bool {
    let mut rx = changed.subscribe();
    tokio::time::timeout(deadline, async {
        loop {
            // Subscribed before checking, so a change after the check wakes us.
            rx.borrow_and_update();
            if check() {
                return;
            }
            if rx.changed().await.is_err() {
                // The sandbox stopped; nothing more will change.
                std::future::pending::<()>().await;
            }
        }
    })
    .await
    .is_ok()
}
