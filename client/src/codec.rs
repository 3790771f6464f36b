//! Encryption at rest for what payflow writes into Temporal history: a [`PayloadCodec`] that
//! encrypts every payload (workflow and activity inputs and results, signals, updates, queries,
//! memos, summaries written by workflows) with AES-256-GCM before it leaves the process.
//!
//! Each payload's whole protobuf (metadata and data) is encrypted under the current key with a
//! random 96-bit nonce; the encrypted payload carries `encoding: binary/encrypted` and
//! `encryption-key-id: <id>` in its metadata and `nonce || ciphertext || tag` as its data (the
//! layout of Temporal's encryption samples, so another SDK's codec with the same keys reads it).
//! Decoding picks the key by its id, so several keys can be configured while keys rotate: new
//! payloads use the current key, older ones still decode with theirs. Payloads that are not
//! encrypted pass through decoding unchanged, so histories written before encryption was turned
//! on still replay. An unknown key id, a tampered or truncated payload, or the wrong key is a
//! [`CodecError`], never a panic.
//!
//! Keys are 32 bytes given as base64 (files or environment, read by the worker's config) and
//! held in [`secrecy`] types: `Debug` shows key ids, never key material.
//!
//! What stays readable by design: workflow ids, search attributes (the server indexes them)
//! and the summary the client sets when it starts a workflow (the SDK sends it unencoded, so
//! [`crate::Payflow`] sets none when it has a codec).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, rand_core::RngCore};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use prost::Message as _;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use temporalio_common::data_converters::{
    DataConverter, DefaultFailureConverter, PayloadCodec, PayloadConversionError, PayloadConverter,
    SerializationContextData,
};
use temporalio_common::protos::temporal::api::common::v1::Payload;

/// Metadata key naming a payload's encoding.
pub const METADATA_ENCODING: &str = "encoding";
/// Metadata key naming the key an encrypted payload was encrypted under.
pub const METADATA_KEY_ID: &str = "encryption-key-id";
/// The encoding of an encrypted payload.
pub const ENCODING_ENCRYPTED: &str = "binary/encrypted";
/// Key length (AES-256).
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// The future type of [`PayloadCodec`] (`futures::future::BoxFuture`), spelled out so this crate
/// needs no `futures` dependency.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Why a key could not be used or a payload could not be encrypted or decrypted. Never carries
/// key material or payload content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("encryption key id {0:?} is not valid: 1 to 64 letters, digits, '-', '_' or '.'")]
    InvalidKeyId(String),
    #[error("encryption key {key_id}: {reason}")]
    InvalidKey { key_id: String, reason: String },
    #[error("encryption key id {0} is configured twice")]
    DuplicateKey(String),
    #[error("the current encryption key {0} is not among the configured keys")]
    NoCurrentKey(String),
    #[error("payload is encrypted under key id {0:?}, which is not configured")]
    UnknownKey(String),
    #[error("encrypted payload has no {METADATA_KEY_ID} in its metadata")]
    MissingKeyId,
    #[error(
        "encrypted payload under key {key_id} does not decrypt: tampered, truncated or \
         encrypted with another key"
    )]
    Decrypt { key_id: String },
    #[error("payload decrypted under key {key_id} is not a Temporal payload: {reason}")]
    Malformed { key_id: String, reason: String },
    #[error("encryption under key {key_id} failed")]
    Encrypt { key_id: String },
}

impl From<CodecError> for PayloadConversionError {
    fn from(e: CodecError) -> Self {
        PayloadConversionError::EncodingError(Box::new(e))
    }
}

/// One AES-256 key and its id. `Debug` never shows the key.
pub struct EncryptionKey {
    id: String,
    key: SecretBox<[u8; KEY_LEN]>,
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKey")
            .field("id", &self.id)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// Whether `id` can name a key: 1 to 64 ASCII letters, digits, `-`, `_` or `.`.
pub fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl EncryptionKey {
    /// A key from its 32 bytes.
    pub fn new(id: impl Into<String>, key: [u8; KEY_LEN]) -> Result<Self, CodecError> {
        let id = id.into();
        if !valid_key_id(&id) {
            return Err(CodecError::InvalidKeyId(id));
        }
        Ok(EncryptionKey {
            id,
            key: SecretBox::new(Box::new(key)),
        })
    }

    /// A key from base64 text (standard or URL-safe alphabet, padding optional, surrounding
    /// whitespace ignored) that must decode to exactly 32 bytes.
    pub fn from_base64(id: impl Into<String>, text: &SecretString) -> Result<Self, CodecError> {
        let id = id.into();
        if !valid_key_id(&id) {
            return Err(CodecError::InvalidKeyId(id));
        }
        let invalid = |reason: &str| CodecError::InvalidKey {
            key_id: id.clone(),
            reason: reason.to_string(),
        };
        let bytes = Zeroizing::new(
            decode_base64(text.expose_secret().trim())
                .ok_or_else(|| invalid("not base64 (expected 32 bytes as base64)"))?,
        );
        if bytes.len() != KEY_LEN {
            return Err(invalid("must be exactly 32 bytes (AES-256) as base64"));
        }
        Ok(EncryptionKey {
            id,
            key: SecretBox::init_with_mut(|k: &mut [u8; KEY_LEN]| k.copy_from_slice(&bytes)),
        })
    }

    /// A new random key (dev and tests; production keys come from a key manager).
    pub fn generate(id: impl Into<String>) -> Result<Self, CodecError> {
        let mut key = [0u8; KEY_LEN];
        OsRng.fill_bytes(&mut key);
        EncryptionKey::new(id, key)
    }

    /// The key as standard base64, to be written to a key file (0600) or a secret store.
    pub fn to_base64(&self) -> SecretString {
        SecretString::from(
            base64::engine::general_purpose::STANDARD.encode(self.key.expose_secret()),
        )
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.key.expose_secret().into())
    }
}

/// Standard or URL-safe base64, with or without padding.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

struct Keyring {
    current: String,
    keys: BTreeMap<String, EncryptionKey>,
}

/// The payload codec: AES-256-GCM under the current key, decryption by key id. Cheap to clone.
#[derive(Clone)]
pub struct EncryptionCodec {
    keyring: Arc<Keyring>,
}

impl fmt::Debug for EncryptionCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionCodec")
            .field("current_key_id", &self.keyring.current)
            .field("key_ids", &self.keyring.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl EncryptionCodec {
    /// A codec encrypting under `current_key_id`, decrypting under any of `keys` (the current
    /// one and the older ones still found in histories).
    pub fn new(
        current_key_id: &str,
        keys: impl IntoIterator<Item = EncryptionKey>,
    ) -> Result<Self, CodecError> {
        let mut map = BTreeMap::new();
        for key in keys {
            if map.contains_key(&key.id) {
                return Err(CodecError::DuplicateKey(key.id));
            }
            map.insert(key.id.clone(), key);
        }
        if !map.contains_key(current_key_id) {
            return Err(CodecError::NoCurrentKey(current_key_id.to_string()));
        }
        Ok(EncryptionCodec {
            keyring: Arc::new(Keyring {
                current: current_key_id.to_string(),
                keys: map,
            }),
        })
    }

    /// The key new payloads are encrypted under.
    pub fn current_key_id(&self) -> &str {
        &self.keyring.current
    }

    /// Every key id this codec decrypts.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keyring.keys.keys().map(String::as_str)
    }

    /// A data converter with the default payload and failure converters and this codec, for a
    /// Temporal client (`ClientOptions::data_converter`; workers take it from their client) or
    /// the workflow replayer.
    pub fn data_converter(&self) -> DataConverter {
        DataConverter::new(
            PayloadConverter::default(),
            DefaultFailureConverter::default(),
            self.clone(),
        )
    }

    /// Whether `payload` is encrypted (by this codec or another with the same format).
    pub fn is_encrypted(payload: &Payload) -> bool {
        payload.metadata.get(METADATA_ENCODING).map(Vec::as_slice)
            == Some(ENCODING_ENCRYPTED.as_bytes())
    }

    /// Encrypts the whole payload under the current key. An already encrypted payload is
    /// returned as it is (never encrypted twice).
    pub fn encrypt(&self, payload: Payload) -> Result<Payload, CodecError> {
        if Self::is_encrypted(&payload) {
            return Ok(payload);
        }
        let key_id = &self.keyring.current;
        let key = &self.keyring.keys[key_id];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let plain = payload.encode_to_vec();
        let sealed = key
            .cipher()
            .encrypt(&nonce, plain.as_slice())
            .map_err(|_| CodecError::Encrypt {
                key_id: key_id.clone(),
            })?;
        let mut data = Vec::with_capacity(NONCE_LEN + sealed.len());
        data.extend_from_slice(&nonce);
        data.extend_from_slice(&sealed);
        Ok(Payload {
            metadata: [
                (
                    METADATA_ENCODING.to_string(),
                    ENCODING_ENCRYPTED.as_bytes().to_vec(),
                ),
                (METADATA_KEY_ID.to_string(), key_id.as_bytes().to_vec()),
            ]
            .into_iter()
            .collect(),
            data,
            ..Default::default()
        })
    }

    /// Decrypts an encrypted payload with the key named in its metadata; any other payload is
    /// returned unchanged.
    pub fn decrypt(&self, payload: Payload) -> Result<Payload, CodecError> {
        if !Self::is_encrypted(&payload) {
            return Ok(payload);
        }
        let key_id = payload
            .metadata
            .get(METADATA_KEY_ID)
            .ok_or(CodecError::MissingKeyId)?;
        let key_id = String::from_utf8_lossy(key_id).into_owned();
        let key = self
            .keyring
            .keys
            .get(&key_id)
            .ok_or_else(|| CodecError::UnknownKey(key_id.clone()))?;
        if payload.data.len() < NONCE_LEN + TAG_LEN {
            return Err(CodecError::Decrypt { key_id });
        }
        let (nonce, sealed) = payload.data.split_at(NONCE_LEN);
        let plain = key
            .cipher()
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| CodecError::Decrypt {
                key_id: key_id.clone(),
            })?;
        Payload::decode(plain.as_slice()).map_err(|e| CodecError::Malformed {
            key_id,
            reason: e.to_string(),
        })
    }

    /// [`EncryptionCodec::encrypt`] of each payload, in order.
    pub fn encrypt_all(&self, payloads: Vec<Payload>) -> Result<Vec<Payload>, CodecError> {
        payloads.into_iter().map(|p| self.encrypt(p)).collect()
    }

    /// [`EncryptionCodec::decrypt`] of each payload, in order.
    pub fn decrypt_all(&self, payloads: Vec<Payload>) -> Result<Vec<Payload>, CodecError> {
        payloads.into_iter().map(|p| self.decrypt(p)).collect()
    }
}

impl PayloadCodec for EncryptionCodec {
    fn encode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let result = self.encrypt_all(payloads).map_err(Into::into);
        Box::pin(std::future::ready(result))
    }

    fn decode(
        &self,
        _context: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let result = self.decrypt_all(payloads).map_err(Into::into);
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_payload(text: &str) -> Payload {
        Payload {
            metadata: [("encoding".to_string(), b"json/plain".to_vec())]
                .into_iter()
                .collect(),
            data: text.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    fn key(id: &str, byte: u8) -> EncryptionKey {
        EncryptionKey::new(id, [byte; KEY_LEN]).unwrap()
    }

    fn codec(current: &str, keys: &[(&str, u8)]) -> EncryptionCodec {
        EncryptionCodec::new(current, keys.iter().map(|(id, b)| key(id, *b))).unwrap()
    }

    const SECRET: &str = r#"{"merchant_order_no":"o-secret-42","amount":"73.19"}"#;

    #[test]
    fn round_trip_hides_metadata_and_data() {
        let c = codec("k1", &[("k1", 7)]);
        let plain = json_payload(SECRET);
        let sealed = c.encrypt(plain.clone()).unwrap();
        assert_eq!(
            sealed.metadata.get(METADATA_ENCODING).unwrap(),
            b"binary/encrypted"
        );
        assert_eq!(sealed.metadata.get(METADATA_KEY_ID).unwrap(), b"k1");
        assert_eq!(sealed.metadata.len(), 2, "the original metadata is inside");
        let raw = String::from_utf8_lossy(&sealed.data);
        assert!(!raw.contains("o-secret-42") && !raw.contains("json/plain"));
        assert_eq!(c.decrypt(sealed.clone()).unwrap(), plain);
        // A fresh nonce each time: the same payload never encrypts the same way twice.
        assert_ne!(c.encrypt(plain.clone()).unwrap().data, sealed.data);
        // Never encrypted twice.
        assert_eq!(c.encrypt(sealed.clone()).unwrap(), sealed);
    }

    #[tokio::test]
    async fn the_payload_codec_round_trips_through_a_data_converter() {
        let c = codec("k1", &[("k1", 7)]);
        let dc = c.data_converter();
        let ctx = SerializationContextData::None;
        let payload = dc
            .to_payload(&ctx, &"o-secret-42".to_string())
            .await
            .unwrap();
        assert!(EncryptionCodec::is_encrypted(&payload));
        let back: String = dc.from_payload(&ctx, payload).await.unwrap();
        assert_eq!(back, "o-secret-42");
        // A payload written before encryption was on passes through.
        let old = json_payload("\"written in the clear\"");
        let back: String = dc.from_payload(&ctx, old).await.unwrap();
        assert_eq!(back, "written in the clear");
    }

    #[test]
    fn unencrypted_payloads_pass_through_decode() {
        let c = codec("k1", &[("k1", 7)]);
        let plain = json_payload(SECRET);
        assert_eq!(c.decrypt(plain.clone()).unwrap(), plain);
        let empty = Payload::default();
        assert_eq!(c.decrypt(empty.clone()).unwrap(), empty);
    }

    #[test]
    fn rotation_keeps_old_payloads_readable_and_encrypts_with_the_current_key() {
        let old = codec("k1", &[("k1", 1)]);
        let sealed_old = old.encrypt(json_payload(SECRET)).unwrap();
        let rotated = codec("k2", &[("k1", 1), ("k2", 2)]);
        assert_eq!(
            rotated.decrypt(sealed_old).unwrap(),
            json_payload(SECRET),
            "the old key id still decodes"
        );
        let sealed_new = rotated.encrypt(json_payload(SECRET)).unwrap();
        assert_eq!(sealed_new.metadata.get(METADATA_KEY_ID).unwrap(), b"k2");
        assert_eq!(rotated.current_key_id(), "k2");
        assert_eq!(rotated.key_ids().collect::<Vec<_>>(), ["k1", "k2"]);
        // A node still on the old keyring cannot read the new key's payloads: a typed error.
        assert_eq!(
            old.decrypt(sealed_new).unwrap_err(),
            CodecError::UnknownKey("k2".into())
        );
    }

    #[test]
    fn tampering_is_an_error() {
        let c = codec("k1", &[("k1", 7)]);
        let sealed = c.encrypt(json_payload(SECRET)).unwrap();
        for i in [0, NONCE_LEN, sealed.data.len() - 1] {
            let mut bad = sealed.clone();
            bad.data[i] ^= 0x01;
            assert_eq!(
                c.decrypt(bad).unwrap_err(),
                CodecError::Decrypt {
                    key_id: "k1".into()
                },
                "byte {i} flipped"
            );
        }
        let mut short = sealed.clone();
        short.data.truncate(NONCE_LEN + TAG_LEN - 1);
        assert!(matches!(c.decrypt(short), Err(CodecError::Decrypt { .. })));
        let mut no_id = sealed;
        no_id.metadata.remove(METADATA_KEY_ID);
        assert_eq!(c.decrypt(no_id).unwrap_err(), CodecError::MissingKeyId);
    }

    #[test]
    fn the_wrong_key_is_an_error() {
        let sealed = codec("k1", &[("k1", 1)])
            .encrypt(json_payload(SECRET))
            .unwrap();
        // Same id, other key material (e.g. a key file replaced instead of rotated).
        let other = codec("k1", &[("k1", 9)]);
        assert_eq!(
            other.decrypt(sealed.clone()).unwrap_err(),
            CodecError::Decrypt {
                key_id: "k1".into()
            }
        );
        // Unknown id.
        let unknown = codec("k3", &[("k3", 1)]);
        let err = unknown.decrypt(sealed).unwrap_err();
        assert_eq!(err, CodecError::UnknownKey("k1".into()));
        // Through the SDK trait it is an EncodingError carrying the typed error.
        let converted: PayloadConversionError = err.into();
        match converted {
            PayloadConversionError::EncodingError(e) => {
                assert!(e.downcast_ref::<CodecError>().is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_parse_from_base64_and_never_print() {
        let text = base64::engine::general_purpose::STANDARD.encode([42u8; KEY_LEN]);
        let k =
            EncryptionKey::from_base64("k1", &SecretString::from(format!(" {text}\n"))).unwrap();
        let shown = format!("{k:?}");
        assert!(
            !shown.contains(&text) && shown.contains("REDACTED"),
            "{shown}"
        );
        assert!(!shown.contains("42, 42"), "{shown}");
        assert_eq!(k.to_base64().expose_secret(), text);
        let c = EncryptionCodec::new("k1", [k]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains(&text) && shown.contains("k1"), "{shown}");

        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        let err = EncryptionKey::from_base64("k1", &SecretString::from(short.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("32 bytes") && !err.contains(&short), "{err}");
        let err = EncryptionKey::from_base64("k1", &SecretString::from("not base64!".to_string()))
            .unwrap_err();
        assert!(matches!(err, CodecError::InvalidKey { .. }));
        assert!(matches!(
            EncryptionKey::new("bad id", [0; KEY_LEN]),
            Err(CodecError::InvalidKeyId(_))
        ));
        let generated = EncryptionKey::generate("dev").unwrap();
        assert_ne!(generated.to_base64().expose_secret(), text);
    }

    #[test]
    fn a_keyring_needs_its_current_key_and_unique_ids() {
        assert_eq!(
            EncryptionCodec::new("k2", [key("k1", 1)]).unwrap_err(),
            CodecError::NoCurrentKey("k2".into())
        );
        assert_eq!(
            EncryptionCodec::new("k1", [key("k1", 1), key("k1", 2)]).unwrap_err(),
            CodecError::DuplicateKey("k1".into())
        );
    }
}
