//! Money out and across: payouts through the channel (hold, review, submit once, query, post
//! or void) and wallet-to-wallet transfers.

use std::time::Duration;

use payflow::sandbox::PayoutMode;
use payflow::stack::{self, Stack};
use payflow_activities::accounting;
use payflow_activities::store::holds::HoldState;
use payflow_client::{
    MerchantId, OrderNo, PayState, PaymentRequest, PayoutDecision, PayoutNo, PayoutRequest,
    PayoutState, PayoutStatus, RefundKind, RefundNo, RefundRequest, RefundState, TransferNo,
    TransferRequest, TransferState, WalletId,
};
use payflow_tests::{
    Db, Timing, accepted_types, assert_balanced, cny, eventually, payable, payable_pending_debits,
    payment_request, payment_where, spawn_app,
};

fn merchant() -> MerchantId {
    MerchantId::parse(stack::MERCHANT).unwrap()
}

fn payout_request(no: &str, amount: &str) -> PayoutRequest {
    PayoutRequest {
        merchant_id: merchant(),
        payout_no: PayoutNo::parse(no).unwrap(),
        amount: cny(amount),
        channel: stack::CHANNEL.into(),
        payee_account: "merchant-bank@example.com".into(),
        payee_name: "Demo Merchant Ltd".into(),
        remark: "weekly settlement".into(),
    }
}

/// A paid 100.00 order: the merchant's balance is 99.40 after our 0.6 % fee.
async fn funded(app: &Stack) {
    let req = payment_request("o-funds", "100.00");
    app.payflow.pay(req.clone()).await.unwrap();
    payment_where(app, &req, "funding payment", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    assert_eq!(payable(app).await, 9940);
}

async fn payout(app: &Stack, req: PayoutRequest) -> PayoutStatus {
    app.payflow.payout(req.clone()).await.unwrap();
    app.payflow
        .payout_result(&req.merchant_id, &req.payout_no)
        .await
        .unwrap()
}

async fn assert_settled(app: &Stack, status: &PayoutStatus, expected: HoldState) {
    let hold = accounting::payout_hold_id(status.payout_id.as_deref().unwrap());
    assert_eq!(app.store.hold_state(&hold).await.unwrap(), Some(expected));
    assert_eq!(payable_pending_debits(app).await, 0, "no hold left pending");
    assert_balanced(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_pays_once_and_posts() {
    let Some(app) = spawn_app(Db::Postgres, Timing::default()).await else {
        return;
    };
    funded(&app).await;
    let s = payout(&app, payout_request("p-1", "50.00")).await;
    assert_eq!(s.state, PayoutState::Succeeded, "{s:?}");
    assert_eq!(s.submits, 1);
    assert!(s.channel_order_id.is_some());
    assert_eq!(payable(&app).await, 4940);
    assert_eq!(
        app.sandbox
            .payouts_executed(s.payout_id.as_deref().unwrap()),
        1
    );
    assert_settled(&app, &s, HoldState::Posted).await;

    // The same payout no again is the same payout.
    let again = payout(&app, payout_request("p-1", "50.00")).await;
    assert_eq!(again.payout_id, s.payout_id);
    assert_eq!(app.sandbox.calls("alipay.fund.trans.uni.transfer"), 1);

    let got = app
        .merchant
        .wait_for(Duration::from_secs(45), |got| {
            accepted_types(got).iter().any(|t| t == "payout.succeeded")
        })
        .await
        .expect("payout callback");
    assert_eq!(
        accepted_types(&got)
            .iter()
            .filter(|t| *t == "payout.succeeded")
            .count(),
        1
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_beyond_the_balance_is_refused_and_holds_nothing() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    funded(&app).await;
    let s = payout(&app, payout_request("p-big", "99.41")).await;
    assert_eq!(s.state, PayoutState::Failed);
    assert_eq!(s.failure.unwrap().code, "payflow.INSUFFICIENT_BALANCE");
    assert_eq!(app.sandbox.calls("alipay.fund.trans.uni.transfer"), 0);
    assert_eq!(payable(&app).await, 9940);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_submit_outcome_is_queried_never_resubmitted() {
    let timing = Timing {
        query_schedule_ms: vec![200],
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    funded(&app).await;
    app.sandbox
        .update_knobs(|k| k.payout = PayoutMode::AppliedThen5xx);
    let s = payout(&app, payout_request("p-5xx", "10.00")).await;
    assert_eq!(s.state, PayoutState::Succeeded, "{s:?}");
    assert_eq!(s.submits, 1, "never submitted twice");
    assert!(s.queries_made >= 1);
    assert_eq!(
        app.sandbox
            .payouts_executed(s.payout_id.as_deref().unwrap()),
        1
    );
    assert_eq!(payable(&app).await, 8940);
    assert_settled(&app, &s, HoldState::Posted).await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processing_payout_is_confirmed_by_query() {
    let timing = Timing {
        query_schedule_ms: vec![200],
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    funded(&app).await;
    app.sandbox
        .update_knobs(|k| k.payout = PayoutMode::Dealing(Duration::from_millis(600)));
    let s = payout(&app, payout_request("p-dealing", "10.00")).await;
    assert_eq!(s.state, PayoutState::Succeeded, "{s:?}");
    assert_eq!(s.submits, 1);
    assert!(s.queries_made >= 1);
    assert_settled(&app, &s, HoldState::Posted).await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_payout_voids_its_hold() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    funded(&app).await;
    app.sandbox.update_knobs(|k| {
        k.payout = PayoutMode::Fail {
            code: "PAYEE_NOT_EXIST".into(),
            reason: "no such account".into(),
        }
    });
    let s = payout(&app, payout_request("p-fail", "10.00")).await;
    assert_eq!(s.state, PayoutState::Failed);
    // The channel's own word for it (the sandbox answers the submit with status FAIL).
    assert!(s.failure.is_some(), "{s:?}");
    assert_eq!(payable(&app).await, 9940, "nothing left the balance");
    assert_settled(&app, &s, HoldState::Voided).await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payouts_wait_for_review() {
    let extra = "\n[payout]\nreview_above = \"20.00\"\nreview_timeout_ms = 60000\n".to_string();
    let Some(app) = payflow_tests::spawn_app_with(Db::Sqlite, Timing::default(), extra).await
    else {
        return;
    };
    funded(&app).await;
    let waiting = |no: &'static str| {
        let app = &app;
        async move {
            eventually(
                Duration::from_secs(30),
                "payout awaiting review",
                || async {
                    let s = app
                        .payflow
                        .payout_status(&merchant(), &PayoutNo::parse(no).unwrap())
                        .await
                        .ok()?;
                    (s.state == PayoutState::AwaitingApproval).then_some(s)
                },
            )
            .await
        }
    };

    // Rejected: the hold is voided, the channel never hears of it.
    app.payflow
        .payout(payout_request("p-review-1", "30.00"))
        .await
        .unwrap();
    waiting("p-review-1").await;
    assert_eq!(payable(&app).await, 9940);
    let pending = app
        .store
        .account_balance(&accounting::merchant_payable(stack::MERCHANT))
        .await
        .unwrap()
        .debits_pending
        .minor_units();
    assert_eq!(pending, 3000, "held while waiting");
    app.payflow
        .review_payout(
            &merchant(),
            &PayoutNo::parse("p-review-1").unwrap(),
            PayoutDecision::Reject {
                reason: "payee unverified".into(),
            },
        )
        .await
        .unwrap();
    let rejected = app
        .payflow
        .payout_result(&merchant(), &PayoutNo::parse("p-review-1").unwrap())
        .await
        .unwrap();
    assert_eq!(rejected.state, PayoutState::Rejected);
    assert_eq!(
        rejected.failure.as_ref().unwrap().message,
        "payee unverified"
    );
    assert_settled(&app, &rejected, HoldState::Voided).await;
    assert_eq!(app.sandbox.calls("alipay.fund.trans.uni.transfer"), 0);

    // Approved: paid.
    app.payflow
        .payout(payout_request("p-review-2", "30.00"))
        .await
        .unwrap();
    waiting("p-review-2").await;
    app.payflow
        .review_payout(
            &merchant(),
            &PayoutNo::parse("p-review-2").unwrap(),
            PayoutDecision::Approve,
        )
        .await
        .unwrap();
    let approved = app
        .payflow
        .payout_result(&merchant(), &PayoutNo::parse("p-review-2").unwrap())
        .await
        .unwrap();
    assert_eq!(approved.state, PayoutState::Succeeded);
    assert_eq!(payable(&app).await, 6940);

    // Cancelled by an operator while under review (the UI's Request Cancellation): rejected,
    // the hold voided, the channel never called.
    let no = PayoutNo::parse("p-review-3").unwrap();
    app.payflow
        .payout(payout_request("p-review-3", "30.00"))
        .await
        .unwrap();
    waiting("p-review-3").await;
    payflow_tests::operator_cancel(
        &app,
        payflow_client::ids::payout_workflow_id(&merchant(), &no),
    )
    .await;
    let cancelled = app.payflow.payout_result(&merchant(), &no).await.unwrap();
    assert_eq!(cancelled.state, PayoutState::Rejected);
    assert_eq!(
        cancelled.failure.as_ref().unwrap().message,
        "cancelled by an operator under review"
    );
    assert_settled(&app, &cancelled, HoldState::Voided).await;
    assert_eq!(payable(&app).await, 6940);
    assert_eq!(app.sandbox.calls("alipay.fund.trans.uni.transfer"), 1);

    // Small payouts go straight through.
    let small = payout(&app, payout_request("p-small", "5.00")).await;
    assert_eq!(small.state, PayoutState::Succeeded);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recharges_fill_wallets_and_transfers_move_funds_or_change_nothing() {
    let Some(app) = spawn_app(Db::Postgres, Timing::default()).await else {
        return;
    };
    // Alice tops up her wallet by paying 50.00: a recharge, no fee, no merchant balance.
    let topup = PaymentRequest {
        recharge_wallet: Some(WalletId::parse("alice").unwrap()),
        ..payment_request("o-topup", "50.00")
    };
    app.payflow.pay(topup.clone()).await.unwrap();
    payment_where(&app, &topup, "recharge", |s| s.state == PayState::Succeeded).await;
    assert!(
        app.store
            .account_balance(&accounting::merchant_payable(stack::MERCHANT))
            .await
            .is_err(),
        "a recharge never reaches the merchant's balance"
    );
    let wallet = |owner: &str| {
        let store = app.store.clone();
        let id = accounting::wallet(owner);
        async move {
            store
                .account_balance(&id)
                .await
                .map(|b| b.posted_net().minor_units())
                .unwrap_or(0)
        }
    };
    let transfer = |no: &str, amount: &str| TransferRequest {
        transfer_no: TransferNo::parse(no).unwrap(),
        from: WalletId::parse("alice").unwrap(),
        to: WalletId::parse("bob").unwrap(),
        amount: cny(amount),
        memo: "dinner".into(),
    };
    app.payflow
        .transfer(transfer("t-1", "30.00"))
        .await
        .unwrap();
    let done = app
        .payflow
        .transfer_result(&TransferNo::parse("t-1").unwrap())
        .await
        .unwrap();
    assert_eq!(done.state, TransferState::Succeeded);
    assert_eq!((wallet("alice").await, wallet("bob").await), (2000, 3000));

    app.payflow
        .transfer(transfer("t-2", "20.01"))
        .await
        .unwrap();
    let refused = app
        .payflow
        .transfer_result(&TransferNo::parse("t-2").unwrap())
        .await
        .unwrap();
    assert_eq!(refused.state, TransferState::Rejected);
    assert_eq!(
        refused.failure.unwrap().code,
        "payflow.INSUFFICIENT_BALANCE"
    );
    assert_eq!(
        (wallet("alice").await, wallet("bob").await),
        (2000, 3000),
        "nothing changed"
    );
    // Refunding the top-up takes it back from the wallet, never below zero.
    let refund = |no: &str, amount: &str| RefundRequest {
        merchant_id: merchant(),
        merchant_order_no: OrderNo::parse("o-topup").unwrap(),
        merchant_refund_no: RefundNo::parse(no).unwrap(),
        amount: cny(amount),
        reason: "top-up returned".into(),
        kind: RefundKind::Merchant,
    };
    app.payflow.refund(refund("rt-1", "25.00")).await.unwrap();
    let short = app
        .payflow
        .refund_result(&merchant(), &RefundNo::parse("rt-1").unwrap())
        .await
        .unwrap();
    assert_eq!(short.state, RefundState::Failed, "alice has 20.00 left");
    assert_eq!(short.failure.unwrap().code, "payflow.INSUFFICIENT_BALANCE");
    app.payflow.refund(refund("rt-2", "20.00")).await.unwrap();
    let back = app
        .payflow
        .refund_result(&merchant(), &RefundNo::parse("rt-2").unwrap())
        .await
        .unwrap();
    assert_eq!(back.state, RefundState::Succeeded);
    assert_eq!(wallet("alice").await, 0);
    assert_balanced(&app).await;
    app.shutdown().await.unwrap();
}
