//! `payflow bench e2e`: payments end to end (create, channel prepay, the channel's notification
//! through the ingress, confirming query, ledger, merchant callback) against, in the same run on
//! the same Temporal server, a baseline of no-op workflows with one no-op activity each, so the
//! ratio of the two rates means something on a noisy machine.
//!
//! Everything but the Temporal server runs in this process: the worker (its own thread and
//! runtime, as in `payflow dev`), the sandbox channel, a merchant endpoint that answers 200 at
//! once, and the driver. The baseline's worker gets the same: a thread with a 2-thread runtime.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use payflow_client::{Currency, MerchantId, Money, OrderNo, PaymentRequest, ProductId};
use temporalio_client::{Client, WorkflowGetResultOptions, WorkflowStartOptions};
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowContextView, WorkflowResult};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::devkeys::DevKeys;
use crate::devserver::{DevServer, DevServerOptions, free_port};
use crate::stack::{self, Stack, StackOptions};
use crate::tuning::WorkerTuningConfig;

/// The baseline's task queue and workflow type (registered only by the bench's own worker).
const NOOP_QUEUE: &str = "payflow-bench-noop";
const NOOP_WORKFLOW: &str = "BenchNoop";
/// The merchant the bench pays for; its endpoint is the bench's own.
const MERCHANT: &str = "e2e";
/// The target of issue 8: payments per second at least this share of the baseline's rate.
const TARGET_RATIO: f64 = 0.5;

#[derive(Args, Debug)]
pub struct BenchE2eArgs {
    /// Payments, and as many baseline workflows.
    #[arg(long, default_value_t = 300)]
    pub payments: usize,
    /// In flight at once (closed loop), in both phases.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// The sandbox channel pays this long after the prepay (the customer's scan).
    #[arg(long, default_value_t = 0)]
    pub pay_after_ms: u64,
    /// Run the Temporal dev server on this SQLite file instead of in memory (slower: every
    /// history event is written to disk, as a real server's would be).
    #[arg(long)]
    pub temporal_db: Option<std::path::PathBuf>,
    /// Longest wait for one item (s); an item that takes longer counts as failed.
    #[arg(long, default_value_t = 120)]
    pub item_timeout_secs: u64,
    /// The workers' tuning (payflow's and the no-op's alike): the body of a `[worker]` table
    /// (see `worker/src/tuning.rs`), e.g. `--tuning 'workflow_pollers = "auto"'`.
    #[arg(long, default_value = "")]
    pub tuning: String,
    /// Measured rounds, each a baseline phase and a payments phase, in the order B P, P B,
    /// B P, ... (2: B P P B). The server slows as it fills (in memory, every history is kept),
    /// so whichever phase runs second pays for the first; alternating cancels that drift.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

pub async fn run(args: BenchE2eArgs) -> anyhow::Result<()> {
    if args.payments == 0 || args.concurrency == 0 || args.rounds == 0 {
        bail!("--payments, --concurrency and --rounds must be positive");
    }
    let scratch = std::env::temp_dir().join(format!(
        "payflow-bench-e2e-{}-{}",
        std::process::id(),
        chrono::Utc::now().format("%Y%m%d%H%M%S")
    ));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = run_in(&args, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

async fn run_in(args: &BenchE2eArgs, scratch: &Path) -> anyhow::Result<()> {
    let tuning = WorkerTuningConfig::from_table(&args.tuning)?;
    let keys = DevKeys::ensure(&scratch.join("keys")).context("creating dev keys")?;
    let arrivals = Arrivals::default();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let merchant_port = listener.local_addr()?.port();
    spawn_merchant(listener, arrivals.clone());

    eprintln!(
        "bench e2e: starting a Temporal dev server ({})",
        args.temporal_db
            .as_ref()
            .map_or("in memory".to_string(), |f| f.display().to_string())
    );
    let server = DevServer::start(DevServerOptions {
        ip: "127.0.0.1".into(),
        port: free_port()?,
        ui_port: None,
        db_file: args.temporal_db.clone(),
        log_level: "error".into(),
        extra_namespaces: Vec::new(),
        ui_codec_endpoint: None,
    })
    .await?;
    let secret = keys
        .path(DevKeys::MERCHANT_SECRET)
        .display()
        .to_string()
        .replace('\\', "\\\\");
    let stack = Stack::start(StackOptions {
        temporal_address: server.address.clone(),
        namespace: "default".into(),
        database_url: format!("sqlite://{}", scratch.join("payflow.db").display()),
        keys: &keys,
        pay_after: Some(Duration::from_millis(args.pay_after_ms)),
        query_schedule_ms: vec![5_000, 10_000, 30_000, 60_000],
        expiry_scale_percent: 100,
        notify_schedule_ms: payflow_workflows::schedule::DEFAULT_NOTIFY_SCHEDULE_SECS
            .iter()
            .map(|s| s * 1000)
            .collect(),
        notify_continue_after_events: None,
        sandbox_notify_retry: vec![Duration::from_secs(2)],
        ingress_listen: "127.0.0.1:0".into(),
        ingress_allowed_ips: Vec::new(),
        extra_toml: format!(
            "\n[[merchants]]\nid = \"{MERCHANT}\"\n\
             notify_url = \"http://127.0.0.1:{merchant_port}/notify\"\n\
             allowed_notify_hosts = [\"127.0.0.1\"]\nallow_plain_http = [\"127.0.0.1\"]\n\
             allow_private_network = true\nwebhook_secret = {{ file = \"{secret}\" }}\n\
             \n[worker]\n{}\n",
            args.tuning
        ),
    })
    .await?;
    let noop = NoopWorker::start(server.address.clone(), stack.codec().cloned(), &tuning)?;
    let client = stack.payflow.temporal().clone();
    let server_pid = server.pid();

    // How long each measured `pay()` took (the prepay's answer), apart from the whole payment.
    let pay_calls: Mutex<Vec<f64>> = Mutex::new(Vec::new());
    let outcome = async {
        eprintln!("bench e2e: warm-up (20 of each, not measured)");
        phase(args, 20, "warm-up noop", |i| noop_item(&client, "warm", i)).await?;
        phase(args, 20, "warm-up payments", |i| {
            payment_item(
                &stack,
                &arrivals,
                &pay_calls,
                "warm",
                i,
                args.item_timeout_secs,
            )
        })
        .await?;
        pay_calls.lock().expect("pay calls lock").clear();
        let mut base: Vec<Figures> = Vec::new();
        let mut pay: Vec<Figures> = Vec::new();
        for round in 0..args.rounds {
            let tag = format!("run{round}");
            for payments_phase in [payments_first(round), !payments_first(round)] {
                if payments_phase {
                    let label = format!("round {}: payments end to end", round + 1);
                    pay.push(
                        measured(args, server_pid, &label, |i| {
                            payment_item(
                                &stack,
                                &arrivals,
                                &pay_calls,
                                &tag,
                                i,
                                args.item_timeout_secs,
                            )
                        })
                        .await?,
                    );
                } else {
                    let label = format!("round {}: baseline no-op workflow", round + 1);
                    base.push(
                        measured(args, server_pid, &label, |i| noop_item(&client, &tag, i)).await?,
                    );
                }
            }
        }
        anyhow::Ok((base, pay))
    }
    .await;
    eprintln!("bench e2e: stopping");
    noop.stop();
    let _ = tokio::time::timeout(Duration::from_secs(30), stack.shutdown()).await;
    server.stop().await;
    let (base, pay) = outcome?;
    let pay_calls = pay_calls.into_inner().expect("pay calls lock");
    print_rounds(&base, &pay);
    print_report(
        args,
        &tuning,
        &Figures::sum(base),
        &Figures::sum(pay),
        &pay_calls,
    );
    Ok(())
}

/// One phase's figures.
struct Figures {
    done: usize,
    failed: usize,
    wall: Duration,
    latency_ms: Vec<f64>,
    /// CPU seconds of this process (worker, sandbox, merchant, driver) during the phase.
    own_cpu: f64,
    /// CPU seconds of the Temporal server process during the phase, when known.
    server_cpu: Option<f64>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.done as f64 / self.wall.as_secs_f64()
    }

    /// The phases of all rounds as one: items, wall time and CPU add up.
    fn sum(phases: Vec<Figures>) -> Figures {
        let mut all = Figures {
            done: 0,
            failed: 0,
            wall: Duration::ZERO,
            latency_ms: Vec::new(),
            own_cpu: 0.0,
            server_cpu: Some(0.0),
        };
        for f in phases {
            all.done += f.done;
            all.failed += f.failed;
            all.wall += f.wall;
            all.latency_ms.extend(f.latency_ms);
            all.own_cpu += f.own_cpu;
            all.server_cpu = all.server_cpu.zip(f.server_cpu).map(|(a, b)| a + b);
        }
        all
    }
}

/// Rounds alternate their phase order (`--rounds`): the first runs the baseline first.
fn payments_first(round: usize) -> bool {
    round % 2 == 1
}

/// Each round's rates, in the order they ran, so drift between phases shows.
fn print_rounds(base: &[Figures], pay: &[Figures]) {
    for (n, (b, p)) in base.iter().zip(pay).enumerate() {
        let order = if payments_first(n) {
            "payments, baseline"
        } else {
            "baseline, payments"
        };
        println!(
            "round {} ({order}): baseline {:.1}/s, payments {:.1}/s, ratio {:.2}",
            n + 1,
            b.rate(),
            p.rate(),
            p.rate() / b.rate()
        );
    }
}

async fn measured<F, Fut>(
    args: &BenchE2eArgs,
    server_pid: Option<u32>,
    label: &str,
    item: F,
) -> anyhow::Result<Figures>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>>,
{
    let cpu0 = cpu_seconds("self");
    let server0 = server_pid.and_then(|p| cpu_seconds(&p.to_string()));
    let started = Instant::now();
    let results = phase(args, args.payments, label, item).await?;
    let wall = started.elapsed();
    let own_cpu = cpu_seconds("self")
        .zip(cpu0)
        .map_or(f64::NAN, |(b, a)| b - a);
    let server_cpu = server_pid
        .and_then(|p| cpu_seconds(&p.to_string()))
        .zip(server0)
        .map(|(b, a)| b - a);
    let latency_ms: Vec<f64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    Ok(Figures {
        done: latency_ms.len(),
        failed: results.len() - latency_ms.len(),
        wall,
        latency_ms,
        own_cpu,
        server_cpu,
    })
}

/// Runs `count` items with `--concurrency` in flight, with a progress bar.
async fn phase<F, Fut>(
    args: &BenchE2eArgs,
    count: usize,
    label: &str,
    item: F,
) -> anyhow::Result<Vec<Result<Duration, String>>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<Duration>>,
{
    let bar = ProgressBar::new(count as u64).with_message(label.to_string());
    bar.set_style(
        ProgressStyle::with_template("{msg:>28} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .context("progress style")?
            .progress_chars("=> "),
    );
    let results: Vec<Result<Duration, String>> = futures::stream::iter(0..count)
        .map(|i| {
            let fut = item(i);
            let bar = &bar;
            async move {
                let r = fut.await.map_err(|e| format!("{e:#}"));
                bar.inc(1);
                r
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    bar.finish_and_clear();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!(
            "bench e2e: {label}: {} of {count} failed, e.g. {e}",
            results.iter().filter(|r| r.is_err()).count()
        );
    }
    Ok(results)
}

async fn noop_item(client: &Client, tag: &str, i: usize) -> anyhow::Result<Duration> {
    let id = format!("bench-noop/{tag}/{}/{i}", std::process::id());
    let started = Instant::now();
    let handle = client
        .start_workflow(
            BenchNoop::run,
            i as u32,
            WorkflowStartOptions::new(NOOP_QUEUE, id).build(),
        )
        .await?;
    handle
        .get_result(WorkflowGetResultOptions::default())
        .await?;
    Ok(started.elapsed())
}

/// One payment: from the `pay()` call until the merchant's `payment.succeeded` callback.
async fn payment_item(
    stack: &Stack,
    arrivals: &Arrivals,
    pay_calls: &Mutex<Vec<f64>>,
    tag: &str,
    i: usize,
    timeout_secs: u64,
) -> anyhow::Result<Duration> {
    let order_no = format!("e2e-{tag}-{}-{i}", std::process::id());
    let arrived = arrivals.expect(&order_no);
    let started = Instant::now();
    stack
        .payflow
        .pay(PaymentRequest {
            merchant_id: MerchantId::parse(MERCHANT)?,
            merchant_order_no: OrderNo::parse(&order_no)?,
            amount: Money::parse("12.34", Currency::Cny)?,
            product_id: ProductId::parse(stack::PRODUCT)?,
            subject: "bench e2e".into(),
            notify_url: None,
            expires_in_secs: None,
            recharge_wallet: None,
        })
        .await?;
    pay_calls
        .lock()
        .expect("pay calls lock")
        .push(started.elapsed().as_secs_f64() * 1000.0);
    let at = tokio::time::timeout(Duration::from_secs(timeout_secs), arrived)
        .await
        .with_context(|| format!("{order_no}: no merchant callback within {timeout_secs} s"))?
        .context("merchant endpoint stopped")?;
    Ok(at.duration_since(started))
}

/// Who is waiting for which order's `payment.succeeded` callback.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>);

impl Arrivals {
    fn expect(&self, order_no: &str) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        self.0
            .lock()
            .expect("arrivals lock")
            .insert(order_no.to_string(), tx);
        rx
    }

    fn arrived(&self, order_no: &str, at: Instant) {
        if let Some(tx) = self.0.lock().expect("arrivals lock").remove(order_no) {
            let _ = tx.send(at);
        }
    }
}

/// The merchant: answers 200 at once and records the first `payment.succeeded` per order.
fn spawn_merchant(listener: TcpListener, arrivals: Arrivals) {
    async fn receive(State(a): State<Arrivals>, body: Bytes) -> StatusCode {
        let now = Instant::now();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
            && v["type"] == "payment.succeeded"
            && let Some(order) = v["data"]["merchant_order_no"].as_str()
        {
            a.arrived(order, now);
        }
        StatusCode::OK
    }
    let app = Router::new().fallback(receive).with_state(arrivals);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("bench e2e: merchant endpoint stopped: {e}");
        }
    });
}

/// CPU seconds (user + system) of a process, from `/proc/{pid}/stat`; `None` off Linux.
fn cpu_seconds(pid: &str) -> Option<f64> {
    parse_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command name (which may contain spaces) start at state (field 3);
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux ABI Rust targets (it is fixed in the kernel's user ABI).
    Some(ticks / 100.0)
}

// The baseline: one no-op activity per workflow.

#[workflow]
pub struct BenchNoop {
    n: u32,
}

#[workflow_methods]
impl BenchNoop {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, n: u32) -> Self {
        BenchNoop { n }
    }

    #[run(name = NOOP_WORKFLOW)]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<u32> {
        let n = ctx.state(|s| s.n);
        let out = ctx
            .execute_activity(
                NoopActivities::noop,
                n,
                ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30)).build(),
            )
            .await?;
        Ok(out)
    }
}

pub struct NoopActivities;

#[activities]
impl NoopActivities {
    #[activity]
    pub async fn noop(
        self: Arc<Self>,
        _ctx: ActivityContext,
        n: u32,
    ) -> Result<u32, ActivityError> {
        Ok(n)
    }
}

/// The baseline's worker, on a thread and 2-thread runtime of its own like payflow's.
struct NoopWorker {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NoopWorker {
    /// `codec`: the one payflow's client uses (the driver starts the baseline through it).
    fn start(
        address: String,
        codec: Option<payflow_client::EncryptionCodec>,
        tuning: &WorkerTuningConfig,
    ) -> anyhow::Result<NoopWorker> {
        let tuning = tuning.clone();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("bench-noop-worker".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let built = async {
                        let client = crate::startup::connect_temporal_with_codec(
                            &address,
                            "default",
                            codec.as_ref(),
                            // As the stack's worker (its default).
                            crate::config::GrpcCompressionConfig::default(),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                        let options = temporalio_sdk::runtime::RuntimeOptions::builder()
                            .telemetry_options(
                                temporalio_common::telemetry::TelemetryOptions::builder().build(),
                            )
                            .build()
                            .map_err(|e| e.to_string())?;
                        let runtime = temporalio_sdk::Runtime::from_current_tokio(options)
                            .map_err(|e| e.to_string())?;
                        let mut opts = temporalio_sdk::WorkerOptions::new(NOOP_QUEUE)
                            .register_workflow::<BenchNoop>()
                            .map_err(|e| e.to_string())?
                            .register_activities(NoopActivities)
                            .build();
                        // Tuned as payflow's workers are (`startup.rs`).
                        tuning.apply(&mut opts);
                        // The runtime must outlive the worker.
                        let worker = temporalio_sdk::Worker::new(&runtime, client, opts)
                            .map_err(|e| e.to_string())?;
                        Ok::<_, String>((runtime, worker))
                    }
                    .await;
                    let (_runtime, mut worker) = match built {
                        Ok(w) => {
                            let _ = ready_tx.send(Ok(()));
                            w
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let stop = worker.shutdown_handle();
                    tokio::spawn(async move {
                        let _ = stop_rx.await;
                        stop();
                    });
                    if let Err(e) = worker.run().await {
                        eprintln!("bench e2e: no-op worker: {e}");
                    }
                });
            })?;
        ready_rx
            .recv()
            .context("no-op worker thread ended during start-up")?
            .map_err(|e| anyhow::anyhow!("no-op worker: {e}"))?;
        Ok(NoopWorker {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn print_report(
    args: &BenchE2eArgs,
    tuning: &WorkerTuningConfig,
    base: &Figures,
    pay: &Figures,
    pay_calls: &[f64],
) {
    let sorted = |f: &Figures| {
        let mut v = f.latency_ms.clone();
        v.sort_by(f64::total_cmp);
        v
    };
    let (b, p) = (sorted(base), sorted(pay));
    let per = |cpu: f64, f: &Figures| 1000.0 * cpu / f.done.max(1) as f64;
    println!(
        "payflow bench e2e: {} per phase, {} rounds, {} in flight, Temporal dev server {}, sandbox pays after {} ms",
        args.payments,
        args.rounds,
        args.concurrency,
        if args.temporal_db.is_some() {
            "on a SQLite file"
        } else {
            "in memory"
        },
        args.pay_after_ms
    );
    println!("workers (each): {}", tuning.describe());
    println!(
        "payment: pay() (update-with-start) -> prepay at the channel -> channel notification -> \
         ingress -> confirming query -> ledger -> merchant callback received"
    );
    println!(
        "{:<42}{:>22}{:>22}",
        "", "baseline (no-op wf)", "payments end to end"
    );
    let row = |name: &str, a: String, c: String| println!("{name:<42}{a:>22}{c:>22}");
    row(
        "completed / failed",
        format!("{} / {}", base.done, base.failed),
        format!("{} / {}", pay.done, pay.failed),
    );
    row(
        "wall time",
        format!("{:.1} s", base.wall.as_secs_f64()),
        format!("{:.1} s", pay.wall.as_secs_f64()),
    );
    row(
        "throughput",
        format!("{:.1}/s", base.rate()),
        format!("{:.1}/s", pay.rate()),
    );
    for (name, q) in [
        ("latency p50", 0.5),
        ("latency p95", 0.95),
        ("latency p99", 0.99),
    ] {
        row(
            name,
            format!("{:.1} ms", percentile(&b, q)),
            format!("{:.1} ms", percentile(&p, q)),
        );
    }
    // Where a payment's time goes: until `pay()` has the prepay (update-with-start, the first
    // workflow task, the channel's precreate), and the rest (notification, query, callback).
    let mut calls = pay_calls.to_vec();
    calls.sort_by(f64::total_cmp);
    row(
        "of which pay() p50 / p95 / p99",
        "-".into(),
        format!(
            "{:.0} / {:.0} / {:.0} ms",
            percentile(&calls, 0.5),
            percentile(&calls, 0.95),
            percentile(&calls, 0.99)
        ),
    );
    row(
        "CPU per item, payflow process",
        format!("{:.1} ms", per(base.own_cpu, base)),
        format!("{:.1} ms", per(pay.own_cpu, pay)),
    );
    let server = |f: &Figures| {
        f.server_cpu
            .map_or("-".to_string(), |c| format!("{:.1} ms", per(c, f)))
    };
    row("CPU per item, Temporal server", server(base), server(pay));
    let ratio = pay.rate() / base.rate();
    println!(
        "payments/s vs baseline/s: {:.1} / {:.1} = {:.2} (target >= {TARGET_RATIO}): {}",
        pay.rate(),
        base.rate(),
        ratio,
        if ratio >= TARGET_RATIO {
            "PASS"
        } else {
            "FAIL"
        }
    );
    println!(
        "(the payflow process holds the worker, the sandbox channel, the merchant endpoint and \
         this driver; the baseline's worker runs in it too)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn cpu_from_a_stat_line_whose_name_has_spaces() {
        let line = "4242 (tokio rt) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu_seconds(line), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }
}
