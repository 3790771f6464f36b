//! Signatures: RSA SHA256withRSA (PKCS#1 v1.5) for channels and merchant RSA headers, and
//! Standard Webhooks HMAC-SHA256 for merchant callbacks. Keys are held as `secrecy` secrets
//! or key types whose `Debug` does not print key material.

pub mod rsa_keys;
pub mod webhook;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("cannot read key {what}: {reason}")]
    Key { what: String, reason: String },
    #[error("signature is not valid base64")]
    SignatureEncoding,
    #[error("signature does not verify")]
    BadSignature,
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("webhook secret must be 'whsec_' followed by base64")]
    WebhookSecret,
}
