//! Refund durability (issue 6): the worker is killed at an activity boundary of the Refund
//! workflow and started again. Each refund still ends once: its hold posted (or voided when the
//! channel declines), the channel refunding at most once, the ledger balanced.
//!
//! A worker killed while one of its activities runs leaves that attempt to the server, which
//! retries it only when the attempt's start-to-close timeout (30 s, `workflows/src/options.rs`)
//! runs out: the tests that kill mid-call take a little over 30 s.

use std::time::Duration;

use payflow::sandbox::alipay::SandboxRefundStatus;
use payflow::stack::{self, Stack};
use payflow_activities::accounting;
use payflow_activities::store::holds::HoldState;
use payflow_client::{
    OrderNo, PayState, RefundKind, RefundNo, RefundRequest, RefundState, RefundStatus,
};
use payflow_tests::{
    Db, Timing, accepted_count, assert_balanced, cny, eventually, payable, payable_pending_debits,
    payment_request, payment_where, spawn_app,
};
use rust_decimal::Decimal;

const REFUND: &str = "alipay.trade.refund";
const REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";
/// Long enough for a lost activity attempt to time out (30 s) and be retried.
const RESULT_DEADLINE: Duration = Duration::from_secs(120);
const DEADLINE: Duration = Duration::from_secs(45);

fn yuan(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn refund_request(order_no: &str, refund_no: &str, amount: &str) -> RefundRequest {
    RefundRequest {
        merchant_id: payflow_client::MerchantId::parse(stack::MERCHANT).unwrap(),
        merchant_order_no: OrderNo::parse(order_no).unwrap(),
        merchant_refund_no: RefundNo::parse(refund_no).unwrap(),
        amount: cny(amount),
        reason: "customer returned the goods".into(),
        kind: RefundKind::Merchant,
    }
}

/// Pays an order and returns its order id.
async fn paid(app: &Stack, order_no: &str, amount: &str) -> String {
    let req = payment_request(order_no, amount);
    app.payflow.pay(req.clone()).await.unwrap();
    payment_where(app, &req, "payment to succeed", |s| {
        s.state == PayState::Succeeded
    })
    .await
    .order_id
    .expect("a paid payment has an order")
}

/// Waits (with a deadline) until the refund workflow has finished, and returns its status.
async fn refund_result(app: &Stack, r: &RefundRequest) -> RefundStatus {
    tokio::time::timeout(
        RESULT_DEADLINE,
        app.payflow
            .refund_result(&r.merchant_id, &r.merchant_refund_no),
    )
    .await
    .expect("the refund finished in time")
    .expect("refund result")
}

/// Waits until the sandbox received `n` calls of `method`.
async fn wait_calls(app: &Stack, method: &str, n: u32) {
    assert!(
        app.sandbox
            .wait_until(DEADLINE, |s| s.calls(method) >= n)
            .await,
        "the channel received {n} call(s) of {method} in time"
    );
}

async fn hold_state(app: &Stack, refund_id: &str) -> Option<HoldState> {
    app.store
        .hold_state(&accounting::refund_hold_id(refund_id))
        .await
        .unwrap()
}

/// Kinds of the journal entries of an order, in order.
/// The order's entry kinds, sorted: entries posted in one transaction may share a timestamp.
async fn entry_kinds(app: &Stack, order_id: &str) -> Vec<String> {
    let mut kinds: Vec<String> = app
        .store
        .entries_for_order(order_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    kinds.sort();
    kinds
}

/// The checks every succeeded refund must pass after a crash: one channel refund of the
/// amount, the hold posted once (with its fee return), no hold left, books balanced.
async fn assert_refunded_once(app: &Stack, order_id: &str, r: &RefundStatus, amount: &str) {
    assert_eq!(r.state, RefundState::Succeeded, "{r:?}");
    let refund_id = r.refund_id.as_deref().expect("refund id");
    let at_channel = app.sandbox.order(order_id).expect("sandbox order");
    assert_eq!(at_channel.refunds.len(), 1, "{:?}", at_channel.refunds);
    assert_eq!(at_channel.refunds[0].out_request_no, refund_id);
    assert_eq!(at_channel.refunds[0].status, SandboxRefundStatus::Success);
    assert_eq!(at_channel.refunded(), yuan(amount), "refunded once");
    assert_eq!(hold_state(app, refund_id).await, Some(HoldState::Posted));
    assert_eq!(
        entry_kinds(app, order_id).await,
        vec!["payment_succeeded", "refund", "refund_fee_return"],
        "the hold posted once, with our fee's share"
    );
    let stored = app.store.refund(refund_id).await.unwrap().unwrap();
    assert_eq!(stored.state, RefundState::Succeeded);
    assert_eq!(payable_pending_debits(app).await, 0, "no hold left behind");
    assert_balanced(app).await;
    assert_eq!(accepted_count(app, "refund.succeeded", DEADLINE).await, 1);
}

/// (a) The worker dies while the channel refund call is in flight: the channel never answered
/// it. After the restart the submit is retried (same refund request no) and money moves once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_the_channel_refund_is_in_flight() {
    let Some(mut app) = spawn_app(Db::Postgres, Timing::default()).await else {
        return;
    };
    let order_id = paid(&app, "o-kill-submit", "10.00").await;
    // 10.00 less the 0.6 % fee.
    assert_eq!(payable(&app).await, 994);

    app.sandbox
        .update_knobs(|k| k.hang_methods = vec![REFUND.into()]);
    let r = refund_request("o-kill-submit", "r-kill-submit", "4.00");
    app.payflow.refund(r.clone()).await.unwrap();
    wait_calls(&app, REFUND, 1).await;
    // Reserved and held before the channel was asked.
    assert_eq!(payable_pending_debits(&app).await, 398);

    app.kill_worker().await.unwrap();
    app.sandbox.update_knobs(|k| k.hang_methods.clear());
    app.start_worker().await.unwrap();

    let status = refund_result(&app, &r).await;
    assert_refunded_once(&app, &order_id, &status, "4.00").await;
    // 4.00 back: 3.98 from the merchant, 0.02 of our fee (0.06 x 4/10 = 0.024, half-up).
    assert_eq!(payable(&app).await, 596);
    let order = app.store.order(&order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::PartiallyRefunded);
    app.shutdown().await.unwrap();
}

/// (b) The worker dies while the workflow waits for a refund the channel is still processing
/// (submitted, queried once, timer pending); the channel finishes meanwhile. After the restart
/// the query finds it done: no second submit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_waiting_for_a_processing_refund() {
    let timing = Timing {
        query_schedule_ms: vec![1_000],
        ..Timing::default()
    };
    let Some(mut app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    let order_id = paid(&app, "o-kill-wait", "5.00").await;
    app.sandbox
        .update_knobs(|k| k.refund_processing_ms = Some(5_000));
    let r = refund_request("o-kill-wait", "r-kill-wait", "5.00");
    app.payflow.refund(r.clone()).await.unwrap();

    // The channel has the refund, and the workflow has seen it processing at least once.
    app.sandbox
        .wait_for(&order_id, DEADLINE, |o| !o.refunds.is_empty())
        .await
        .expect("the channel recorded the refund");
    let seen = eventually(DEADLINE, "a refund query answered processing", || async {
        let s = app
            .payflow
            .refund_status(&r.merchant_id, &r.merchant_refund_no)
            .await
            .ok()?;
        (s.queries_made >= 1).then_some(s)
    })
    .await;
    assert_eq!(seen.state, RefundState::Processing);
    let refund_id = seen.refund_id.clone().expect("refund id");
    assert_eq!(
        app.sandbox.refund(&order_id, &refund_id).unwrap().status,
        SandboxRefundStatus::Processing,
        "killed while the channel is still processing"
    );

    app.kill_worker().await.unwrap();
    // The channel completes the refund while no worker runs.
    app.sandbox
        .wait_for(&order_id, DEADLINE, |o| o.refunded() == yuan("5.00"))
        .await
        .expect("the channel completed the refund");
    app.start_worker().await.unwrap();

    let status = refund_result(&app, &r).await;
    assert_refunded_once(&app, &order_id, &status, "5.00").await;
    assert!(
        status.queries_made > seen.queries_made,
        "confirmed by a query after the restart: {status:?}"
    );
    assert_eq!(app.sandbox.calls(REFUND), 1, "submitted once");
    assert!(app.sandbox.calls(REFUND_QUERY) >= 2);
    // Refunded in full: the merchant's balance and our fee are back to zero.
    assert_eq!(payable(&app).await, 0);
    let fees = app
        .store
        .account_balance(accounting::PLATFORM_FEES)
        .await
        .unwrap();
    assert_eq!(fees.posted_net().minor_units(), 0);
    let order = app.store.order(&order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::Refunded);
    app.shutdown().await.unwrap();
}

/// (a') The worker dies while a refund query is in flight; the query is retried after the
/// restart and the refund completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_a_refund_query_is_in_flight() {
    let timing = Timing {
        query_schedule_ms: vec![300],
        ..Timing::default()
    };
    let Some(mut app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    let order_id = paid(&app, "o-kill-query", "8.00").await;
    app.sandbox.update_knobs(|k| {
        k.refund_processing_ms = Some(200);
        k.hang_methods = vec![REFUND_QUERY.into()];
    });
    let r = refund_request("o-kill-query", "r-kill-query", "3.00");
    app.payflow.refund(r.clone()).await.unwrap();
    wait_calls(&app, REFUND_QUERY, 1).await;

    app.kill_worker().await.unwrap();
    app.sandbox.update_knobs(|k| k.hang_methods.clear());
    app.start_worker().await.unwrap();

    let status = refund_result(&app, &r).await;
    assert_refunded_once(&app, &order_id, &status, "3.00").await;
    assert_eq!(app.sandbox.calls(REFUND), 1, "submitted once");
    let order = app.store.order(&order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::PartiallyRefunded);
    app.shutdown().await.unwrap();
}

/// (c) The channel declines the refund, and the worker dies while the declining call is in
/// flight. After the restart the refund fails: its hold voided, nothing moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_the_channel_declines_a_refund() {
    let Some(mut app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    let order_id = paid(&app, "o-kill-decline", "5.00").await;
    let before = payable(&app).await;
    app.sandbox.update_knobs(|k| {
        k.refund_decline = Some(("ACQ.SELLER_BALANCE_NOT_ENOUGH".into(), "no balance".into()));
        k.hang_methods = vec![REFUND.into()];
    });
    let r = refund_request("o-kill-decline", "r-kill-decline", "2.00");
    app.payflow.refund(r.clone()).await.unwrap();
    wait_calls(&app, REFUND, 1).await;
    assert!(
        payable_pending_debits(&app).await > 0,
        "held before the call"
    );

    app.kill_worker().await.unwrap();
    app.sandbox.update_knobs(|k| k.hang_methods.clear());
    assert!(app.sandbox.knobs().refund_decline.is_some());
    app.start_worker().await.unwrap();

    let status = refund_result(&app, &r).await;
    assert_eq!(status.state, RefundState::Failed, "{status:?}");
    assert_eq!(
        status.failure.as_ref().unwrap().code,
        "ACQ.SELLER_BALANCE_NOT_ENOUGH"
    );
    let refund_id = status.refund_id.as_deref().expect("refund id");
    assert_eq!(hold_state(&app, refund_id).await, Some(HoldState::Voided));
    let stored = app.store.refund(refund_id).await.unwrap().unwrap();
    assert_eq!(stored.state, RefundState::Failed);
    // The channel moved nothing ...
    let at_channel = app.sandbox.order(&order_id).unwrap();
    assert!(at_channel.refunds.is_empty(), "{:?}", at_channel.refunds);
    assert_eq!(at_channel.refunded(), Decimal::ZERO);
    // ... and neither did we.
    assert_eq!(payable(&app).await, before);
    assert_eq!(payable_pending_debits(&app).await, 0, "no hold left behind");
    assert_eq!(
        entry_kinds(&app, &order_id).await,
        vec!["payment_succeeded"]
    );
    let order = app.store.order(&order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::Succeeded, "nothing refunded");
    assert_balanced(&app).await;
    assert_eq!(accepted_count(&app, "refund.failed", DEADLINE).await, 1);
    app.shutdown().await.unwrap();
}
