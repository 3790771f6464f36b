//! The history recorder (issue 8, determinism): each `#[ignore]`d test drives one scenario end
//! to end on the dev server (the same harness and sandbox knobs as the end-to-end tests) and
//! writes the full histories of the workflows it ran into `tests/histories/`, which
//! `tests/tests/replay.rs` replays against the current code.
//!
//! Run all of them with `scripts/record-histories.sh` (or one: `scripts/record-histories.sh
//! payment_happy`). An existing file is kept unless `PAYFLOW_HISTORIES_OVERWRITE=1`;
//! `PAYFLOW_HISTORIES_TAG=v2` writes `{name}.v2.json` beside the old ones.

use std::time::Duration;

use payflow::sandbox::{Knobs, NotifyMode, PayoutMode};
use payflow::stack::{self, Stack};
use payflow_client::definitions::Resend;
use payflow_client::ids::{
    notification_workflow_id, payment_workflow_id, payout_workflow_id, refund_workflow_id,
    transfer_workflow_id,
};
use payflow_client::{
    EventId, MerchantId, NotificationRequest, NotifyState, OrderNo, PayState, PaymentRequest,
    PayoutDecision, PayoutNo, PayoutRequest, PayoutState, Priority, ProductId, RefundKind,
    RefundNo, RefundRequest, RefundState, Resolution, TransferNo, TransferRequest, TransferState,
    WalletId,
};
use payflow_tests::histories::{self, RecordOptions, probe};
use payflow_tests::{Db, Timing, cny, eventually, payment_request, payment_where, spawn_app};

const DEADLINE: Duration = Duration::from_secs(60);

fn merchant() -> MerchantId {
    MerchantId::parse(stack::MERCHANT).unwrap()
}

/// One scenario's recording: waits for every workflow of its namespace to close, then saves
/// the named ones.
struct Recorder<'a> {
    app: &'a Stack,
    opts: RecordOptions,
}

impl<'a> Recorder<'a> {
    async fn new(app: &'a Stack) -> Recorder<'a> {
        histories::wait_all_closed(app.payflow.temporal(), DEADLINE).await;
        Recorder {
            app,
            opts: RecordOptions::from_env(),
        }
    }

    async fn save(&self, workflow_id: &str, stem: &str) {
        histories::save(self.app.payflow.temporal(), workflow_id, stem, &self.opts).await;
    }

    /// The only workflow of `workflow_type` in this scenario.
    async fn save_only(&self, workflow_type: &str, stem: &str) {
        let ids = histories::workflow_ids_of_type(self.app.payflow.temporal(), workflow_type).await;
        assert_eq!(ids.len(), 1, "one {workflow_type} workflow: {ids:?}");
        self.save(&ids[0], stem).await;
    }
}

fn pay_id(req: &PaymentRequest) -> String {
    payment_workflow_id(&req.merchant_id, &req.merchant_order_no)
}

/// The merchant callback of a payment event (`{order_id}-payment-succeeded`).
fn callback_id(order_id: &str, event_type: &str) -> String {
    let event = EventId::parse(format!("{order_id}-{}", event_type.replace('.', "-"))).unwrap();
    notification_workflow_id(&merchant(), &event)
}

async fn paid(app: &Stack, order_no: &str, amount: &str) -> (PaymentRequest, String) {
    let req = payment_request(order_no, amount);
    app.payflow.pay(req.clone()).await.unwrap();
    let s = payment_where(app, &req, "payment to succeed", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    (req, s.order_id.unwrap())
}

fn refund_request(order_no: &str, refund_no: &str, amount: &str) -> RefundRequest {
    RefundRequest {
        merchant_id: merchant(),
        merchant_order_no: OrderNo::parse(order_no).unwrap(),
        merchant_refund_no: RefundNo::parse(refund_no).unwrap(),
        amount: cny(amount),
        reason: "customer returned the goods".into(),
        kind: RefundKind::Merchant,
    }
}

/// Refunds and waits for the result; returns the refund's workflow id.
async fn refunded(app: &Stack, r: RefundRequest, expect: RefundState) -> String {
    app.payflow.refund(r.clone()).await.unwrap();
    let s = app
        .payflow
        .refund_result(&r.merchant_id, &r.merchant_refund_no)
        .await
        .unwrap();
    assert_eq!(s.state, expect, "{s:?}");
    refund_workflow_id(&r.merchant_id, &r.merchant_refund_no)
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

async fn paid_out(app: &Stack, req: PayoutRequest, expect: PayoutState) -> String {
    app.payflow.payout(req.clone()).await.unwrap();
    let s = app
        .payflow
        .payout_result(&req.merchant_id, &req.payout_no)
        .await
        .unwrap();
    assert_eq!(s.state, expect, "{s:?}");
    payout_workflow_id(&req.merchant_id, &req.payout_no)
}

async fn payment_in_exception(app: &Stack, order_no: &str) -> (PaymentRequest, String) {
    app.sandbox
        .update_knobs(|k| k.paid_amount = Some("1.00".into()));
    let req = payment_request(order_no, "12.34");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    payment_where(app, &req, "payment in Exception", |s| {
        s.state == PayState::Exception
    })
    .await;
    (req, prepay.order_id)
}

// ---------------------------------------------------------------------------------------------
// Payment

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payment_happy() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    let (req, _) = paid(&app, "o-happy", "12.34").await;
    payflow_tests::accepted_callbacks(&app).await;
    // The payment delivers its own callback at the first try (no workflow for it); an event a
    // service sends is a Notification delivered at once.
    let event = EventId::parse("e-delivered").unwrap();
    app.payflow
        .notify(NotificationRequest {
            merchant_id: merchant(),
            event_id: event.clone(),
            event_type: "order.shipped".into(),
            data: serde_json::json!({"order": "o-happy"}),
            priority: Priority::Realtime,
            notify_url: None,
            resume: None,
        })
        .await
        .unwrap();
    payflow_tests::accepted_count(&app, "order.shipped", DEADLINE).await;
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&req), "Payment-happy").await;
    rec.save(
        &notification_workflow_id(&merchant(), &event),
        "Notification-delivered",
    )
    .await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payment_active_query() {
    let timing = Timing {
        query_schedule_ms: vec![400],
        ..Timing::default()
    };
    let app = spawn_app(Db::Sqlite, timing).await.unwrap();
    app.sandbox.set_knobs(Knobs {
        pay_after: Some(Duration::from_millis(200)),
        notify: NotifyMode::Never,
        ..Knobs::default()
    });
    let (req, _) = paid(&app, "o-silent", "7.00").await;
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&req), "Payment-active_query").await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payment_duplicate_notifications() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    app.sandbox.set_knobs(Knobs {
        pay_after: Some(Duration::from_millis(200)),
        notify: NotifyMode::Twice,
        ..Knobs::default()
    });
    let (req, order_id) = paid(&app, "o-twice", "8.00").await;
    app.sandbox
        .wait_for(&order_id, DEADLINE, |o| o.notifications_sent >= 3)
        .await
        .expect("all notifications posted");
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&req), "Payment-duplicate_notifications")
        .await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payment_expired() {
    let timing = Timing {
        pay_after: None,
        query_schedule_ms: vec![200],
        // 1 % of the 60 s minimum expiry: 600 ms.
        expiry_scale_percent: 1,
        ..Timing::default()
    };
    let app = spawn_app(Db::Sqlite, timing).await.unwrap();
    let req = PaymentRequest {
        expires_in_secs: Some(60),
        ..payment_request("o-expire", "5.00")
    };
    app.payflow.pay(req.clone()).await.unwrap();
    payment_where(&app, &req, "payment Closed", |s| {
        s.state == PayState::Closed
    })
    .await;
    // Its `payment.closed` callback goes out at the payment's first try (no workflow for it;
    // `Notification-payment_closed` holds one from before).
    payflow_tests::accepted_callbacks(&app).await;
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&req), "Payment-expired").await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payment_merchant_close() {
    let timing = Timing {
        pay_after: None,
        ..Timing::default()
    };
    let app = spawn_app(Db::Sqlite, timing).await.unwrap();
    let req = payment_request("o-close", "4.00");
    app.payflow.pay(req.clone()).await.unwrap();
    let state = app
        .payflow
        .close_payment(&req.merchant_id, &req.merchant_order_no)
        .await
        .unwrap();
    assert_eq!(state, PayState::Closed);
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&req), "Payment-merchant_close").await;
    app.shutdown().await.unwrap();
}

/// Refused by validation (unknown product): the run fails and nothing is created.
/// An operator cancels an unpaid payment: it closes like a merchant's close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payment_operator_cancel() {
    let timing = Timing {
        pay_after: None,
        query_schedule_ms: vec![200],
        ..Timing::default()
    };
    let app = spawn_app(Db::Sqlite, timing).await.unwrap();
    let req = payment_request("o-cancel", "4.50");
    app.payflow.pay(req.clone()).await.unwrap();
    payment_where(&app, &req, "a query while Pending", |s| s.queries_made >= 1).await;
    payflow_tests::operator_cancel(&app, pay_id(&req)).await;
    payment_where(&app, &req, "payment Closed", |s| {
        s.state == PayState::Closed
    })
    .await;
    payflow_tests::accepted_callbacks(&app).await;
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&req), "Payment-operator_cancel").await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payment_rejected() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    let req = PaymentRequest {
        product_id: ProductId::parse("nope").unwrap(),
        ..payment_request("o-bad", "1.00")
    };
    app.payflow.pay(req.clone()).await.unwrap_err();
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&req), "Payment-rejected").await;
    app.shutdown().await.unwrap();
}

/// The channel declines the prepay: `Failed` with the channel's code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payment_declined() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    app.sandbox.set_knobs(Knobs {
        decline_precreate: Some(("ACQ.ACCESS_FORBIDDEN".into(), "no permission".into())),
        ..Knobs::default()
    });
    let req = payment_request("o-declined", "2.00");
    app.payflow.pay(req.clone()).await.unwrap_err();
    payment_where(&app, &req, "payment Failed", |s| {
        s.state == PayState::Failed
    })
    .await;
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&req), "Payment-declined").await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payment_mismatch_accept() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    let (req, _) = payment_in_exception(&app, "o-accept").await;
    app.payflow
        .resolve_payment(&req.merchant_id, &req.merchant_order_no, Resolution::Accept)
        .await
        .unwrap();
    payment_where(&app, &req, "accepted payment", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&req), "Payment-mismatch_accept").await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payment_mismatch_refund() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    let (req, order_id) = payment_in_exception(&app, "o-return").await;
    app.payflow
        .resolve_payment(&req.merchant_id, &req.merchant_order_no, Resolution::Refund)
        .await
        .unwrap();
    payment_where(&app, &req, "refunded payment", |s| {
        s.state == PayState::Refunded
    })
    .await;
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&req), "Payment-mismatch_refund").await;
    let refund_no = RefundNo::parse(format!("exc-{order_id}-1")).unwrap();
    rec.save(
        &refund_workflow_id(&merchant(), &refund_no),
        "Refund-exception",
    )
    .await;
    app.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Refund

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn refund_succeeded() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    paid(&app, "o-refund", "10.00").await;
    let partial = refunded(
        &app,
        refund_request("o-refund", "r-1", "3.00"),
        RefundState::Succeeded,
    )
    .await;
    // More than is left: refused before the channel is asked.
    let refused = refunded(
        &app,
        refund_request("o-refund", "r-2", "7.01"),
        RefundState::Failed,
    )
    .await;
    let rec = Recorder::new(&app).await;
    rec.save(&partial, "Refund-succeeded").await;
    rec.save(&refused, "Refund-exceeds_paid").await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn refund_declined() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    paid(&app, "o-no-refund", "5.00").await;
    app.sandbox.update_knobs(|k| {
        k.refund_decline = Some(("ACQ.SELLER_BALANCE_NOT_ENOUGH".into(), "no balance".into()))
    });
    let id = refunded(
        &app,
        refund_request("o-no-refund", "r-declined", "2.00"),
        RefundState::Failed,
    )
    .await;
    let rec = Recorder::new(&app).await;
    rec.save(&id, "Refund-declined").await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn refund_processing_then_query() {
    let timing = Timing {
        query_schedule_ms: vec![300],
        ..Timing::default()
    };
    let app = spawn_app(Db::Sqlite, timing).await.unwrap();
    paid(&app, "o-slow-refund", "5.00").await;
    app.sandbox
        .update_knobs(|k| k.refund_processing_ms = Some(1_000));
    let id = refunded(
        &app,
        refund_request("o-slow-refund", "r-slow", "5.00"),
        RefundState::Succeeded,
    )
    .await;
    let rec = Recorder::new(&app).await;
    rec.save(&id, "Refund-processing_then_query").await;
    app.shutdown().await.unwrap();
}

/// The customer pays after the order was closed: the order stays closed and payflow returns
/// the money through a late-payment refund started by the ingress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn late_payment_refund() {
    let timing = Timing {
        pay_after: None,
        query_schedule_ms: vec![200],
        expiry_scale_percent: 1,
        ..Timing::default()
    };
    let app = spawn_app(Db::Sqlite, timing).await.unwrap();
    app.sandbox
        .update_knobs(|k| k.pay_after_close_ms = Some(300));
    let req = PaymentRequest {
        expires_in_secs: Some(60),
        ..payment_request("o-late-pay", "6.00")
    };
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    payment_where(&app, &req, "closed payment", |s| {
        s.state == PayState::Closed
    })
    .await;
    let refund_no = RefundNo::parse(format!("late-{}", prepay.order_id)).unwrap();
    eventually(Duration::from_secs(45), "late-payment refund", || async {
        let s = app
            .payflow
            .refund_status(&req.merchant_id, &refund_no)
            .await
            .ok()?;
        (s.state == RefundState::Succeeded).then_some(())
    })
    .await;
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&req), "Payment-closed_then_paid").await;
    rec.save(
        &refund_workflow_id(&merchant(), &refund_no),
        "Refund-late_payment",
    )
    .await;
    app.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Notification

/// The merchant answers 503 twice; the third attempt is accepted. The first is the payment's
/// own try, which hands the callback to its Notification on the retry queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn notification_retried() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    app.merchant.fail_next(2);
    let (req, order_id) = paid(&app, "o-flaky-merchant", "3.00").await;
    payflow_tests::accepted_callbacks(&app).await;
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&req), "Payment-callback_handed_over")
        .await;
    rec.save(
        &callback_id(&order_id, "payment.succeeded"),
        "Notification-retried",
    )
    .await;
    app.shutdown().await.unwrap();
}

/// Every attempt of the schedule fails: the callback parks as `Exhausted`; an operator's
/// `resend` delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn notification_exhausted_then_resend() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    app.merchant.fail_next(1_000);
    let (_, order_id) = paid(&app, "o-down-merchant", "3.00").await;
    let event = EventId::parse(format!("{order_id}-payment-succeeded")).unwrap();
    eventually(DEADLINE, "callback Exhausted", || async {
        let s = app.payflow.notification(&merchant(), &event).await.ok()?;
        (s.state == NotifyState::Exhausted).then_some(())
    })
    .await;
    app.merchant.fail_next(0);
    let id = notification_workflow_id(&merchant(), &event);
    app.payflow
        .temporal()
        .get_workflow_handle::<payflow_client::definitions::NotificationWorkflow>(id.clone())
        .signal(Resend, (), Default::default())
        .await
        .unwrap();
    payflow_tests::accepted_callbacks(&app).await;
    let rec = Recorder::new(&app).await;
    rec.save(&id, "Notification-exhausted_then_resend").await;
    app.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Transfer, payout, ledger read

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn transfer_ok_and_rejected() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    let topup = PaymentRequest {
        recharge_wallet: Some(WalletId::parse("alice").unwrap()),
        ..payment_request("o-topup", "50.00")
    };
    app.payflow.pay(topup.clone()).await.unwrap();
    payment_where(&app, &topup, "recharge", |s| s.state == PayState::Succeeded).await;
    let transfer = |no: &str, amount: &str| TransferRequest {
        transfer_no: TransferNo::parse(no).unwrap(),
        from: WalletId::parse("alice").unwrap(),
        to: WalletId::parse("bob").unwrap(),
        amount: cny(amount),
        memo: "dinner".into(),
    };
    for (no, amount, expect) in [
        ("t-1", "30.00", TransferState::Succeeded),
        ("t-2", "20.01", TransferState::Rejected),
    ] {
        app.payflow.transfer(transfer(no, amount)).await.unwrap();
        let s = app
            .payflow
            .transfer_result(&TransferNo::parse(no).unwrap())
            .await
            .unwrap();
        assert_eq!(s.state, expect, "{s:?}");
    }
    let rec = Recorder::new(&app).await;
    rec.save(&pay_id(&topup), "Payment-recharge").await;
    let id = |no: &str| transfer_workflow_id(&TransferNo::parse(no).unwrap());
    rec.save(&id("t-1"), "Transfer-ok").await;
    rec.save(&id("t-2"), "Transfer-rejected").await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payout_ok_and_failed() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    paid(&app, "o-funds", "100.00").await;
    let ok = paid_out(&app, payout_request("p-1", "50.00"), PayoutState::Succeeded).await;
    let short = paid_out(&app, payout_request("p-big", "49.41"), PayoutState::Failed).await;
    app.sandbox.update_knobs(|k| {
        k.payout = PayoutMode::Fail {
            code: "PAYEE_NOT_EXIST".into(),
            reason: "no such account".into(),
        }
    });
    let declined = paid_out(&app, payout_request("p-fail", "10.00"), PayoutState::Failed).await;
    let rec = Recorder::new(&app).await;
    rec.save(&ok, "Payout-ok").await;
    rec.save(&short, "Payout-insufficient_balance").await;
    rec.save(&declined, "Payout-channel_failed").await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payout_unknown_outcome_queried() {
    let timing = Timing {
        query_schedule_ms: vec![200],
        ..Timing::default()
    };
    let app = spawn_app(Db::Sqlite, timing).await.unwrap();
    paid(&app, "o-funds", "100.00").await;
    app.sandbox
        .update_knobs(|k| k.payout = PayoutMode::AppliedThen5xx);
    let id = paid_out(
        &app,
        payout_request("p-5xx", "10.00"),
        PayoutState::Succeeded,
    )
    .await;
    let rec = Recorder::new(&app).await;
    rec.save(&id, "Payout-unknown_outcome_queried").await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn payout_review() {
    let extra = "\n[payout]\nreview_above = \"20.00\"\nreview_timeout_ms = 60000\n".to_string();
    let app = payflow_tests::spawn_app_with(Db::Sqlite, Timing::default(), extra)
        .await
        .unwrap();
    paid(&app, "o-funds", "100.00").await;
    let mut ids = Vec::new();
    for (no, decision, expect) in [
        (
            "p-review-1",
            Some(PayoutDecision::Reject {
                reason: "payee unverified".into(),
            }),
            PayoutState::Rejected,
        ),
        (
            "p-review-2",
            Some(PayoutDecision::Approve),
            PayoutState::Succeeded,
        ),
        // An operator cancels it instead of deciding: rejected.
        ("p-review-3", None, PayoutState::Rejected),
    ] {
        let payout_no = PayoutNo::parse(no).unwrap();
        app.payflow
            .payout(payout_request(no, "30.00"))
            .await
            .unwrap();
        eventually(DEADLINE, "payout awaiting review", || async {
            let s = app
                .payflow
                .payout_status(&merchant(), &payout_no)
                .await
                .ok()?;
            (s.state == PayoutState::AwaitingApproval).then_some(())
        })
        .await;
        match decision {
            Some(decision) => app
                .payflow
                .review_payout(&merchant(), &payout_no, decision)
                .await
                .unwrap(),
            None => {
                payflow_tests::operator_cancel(&app, payout_workflow_id(&merchant(), &payout_no))
                    .await
            }
        }
        let s = app
            .payflow
            .payout_result(&merchant(), &payout_no)
            .await
            .unwrap();
        assert_eq!(s.state, expect, "{s:?}");
        ids.push(payout_workflow_id(&merchant(), &payout_no));
    }
    let rec = Recorder::new(&app).await;
    rec.save(&ids[0], "Payout-review_reject").await;
    rec.save(&ids[1], "Payout-review_approve").await;
    rec.save(&ids[2], "Payout-review_cancelled").await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn ledger_read() {
    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    paid(&app, "o-books", "10.00").await;
    let tb = app.payflow.trial_balance().await.unwrap();
    assert!(tb.values().all(|d| d.is_zero()), "{tb:?}");
    let rec = Recorder::new(&app).await;
    rec.save_only(
        payflow_client::definitions::names::LEDGER_READ,
        "LedgerRead-trial_balance",
    )
    .await;
    app.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Reconciliation

fn recon_toml(retry_ms: &str, deadline_ms: u64, schedule: bool) -> String {
    format!(
        "\n[recon]\nstatement_retry_ms = [{retry_ms}]\nstatement_deadline_ms = {deadline_ms}\n\
         schedule = {schedule}\npage_size = 1\n"
    )
}

/// The Beijing day the sandbox booked `order_id` on.
fn sandbox_day(app: &Stack, order_id: &str) -> chrono::NaiveDate {
    let beijing = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    let at = app.sandbox.order(order_id).unwrap().paid_at_ms.unwrap();
    chrono::DateTime::from_timestamp_millis(at)
        .unwrap()
        .with_timezone(&beijing)
        .date_naive()
}

/// A statement ready after one retry, with two differences (two pages of checks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn recon_discrepancies() {
    let app = payflow_tests::spawn_app_with(
        Db::Sqlite,
        Timing::default(),
        recon_toml("200", 30_000, false),
    )
    .await
    .unwrap();
    let (_, ok) = paid(&app, "o-recon-ok", "10.00").await;
    let (_, amount) = paid(&app, "o-recon-amount", "20.00").await;
    let (_, missing) = paid(&app, "o-recon-missing", "30.00").await;
    let day = sandbox_day(&app, &ok);
    app.sandbox.update_knobs(|k| {
        k.statement.not_ready_times = 1;
        k.statement.amount = [(amount, "21.00".parse().unwrap())].into();
        k.statement.omit = [missing].into();
    });
    let id = app.payflow.reconcile(stack::CHANNEL, day).await.unwrap();
    let report = app.payflow.recon_result(stack::CHANNEL, day).await.unwrap();
    assert_eq!(report.open_total(), 2, "{report:?}");
    let rec = Recorder::new(&app).await;
    rec.save(&id, "Reconciliation-discrepancies").await;
    app.shutdown().await.unwrap();
}

/// No statement by the deadline: `Manual`, then the operator's `retry`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn recon_manual_retry() {
    let app = payflow_tests::spawn_app_with(
        Db::Sqlite,
        Timing::default(),
        recon_toml("100, 200", 1_000, false),
    )
    .await
    .unwrap();
    let (_, order) = paid(&app, "o-recon-late", "10.00").await;
    let day = sandbox_day(&app, &order);
    app.sandbox.update_knobs(|k| k.statement_pending = true);
    let id = app.payflow.reconcile(stack::CHANNEL, day).await.unwrap();
    eventually(DEADLINE, "the run parked Manual", || async {
        let s = app.payflow.recon_status(stack::CHANNEL, day).await.ok()?;
        (s.state == payflow_client::ReconState::Manual).then_some(())
    })
    .await;
    app.sandbox.update_knobs(|k| k.statement_pending = false);
    app.payflow
        .retry_reconciliation(stack::CHANNEL, day)
        .await
        .unwrap();
    let report = app.payflow.recon_result(stack::CHANNEL, day).await.unwrap();
    assert_eq!(report.open_total(), 0, "{report:?}");
    let rec = Recorder::new(&app).await;
    rec.save(&id, "Reconciliation-manual_retry").await;
    app.shutdown().await.unwrap();
}

/// The daily schedule, triggered once: `ReconDaily` starts yesterday's run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn recon_daily() {
    let app = payflow_tests::spawn_app_with(
        Db::Sqlite,
        Timing::default(),
        recon_toml("100", 5_000, true),
    )
    .await
    .unwrap();
    let schedule = payflow_client::recon::recon_schedule_id(stack::CHANNEL);
    let handle = app.payflow.temporal().get_schedule_handle(schedule.clone());
    eventually(DEADLINE, "the daily schedule", || {
        let handle = handle.clone();
        async move { handle.describe(Default::default()).await.ok() }
    })
    .await;
    handle
        .trigger(
            temporalio_client::schedules::ScheduleOverlapPolicy::AllowAll,
            Default::default(),
        )
        .await
        .unwrap();
    let daily = eventually(DEADLINE, "the ReconDaily run", || async {
        histories::workflow_ids_of_type(
            app.payflow.temporal(),
            payflow_client::definitions::names::RECON_DAILY,
        )
        .await
        .pop()
    })
    .await;
    let rec = Recorder::new(&app).await;
    rec.save(&daily, "ReconDaily-yesterday").await;
    app.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The versioning probe

/// Runs the probe workflow (version 1) on a worker of its own and records its history into
/// `tests/histories/probe/`, for the versioning tests of `replay.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "records histories: scripts/record-histories.sh"]
async fn replay_probe() {
    use temporalio_client::{NamespacedClient, WorkflowStartOptions};

    let app = spawn_app(Db::Sqlite, Timing::default()).await.unwrap();
    let address = payflow_tests::dev_server().await.to_string();
    let namespace = app.payflow.temporal().namespace();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let client = payflow::startup::connect_temporal(&address, &namespace)
                .await
                .unwrap();
            let options = temporalio_sdk::runtime::RuntimeOptions::builder()
                .telemetry_options(
                    temporalio_common::telemetry::TelemetryOptions::builder().build(),
                )
                .build()
                .unwrap();
            let runtime = temporalio_sdk::Runtime::from_current_tokio(options).unwrap();
            let mut worker = temporalio_sdk::Worker::new(
                &runtime,
                client,
                temporalio_sdk::WorkerOptions::new(probe::TASK_QUEUE)
                    .register_workflow::<probe::ProbeV1>()
                    .unwrap()
                    .build(),
            )
            .unwrap();
            let stop = worker.shutdown_handle();
            tokio::spawn(async move {
                let _ = stop_rx.await;
                stop();
            });
            worker.run().await.unwrap();
        });
    });
    let client = app.payflow.temporal();
    let id = "replay-probe-v1";
    let handle = client
        .start_workflow(
            probe::ProbeV1::run,
            2,
            WorkflowStartOptions::new(probe::TASK_QUEUE, id).build(),
        )
        .await
        .unwrap();
    let steps = handle.get_result(Default::default()).await.unwrap();
    assert_eq!(steps, 2);
    let opts = RecordOptions {
        dir: Some(histories::histories_dir().join("probe")),
        tag: None,
        ..RecordOptions::from_env()
    };
    histories::save(client, id, "ReplayProbe-v1", &opts).await;
    let _ = stop_tx.send(());
    tokio::task::spawn_blocking(move || worker.join())
        .await
        .unwrap()
        .unwrap();
    app.shutdown().await.unwrap();
}
