//! WeChat Pay v3 payment notifications: a JSON envelope whose `resource` is encrypted with
//! AEAD_AES_256_GCM under the merchant's API v3 key, signed by the platform with the
//! `Wechatpay-*` headers.
//!
//! Checks, in order: the signature headers (probe, known serial, signature over
//! `TIMESTAMP\nNONCE\nBODY\n`), the timestamp window (5 minutes either way), the envelope,
//! the decryption (the GCM tag authenticates the resource too), then the transaction's
//! `appid`/`mchid`. Any refusal is answered with a non-2xx status by the ingress, which makes
//! WeChat Pay retry (15s, 15s, 30s, 3m, 10m, 20m, 30m, ... over about a day); the ack is an
//! empty 200/204.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use payflow_client::{Currency, Money};

use super::sign::{self, SignatureHeaders, VerifyError};
use super::wire;
use crate::channels::{NoticeError, VerifiedNotice};
use crate::crypto::rsa_keys::RsaVerifier;

/// GCM nonces are 96 bits; WeChat Pay sends them as 12 characters.
pub const NONCE_LEN: usize = 12;

/// What a notification is checked against.
pub struct NoticeKeys<'a> {
    pub platform_keys: &'a [(String, RsaVerifier)],
    pub api_v3_key: &'a [u8; 32],
    pub appid: &'a str,
    pub mchid: &'a str,
}

/// A header by name, in any case (HTTP header names are case-insensitive).
pub fn header<'a>(headers: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Decrypts a resource: base64 `ciphertext` (the GCM tag is its last 16 bytes), `nonce` and
/// `associated_data` used as their UTF-8 bytes. A failed tag check is a forgery or the wrong
/// key: [`NoticeError::BadSignature`].
pub fn decrypt_resource(
    key: &[u8; 32],
    resource: &wire::EncryptedResource,
) -> Result<Vec<u8>, NoticeError> {
    if resource.algorithm != wire::ALGORITHM_AEAD_AES_256_GCM {
        return Err(NoticeError::Malformed(format!(
            "resource algorithm {:?}",
            resource.algorithm
        )));
    }
    if resource.nonce.len() != NONCE_LEN {
        return Err(NoticeError::Malformed(format!(
            "resource nonce of {} bytes, not {NONCE_LEN}",
            resource.nonce.len()
        )));
    }
    let ciphertext = B64
        .decode(resource.ciphertext.trim().as_bytes())
        .map_err(|_| NoticeError::Malformed("resource ciphertext is not base64".into()))?;
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(
            Nonce::from_slice(resource.nonce.as_bytes()),
            Payload {
                msg: &ciphertext,
                aad: resource.associated_data.as_deref().unwrap_or("").as_bytes(),
            },
        )
        .map_err(|_| NoticeError::BadSignature)
}

/// Encrypts a resource the way the platform does (sandbox, tests). `nonce` must be 12 bytes.
pub fn encrypt_resource(
    key: &[u8; 32],
    nonce: &str,
    associated_data: &str,
    original_type: &str,
    plaintext: &[u8],
) -> wire::EncryptedResource {
    assert_eq!(nonce.len(), NONCE_LEN, "GCM nonce must be 12 bytes");
    let ciphertext = Aes256Gcm::new(key.into())
        .encrypt(
            Nonce::from_slice(nonce.as_bytes()),
            Payload {
                msg: plaintext,
                aad: associated_data.as_bytes(),
            },
        )
        .expect("AES-GCM encryption of an in-memory buffer cannot fail");
    wire::EncryptedResource {
        algorithm: wire::ALGORITHM_AEAD_AES_256_GCM.into(),
        ciphertext: B64.encode(ciphertext),
        nonce: nonce.into(),
        associated_data: Some(associated_data.into()),
        original_type: Some(original_type.into()),
    }
}

fn signature_error(e: VerifyError) -> NoticeError {
    match e {
        VerifyError::OutsideWindow { timestamp, now } => NoticeError::Malformed(format!(
            "Wechatpay-Timestamp {timestamp} is more than 5 minutes from now ({now})"
        )),
        VerifyError::Timestamp(t) => NoticeError::Malformed(format!("Wechatpay-Timestamp {t:?}")),
        // Missing headers, probes, unknown serials and bad signatures are all "not signed by
        // the platform".
        VerifyError::Missing(_)
        | VerifyError::Probe
        | VerifyError::UnknownSerial(_)
        | VerifyError::BadSignature => NoticeError::BadSignature,
    }
}

/// Verifies and decrypts a payment notification received at `now_secs`.
pub fn verify_notice(
    headers: &BTreeMap<String, String>,
    body: &[u8],
    keys: &NoticeKeys<'_>,
    now_secs: i64,
) -> Result<VerifiedNotice, NoticeError> {
    let signed = SignatureHeaders::read(|name| header(headers, name).map(str::to_string))
        .map_err(signature_error)?
        .ok_or(NoticeError::BadSignature)?;
    let timestamp =
        sign::verify(&signed, body, keys.platform_keys, now_secs).map_err(signature_error)?;
    let envelope: wire::Notification = serde_json::from_slice(body)
        .map_err(|e| NoticeError::Malformed(format!("notification: {e}")))?;
    if envelope.id.is_empty() {
        return Err(NoticeError::Malformed("notification without id".into()));
    }
    // Refund notifications go to a refund notify_url, which we never set: refunds are
    // confirmed by query.
    if !envelope.event_type.starts_with("TRANSACTION.")
        || envelope
            .resource
            .original_type
            .as_deref()
            .is_some_and(|t| t != wire::ORIGINAL_TYPE_TRANSACTION)
    {
        return Err(NoticeError::Malformed(format!(
            "not a payment notification: {}",
            envelope.event_type
        )));
    }
    let plain = decrypt_resource(keys.api_v3_key, &envelope.resource)?;
    let tx: wire::Transaction = serde_json::from_slice(&plain)
        .map_err(|e| NoticeError::Malformed(format!("transaction: {e}")))?;
    if tx.appid.as_deref() != Some(keys.appid) || tx.mchid.as_deref() != Some(keys.mchid) {
        return Err(NoticeError::WrongApp);
    }
    let required = |v: Option<String>, what: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| NoticeError::Malformed(format!("transaction without {what}")))
    };
    let total_amount = match tx.amount.as_ref().and_then(|a| a.total) {
        Some(fen) => {
            let currency = tx.amount.as_ref().and_then(|a| a.currency.as_deref());
            if currency.is_some_and(|c| c != wire::CURRENCY_CNY) {
                return Err(NoticeError::Malformed(format!(
                    "amount currency {currency:?}"
                )));
            }
            let money = Money::from_minor(fen, Currency::Cny)
                .map_err(|e| NoticeError::Malformed(format!("amount.total {fen}: {e}")))?;
            Some(money.amount_string())
        }
        None => None,
    };
    Ok(VerifiedNotice {
        notify_id: envelope.id,
        out_trade_no: required(tx.out_trade_no, "out_trade_no")?,
        channel_trade_no: tx.transaction_id.filter(|s| !s.is_empty()),
        trade_status: required(tx.trade_state, "trade_state")?,
        total_amount,
        notify_time_ms: timestamp * 1000,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fixtures::*;
    use super::*;

    const NONCE: &str = "fdasflkja484";
    const AAD: &str = "transaction";
    const PLAINTEXT: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","out_trade_no":"2cd605c8a6fb4706bd8f3b0774ab695c","transaction_id":"4200000001202601050000000001","trade_type":"NATIVE","trade_state":"SUCCESS","trade_state_desc":"ok","success_time":"2026-01-05T10:40:00+08:00","amount":{"total":8888,"payer_total":8888,"currency":"CNY","payer_currency":"CNY"}}"#;
    /// AES-256-GCM of `PLAINTEXT` under `API_V3_KEY`, `NONCE`, `AAD` (ciphertext and tag),
    /// made with Python's `cryptography`.
    const CIPHERTEXT: &str = "kdU+4xgEd+F97pnuq8x1iUC6PHs5ED5rd48DiImrVmImxCs1KdLCTuv6p9bCUZPZozHDjRbuQcOvBYq9jNsZHTq6GmDmvviyVndMiblWZvwNZO4vEwiSMwW4fjbMMHk2dQ94otxmMa4Ise8IifkRF4WzbC/Yu5RnPFLhxKLOIxEdBawFfMDSA70bzvzs3E7N/8Im80DKu80p6oZr/zjSI58FEcxxJ6H712uyIl1HcMipEU/mRyVRvsVG9YuSKxZm+fpV5EewrxHlBq+zai9P4EkhaNnuCVkjhDnaaeOQOGTIGqwzLYRy9HVVpDYC/JrYEdJhqrd9LrKqL1x0hi4yIzRxdXoHiaZWsVUnp40kn4qsMrbxHfksXsnw1jZxe17w/STtxohGyiw90fNaCjTzMFbpuSpvOzDbG6ekiHZDyWptjCLkdmdt+0j4TqbekuVjEcTXI50A5FrRblkAgcxBrSS6tU5hP6eBEw==";
    const NOW: i64 = 1_767_580_800;

    fn resource() -> wire::EncryptedResource {
        wire::EncryptedResource {
            algorithm: "AEAD_AES_256_GCM".into(),
            ciphertext: CIPHERTEXT.into(),
            nonce: NONCE.into(),
            associated_data: Some(AAD.into()),
            original_type: Some("transaction".into()),
        }
    }

    #[test]
    fn resource_decryption_with_a_fixed_vector() {
        let key = api_v3_key();
        assert_eq!(
            decrypt_resource(&key, &resource()).unwrap(),
            PLAINTEXT.as_bytes()
        );
        let ours = encrypt_resource(&key, NONCE, AAD, "transaction", PLAINTEXT.as_bytes());
        assert_eq!(ours.ciphertext, CIPHERTEXT);

        // The tag covers the ciphertext, the nonce, the associated data and the key.
        let mut bytes = B64.decode(CIPHERTEXT).unwrap();
        bytes[0] ^= 1;
        let mut tampered = resource();
        tampered.ciphertext = B64.encode(&bytes);
        assert_eq!(
            decrypt_resource(&key, &tampered),
            Err(NoticeError::BadSignature)
        );
        let mut truncated = resource();
        truncated.ciphertext = B64.encode(&B64.decode(CIPHERTEXT).unwrap()[..10]);
        assert_eq!(
            decrypt_resource(&key, &truncated),
            Err(NoticeError::BadSignature)
        );
        let mut other_aad = resource();
        other_aad.associated_data = Some("refund".into());
        assert_eq!(
            decrypt_resource(&key, &other_aad),
            Err(NoticeError::BadSignature)
        );
        let mut no_aad = resource();
        no_aad.associated_data = None;
        assert_eq!(
            decrypt_resource(&key, &no_aad),
            Err(NoticeError::BadSignature)
        );
        let mut other_nonce = resource();
        other_nonce.nonce = "fdasflkja485".into();
        assert_eq!(
            decrypt_resource(&key, &other_nonce),
            Err(NoticeError::BadSignature)
        );
        let mut other_key = key;
        other_key[31] ^= 1;
        assert_eq!(
            decrypt_resource(&other_key, &resource()),
            Err(NoticeError::BadSignature)
        );

        // Not decryptable at all.
        let mut short_nonce = resource();
        short_nonce.nonce = "abc".into();
        let mut algorithm = resource();
        algorithm.algorithm = "AEAD_SM4_GCM".into();
        let mut not_base64 = resource();
        not_base64.ciphertext = "***".into();
        for r in [short_nonce, algorithm, not_base64] {
            assert!(matches!(
                decrypt_resource(&key, &r),
                Err(NoticeError::Malformed(_))
            ));
        }
    }

    fn envelope(event_type: &str, transaction: &serde_json::Value) -> Vec<u8> {
        let resource = encrypt_resource(
            &api_v3_key(),
            NONCE,
            AAD,
            "transaction",
            transaction.to_string().as_bytes(),
        );
        json!({
            "id": "EV-2018022511223320873",
            "create_time": "2026-01-05T10:40:00+08:00",
            "resource_type": "encrypt-resource",
            "event_type": event_type,
            "summary": "支付成功",
            "resource": resource,
        })
        .to_string()
        .into_bytes()
    }

    fn paid() -> serde_json::Value {
        serde_json::from_str(PLAINTEXT).unwrap()
    }

    /// Headers as the ingress passes them (lower-case names, as HTTP servers give them).
    fn headers(body: &[u8], at: i64) -> BTreeMap<String, String> {
        let signed =
            sign::sign_as_platform(&platform(), PLATFORM_SERIAL, at, "n0nc3", body).unwrap();
        signed
            .pairs()
            .iter()
            .map(|(k, v)| (k.to_lowercase(), v.to_string()))
            .chain([("content-type".to_string(), "application/json".to_string())])
            .collect()
    }

    fn check(
        headers: &BTreeMap<String, String>,
        body: &[u8],
        now: i64,
    ) -> Result<VerifiedNotice, NoticeError> {
        let platform_keys = platform_keys();
        let key = api_v3_key();
        let keys = NoticeKeys {
            platform_keys: &platform_keys,
            api_v3_key: &key,
            appid: APPID,
            mchid: MCHID,
        };
        verify_notice(headers, body, &keys, now)
    }

    #[test]
    fn a_payment_notification_is_verified_decrypted_and_read() {
        let body = envelope("TRANSACTION.SUCCESS", &paid());
        let notice = check(&headers(&body, NOW), &body, NOW).unwrap();
        assert_eq!(
            notice,
            VerifiedNotice {
                notify_id: "EV-2018022511223320873".into(),
                out_trade_no: "2cd605c8a6fb4706bd8f3b0774ab695c".into(),
                channel_trade_no: Some("4200000001202601050000000001".into()),
                trade_status: "SUCCESS".into(),
                total_amount: Some("88.88".into()),
                notify_time_ms: NOW * 1000,
            }
        );
        // Header names in any case.
        let title_case: BTreeMap<String, String> =
            sign::sign_as_platform(&platform(), PLATFORM_SERIAL, NOW, "n", &body)
                .unwrap()
                .pairs()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        assert_eq!(check(&title_case, &body, NOW), Ok(notice));
    }

    #[test]
    fn notifications_outside_five_minutes_are_refused() {
        let body = envelope("TRANSACTION.SUCCESS", &paid());
        let sent = NOW;
        assert!(check(&headers(&body, sent), &body, sent + 4 * 60).is_ok());
        assert!(check(&headers(&body, sent), &body, sent - 4 * 60).is_ok());
        // Six minutes old, and six minutes in the future.
        for now in [sent + 6 * 60, sent - 6 * 60] {
            assert!(
                matches!(check(&headers(&body, sent), &body, now), Err(NoticeError::Malformed(m)) if m.contains("5 minutes")),
                "{now}"
            );
        }
    }

    #[test]
    fn notifications_not_signed_by_the_platform_are_refused() {
        let body = envelope("TRANSACTION.SUCCESS", &paid());
        let good = headers(&body, NOW);

        let mut tampered = body.clone();
        tampered.push(b' ');
        assert_eq!(check(&good, &tampered, NOW), Err(NoticeError::BadSignature));

        let mut probe = good.clone();
        probe.insert("wechatpay-signature".into(), sign::probe_signature());
        assert_eq!(check(&probe, &body, NOW), Err(NoticeError::BadSignature));

        let mut unknown = good.clone();
        unknown.insert(
            "wechatpay-serial".into(),
            "7132D72A03E93CDDF8C03BBD1F37EEDF".into(),
        );
        assert_eq!(check(&unknown, &body, NOW), Err(NoticeError::BadSignature));

        let mut missing = good.clone();
        missing.remove("wechatpay-nonce");
        assert_eq!(check(&missing, &body, NOW), Err(NoticeError::BadSignature));
        assert_eq!(
            check(&BTreeMap::new(), &body, NOW),
            Err(NoticeError::BadSignature)
        );

        // Signed, but the resource was encrypted under another key.
        let mut other_key = api_v3_key();
        other_key[0] ^= 1;
        let resource =
            encrypt_resource(&other_key, NONCE, AAD, "transaction", PLAINTEXT.as_bytes());
        let forged =
            json!({"id": "EV-1", "event_type": "TRANSACTION.SUCCESS", "resource": resource})
                .to_string()
                .into_bytes();
        assert_eq!(
            check(&headers(&forged, NOW), &forged, NOW),
            Err(NoticeError::BadSignature)
        );
    }

    #[test]
    fn notifications_for_someone_else_or_something_else() {
        let mut other_app = paid();
        other_app["appid"] = json!("wx0000000000000000");
        let body = envelope("TRANSACTION.SUCCESS", &other_app);
        assert_eq!(
            check(&headers(&body, NOW), &body, NOW),
            Err(NoticeError::WrongApp)
        );
        let mut other_mch = paid();
        other_mch["mchid"] = json!("1999999999");
        let body = envelope("TRANSACTION.SUCCESS", &other_mch);
        assert_eq!(
            check(&headers(&body, NOW), &body, NOW),
            Err(NoticeError::WrongApp)
        );

        let body = envelope("REFUND.SUCCESS", &paid());
        let mut no_trade_no = paid();
        no_trade_no.as_object_mut().unwrap().remove("out_trade_no");
        let no_trade_no = envelope("TRANSACTION.SUCCESS", &no_trade_no);
        let mut usd = paid();
        usd["amount"]["currency"] = json!("USD");
        let usd = envelope("TRANSACTION.SUCCESS", &usd);
        let not_json = b"id=1&event_type=TRANSACTION.SUCCESS".to_vec();
        for body in [body, no_trade_no, usd, not_json] {
            assert!(
                matches!(
                    check(&headers(&body, NOW), &body, NOW),
                    Err(NoticeError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}
