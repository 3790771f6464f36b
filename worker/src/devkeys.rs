//! Key material for `payflow dev` and tests, generated on first use into a data folder
//! (git-ignored), never committed: our Alipay app key pair, the sandbox channel's key pair, the
//! platform key pair that signs merchant callbacks (`payflow-signature-rsa`), the demo
//! merchant's webhook secret, and for the WeChat Pay sandbox our merchant API key pair, the
//! WeChat Pay platform key pair and the API v3 key.

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
    /// Our WeChat Pay merchant API key pair (signs our requests).
    pub const WECHAT_MERCHANT_PRIVATE: &'static str = "wechat_merchant_private.pem";
    pub const WECHAT_MERCHANT_PUBLIC: &'static str = "wechat_merchant_public.pem";
    /// The WeChat Pay sandbox's platform key pair (signs its answers and notifications).
    pub const WECHAT_PLATFORM_PRIVATE: &'static str = "wechat_platform_private.pem";
    pub const WECHAT_PLATFORM_PUBLIC: &'static str = "wechat_platform_public.pem";
    /// The WeChat Pay API v3 key: 32 letters and digits.
    pub const WECHAT_API_V3_KEY: &'static str = "wechat_api_v3.key";

    /// Creates whatever is missing under `dir` (mode 0600 for secrets).
    pub fn ensure(dir: &Path) -> std::io::Result<DevKeys> {
        std::fs::create_dir_all(dir)?;
        for (private, public) in [
            (Self::APP_PRIVATE, Self::APP_PUBLIC),
            (Self::SANDBOX_PRIVATE, Self::SANDBOX_PUBLIC),
            (Self::PLATFORM_PRIVATE, Self::PLATFORM_PUBLIC),
            (Self::WECHAT_MERCHANT_PRIVATE, Self::WECHAT_MERCHANT_PUBLIC),
            (Self::WECHAT_PLATFORM_PRIVATE, Self::WECHAT_PLATFORM_PUBLIC),
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
        if !dir.join(Self::WECHAT_API_V3_KEY).is_file() {
            use rand::Rng;
            let key: String = rand::thread_rng()
                .sample_iter(&rand::distributions::Alphanumeric)
                .take(32)
                .map(char::from)
                .collect();
            write_secret(&dir.join(Self::WECHAT_API_V3_KEY), &key)?;
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
