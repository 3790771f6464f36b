//! WeChat Pay API v3 signatures (SHA256withRSA, PKCS#1 v1.5, base64), shared by our adapter
//! and the sandbox channel.
//!
//! - Requests: `Authorization: WECHATPAY2-SHA256-RSA2048 mchid="..",nonce_str="..",
//!   signature="..",timestamp="..",serial_no=".."`, the signature over
//!   `METHOD\nURL_PATH_WITH_QUERY\nTIMESTAMP\nNONCE\nBODY\n` with the merchant's API key
//!   (`serial_no` names its certificate); `BODY` is empty for a `GET`.
//! - Responses and notifications: headers `Wechatpay-Timestamp`, `Wechatpay-Nonce`,
//!   `Wechatpay-Signature`, `Wechatpay-Serial`, the signature over `TIMESTAMP\nNONCE\nBODY\n`
//!   with the platform key named by the serial. A timestamp more than 5 minutes from ours
//!   (either way) is refused, and so is a signature probe (`WECHATPAY/SIGNTEST/...`: WeChat
//!   Pay sends those to check that merchants really verify).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::Rng;

use crate::crypto::CryptoError;
use crate::crypto::rsa_keys::{RsaSigner, RsaVerifier};

/// The `Authorization` scheme.
pub const AUTH_SCHEMA: &str = "WECHATPAY2-SHA256-RSA2048";
pub const HEADER_TIMESTAMP: &str = "Wechatpay-Timestamp";
pub const HEADER_NONCE: &str = "Wechatpay-Nonce";
pub const HEADER_SIGNATURE: &str = "Wechatpay-Signature";
pub const HEADER_SERIAL: &str = "Wechatpay-Serial";
/// Signatures of probe messages start with this; they never verify.
pub const SIGNATURE_PROBE_PREFIX: &str = "WECHATPAY/SIGNTEST/";
/// How far a response's or notification's timestamp may be from ours, either way.
pub const WINDOW_SECS: i64 = 5 * 60;

/// `METHOD\nURL_PATH_WITH_QUERY\nTIMESTAMP\nNONCE\nBODY\n`
pub fn request_message(
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body}\n")
}

/// A fresh request nonce: 32 random letters and digits.
pub fn nonce() -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// The `Authorization` header value of a request.
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    mchid: &str,
    serial_no: &str,
    signer: &RsaSigner,
    method: &str,
    path_and_query: &str,
    timestamp: i64,
    nonce: &str,
    body: &str,
) -> Result<String, CryptoError> {
    let message = request_message(method, path_and_query, timestamp, nonce, body);
    let signature = signer.sign_base64(message.as_bytes())?;
    Ok(format!(
        "{AUTH_SCHEMA} mchid=\"{mchid}\",nonce_str=\"{nonce}\",signature=\"{signature}\",timestamp=\"{timestamp}\",serial_no=\"{serial_no}\""
    ))
}

/// The fields of an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationFields {
    pub mchid: String,
    pub nonce_str: String,
    pub signature: String,
    pub timestamp: String,
    pub serial_no: String,
}

/// Reads `WECHATPAY2-SHA256-RSA2048 k="v",k="v",...` (any order; every field required).
pub fn parse_authorization(header: &str) -> Option<AuthorizationFields> {
    let rest = header.trim().strip_prefix(AUTH_SCHEMA)?;
    if !rest.starts_with(' ') {
        return None;
    }
    let (mut mchid, mut nonce_str, mut signature, mut timestamp, mut serial_no) =
        (None, None, None, None, None);
    for part in rest.split(',') {
        let (key, value) = part.trim().split_once('=')?;
        let value = value.strip_prefix('"')?.strip_suffix('"')?.to_string();
        let slot = match key {
            "mchid" => &mut mchid,
            "nonce_str" => &mut nonce_str,
            "signature" => &mut signature,
            "timestamp" => &mut timestamp,
            "serial_no" => &mut serial_no,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return None;
        }
    }
    Some(AuthorizationFields {
        mchid: mchid?,
        nonce_str: nonce_str?,
        signature: signature?,
        timestamp: timestamp?,
        serial_no: serial_no?,
    })
}

/// Verifies a request's `Authorization` with the merchant's public key (the sandbox's side).
pub fn verify_request(
    header: &str,
    method: &str,
    path_and_query: &str,
    body: &str,
    merchant_key: &RsaVerifier,
) -> Result<AuthorizationFields, CryptoError> {
    let fields = parse_authorization(header).ok_or(CryptoError::BadSignature)?;
    let timestamp: i64 = fields
        .timestamp
        .parse()
        .map_err(|_| CryptoError::BadSignature)?;
    let message = request_message(method, path_and_query, timestamp, &fields.nonce_str, body);
    merchant_key.verify_base64(message.as_bytes(), &fields.signature)?;
    Ok(fields)
}

/// `TIMESTAMP\nNONCE\nBODY\n`, the message of response and notification signatures.
pub fn message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(nonce.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(body);
    m.push(b'\n');
    m
}

/// The four `Wechatpay-*` headers of a signed response or notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeaders {
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
    pub serial: String,
}

impl SignatureHeaders {
    /// Reads the headers through `get` (which should match names in any case). `Ok(None)`
    /// when none is present (an unsigned answer), an error when only some are.
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, VerifyError> {
        let values = [
            HEADER_TIMESTAMP,
            HEADER_NONCE,
            HEADER_SIGNATURE,
            HEADER_SERIAL,
        ]
        .map(|name| (name, get(name)));
        if values.iter().all(|(_, v)| v.is_none()) {
            return Ok(None);
        }
        let [timestamp, nonce, signature, serial] = values.map(|(name, v)| v.ok_or(name));
        Ok(Some(SignatureHeaders {
            timestamp: timestamp.map_err(VerifyError::Missing)?,
            nonce: nonce.map_err(VerifyError::Missing)?,
            signature: signature.map_err(VerifyError::Missing)?,
            serial: serial.map_err(VerifyError::Missing)?,
        }))
    }

    /// As `(name, value)` pairs, to send (sandbox, tests).
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            (HEADER_TIMESTAMP, self.timestamp.as_str()),
            (HEADER_NONCE, self.nonce.as_str()),
            (HEADER_SIGNATURE, self.signature.as_str()),
            (HEADER_SERIAL, self.serial.as_str()),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    Missing(&'static str),
    #[error("signature probe (WECHATPAY/SIGNTEST/)")]
    Probe,
    #[error("no platform key for serial {0:?}")]
    UnknownSerial(String),
    #[error("Wechatpay-Timestamp {0:?} is not a unix time")]
    Timestamp(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("Wechatpay-Timestamp {timestamp} is more than 5 minutes from now ({now})")]
    OutsideWindow { timestamp: i64, now: i64 },
}

/// The platform key for `serial`.
pub fn platform_key<'a>(
    keys: &'a [(String, RsaVerifier)],
    serial: &str,
) -> Option<&'a RsaVerifier> {
    keys.iter()
        .find(|(s, _)| s.eq_ignore_ascii_case(serial.trim()))
        .map(|(_, k)| k)
}

/// Verifies a response or notification signed by the platform, and that its timestamp is
/// within [`WINDOW_SECS`] of `now_secs`. Returns the (signed) timestamp.
pub fn verify(
    headers: &SignatureHeaders,
    body: &[u8],
    platform_keys: &[(String, RsaVerifier)],
    now_secs: i64,
) -> Result<i64, VerifyError> {
    if headers.signature.trim().starts_with(SIGNATURE_PROBE_PREFIX) {
        return Err(VerifyError::Probe);
    }
    let key = platform_key(platform_keys, &headers.serial)
        .ok_or_else(|| VerifyError::UnknownSerial(headers.serial.clone()))?;
    let timestamp = headers
        .timestamp
        .parse::<i64>()
        .ok()
        .filter(|t| *t > 0 && headers.timestamp.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| VerifyError::Timestamp(headers.timestamp.clone()))?;
    key.verify_base64(
        &message(&headers.timestamp, &headers.nonce, body),
        &headers.signature,
    )
    .map_err(|_| VerifyError::BadSignature)?;
    if (now_secs - timestamp).abs() > WINDOW_SECS {
        return Err(VerifyError::OutsideWindow {
            timestamp,
            now: now_secs,
        });
    }
    Ok(timestamp)
}

/// Signs a response or notification body the way the platform does (sandbox, tests).
pub fn sign_as_platform(
    signer: &RsaSigner,
    serial: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> Result<SignatureHeaders, CryptoError> {
    let timestamp = timestamp.to_string();
    let signature = signer.sign_base64(&message(&timestamp, nonce, body))?;
    Ok(SignatureHeaders {
        timestamp,
        nonce: nonce.to_string(),
        signature,
        serial: serial.to_string(),
    })
}

/// A probe signature as WeChat Pay sends them: never valid.
pub fn probe_signature() -> String {
    format!("{SIGNATURE_PROBE_PREFIX}{}", B64.encode(nonce().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    const BODY: &str = r#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","description":"Green tea","out_trade_no":"2cd605c8a6fb4706bd8f3b0774ab695c","time_expire":"2026-01-05T10:49:56+08:00","notify_url":"https://pay.example.com/channels/wechat/notify","amount":{"total":8888,"currency":"CNY"}}"#;
    const TIMESTAMP: i64 = 1_767_580_496;
    const NONCE: &str = "593BEC0C930BF1AFEB40B4A08C8FB242";
    /// `openssl dgst -sha256 -sign merchant.pem` over the request message, base64.
    const REQUEST_SIGNATURE: &str = "h/nMOx+tv3KosHj3hiUqmUUQVrs9Beixa7Igg437R+3CUMByzieZlNSVU29gl8sS3yv9Mu+fGpXBymRlTqbHXw6iM5mbHxPZNYNqoR9vcAdbyhbd8Wb0ePq9VG1sqRKOUj69y5upbgl2RYnE+Q4GINvuaWwOBlfy6TTTbJvLwe+5pPL4AMAnhiWbxIjltHGw6Qxl+AnP1XO1/vddquzrZle6uZpZSkdOzyJdeCaPaqZwPFR1pfKk4j+RMk01kL3Cd1/C3abW64qSgQMGGlLx0tG/NwVpwri6f/T90TDawm5h0Q9WKej1VcKK41deVGBtSehMWeFfh52Nzl1fbkmOEQ==";
    const RESPONSE_BODY: &str = r#"{"code_url":"weixin://wxpay/bizpayurl?pr=p4lpSuKzz"}"#;
    const RESPONSE_NONCE: &str = "c5ac7061fccab6bf3e254dcf98995b8c";
    /// `openssl dgst -sha256 -sign platform.pem` over `TIMESTAMP\nNONCE\nBODY\n`, base64.
    const RESPONSE_SIGNATURE: &str = "i0cQR0Ftom96LUxnQ0qxme2CLtZh6IrAgEA1vYuEh1+cn1MvWn8TjX2CAh3qDWTniA/bhDBVf0Tf8ku5UrzkWE5WCLjOhm2xWMwMxDdcDHo14PwcKmbV+k5d8DcLqdIxjfyYxYcwOC1VdV4xTFMdtR+tGTyDDg1gsIBS07AwX31BuKcoLVzJPbmD0GYXXFrA/HxgGEHlLFf6i0GO4R6ta6FlFNFaliqqqYCdLvddHpAlYvCfi5goROSgCAuh7J/cwVS5fo+SSJdfNVeejKmGwdrHPDBgYs1NykWL6Q/YzjwFAzrcFNmpiRuIr2X5HkccoNgXktHODtmfVAA0nG3hBA==";

    #[test]
    fn request_signature_matches_a_fixed_vector() {
        assert_eq!(
            request_message(
                "POST",
                "/v3/pay/transactions/native",
                TIMESTAMP,
                NONCE,
                BODY
            ),
            format!("POST\n/v3/pay/transactions/native\n1767580496\n{NONCE}\n{BODY}\n")
        );
        assert_eq!(
            request_message(
                "GET",
                "/v3/pay/transactions/out-trade-no/T1?mchid=1230000109",
                1,
                "n",
                ""
            ),
            "GET\n/v3/pay/transactions/out-trade-no/T1?mchid=1230000109\n1\nn\n\n"
        );
        let header = authorization(
            MCHID,
            MERCHANT_SERIAL,
            &merchant(),
            "POST",
            "/v3/pay/transactions/native",
            TIMESTAMP,
            NONCE,
            BODY,
        )
        .unwrap();
        assert_eq!(
            header,
            format!(
                "WECHATPAY2-SHA256-RSA2048 mchid=\"1230000109\",nonce_str=\"{NONCE}\",signature=\"{REQUEST_SIGNATURE}\",timestamp=\"1767580496\",serial_no=\"{MERCHANT_SERIAL}\""
            )
        );
        let public = RsaVerifier::from_text(MERCHANT_PUBLIC_PEM, "merchant public key").unwrap();
        let fields = verify_request(
            &header,
            "POST",
            "/v3/pay/transactions/native",
            BODY,
            &public,
        )
        .unwrap();
        assert_eq!(
            fields,
            AuthorizationFields {
                mchid: MCHID.into(),
                nonce_str: NONCE.into(),
                signature: REQUEST_SIGNATURE.into(),
                timestamp: "1767580496".into(),
                serial_no: MERCHANT_SERIAL.into(),
            }
        );
        // Every part of the message is covered.
        let tampered_body = BODY.replace("8888", "8889");
        assert!(
            verify_request(
                &header,
                "POST",
                "/v3/pay/transactions/native",
                &tampered_body,
                &public
            )
            .is_err()
        );
        assert!(
            verify_request(&header, "PUT", "/v3/pay/transactions/native", BODY, &public).is_err()
        );
        assert!(
            verify_request(&header, "POST", "/v3/pay/transactions/jsapi", BODY, &public).is_err()
        );
        let other_time = header.replace("1767580496", "1767580497");
        assert!(
            verify_request(
                &other_time,
                "POST",
                "/v3/pay/transactions/native",
                BODY,
                &public
            )
            .is_err()
        );
    }

    #[test]
    fn authorization_parsing() {
        let reordered = format!(
            "{AUTH_SCHEMA} serial_no=\"S\", timestamp=\"1\",signature=\"c2ln\",nonce_str=\"N\",mchid=\"M\""
        );
        assert_eq!(
            parse_authorization(&reordered),
            Some(AuthorizationFields {
                mchid: "M".into(),
                nonce_str: "N".into(),
                signature: "c2ln".into(),
                timestamp: "1".into(),
                serial_no: "S".into(),
            })
        );
        for bad in [
            "WECHATPAY2-SHA256-RSA2048 mchid=\"M\",nonce_str=\"N\",signature=\"s\",timestamp=\"1\"",
            "WECHATPAY2-SHA256-RSA1024 mchid=\"M\",nonce_str=\"N\",signature=\"s\",timestamp=\"1\",serial_no=\"S\"",
            "WECHATPAY2-SHA256-RSA2048mchid=\"M\",nonce_str=\"N\",signature=\"s\",timestamp=\"1\",serial_no=\"S\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=M,nonce_str=\"N\",signature=\"s\",timestamp=\"1\",serial_no=\"S\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"M\",mchid=\"X\",nonce_str=\"N\",signature=\"s\",timestamp=\"1\",serial_no=\"S\"",
            "",
        ] {
            assert_eq!(parse_authorization(bad), None, "{bad}");
        }
    }

    fn response_headers() -> SignatureHeaders {
        SignatureHeaders {
            timestamp: TIMESTAMP.to_string(),
            nonce: RESPONSE_NONCE.into(),
            signature: RESPONSE_SIGNATURE.into(),
            serial: PLATFORM_SERIAL.into(),
        }
    }

    #[test]
    fn response_verification_with_a_fixed_vector() {
        let keys = platform_keys();
        let body = RESPONSE_BODY.as_bytes();
        assert_eq!(
            verify(&response_headers(), body, &keys, TIMESTAMP),
            Ok(TIMESTAMP)
        );
        // The platform side signs the same way.
        let ours = sign_as_platform(
            &platform(),
            PLATFORM_SERIAL,
            TIMESTAMP,
            RESPONSE_NONCE,
            body,
        )
        .unwrap();
        assert_eq!(ours, response_headers());
        // Serials compare without regard to case.
        let mut lower = response_headers();
        lower.serial = PLATFORM_SERIAL.to_lowercase();
        assert_eq!(verify(&lower, body, &keys, TIMESTAMP), Ok(TIMESTAMP));

        let tampered = RESPONSE_BODY.replace("p4lp", "p4lq");
        assert_eq!(
            verify(&response_headers(), tampered.as_bytes(), &keys, TIMESTAMP),
            Err(VerifyError::BadSignature)
        );
        let mut other_nonce = response_headers();
        other_nonce.nonce = "x".into();
        assert_eq!(
            verify(&other_nonce, body, &keys, TIMESTAMP),
            Err(VerifyError::BadSignature)
        );
        let mut unknown = response_headers();
        unknown.serial = "7132D72A03E93CDDF8C03BBD1F37EEDF".into();
        assert_eq!(
            verify(&unknown, body, &keys, TIMESTAMP),
            Err(VerifyError::UnknownSerial(
                "7132D72A03E93CDDF8C03BBD1F37EEDF".into()
            ))
        );
        let mut probe = response_headers();
        probe.signature = format!("{SIGNATURE_PROBE_PREFIX}{RESPONSE_SIGNATURE}");
        assert_eq!(
            verify(&probe, body, &keys, TIMESTAMP),
            Err(VerifyError::Probe)
        );
        probe.signature = probe_signature();
        assert_eq!(
            verify(&probe, body, &keys, TIMESTAMP),
            Err(VerifyError::Probe)
        );
        for bad_time in ["", "-1", "+1767580496", "1767580496.0", "now"] {
            let mut h = response_headers();
            h.timestamp = bad_time.into();
            assert_eq!(
                verify(&h, body, &keys, TIMESTAMP),
                Err(VerifyError::Timestamp(bad_time.into())),
                "{bad_time}"
            );
        }
    }

    #[test]
    fn timestamps_more_than_five_minutes_away_are_refused() {
        let keys = platform_keys();
        let body = RESPONSE_BODY.as_bytes();
        let h = response_headers();
        for (now, ok) in [
            (TIMESTAMP + 4 * 60, true),
            (TIMESTAMP - 4 * 60, true),
            (TIMESTAMP + 5 * 60, true),
            (TIMESTAMP + 6 * 60, false),
            (TIMESTAMP - 6 * 60, false),
        ] {
            let got = verify(&h, body, &keys, now);
            if ok {
                assert_eq!(got, Ok(TIMESTAMP), "{now}");
            } else {
                assert_eq!(
                    got,
                    Err(VerifyError::OutsideWindow {
                        timestamp: TIMESTAMP,
                        now
                    }),
                    "{now}"
                );
            }
        }
    }

    #[test]
    fn signature_headers_are_all_or_nothing() {
        let full = response_headers();
        let lookup = |skip: Option<&str>| {
            let full = full.clone();
            let skip = skip.map(str::to_string);
            move |name: &str| {
                if skip.as_deref() == Some(name) {
                    return None;
                }
                full.pairs()
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(SignatureHeaders::read(lookup(None)), Ok(Some(full.clone())));
        assert_eq!(SignatureHeaders::read(|_| None), Ok(None));
        assert_eq!(
            SignatureHeaders::read(lookup(Some(HEADER_SERIAL))),
            Err(VerifyError::Missing(HEADER_SERIAL))
        );
        assert_eq!(
            SignatureHeaders::read(lookup(Some(HEADER_SIGNATURE))),
            Err(VerifyError::Missing(HEADER_SIGNATURE))
        );
    }

    #[test]
    fn nonces_are_32_random_alphanumerics() {
        let a = nonce();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, nonce());
    }
}
