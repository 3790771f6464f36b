//! Refunds end to end on the dev server: merchant refunds (partial, full, over-refund,
//! processing, declined, concurrent), an exception resolved by an operator, and a payment
//! that arrives after its order was closed.

use std::time::Duration;

use payflow::stack::{self, Stack};
use payflow_activities::accounting;
use payflow_client::{
    OrderNo, PayState, PaymentRequest, PaymentStatus, RefundKind, RefundNo, RefundRequest,
    RefundState, RefundStatus, Resolution,
};
use payflow_tests::{
    Db, Timing, accepted_types, assert_balanced, cny, eventually, payable, payment_request,
    payment_where, spawn_app,
};

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

async fn paid(app: &Stack, order_no: &str, amount: &str) -> (PaymentRequest, PaymentStatus) {
    let req = payment_request(order_no, amount);
    app.payflow.pay(req.clone()).await.unwrap();
    let s = payment_where(app, &req, "payment to succeed", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    (req, s)
}

async fn refund(app: &Stack, order_no: &str, refund_no: &str, amount: &str) -> RefundStatus {
    let r = refund_request(order_no, refund_no, amount);
    app.payflow.refund(r.clone()).await.unwrap();
    app.payflow
        .refund_result(&r.merchant_id, &r.merchant_refund_no)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_then_full_refund_then_nothing_left() {
    let Some(app) = spawn_app(Db::Postgres, Timing::default()).await else {
        return;
    };
    let (_, status) = paid(&app, "o-refund", "10.00").await;
    let order_id = status.order_id.unwrap();
    // 10.00 less the 0.6 % fee.
    assert_eq!(payable(&app).await, 994);

    let first = refund(&app, "o-refund", "r-1", "3.00").await;
    assert_eq!(first.state, RefundState::Succeeded, "{first:?}");
    let order = app.store.order(&order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::PartiallyRefunded);
    // 3.00 back: 2.98 from the merchant, 0.02 of our fee (0.06 x 3/10 = 0.018, half-up).
    assert_eq!(payable(&app).await, 696);

    let second = refund(&app, "o-refund", "r-2", "7.00").await;
    assert_eq!(second.state, RefundState::Succeeded, "{second:?}");
    let order = app.store.order(&order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::Refunded);

    // Nothing is left to refund: refused before the channel is asked.
    let third = refund(&app, "o-refund", "r-3", "0.01").await;
    assert_eq!(third.state, RefundState::Failed);
    assert_eq!(third.failure.unwrap().code, "payflow.ORDER_NOT_REFUNDABLE");
    assert_eq!(app.sandbox.calls("alipay.trade.refund"), 2);
    assert_eq!(
        app.sandbox.order(&order_id).unwrap().refunded().to_string(),
        "10.00"
    );

    // The same refund no again is the same refund, not a second one.
    app.payflow
        .refund(refund_request("o-refund", "r-1", "3.00"))
        .await
        .unwrap();
    assert_eq!(app.sandbox.calls("alipay.trade.refund"), 2);
    // Two refunds on record; the refused one never was.
    assert_eq!(
        app.store.refunds_for_order(&order_id).await.unwrap().len(),
        2
    );

    // Refunded in full: the merchant's balance and our fee are both back to zero.
    assert_eq!(payable(&app).await, 0);
    // Services see the same books through the client, without database access.
    let view = app
        .payflow
        .account_balance(&accounting::merchant_payable(stack::MERCHANT))
        .await
        .unwrap()
        .expect("the merchant's account");
    assert_eq!(view.balance.to_string(), "0.00");
    assert_eq!(view.posted_credits.to_string(), "9.94");
    assert_eq!(view.kind, "liability");
    let mut kinds: Vec<String> = app
        .payflow
        .order_entries(&order_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    // Entries posted in one transaction share a timestamp: compare as a set of kinds.
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "payment_succeeded",
            "refund",
            "refund",
            "refund_fee_return",
            "refund_fee_return"
        ]
    );
    let tb = app.payflow.trial_balance().await.unwrap();
    assert!(!tb.is_empty() && tb.values().all(|d| d.is_zero()), "{tb:?}");
    assert!(
        app.payflow
            .account_balance("wallet:nobody")
            .await
            .unwrap()
            .is_none()
    );
    let fees = app
        .store
        .account_balance(accounting::PLATFORM_FEES)
        .await
        .unwrap();
    assert_eq!(fees.posted_net().minor_units(), 0);
    assert_balanced(&app).await;
    let got = app
        .merchant
        .wait_for(Duration::from_secs(45), |got| {
            accepted_types(got)
                .iter()
                .filter(|t| t.starts_with("refund."))
                .count()
                >= 3
        })
        .await
        .expect("three refund callbacks");
    let events = accepted_types(&got);
    assert_eq!(
        events.iter().filter(|t| *t == "refund.succeeded").count(),
        2
    );
    assert_eq!(events.iter().filter(|t| *t == "refund.failed").count(), 1);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refunds_never_exceed_the_paid_amount() {
    let Some(app) = spawn_app(Db::Postgres, Timing::default()).await else {
        return;
    };
    let (_, status) = paid(&app, "o-crowd-refund", "10.00").await;
    let order_id = status.order_id.unwrap();
    let requests = (0..8).map(|i| {
        let payflow = app.payflow.clone();
        let r = refund_request("o-crowd-refund", &format!("c-{i}"), "3.00");
        tokio::spawn(async move {
            payflow.refund(r.clone()).await.unwrap();
            payflow
                .refund_result(&r.merchant_id, &r.merchant_refund_no)
                .await
                .unwrap()
        })
    });
    let results: Vec<RefundStatus> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let succeeded = results
        .iter()
        .filter(|r| r.state == RefundState::Succeeded)
        .count();
    assert_eq!(succeeded, 3, "3 x 3.00 fit in 10.00, a fourth does not");
    assert!(
        results
            .iter()
            .filter(|r| r.state == RefundState::Failed)
            .all(|r| r.failure.as_ref().unwrap().code == "payflow.REFUND_EXCEEDS_PAID")
    );
    assert_eq!(
        app.sandbox.order(&order_id).unwrap().refunded().to_string(),
        "9.00"
    );
    let order = app.store.order(&order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::PartiallyRefunded);
    assert_balanced(&app).await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processing_refund_is_confirmed_by_query() {
    let timing = Timing {
        query_schedule_ms: vec![300],
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    let (_, status) = paid(&app, "o-slow-refund", "5.00").await;
    app.sandbox
        .update_knobs(|k| k.refund_processing_ms = Some(1_000));
    let r = refund(&app, "o-slow-refund", "r-slow", "5.00").await;
    assert_eq!(r.state, RefundState::Succeeded);
    assert!(r.queries_made >= 1, "confirmed by a refund query: {r:?}");
    assert!(app.sandbox.calls("alipay.trade.fastpay.refund.query") >= 1);
    assert_eq!(
        app.sandbox.calls("alipay.trade.refund"),
        1,
        "submitted once"
    );
    let order = app
        .store
        .order(status.order_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.state, PayState::Refunded);
    assert_balanced(&app).await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_refund_voids_its_hold_and_moves_nothing() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    let (_, status) = paid(&app, "o-no-refund", "5.00").await;
    let before = payable(&app).await;
    app.sandbox.update_knobs(|k| {
        k.refund_decline = Some(("ACQ.SELLER_BALANCE_NOT_ENOUGH".into(), "no balance".into()))
    });
    let r = refund(&app, "o-no-refund", "r-declined", "2.00").await;
    assert_eq!(r.state, RefundState::Failed);
    assert_eq!(r.failure.unwrap().code, "ACQ.SELLER_BALANCE_NOT_ENOUGH");
    let refund_id = r.refund_id.unwrap();
    assert_eq!(
        app.store
            .hold_state(&accounting::refund_hold_id(&refund_id))
            .await
            .unwrap(),
        Some(payflow_activities::store::holds::HoldState::Voided)
    );
    let order = app
        .store
        .order(status.order_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.state, PayState::Succeeded, "nothing refunded");
    assert_eq!(payable(&app).await, before);
    let b = app
        .store
        .account_balance(&accounting::merchant_payable(stack::MERCHANT))
        .await
        .unwrap();
    assert_eq!(b.debits_pending.minor_units(), 0, "no hold left behind");
    assert_balanced(&app).await;
    app.shutdown().await.unwrap();
}

async fn exception_payment(app: &Stack, order_no: &str) -> (PaymentRequest, String) {
    app.sandbox
        .update_knobs(|k| k.paid_amount = Some("1.00".into()));
    let req = payment_request(order_no, "12.34");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    let s = payment_where(app, &req, "payment in Exception", |s| {
        s.state == PayState::Exception
    })
    .await;
    assert_eq!(s.paid_amount, Some(cny("1.00")));
    (req, prepay.order_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_accepts_an_exception_payment() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    let (req, order_id) = exception_payment(&app, "o-accept").await;
    assert!(
        app.store
            .entries_for_order(&order_id)
            .await
            .unwrap()
            .is_empty()
    );
    app.payflow
        .resolve_payment(&req.merchant_id, &req.merchant_order_no, Resolution::Accept)
        .await
        .unwrap();
    let s = payment_where(&app, &req, "accepted payment", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    assert_eq!(s.resolution, Some(Resolution::Accept));
    // What was collected (1.00) is posted, not the order's 12.34.
    let entries = app.store.entries_for_order(&order_id).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].postings[0].debit_minor, 100);
    let history = app.store.order_history(&order_id).await.unwrap();
    assert_eq!(
        history.last(),
        Some(&(PayState::Exception, PayState::Succeeded))
    );
    assert_balanced(&app).await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_refunds_an_exception_payment() {
    let Some(app) = spawn_app(Db::Postgres, Timing::default()).await else {
        return;
    };
    let (req, order_id) = exception_payment(&app, "o-return").await;
    // An operator's cancel request changes nothing here: the money came in, and only
    // `resolve` says what becomes of it (the refund below still runs).payflow_tests::operator_cancel(&app, payflow_client::ids::payment_workflow_id(&req.merchant_id, &req.merchant_order_no)).await;
    // A query is answered after the task the cancel woke.
    payment_where(&app, &req, "still in Exception", |s| {
        s.state == PayState::Exception
    })
    .await;
    app.payflow
        .resolve_payment(&req.merchant_id, &req.merchant_order_no, Resolution::Refund)
        .await
        .unwrap();
    let s = payment_where(&app, &req, "refunded payment", |s| {
        s.state == PayState::Refunded
    })
    .await;
    assert_eq!(s.resolution, Some(Resolution::Refund));
    let order = app.store.order(&order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::Refunded);
    // The 1.00 collected went back in full; the merchant's balance never saw it.
    assert_eq!(
        app.sandbox.order(&order_id).unwrap().refunded().to_string(),
        "1.00"
    );
    let b = app
        .store
        .account_balance(accounting::PLATFORM_LATE_PAYMENTS)
        .await
        .unwrap();
    assert_eq!(b.posted_net().minor_units(), 0);
    assert!(
        app.store
            .account_balance(&accounting::merchant_payable(stack::MERCHANT))
            .await
            .is_err(),
        "no merchant account was ever touched"
    );
    assert_balanced(&app).await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_after_close_is_refunded_and_the_order_stays_closed() {
    let timing = Timing {
        pay_after: None,
        query_schedule_ms: vec![200],
        expiry_scale_percent: 1,
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
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

    // The customer pays anyway; the channel notifies; payflow returns the money.
    let refund_no = RefundNo::parse(format!("late-{}", prepay.order_id)).unwrap();
    let r = eventually(Duration::from_secs(45), "late-payment refund", || async {
        let s = app
            .payflow
            .refund_status(&req.merchant_id, &refund_no)
            .await
            .ok()?;
        (s.state == RefundState::Succeeded).then_some(s)
    })
    .await;
    assert_eq!(r.kind, RefundKind::LatePayment);
    assert_eq!(r.amount, cny("6.00"));
    let order = app.store.order(&prepay.order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::Closed, "the order stays closed");
    assert_eq!(
        app.sandbox
            .order(&prepay.order_id)
            .unwrap()
            .refunded()
            .to_string(),
        "6.00"
    );
    let kinds: Vec<String> = app
        .store
        .entries_for_order(&prepay.order_id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, vec!["late_payment", "late_payment_refund"]);
    assert_balanced(&app).await;
    // The merchant hears of the close, then of the refund.
    let got = app
        .merchant
        .wait_for(Duration::from_secs(45), |got| {
            accepted_types(got).iter().any(|t| t == "refund.succeeded")
        })
        .await
        .expect("refund callback");
    assert!(accepted_types(&got).iter().any(|t| t == "payment.closed"));
    app.shutdown().await.unwrap();
}
