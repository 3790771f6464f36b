//! RSA keys and SHA256withRSA (PKCS#1 v1.5, "RSA2" in Alipay's words) signatures, base64.
//!
//! Keys load from PEM (PKCS#8 or PKCS#1) or from the bare base64 DER that channel consoles
//! hand out. Private keys never appear in `Debug` output.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPublicKey};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

use super::CryptoError;

/// A private key that signs with SHA256withRSA.
#[derive(Clone)]
pub struct RsaSigner {
    key: SigningKey<Sha256>,
    /// The same key for ring, which signs several times faster than the pure-Rust `rsa` crate
    /// (RSA was over half of payflow's own CPU per payment in `payflow bench e2e`: every
    /// payment signs its channel requests, and the sandbox signs as the channel). `None` for
    /// keys ring refuses (under 2048 bits): those sign with `rsa`. Both give the same bytes
    /// (PKCS#1 v1.5 is deterministic).
    fast: Option<Arc<ring::signature::RsaKeyPair>>,
    public: RsaPublicKey,
}

impl fmt::Debug for RsaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RsaSigner([REDACTED])")
    }
}

/// A public key that verifies SHA256withRSA signatures.
#[derive(Clone)]
pub struct RsaVerifier {
    key: VerifyingKey<Sha256>,
    /// The same key for ring (PKCS#1 `RSAPublicKey` DER), which verifies without the `rsa`
    /// crate's per-call Montgomery set-up (4 % of all CPU in `payflow bench e2e`: every
    /// payment verifies its channel's answers and notification, and the sandbox payflow's
    /// requests). `None` for keys ring refuses (under 2048 bits): those verify with `rsa`.
    fast: Option<Arc<Vec<u8>>>,
}

impl fmt::Debug for RsaVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaVerifier")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn key_err(what: &str, reason: impl ToString) -> CryptoError {
    CryptoError::Key {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

/// Decoders tried in turn (PKCS#8 first, then PKCS#1).
type PemDecoders<'a, T> = &'a [&'a dyn Fn(&str) -> Option<T>];
type DerDecoders<'a, T> = &'a [&'a dyn Fn(&[u8]) -> Option<T>];

/// Accepts PEM, or base64 DER without PEM armour (as channel consoles export keys).
fn pem_or_der<T>(
    text: &str,
    what: &str,
    from_pem: PemDecoders<'_, T>,
    from_der: DerDecoders<'_, T>,
) -> Result<T, CryptoError> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return from_pem
            .iter()
            .find_map(|f| f(text))
            .ok_or_else(|| key_err(what, "not a PKCS#8 or PKCS#1 RSA key"));
    }
    let compact: String = text.split_whitespace().collect();
    let der = B64
        .decode(compact.as_bytes())
        .map_err(|_| key_err(what, "neither PEM nor base64 DER"))?;
    from_der
        .iter()
        .find_map(|f| f(&der))
        .ok_or_else(|| key_err(what, "not a PKCS#8 or PKCS#1 RSA key"))
}

impl RsaSigner {
    pub fn from_private_key(key: RsaPrivateKey) -> Self {
        let public = key.to_public_key();
        let fast = key
            .to_pkcs8_der()
            .ok()
            .and_then(|der| ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes()).ok())
            .map(Arc::new);
        RsaSigner {
            key: SigningKey::<Sha256>::new(key),
            fast,
            public,
        }
    }

    pub fn from_text(text: &str, what: &str) -> Result<Self, CryptoError> {
        let key = pem_or_der(
            text,
            what,
            &[&|t| RsaPrivateKey::from_pkcs8_pem(t).ok(), &|t| {
                RsaPrivateKey::from_pkcs1_pem(t).ok()
            }],
            &[&|d| RsaPrivateKey::from_pkcs8_der(d).ok(), &|d| {
                RsaPrivateKey::from_pkcs1_der(d).ok()
            }],
        )?;
        Ok(Self::from_private_key(key))
    }

    pub fn from_file(path: &Path) -> Result<Self, CryptoError> {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| key_err(&what, e))?;
        Self::from_text(&text, &what)
    }

    /// A fresh 2048-bit key (dev environment and tests).
    pub fn generate() -> Result<(Self, String), CryptoError> {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
            .map_err(|e| CryptoError::Sign(e.to_string()))?;
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| CryptoError::Sign(e.to_string()))?
            .to_string();
        Ok((Self::from_private_key(key), pem))
    }

    /// base64(SHA256withRSA(data))
    pub fn sign_base64(&self, data: &[u8]) -> Result<String, CryptoError> {
        if let Some(pair) = &self.fast {
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                data,
                &mut sig,
            )
            .map_err(|_| CryptoError::Sign("ring refused to sign".into()))?;
            return Ok(B64.encode(sig));
        }
        let sig = self
            .key
            .try_sign(data)
            .map_err(|e| CryptoError::Sign(e.to_string()))?;
        Ok(B64.encode(sig.to_bytes()))
    }

    pub fn verifier(&self) -> RsaVerifier {
        RsaVerifier::from_public_key(self.public.clone())
    }

    /// The public half as SPKI PEM (what `payflow keys public` prints).
    pub fn public_pem(&self) -> String {
        self.public
            .to_public_key_pem(LineEnding::LF)
            .expect("an RSA public key always encodes")
    }
}

impl RsaVerifier {
    pub fn from_text(text: &str, what: &str) -> Result<Self, CryptoError> {
        let key = pem_or_der(
            text,
            what,
            &[&|t| RsaPublicKey::from_public_key_pem(t).ok(), &|t| {
                RsaPublicKey::from_pkcs1_pem(t).ok()
            }],
            &[&|d| RsaPublicKey::from_public_key_der(d).ok(), &|d| {
                RsaPublicKey::from_pkcs1_der(d).ok()
            }],
        )?;
        Ok(RsaVerifier::from_public_key(key))
    }

    fn from_public_key(key: RsaPublicKey) -> Self {
        use rsa::traits::PublicKeyParts;
        let fast = (key.n().bits() >= 2048)
            .then(|| key.to_pkcs1_der().ok())
            .flatten()
            .map(|der| Arc::new(der.as_bytes().to_vec()));
        RsaVerifier {
            key: VerifyingKey::<Sha256>::new(key),
            fast,
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, CryptoError> {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| key_err(&what, e))?;
        Self::from_text(&text, &what)
    }

    /// Verifies base64(SHA256withRSA(data)).
    pub fn verify_base64(&self, data: &[u8], signature_b64: &str) -> Result<(), CryptoError> {
        let raw = B64
            .decode(signature_b64.trim().as_bytes())
            .map_err(|_| CryptoError::SignatureEncoding)?;
        if let Some(der) = &self.fast {
            return ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                der.as_slice(),
            )
            .verify(data, &raw)
            .map_err(|_| CryptoError::BadSignature);
        }
        let sig = Signature::try_from(raw.as_slice()).map_err(|_| CryptoError::BadSignature)?;
        self.key
            .verify(data, &sig)
            .map_err(|_| CryptoError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip_and_tamper_fails() {
        let (signer, pem) = RsaSigner::generate().unwrap();
        let sig = signer.sign_base64(b"a=1&b=2").unwrap();
        signer.verifier().verify_base64(b"a=1&b=2", &sig).unwrap();
        assert!(matches!(
            signer.verifier().verify_base64(b"a=1&b=3", &sig),
            Err(CryptoError::BadSignature)
        ));
        // Loads back from PEM and from bare base64 DER.
        let again = RsaSigner::from_text(&pem, "test").unwrap();
        assert_eq!(
            again.sign_base64(b"x").unwrap(),
            signer.sign_base64(b"x").unwrap()
        );
        let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        RsaSigner::from_text(&der_b64, "test").unwrap();
        let public = RsaVerifier::from_text(&signer.public_pem(), "pub").unwrap();
        public.verify_base64(b"a=1&b=2", &sig).unwrap();
        assert!(format!("{signer:?}").contains("REDACTED"));
    }

    #[test]
    fn ring_and_the_rsa_crate_sign_the_same_bytes_and_small_keys_fall_back() {
        let (signer, _) = RsaSigner::generate().unwrap();
        assert!(signer.fast.is_some(), "a 2048-bit key signs with ring");
        let slow = RsaSigner {
            fast: None,
            ..signer.clone()
        };
        for msg in [&b""[..], b"a=1&b=2", &[0xffu8; 5000][..]] {
            assert_eq!(
                signer.sign_base64(msg).unwrap(),
                slow.sign_base64(msg).unwrap()
            );
        }
        let small =
            RsaSigner::from_private_key(RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap());
        assert!(small.fast.is_none(), "ring refuses keys under 2048 bits");
        let sig = small.sign_base64(b"x").unwrap();
        small.verifier().verify_base64(b"x", &sig).unwrap();
    }

    #[test]
    fn ring_and_the_rsa_crate_agree_on_what_verifies_and_small_keys_fall_back() {
        let (signer, _) = RsaSigner::generate().unwrap();
        let fast = signer.verifier();
        assert!(fast.fast.is_some(), "a 2048-bit key verifies with ring");
        let slow = RsaVerifier {
            fast: None,
            ..fast.clone()
        };
        let sig = signer.sign_base64(b"a=1&b=2").unwrap();
        let mut raw = B64.decode(&sig).unwrap();
        raw[17] ^= 1;
        let flipped = B64.encode(&raw);
        for v in [&fast, &slow] {
            v.verify_base64(b"a=1&b=2", &sig).unwrap();
            for (data, sig) in [(&b"a=1&b=3"[..], &sig), (b"a=1&b=2", &flipped)] {
                assert!(matches!(
                    v.verify_base64(data, sig),
                    Err(CryptoError::BadSignature)
                ));
            }
        }
        let small =
            RsaSigner::from_private_key(RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap());
        assert!(small.verifier().fast.is_none());
        let sig = small.sign_base64(b"x").unwrap();
        assert!(small.verifier().verify_base64(b"y", &sig).is_err());
    }

    #[test]
    fn rejects_garbage_keys() {
        assert!(RsaSigner::from_text("hello", "k").is_err());
        assert!(
            RsaVerifier::from_text(
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
                "k"
            )
            .is_err()
        );
    }
}
