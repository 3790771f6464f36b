//! Alipay OpenAPI signing rules (RSA2), shared by our adapter and the sandbox channel.
//!
//! - Requests: every parameter with a non-empty value except `sign` (so `sign_type` is signed),
//!   sorted by key, joined as `k=v&k=v` with raw (not URL-encoded) values; SHA256withRSA,
//!   base64.
//! - Responses: `{"<method_with_underscores>_response": {...}, "sign": "..."}`, signed over the
//!   exact text of the response node.
//! - Notifications: every non-empty parameter except `sign` and `sign_type`, same canonical form.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde_json::value::RawValue;

use crate::crypto::CryptoError;
use crate::crypto::rsa_keys::{RsaSigner, RsaVerifier};

/// Alipay's timestamps are Beijing time, `yyyy-MM-dd HH:mm:ss`.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

fn beijing() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

pub fn format_time(ms: i64) -> String {
    let utc: DateTime<Utc> = DateTime::from_timestamp_millis(ms).unwrap_or_default();
    utc.with_timezone(&beijing())
        .format(TIME_FORMAT)
        .to_string()
}

pub fn parse_time(text: &str) -> Option<i64> {
    let naive = NaiveDateTime::parse_from_str(text, TIME_FORMAT).ok()?;
    let local = beijing().from_local_datetime(&naive).single()?;
    Some(local.timestamp_millis())
}

/// The canonical `k=v&k=v` string over non-empty values, sorted by key, minus `exclude`.
pub fn canonical(params: &BTreeMap<String, String>, exclude: &[&str]) -> String {
    let mut out = String::new();
    for (k, v) in params {
        if v.is_empty() || exclude.contains(&k.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Adds `sign` to request parameters.
pub fn sign_request(
    params: &mut BTreeMap<String, String>,
    signer: &RsaSigner,
) -> Result<(), CryptoError> {
    params.remove("sign");
    let content = canonical(params, &["sign"]);
    let sign = signer.sign_base64(content.as_bytes())?;
    params.insert("sign".into(), sign);
    Ok(())
}

/// Verifies a request's `sign` (used by the sandbox to check our requests).
pub fn verify_request(
    params: &BTreeMap<String, String>,
    verifier: &RsaVerifier,
) -> Result<(), CryptoError> {
    let sign = params.get("sign").ok_or(CryptoError::BadSignature)?;
    verifier.verify_base64(canonical(params, &["sign"]).as_bytes(), sign)
}

/// Verifies a notification's `sign` (over everything but `sign` and `sign_type`).
pub fn verify_notify(
    params: &BTreeMap<String, String>,
    verifier: &RsaVerifier,
) -> Result<(), CryptoError> {
    let sign = params.get("sign").ok_or(CryptoError::BadSignature)?;
    verifier.verify_base64(canonical(params, &["sign", "sign_type"]).as_bytes(), sign)
}

/// Signs a notification the way the channel does (sandbox).
pub fn sign_notify(
    params: &mut BTreeMap<String, String>,
    signer: &RsaSigner,
) -> Result<(), CryptoError> {
    params.remove("sign");
    let content = canonical(params, &["sign", "sign_type"]);
    let sign = signer.sign_base64(content.as_bytes())?;
    params.insert("sign".into(), sign);
    Ok(())
}

/// `alipay.trade.precreate` -> `alipay_trade_precreate_response`
pub fn response_node_name(method: &str) -> String {
    format!("{}_response", method.replace('.', "_"))
}

/// The raw text of the response node and the response's `sign`, if any. Alipay reports some
/// errors under `error_response` instead of the method's node.
pub fn split_response<'a>(
    body: &'a str,
    method: &str,
) -> Result<(&'a str, Option<String>), String> {
    let map: BTreeMap<String, &RawValue> =
        serde_json::from_str(body).map_err(|e| format!("response is not a JSON object: {e}"))?;
    let node = map
        .get(&response_node_name(method))
        .or_else(|| map.get("error_response"))
        .ok_or_else(|| format!("response has no {} node", response_node_name(method)))?;
    let sign = match map.get("sign") {
        Some(raw) => Some(
            serde_json::from_str::<String>(raw.get())
                .map_err(|_| "sign is not a string".to_string())?,
        ),
        None => None,
    };
    Ok((node.get(), sign))
}

/// Builds a signed response body the way the channel does (sandbox).
pub fn sign_response(
    method: &str,
    node: &serde_json::Value,
    signer: &RsaSigner,
) -> Result<String, CryptoError> {
    let node_text = serde_json::to_string(node).expect("a JSON value always serialises");
    let sign = signer.sign_base64(node_text.as_bytes())?;
    Ok(format!(
        "{{\"{}\":{},\"sign\":{}}}",
        response_node_name(method),
        node_text,
        serde_json::to_string(&sign).expect("a string always serialises")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_sorts_skips_empty_and_excluded() {
        let mut p = BTreeMap::new();
        p.insert("method".to_string(), "alipay.trade.query".to_string());
        p.insert("app_id".to_string(), "2021".to_string());
        p.insert("notify_url".to_string(), String::new());
        p.insert("sign".to_string(), "xyz".to_string());
        p.insert("sign_type".to_string(), "RSA2".to_string());
        p.insert(
            "biz_content".to_string(),
            r#"{"out_trade_no":"a&b=c"}"#.to_string(),
        );
        assert_eq!(
            canonical(&p, &["sign"]),
            r#"app_id=2021&biz_content={"out_trade_no":"a&b=c"}&method=alipay.trade.query&sign_type=RSA2"#
        );
        assert_eq!(
            canonical(&p, &["sign", "sign_type"]),
            r#"app_id=2021&biz_content={"out_trade_no":"a&b=c"}&method=alipay.trade.query"#
        );
    }

    #[test]
    fn beijing_time_round_trip() {
        // 2024-01-01 00:00:00 UTC is 08:00:00 in Beijing.
        let ms = 1_704_067_200_000;
        assert_eq!(format_time(ms), "2024-01-01 08:00:00");
        assert_eq!(parse_time("2024-01-01 08:00:00"), Some(ms));
        assert_eq!(parse_time("2024-01-01T08:00:00"), None);
    }

    #[test]
    fn response_verification_uses_the_raw_node_text() {
        let (signer, _) = RsaSigner::generate().unwrap();
        let node =
            serde_json::json!({"code": "10000", "msg": "Success", "qr_code": "https://qr/x"});
        let body = sign_response("alipay.trade.precreate", &node, &signer).unwrap();
        let (raw, sign) = split_response(&body, "alipay.trade.precreate").unwrap();
        signer
            .verifier()
            .verify_base64(raw.as_bytes(), &sign.clone().unwrap())
            .unwrap();
        // Whitespace changes the raw text and must break the signature, as at Alipay.
        let spaced = body.replacen("\"code\":", "\"code\": ", 1);
        let (raw2, _) = split_response(&spaced, "alipay.trade.precreate").unwrap();
        assert!(
            signer
                .verifier()
                .verify_base64(raw2.as_bytes(), &sign.unwrap())
                .is_err()
        );
    }

    #[test]
    fn request_and_notify_signatures() {
        let (signer, _) = RsaSigner::generate().unwrap();
        let mut p = BTreeMap::new();
        p.insert("app_id".to_string(), "2021".to_string());
        p.insert("sign_type".to_string(), "RSA2".to_string());
        sign_request(&mut p, &signer).unwrap();
        verify_request(&p, &signer.verifier()).unwrap();
        // sign_type is covered by request signatures ...
        p.insert("sign_type".to_string(), "RSA".to_string());
        assert!(verify_request(&p, &signer.verifier()).is_err());
        // ... but not by notification signatures.
        let mut n = BTreeMap::new();
        n.insert("trade_status".to_string(), "TRADE_SUCCESS".to_string());
        n.insert("sign_type".to_string(), "RSA2".to_string());
        sign_notify(&mut n, &signer).unwrap();
        n.insert("sign_type".to_string(), "RSA".to_string());
        verify_notify(&n, &signer.verifier()).unwrap();
        n.insert("trade_status".to_string(), "TRADE_CLOSED".to_string());
        assert!(verify_notify(&n, &signer.verifier()).is_err());
    }
}
