//! End-to-end payments against the real dev server, the sandbox channel and a merchant
//! receiver, on SQLite and on PostgreSQL.

use std::time::Duration;

use payflow::stack;
use payflow_client::{PayState, PayflowError, ProductId, RefundKind, RefundNo, RefundRequest};
use payflow_tests::{Db, Timing, eventually, payment_request, payment_where, spawn_app};

const DEADLINE: Duration = Duration::from_secs(30);

/// Pay, the channel notifies, a query confirms, the ledger is posted once and the merchant
/// receives one signed callback.
async fn happy_path_via_notification(db: Db) {
    let Some(app) = spawn_app(db, Timing::default()).await else {
        return;
    };
    let req = payment_request("o-happy", "12.34");
    let prepay = app.payflow.pay(req.clone()).await.expect("pay");
    assert_eq!(prepay.channel, stack::CHANNEL);
    assert!(prepay.qr_code.contains(&prepay.order_id));

    let status = payment_where(&app, &req, "payment Succeeded", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    assert_eq!(status.amount, req.amount);
    assert!(
        status.notices_received >= 1,
        "paid through the notification"
    );
    assert!(
        status.queries_made >= 1,
        "a query confirmed the notification"
    );
    let channel_order = app.sandbox.order(&prepay.order_id).expect("sandbox order");
    assert_eq!(
        status.channel_trade_no.as_deref(),
        Some(channel_order.trade_no.as_str())
    );
    // What an operator sees with `payflow payment show demo o-happy`.
    let shown = payflow::cli_payment::render(&status);
    assert!(shown.contains("state             Succeeded\n"), "{shown}");
    assert!(shown.contains("amount            12.34 CNY\n"), "{shown}");
    assert!(
        shown.contains(&format!("channel trade no  {}\n", channel_order.trade_no)),
        "{shown}"
    );
    assert!(
        channel_order.acknowledged,
        "the ingress acknowledged the channel"
    );

    let order = app.store.order(&prepay.order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::Succeeded);
    assert_eq!(order.paid_amount, Some(req.amount));
    let entries = app.store.entries_for_order(&prepay.order_id).await.unwrap();
    assert_eq!(entries.len(), 1, "exactly one ledger entry");
    // The channel owes us 12.34; we owe the merchant 12.27 and keep the 0.6 % fee (0.07404,
    // rounded half-up to 0.07).
    let postings: Vec<(&str, i64, i64)> = entries[0]
        .postings
        .iter()
        .map(|p| (p.account_id.as_str(), p.debit_minor, p.credit_minor))
        .collect();
    assert_eq!(
        postings,
        vec![
            ("channel:alipay:clearing", 1234, 0),
            ("merchant:demo:payable", 0, 1227),
            ("platform:fees", 0, 7),
        ]
    );
    assert!(
        app.store
            .trial_balance()
            .await
            .unwrap()
            .values()
            .all(|v| *v == 0)
    );

    let ok = payflow_tests::accepted_callbacks(&app).await;
    assert_eq!(ok.len(), 1);
    assert!(ok[0].signature_valid);
    assert_eq!(
        ok[0].rsa_signature_valid,
        Some(true),
        "the demo merchant also gets the platform's RSA signature"
    );
    assert_eq!(ok[0].body["type"], "payment.succeeded");
    assert_eq!(ok[0].body["data"]["merchant_order_no"], "o-happy");
    assert_eq!(ok[0].body["data"]["amount"]["amount"], "12.34");

    // The same order again: the same payment, never a second one.
    let again = app.payflow.pay(req.clone()).await.expect("pay again");
    assert_eq!(again, prepay);
    // The same order no with another amount is a conflict.
    let conflict = app.payflow.pay(payment_request("o-happy", "99.00")).await;
    assert!(
        matches!(conflict, Err(PayflowError::Conflict(_))),
        "{conflict:?}"
    );

    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_happy_path_via_notification() {
    happy_path_via_notification(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_happy_path_via_notification() {
    happy_path_via_notification(Db::Postgres).await;
}

/// A request for an unknown product is refused with a typed error and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_request_creates_nothing() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    let mut req = payment_request("o-bad", "1.00");
    req.product_id = ProductId::parse("nope").unwrap();
    let err = app.payflow.pay(req.clone()).await.unwrap_err();
    assert!(
        matches!(&err, PayflowError::Rejected(m) if m.contains("unknown product")),
        "{err:?}"
    );
    let order = app
        .store
        .order_by_merchant_no(stack::MERCHANT, "o-bad")
        .await
        .unwrap();
    assert!(order.is_none(), "nothing created");
    // A corrected request with the same order no goes through.
    let fixed = payment_request("o-bad", "1.00");
    let prepay = app.payflow.pay(fixed).await.expect("corrected request");
    assert!(!prepay.qr_code.is_empty());
    app.shutdown().await.unwrap();
}

/// With no customer payment and no notification, the workflow keeps querying the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_order_is_queried_actively() {
    let timing = Timing {
        pay_after: None,
        query_schedule_ms: vec![500],
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    let mut req = payment_request("o-expire", "5.00");
    req.expires_in_secs = Some(60);
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    let status = payment_where(&app, &req, "two active queries", |s| s.queries_made >= 2).await;
    assert_eq!(status.state, PayState::Pending, "unpaid stays Pending");
    assert_eq!(status.notices_received, 0);
    assert!(app.sandbox.order(&prepay.order_id).is_some());
    app.shutdown().await.unwrap();
}

/// `telemetry.metrics_listen` serves the Temporal SDK's Prometheus metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_worker_metrics() {
    // Port 0: the worker binds a free port and the stack says which.
    let extra = "\n[telemetry]\nmetrics_listen = \"127.0.0.1:0\"\n".to_string();
    let Some(app) = payflow_tests::spawn_app_with(Db::Sqlite, Timing::default(), extra).await
    else {
        return;
    };
    let req = payment_request("o-metrics", "3.00");
    app.payflow.pay(req.clone()).await.unwrap();
    payment_where(&app, &req, "payment Succeeded", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    // A payment's steps and its callback's first try are local activities; a refund's are
    // regular ones.
    app.payflow
        .refund(RefundRequest {
            merchant_id: req.merchant_id.clone(),
            merchant_order_no: req.merchant_order_no.clone(),
            merchant_refund_no: RefundNo::parse("r-metrics").unwrap(),
            amount: req.amount,
            reason: "metrics".into(),
            kind: RefundKind::Merchant,
        })
        .await
        .unwrap();
    let url = format!(
        "http://{}/metrics",
        app.metrics_addr().expect("metrics bound")
    );
    eventually(DEADLINE, "workflow and activity metrics", || async {
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        (text.contains("temporal_workflow_task")
            && text.contains("temporal_local_activity")
            && text.contains("temporal_activity_execution"))
        .then_some(())
    })
    .await;
    app.shutdown().await.unwrap();
}

/// With no customer payment, the order is closed at the channel at expiry, `Closed` in the
/// store, no money moves, and the merchant is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_order_closes_at_expiry() {
    let timing = Timing {
        pay_after: None,
        query_schedule_ms: vec![200],
        // 1 % of the 60 s minimum expiry: 600 ms.
        expiry_scale_percent: 1,
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Postgres, timing).await else {
        return;
    };
    let mut req = payment_request("o-expire", "5.00");
    req.expires_in_secs = Some(60);
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    let status = payment_where(&app, &req, "payment Closed", |s| {
        s.state == PayState::Closed
    })
    .await;
    assert!(status.closed_at_ms.is_some());
    let at_channel = app.sandbox.order(&prepay.order_id).unwrap();
    assert_eq!(
        at_channel.status,
        payflow::sandbox::alipay::SandboxStatus::Closed
    );
    let order = app.store.order(&prepay.order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::Closed);
    assert!(
        app.store
            .entries_for_order(&prepay.order_id)
            .await
            .unwrap()
            .is_empty()
    );
    let got = payflow_tests::accepted_callbacks(&app).await;
    assert_eq!(got[0].body["type"], "payment.closed");
    // The customer cannot pay a closed trade.
    assert!(!app.sandbox.pay(&prepay.order_id));
    app.shutdown().await.unwrap();
}

/// The merchant closes an unpaid payment; closing it again is refused clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_closes_an_unpaid_payment() {
    let timing = Timing {
        pay_after: None,
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    let req = payment_request("o-close", "4.00");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    let state = app
        .payflow
        .close_payment(&req.merchant_id, &req.merchant_order_no)
        .await
        .unwrap();
    assert_eq!(state, PayState::Closed);
    assert_eq!(
        app.sandbox.order(&prepay.order_id).unwrap().status,
        payflow::sandbox::alipay::SandboxStatus::Closed
    );
    let again = app
        .payflow
        .close_payment(&req.merchant_id, &req.merchant_order_no)
        .await;
    assert!(
        again.is_err(),
        "a closed payment cannot be closed again: {again:?}"
    );
    app.shutdown().await.unwrap();
}

/// An operator cancels an unpaid payment from the Temporal UI (or `temporal workflow cancel`):
/// it is closed like a merchant's close, at the channel first, then `Closed` in the store, and
/// the merchant is told; nothing is left half-done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_cancel_closes_an_unpaid_payment() {
    let timing = Timing {
        pay_after: None,
        query_schedule_ms: vec![200],
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    let req = payment_request("o-cancel", "4.50");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    payment_where(&app, &req, "a query while Pending", |s| s.queries_made >= 1).await;
    let id = payflow_client::ids::payment_workflow_id(&req.merchant_id, &req.merchant_order_no);
    payflow_tests::operator_cancel(&app, id).await;
    let status = payment_where(&app, &req, "payment Closed", |s| {
        s.state == PayState::Closed
    })
    .await;
    assert!(status.closed_at_ms.is_some());
    assert_eq!(
        app.sandbox.order(&prepay.order_id).unwrap().status,
        payflow::sandbox::alipay::SandboxStatus::Closed
    );
    let order = app.store.order(&prepay.order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::Closed);
    let got = payflow_tests::accepted_callbacks(&app).await;
    assert_eq!(got[0].body["type"], "payment.closed");
    app.shutdown().await.unwrap();
}
