//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): the merchant secret is
//! `whsec_` + base64(key); `webhook-signature` is `v1,` + base64(HMAC-SHA256(key,
//! "{id}.{timestamp}.{body}")).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

use super::CryptoError;

/// A merchant's webhook signing key. `Debug` prints nothing of it.
#[derive(Clone)]
pub struct WebhookSecret {
    key: SecretSlice<u8>,
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let b64 = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or(CryptoError::WebhookSecret)?;
        let key = B64
            .decode(b64.as_bytes())
            .map_err(|_| CryptoError::WebhookSecret)?;
        if key.len() < 16 {
            return Err(CryptoError::WebhookSecret);
        }
        Ok(WebhookSecret { key: key.into() })
    }

    /// A new random 32-byte secret, formatted `whsec_...`.
    pub fn generate() -> String {
        let key: [u8; 32] = rand::random();
        format!("whsec_{}", B64.encode(key))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret())
            .expect("HMAC accepts keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", B64.encode(tag))
    }

    /// Verifies a `webhook-signature` header (space-separated `v1,<sig>` entries; any match
    /// passes, in constant time per entry).
    pub fn verify(
        &self,
        id: &str,
        timestamp: i64,
        body: &[u8],
        header: &str,
    ) -> Result<(), CryptoError> {
        for entry in header.split_whitespace() {
            let Some(sig) = entry.strip_prefix("v1,") else {
                continue;
            };
            let Ok(raw) = B64.decode(sig.as_bytes()) else {
                continue;
            };
            if self.mac(id, timestamp, body).verify_slice(&raw).is_ok() {
                return Ok(());
            }
        }
        Err(CryptoError::BadSignature)
    }
}

/// The string both the HMAC and the RSA merchant signatures cover.
pub fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + id.len() + 24);
    out.extend_from_slice(id.as_bytes());
    out.push(b'.');
    out.extend_from_slice(timestamp.to_string().as_bytes());
    out.push(b'.');
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks specification's reference implementations.
    #[test]
    fn matches_the_specification_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verify_accepts_own_signature_and_rejects_changes() {
        let secret = WebhookSecret::parse(&WebhookSecret::generate()).unwrap();
        let sig = secret.sign("evt_1", 1700000000, b"{}");
        secret
            .verify("evt_1", 1700000000, b"{}", &format!("v1,bogus {sig}"))
            .unwrap();
        assert!(secret.verify("evt_1", 1700000001, b"{}", &sig).is_err());
        assert!(secret.verify("evt_2", 1700000000, b"{}", &sig).is_err());
        assert!(secret.verify("evt_1", 1700000000, b"{ }", &sig).is_err());
        assert!(format!("{secret:?}").contains("REDACTED"));
    }

    #[test]
    fn refuses_malformed_secrets() {
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
    }
}
