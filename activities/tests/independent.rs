//! Our signatures checked by independent implementations: Python's `cryptography` for
//! SHA256withRSA (Alipay RSA2) and the `standardwebhooks` package for merchant callbacks,
//! both installed into `.tools/venv` by `scripts/tools.sh`. A correct signature passes; a
//! changed byte fails.

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
