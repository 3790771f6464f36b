//! Configuration: one TOML file plus environment overrides, typed and validated at start-up.
//!
//! Overrides: `PAYFLOW_SECTION__KEY=value` sets `section.key` (e.g.
//! `PAYFLOW_INGRESS__LISTEN=0.0.0.0:8088`); `TEMPORAL_ADDRESS` and `DATABASE_URL` set
//! `temporal.address` and `database.url`. Values parse as TOML when they can (numbers, arrays),
//! else as strings. Secrets are never inline: they are `{ file = "..." }` or `{ env = "..." }`
//! references, read into memory at load and never printed. A bad or missing key fails with
//! an error naming the key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use payflow_activities::merchant_gate::GatePolicy;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

fn key_err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Temporal frontend payflow talks to.
    pub temporal: TemporalConfig,
    /// The payflow database (orders, ledger, notices).
    pub database: DatabaseConfig,
    /// The channel notification ingress (HTTP).
    pub ingress: IngressConfig,
    /// The SDK workers' slots, pollers and cache (`worker/src/tuning.rs`).
    #[serde(default)]
    pub worker: crate::tuning::WorkerTuningConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub payment: PaymentConfig,
    #[serde(default)]
    pub notify: NotifyConfig,
    #[serde(default)]
    pub payout: PayoutConfig,
    /// Reconciliation: statement retries, the daily schedule, paging.
    #[serde(default)]
    pub recon: ReconConfig,
    /// Payment channels, by name.
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
    #[serde(default)]
    pub merchants: Vec<MerchantConfig>,
    /// Products: what merchants sell through which channel.
    #[serde(default)]
    pub products: Vec<ProductConfig>,
    /// Encryption of the payloads payflow writes into Temporal history; off when absent.
    #[serde(default)]
    pub codec: Option<CodecConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemporalConfig {
    /// e.g. `http://127.0.0.1:7233`
    pub address: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// gRPC compression to the server: `none` (default) or `gzip`. Encrypted payloads do not
    /// compress, and on a fast link gzip only costs CPU at both ends (`payflow bench e2e`).
    #[serde(default)]
    pub grpc_compression: GrpcCompressionConfig,
}

/// `[temporal] grpc_compression`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrpcCompressionConfig {
    #[default]
    None,
    Gzip,
}

impl GrpcCompressionConfig {
    pub fn sdk(self) -> temporalio_client::GrpcCompression {
        match self {
            GrpcCompressionConfig::None => temporalio_client::GrpcCompression::None,
            GrpcCompressionConfig::Gzip => temporalio_client::GrpcCompression::Gzip,
        }
    }
}

fn default_namespace() -> String {
    "default".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path/payflow.db` or `postgres://user@host/db`
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// Where the ingress listens (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The base URL channels reach the ingress at (notify URLs are built from it).
    pub public_url: url::Url,
    /// Largest accepted notification body.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// When non-empty, only these source addresses may post notifications.
    #[serde(default)]
    pub allowed_ips: Vec<IpAddr>,
    /// Notifications whose `notify_time` is further than this from now are refused.
    #[serde(default = "default_notify_window")]
    pub notify_time_window_secs: u64,
}

fn default_max_body() -> usize {
    64 * 1024
}

fn default_notify_window() -> u64 {
    3600
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics (`GET /metrics`) here when set: the Temporal SDK's
    /// (`temporal_*`) and payflow's business metrics (`payflow_*`).
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentConfig {
    /// Waits between active channel queries (ms); the last repeats until expiry.
    #[serde(default = "default_query_schedule")]
    pub query_schedule_ms: Vec<u64>,
    /// Percent of a payment's requested expiry that applies (1..=100); below 100 only in
    /// tests and demos.
    #[serde(default = "default_expiry_scale")]
    pub expiry_scale_percent: u32,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        PaymentConfig {
            query_schedule_ms: default_query_schedule(),
            expiry_scale_percent: default_expiry_scale(),
        }
    }
}

/// Payouts (withdrawals to external accounts).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutConfig {
    /// Payouts above this amount wait for an operator's `review` (delayed review, a risk
    /// control rule); none by default.
    pub review_above: Option<rust_decimal::Decimal>,
    /// How long a payout waits for review before it is rejected (ms); default one day.
    #[serde(default = "default_review_timeout")]
    pub review_timeout_ms: u64,
}

impl Default for PayoutConfig {
    fn default() -> Self {
        PayoutConfig {
            review_above: None,
            review_timeout_ms: default_review_timeout(),
        }
    }
}

fn default_review_timeout() -> u64 {
    24 * 3600 * 1000
}

/// `[recon]`: reconciliation of the channels' daily statements.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconConfig {
    /// Waits between attempts to get a statement the channel has not generated yet (ms); the
    /// last repeats until the deadline.
    #[serde(default = "default_statement_retry")]
    pub statement_retry_ms: Vec<u64>,
    /// How long a run keeps asking before it is parked `Manual` for an operator (ms).
    #[serde(default = "default_statement_deadline")]
    pub statement_deadline_ms: u64,
    /// Create (or update) the Temporal Schedule `recon-daily/{channel}` of every enabled
    /// channel at start-up: yesterday's statement, every day at `schedule_hour`.
    #[serde(default)]
    pub schedule: bool,
    /// The hour (0-23, Beijing time) the daily runs start.
    #[serde(default = "default_schedule_hour")]
    pub schedule_hour: u32,
    /// Differences checked with the channel per activity.
    #[serde(default = "default_recon_page_size")]
    pub page_size: u32,
    /// Channel queries in flight at once while checking them.
    #[serde(default = "default_recon_check_concurrency")]
    pub check_concurrency: usize,
}

impl Default for ReconConfig {
    fn default() -> Self {
        ReconConfig {
            statement_retry_ms: default_statement_retry(),
            statement_deadline_ms: default_statement_deadline(),
            schedule: false,
            schedule_hour: default_schedule_hour(),
            page_size: default_recon_page_size(),
            check_concurrency: default_recon_check_concurrency(),
        }
    }
}

fn default_statement_retry() -> Vec<u64> {
    payflow_activities::ReconSettings::default().statement_retry_ms
}

fn default_statement_deadline() -> u64 {
    payflow_activities::ReconSettings::default().statement_deadline_ms
}

fn default_schedule_hour() -> u32 {
    // Alipay's and WeChat Pay's bills of a day are there by 09:00-10:00 the next morning.
    10
}

fn default_recon_page_size() -> u32 {
    payflow_activities::ReconSettings::default().page_size
}

fn default_recon_check_concurrency() -> usize {
    payflow_activities::ReconSettings::default().check_concurrency
}

fn default_expiry_scale() -> u32 {
    100
}

fn default_query_schedule() -> Vec<u64> {
    payflow_activities::PaymentTiming::default().query_schedule_ms
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Waits before each retry of a merchant callback (ms).
    #[serde(default = "default_notify_schedule")]
    pub retry_schedule_ms: Vec<u64>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_total_timeout")]
    pub total_timeout_ms: u64,
    /// A Notification workflow continues as new past this many history events.
    #[serde(default = "default_continue_as_new_after")]
    pub continue_as_new_after_events: u32,
    /// The platform's RSA key (PEM or base64 DER) signing `payflow-signature-rsa` for
    /// merchants with `sign_rsa = true`; `payflow keys public` prints its public half.
    pub platform_private_key: Option<SecretRef>,
    /// Deliveries under way to one merchant at once, per worker; more wait in its line.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight_per_merchant: u32,
    /// Consecutive failed attempts that open a merchant's circuit breaker.
    #[serde(default = "default_failures_to_open")]
    pub breaker_failures_to_open: u32,
    /// How long an opened breaker stays open before a probe (doubles on failed probes).
    #[serde(default = "default_breaker_open")]
    pub breaker_open_ms: u64,
    /// How long a delivery waiting in a busy merchant's line sleeps if no wake comes (the
    /// gate normally wakes it as soon as the merchant has room).
    #[serde(default = "default_busy_fallback")]
    pub busy_fallback_ms: u64,
}

fn default_max_in_flight() -> u32 {
    GatePolicy::default().max_in_flight
}

fn default_failures_to_open() -> u32 {
    GatePolicy::default().failures_to_open
}

fn default_breaker_open() -> u64 {
    GatePolicy::default().open_for.as_millis() as u64
}

fn default_busy_fallback() -> u64 {
    GatePolicy::default().busy_wait.as_millis() as u64
}

fn default_continue_as_new_after() -> u32 {
    payflow_activities::services::DEFAULT_CONTINUE_AFTER_EVENTS
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            retry_schedule_ms: default_notify_schedule(),
            connect_timeout_ms: default_connect_timeout(),
            total_timeout_ms: default_total_timeout(),
            continue_as_new_after_events: default_continue_as_new_after(),
            platform_private_key: None,
            max_in_flight_per_merchant: default_max_in_flight(),
            breaker_failures_to_open: default_failures_to_open(),
            breaker_open_ms: default_breaker_open(),
            busy_fallback_ms: default_busy_fallback(),
        }
    }
}

fn default_notify_schedule() -> Vec<u64> {
    payflow_workflows::schedule::DEFAULT_NOTIFY_SCHEDULE_SECS
        .iter()
        .map(|s| s * 1000)
        .collect()
}

fn default_connect_timeout() -> u64 {
    3000
}

fn default_total_timeout() -> u64 {
    10_000
}

/// `[codec]`: payload encryption (AES-256-GCM) of what payflow writes into Temporal history.
/// The workers, every client and the codec server of a deployment share these keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodecConfig {
    /// The key new payloads are encrypted under.
    pub current_key_id: String,
    /// Every key history may still hold payloads of: the current one and the keys it
    /// replaced, kept until no open workflow or retained history uses them.
    pub keys: Vec<CodecKeyConfig>,
    /// `payflow codec-server`: the Temporal UI's and CLI's remote decoder.
    pub server: Option<CodecServerConfig>,
}

/// One key: 32 bytes as base64, in a file (`key_file`, relative to the config file) or an
/// environment variable (`key_env`). Never inline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodecKeyConfig {
    pub id: String,
    pub key_file: Option<PathBuf>,
    pub key_env: Option<String>,
}

/// `[codec.server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodecServerConfig {
    /// Where `payflow codec-server` listens.
    #[serde(default = "default_codec_listen")]
    pub listen: SocketAddr,
    /// The token operators present as `Authorization: Bearer <token>` (at least 16
    /// characters); anything else is refused with 401.
    pub auth_token: SecretRef,
    /// Browser origins allowed to call the server (the Temporal UI, e.g.
    /// `http://localhost:8233`); none by default (CLI use only).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

fn default_codec_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8089))
}

impl CodecKeyConfig {
    fn secret(&self) -> Option<SecretRef> {
        match (&self.key_file, &self.key_env) {
            (Some(p), None) => Some(SecretRef::File(p.clone())),
            (None, Some(v)) => Some(SecretRef::Env(v.clone())),
            _ => None,
        }
    }
}

impl CodecConfig {
    /// Reads the keys and builds the codec. Errors name the key, never its content.
    pub fn load(&self) -> Result<payflow_client::EncryptionCodec, ConfigError> {
        let mut keys = Vec::with_capacity(self.keys.len());
        for (i, k) in self.keys.iter().enumerate() {
            let name = format!("codec.keys[{i}]");
            let Some(secret) = k.secret() else {
                return Err(key_err(name, "needs exactly one of key_file or key_env"));
            };
            let text = secret.load(&name)?;
            keys.push(
                payflow_client::EncryptionKey::from_base64(&k.id, &text)
                    .map_err(|e| key_err(&name, e.to_string()))?,
            );
        }
        payflow_client::EncryptionCodec::new(&self.current_key_id, keys)
            .map_err(|e| key_err("codec.current_key_id", e.to_string()))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut ids = std::collections::BTreeSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            if !payflow_client::codec::valid_key_id(&k.id) {
                return Err(key_err(
                    format!("codec.keys[{i}].id"),
                    "1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
            if !ids.insert(k.id.as_str()) {
                return Err(key_err(format!("codec.keys[{i}].id"), "duplicate key id"));
            }
            if k.secret().is_none() {
                return Err(key_err(
                    format!("codec.keys[{i}]"),
                    "needs exactly one of key_file or key_env",
                ));
            }
        }
        if !ids.contains(self.current_key_id.as_str()) {
            return Err(key_err(
                "codec.current_key_id",
                format!("no key with id {:?} in codec.keys", self.current_key_id),
            ));
        }
        if let Some(server) = &self.server {
            for (i, origin) in server.allowed_origins.iter().enumerate() {
                let same = url::Url::parse(origin)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .map(|u| u.origin().ascii_serialization());
                if same.as_deref() != Some(origin.trim_end_matches('/')) {
                    return Err(key_err(
                        format!("codec.server.allowed_origins[{i}]"),
                        "must be an origin: scheme://host[:port], no path",
                    ));
                }
            }
        }
        Ok(())
    }

    fn resolve(&mut self, base: &Path) {
        for k in &mut self.keys {
            if let Some(p) = &mut k.key_file
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
        }
        if let Some(server) = &mut self.server {
            server.auth_token.resolve(base);
        }
    }
}

/// Where a secret comes from. Never the secret itself.
#[derive(Clone)]
pub enum SecretRef {
    /// A file path (relative paths are relative to the config file).
    File(PathBuf),
    /// An environment variable name.
    Env(String),
}

/// The only accepted shapes are `{ file = "..." }` and `{ env = "..." }`. Anything else is
/// refused without echoing it: an inline value is most likely the secret itself.
impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("{ file = \"path\" } or { env = \"VAR\" } (secrets are never inline)")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(
                    "an inline value is not accepted here; use { file = \"path\" } or { env = \"VAR\" }",
                ))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SecretRef, A::Error> {
                let key: Option<String> = map.next_key()?;
                let value: String = match key.as_deref() {
                    Some("file") | Some("env") => map.next_value()?,
                    _ => {
                        return Err(serde::de::Error::custom(
                            "expected exactly one of `file` or `env`",
                        ));
                    }
                };
                if map.next_key::<String>()?.is_some() {
                    return Err(serde::de::Error::custom(
                        "expected exactly one of `file` or `env`",
                    ));
                }
                Ok(match key.as_deref() {
                    Some("file") => SecretRef::File(PathBuf::from(value)),
                    _ => SecretRef::Env(value),
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
            SecretRef::Env(v) => write!(f, "env:{v}"),
        }
    }
}

impl SecretRef {
    /// Reads the secret. Errors name the reference, never the content.
    pub fn load(&self, key: &str) -> Result<SecretString, ConfigError> {
        let text = match self {
            SecretRef::File(p) => std::fs::read_to_string(p)
                .map_err(|e| key_err(key, format!("cannot read {}: {e}", p.display())))?,
            SecretRef::Env(v) => std::env::var(v)
                .map_err(|_| key_err(key, format!("environment variable {v} is not set")))?,
        };
        Ok(SecretString::from(text.trim().to_string()))
    }

    fn resolve(&mut self, base: &Path) {
        if let SecretRef::File(p) = self
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// Alipay OpenAPI (RSA2).
    Alipay,
    /// WeChat Pay API v3, direct merchant, Native (QR) payments.
    Wechat,
}

/// One channel. The first four keys mean the same for every kind: where the channel's API is,
/// the app we are, the key that signs our requests and the key that verifies the channel's
/// answers and notifications. WeChat Pay adds `mchid`, `merchant_serial_no`,
/// `channel_public_key_serial` and `api_v3_key` (required for it, refused for Alipay).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    /// Alipay: the gateway (`https://openapi.alipay.com/gateway.do`); WeChat Pay: the API base
    /// URL (`https://api.mch.weixin.qq.com`).
    pub gateway_url: url::Url,
    /// Alipay `app_id`; WeChat Pay `appid` (the app the payments are for).
    pub app_id: String,
    /// Our private key (PEM or base64 DER): the Alipay app key, or the WeChat Pay merchant API
    /// key (`apiclient_key.pem`).
    pub app_private_key: SecretRef,
    /// The channel's public key (PEM or base64 DER): Alipay's, or the WeChat Pay platform
    /// public key.
    pub channel_public_key: SecretRef,
    /// WeChat Pay: the merchant id (`mchid`).
    pub mchid: Option<String>,
    /// WeChat Pay: the serial number of the merchant API certificate of `app_private_key`.
    pub merchant_serial_no: Option<String>,
    /// WeChat Pay: the serial (`Wechatpay-Serial`) naming `channel_public_key`: a platform
    /// certificate serial or a `PUB_KEY_ID_...` id.
    pub channel_public_key_serial: Option<String>,
    /// WeChat Pay: the API v3 key (32 characters) that encrypts notification resources.
    pub api_v3_key: Option<SecretRef>,
    /// A disabled channel routes nothing (its notifications are still accepted).
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_total_timeout")]
    pub request_timeout_ms: u64,
    /// What the channel charges us per payment, as a fraction (e.g. "0.006"; at most six
    /// decimals): reconciliation expects each statement line's fee to be this rate of its
    /// amount. Fees are not compared for a channel without one.
    pub fee_rate: Option<rust_decimal::Decimal>,
}

#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MerchantStatusConfig {
    #[default]
    Enabled,
    Blocked,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MerchantConfig {
    pub id: String,
    #[serde(default)]
    pub status: MerchantStatusConfig,
    pub notify_url: Option<url::Url>,
    /// Hosts notify URLs may point at; defaults to the notify URL's host.
    #[serde(default)]
    pub allowed_notify_hosts: Vec<String>,
    /// `whsec_...` Standard Webhooks secret.
    pub webhook_secret: SecretRef,
    /// Exact 2xx body required for success (e.g. `success`), when set.
    pub expect_body: Option<String>,
    /// Risk: largest single payment (decimal, in the payment's currency).
    pub max_amount: Option<rust_decimal::Decimal>,
    /// Risk: rolling 24-hour total of live payments (decimal).
    pub daily_limit: Option<rust_decimal::Decimal>,
    /// Risk: most payments created in one minute.
    pub max_payments_per_minute: Option<u32>,
    /// Plain http notify URLs: `true` for any allowed host, or a list of hosts; https only
    /// when absent (dev and test configs only).
    #[serde(default)]
    pub allow_plain_http: PlainHttpConfig,
    /// Callbacks may reach loopback, private, link-local and other non-public addresses (dev
    /// and test configs, or a merchant on a private line). Cloud metadata stays refused.
    #[serde(default)]
    pub allow_private_network: bool,
    /// An extra CA certificate (PEM) trusted for this merchant's server, on top of the system
    /// roots; relative to the config file.
    pub tls_ca_file: Option<PathBuf>,
    /// SHA-256 fingerprints of the server certificate (one or a list, for rotation). Alone,
    /// a matching certificate is trusted by itself (how a self-signed server is trusted);
    /// with `tls_ca_file`, both the chain and the pin must hold.
    #[serde(default, deserialize_with = "one_or_many")]
    pub tls_pinned_cert_sha256: Vec<String>,
    /// HTTP forward proxy for this merchant's callbacks (`http://host:port`; https callbacks
    /// are tunnelled with CONNECT); direct when absent. The proxy resolves the merchant's
    /// name, so its own egress policy applies to names; IP-literal URLs are checked here.
    pub proxy: Option<url::Url>,
    /// Per-merchant timeouts; `[notify]`'s when absent.
    pub connect_timeout_ms: Option<u64>,
    pub total_timeout_ms: Option<u64>,
    /// Also sign callbacks with the platform RSA key (`payflow-signature-rsa`).
    #[serde(default)]
    pub sign_rsa: bool,
}

/// `allow_plain_http = true | false | ["host", ...]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PlainHttpConfig {
    #[default]
    Never,
    AnyHost,
    Hosts(Vec<String>),
}

impl<'de> Deserialize<'de> for PlainHttpConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PlainHttpConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or a list of host names")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<PlainHttpConfig, E> {
                Ok(if v {
                    PlainHttpConfig::AnyHost
                } else {
                    PlainHttpConfig::Never
                })
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<PlainHttpConfig, A::Error> {
                let mut hosts = Vec::new();
                while let Some(h) = seq.next_element::<String>()? {
                    hosts.push(h);
                }
                Ok(PlainHttpConfig::Hosts(hosts))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element::<String>()? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductConfig {
    pub id: String,
    pub channel: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Amount range the product accepts (decimal strings), when set.
    pub min_amount: Option<rust_decimal::Decimal>,
    pub max_amount: Option<rust_decimal::Decimal>,
    /// Our fee as a fraction of each payment (e.g. "0.006"), default none.
    #[serde(default)]
    pub fee_rate: rust_decimal::Decimal,
}

fn yes() -> bool {
    true
}

impl Config {
    /// Reads `path`, applies environment overrides from `env`, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Self::parse(&text, &shown, &base, env)
    }

    pub fn parse(
        text: &str,
        shown: &str,
        base: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: shown.to_string(),
            message: e.message().to_string(),
        })?;
        for (k, v) in env {
            let path: Option<Vec<String>> = match k.as_str() {
                "TEMPORAL_ADDRESS" => Some(vec!["temporal".into(), "address".into()]),
                "DATABASE_URL" => Some(vec!["database".into(), "url".into()]),
                _ => k
                    .strip_prefix("PAYFLOW_")
                    .filter(|rest| rest.contains("__"))
                    .map(|rest| rest.split("__").map(|s| s.to_ascii_lowercase()).collect()),
            };
            if let Some(path) = path {
                set_path(&mut value, &path, parse_env_value(&v));
            }
        }
        let de = toml::Value::Table(value);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            key_err(
                if key == "." { "(root)".into() } else { key },
                e.inner().to_string(),
            )
        })?;
        for c in &mut config.channels {
            c.app_private_key.resolve(base);
            c.channel_public_key.resolve(base);
            if let Some(k) = &mut c.api_v3_key {
                k.resolve(base);
            }
        }
        for m in &mut config.merchants {
            m.webhook_secret.resolve(base);
            if let Some(p) = &mut m.tls_ca_file
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
        }
        if let Some(k) = &mut config.notify.platform_private_key {
            k.resolve(base);
        }
        if let Some(c) = &mut config.codec {
            c.resolve(base);
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        url::Url::parse(&self.temporal.address)
            .map_err(|e| key_err("temporal.address", e.to_string()))?;
        self.worker.validate()?;
        if !(self.database.url.starts_with("sqlite:") || self.database.url.starts_with("postgres"))
        {
            return Err(key_err(
                "database.url",
                "must start with sqlite: or postgres:",
            ));
        }
        if self.payment.query_schedule_ms.is_empty() || self.payment.query_schedule_ms.contains(&0)
        {
            return Err(key_err(
                "payment.query_schedule_ms",
                "must be non-empty, each > 0",
            ));
        }
        if !(1..=100).contains(&self.payment.expiry_scale_percent) {
            return Err(key_err("payment.expiry_scale_percent", "must be 1 to 100"));
        }
        if self.notify.retry_schedule_ms.contains(&0) {
            return Err(key_err("notify.retry_schedule_ms", "each wait must be > 0"));
        }
        if self.notify.connect_timeout_ms == 0 {
            return Err(key_err("notify.connect_timeout_ms", "must be > 0"));
        }
        if self.notify.total_timeout_ms == 0 {
            return Err(key_err("notify.total_timeout_ms", "must be > 0"));
        }
        for (key, value) in [
            (
                "notify.max_in_flight_per_merchant",
                u64::from(self.notify.max_in_flight_per_merchant),
            ),
            (
                "notify.breaker_failures_to_open",
                u64::from(self.notify.breaker_failures_to_open),
            ),
            ("notify.breaker_open_ms", self.notify.breaker_open_ms),
            ("notify.busy_fallback_ms", self.notify.busy_fallback_ms),
        ] {
            if value == 0 {
                return Err(key_err(key, "must be > 0"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            if !names.insert(c.name.clone()) {
                return Err(key_err(
                    format!("channels[{i}].name"),
                    "duplicate channel name",
                ));
            }
            validate_channel_kind(i, c)?;
            if let Some(rate) = c.fee_rate {
                payflow_activities::recon::ChannelFeeRate::new(rate)
                    .map_err(|e| key_err(format!("channels[{i}].fee_rate"), e))?;
            }
        }
        self.validate_recon()?;
        for (i, p) in self.products.iter().enumerate() {
            payflow_client::ProductId::parse(&p.id)
                .map_err(|e| key_err(format!("products[{i}].id"), e.to_string()))?;
            if !names.contains(&p.channel) {
                return Err(key_err(
                    format!("products[{i}].channel"),
                    format!("no channel named {:?}", p.channel),
                ));
            }
            if p.fee_rate < rust_decimal::Decimal::ZERO || p.fee_rate >= rust_decimal::Decimal::ONE
            {
                return Err(key_err(
                    format!("products[{i}].fee_rate"),
                    "must be at least 0 and below 1",
                ));
            }
        }
        for (i, m) in self.merchants.iter().enumerate() {
            payflow_client::MerchantId::parse(&m.id)
                .map_err(|e| key_err(format!("merchants[{i}].id"), e.to_string()))?;
            self.validate_merchant_delivery(i, m)?;
        }
        if let Some(c) = &self.codec {
            c.validate()?;
        }
        Ok(())
    }
    fn validate_recon(&self) -> Result<(), ConfigError> {
        let r = &self.recon;
        if r.statement_retry_ms.is_empty() || r.statement_retry_ms.contains(&0) {
            return Err(key_err(
                "recon.statement_retry_ms",
                "must be non-empty, each > 0",
            ));
        }
        if r.statement_deadline_ms == 0 {
            return Err(key_err("recon.statement_deadline_ms", "must be > 0"));
        }
        if r.schedule_hour > 23 {
            return Err(key_err("recon.schedule_hour", "must be 0 to 23"));
        }
        if !(1..=10_000).contains(&r.page_size) {
            return Err(key_err("recon.page_size", "must be 1 to 10000"));
        }
        if !(1..=64).contains(&r.check_concurrency) {
            return Err(key_err("recon.check_concurrency", "must be 1 to 64"));
        }
        Ok(())
    }

    /// The delivery settings of `merchants[i]` (files are read at start-up, not here).
    fn validate_merchant_delivery(&self, i: usize, m: &MerchantConfig) -> Result<(), ConfigError> {
        let key = |k: &str| format!("merchants[{i}].{k}");
        for pin in &m.tls_pinned_cert_sha256 {
            payflow_activities::notify::trust::parse_pin(pin)
                .map_err(|e| key_err(key("tls_pinned_cert_sha256"), e.to_string()))?;
        }
        if let PlainHttpConfig::Hosts(hosts) = &m.allow_plain_http
            && hosts.iter().any(|h| h.trim().is_empty())
        {
            return Err(key_err(
                key("allow_plain_http"),
                "host names must not be empty",
            ));
        }
        if let Some(p) = &m.proxy {
            // An http forward proxy: https callbacks are CONNECT-tunnelled through it, so TLS
            // (and the merchant's CA or pin) stays end to end between payflow and the merchant.
            if p.scheme() != "http" || p.host_str().is_none() {
                return Err(key_err(key("proxy"), "must be http://host:port"));
            }
            // Credentials are secrets: never inline in the config file.
            if !p.username().is_empty() || p.password().is_some() {
                return Err(key_err(key("proxy"), "must not carry credentials"));
            }
        }
        if m.connect_timeout_ms == Some(0) {
            return Err(key_err(key("connect_timeout_ms"), "must be > 0"));
        }
        if m.total_timeout_ms == Some(0) {
            return Err(key_err(key("total_timeout_ms"), "must be > 0"));
        }
        if m.sign_rsa && self.notify.platform_private_key.is_none() {
            return Err(key_err(
                key("sign_rsa"),
                "needs notify.platform_private_key (the key that signs payflow-signature-rsa)",
            ));
        }
        Ok(())
    }
}

/// The keys only one kind of channel has: present and non-empty for WeChat Pay, absent for
/// Alipay.
fn validate_channel_kind(i: usize, c: &ChannelConfig) -> Result<(), ConfigError> {
    let wechat_only = [
        ("mchid", c.mchid.as_deref().map(str::trim)),
        (
            "merchant_serial_no",
            c.merchant_serial_no.as_deref().map(str::trim),
        ),
        (
            "channel_public_key_serial",
            c.channel_public_key_serial.as_deref().map(str::trim),
        ),
        // A reference, never the key: present is all that can be checked before start-up.
        ("api_v3_key", c.api_v3_key.as_ref().map(|_| "set")),
    ];
    for (name, value) in wechat_only {
        let key = format!("channels[{i}].{name}");
        match (c.kind, value) {
            (ChannelKind::Wechat, None | Some("")) => {
                return Err(key_err(key, "required for kind = \"wechat\""));
            }
            (ChannelKind::Alipay, Some(_)) => {
                return Err(key_err(key, "only for kind = \"wechat\""));
            }
            _ => {}
        }
    }
    if c.kind == ChannelKind::Wechat && !matches!(c.gateway_url.scheme(), "http" | "https") {
        return Err(key_err(
            format!("channels[{i}].gateway_url"),
            "must be an http(s) address",
        ));
    }
    Ok(())
}

fn parse_env_value(v: &str) -> toml::Value {
    // A bare value parses as TOML when it is one (numbers, booleans, arrays), else a string.
    toml::from_str::<toml::Table>(&format!("v = {v}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        cur = entry.as_table_mut().expect("just made a table");
    }
    cur.insert(last.clone(), value);
}

/// Exposes a secret string for building a key; kept here so call sites are easy to audit.
pub fn expose(secret: &SecretString) -> &str {
    secret.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[temporal]
address = "http://127.0.0.1:7233"
[database]
url = "sqlite://x.db"
[ingress]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8088"
"#;

    fn parse(text: &str, env: Vec<(&str, &str)>) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            "test.toml",
            Path::new("/etc/payflow"),
            env.into_iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn minimal_config_loads_with_defaults() {
        let c = parse(MINIMAL, vec![]).unwrap();
        assert_eq!(c.temporal.namespace, "default");
        assert_eq!(c.ingress.max_body_bytes, 65536);
        assert_eq!(c.notify.retry_schedule_ms.len(), 15);
    }

    #[test]
    fn bad_keys_are_named() {
        let err = parse(
            &MINIMAL.replace("listen = \"127.0.0.1:0\"", "listen = \"nope\""),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ingress.listen"), "{err}");
        let err = parse(
            &format!("{MINIMAL}\n[payment]\nquery_schedule = [1]\n"),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("query_schedule"), "{err}");
        let err = parse(
            &MINIMAL.replace("[database]\nurl = \"sqlite://x.db\"", ""),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("database"), "{err}");
    }

    #[test]
    fn env_overrides_apply() {
        let c = parse(
            MINIMAL,
            vec![
                ("DATABASE_URL", "postgres://u@h/db"),
                ("PAYFLOW_PAYMENT__QUERY_SCHEDULE_MS", "[5, 6]"),
                ("PAYFLOW_TEMPORAL__NAMESPACE", "prod"),
                ("UNRELATED", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.database.url, "postgres://u@h/db");
        assert_eq!(c.payment.query_schedule_ms, vec![5, 6]);
        assert_eq!(c.temporal.namespace, "prod");
    }

    #[test]
    fn secret_refs_resolve_relative_to_the_config_file_and_never_print() {
        let text = format!(
            "{MINIMAL}\n[[merchants]]\nid = \"m1\"\nwebhook_secret = {{ file = \"keys/m1\" }}\n"
        );
        let c = parse(&text, vec![]).unwrap();
        match &c.merchants[0].webhook_secret {
            SecretRef::File(p) => assert_eq!(p, Path::new("/etc/payflow/keys/m1")),
            other => panic!("{other:?}"),
        }
        let inline =
            format!("{MINIMAL}\n[[merchants]]\nid = \"m1\"\nwebhook_secret = \"whsec_abc\"\n");
        let err = parse(&inline, vec![]).unwrap_err().to_string();
        assert!(err.contains("merchants[0].webhook_secret"), "{err}");
        assert!(!err.contains("whsec_abc"), "{err}");
    }

    fn merchant(extra: &str) -> String {
        format!(
            "{MINIMAL}\n[[merchants]]\nid = \"m1\"\nnotify_url = \"https://shop.example/cb\"\n\
             webhook_secret = {{ file = \"keys/m1\" }}\n{extra}\n"
        )
    }

    #[test]
    fn merchant_delivery_settings_parse() {
        let pin = "AB:".repeat(31) + "AB";
        let text = format!(
            "{}\n[notify]\nplatform_private_key = {{ file = \"keys/platform.pem\" }}\n",
            merchant(&format!(
                "allow_plain_http = [\"127.0.0.1\"]\nallow_private_network = true\n\
                 tls_ca_file = \"certs/m1-ca.pem\"\ntls_pinned_cert_sha256 = \"{pin}\"\n\
                 proxy = \"http://10.0.0.5:3128\"\nconnect_timeout_ms = 500\n\
                 total_timeout_ms = 2000\nsign_rsa = true"
            ))
        );
        let c = parse(&text, vec![]).unwrap();
        let m = &c.merchants[0];
        assert_eq!(
            m.allow_plain_http,
            PlainHttpConfig::Hosts(vec!["127.0.0.1".into()])
        );
        assert!(m.allow_private_network && m.sign_rsa);
        assert_eq!(
            m.tls_ca_file.as_deref(),
            Some(Path::new("/etc/payflow/certs/m1-ca.pem"))
        );
        assert_eq!(m.tls_pinned_cert_sha256, vec![pin]);
        assert_eq!(m.proxy.as_ref().unwrap().as_str(), "http://10.0.0.5:3128/");
        assert_eq!(
            (m.connect_timeout_ms, m.total_timeout_ms),
            (Some(500), Some(2000))
        );
        assert!(matches!(
            &c.notify.platform_private_key,
            Some(SecretRef::File(p)) if p == Path::new("/etc/payflow/keys/platform.pem")
        ));

        // Defaults: https only, public addresses only, direct, no RSA.
        let c = parse(&merchant(""), vec![]).unwrap();
        let m = &c.merchants[0];
        assert_eq!(m.allow_plain_http, PlainHttpConfig::Never);
        assert!(!m.allow_private_network && !m.sign_rsa && m.proxy.is_none());
        let c = parse(&merchant("allow_plain_http = true"), vec![]).unwrap();
        assert_eq!(c.merchants[0].allow_plain_http, PlainHttpConfig::AnyHost);
    }

    #[test]
    fn bad_merchant_delivery_settings_are_named() {
        for (extra, key) in [
            (
                "tls_pinned_cert_sha256 = [\"abcd\"]",
                "merchants[0].tls_pinned_cert_sha256",
            ),
            (
                "allow_plain_http = \"yes\"",
                "merchants[0].allow_plain_http",
            ),
            ("proxy = \"socks5://10.0.0.5:1080\"", "merchants[0].proxy"),
            ("proxy = \"https://10.0.0.5:3128\"", "merchants[0].proxy"),
            (
                "proxy = \"http://user:pw@10.0.0.5:3128\"",
                "merchants[0].proxy",
            ),
            ("total_timeout_ms = 0", "merchants[0].total_timeout_ms"),
            // RSA signing without the platform key.
            ("sign_rsa = true", "merchants[0].sign_rsa"),
        ] {
            let err = parse(&merchant(extra), vec![]).unwrap_err().to_string();
            assert!(err.contains(key), "{extra}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
    }

    const WECHAT: &str = r#"
[[channels]]
name = "wechat"
kind = "wechat"
gateway_url = "https://api.mch.weixin.qq.com"
app_id = "wxd678efh567hg6787"
mchid = "1230000109"
merchant_serial_no = "3775B6A45ACD588826D15E583A95F5DD2C6E8B5D"
app_private_key = { file = "keys/apiclient_key.pem" }
channel_public_key = { file = "keys/wechatpay_public.pem" }
channel_public_key_serial = "PUB_KEY_ID_0112340000000000000000000000"
api_v3_key = { env = "WECHAT_API_V3_KEY" }
"#;

    #[test]
    fn a_wechat_channel_parses() {
        let c = parse(&format!("{MINIMAL}{WECHAT}"), vec![]).unwrap();
        let w = &c.channels[0];
        assert_eq!(w.kind, ChannelKind::Wechat);
        assert_eq!(w.mchid.as_deref(), Some("1230000109"));
        assert_eq!(
            w.channel_public_key_serial.as_deref(),
            Some("PUB_KEY_ID_0112340000000000000000000000")
        );
        assert!(matches!(&w.api_v3_key, Some(SecretRef::Env(v)) if v == "WECHAT_API_V3_KEY"));
        assert!(matches!(
            &w.app_private_key,
            SecretRef::File(p) if p == Path::new("/etc/payflow/keys/apiclient_key.pem")
        ));
        // A file reference resolves like the other secrets.
        let file = WECHAT.replace(
            "{ env = \"WECHAT_API_V3_KEY\" }",
            "{ file = \"keys/apiv3.key\" }",
        );
        let c = parse(&format!("{MINIMAL}{file}"), vec![]).unwrap();
        assert!(matches!(
            &c.channels[0].api_v3_key,
            Some(SecretRef::File(p)) if p == Path::new("/etc/payflow/keys/apiv3.key")
        ));
    }

    #[test]
    fn wechat_keys_are_required_for_wechat_and_refused_for_alipay() {
        for (line, key) in [
            ("mchid = \"1230000109\"\n", "channels[0].mchid"),
            (
                "merchant_serial_no = \"3775B6A45ACD588826D15E583A95F5DD2C6E8B5D\"\n",
                "channels[0].merchant_serial_no",
            ),
            (
                "channel_public_key_serial = \"PUB_KEY_ID_0112340000000000000000000000\"\n",
                "channels[0].channel_public_key_serial",
            ),
            (
                "api_v3_key = { env = \"WECHAT_API_V3_KEY\" }\n",
                "channels[0].api_v3_key",
            ),
        ] {
            let missing = WECHAT.replace(line, "");
            assert_ne!(missing, WECHAT, "{line}");
            let err = parse(&format!("{MINIMAL}{missing}"), vec![])
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains("required"), "{err}");
            let alipay = format!(
                "{MINIMAL}\n[[channels]]\nname = \"alipay\"\nkind = \"alipay\"\n\
                 gateway_url = \"https://openapi.alipay.com/gateway.do\"\napp_id = \"2021\"\n\
                 app_private_key = {{ file = \"a\" }}\nchannel_public_key = {{ file = \"b\" }}\n{line}"
            );
            let err = parse(&alipay, vec![]).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("only for"), "{err}");
        }
        // An inline API v3 key is refused without echoing it.
        let inline = WECHAT.replace(
            "{ env = \"WECHAT_API_V3_KEY\" }",
            "\"0123456789abcdefghijklmnopqrstuv\"",
        );
        let err = parse(&format!("{MINIMAL}{inline}"), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("channels[0].api_v3_key"), "{err}");
        assert!(!err.contains("0123456789abcdef"), "{err}");
    }
}

#[cfg(test)]
mod codec_tests {
    use super::*;

    const MINIMAL: &str = r#"
[temporal]
address = "http://127.0.0.1:7233"
[database]
url = "sqlite://x.db"
[ingress]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:8088"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            "test.toml",
            Path::new("/etc/payflow"),
            std::iter::empty(),
        )
    }

    #[test]
    fn codec_keys_parse_resolve_and_load() {
        let c = parse(&format!(
            "{MINIMAL}\n[codec]\ncurrent_key_id = \"k2\"\nkeys = [\n  \
             {{ id = \"k1\", key_file = \"keys/k1\" }},\n  \
             {{ id = \"k2\", key_env = \"PAYFLOW_TEST_CODEC_K2_UNSET\" }},\n]\n\
             [codec.server]\nauth_token = {{ env = \"T\" }}\n\
             allowed_origins = [\"http://localhost:8233\"]\n"
        ))
        .unwrap();
        let codec = c.codec.as_ref().unwrap();
        assert_eq!(codec.current_key_id, "k2");
        assert_eq!(
            codec.keys[0].key_file.as_deref(),
            Some(Path::new("/etc/payflow/keys/k1"))
        );
        let server = codec.server.as_ref().unwrap();
        assert_eq!(server.listen, default_codec_listen());
        // Loading reads the keys: a missing file is named, never a key.
        let err = codec.load().unwrap_err().to_string();
        assert!(err.contains("codec.keys[0]"), "{err}");
        assert!(parse(MINIMAL).unwrap().codec.is_none(), "off by default");
    }

    #[test]
    fn codec_keys_load_from_files_and_bad_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("payflow-codec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = payflow_client::EncryptionKey::generate("k1").unwrap();
        std::fs::write(
            dir.join("k1"),
            secrecy::ExposeSecret::expose_secret(&good.to_base64()),
        )
        .unwrap();
        std::fs::write(dir.join("short"), "c2hvcnQ=").unwrap();
        let text = format!(
            "{MINIMAL}\n[codec]\ncurrent_key_id = \"k1\"\n\
             keys = [{{ id = \"k1\", key_file = \"k1\" }}]\n"
        );
        let c = Config::parse(&text, "t.toml", &dir, std::iter::empty()).unwrap();
        let codec = c.codec.unwrap().load().unwrap();
        assert_eq!(codec.current_key_id(), "k1");
        let text = text.replace("key_file = \"k1\"", "key_file = \"short\"");
        let c = Config::parse(&text, "t.toml", &dir, std::iter::empty()).unwrap();
        let err = c.codec.unwrap().load().unwrap_err().to_string();
        assert!(
            err.contains("codec.keys[0]") && err.contains("32 bytes"),
            "{err}"
        );
        assert!(!err.contains("c2hvcnQ"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_codec_settings_are_named() {
        for (section, key) in [
            (
                "current_key_id = \"k9\"\nkeys = [{ id = \"k1\", key_env = \"K\" }]",
                "codec.current_key_id",
            ),
            (
                "current_key_id = \"k1\"\nkeys = [{ id = \"k1\" }]",
                "codec.keys[0]",
            ),
            (
                "current_key_id = \"k1\"\nkeys = [{ id = \"k1\", key_env = \"K\", key_file = \"f\" }]",
                "codec.keys[0]",
            ),
            (
                "current_key_id = \"k1\"\nkeys = [{ id = \"k1\", key_env = \"K\" }, { id = \"k1\", key_env = \"L\" }]",
                "codec.keys[1].id",
            ),
            (
                "current_key_id = \"k 1\"\nkeys = [{ id = \"k 1\", key_env = \"K\" }]",
                "codec.keys[0].id",
            ),
            // An inline key is refused without echoing it.
            (
                "current_key_id = \"k1\"\nkeys = [{ id = \"k1\", key = \"QUJDRA==\" }]",
                "codec.keys[0]",
            ),
            (
                "current_key_id = \"k1\"\nkeys = [{ id = \"k1\", key_env = \"K\" }]\n\
                 [codec.server]\nauth_token = { env = \"T\" }\nallowed_origins = [\"http://ui/path\"]",
                "codec.server.allowed_origins[0]",
            ),
            (
                "current_key_id = \"k1\"\nkeys = [{ id = \"k1\", key_env = \"K\" }]\n\
                 [codec.server]\nauth_token = \"inline-token\"",
                "codec.server.auth_token",
            ),
        ] {
            let err = parse(&format!("{MINIMAL}\n[codec]\n{section}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{section}: {err}");
            assert!(
                !err.contains("QUJDRA") && !err.contains("inline-token"),
                "{err}"
            );
        }
    }
}
