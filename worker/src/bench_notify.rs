//! `payflow bench notify`: does one hanging merchant delay the callbacks of the others?
//!
//! Everything runs in this process or is started by it, like `payflow dev`: a Temporal dev
//! server (in memory), dev keys and a SQLite database in a scratch directory, the worker
//! through [`Stack::start`], and the merchants' endpoints on loopback. 100 merchants
//! `b0..b99` are configured; `b1..b99` answer 200 at once, `b0` accepts connections and never
//! answers (it reads the request and holds the socket until the client gives up).
//!
//! Two phases on the same server and worker, after an unmeasured warm-up (one event to each
//! healthy merchant, so both phases find connections and caches warm):
//!
//! 1. baseline: `--events` events spread round-robin over the 99 healthy merchants;
//! 2. mixed: as many healthy events again, plus as many events to `b0`, interleaved (half of
//!    all events go to the hanging merchant).
//!
//! With `--control`, a phase between the two offers the mixed phase's load with nobody
//! hanging (b0's half goes to the healthy merchants), which tells the hanging merchant's
//! effect from that of twice the load. `--phases` runs any sequence of the three kinds (for
//! instance a baseline again after the mixed one, while b0's events keep retrying); the
//! verdict compares the first mixed phase with the first baseline.
//!
//! Events are offered open-loop at a fixed rate (`--rate` healthy events per second; the mixed
//! phase offers twice that in total): each `Payflow::notify` call starts at its scheduled time
//! whatever the earlier ones are doing. The latency of a healthy event is the time from its
//! `notify()` call returning to the first request for its `webhook-id` arriving at the
//! merchant. After each phase the workflows' history lengths are read back (a deferred
//! delivery waits in its merchant's line: a timer, and a wake signal with a workflow task and
//! another attempt when its turn comes). Not a
//! test: it prints figures, and PASS/FAIL against the target (healthy p99 of the mixed phase
//! within 1.5x of the baseline's).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use clap::{Args, ValueEnum};
use payflow_activities::merchant_gate::GatePolicy;
use payflow_client::{EventId, MerchantId, NotificationRequest, Payflow, Priority};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::config::Config;
use crate::devkeys::DevKeys;
use crate::devserver::{DevServer, DevServerOptions, free_port};
use crate::stack::{self, Stack, StackOptions};

/// Merchants configured: `b0` hangs, `b1..b99` are healthy.
const MERCHANTS: usize = 100;
const HANGING: &str = "b0";
/// The target: healthy p99 with the hanging merchant within this factor of the baseline's.
const TARGET_RATIO: f64 = 1.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PriorityArg {
    Realtime,
    Batch,
}

impl PriorityArg {
    fn priority(self) -> Priority {
        match self {
            PriorityArg::Realtime => Priority::Realtime,
            PriorityArg::Batch => Priority::Batch,
        }
    }

    fn queue(self) -> &'static str {
        match self {
            PriorityArg::Realtime => payflow_client::definitions::task_queues::NOTIFY_REALTIME,
            PriorityArg::Batch => payflow_client::definitions::task_queues::NOTIFY_BATCH,
        }
    }
}

/// What a measured phase offers (each at `--rate` healthy events per second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PhaseKind {
    /// `--events` healthy events.
    Baseline,
    /// Twice as many healthy events, nobody hangs: the mixed phase's load.
    Control,
    /// `--events` healthy events interleaved with as many to the hanging merchant.
    Mixed,
}

impl PhaseKind {
    fn label(self) -> &'static str {
        match self {
            PhaseKind::Baseline => "baseline",
            PhaseKind::Control => "control (2x, no hang)",
            PhaseKind::Mixed => "mixed (b0 hangs)",
        }
    }

    fn name(self) -> &'static str {
        match self {
            PhaseKind::Baseline => "baseline",
            PhaseKind::Control => "control",
            PhaseKind::Mixed => "mixed",
        }
    }
}

#[derive(Args, Debug)]
pub struct BenchNotifyArgs {
    /// Healthy events per phase, round-robin over the 99 healthy merchants (the mixed phase
    /// sends as many again to the hanging merchant).
    #[arg(long, default_value_t = 400)]
    pub events: usize,
    /// Healthy events offered per second in each phase (open loop); the mixed phase offers
    /// twice this in total.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Priority of every event (both phases): its task queue.
    #[arg(long, value_enum, default_value_t = PriorityArg::Realtime)]
    pub priority: PriorityArg,
    /// Total timeout of the hanging merchant's HTTP client in ms (default: none set, so it has
    /// the `[notify] total_timeout_ms` every merchant has).
    #[arg(long)]
    pub hang_timeout_ms: Option<u64>,
    /// Longest wait for a phase's healthy first attempts after its last event was sent (s).
    #[arg(long, default_value_t = 120)]
    pub wait_secs: u64,
    /// Keep the scratch directory (keys, payflow database) and print its path.
    #[arg(long)]
    pub keep: bool,
    /// Run the Temporal dev server on this SQLite file instead of in memory, to look at the
    /// histories afterwards (`temporal server start-dev --db-filename FILE`). Much slower on
    /// a small machine: the figures are not comparable with in-memory runs.
    #[arg(long)]
    pub temporal_db: Option<std::path::PathBuf>,
    /// Also run a control phase before the mixed one: the same events as the mixed phase, but
    /// the half meant for the hanging merchant goes to the healthy ones (twice the baseline's
    /// load, nobody hangs), to tell the hanging merchant's effect from the load's.
    #[arg(long)]
    pub control: bool,
    /// The measured phases in order, comma-separated (overrides `--control`); e.g.
    /// `baseline,mixed,baseline` measures the baseline again while b0's events retry.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub phases: Vec<PhaseKind>,
    /// The worker's tuning: the body of a `[worker]` table (see `worker/src/tuning.rs`), e.g.
    /// `--tuning 'workflow_pollers = "auto"'`.
    #[arg(long, default_value = "")]
    pub tuning: String,
    /// Do not read the workflows' histories back after each phase (the history rows then
    /// show `-`).
    #[arg(long)]
    pub no_history: bool,
    /// Also write every event as a CSV row here (phase, event, merchant, offset and
    /// notify() call in ms, latency in ms or empty when it never arrived).
    #[arg(long)]
    pub csv: Option<std::path::PathBuf>,
}

/// What the healthy merchants saw: when the first request of each event arrived.
#[derive(Default)]
struct Arrivals {
    first: Mutex<HashMap<String, Instant>>,
    requests: AtomicU64,
    changed: Notify,
}

/// What the hanging merchant saw.
#[derive(Default)]
struct Hang {
    accepted: AtomicU64,
    open: AtomicU64,
    max_open: AtomicU64,
}

struct Planned {
    merchant: String,
    event: String,
    healthy: bool,
    /// Offset from the phase start at which `notify()` is called.
    at: Duration,
}

struct Sent {
    merchant: String,
    event: String,
    healthy: bool,
    called: Instant,
    returned: Instant,
    error: Option<String>,
}

/// One phase's figures for the healthy merchants.
struct PhaseResult {
    sent: usize,
    delivered: usize,
    notify_errors: usize,
    /// First requests that arrived before `notify()` had returned (counted as 0 ms).
    early: usize,
    latency_ms: Vec<f64>,
    notify_call_ms: Vec<f64>,
    send_secs: f64,
    /// From the first call until the last healthy first attempt arrived (or the wait ended).
    phase_secs: f64,
    loadavg: String,
    /// One CSV row per event of the phase.
    csv: Vec<String>,
    /// History events of the phase's workflows once its healthy events arrived:
    /// (healthy total, healthy workflows, hanging total, hanging workflows).
    history: (usize, usize, usize, usize),
}

pub async fn run(args: BenchNotifyArgs) -> anyhow::Result<()> {
    if args.events == 0 || !(args.rate > 0.0 && args.rate.is_finite()) || args.wait_secs == 0 {
        bail!("--events, --rate and --wait-secs must be positive");
    }
    let scratch = std::env::temp_dir().join(format!(
        "payflow-bench-notify-{}-{}",
        std::process::id(),
        chrono::Utc::now().format("%Y%m%d%H%M%S")
    ));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = run_in(&args, &scratch).await;
    if args.keep {
        eprintln!("bench notify: kept {}", scratch.display());
    } else {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result
}

async fn run_in(args: &BenchNotifyArgs, scratch: &Path) -> anyhow::Result<()> {
    eprintln!("bench notify: generating dev keys in {}", scratch.display());
    let keys = DevKeys::ensure(&scratch.join("keys")).context("creating dev keys")?;

    // The merchants' endpoints first: their addresses go into the configuration.
    let arrivals = Arc::new(Arrivals::default());
    let healthy_listener = TcpListener::bind("127.0.0.1:0").await?;
    let healthy_port = healthy_listener.local_addr()?.port();
    spawn_healthy(healthy_listener, arrivals.clone());
    let hang = Arc::new(Hang::default());
    let hang_listener = TcpListener::bind("127.0.0.1:0").await?;
    let hang_port = hang_listener.local_addr()?.port();
    spawn_hanging(hang_listener, hang.clone());

    crate::tuning::WorkerTuningConfig::from_table(&args.tuning)?;
    let extra = format!(
        "{}\n[worker]\n{}\n",
        merchants_toml(
            &keys.path(DevKeys::MERCHANT_SECRET),
            healthy_port,
            hang_port,
            args.hang_timeout_ms,
        ),
        args.tuning
    );

    let db_file = args.temporal_db.clone();
    eprintln!(
        "bench notify: starting a Temporal dev server ({})",
        db_file
            .as_ref()
            .map_or("in memory".to_string(), |f| f.display().to_string())
    );
    let server = DevServer::start(DevServerOptions {
        ip: "127.0.0.1".into(),
        port: free_port()?,
        ui_port: None,
        db_file,
        log_level: "error".into(),
        extra_namespaces: Vec::new(),
        ui_codec_endpoint: None,
    })
    .await?;
    let database_url = format!("sqlite://{}", scratch.join("payflow.db").display());
    let options = |listen: &str| StackOptions {
        temporal_address: server.address.clone(),
        namespace: "default".into(),
        database_url: database_url.clone(),
        keys: &keys,
        pay_after: None,
        query_schedule_ms: vec![10_000, 30_000, 60_000, 120_000, 300_000],
        expiry_scale_percent: 100,
        // The production retry schedule: only the hanging merchant's events ever retry.
        notify_schedule_ms: payflow_workflows::schedule::DEFAULT_NOTIFY_SCHEDULE_SECS
            .iter()
            .map(|s| s * 1000)
            .collect(),
        notify_continue_after_events: None,
        sandbox_notify_retry: vec![Duration::from_secs(2)],
        ingress_listen: listen.to_string(),
        ingress_allowed_ips: Vec::new(),
        extra_toml: extra.clone(),
    };
    // The configuration the stack will run with, parsed here only to print its settings.
    let shown = Config::parse(
        &stack::config_toml(
            &options("127.0.0.1:0"),
            "http://127.0.0.1:9/gateway.do",
            "http://127.0.0.1:9/notify",
            "http://127.0.0.1:9",
        ),
        "(generated)",
        Path::new("."),
        std::iter::empty(),
    )?;

    eprintln!("bench notify: starting the worker ({MERCHANTS} merchants)");
    let stack = Stack::start(options("127.0.0.1:0")).await?;
    let outcome = measure(args, &stack.payflow, &arrivals, &hang).await;
    eprintln!("bench notify: stopping the worker and the dev server");
    // The worker waits for deliveries in flight to the hanging merchant (bounded by its
    // timeout); do not wait much longer than that.
    let _ = tokio::time::timeout(Duration::from_secs(60), stack.shutdown()).await;
    server.stop().await;
    let (warm, phases) = outcome?;
    if let Some(path) = &args.csv {
        let mut text = String::from("phase,event,merchant,offset_ms,notify_call_ms,latency_ms\n");
        for row in warm
            .csv
            .iter()
            .chain(phases.iter().flat_map(|(_, r)| &r.csv))
        {
            text.push_str(row);
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let requests = arrivals.requests.load(Ordering::Relaxed);
    print_report(args, &shown, &phases, &hang, requests);
    Ok(())
}

/// The benchmark's merchants as `[[merchants]]` TOML.
fn merchants_toml(
    secret: &Path,
    healthy_port: u16,
    hang_port: u16,
    hang_timeout_ms: Option<u64>,
) -> String {
    let secret = secret.display().to_string().replace('\\', "\\\\");
    let mut toml = String::new();
    for i in 0..MERCHANTS {
        let id = format!("b{i}");
        let port = if id == HANGING {
            hang_port
        } else {
            healthy_port
        };
        toml.push_str(&format!(
            "\n[[merchants]]\nid = \"{id}\"\nnotify_url = \"http://127.0.0.1:{port}/{id}\"\n\
             allowed_notify_hosts = [\"127.0.0.1\"]\nallow_plain_http = [\"127.0.0.1\"]\n\
             allow_private_network = true\nwebhook_secret = {{ file = \"{secret}\" }}\n"
        ));
        if id == HANGING
            && let Some(ms) = hang_timeout_ms
        {
            toml.push_str(&format!("total_timeout_ms = {ms}\n"));
        }
    }
    toml
}

/// Healthy merchants: answer 200 at once; record when each event's first request arrived.
fn spawn_healthy(listener: TcpListener, arrivals: Arc<Arrivals>) {
    async fn receive(State(a): State<Arc<Arrivals>>, req: Request<Body>) -> StatusCode {
        let now = Instant::now();
        a.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = req
            .headers()
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
        {
            a.first
                .lock()
                .expect("arrivals lock")
                .entry(id.to_string())
                .or_insert(now);
            a.changed.notify_waiters();
        }
        // Read the body so the connection can be reused.
        let _ = axum::body::to_bytes(req.into_body(), 1 << 20).await;
        StatusCode::OK
    }
    let app = Router::new().fallback(receive).with_state(arrivals);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("bench notify: healthy merchants' server stopped: {e}");
        }
    });
}

/// The hanging merchant: accepts, reads whatever is sent, never answers; the socket stays
/// open until the client closes it.
fn spawn_hanging(listener: TcpListener, hang: Arc<Hang>) {
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            hang.accepted.fetch_add(1, Ordering::Relaxed);
            let open = hang.open.fetch_add(1, Ordering::Relaxed) + 1;
            hang.max_open.fetch_max(open, Ordering::Relaxed);
            let hang = hang.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                hang.open.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
}

/// The phases to measure: `--phases`, or baseline, control (with `--control`) and mixed.
fn planned_phases(args: &BenchNotifyArgs) -> Vec<PhaseKind> {
    if !args.phases.is_empty() {
        return args.phases.clone();
    }
    let mut kinds = vec![PhaseKind::Baseline];
    if args.control {
        kinds.push(PhaseKind::Control);
    }
    kinds.push(PhaseKind::Mixed);
    kinds
}

/// One phase's offered events; `n` (the phase's position) keeps event ids unique.
fn plan(kind: PhaseKind, n: usize, args: &BenchNotifyArgs) -> Vec<Planned> {
    let step = Duration::from_secs_f64(1.0 / args.rate);
    let healthy = |i: usize| format!("b{}", 1 + i % (MERCHANTS - 1));
    let event = |i: usize| format!("{}{n}-{i}", kind.name());
    match kind {
        PhaseKind::Baseline => (0..args.events)
            .map(|i| Planned {
                merchant: healthy(i),
                event: event(i),
                healthy: true,
                at: step * i as u32,
            })
            .collect(),
        PhaseKind::Control => (0..args.events * 2)
            .map(|i| Planned {
                merchant: healthy(i),
                event: event(i),
                healthy: true,
                at: step * (i / 2) as u32 + (step / 2) * (i % 2) as u32,
            })
            .collect(),
        PhaseKind::Mixed => (0..args.events)
            .flat_map(|i| {
                [
                    Planned {
                        merchant: healthy(i),
                        event: event(i),
                        healthy: true,
                        at: step * i as u32,
                    },
                    Planned {
                        merchant: HANGING.to_string(),
                        event: format!("hang{n}-{i}"),
                        healthy: false,
                        at: step * i as u32 + step / 2,
                    },
                ]
            })
            .collect(),
    }
}

async fn measure(
    args: &BenchNotifyArgs,
    payflow: &Payflow,
    arrivals: &Arrivals,
    hang: &Hang,
) -> anyhow::Result<(PhaseResult, Vec<(PhaseKind, PhaseResult)>)> {
    let step = Duration::from_secs_f64(1.0 / args.rate);
    let warm: Vec<Planned> = (0..MERCHANTS - 1)
        .map(|i| Planned {
            merchant: format!("b{}", 1 + i),
            event: format!("warm-{i}"),
            healthy: true,
            at: step * i as u32,
        })
        .collect();
    eprintln!(
        "bench notify: warm-up, one event to each of the {} healthy merchants",
        MERCHANTS - 1
    );
    let warm = phase("warmup", args, payflow, arrivals, warm).await?;
    eprintln!(
        "bench notify: warm-up done ({}/{} delivered)",
        warm.delivered, warm.sent
    );
    let mut results = Vec::new();
    for (n, kind) in planned_phases(args).into_iter().enumerate() {
        let plan = plan(kind, n + 1, args);
        let hanging = plan.iter().filter(|p| !p.healthy).count();
        eprintln!(
            "bench notify: phase {}: {}, {} healthy events{} at {}/s",
            n + 1,
            kind.name(),
            plan.len() - hanging,
            if hanging > 0 {
                format!(" interleaved with {hanging} to {HANGING} (hangs)")
            } else {
                String::new()
            },
            args.rate * plan.len() as f64 / args.events as f64
        );
        let name = format!("{}{}", kind.name(), n + 1);
        let r = phase(&name, args, payflow, arrivals, plan).await?;
        eprintln!(
            "bench notify: phase {} done ({}/{} delivered, p99 {:.1} ms; {HANGING} accepted {} \
             connections so far)",
            n + 1,
            r.delivered,
            r.sent,
            percentile(&r.latency_ms, 0.99),
            hang.accepted.load(Ordering::Relaxed)
        );
        results.push((kind, r));
    }
    Ok((warm, results))
}

/// Sends the plan open-loop, then waits for the healthy events' first requests (or the
/// deadline) and measures them.
async fn phase(
    name: &str,
    args: &BenchNotifyArgs,
    payflow: &Payflow,
    arrivals: &Arrivals,
    plan: Vec<Planned>,
) -> anyhow::Result<PhaseResult> {
    let priority = args.priority.priority();
    let start = tokio::time::Instant::now();
    let t0 = start.into_std();
    let mut tasks = Vec::with_capacity(plan.len());
    for p in plan {
        // The offered schedule: each call starts at its time, whatever earlier calls do.
        tokio::time::sleep_until(start + p.at).await;
        let payflow = payflow.clone();
        tasks.push(tokio::spawn(async move {
            let req = NotificationRequest {
                merchant_id: MerchantId::parse(&p.merchant).expect("bench merchant id"),
                event_id: EventId::parse(&p.event).expect("bench event id"),
                event_type: "bench.notify".into(),
                data: serde_json::json!({ "bench": "notify", "event": p.event }),
                priority,
                notify_url: None,
                resume: None,
            };
            let called = Instant::now();
            let r = payflow.notify(req).await;
            Sent {
                merchant: p.merchant,
                event: p.event,
                healthy: p.healthy,
                called,
                returned: Instant::now(),
                error: r.err().map(|e| e.to_string()),
            }
        }));
    }
    let mut sent = Vec::with_capacity(tasks.len());
    for t in tasks {
        sent.push(t.await.context("notify task")?);
    }
    let send_secs = start.elapsed().as_secs_f64();
    let healthy: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.healthy && s.error.is_none())
        .collect();
    if let Some(e) = sent.iter().find_map(|s| s.error.as_deref()) {
        eprintln!("bench notify: a notify() call failed: {e}");
    }
    // Wait until every healthy event's first request arrived, or the deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_secs);
    loop {
        let changed = arrivals.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let arrived = {
            let first = arrivals.first.lock().expect("arrivals lock");
            healthy
                .iter()
                .filter(|s| first.contains_key(&s.event))
                .count()
        };
        if arrived == healthy.len() {
            break;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            eprintln!(
                "bench notify: gave up waiting after {} s: {arrived}/{} healthy events arrived",
                args.wait_secs,
                healthy.len()
            );
            break;
        }
    }
    let phase_secs = start.elapsed().as_secs_f64();
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "-".into());
    // A copy: the lock is not held across the awaits below.
    let first = arrivals.first.lock().expect("arrivals lock").clone();
    let mut latency_ms = Vec::new();
    let mut early = 0;
    for s in &healthy {
        if let Some(at) = first.get(&s.event) {
            if *at < s.returned {
                early += 1;
            }
            latency_ms.push(ms(at.saturating_duration_since(s.returned)));
        }
    }
    let csv = sent
        .iter()
        .map(|s| {
            let latency = first
                .get(&s.event)
                .map(|at| format!("{:.3}", ms(at.saturating_duration_since(s.returned))))
                .unwrap_or_default();
            format!(
                "{name},{},{},{:.3},{:.3},{latency}",
                s.event,
                s.merchant,
                ms(s.called - t0),
                ms(s.returned - s.called)
            )
        })
        .collect();
    let history = if args.no_history {
        (0, 0, 0, 0)
    } else {
        history_lengths(payflow, &sent).await
    };
    let notify_call_ms = sent
        .iter()
        .filter(|s| s.healthy && s.error.is_none())
        .map(|s| ms(s.returned - s.called))
        .collect();
    Ok(PhaseResult {
        sent: sent.iter().filter(|s| s.healthy).count(),
        delivered: latency_ms.len(),
        notify_errors: sent.iter().filter(|s| s.error.is_some()).count(),
        early,
        latency_ms,
        notify_call_ms,
        send_secs,
        phase_secs,
        loadavg,
        csv,
        history,
    })
}

/// Sums the history lengths of the phase's workflows, healthy and hanging apart, over all
/// their runs: a Notification that delivers at once has one short run; one that is deferred
/// waits in place (a timer, then a wake or the timer firing); one whose attempt failed
/// continues on the retry queue.
async fn history_lengths(payflow: &Payflow, sent: &[Sent]) -> (usize, usize, usize, usize) {
    use futures::StreamExt;
    use payflow_client::definitions::NotificationWorkflow;
    use payflow_client::ids::notification_workflow_id;
    use temporalio_client::{
        WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowListOptions,
    };
    let length = |s: &Sent| {
        let (merchant, event) = (s.merchant.clone(), s.event.clone());
        async move {
            let id = notification_workflow_id(
                &MerchantId::parse(&merchant).expect("bench merchant id"),
                &EventId::parse(&event).expect("bench event id"),
            );
            let temporal = payflow.temporal();
            let current = temporal
                .get_workflow_handle::<NotificationWorkflow>(id.to_string())
                .describe(WorkflowDescribeOptions::default())
                .await
                .ok()
                .map(|d| d.history_length())?;
            // Earlier runs, closed by continue-as-new (visibility has their final length).
            let earlier: i64 = temporal
                .list_workflows(
                    format!("WorkflowId = '{id}'"),
                    WorkflowListOptions::default(),
                )
                .filter_map(|r| async move { r.ok() })
                .filter(|w| {
                    std::future::ready(w.status() == WorkflowExecutionStatus::ContinuedAsNew)
                })
                .map(|w| w.history_length())
                .fold(0, |a, b| async move { a + b })
                .await;
            Some(current + earlier as usize)
        }
    };
    let lengths: Vec<(bool, Option<usize>)> = futures::stream::iter(sent.iter())
        .map(|s| {
            let healthy = s.healthy;
            let len = length(s);
            async move { (healthy, len.await) }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut h = (0, 0, 0, 0);
    for (healthy, len) in lengths {
        let Some(len) = len else { continue };
        if healthy {
            h.0 += len;
            h.1 += 1;
        } else {
            h.2 += len;
            h.3 += 1;
        }
    }
    h
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile (`p` in 0..=1) of unsorted values; NaN when there are none.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (p * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn print_report(
    args: &BenchNotifyArgs,
    config: &Config,
    phases: &[(PhaseKind, PhaseResult)],
    hang: &Hang,
    requests: u64,
) {
    let gate = GatePolicy::default();
    let timeout = |id: &str| {
        let m = config.merchants.iter().find(|m| m.id == id);
        (
            m.and_then(|m| m.connect_timeout_ms)
                .unwrap_or(config.notify.connect_timeout_ms),
            m.and_then(|m| m.total_timeout_ms)
                .unwrap_or(config.notify.total_timeout_ms),
        )
    };
    let (hang_connect, hang_total) = timeout(HANGING);
    let (connect, total) = timeout("b1");
    println!(
        "payflow bench notify: {MERCHANTS} merchants (b1..b{} answer 200 at once, {HANGING} accepts \
         and never answers), queue {}",
        MERCHANTS - 1,
        args.priority.queue()
    );
    println!(
        "offered open-loop: {} healthy events per phase at {}/s round-robin over {} merchants; \
         the mixed phase adds {} events to {HANGING}, interleaved (half of all events)",
        args.events,
        args.rate,
        MERCHANTS - 1,
        args.events
    );
    println!(
        "merchant gate: {} \
         deliveries in flight per merchant, breaker opens after {} failures for {} s, the waiting \
         woken as slots free (fallback {} ms); timeouts connect/total: healthy {connect}/{total} ms, {HANGING} \
         {hang_connect}/{hang_total} ms",
        gate.max_in_flight,
        gate.failures_to_open,
        gate.open_for.as_secs(),
        gate.busy_wait.as_millis()
    );
    println!("worker tuning: {}", config.worker.describe());
    println!(
        "latency: notify() returned -> first request of the event at the merchant (healthy \
         merchants only)"
    );
    let columns: Vec<(String, &PhaseResult)> = phases
        .iter()
        .enumerate()
        .map(|(n, (kind, r))| {
            let again = phases[..n].iter().any(|(k, _)| k == kind);
            let label = if again {
                format!("{} #{}", kind.name(), n + 1)
            } else {
                kind.label().to_string()
            };
            (label, r)
        })
        .collect();
    let w = 38;
    let mut header = format!("{:<w$}", "");
    for (name, _) in &columns {
        header.push_str(&format!("  {name:>22}"));
    }
    println!("{header}");
    let row = |label: &str, f: &dyn Fn(&PhaseResult) -> String| {
        let mut line = format!("{label:<w$}");
        for (_, r) in &columns {
            line.push_str(&format!("  {:>22}", f(r)));
        }
        println!("{line}");
    };
    row("healthy events first-attempted", &|r| {
        format!("{}/{}", r.delivered, r.sent)
    });
    for (label, p) in [("p50", 0.50), ("p95", 0.95), ("p99", 0.99)] {
        row(&format!("first-attempt latency {label}"), &|r| {
            format!("{:.1} ms", percentile(&r.latency_ms, p))
        });
    }
    row("first-attempt latency max", &|r| {
        format!("{:.1} ms", percentile(&r.latency_ms, 1.0))
    });
    row("notify() call p50 / p99", &|r| {
        format!(
            "{:.1} / {:.1} ms",
            percentile(&r.notify_call_ms, 0.5),
            percentile(&r.notify_call_ms, 0.99)
        )
    });
    row("arrived before notify() returned", &|r| r.early.to_string());
    row("notify() errors (all events)", &|r| {
        r.notify_errors.to_string()
    });
    row("history events per workflow, healthy", &|r| {
        if r.history.1 == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", r.history.0 as f64 / r.history.1 as f64)
        }
    });
    row(&format!("history events per workflow, {HANGING}"), &|r| {
        if r.history.3 == 0 {
            "-".to_string()
        } else {
            format!(
                "{:.1} ({} in all)",
                r.history.2 as f64 / r.history.3 as f64,
                r.history.2
            )
        }
    });
    row("sending took / until the last arrival", &|r| {
        format!("{:.1} / {:.1} s", r.send_secs, r.phase_secs)
    });
    row("load average at the phase's end", &|r| r.loadavg.clone());
    println!(
        "{HANGING}: {} connections accepted, at most {} open at once; healthy merchants: {} \
         requests in all (warm-up included)",
        hang.accepted.load(Ordering::Relaxed),
        hang.max_open.load(Ordering::Relaxed),
        requests
    );
    let first = |kind: PhaseKind| phases.iter().find(|(k, _)| *k == kind).map(|(_, r)| r);
    let (Some(base), Some(mixed)) = (first(PhaseKind::Baseline), first(PhaseKind::Mixed)) else {
        println!("no verdict: it compares the first mixed phase with the first baseline");
        return;
    };
    let (b99, m99) = (
        percentile(&base.latency_ms, 0.99),
        percentile(&mixed.latency_ms, 0.99),
    );
    let ratio = m99 / b99;
    let complete = base.delivered == base.sent && mixed.delivered == mixed.sent;
    let pass = complete && ratio <= TARGET_RATIO;
    println!(
        "healthy p99 mixed/baseline: {m99:.1} / {b99:.1} ms = {ratio:.2}x (target <= \
         {TARGET_RATIO}x): {}{}",
        if pass { "PASS" } else { "FAIL" },
        if complete {
            ""
        } else {
            " (some healthy events never arrived)"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashSet;

    /// `BenchNotifyArgs` as a command of its own, to parse arguments in tests.
    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: BenchNotifyArgs,
    }

    impl BenchNotifyArgs {
        fn try_parse_from(
            argv: impl IntoIterator<Item = &'static str>,
        ) -> Result<Self, clap::Error> {
            Cmd::try_parse_from(argv).map(|c| c.args)
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn phases_offer_unique_events_and_the_mixed_one_sends_half_to_the_hanging_merchant() {
        let args = BenchNotifyArgs::try_parse_from([
            "bench",
            "--events",
            "10",
            "--phases",
            "baseline,control,mixed,baseline",
        ])
        .expect("valid arguments");
        let kinds = planned_phases(&args);
        assert_eq!(
            kinds,
            [
                PhaseKind::Baseline,
                PhaseKind::Control,
                PhaseKind::Mixed,
                PhaseKind::Baseline
            ]
        );
        let plans: Vec<Vec<Planned>> = kinds
            .iter()
            .enumerate()
            .map(|(n, k)| plan(*k, n + 1, &args))
            .collect();
        let sizes: Vec<(usize, usize)> = plans
            .iter()
            .map(|p| (p.len(), p.iter().filter(|e| !e.healthy).count()))
            .collect();
        assert_eq!(sizes, [(10, 0), (20, 0), (20, 10), (10, 0)]);
        assert!(
            plans[2]
                .iter()
                .all(|e| e.healthy == (e.merchant != HANGING))
        );
        let ids: HashSet<&str> = plans.iter().flatten().map(|e| e.event.as_str()).collect();
        assert_eq!(ids.len(), 60, "event ids repeat across phases");
        for e in plans.iter().flatten() {
            EventId::parse(&e.event).expect("a valid event id");
        }
        // The control phase offers twice the rate over the same time.
        assert_eq!(
            plans[1].last().unwrap().at,
            plans[0].last().unwrap().at + Duration::from_millis(50)
        );
    }

    #[test]
    fn without_phases_the_control_flag_decides() {
        let plain = BenchNotifyArgs::try_parse_from(["bench"]).expect("defaults");
        assert_eq!(
            planned_phases(&plain),
            [PhaseKind::Baseline, PhaseKind::Mixed]
        );
        let control = BenchNotifyArgs::try_parse_from(["bench", "--control"]).expect("control");
        assert_eq!(
            planned_phases(&control),
            [PhaseKind::Baseline, PhaseKind::Control, PhaseKind::Mixed]
        );
    }

    #[test]
    fn merchants_toml_parses_with_one_hanging_merchant() {
        let toml = merchants_toml(Path::new("/tmp/s.whsec"), 1000, 2000, Some(1234));
        let v: toml::Table = toml::from_str(&toml).expect("valid TOML");
        let merchants = v["merchants"].as_array().expect("merchants");
        assert_eq!(merchants.len(), MERCHANTS);
        assert_eq!(
            merchants[0]["notify_url"].as_str(),
            Some("http://127.0.0.1:2000/b0")
        );
        assert_eq!(merchants[0]["total_timeout_ms"].as_integer(), Some(1234));
        assert_eq!(
            merchants[1]["notify_url"].as_str(),
            Some("http://127.0.0.1:1000/b1")
        );
        assert!(merchants[1].get("total_timeout_ms").is_none());
    }
}
