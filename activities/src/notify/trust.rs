//! Per-merchant TLS trust: the platform's roots, plus an extra CA and/or pinned certificates.
//!
//! - no setting: the system roots (as reqwest's default rustls verifier).
//! - `tls_ca_file`: the system roots plus that CA (chain, name and validity are checked).
//! - `tls_pinned_cert_sha256` alone: the server's leaf certificate must have one of these
//!   SHA-256 fingerprints, and that is the whole trust decision (no CA, name or expiry check):
//!   this is how a merchant with a self-signed certificate is trusted. The handshake signature
//!   is still verified against the pinned certificate's key, so only its holder passes.
//! - both: the normal verification with the extra CA *and* the pin must pass.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("CA file {0} holds no PEM certificate")]
    NoCertificate(String),
    #[error("a pinned certificate fingerprint is 64 hex digits (colons allowed), got {0:?}")]
    Pin(String),
    #[error("TLS settings: {0}")]
    Tls(#[from] rustls::Error),
}

/// A SHA-256 certificate fingerprint, as `openssl x509 -fingerprint -sha256` prints it
/// (`AB:CD:...`) or as 64 bare hex digits.
pub fn parse_pin(text: &str) -> Result<[u8; 32], TrustError> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .collect();
    let bad = || TrustError::Pin(text.to_string());
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// The SHA-256 fingerprint of a DER certificate (what a pin is compared with).
pub fn fingerprint(cert: &[u8]) -> [u8; 32] {
    Sha256::digest(cert).into()
}

/// Every certificate in a PEM file.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|e| TrustError::CaFile {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrustError::CaFile {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TrustError::NoCertificate(shown));
    }
    Ok(certs)
}

/// What one merchant's server is trusted by.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    pub extra_ca: Vec<CertificateDer<'static>>,
    pub pinned_sha256: Vec<[u8; 32]>,
}

impl Trust {
    pub fn is_default(&self) -> bool {
        self.extra_ca.is_empty() && self.pinned_sha256.is_empty()
    }

    /// The verifier for this trust; `system` is the shared default (built once, since loading
    /// the system roots reads the whole certificate store).
    pub fn verifier(
        &self,
        provider: &Arc<CryptoProvider>,
        system: impl FnOnce() -> Result<Arc<dyn ServerCertVerifier>, TrustError>,
    ) -> Result<Arc<dyn ServerCertVerifier>, TrustError> {
        let chain: Option<Arc<dyn ServerCertVerifier>> = if !self.extra_ca.is_empty() {
            Some(Arc::new(
                rustls_platform_verifier::Verifier::new_with_extra_roots(
                    self.extra_ca.iter().cloned(),
                    provider.clone(),
                )?,
            ))
        } else if self.pinned_sha256.is_empty() {
            Some(system()?)
        } else {
            None
        };
        Ok(match (chain, self.pinned_sha256.is_empty()) {
            (Some(chain), true) => chain,
            (chain, _) => Arc::new(PinnedVerifier {
                chain,
                pins: self.pinned_sha256.clone(),
                algorithms: provider.signature_verification_algorithms,
            }),
        })
    }
}

/// The system roots, as reqwest's default rustls verifier uses them.
pub fn system_verifier(
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, TrustError> {
    Ok(Arc::new(rustls_platform_verifier::Verifier::new(
        provider.clone(),
    )?))
}

/// The leaf must match a pin; with `chain`, the normal verification must pass too.
#[derive(Debug)]
struct PinnedVerifier {
    chain: Option<Arc<dyn ServerCertVerifier>>,
    pins: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

#[derive(Debug)]
struct PinMismatch;

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("certificate does not match the pinned SHA-256 fingerprint")
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        let seen = fingerprint(end_entity.as_ref());
        if self.pins.contains(&seen) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(CertificateError::Other(OtherError(Arc::new(PinMismatch))).into())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A TLS client config: TLS 1.2 minimum, HTTP/2 or 1.1, with `verifier`.
pub fn client_config(
    provider: &Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ClientConfig, TrustError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_from_openssl_or_bare_hex() {
        let bare = "AB".repeat(32);
        assert_eq!(parse_pin(&bare).unwrap(), [0xab; 32]);
        let colons = vec!["0f"; 32].join(":");
        assert_eq!(parse_pin(&colons).unwrap(), [0x0f; 32]);
        for bad in [
            "",
            "abc",
            &"zz".repeat(32),
            &"ab".repeat(33),
            "é".repeat(32).as_str(),
        ] {
            assert!(parse_pin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("payflow-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(matches!(
            load_ca_file(&empty),
            Err(TrustError::NoCertificate(_))
        ));
        assert!(matches!(
            load_ca_file(&dir.join("missing.pem")),
            Err(TrustError::CaFile { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
