//! `payflow keys public`: prints the platform's public key (SPKI PEM), which merchants
//! configured with `sign_rsa` verify the `payflow-signature-rsa` header with.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use payflow::config::{Config, ConfigError, expose};
use payflow_activities::crypto::CryptoError;
use payflow_activities::crypto::rsa_keys::RsaSigner;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Print the platform public key (PEM) that verifies `payflow-signature-rsa`.
    Public {
        #[arg(long, env = "PAYFLOW_CONFIG", default_value = "payflow.toml")]
        config: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}: notify.platform_private_key is not set")]
    NotConfigured(String),
    #[error("notify.platform_private_key: {0}")]
    Key(#[from] CryptoError),
}

/// The platform public key of the configuration at `path`, as PEM.
pub fn public_pem(path: &Path) -> Result<String, KeysError> {
    let config = Config::load(path)?;
    let key = "notify.platform_private_key";
    let secret = config
        .notify
        .platform_private_key
        .as_ref()
        .ok_or_else(|| KeysError::NotConfigured(path.display().to_string()))?
        .load(key)?;
    Ok(RsaSigner::from_text(expose(&secret), key)?.public_pem())
}

pub fn run(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Public { config } => {
            print!("{}", public_pem(&config)?);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[temporal]
address = "http://127.0.0.1:7233"
[database]
url = "sqlite://x.db"
[ingress]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8088"
"#;

    #[test]
    fn prints_the_public_half_of_the_configured_key_and_names_a_missing_one() {
        let dir = std::env::temp_dir().join(format!("payflow-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (signer, pem) = RsaSigner::generate().unwrap();
        std::fs::write(dir.join("platform.pem"), pem).unwrap();
        let with_key = dir.join("with.toml");
        std::fs::write(
            &with_key,
            format!("{CONFIG}[notify]\nplatform_private_key = {{ file = \"platform.pem\" }}\n"),
        )
        .unwrap();
        let printed = public_pem(&with_key).unwrap();
        assert_eq!(printed, signer.public_pem());
        assert!(printed.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(!printed.contains("PRIVATE"));

        let without = dir.join("without.toml");
        std::fs::write(&without, CONFIG).unwrap();
        let err = public_pem(&without).unwrap_err().to_string();
        assert!(err.contains("notify.platform_private_key"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
