//! Payout durability (issue 6): the worker is killed at an activity boundary of the Payout
//! workflow and started again. Each payout still ends once: its hold posted (or voided when the
//! channel fails it), the channel paying at most once, the ledger balanced.
//!
//! A worker killed while one of its activities runs leaves that attempt to the server, which
//! notices only when the attempt's start-to-close timeout (30 s, `workflows/src/options.rs`)
//! runs out: every test here kills mid-call and takes a little over 30 s. The submit is a
//! single attempt: its timeout is an unknown outcome, which the workflow resolves by querying
//! the channel (resubmitting, same `out_biz_no`, only when the channel has no record of it).
//!
//! The sandbox counts a hung call when it arrives and applies it only once its method is no
//! longer hung; the killed worker's connection closes meanwhile, and whether the server still
//! applies the abandoned call when the hang clears depends on when it notices. So after a kill
//! during the submit, the channel either has the payout (the workflow's query finds it) or has
//! never heard of it (the query says so and the workflow submits again): the tests accept both
//! and check what must hold either way.

use std::time::Duration;

use payflow::sandbox::PayoutMode;
use payflow::sandbox::alipay::SandboxPayoutStatus;
use payflow::stack::{self, Stack};
use payflow_activities::accounting;
use payflow_activities::store::holds::HoldState;
use payflow_client::{
    Currency, MerchantId, Money, PayState, PayoutNo, PayoutRequest, PayoutState, PayoutStatus,
};
use payflow_tests::{
    Db, Timing, accepted_count, assert_balanced, payable, payable_pending_debits, payment_request,
    payment_where, spawn_app,
};

const TRANSFER: &str = "alipay.fund.trans.uni.transfer";
const TRANSFER_QUERY: &str = "alipay.fund.trans.common.query";
/// Long enough for a lost activity attempt to time out (30 s) and the workflow to go on.
const RESULT_DEADLINE: Duration = Duration::from_secs(120);
const DEADLINE: Duration = Duration::from_secs(45);
/// The merchant's balance after the funding payment: 100.00 less our 0.6 % fee.
const FUNDED: i64 = 9940;

fn payout_request(no: &str, amount: &str) -> PayoutRequest {
    PayoutRequest {
        merchant_id: MerchantId::parse(stack::MERCHANT).unwrap(),
        payout_no: PayoutNo::parse(no).unwrap(),
        amount: Money::parse(amount, Currency::Cny).unwrap(),
        channel: stack::CHANNEL.into(),
        payee_account: "merchant-bank@example.com".into(),
        payee_name: "Demo Merchant Ltd".into(),
        remark: "weekly settlement".into(),
    }
}

/// A paid 100.00 order funds the merchant's balance.
async fn funded(app: &Stack) {
    let req = payment_request("o-funds", "100.00");
    app.payflow.pay(req.clone()).await.unwrap();
    payment_where(app, &req, "funding payment", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    assert_eq!(payable(app).await, FUNDED);
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

/// Starts the payout and waits until its submit is in flight (hung at the channel), the funds
/// held; returns the workflow's status then (queried while the worker still runs).
async fn start_payout_in_flight(app: &Stack, req: &PayoutRequest, method: &str) -> PayoutStatus {
    app.payflow.payout(req.clone()).await.unwrap();
    wait_calls(app, method, 1).await;
    let status = app
        .payflow
        .payout_status(&req.merchant_id, &req.payout_no)
        .await
        .unwrap();
    assert_eq!(status.state, PayoutState::Submitted, "{status:?}");
    assert_eq!(status.submits, 1);
    assert_eq!(
        payable_pending_debits(app).await,
        req.amount.minor_units(),
        "held before the channel was asked"
    );
    status
}

/// Kills the worker, lets hung calls go, and starts a worker again.
async fn crash_and_restart(app: &mut Stack) {
    app.kill_worker().await.unwrap();
    app.sandbox.update_knobs(|k| k.hang_methods.clear());
    app.start_worker().await.unwrap();
}

/// Waits (with a deadline) until the payout workflow has finished, and returns its status.
async fn payout_result(app: &Stack, r: &PayoutRequest) -> PayoutStatus {
    tokio::time::timeout(
        RESULT_DEADLINE,
        app.payflow.payout_result(&r.merchant_id, &r.payout_no),
    )
    .await
    .expect("the payout finished in time")
    .expect("payout result")
}

/// The hold ended as `expected`, nothing is left pending, the books balance.
async fn assert_settled(app: &Stack, payout_id: &str, expected: HoldState) {
    let hold = accounting::payout_hold_id(payout_id);
    assert_eq!(app.store.hold_state(&hold).await.unwrap(), Some(expected));
    assert_eq!(payable_pending_debits(app).await, 0, "no hold left behind");
    assert_balanced(app).await;
}

/// (a) The worker dies while the submit is in flight. After the restart the lost attempt times
/// out as an unknown outcome, the workflow queries (and submits again only if the channel never
/// recorded it), and the money leaves once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_the_payout_submit_is_in_flight() {
    let timing = Timing {
        query_schedule_ms: vec![200],
        ..Timing::default()
    };
    let Some(mut app) = spawn_app(Db::Postgres, timing).await else {
        return;
    };
    funded(&app).await;
    app.sandbox
        .update_knobs(|k| k.hang_methods = vec![TRANSFER.into()]);
    let r = payout_request("p-kill-submit", "50.00");
    let before = start_payout_in_flight(&app, &r, TRANSFER).await;
    let payout_id = before.payout_id.expect("payout id");
    assert!(app.sandbox.payout(&payout_id).is_none(), "not applied yet");

    crash_and_restart(&mut app).await;

    let s = payout_result(&app, &r).await;
    assert_eq!(s.state, PayoutState::Succeeded, "{s:?}");
    assert_eq!(s.payout_id.as_deref(), Some(payout_id.as_str()));
    assert!(
        s.queries_made >= 1,
        "the unknown outcome was queried: {s:?}"
    );
    assert!(
        (1..=2).contains(&s.submits),
        "resubmitted at most once: {s:?}"
    );
    // Every submit reached the channel, the hung one included.
    assert_eq!(app.sandbox.calls(TRANSFER), s.submits);
    let at_channel = app
        .sandbox
        .payout(&payout_id)
        .expect("the channel's record");
    eprintln!(
        "payout submit in flight: workflow submits {}, channel applied {} submit(s), {} queries",
        s.submits, at_channel.submits, s.queries_made
    );
    assert!(at_channel.submits <= s.submits, "{at_channel:?}");
    assert_eq!(at_channel.status, SandboxPayoutStatus::Success);
    assert_eq!(app.sandbox.payouts_executed(&payout_id), 1, "paid once");
    assert_eq!(s.channel_order_id.as_ref(), Some(&at_channel.order_id));
    assert_eq!(payable(&app).await, FUNDED - 5000, "posted once");
    assert_settled(&app, &payout_id, HoldState::Posted).await;
    assert_eq!(accepted_count(&app, "payout.succeeded", DEADLINE).await, 1);
    app.shutdown().await.unwrap();
}

/// (b) The channel took the payout as dealing, and the worker dies while the workflow's query
/// is in flight; the channel pays meanwhile. After the restart the query is retried, finds it
/// paid, and the hold is posted: no second submit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_querying_a_dealing_payout() {
    let timing = Timing {
        query_schedule_ms: vec![200],
        ..Timing::default()
    };
    let Some(mut app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    funded(&app).await;
    app.sandbox.update_knobs(|k| {
        // Long enough to be still dealing when the worker dies, well within the 30 s it is down.
        k.payout = PayoutMode::Dealing(Duration::from_secs(5));
        k.hang_methods = vec![TRANSFER_QUERY.into()];
    });
    let r = payout_request("p-kill-query", "10.00");
    let before = start_payout_in_flight(&app, &r, TRANSFER_QUERY).await;
    assert_eq!(before.queries_made, 0, "the first query is in flight");
    let payout_id = before.payout_id.expect("payout id");
    assert_eq!(
        app.sandbox.payout(&payout_id).expect("submitted").status,
        SandboxPayoutStatus::Dealing,
        "killed while the channel is still dealing"
    );

    app.kill_worker().await.unwrap();
    // The channel pays while no worker runs.
    assert!(
        app.sandbox
            .wait_until(DEADLINE, |s| s.payouts_executed(&payout_id) == 1)
            .await,
        "the channel paid the dealing payout"
    );
    app.sandbox.update_knobs(|k| k.hang_methods.clear());
    app.start_worker().await.unwrap();

    let s = payout_result(&app, &r).await;
    assert_eq!(s.state, PayoutState::Succeeded, "{s:?}");
    assert_eq!(s.submits, 1, "submitted once");
    assert_eq!(
        s.queries_made, 1,
        "the lost query, retried, answered: {s:?}"
    );
    assert_eq!(app.sandbox.calls(TRANSFER), 1);
    assert!(app.sandbox.calls(TRANSFER_QUERY) >= 2, "queried again");
    let at_channel = app.sandbox.payout(&payout_id).unwrap();
    assert_eq!(at_channel.status, SandboxPayoutStatus::Success);
    assert_eq!(at_channel.submits, 1);
    assert_eq!(app.sandbox.payouts_executed(&payout_id), 1, "paid once");
    assert_eq!(s.channel_order_id.as_ref(), Some(&at_channel.order_id));
    assert_eq!(payable(&app).await, FUNDED - 1000, "posted once");
    assert_settled(&app, &payout_id, HoldState::Posted).await;
    assert_eq!(accepted_count(&app, "payout.succeeded", DEADLINE).await, 1);
    app.shutdown().await.unwrap();
}

/// (c) The channel fails the payout, and the worker dies while the submit is in flight. After
/// the restart the payout ends failed: its hold voided, nothing paid, the balance unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_submitting_a_payout_the_channel_fails() {
    let timing = Timing {
        query_schedule_ms: vec![200],
        ..Timing::default()
    };
    let Some(mut app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    funded(&app).await;
    app.sandbox.update_knobs(|k| {
        k.payout = PayoutMode::Fail {
            code: "PAYEE_NOT_EXIST".into(),
            reason: "no such account".into(),
        };
        k.hang_methods = vec![TRANSFER.into()];
    });
    let r = payout_request("p-kill-fail", "10.00");
    let before = start_payout_in_flight(&app, &r, TRANSFER).await;
    let payout_id = before.payout_id.expect("payout id");

    crash_and_restart(&mut app).await;
    assert!(matches!(
        app.sandbox.knobs().payout,
        PayoutMode::Fail { .. }
    ));

    let s = payout_result(&app, &r).await;
    assert_eq!(s.state, PayoutState::Failed, "{s:?}");
    assert!(
        s.queries_made >= 1,
        "the unknown outcome was queried: {s:?}"
    );
    assert!(
        (1..=2).contains(&s.submits),
        "resubmitted at most once: {s:?}"
    );
    assert_eq!(app.sandbox.calls(TRANSFER), s.submits);
    let failure = s.failure.as_ref().expect("the channel's failure");
    // Learnt from the query (which tells the reason), or from the answer to the resubmit
    // (which only says FAIL).
    let expected = if s.submits == 1 {
        "PAYEE_NOT_EXIST"
    } else {
        "FAIL"
    };
    assert_eq!(failure.code, expected, "{s:?}");
    let at_channel = app
        .sandbox
        .payout(&payout_id)
        .expect("the channel's record");
    eprintln!(
        "failing payout submit in flight: workflow submits {}, channel applied {} submit(s)",
        s.submits, at_channel.submits
    );
    assert!(
        matches!(at_channel.status, SandboxPayoutStatus::Fail { .. }),
        "{at_channel:?}"
    );
    assert_eq!(app.sandbox.payouts_executed(&payout_id), 0, "nothing paid");
    assert_eq!(payable(&app).await, FUNDED, "nothing left the balance");
    assert_settled(&app, &payout_id, HoldState::Voided).await;
    assert_eq!(accepted_count(&app, "payout.failed", DEADLINE).await, 1);
    app.shutdown().await.unwrap();
}
