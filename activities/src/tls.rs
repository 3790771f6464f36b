//! rustls needs one process-wide crypto provider; payflow uses ring (as the Temporal SDK does).

/// Installs ring as the default provider if none is installed yet. Safe to call repeatedly.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
