//! The channel notification ingress refuses forged, tampered, stale and replayed
//! notifications, and records the ones for unknown orders.

use std::collections::BTreeMap;

use payflow::devkeys::DevKeys;
use payflow::sandbox::{Knobs, NotifyMode};
use payflow::stack;
use payflow_activities::channels::alipay::sign;
use payflow_activities::crypto::rsa_keys::RsaSigner;
use payflow_tests::{Db, Timing, keys, spawn_app};

fn notification(
    out_trade_no: &str,
    notify_id: &str,
    amount: &str,
    at_ms: i64,
) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    for (k, v) in [
        ("notify_time", sign::format_time(at_ms)),
        ("notify_type", "trade_status_sync".into()),
        ("notify_id", notify_id.into()),
        ("app_id", stack::APP_ID.into()),
        ("charset", "utf-8".into()),
        ("version", "1.0".into()),
        ("sign_type", "RSA2".into()),
        ("trade_no", "2026999".into()),
        ("out_trade_no", out_trade_no.into()),
        ("trade_status", "TRADE_SUCCESS".into()),
        ("total_amount", amount.into()),
    ] {
        p.insert(k.to_string(), v);
    }
    p
}

fn channel_key() -> RsaSigner {
    RsaSigner::from_text(&keys().read(DevKeys::SANDBOX_PRIVATE).unwrap(), "sandbox").unwrap()
}

async fn post(app: &stack::Stack, form: &BTreeMap<String, String>) -> (u16, String) {
    let url = format!(
        "http://{}/channels/{}/notify",
        app.ingress_addr,
        stack::CHANNEL
    );
    let resp = reqwest::Client::new()
        .post(url)
        .form(form)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_forged_tampered_stale_and_acknowledges_replays_once() {
    let Some(app) = spawn_app(
        Db::Sqlite,
        Timing {
            pay_after: None,
            ..Timing::default()
        },
    )
    .await
    else {
        return;
    };
    app.sandbox.set_knobs(Knobs {
        pay_after: None,
        notify: NotifyMode::Never,
        ..Knobs::default()
    });
    let req = payflow_tests::payment_request("o-ingress", "5.00");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();

    // Forged: signed with a key that is not the channel's.
    let (forger, _) = RsaSigner::generate().unwrap();
    let mut forged = notification(&prepay.order_id, "n-forged", "5.00", now);
    sign::sign_notify(&mut forged, &forger).unwrap();
    assert_eq!(post(&app, &forged).await.0, 401);

    // Tampered: a correctly signed notification with the amount changed afterwards.
    let mut tampered = notification(&prepay.order_id, "n-tampered", "5.00", now);
    sign::sign_notify(&mut tampered, &channel_key()).unwrap();
    tampered.insert("total_amount".into(), "0.01".into());
    assert_eq!(post(&app, &tampered).await.0, 401);

    // Stale: genuine signature, notify_time two hours ago.
    let mut stale = notification(&prepay.order_id, "n-stale", "5.00", now - 2 * 3600 * 1000);
    sign::sign_notify(&mut stale, &channel_key()).unwrap();
    assert_eq!(post(&app, &stale).await.0, 400);

    // Not a form at all.
    let url = format!(
        "http://{}/channels/{}/notify",
        app.ingress_addr,
        stack::CHANNEL
    );
    let garbage = reqwest::Client::new()
        .post(&url)
        .body(vec![0xff, 0xfe])
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status().as_u16(), 401, "no signature: refused");
    // Larger than the body limit.
    let huge = reqwest::Client::new()
        .post(&url)
        .body(vec![b'a'; 70_000])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status().as_u16(), 413);

    let status = app
        .payflow
        .payment(&req.merchant_id, &req.merchant_order_no)
        .await
        .unwrap();
    assert_eq!(
        status.notices_received, 0,
        "nothing refused reached the workflow"
    );

    // Genuine, then replayed: both acknowledged, the workflow hears it once.
    let mut genuine = notification(&prepay.order_id, "n-genuine", "5.00", now);
    sign::sign_notify(&mut genuine, &channel_key()).unwrap();
    assert_eq!(post(&app, &genuine).await, (200, "success".to_string()));
    assert_eq!(post(&app, &genuine).await, (200, "success".to_string()));
    assert!(
        app.store
            .notice_seen(stack::CHANNEL, "n-genuine")
            .await
            .unwrap()
    );
    let status =
        payflow_tests::payment_where(&app, &req, "the notice to reach the workflow", |s| {
            s.notices_received >= 1 && s.queries_made >= 1
        })
        .await;
    assert_eq!(status.notices_received, 1);
    // The channel says the trade is unpaid, so the untrusted notice moved no money.
    assert_eq!(status.state, payflow_client::PayState::Pending);
    assert!(
        app.store
            .entries_for_order(&prepay.order_id)
            .await
            .unwrap()
            .is_empty()
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_for_an_unknown_order_is_recorded_not_dropped() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    let now = chrono::Utc::now().timestamp_millis();
    let mut n = notification("no-such-order", "n-unknown", "1.00", now);
    sign::sign_notify(&mut n, &channel_key()).unwrap();
    assert_eq!(post(&app, &n).await, (200, "success".to_string()));
    let unmatched = app.store.unmatched_notices().await.unwrap();
    assert_eq!(unmatched.len(), 1);
    assert_eq!(unmatched[0].out_trade_no, "no-such-order");
    assert_eq!(unmatched[0].workflow_id, None);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_notification_for_a_finished_payment_is_acknowledged_and_kept() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    let req = payflow_tests::payment_request("o-late", "6.00");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    let id = payflow_client::ids::payment_workflow_id(&req.merchant_id, &req.merchant_order_no);
    let done = app
        .payflow
        .temporal()
        .get_workflow_handle::<payflow_client::definitions::PaymentWorkflow>(id.clone())
        .get_result(Default::default())
        .await
        .expect("payment workflow finished");
    assert_eq!(done.state, payflow_client::PayState::Succeeded);

    let now = chrono::Utc::now().timestamp_millis();
    let mut late = notification(&prepay.order_id, "n-late", "6.00", now);
    sign::sign_notify(&mut late, &channel_key()).unwrap();
    assert_eq!(post(&app, &late).await, (200, "success".to_string()));
    assert!(
        app.store
            .notice_seen(stack::CHANNEL, "n-late")
            .await
            .unwrap()
    );
    // Still exactly one ledger entry: a late notice moves no money.
    assert_eq!(
        app.store
            .entries_for_order(&prepay.order_id)
            .await
            .unwrap()
            .len(),
        1
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_outside_the_allowlist_is_refused_before_anything_else() {
    // Only the channel's (documentation-range) address may post; the test posts from loopback.
    let timing = Timing {
        ingress_allowed_ips: vec!["192.0.2.10".into()],
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    let now = chrono::Utc::now().timestamp_millis();
    let mut n = notification("any-order", "n-ip", "1.00", now);
    sign::sign_notify(&mut n, &channel_key()).unwrap();
    assert_eq!(post(&app, &n).await.0, 403);
    assert!(
        !app.store.notice_seen(stack::CHANNEL, "n-ip").await.unwrap(),
        "nothing recorded"
    );
    app.shutdown().await.unwrap();
}
