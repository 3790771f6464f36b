//! Key material for `payflow dev` and tests, generated on first use into a data folder
//! (git-ignored), never committed: our Alipay app key pair, the sandbox channel's key pair, the
//! platform key pair that signs merchant callbacks (`payflow-signature-rsa`) and the demo
//! merchant's webhook secret.

use std::path::{Path, PathBuf};

use payflow_activities::crypto::rsa_keys::RsaSigner;
use payflow_activities::crypto::webhook::WebhookSecret;

pub struct DevKeys {
    pub dir: PathBuf,
}

impl DevKeys {
    pub const APP_PRIVATE: &'static str = "app_private.pem";
    pub const APP_PUBLIC: &'static str = "app_public.pem";
    pub const SANDBOX_PRIVATE: &'static str = "sandbox_private.pem";
    pub const SANDBOX_PUBLIC: &'static str = "sandbox_public.pem";
    pub const PLATFORM_PRIVATE: &'static str = "platform_private.pem";
    pub const PLATFORM_PUBLIC: &'static str = "platform_public.pem";
    pub const MERCHANT_SECRET: &'static str = "demo_merchant.whsec";

    /// Creates whatever is missing under `dir` (mode 0600 for secrets).
    pub fn ensure(dir: &Path) -> std::io::Result<DevKeys> {
        std::fs::create_dir_all(dir)?;
        for (private, public) in [
            (Self::APP_PRIVATE, Self::APP_PUBLIC),
            (Self::SANDBOX_PRIVATE, Self::SANDBOX_PUBLIC),
            (Self::PLATFORM_PRIVATE, Self::PLATFORM_PUBLIC),
        ] {
            if !dir.join(private).is_file() {
                let (signer, pem) = RsaSigner::generate().map_err(std::io::Error::other)?;
                write_secret(&dir.join(private), &pem)?;
                std::fs::write(dir.join(public), signer.public_pem())?;
            }
        }
        if !dir.join(Self::MERCHANT_SECRET).is_file() {
            write_secret(&dir.join(Self::MERCHANT_SECRET), &WebhookSecret::generate())?;
        }
        Ok(DevKeys {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn read(&self, name: &str) -> std::io::Result<String> {
        std::fs::read_to_string(self.path(name))
    }
}

fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(text.as_bytes())
}
