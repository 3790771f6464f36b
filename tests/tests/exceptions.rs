//! The payment's exception paths, each driven by a sandbox knob.

use std::time::Duration;

use payflow::sandbox::{Knobs, NotifyMode};
use payflow::stack;
use payflow_client::{MerchantId, PayState, PayflowError, PaymentRequest, PaymentStatus};
use payflow_tests::{Db, Timing, payment_request, payment_where, spawn_app};

const DEADLINE: Duration = Duration::from_secs(30);

async fn settled(app: &stack::Stack, req: &PaymentRequest) -> PaymentStatus {
    payment_where(app, req, "payment to leave Pending", |s| {
        s.state != PayState::Pending && s.state != PayState::Created
    })
    .await
}

fn knobs(k: Knobs) -> Knobs {
    Knobs {
        pay_after: Some(Duration::from_millis(200)),
        ..k
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_without_notification_is_found_by_active_query() {
    let timing = Timing {
        query_schedule_ms: vec![400],
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    app.sandbox.set_knobs(knobs(Knobs {
        notify: NotifyMode::Never,
        ..Knobs::default()
    }));
    let req = payment_request("o-silent", "7.00");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    let s = settled(&app, &req).await;
    assert_eq!(s.state, PayState::Succeeded);
    assert_eq!(s.notices_received, 0, "the channel never notified");
    assert_eq!(
        app.sandbox
            .order(&prepay.order_id)
            .unwrap()
            .notifications_sent,
        0
    );
    assert_eq!(
        app.store
            .entries_for_order(&prepay.order_id)
            .await
            .unwrap()
            .len(),
        1
    );
    payflow_tests::accepted_callbacks(&app).await;
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_notifications_change_the_order_once() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    app.sandbox.set_knobs(knobs(Knobs {
        notify: NotifyMode::Twice,
        ..Knobs::default()
    }));
    let req = payment_request("o-twice", "8.00");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    let s = settled(&app, &req).await;
    assert_eq!(s.state, PayState::Succeeded);
    // Every post was acknowledged (the replay with the ingress's ack, not a second signal).
    app.sandbox
        .wait_for(&prepay.order_id, DEADLINE, |o| o.notifications_sent >= 3)
        .await
        .expect("all notifications posted");
    let history = app.store.order_history(&prepay.order_id).await.unwrap();
    assert_eq!(
        history,
        vec![
            (PayState::Created, PayState::Pending),
            (PayState::Pending, PayState::Succeeded)
        ]
    );
    assert_eq!(
        app.store
            .entries_for_order(&prepay.order_id)
            .await
            .unwrap()
            .len(),
        1
    );
    let got = payflow_tests::accepted_callbacks(&app).await;
    assert_eq!(got.len(), 1, "one merchant event");
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_paid_amount_is_an_exception_without_ledger() {
    let Some(app) = spawn_app(Db::Postgres, Timing::default()).await else {
        return;
    };
    app.sandbox.set_knobs(knobs(Knobs {
        paid_amount: Some("1.00".into()),
        ..Knobs::default()
    }));
    let req = payment_request("o-mismatch", "12.34");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    let s = settled(&app, &req).await;
    assert_eq!(s.state, PayState::Exception);
    let order = app.store.order(&prepay.order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::Exception);
    assert_eq!(order.failure.unwrap().code, "payflow.AMOUNT_MISMATCH");
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
async fn channel_5xx_on_prepay_is_retried() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    app.sandbox.set_knobs(knobs(Knobs {
        server_errors: 2,
        ..Knobs::default()
    }));
    let req = payment_request("o-5xx", "2.00");
    let prepay = app
        .payflow
        .pay(req.clone())
        .await
        .expect("prepay after retries");
    assert!(!prepay.qr_code.is_empty());
    assert_eq!(
        app.sandbox.calls("alipay.trade.precreate"),
        1,
        "answered once, after two 503s"
    );
    assert_eq!(settled(&app, &req).await.state, PayState::Succeeded);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definite_channel_error_fails_with_the_channel_code() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    app.sandbox.set_knobs(Knobs {
        decline_precreate: Some(("ACQ.ACCESS_FORBIDDEN".into(), "no permission".into())),
        ..Knobs::default()
    });
    let req = payment_request("o-declined", "2.00");
    let err = app.payflow.pay(req.clone()).await.unwrap_err();
    assert!(
        matches!(&err, PayflowError::Rejected(m) if m.contains("ACQ.ACCESS_FORBIDDEN")),
        "{err:?}"
    );
    let s = settled(&app, &req).await;
    assert_eq!(s.state, PayState::Failed);
    assert_eq!(s.failure.unwrap().code, "ACQ.ACCESS_FORBIDDEN");
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_pays_make_one_payment() {
    let Some(app) = spawn_app(Db::Postgres, Timing::default()).await else {
        return;
    };
    app.sandbox.set_knobs(Knobs::default());
    let req = payment_request("o-crowd", "9.99");
    let calls = (0..100).map(|_| {
        let payflow = app.payflow.clone();
        let req = req.clone();
        tokio::spawn(async move { payflow.pay(req).await })
    });
    let results = futures::future::join_all(calls).await;
    let prepays: Vec<_> = results
        .into_iter()
        .map(|r| r.unwrap().expect("every caller gets the payment"))
        .collect();
    assert!(
        prepays.iter().all(|p| *p == prepays[0]),
        "one payment for all callers"
    );
    assert_eq!(app.sandbox.calls("alipay.trade.precreate"), 1);
    let order = app
        .store
        .order_by_merchant_no(stack::MERCHANT, "o-crowd")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(order.order_id, prepays[0].order_id);
    app.shutdown().await.unwrap();
}

/// Risk limits refuse before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risk_limits_refuse_before_anything_is_created() {
    let secret = payflow_tests::keys().path(payflow::devkeys::DevKeys::MERCHANT_SECRET);
    let extra = format!(
        "\n[[merchants]]\nid = \"risky\"\nnotify_url = \"http://127.0.0.1:9/notify\"\n\
         allow_plain_http = true\nallow_private_network = true\n\
         webhook_secret = {{ file = \"{}\" }}\nmax_amount = \"100.00\"\n\
         daily_limit = \"150.00\"\nmax_payments_per_minute = 5\n",
        secret.display()
    );
    let timing = Timing {
        pay_after: None,
        ..Timing::default()
    };
    let Some(app) = payflow_tests::spawn_app_with(Db::Postgres, timing, extra).await else {
        return;
    };
    let risky = |no: &str, amount: &str| PaymentRequest {
        merchant_id: MerchantId::parse("risky").unwrap(),
        ..payment_request(no, amount)
    };
    let too_big = app.payflow.pay(risky("r-1", "100.01")).await.unwrap_err();
    assert!(
        matches!(&too_big, PayflowError::Rejected(m) if m.contains("per-transaction limit")),
        "{too_big:?}"
    );
    app.payflow
        .pay(risky("r-2", "100.00"))
        .await
        .expect("at the limit");
    let over_day = app.payflow.pay(risky("r-3", "50.01")).await.unwrap_err();
    assert!(
        matches!(&over_day, PayflowError::Rejected(m) if m.contains("24-hour")),
        "{over_day:?}"
    );
    app.payflow
        .pay(risky("r-4", "50.00"))
        .await
        .expect("up to the daily limit");
    for no in ["r-1", "r-3"] {
        let created = app.store.order_by_merchant_no("risky", no).await.unwrap();
        assert!(created.is_none(), "{no}: nothing created");
    }
    app.shutdown().await.unwrap();
}

/// A channel that never answers precreate: the adapter's request timeout (the channel's
/// `request_timeout_ms`) ends each call as Transient, the activity retries, and once the channel
/// answers again the payment gets its prepay and succeeds.
///
/// Appended TOML cannot reopen the stack's own `[[channels]]` entry, so the timeout is set on
/// a second channel, served by a sandbox of this test's own and routed to by its own product.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_that_hangs_on_prepay_is_retried() {
    use payflow::devkeys::DevKeys;
    use payflow_activities::crypto::rsa_keys::{RsaSigner, RsaVerifier};

    const PRECREATE: &str = "alipay.trade.precreate";
    let keys = payflow_tests::keys();
    let hanging = payflow::sandbox::spawn(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        payflow::sandbox::SandboxConfig {
            app_id: stack::APP_ID.into(),
            app_public_key: RsaVerifier::from_text(
                &keys.read(DevKeys::APP_PUBLIC).unwrap(),
                "app public key",
            )
            .unwrap(),
            signer: RsaSigner::from_text(
                &keys.read(DevKeys::SANDBOX_PRIVATE).unwrap(),
                "sandbox key",
            )
            .unwrap(),
            knobs: knobs(Knobs {
                hang_methods: vec![PRECREATE.into()],
                ..Knobs::default()
            }),
            notify_retry: vec![Duration::from_millis(300); 5],
        },
    )
    .await
    .unwrap();
    let extra = format!(
        "\n[[channels]]\nname = \"alipay-hanging\"\nkind = \"alipay\"\n\
         gateway_url = \"{gateway}\"\napp_id = \"{app_id}\"\n\
         app_private_key = {{ file = \"{private}\" }}\n\
         channel_public_key = {{ file = \"{public}\" }}\nrequest_timeout_ms = 1000\n\
         \n[[products]]\nid = \"qr-hanging\"\nchannel = \"alipay-hanging\"\n",
        gateway = hanging.gateway_url(),
        app_id = stack::APP_ID,
        private = keys.path(DevKeys::APP_PRIVATE).display(),
        public = keys.path(DevKeys::SANDBOX_PUBLIC).display(),
    );
    let Some(app) = payflow_tests::spawn_app_with(Db::Sqlite, Timing::default(), extra).await
    else {
        return;
    };
    let req = PaymentRequest {
        product_id: payflow_client::ProductId::parse("qr-hanging").unwrap(),
        ..payment_request("o-hanging", "3.00")
    };
    let pay = tokio::spawn({
        let payflow = app.payflow.clone();
        let req = req.clone();
        async move { payflow.pay(req).await }
    });

    // The channel takes the call and never answers; the adapter gives up after its 1 s request
    // timeout (not the 10 s default) and the activity calls again.
    assert!(
        hanging
            .wait_until(DEADLINE, |s| s.calls(PRECREATE) >= 1)
            .await,
        "precreate reached the channel"
    );
    let first = std::time::Instant::now();
    assert!(
        hanging
            .wait_until(DEADLINE, |s| s.calls(PRECREATE) >= 3)
            .await,
        "precreate retried"
    );
    assert!(
        first.elapsed() < Duration::from_secs(10),
        "two retries within {:?}: the channel's request timeout applies",
        first.elapsed()
    );
    let s = app
        .payflow
        .payment(&req.merchant_id, &req.merchant_order_no)
        .await
        .unwrap();
    assert_eq!(
        s.state,
        PayState::Created,
        "no prepay while the channel hangs"
    );
    assert!(s.prepay.is_none() && s.failure.is_none(), "{s:?}");
    assert!(!pay.is_finished(), "the caller still waits for its prepay");

    // The channel answers again: the next attempt gets the prepay.
    hanging.update_knobs(|k| k.hang_methods.clear());
    let prepay = tokio::time::timeout(DEADLINE, pay)
        .await
        .expect("prepay in time")
        .unwrap()
        .expect("prepay after retries");
    assert!(!prepay.qr_code.is_empty());
    assert_eq!(settled(&app, &req).await.state, PayState::Succeeded);
    let order = app.store.order(&prepay.order_id).await.unwrap().unwrap();
    assert_eq!(order.channel, "alipay-hanging");
    assert!(hanging.order(&prepay.order_id).is_some());
    assert_eq!(
        app.store
            .entries_for_order(&prepay.order_id)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.sandbox.calls(PRECREATE),
        0,
        "the stack's own channel was never asked"
    );
    app.shutdown().await.unwrap();
}
