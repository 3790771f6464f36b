//! WeChat Pay v3 end to end on the dev server: payments routed to the `wechat` channel, served
//! by the sandbox's WeChat Pay server (signed requests and answers, encrypted notifications),
//! confirmed through the ingress or by active query, refunded through
//! `/v3/refund/domestic/refunds`, and forged notifications refused so WeChat Pay would retry.

use std::time::Duration;

use payflow::devkeys::DevKeys;
use payflow::sandbox::NotifyMode;
use payflow::sandbox::alipay::SandboxRefundStatus;
use payflow::sandbox::wechat::{self as wechat_sandbox, op};
use payflow::stack::{self, Stack};
use payflow_activities::channels::wechat::{ApiV3Key, WechatChannel, WechatConfig, sign};
use payflow_activities::channels::{Channel, StatementUrl};
use payflow_activities::crypto::rsa_keys::{RsaSigner, RsaVerifier};
use payflow_client::{
    OrderNo, PayState, PaymentRequest, ProductId, RefundKind, RefundNo, RefundRequest, RefundState,
};
use payflow_tests::{
    Db, Timing, accepted_callbacks, accepted_count, assert_balanced, cny, keys, payable,
    payment_request, payment_where, spawn_app,
};

const DEADLINE: Duration = Duration::from_secs(30);

/// A CNY payment of the demo merchant for the product routed to WeChat Pay.
fn wechat_request(order_no: &str, amount: &str) -> PaymentRequest {
    PaymentRequest {
        product_id: ProductId::parse(stack::WECHAT_PRODUCT).unwrap(),
        ..payment_request(order_no, amount)
    }
}

fn notify_url(app: &Stack) -> String {
    format!(
        "http://{}/channels/{}/notify",
        app.ingress_addr,
        stack::WECHAT_CHANNEL
    )
}

/// Pay, WeChat Pay posts the encrypted notification, the ingress verifies and decrypts it, the
/// workflow confirms it by query; Succeeded, the ledger posted once, the merchant told.
async fn paid_through_the_encrypted_notification(db: Db) {
    let Some(app) = spawn_app(db, Timing::default()).await else {
        return;
    };
    let req = wechat_request("o-wx-happy", "12.34");
    let prepay = app.payflow.pay(req.clone()).await.expect("pay");
    assert_eq!(prepay.channel, stack::WECHAT_CHANNEL);
    assert!(
        prepay.qr_code.starts_with("weixin://wxpay/bizpayurl?pr="),
        "{prepay:?}"
    );

    let status = payment_where(&app, &req, "payment Succeeded", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    assert_eq!(status.channel.as_deref(), Some(stack::WECHAT_CHANNEL));
    assert!(
        status.notices_received >= 1,
        "paid through the notification"
    );
    assert!(
        status.queries_made >= 1,
        "a query confirmed the notification"
    );
    let trade = app
        .wechat
        .wait_for(&prepay.order_id, DEADLINE, |t| t.acknowledged)
        .await
        .expect("the ingress acknowledged the notification with a 2xx");
    assert_eq!(trade.total, 1234, "fen");
    assert_eq!(trade.trade_state(), "SUCCESS");
    assert_eq!(trade.notify_url, notify_url(&app));
    assert_eq!(
        status.channel_trade_no.as_deref(),
        Some(trade.transaction_id.as_str())
    );

    let order = app.store.order(&prepay.order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::Succeeded);
    assert_eq!(order.paid_amount, Some(req.amount));
    let entries = app.store.entries_for_order(&prepay.order_id).await.unwrap();
    assert_eq!(entries.len(), 1, "exactly one ledger entry");
    let postings: Vec<(&str, i64, i64)> = entries[0]
        .postings
        .iter()
        .map(|p| (p.account_id.as_str(), p.debit_minor, p.credit_minor))
        .collect();
    assert_eq!(
        postings,
        vec![
            ("channel:wechat:clearing", 1234, 0),
            ("merchant:demo:payable", 0, 1227),
            ("platform:fees", 0, 7),
        ]
    );
    assert_balanced(&app).await;

    let ok = accepted_callbacks(&app).await;
    assert_eq!(ok.len(), 1);
    assert!(ok[0].signature_valid);
    assert_eq!(ok[0].body["type"], "payment.succeeded");
    assert_eq!(ok[0].body["data"]["merchant_order_no"], "o-wx-happy");
    assert_eq!(ok[0].body["data"]["amount"]["amount"], "12.34");

    // Only the WeChat Pay server was asked, and every request we made verified there.
    assert_eq!(app.wechat.calls(op::NATIVE), 1);
    assert!(app.wechat.calls(op::QUERY) >= 1);
    assert_eq!(app.wechat.sign_errors(), 0);
    assert_eq!(app.sandbox.calls("alipay.trade.precreate"), 0);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wechat_payment_via_encrypted_notification() {
    paid_through_the_encrypted_notification(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_wechat_payment_via_encrypted_notification() {
    paid_through_the_encrypted_notification(Db::Postgres).await;
}

/// WeChat Pay never notifies: the active query finds the payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_payment_confirmed_by_query_when_the_notification_is_dropped() {
    let timing = Timing {
        query_schedule_ms: vec![300],
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    app.wechat.update_knobs(|k| k.notify = NotifyMode::Never);
    let req = wechat_request("o-wx-query", "5.00");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    let status = payment_where(&app, &req, "payment Succeeded", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    assert_eq!(status.notices_received, 0, "no notification came");
    assert!(status.queries_made >= 1);
    let trade = app.wechat.trade(&prepay.order_id).unwrap();
    assert_eq!(trade.notifications_sent, 0);
    assert_eq!(
        status.channel_trade_no.as_deref(),
        Some(trade.transaction_id.as_str())
    );
    assert_eq!(
        app.store
            .entries_for_order(&prepay.order_id)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        accepted_callbacks(&app).await[0].body["type"],
        "payment.succeeded"
    );
    app.shutdown().await.unwrap();
}

/// The adapter as the worker builds it, from the stack's dev keys (to read the trade bill).
fn wechat_channel(app: &Stack, keys: &DevKeys) -> WechatChannel {
    let read = |name: &str| keys.read(name).unwrap();
    WechatChannel::new(WechatConfig {
        name: stack::WECHAT_CHANNEL.into(),
        base_url: app.wechat.base_url().parse().unwrap(),
        mchid: stack::WECHAT_MCHID.into(),
        appid: stack::WECHAT_APPID.into(),
        merchant_serial_no: stack::WECHAT_MERCHANT_SERIAL.into(),
        merchant_private_key: RsaSigner::from_text(&read(DevKeys::WECHAT_MERCHANT_PRIVATE), "m")
            .unwrap(),
        platform_keys: vec![(
            stack::WECHAT_PLATFORM_SERIAL.into(),
            RsaVerifier::from_text(&read(DevKeys::WECHAT_PLATFORM_PUBLIC), "p").unwrap(),
        )],
        api_v3_key: ApiV3Key::from_text(read(DevKeys::WECHAT_API_V3_KEY).trim()).unwrap(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    })
    .unwrap()
}

/// A signed `GET` of `url` as our merchant (the bill download is a v3 call too).
async fn signed_get(url: &str, keys: &DevKeys) -> reqwest::Response {
    let signer = RsaSigner::from_text(
        &keys.read(DevKeys::WECHAT_MERCHANT_PRIVATE).unwrap(),
        "merchant key",
    )
    .unwrap();
    let u = reqwest::Url::parse(url).unwrap();
    let path_and_query = format!("{}?{}", u.path(), u.query().unwrap_or_default());
    let authorization = sign::authorization(
        stack::WECHAT_MCHID,
        stack::WECHAT_MERCHANT_SERIAL,
        &signer,
        "GET",
        &path_and_query,
        chrono::Utc::now().timestamp(),
        &sign::nonce(),
        "",
    )
    .unwrap();
    reqwest::Client::new()
        .get(url)
        .header("Authorization", authorization)
        .send()
        .await
        .unwrap()
}

/// A merchant refund of a WeChat Pay payment goes through `/v3/refund/domestic/refunds`; the
/// day's trade bill then shows the payment and the refund.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_refund_succeeds_and_shows_in_the_trade_bill() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    let req = wechat_request("o-wx-refund", "10.00");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    payment_where(&app, &req, "payment Succeeded", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    // 10.00 less the 0.6 % fee.
    assert_eq!(payable(&app).await, 994);

    let refund = RefundRequest {
        merchant_id: req.merchant_id.clone(),
        merchant_order_no: OrderNo::parse("o-wx-refund").unwrap(),
        merchant_refund_no: RefundNo::parse("r-wx-1").unwrap(),
        amount: cny("3.00"),
        reason: "one item returned".into(),
        kind: RefundKind::Merchant,
    };
    app.payflow.refund(refund.clone()).await.unwrap();
    let result = app
        .payflow
        .refund_result(&refund.merchant_id, &refund.merchant_refund_no)
        .await
        .unwrap();
    assert_eq!(result.state, RefundState::Succeeded, "{result:?}");
    assert_eq!(result.channel.as_deref(), Some(stack::WECHAT_CHANNEL));
    let at_channel = app
        .wechat
        .refund(result.refund_id.as_deref().expect("refund id"))
        .expect("the refund reached WeChat Pay");
    assert_eq!(at_channel.amount, 300, "fen");
    assert_eq!(at_channel.status, SandboxRefundStatus::Success);
    assert_eq!(app.wechat.calls(op::REFUND), 1);
    let trade = app.wechat.trade(&prepay.order_id).unwrap();
    assert_eq!((trade.trade_state(), trade.refunded()), ("REFUND", 300));

    let order = app.store.order(&prepay.order_id).await.unwrap().unwrap();
    assert_eq!(order.state, PayState::PartiallyRefunded);
    // 3.00 back: 2.98 from the merchant, 0.02 of our fee.
    assert_eq!(payable(&app).await, 696);
    assert_balanced(&app).await;
    assert_eq!(accepted_count(&app, "refund.succeeded", DEADLINE).await, 1);

    // The day's trade bill (Beijing time), downloaded with a signed GET as WeChat Pay wants.
    let keys = keys();
    let beijing = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    let today = chrono::Utc::now().with_timezone(&beijing).date_naive();
    let url = match wechat_channel(&app, keys)
        .statement_url(today)
        .await
        .unwrap()
    {
        StatementUrl::Ready(url) => url,
        other => panic!("no bill for today: {other:?}"),
    };
    let resp = signed_get(&url, keys).await;
    assert_eq!(resp.status().as_u16(), 200);
    let bill = resp.text().await.unwrap();
    let lines: Vec<&str> = bill.lines().collect();
    assert_eq!(lines[0], wechat_sandbox::BILL_HEADER, "{bill}");
    let rows: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(&format!("`{}", prepay.order_id)))
        .collect();
    assert_eq!(rows.len(), 2, "{bill}");
    assert!(rows[0].contains("`SUCCESS,") && rows[0].contains("`10.00,"));
    assert!(rows[1].contains("`REFUND,") && rows[1].contains("`3.00,`0.00,`ORIGINAL,`SUCCESS"));
    assert_eq!(lines[lines.len() - 2], wechat_sandbox::BILL_SUMMARY_HEADER);
    assert_eq!(
        lines[lines.len() - 1],
        "`2,`10.00,`3.00,`0.00,`0.04000,`10.00,`3.00"
    );
    app.shutdown().await.unwrap();
}

/// A notification that does not verify is refused with a non-2xx (so WeChat Pay retries) and
/// changes nothing; the genuine one is then acknowledged and the payment succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_wechat_notification_is_refused() {
    let timing = Timing {
        pay_after: None,
        // No active query before the test is done: only the notification can confirm.
        query_schedule_ms: vec![120_000],
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    app.wechat.update_knobs(|k| k.notify = NotifyMode::Never);
    let req = wechat_request("o-wx-forged", "8.88");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    assert!(app.wechat.pay(&prepay.order_id));
    let genuine = app
        .wechat
        .notification(&prepay.order_id, "EV-forged-1")
        .expect("a notification of the paid trade");
    let post = |headers: Vec<(String, String)>, body: Vec<u8>| {
        let url = notify_url(&app);
        async move {
            let mut request = reqwest::Client::new().post(url).body(body);
            for (k, v) in headers {
                request = request.header(k, v);
            }
            request.send().await.unwrap().status()
        }
    };
    let header = |name: &str| -> String {
        genuine
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap()
    };

    // The body changed after signing (another amount inside the envelope would be the same).
    let mut envelope: serde_json::Value = serde_json::from_slice(&genuine.body).unwrap();
    envelope["summary"] = "支付成功 ".into();
    let altered = envelope.to_string().into_bytes();
    // Signed, but by a key that is not the platform's (the Alipay sandbox's).
    let other_key = RsaSigner::from_text(
        &keys().read(DevKeys::SANDBOX_PRIVATE).unwrap(),
        "another key",
    )
    .unwrap();
    let forged = sign::sign_as_platform(
        &other_key,
        stack::WECHAT_PLATFORM_SERIAL,
        header(sign::HEADER_TIMESTAMP).parse().unwrap(),
        &header(sign::HEADER_NONCE),
        &genuine.body,
    )
    .unwrap();
    let with = |name: &str, value: String| -> Vec<(String, String)> {
        genuine
            .headers
            .iter()
            .map(|(k, v)| {
                if k.eq_ignore_ascii_case(name) {
                    (k.clone(), value.clone())
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect()
    };
    let refused = [
        ("altered body", genuine.headers.clone(), altered),
        (
            "signed by another key",
            with(sign::HEADER_SIGNATURE, forged.signature),
            genuine.body.clone(),
        ),
        (
            "signature probe",
            with(sign::HEADER_SIGNATURE, sign::probe_signature()),
            genuine.body.clone(),
        ),
        (
            "unknown platform serial",
            with(
                sign::HEADER_SERIAL,
                "7132D72A03E93CDDF8C03BBD1F37EEDF".into(),
            ),
            genuine.body.clone(),
        ),
        (
            "no signature headers",
            vec![("Content-Type".to_string(), "application/json".to_string())],
            genuine.body.clone(),
        ),
    ];
    for (what, headers, body) in refused {
        let status = post(headers, body).await;
        assert!(!status.is_success(), "{what}: {status}");
        assert_eq!(status.as_u16(), 401, "{what}");
    }
    assert!(
        !app.store
            .notice_seen(stack::WECHAT_CHANNEL, "EV-forged-1")
            .await
            .unwrap(),
        "a refused notification is not recorded"
    );
    let status = app
        .payflow
        .payment(&req.merchant_id, &req.merchant_order_no)
        .await
        .unwrap();
    assert_eq!(status.state, PayState::Pending);
    assert_eq!(status.notices_received, 0);

    // The genuine notification: acknowledged (an empty 2xx), and the payment goes through.
    let status = post(genuine.headers.clone(), genuine.body.clone()).await;
    assert!(status.is_success(), "{status}");
    let done = payment_where(&app, &req, "payment Succeeded", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    assert_eq!(done.notices_received, 1);
    assert!(
        app.store
            .notice_seen(stack::WECHAT_CHANNEL, "EV-forged-1")
            .await
            .unwrap()
    );
    app.shutdown().await.unwrap();
}
