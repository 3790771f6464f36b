//! The all-in-one stack used by `payflow dev` and the end-to-end tests: the worker and ingress
//! (an [`App`]), the sandbox channels (Alipay, and WeChat Pay v3 on a second port) and a demo
//! merchant receiver, wired to each other on loopback ports, against a Temporal server started
//! elsewhere. Product [`PRODUCT`] routes to the Alipay channel, [`WECHAT_PRODUCT`] to WeChat Pay.

use std::path::Path;
use std::time::Duration;

use payflow_activities::crypto::rsa_keys::{RsaSigner, RsaVerifier};
use payflow_activities::crypto::webhook::WebhookSecret;
use payflow_activities::store::Store;
use payflow_client::Payflow;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::{Config, ConfigError};
use crate::devkeys::DevKeys;
use crate::merchant_receiver::MerchantReceiver;
use crate::sandbox::wechat::{WechatSandboxConfig, WechatSandboxHandle};
use crate::sandbox::{self, SandboxConfig, SandboxHandle};
use crate::startup::{App, StartupError};

/// The channel name, app id and merchant of the dev/test wiring.
pub const CHANNEL: &str = "alipay";
pub const APP_ID: &str = "2021000000000001";
pub const MERCHANT: &str = "demo";
pub const PRODUCT: &str = "qr";

/// The WeChat Pay channel of the dev/test wiring: its name, our app and merchant ids, the
/// certificate serials of our merchant API key and of the sandbox's platform key, and the
/// product routed to it.
pub const WECHAT_CHANNEL: &str = "wechat";
pub const WECHAT_APPID: &str = "wx8888888888888888";
pub const WECHAT_MCHID: &str = "1900000109";
pub const WECHAT_MERCHANT_SERIAL: &str = "444F4864EA9B34415B2EE6C5B4E1A7D0A8C0D6C3";
pub const WECHAT_PLATFORM_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
pub const WECHAT_PRODUCT: &str = "wxqr";

pub struct StackOptions<'a> {
    pub temporal_address: String,
    pub namespace: String,
    pub database_url: String,
    pub keys: &'a DevKeys,
    /// Sandbox: the customer pays this long after precreate (`None`: only on demand).
    pub pay_after: Option<Duration>,
    pub query_schedule_ms: Vec<u64>,
    pub expiry_scale_percent: u32,
    pub notify_schedule_ms: Vec<u64>,
    /// Notification workflows continue as new past this many events (`None`: the default).
    pub notify_continue_after_events: Option<u32>,
    pub sandbox_notify_retry: Vec<Duration>,
    /// `127.0.0.1:0` for a free port.
    pub ingress_listen: String,
    /// Source addresses the ingress accepts (empty: any).
    pub ingress_allowed_ips: Vec<String>,
    /// Extra TOML appended to the generated configuration (more merchants, products...).
    pub extra_toml: String,
}

pub struct Stack {
    pub sandbox: SandboxHandle,
    /// The WeChat Pay sandbox (channel [`WECHAT_CHANNEL`]).
    pub wechat: WechatSandboxHandle,
    pub merchant: MerchantReceiver,
    pub payflow: Payflow,
    pub store: Store,
    pub ingress_addr: std::net::SocketAddr,
    config: Config,
    /// The ingress's socket, held for the stack's life: each worker started listens on a copy,
    /// so a restarted worker finds its port still free (as under a supervisor that holds it).
    ingress: std::net::TcpListener,
    /// The payload codec the worker and [`Stack::payflow`] share (the generated dev key).
    codec: Option<payflow_client::EncryptionCodec>,
    worker: Option<WorkerThread>,
}

enum Finish {
    Stop,
    Kill,
}

/// The worker and ingress on a thread and runtime of their own: Temporal workers run
/// workflows on a `LocalSet` (their futures are not `Send`). What the caller holds (client,
/// store) is connected on the caller's runtime.
struct WorkerThread {
    ingress_addr: std::net::SocketAddr,
    metrics_addr: Option<std::net::SocketAddr>,
    finish: oneshot::Sender<Finish>,
    thread: std::thread::JoinHandle<Result<(), StartupError>>,
}

/// Where a started worker listens.
struct Bound {
    ingress: std::net::SocketAddr,
    metrics: Option<std::net::SocketAddr>,
}

impl WorkerThread {
    /// Starts the worker with its ingress listening on `ingress`.
    async fn start(
        config: Config,
        ingress: std::net::TcpListener,
    ) -> Result<WorkerThread, StartupError> {
        let (ready_tx, ready_rx) = oneshot::channel::<Result<Bound, StartupError>>();
        let (finish, finished) = oneshot::channel::<Finish>();
        let thread = std::thread::Builder::new()
            .name("payflow-worker".into())
            .spawn(move || -> Result<(), StartupError> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| StartupError::Worker(e.to_string()))?;
                let result = rt.block_on(async move {
                    let app = match App::build_on(config, Some(ingress)).await {
                        Ok(app) => app,
                        Err(e) => {
                            let msg = e.to_string();
                            let _ = ready_tx.send(Err(e));
                            return Err(StartupError::Worker(msg));
                        }
                    };
                    let _ = ready_tx.send(Ok(Bound {
                        ingress: app.ingress_addr,
                        metrics: app.metrics_addr,
                    }));
                    let (kill_tx, kill_rx) = oneshot::channel::<()>();
                    let (stop_tx, stop_rx) = oneshot::channel::<()>();
                    tokio::spawn(async move {
                        match finished.await {
                            Ok(Finish::Kill) => {
                                let _ = kill_tx.send(());
                            }
                            _ => {
                                let _ = stop_tx.send(());
                            }
                        }
                    });
                    let run = app.run(async {
                        let _ = stop_rx.await;
                    });
                    tokio::select! {
                        r = run => r,
                        // A crash: the run future is dropped mid-flight.
                        _ = kill_rx => Ok(()),
                    }
                });
                // Whatever is still spawned dies with the runtime, without draining.
                rt.shutdown_background();
                result
            })
            .map_err(|e| StartupError::Worker(e.to_string()))?;
        match ready_rx.await {
            Ok(Ok(bound)) => Ok(WorkerThread {
                ingress_addr: bound.ingress,
                metrics_addr: bound.metrics,
                finish,
                thread,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StartupError::Worker(
                "worker thread ended during start-up".into(),
            )),
        }
    }

    async fn finish(self, how: Finish) -> Result<(), StartupError> {
        let _ = self.finish.send(how);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| StartupError::Worker(e.to_string()))?
            .map_err(|_| StartupError::Worker("worker thread panicked".into()))?
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("key: {0}")]
    Key(String),
}

/// The configuration `payflow dev` and tests run with, as TOML text.
pub fn config_toml(
    o: &StackOptions<'_>,
    gateway_url: &str,
    merchant_url: &str,
    ingress_public: &str,
) -> String {
    let k = |name: &str| o.keys.path(name).display().to_string();
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    format!(
        r#"
[temporal]
address = "{temporal}"
namespace = "{namespace}"

[database]
url = "{db}"

[ingress]
listen = "{listen}"
public_url = "{ingress_public}"
allowed_ips = [{allowed_ips}]

[payment]
query_schedule_ms = [{query}]
expiry_scale_percent = {expiry_scale}

[notify]
retry_schedule_ms = [{notify}]
continue_as_new_after_events = {continue_after}
connect_timeout_ms = 2000
total_timeout_ms = 5000
platform_private_key = {{ file = "{platform_private}" }}

[[channels]]
name = "{CHANNEL}"
kind = "alipay"
gateway_url = "{gateway_url}"
app_id = "{APP_ID}"
app_private_key = {{ file = "{app_private}" }}
channel_public_key = {{ file = "{sandbox_public}" }}
# The sandbox's fee (reconciliation compares each statement line's fee with it).
fee_rate = "0.006"

[[merchants]]
id = "{MERCHANT}"
notify_url = "{merchant_url}"
allowed_notify_hosts = ["127.0.0.1"]
webhook_secret = {{ file = "{secret}" }}
expect_body = "success"
# The demo merchant listens on loopback over plain http: allowed explicitly, dev/test only.
allow_plain_http = ["127.0.0.1"]
allow_private_network = true
sign_rsa = true

[[products]]
id = "{PRODUCT}"
channel = "{CHANNEL}"
fee_rate = "0.006"
{extra}
"#,
        temporal = o.temporal_address,
        namespace = o.namespace,
        db = o.database_url,
        listen = o.ingress_listen,
        allowed_ips = o
            .ingress_allowed_ips
            .iter()
            .map(|ip| format!("\"{ip}\""))
            .collect::<Vec<_>>()
            .join(", "),
        query = list(&o.query_schedule_ms),
        expiry_scale = o.expiry_scale_percent,
        notify = list(&o.notify_schedule_ms),
        continue_after = o
            .notify_continue_after_events
            .unwrap_or(payflow_activities::services::DEFAULT_CONTINUE_AFTER_EVENTS),
        app_private = k(DevKeys::APP_PRIVATE),
        sandbox_public = k(DevKeys::SANDBOX_PUBLIC),
        secret = k(DevKeys::MERCHANT_SECRET),
        platform_private = k(DevKeys::PLATFORM_PRIVATE),
        extra = o.extra_toml,
    )
}

/// The WeChat Pay channel served by the sandbox at `base_url`, and the product routed to it,
/// as TOML appended to [`config_toml`]'s.
pub fn wechat_toml(keys: &DevKeys, base_url: &str) -> String {
    let k = |name: &str| keys.path(name).display().to_string();
    format!(
        r#"
[[channels]]
name = "{WECHAT_CHANNEL}"
kind = "wechat"
gateway_url = "{base_url}"
app_id = "{WECHAT_APPID}"
mchid = "{WECHAT_MCHID}"
merchant_serial_no = "{WECHAT_MERCHANT_SERIAL}"
app_private_key = {{ file = "{merchant_private}" }}
channel_public_key = {{ file = "{platform_public}" }}
channel_public_key_serial = "{WECHAT_PLATFORM_SERIAL}"
api_v3_key = {{ file = "{api_v3_key}" }}
fee_rate = "0.006"

[[products]]
id = "{WECHAT_PRODUCT}"
channel = "{WECHAT_CHANNEL}"
fee_rate = "0.006"
"#,
        merchant_private = k(DevKeys::WECHAT_MERCHANT_PRIVATE),
        platform_public = k(DevKeys::WECHAT_PLATFORM_PUBLIC),
        api_v3_key = k(DevKeys::WECHAT_API_V3_KEY),
    )
}

impl Stack {
    /// Starts the sandboxes, the merchant receiver and the worker with its ingress.
    pub async fn start(o: StackOptions<'_>) -> Result<Stack, StackError> {
        let key = |e: payflow_activities::crypto::CryptoError| StackError::Key(e.to_string());
        let sandbox = sandbox::spawn(
            TcpListener::bind("127.0.0.1:0").await?,
            SandboxConfig {
                app_id: APP_ID.into(),
                app_public_key: RsaVerifier::from_text(
                    &o.keys.read(DevKeys::APP_PUBLIC)?,
                    "app public key",
                )
                .map_err(key)?,
                signer: RsaSigner::from_text(
                    &o.keys.read(DevKeys::SANDBOX_PRIVATE)?,
                    "sandbox key",
                )
                .map_err(key)?,
                knobs: sandbox::Knobs {
                    pay_after: o.pay_after,
                    ..Default::default()
                },
                notify_retry: o.sandbox_notify_retry.clone(),
            },
        )
        .await?;
        let wechat = sandbox::wechat::spawn(
            TcpListener::bind("127.0.0.1:0").await?,
            WechatSandboxConfig {
                appid: WECHAT_APPID.into(),
                mchid: WECHAT_MCHID.into(),
                merchant_serial_no: WECHAT_MERCHANT_SERIAL.into(),
                merchant_public_key: RsaVerifier::from_text(
                    &o.keys.read(DevKeys::WECHAT_MERCHANT_PUBLIC)?,
                    "wechat merchant public key",
                )
                .map_err(key)?,
                platform_signer: RsaSigner::from_text(
                    &o.keys.read(DevKeys::WECHAT_PLATFORM_PRIVATE)?,
                    "wechat platform key",
                )
                .map_err(key)?,
                platform_serial: WECHAT_PLATFORM_SERIAL.into(),
                api_v3_key: sandbox::wechat::api_v3_key(&o.keys.read(DevKeys::WECHAT_API_V3_KEY)?)
                    .map_err(StackError::Key)?,
                knobs: sandbox::Knobs {
                    pay_after: o.pay_after,
                    ..Default::default()
                },
                notify_retry: o.sandbox_notify_retry.clone(),
            },
        )
        .await?;
        let secret = WebhookSecret::parse(&o.keys.read(DevKeys::MERCHANT_SECRET)?).map_err(key)?;
        let platform = RsaVerifier::from_text(
            &o.keys.read(DevKeys::PLATFORM_PUBLIC)?,
            "platform public key",
        )
        .map_err(key)?;
        let merchant = MerchantReceiver::spawn(
            TcpListener::bind("127.0.0.1:0").await?,
            secret,
            Some(platform),
        )
        .await?;
        // The ingress's public URL goes into the configuration, so its socket is bound here
        // and handed to the worker: a port merely found free could be taken by another
        // process before the worker binds it.
        let ingress = std::net::TcpListener::bind(&o.ingress_listen)?;
        let listen = ingress.local_addr()?.to_string();
        let public = format!("http://{listen}");
        let wechat_channel = wechat_toml(o.keys, &wechat.base_url());
        let mut text = config_toml(
            &StackOptions {
                ingress_listen: listen.clone(),
                ..o
            },
            &sandbox.gateway_url(),
            &merchant.notify_url(),
            &public,
        );
        text.push_str(&wechat_channel);
        let text = text + &dev_codec_toml(o.keys)?;
        let config = Config::parse(&text, "(generated)", Path::new("."), std::iter::empty())?;
        let database_url = config.database.url.clone();
        let temporal = (
            config.temporal.address.clone(),
            config.temporal.namespace.clone(),
        );
        let worker = WorkerThread::start(config.clone(), ingress.try_clone()?).await?;
        let ingress_addr = worker.ingress_addr;
        let codec = match &config.codec {
            Some(c) => Some(c.load()?),
            None => None,
        };
        let payflow = Payflow::connect_with(
            &temporal.0,
            &temporal.1,
            payflow_client::PayflowOptions {
                codec: codec.clone(),
            },
        )
        .await
        .map_err(|e| StartupError::Worker(e.to_string()))?;
        let store = Store::connect(&database_url)
            .await
            .map_err(StartupError::from)?;
        Ok(Stack {
            sandbox,
            wechat,
            merchant,
            payflow,
            store,
            ingress_addr,
            config,
            ingress,
            codec,
            worker: Some(worker),
        })
    }

    /// Where the running worker serves Prometheus metrics (`telemetry.metrics_listen`, which
    /// may name port 0), if enabled.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.worker.as_ref().and_then(|w| w.metrics_addr)
    }

    /// The Temporal frontend and namespace this stack runs in (for operator commands).
    pub fn temporal_target(&self) -> (&str, &str) {
        (
            &self.config.temporal.address,
            &self.config.temporal.namespace,
        )
    }

    /// The payload codec of this stack (`None` with `PAYFLOW_DEV_CODEC=off`): what reads the
    /// raw history the worker and [`Stack::payflow`] write.
    pub fn codec(&self) -> Option<&payflow_client::EncryptionCodec> {
        self.codec.as_ref()
    }

    /// Kills the worker and its ingress abruptly, as a crash would: nothing is drained, no
    /// in-flight task completes.
    pub async fn kill_worker(&mut self) -> Result<(), StartupError> {
        match self.worker.take() {
            Some(w) => w.finish(Finish::Kill).await,
            None => Ok(()),
        }
    }

    /// Starts a new worker and ingress with the same configuration (same database,
    /// namespace and ingress socket).
    pub async fn start_worker(&mut self) -> Result<(), StartupError> {
        if self.worker.is_none() {
            let ingress = self
                .ingress
                .try_clone()
                .map_err(|source| StartupError::Bind {
                    addr: self.ingress_addr,
                    source,
                })?;
            self.worker = Some(WorkerThread::start(self.config.clone(), ingress).await?);
        }
        Ok(())
    }

    /// Stops the worker and ingress and waits for them.
    pub async fn shutdown(mut self) -> Result<(), StartupError> {
        self.store.close().await;
        match self.worker.take() {
            Some(w) => w.finish(Finish::Stop).await,
            None => Ok(()),
        }
    }
}

/// The dev stack's payload encryption key: its id and its file in the dev keys folder.
pub const DEV_CODEC_KEY_ID: &str = "dev-1";
pub const DEV_CODEC_KEY_FILE: &str = "codec_dev.key";

/// The `[codec]` section of the dev stack: payload encryption under a key generated on first
/// use into the keys folder (0600, never committed), so `payflow dev` and every end-to-end test
/// run with Temporal history encrypted. Empty with `PAYFLOW_DEV_CODEC=off` (e.g. to record
/// histories readable without the key).
pub fn dev_codec_toml(keys: &DevKeys) -> std::io::Result<String> {
    if std::env::var("PAYFLOW_DEV_CODEC").is_ok_and(|v| v == "off") {
        return Ok(String::new());
    }
    let path = keys.path(DEV_CODEC_KEY_FILE);
    ensure_dev_codec_key(&path)?;
    Ok(format!(
        "\n[codec]\ncurrent_key_id = \"{DEV_CODEC_KEY_ID}\"\n\
         keys = [{{ id = \"{DEV_CODEC_KEY_ID}\", key_file = \"{}\" }}]\n",
        path.display()
    ))
}

/// Writes a new random key to `path` unless one is there. Safe against concurrent stacks: the
/// key is written to a file of its own and linked into place, so a reader sees a whole key,
/// and the first link wins.
fn ensure_dev_codec_key(path: &Path) -> std::io::Result<()> {
    use secrecy::ExposeSecret;
    use std::io::Write;
    if path.is_file() {
        return Ok(());
    }
    let key =
        payflow_client::EncryptionKey::generate(DEV_CODEC_KEY_ID).map_err(std::io::Error::other)?;
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(&tmp)?
        .write_all(key.to_base64().expose_secret().as_bytes())?;
    let linked = std::fs::hard_link(&tmp, path);
    std::fs::remove_file(&tmp)?;
    match linked {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}
