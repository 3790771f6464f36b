//! Builds the application from configuration and runs it: the Temporal workers (one per task
//! queue), and the channel notification ingress. Ingress and workers stop together.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use payflow_activities::channels::Channels;
use payflow_activities::channels::alipay::{AlipayChannel, AlipayConfig};
use payflow_activities::crypto::rsa_keys::{RsaSigner, RsaVerifier};
use payflow_activities::crypto::webhook::WebhookSecret;
use payflow_activities::health::{ChannelHealth, HealthPolicy};
use payflow_activities::merchant_gate::{GatePolicy, MerchantGate};
use payflow_activities::merchants::{Merchant, MerchantStatus, Merchants, PlainHttp};
use payflow_activities::notify::guard::AddressPolicy;
use payflow_activities::notify::trust::{Trust, load_ca_file, parse_pin};
use payflow_activities::notify::{Deliverer, DeliveryPolicy, MerchantTransport};
use payflow_activities::routing::{Product, Routing};
use payflow_activities::store::Store;
use payflow_activities::{
    LedgerActivities, NotifyActivities, PaymentActivities, PaymentTiming, PayoutActivities,
    PayoutPolicy, ReconActivities, RefundActivities, Services, TransferActivities,
};
use payflow_client::definitions::task_queues;
use payflow_client::{MerchantId, Payflow, ProductId};
use payflow_workflows::{
    LedgerRead, Notification, Payment, Payout, ReconDaily, Reconciliation, Refund, Transfer,
};
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio::net::TcpListener;

use crate::config::{
    ChannelKind, Config, GrpcCompressionConfig, MerchantStatusConfig, PlainHttpConfig, expose,
};
use crate::ingress;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("database: {0}")]
    Store(#[from] payflow_activities::store::StoreError),
    #[error("key for {key}: {message}")]
    Key { key: String, message: String },
    #[error("cannot reach Temporal at {address}: {message}")]
    Temporal { address: String, message: String },
    #[error("worker: {0}")]
    Worker(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Everything the running process holds.
pub struct App {
    pub config: Config,
    pub services: Arc<Services>,
    pub client: Client,
    /// The payload codec of `[codec]` (the client and every worker encrypt with it).
    pub codec: Option<payflow_client::EncryptionCodec>,
    pub ingress_listener: TcpListener,
    pub ingress_addr: SocketAddr,
    /// Where the Prometheus endpoint (`telemetry.metrics_listen`) is bound, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The exporter's meter: the SDK runtime's metrics and payflow's go through it.
    metrics_exporter: Option<MetricsExporter>,
}

/// The running exporter; its HTTP server stops when this is dropped (the app ends).
struct MetricsExporter {
    meter: Arc<dyn temporalio_common::telemetry::metrics::CoreMeter>,
    server: tokio::task::AbortHandle,
}

impl Drop for MetricsExporter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Starts the SDK's Prometheus exporter on `addr`, with bucket bounds for payflow's histograms.
fn start_metrics_exporter(addr: SocketAddr) -> Result<(MetricsExporter, SocketAddr), StartupError> {
    use temporalio_common::telemetry::{HistogramBucketOverrides, PrometheusExporterOptions};
    let started = temporalio_common::telemetry::start_prometheus_metric_exporter(
        PrometheusExporterOptions::builder()
            .socket_addr(addr)
            .histogram_bucket_overrides(HistogramBucketOverrides {
                overrides: payflow_activities::metrics::histogram_buckets(),
            })
            .build(),
    )
    .map_err(|e| StartupError::Worker(format!("telemetry: metrics on {addr}: {e}")))?;
    tracing::info!(metrics = %started.bound_addr, "Prometheus metrics endpoint");
    let exporter = MetricsExporter {
        meter: started.meter,
        server: started.abort_handle,
    };
    Ok((exporter, started.bound_addr))
}

fn key_err(key: &str, e: impl std::fmt::Display) -> StartupError {
    StartupError::Key {
        key: key.to_string(),
        message: e.to_string(),
    }
}

/// Reads keys and secrets and builds the shared services.
pub async fn build_services(config: &Config) -> Result<Services, StartupError> {
    payflow_activities::tls::ensure_crypto_provider();
    let store = Store::connect(&config.database.url).await?;
    let mut channels = Channels::default();
    for (i, c) in config.channels.iter().enumerate() {
        let key = format!("channels[{i}]");
        match c.kind {
            ChannelKind::Alipay => {
                let private = c.app_private_key.load(&format!("{key}.app_private_key"))?;
                let public = c
                    .channel_public_key
                    .load(&format!("{key}.channel_public_key"))?;
                let cfg = AlipayConfig {
                    name: c.name.clone(),
                    gateway_url: c.gateway_url.clone(),
                    app_id: c.app_id.clone(),
                    app_private_key: RsaSigner::from_text(expose(&private), "app_private_key")
                        .map_err(|e| key_err(&format!("{key}.app_private_key"), e))?,
                    alipay_public_key: RsaVerifier::from_text(
                        expose(&public),
                        "channel_public_key",
                    )
                    .map_err(|e| key_err(&format!("{key}.channel_public_key"), e))?,
                    connect_timeout: Duration::from_millis(c.connect_timeout_ms),
                    request_timeout: Duration::from_millis(c.request_timeout_ms),
                };
                let channel = AlipayChannel::new(cfg).map_err(|e| key_err(&key, e))?;
                channels.insert(Arc::new(channel));
            }
            ChannelKind::Wechat => {
                use payflow_activities::channels::wechat::{ApiV3Key, WechatChannel, WechatConfig};
                // Config validation makes the WeChat-only keys present for this kind.
                let required = |value: &Option<String>, name: &str| {
                    value
                        .as_deref()
                        .map(|v| v.trim().to_string())
                        .ok_or_else(|| key_err(&format!("{key}.{name}"), "required"))
                };
                let private = c.app_private_key.load(&format!("{key}.app_private_key"))?;
                let public = c
                    .channel_public_key
                    .load(&format!("{key}.channel_public_key"))?;
                let api_v3_key = c
                    .api_v3_key
                    .as_ref()
                    .ok_or_else(|| key_err(&format!("{key}.api_v3_key"), "required"))?
                    .load(&format!("{key}.api_v3_key"))?;
                let cfg = WechatConfig {
                    name: c.name.clone(),
                    base_url: c.gateway_url.clone(),
                    mchid: required(&c.mchid, "mchid")?,
                    appid: c.app_id.clone(),
                    merchant_serial_no: required(&c.merchant_serial_no, "merchant_serial_no")?,
                    merchant_private_key: RsaSigner::from_text(expose(&private), "app_private_key")
                        .map_err(|e| key_err(&format!("{key}.app_private_key"), e))?,
                    platform_keys: vec![(
                        required(&c.channel_public_key_serial, "channel_public_key_serial")?,
                        RsaVerifier::from_text(expose(&public), "channel_public_key")
                            .map_err(|e| key_err(&format!("{key}.channel_public_key"), e))?,
                    )],
                    api_v3_key: ApiV3Key::from_text(expose(&api_v3_key))
                        .map_err(|e| key_err(&format!("{key}.api_v3_key"), e))?,
                    connect_timeout: Duration::from_millis(c.connect_timeout_ms),
                    request_timeout: Duration::from_millis(c.request_timeout_ms),
                };
                let channel = WechatChannel::new(cfg).map_err(|e| key_err(&key, e))?;
                channels.insert(Arc::new(channel));
            }
        }
    }
    let platform_key = match &config.notify.platform_private_key {
        Some(r) => {
            let key = "notify.platform_private_key";
            let text = r.load(key)?;
            Some(RsaSigner::from_text(expose(&text), key).map_err(|e| key_err(key, e))?)
        }
        None => None,
    };
    let defaults = DeliveryPolicy {
        connect_timeout: Duration::from_millis(config.notify.connect_timeout_ms),
        total_timeout: Duration::from_millis(config.notify.total_timeout_ms),
    };
    let mut deliverer = Deliverer::new(platform_key);
    let mut merchants = Merchants::default();
    for (i, m) in config.merchants.iter().enumerate() {
        let key = format!("merchants[{i}]");
        let secret = m.webhook_secret.load(&format!("{key}.webhook_secret"))?;
        let webhook_secret = WebhookSecret::parse(expose(&secret))
            .map_err(|e| key_err(&format!("{key}.webhook_secret"), e))?;
        let mut hosts = m.allowed_notify_hosts.clone();
        if hosts.is_empty()
            && let Some(h) = m.notify_url.as_ref().and_then(|u| u.host_str())
        {
            hosts.push(h.to_string());
        }
        let id = MerchantId::parse(&m.id).map_err(|e| key_err(&format!("{key}.id"), e))?;
        let network = AddressPolicy {
            allow_private_network: m.allow_private_network,
        };
        let mut trust = Trust::default();
        if let Some(path) = &m.tls_ca_file {
            trust.extra_ca =
                load_ca_file(path).map_err(|e| key_err(&format!("{key}.tls_ca_file"), e))?;
        }
        for pin in &m.tls_pinned_cert_sha256 {
            trust.pinned_sha256.push(
                parse_pin(pin).map_err(|e| key_err(&format!("{key}.tls_pinned_cert_sha256"), e))?,
            );
        }
        let transport = MerchantTransport {
            connect_timeout: m
                .connect_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.connect_timeout),
            total_timeout: m
                .total_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.total_timeout),
            network,
            trust,
            proxy: m.proxy.clone(),
            sign_rsa: m.sign_rsa,
        };
        deliverer
            .add_merchant(id.clone(), &transport)
            .map_err(|e| key_err(&key, e))?;
        merchants.insert(Merchant {
            id,
            status: match m.status {
                MerchantStatusConfig::Enabled => MerchantStatus::Enabled,
                MerchantStatusConfig::Blocked => MerchantStatus::Blocked,
            },
            notify_url: m.notify_url.clone(),
            allowed_notify_hosts: hosts,
            webhook_secret,
            expect_body: m.expect_body.clone(),
            risk: payflow_activities::risk::RiskLimits {
                max_amount: m.max_amount,
                daily_limit: m.daily_limit,
                max_per_minute: m.max_payments_per_minute,
            },
            plain_http: match &m.allow_plain_http {
                PlainHttpConfig::Never => PlainHttp::Never,
                PlainHttpConfig::AnyHost => PlainHttp::AnyHost,
                PlainHttpConfig::Hosts(h) => PlainHttp::Hosts(h.clone()),
            },
            network,
        });
    }
    let mut routing = Routing::default();
    for (i, p) in config.products.iter().enumerate() {
        routing.insert(Product {
            id: ProductId::parse(&p.id).map_err(|e| key_err(&format!("products[{i}].id"), e))?,
            channel: p.channel.clone(),
            enabled: p.enabled,
            min_amount: p.min_amount,
            max_amount: p.max_amount,
            fee_rate: p.fee_rate,
        });
    }
    for c in &config.channels {
        routing.set_channel_enabled(&c.name, c.enabled);
    }
    Ok(Services {
        store,
        channels,
        merchants,
        routing,
        health: ChannelHealth::new(HealthPolicy::default()),
        gate: MerchantGate::new(GatePolicy {
            max_in_flight: config.notify.max_in_flight_per_merchant,
            failures_to_open: config.notify.breaker_failures_to_open,
            open_for: Duration::from_millis(config.notify.breaker_open_ms),
            busy_wait: Duration::from_millis(config.notify.busy_fallback_ms),
            ..GatePolicy::default()
        }),
        deliverer,
        ingress_base_url: config.ingress.public_url.clone(),
        payment_timing: PaymentTiming {
            query_schedule_ms: config.payment.query_schedule_ms.clone(),
            expiry_scale_percent: config.payment.expiry_scale_percent,
        },
        payout_policy: PayoutPolicy {
            review_above: config.payout.review_above,
            review_timeout_ms: config.payout.review_timeout_ms,
            query_schedule_ms: config.payment.query_schedule_ms.clone(),
        },
        notify_schedule_ms: config.notify.retry_schedule_ms.clone(),
        notify_continue_after_events: config.notify.continue_as_new_after_events,
        metrics: payflow_activities::metrics::Metrics::disabled(),
        temporal: std::sync::OnceLock::new(),
    })
}

/// Connects a Temporal client.
pub async fn connect_temporal(address: &str, namespace: &str) -> Result<Client, StartupError> {
    connect_temporal_with_codec(address, namespace, None, GrpcCompressionConfig::default()).await
}

/// Connects a Temporal client whose payloads go through `codec` (workers created on it
/// encrypt and decrypt with it too).
pub async fn connect_temporal_with_codec(
    address: &str,
    namespace: &str,
    codec: Option<&payflow_client::EncryptionCodec>,
    compression: GrpcCompressionConfig,
) -> Result<Client, StartupError> {
    let err = |m: String| StartupError::Temporal {
        address: address.to_string(),
        message: m,
    };
    let url = url::Url::parse(address).map_err(|e| err(e.to_string()))?;
    let conn = Connection::connect(
        ConnectionOptions::new(url)
            .identity(worker_identity())
            .grpc_compression(compression.sdk())
            .build(),
    )
    .await
    .map_err(|e| err(e.to_string()))?;
    let options = match codec {
        Some(codec) => ClientOptions::new(namespace)
            .data_converter(codec.data_converter())
            .build(),
        None => ClientOptions::new(namespace).build(),
    };
    Client::new(conn, options).map_err(|e| err(e.to_string()))
}

fn worker_identity() -> String {
    format!("payflow@{}", std::process::id())
}

impl App {
    pub async fn build(config: Config) -> Result<App, StartupError> {
        App::build_on(config, None).await
    }

    /// [`App::build`] with the ingress on an already bound socket (`None`: bind
    /// `ingress.listen`). A caller that must know the ingress URL before the configuration is
    /// written binds port 0 itself and hands the socket over, so no other process can take
    /// the port in between.
    pub async fn build_on(
        config: Config,
        ingress: Option<std::net::TcpListener>,
    ) -> Result<App, StartupError> {
        let services = build_services(&config).await?;
        let codec = config.codec.as_ref().map(|c| c.load()).transpose()?;
        let client = connect_temporal_with_codec(
            &config.temporal.address,
            &config.temporal.namespace,
            codec.as_ref(),
            config.temporal.grpc_compression,
        )
        .await?;
        let bind_error = |source| StartupError::Bind {
            addr: config.ingress.listen,
            source,
        };
        let ingress_listener = match ingress {
            Some(socket) => socket
                .set_nonblocking(true)
                .and_then(|()| TcpListener::from_std(socket))
                .map_err(bind_error)?,
            None => TcpListener::bind(config.ingress.listen)
                .await
                .map_err(bind_error)?,
        };
        let ingress_addr = ingress_listener.local_addr().map_err(bind_error)?;
        let (services, metrics_exporter, metrics_addr) = match config.telemetry.metrics_listen {
            Some(addr) => {
                let (exporter, bound) = start_metrics_exporter(addr)?;
                let metrics = payflow_activities::metrics::Metrics::new(exporter.meter.clone());
                (services.with_metrics(metrics), Some(exporter), Some(bound))
            }
            None => (services, None, None),
        };
        let app_payflow = Payflow::from_client(client.clone());
        let _ = services.temporal.set(match codec {
            Some(_) => app_payflow.redact_summaries(),
            None => app_payflow,
        });
        Ok(App {
            config,
            services: Arc::new(services),
            client,
            codec,
            ingress_listener,
            ingress_addr,
            metrics_addr,
            metrics_exporter,
        })
    }

    pub fn payflow(&self) -> Payflow {
        let payflow = Payflow::from_client(self.client.clone());
        match self.codec {
            Some(_) => payflow.redact_summaries(),
            None => payflow,
        }
    }

    /// The SDK runtime, exporting its metrics through the Prometheus exporter started by
    /// [`App::build`] when `telemetry.metrics_listen` is set.
    fn runtime(&self) -> Result<Runtime, StartupError> {
        let err = |e: String| StartupError::Worker(format!("telemetry: {e}"));
        let mut telemetry = temporalio_common::telemetry::TelemetryOptions::builder().build();
        telemetry.metrics = self.metrics_exporter.as_ref().map(|e| e.meter.clone());
        let options = temporalio_sdk::runtime::RuntimeOptions::builder()
            .telemetry_options(telemetry)
            .build()
            .map_err(err)?;
        Runtime::from_current_tokio(options).map_err(|e| err(e.to_string()))
    }

    /// Runs workers and ingress until `shutdown` resolves, then stops both and waits for them.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StartupError> {
        let runtime = self.runtime()?;
        let make = |queue: &str| -> Result<WorkerOptions, StartupError> {
            let opts = WorkerOptions::new(queue)
                .activity_inbound_interceptor(crate::tracing_interceptor::ActivitySpans);
            let mut built = if queue == task_queues::PAYMENTS {
                opts.register_workflow::<Payment>()
                    .map_err(|e| StartupError::Worker(e.to_string()))?
                    .register_workflow::<Refund>()
                    .map_err(|e| StartupError::Worker(e.to_string()))?
                    .register_workflow::<Transfer>()
                    .map_err(|e| StartupError::Worker(e.to_string()))?
                    .register_workflow::<Payout>()
                    .map_err(|e| StartupError::Worker(e.to_string()))?
                    .register_workflow::<LedgerRead>()
                    .map_err(|e| StartupError::Worker(e.to_string()))?
                    .register_activities(PaymentActivities::new(self.services.clone()))
                    .register_activities(RefundActivities::new(self.services.clone()))
                    .register_activities(TransferActivities::new(self.services.clone()))
                    .register_activities(PayoutActivities::new(self.services.clone()))
                    .register_activities(LedgerActivities::new(self.services.clone()))
                    // Their workflows start merchant callbacks (a local activity).
                    .register_activities(NotifyActivities::new(self.services.clone()))
                    .build()
            } else if queue == task_queues::RECON {
                opts.register_workflow::<Reconciliation>()
                    .map_err(|e| StartupError::Worker(e.to_string()))?
                    .register_workflow::<ReconDaily>()
                    .map_err(|e| StartupError::Worker(e.to_string()))?
                    .register_activities(ReconActivities::new(
                        self.services.clone(),
                        crate::recon_setup::settings(&self.config),
                    ))
                    .build()
            } else {
                opts.register_workflow::<Notification>()
                    .map_err(|e| StartupError::Worker(e.to_string()))?
                    .register_activities(NotifyActivities::new(self.services.clone()))
                    .build()
            };
            self.config.worker.apply(&mut built);
            Ok(built)
        };
        let mut workers = Vec::new();
        for queue in [
            task_queues::PAYMENTS,
            task_queues::NOTIFY_REALTIME,
            task_queues::NOTIFY_BATCH,
            task_queues::NOTIFY_RETRY,
            task_queues::RECON,
        ] {
            let w = Worker::new(&runtime, self.client.clone(), make(queue)?)
                .map_err(|e| StartupError::Worker(e.to_string()))?;
            workers.push(w);
        }
        if self.config.recon.schedule {
            crate::recon_setup::ensure_schedules(&self.client, &self.config).await?;
        }
        // Deferred callbacks wait in their merchant's line until the gate wakes them.
        let wakes = self
            .services
            .gate
            .take_wakes()
            .map(|rx| tokio::spawn(crate::notify_wakes::run(self.client.clone(), rx)));
        let stops: Vec<_> = workers.iter().map(|w| w.shutdown_handle()).collect();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let router = ingress::router(ingress::IngressState::new(
            &self.config.ingress,
            self.services.clone(),
            Payflow::from_client(self.client.clone()),
        ));
        let mut ingress_stop = stop_rx.clone();
        let ingress = axum::serve(
            self.ingress_listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = ingress_stop.wait_for(|s| *s).await;
        });
        tracing::info!(ingress = %self.ingress_addr, "payflow worker running");
        let runs = futures::future::join_all(workers.iter_mut().map(|w| w.run()));
        let trigger = async move {
            shutdown.await;
            tracing::info!("shutting down: ingress and workers");
            let _ = stop_tx.send(true);
            for stop in &stops {
                stop();
            }
        };
        let (results, ingress_result, ()) = tokio::join!(runs, ingress.into_future(), trigger);
        ingress_result.map_err(|e| StartupError::Worker(format!("ingress: {e}")))?;
        for r in results {
            r.map_err(|e| StartupError::Worker(e.to_string()))?;
        }
        if let Some(wakes) = wakes {
            wakes.abort();
        }
        self.services.store.close().await;
        Ok(())
    }
}
