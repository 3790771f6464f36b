//! Encryption at rest (issue 8): with the payload codec on (the dev stack's generated key), a
//! payment run end to end leaves no order number, amount or merchant account readable in the
//! history the Temporal server stores, while the same history decrypted with the codec holds
//! all three (so this test can fail). The history is read the way anyone with access to the
//! server would: a client without the codec, raw `GetWorkflowExecutionHistory`.
//!
//! Readable by design, and so skipped by the scan: workflow ids (`pay/{merchant}/{order_no}`
//! names the run) and search attributes (`OrderNo`, `MerchantId`, `AmountMinor`: the server
//! indexes them for operators' queries). Everything else, every payload in particular, must
//! not carry the secrets in clear, neither as text nor base64-encoded.

use std::time::Duration;

use payflow::stack;
use payflow_client::{EncryptionCodec, PayState};
use payflow_tests::histories::{self, replay_one};
use payflow_tests::{Db, Timing, accepted_count, payment_request, payment_where, spawn_app};
use temporalio_client::{UntypedWorkflow, WorkflowHistory};
use temporalio_common::data_converters::SerializationContextData;
use temporalio_common::payload_visitor::decode_payloads;
use temporalio_common::protos::temporal::api::history::v1::History;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// JSON keys whose values are readable by design (see the module docs).
/// (The history's JSON spells some keys in snake case, others in camel case.)
fn readable_by_design(key: &str) -> bool {
    matches!(
        key,
        "workflow_id" | "workflowId" | "indexed_fields" | "indexedFields"
    )
}

fn base64_decoded(text: &str) -> Option<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    [STANDARD, URL_SAFE]
        .iter()
        .find_map(|e| e.decode(text).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Every place in `value` (outside the readable-by-design keys) where one of `needles`
/// appears, as text or inside base64, as `(path, needle)`.
fn sightings(value: &serde_json::Value, needles: &[&str]) -> Vec<(String, String)> {
    fn walk(
        v: &serde_json::Value,
        path: &mut String,
        needles: &[&str],
        out: &mut Vec<(String, String)>,
    ) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    if readable_by_design(k) {
                        continue;
                    }
                    let len = path.len();
                    path.push('.');
                    path.push_str(k);
                    walk(child, path, needles, out);
                    path.truncate(len);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(child, path, needles, out);
                    path.truncate(len);
                }
            }
            serde_json::Value::String(s) => {
                let decoded = base64_decoded(s);
                for needle in needles {
                    if s.contains(needle) || decoded.as_ref().is_some_and(|d| d.contains(needle)) {
                        out.push((path.clone(), needle.to_string()));
                    }
                }
            }
            serde_json::Value::Number(n) => {
                let n = n.to_string();
                for needle in needles {
                    if n.contains(needle) {
                        out.push((path.clone(), needle.to_string()));
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut String::new(), needles, &mut out);
    out
}

/// Payloads (objects with `metadata` and `data`) outside search attributes that are not
/// `binary/encrypted`, by path. The SDK's own bookkeeping in markers is not a payload of ours
/// and never goes through a codec: a local activity marker's `details.data` (sequence number,
/// attempt, activity type, times) and a patch marker's `details.patch-data` (the patch id).
/// Those are skipped here; the leak check above still reads them. A local activity's result
/// (`details.result`) is ours and must be encrypted.
fn unencrypted_payloads(value: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, path: &mut String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(marker) = map.get("MarkerRecordedEventAttributes") {
                    let name = marker.get("marker_name").and_then(|n| n.as_str());
                    let bookkeeping = match name {
                        Some("core_local_activity") => "data",
                        Some("core_patch") => "patch-data",
                        _ => "",
                    };
                    let mut marker = marker.clone();
                    if let Some(details) = marker.get_mut("details").and_then(|d| d.as_object_mut())
                    {
                        details.remove(bookkeeping);
                    }
                    let len = path.len();
                    path.push_str(".MarkerRecordedEventAttributes");
                    walk(&marker, path, out);
                    path.truncate(len);
                    return;
                }
                if let (Some(meta), Some(_)) = (map.get("metadata"), map.get("data")) {
                    let encoding = meta
                        .get("encoding")
                        .and_then(|e| e.as_str())
                        .and_then(base64_decoded);
                    if encoding.as_deref() != Some("binary/encrypted") {
                        out.push(format!("{path} ({encoding:?})"));
                    }
                    return;
                }
                for (k, child) in map {
                    if matches!(k.as_str(), "indexed_fields" | "indexedFields") {
                        continue;
                    }
                    let len = path.len();
                    path.push('.');
                    path.push_str(k);
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(child, path, out);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut String::new(), &mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_history_holds_no_order_number_amount_or_account_in_clear() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    let codec: EncryptionCodec = app
        .codec()
        .expect("the dev stack encrypts payloads (PAYFLOW_DEV_CODEC is not off)")
        .clone();
    let order_no = format!("enc-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let amount = "73.19";
    let account = payflow_activities::accounting::merchant_payable(stack::MERCHANT);
    let needles = [order_no.as_str(), amount, account.as_str()];

    // A payment end to end: prepay, channel notification, confirming query, ledger, callback.
    let req = payment_request(&order_no, amount);
    app.payflow.pay(req.clone()).await.expect("pay");
    let status = payment_where(&app, &req, "payment Succeeded", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    assert_eq!(status.amount.to_string(), format!("{amount} CNY"));
    accepted_count(&app, "payment.succeeded", Duration::from_secs(45)).await;
    // A payment's callback delivered at once runs in the payment's own history; an event a
    // service sends goes through a Notification workflow of its own.
    app.payflow
        .notify(payflow_client::NotificationRequest {
            merchant_id: req.merchant_id.clone(),
            event_id: payflow_client::EventId::parse(format!("{order_no}-shipped")).unwrap(),
            event_type: "order.shipped".into(),
            data: serde_json::json!({"merchant_order_no": order_no, "amount": amount}),
            priority: payflow_client::Priority::Realtime,
            notify_url: None,
            resume: None,
        })
        .await
        .expect("notify");
    accepted_count(&app, "order.shipped", Duration::from_secs(45)).await;
    // The merchant's account, read the way services read the books: a LedgerRead workflow.
    let balance = app
        .payflow
        .account_balance(&account)
        .await
        .expect("ledger read")
        .expect("the merchant's payable account");
    assert_eq!(balance.account_id, account);

    // What the server stores, fetched by a client that has no codec.
    let (address, namespace) = app.temporal_target();
    let plain = payflow::startup::connect_temporal(address, namespace)
        .await
        .expect("a client without the codec");
    histories::wait_all_closed(&plain, Duration::from_secs(45)).await;
    let mut ids = Vec::new();
    for workflow_type in ["Payment", "Notification", "LedgerRead"] {
        let of_type = histories::workflow_ids_of_type(&plain, workflow_type).await;
        assert!(!of_type.is_empty(), "no {workflow_type} workflow recorded");
        ids.extend(of_type);
    }

    let mut leaks = Vec::new();
    let mut clear_payloads = Vec::new();
    let mut decrypted_sightings = Vec::new();
    let mut payment_history = None;
    for id in &ids {
        let events = plain
            .get_workflow_handle::<UntypedWorkflow>(id.clone())
            .fetch_history(Default::default())
            .into_events()
            .await
            .unwrap_or_else(|e| panic!("history of {id}: {e}"));
        let raw = History { events };
        let raw_json = serde_json::to_value(&raw).expect("history JSON");
        for (path, needle) in sightings(&raw_json, &needles) {
            leaks.push(format!("{id}{path}: {needle}"));
        }
        for path in unencrypted_payloads(&raw_json) {
            clear_payloads.push(format!("{id}{path}"));
        }

        // The same history through the codec: everything is there.
        let mut decrypted = raw.clone();
        decode_payloads(&mut decrypted, &codec, &SerializationContextData::None)
            .await
            .unwrap_or_else(|e| panic!("decrypt history of {id}: {e}"));
        let decrypted_json = serde_json::to_value(&decrypted).expect("history JSON");
        decrypted_sightings.extend(
            sightings(&decrypted_json, &needles)
                .into_iter()
                .map(|s| s.1),
        );
        if id.starts_with("pay/") {
            payment_history = Some(raw);
        }
    }
    assert!(
        leaks.is_empty(),
        "readable in the server's history:\n{}",
        leaks.join("\n")
    );
    assert!(
        clear_payloads.is_empty(),
        "payloads not encrypted:\n{}",
        clear_payloads.join("\n")
    );
    for needle in needles {
        assert!(
            decrypted_sightings.iter().any(|s| s == needle),
            "{needle} not found in the decrypted histories: the scan would miss a leak"
        );
    }

    // The encrypted history replays with the codec, and is unreadable without it.
    let payment_history = payment_history.expect("the payment's history");
    let json = serde_json::to_vec(&payment_history).unwrap();
    let with_codec = WorkflowReplayer::new(
        histories::all_workflows(
            WorkflowReplayerOptions::new().data_converter(codec.data_converter()),
        )
        .unwrap()
        .build(),
    )
    .unwrap();
    let replayed = replay_one(&with_codec, WorkflowHistory::from_json(&json).unwrap())
        .await
        .expect("replay runs");
    assert!(
        replayed.is_none(),
        "the encrypted history replays with the codec: {replayed:?}"
    );
    let without_codec = replay_one(
        &histories::replayer(),
        WorkflowHistory::from_json(&json).unwrap(),
    )
    .await;
    assert!(
        !matches!(without_codec, Ok(None)),
        "without the key the history must not replay"
    );

    // Histories written before encryption (tests/histories) still replay with the codec.
    let failed = histories::replay_failures(&with_codec, &histories::load_all()).await;
    assert!(
        failed.is_empty(),
        "recorded histories no longer replay with the codec on:\n{}",
        failed.join("\n")
    );

    // An operator with the token reads the payment through `payflow codec-server` and the
    // Temporal CLI; without the token the CLI gets nothing decoded.
    let payment_id = ids
        .iter()
        .find(|id| id.starts_with("pay/"))
        .expect("payment id");
    let token = "operator-token-for-the-test-0123";
    let router = payflow::codec_server::router(payflow::codec_server::CodecServerOptions {
        codec: codec.clone(),
        auth_token: secrecy::SecretString::from(token.to_string()),
        allowed_origins: vec![],
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let codec_endpoint = format!("http://{}/{{namespace}}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(payflow::codec_server::serve(listener, router, async {
        let _ = stopped.await;
    }));
    let show = |auth: Option<String>| {
        let mut cmd = tokio::process::Command::new(
            payflow::devserver::find_temporal_cli().expect("Temporal CLI"),
        );
        cmd.args(["workflow", "show", "--output", "json", "--workflow-id"])
            .arg(payment_id)
            .args(["--address", address.trim_start_matches("http://")])
            .args(["--namespace", namespace])
            .args(["--codec-endpoint", &codec_endpoint])
            .env_remove("TEMPORAL_CODEC_AUTH");
        if let Some(a) = auth {
            cmd.args(["--codec-auth", &a]);
        }
        cmd.output()
    };
    let shown = show(Some(format!("Bearer {token}"))).await.unwrap();
    assert!(
        shown.status.success(),
        "temporal workflow show with the codec server: {}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown_json: serde_json::Value =
        serde_json::from_slice(&shown.stdout).expect("temporal workflow show --output json");
    let seen: Vec<String> = sightings(&shown_json, &needles)
        .into_iter()
        .map(|s| s.1)
        .collect();
    for needle in [order_no.as_str(), amount] {
        assert!(
            seen.iter().any(|s| s == needle),
            "the operator's decoded view lacks {needle}"
        );
    }
    for auth in [None, Some("Bearer not-the-operator-token".to_string())] {
        let refused = show(auth.clone()).await.unwrap();
        let out = String::from_utf8_lossy(&refused.stdout);
        if refused.status.success() {
            let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
            assert!(
                sightings(&json, &needles).is_empty(),
                "decoded without the token ({auth:?})"
            );
        } else {
            assert!(!out.contains(&order_no), "{out}");
        }
    }
    let _ = stop.send(());
    app.shutdown().await.unwrap();
}

#[test]
fn the_scan_finds_secrets_as_text_and_in_base64_but_not_in_ids_or_search_attributes() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let history = serde_json::json!({
        "events": [{
            "workflow_id": "pay/demo/o-1",
            "search_attributes": {"indexed_fields": {"OrderNo": {"data": b64("\"o-1\"")}}},
            "input": {"payloads": [{"metadata": {"encoding": b64("json/plain")}, "data": b64("{\"order\":\"o-1\"}")}]},
            "user_metadata": {"summary": {"metadata": {"encoding": b64("binary/encrypted")}, "data": b64("xx")}},
            "failure": {"message": "amount 73.19 refused"}
        }]
    });
    let found = sightings(&history, &["o-1", "73.19"]);
    assert_eq!(
        found,
        vec![
            (
                ".events[0].failure.message".to_string(),
                "73.19".to_string()
            ),
            (
                ".events[0].input.payloads[0].data".to_string(),
                "o-1".to_string()
            ),
        ]
    );
    assert_eq!(
        unencrypted_payloads(&history),
        vec![".events[0].input.payloads[0] (Some(\"json/plain\"))".to_string()]
    );
}
