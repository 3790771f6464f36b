//! Our signatures checked by independent implementations: Python's `cryptography` for
//! SHA256withRSA (Alipay RSA2 and the merchant callbacks' `payflow-signature-rsa`) and the
//! `standardwebhooks` package for merchant callbacks, both installed into `.tools/venv` by
//! `scripts/tools.sh`. A correct signature passes; a changed byte fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use payflow_activities::channels::alipay::sign;
use payflow_activities::crypto::rsa_keys::RsaSigner;
use payflow_activities::crypto::webhook::WebhookSecret;

fn python() -> PathBuf {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.tools/venv/bin/python"
    ));
    assert!(
        p.is_file(),
        "run scripts/tools.sh first (it installs the Python checkers)"
    );
    p
}

/// Runs a Python snippet with `args`, returning (success, stdout).
fn run_python(script: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("CHECK_FAILED"),
        "python failed: {stderr}"
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

const RSA_VERIFY: &str = r#"
import sys, base64
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.exceptions import InvalidSignature
key = serialization.load_pem_public_key(open(sys.argv[1], 'rb').read())
try:
    key.verify(base64.b64decode(sys.argv[3]), sys.argv[2].encode(), padding.PKCS1v15(), hashes.SHA256())
except InvalidSignature:
    sys.stderr.write('CHECK_FAILED'); sys.exit(1)
"#;

const RSA_SIGN: &str = r#"
import sys, base64
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
key = serialization.load_pem_private_key(open(sys.argv[1], 'rb').read(), password=None)
print(base64.b64encode(key.sign(sys.argv[2].encode(), padding.PKCS1v15(), hashes.SHA256())).decode())
"#;

#[test]
fn alipay_rsa2_signatures_agree_with_python_cryptography() {
    let dir = std::env::temp_dir().join(format!("payflow-rsa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (signer, private_pem) = RsaSigner::generate().unwrap();
    let private = dir.join("k.pem");
    let public = dir.join("k.pub.pem");
    std::fs::write(&private, private_pem).unwrap();
    std::fs::write(&public, signer.public_pem()).unwrap();

    let mut params = BTreeMap::new();
    for (k, v) in [
        ("app_id", "2021000000000001"),
        ("method", "alipay.trade.precreate"),
        ("charset", "utf-8"),
        ("sign_type", "RSA2"),
        ("timestamp", "2024-01-01 08:00:00"),
        ("version", "1.0"),
        (
            "biz_content",
            r#"{"out_trade_no":"o1","total_amount":"88.88","subject":"茶"}"#,
        ),
    ] {
        params.insert(k.to_string(), v.to_string());
    }
    sign::sign_request(&mut params, &signer).unwrap();
    let content = sign::canonical(&params, &["sign"]);
    let ours = params["sign"].clone();

    // Python verifies ours, and a changed byte fails there too.
    let (ok, _) = run_python(RSA_VERIFY, &[public.to_str().unwrap(), &content, &ours]);
    assert!(ok, "python rejected our signature");
    let tampered = content.replace("88.88", "88.89");
    let (ok, _) = run_python(RSA_VERIFY, &[public.to_str().unwrap(), &tampered, &ours]);
    assert!(!ok, "python accepted a tampered string");

    // PKCS#1 v1.5 is deterministic: Python's signature equals ours, byte for byte.
    let (_, theirs) = run_python(RSA_SIGN, &[private.to_str().unwrap(), &content]);
    assert_eq!(theirs, ours);
    std::fs::remove_dir_all(&dir).ok();
}

const WEBHOOK_VERIFY: &str = r#"
import sys
from standardwebhooks import Webhook
try:
    Webhook(sys.argv[1]).verify(sys.argv[2].encode(), {
        'webhook-id': sys.argv[3], 'webhook-timestamp': sys.argv[4], 'webhook-signature': sys.argv[5]})
except Exception as e:
    sys.stderr.write('CHECK_FAILED ' + str(e)); sys.exit(1)
"#;

#[test]
fn merchant_callbacks_verify_with_the_standardwebhooks_package() {
    let secret_text = WebhookSecret::generate();
    let secret = WebhookSecret::parse(&secret_text).unwrap();
    let body =
        r#"{"type":"payment.succeeded","data":{"amount":{"amount":"12.34","currency":"CNY"}}}"#;
    let ts = chrono::Utc::now().timestamp();
    let sig = secret.sign("evt_1", ts, body.as_bytes());
    let ts_s = ts.to_string();
    let (ok, _) = run_python(WEBHOOK_VERIFY, &[&secret_text, body, "evt_1", &ts_s, &sig]);
    assert!(ok, "standardwebhooks rejected our signature");
    let changed = body.replace("12.34", "12.35");
    let (ok, _) = run_python(
        WEBHOOK_VERIFY,
        &[&secret_text, &changed, "evt_1", &ts_s, &sig],
    );
    assert!(!ok, "standardwebhooks accepted a changed body");
    let (ok, _) = run_python(WEBHOOK_VERIFY, &[&secret_text, body, "evt_2", &ts_s, &sig]);
    assert!(!ok, "standardwebhooks accepted another message id");
}

/// A callback as the merchant receives it: delivered by the real `Deliverer` to a local
/// endpoint, then checked from the captured request alone (headers and raw body), with the
/// platform public key `payflow keys public` would print.
#[tokio::test]
async fn callback_rsa_header_verifies_with_python_cryptography() {
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use payflow_activities::notify::guard::AddressPolicy;
    use payflow_activities::notify::{
        Callback, Deliverer, DeliveryPolicy, MerchantTransport, RSA_SIGNATURE_HEADER,
    };
    use payflow_client::MerchantId;

    let captured: Arc<Mutex<Option<(HeaderMap, Bytes)>>> = Arc::default();
    let sink = captured.clone();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| async move {
            *sink.lock().unwrap() = Some((headers, body));
            "success"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!(
        "http://127.0.0.1:{}/notify",
        listener.local_addr().unwrap().port()
    ))
    .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (platform, _) = RsaSigner::generate().unwrap();
    let merchant = MerchantId::parse("rsa-merchant").unwrap();
    let mut deliverer = Deliverer::new(Some(platform.clone()));
    let mut transport = MerchantTransport::new(&DeliveryPolicy::default());
    transport.network = AddressPolicy {
        allow_private_network: true,
    };
    transport.sign_rsa = true;
    deliverer
        .add_merchant(merchant.clone(), &transport)
        .unwrap();
    let secret_text = WebhookSecret::generate();
    let secret = WebhookSecret::parse(&secret_text).unwrap();
    let body = r#"{"type":"payment.succeeded","timestamp":"2026-01-01T00:00:00.000Z","data":{"amount":{"amount":"88.88","currency":"CNY"},"subject":"茶"}}"#;
    let delivery = deliverer
        .deliver(
            &merchant,
            Callback {
                url: &url,
                event_id: "evt_rsa_1",
                body: body.as_bytes(),
                secret: &secret,
                expect_body: Some("success"),
                attempt: 1,
            },
        )
        .await;
    assert!(delivery.attempt.delivered, "{delivery:?}");

    let (headers, raw) = captured.lock().unwrap().clone().expect("callback received");
    let header = |name: &str| headers[name].to_str().unwrap().to_string();
    let (id, ts, rsa_sig) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header(RSA_SIGNATURE_HEADER),
    );
    let received = String::from_utf8(raw.to_vec()).unwrap();
    assert_eq!(received, body);
    let signed = format!("{id}.{ts}.{received}");

    let dir = std::env::temp_dir().join(format!("payflow-rsa-cb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let public = dir.join("platform.pub.pem");
    std::fs::write(&public, platform.public_pem()).unwrap();
    let public = public.to_str().unwrap();

    let (ok, _) = run_python(RSA_VERIFY, &[public, &signed, &rsa_sig]);
    assert!(ok, "python rejected the callback's RSA signature");
    // One changed byte in the body, the id or the timestamp fails.
    for tampered in [
        format!("{id}.{ts}.{}", received.replace("88.88", "88.89")),
        format!("{id}x.{ts}.{received}"),
        format!("{id}.{}.{received}", ts.parse::<i64>().unwrap() + 1),
    ] {
        let (ok, _) = run_python(RSA_VERIFY, &[public, &tampered, &rsa_sig]);
        assert!(!ok, "python accepted a tampered callback: {tampered}");
    }
    // The same delivery also carries a Standard Webhooks signature that verifies.
    let (ok, _) = run_python(
        WEBHOOK_VERIFY,
        &[
            &secret_text,
            &received,
            &id,
            &ts,
            &header("webhook-signature"),
        ],
    );
    assert!(ok, "standardwebhooks rejected the delivered callback");
    std::fs::remove_dir_all(&dir).ok();
}
