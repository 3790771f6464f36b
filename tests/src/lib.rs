//! # payflow-tests: the end-to-end harness (`spawn_app`)
//!
//! One Temporal dev server per test binary (started on first use on free ports, killed when
//! the test process exits), and per test: its own namespace on that server, a fresh database
//! (SQLite file, or a new PostgreSQL database), and a [`Stack`] with the worker, ingress,
//! sandbox channel and merchant receiver on free loopback ports. Tests wait on conditions with
//! deadlines, never on fixed sleeps.

pub mod browser;
pub mod histories;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use payflow::devkeys::DevKeys;
use payflow::devserver::{DevServerOptions, find_temporal_cli, free_port, wait_ready};
use payflow::stack;
use payflow::stack::{Stack, StackOptions};
use payflow_client::{
    Currency, MerchantId, Money, OrderNo, PaymentRequest, PaymentStatus, ProductId,
};

/// Namespaces created on the shared dev server; each test takes one.
const NAMESPACES: usize = 48;

static SERVER: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
/// The dev server's UI port: `None` (headless) unless [`enable_ui`] ran before it started.
static UI_PORT: OnceLock<Option<u16>> = OnceLock::new();
/// The codec server the UI calls to decode payloads, set by [`enable_ui_with_codec`].
static UI_CODEC: OnceLock<String> = OnceLock::new();
static NEXT_NAMESPACE: AtomicUsize = AtomicUsize::new(0);

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Serves the Temporal UI from this test binary's dev server and returns its base URL
/// (`http://127.0.0.1:{port}`). Call it before the first [`spawn_app`] or [`dev_server`]: the
/// server is started once per binary, headless unless this ran first.
pub fn enable_ui() -> String {
    let port = UI_PORT
        .get_or_init(|| Some(free_port().expect("free port")))
        .expect("the dev server already started headless: call enable_ui() before spawn_app");
    format!("http://127.0.0.1:{port}")
}

/// [`enable_ui`], with the UI's pages decoding payloads through the codec server at `endpoint`
/// (called from the browser: `POST {endpoint}/decode`).
pub fn enable_ui_with_codec(endpoint: &str) -> String {
    let set = UI_CODEC.get_or_init(|| endpoint.to_string());
    assert_eq!(
        set, endpoint,
        "this binary's UI already has another codec endpoint"
    );
    enable_ui()
}

/// Starts the dev server once per test binary and returns its address.
///
/// The server is spawned from a thread that lives as long as the process, with the parent
/// death signal set, so it dies with the test binary and no process is left behind.
pub async fn dev_server() -> &'static str {
    SERVER
        .get_or_init(|| async {
            let port = free_port().expect("free port");
            let dir = scratch_dir("temporal");
            let opts = DevServerOptions {
                ip: "127.0.0.1".into(),
                port,
                ui_port: *UI_PORT.get_or_init(|| None),
                db_file: Some(dir.join("temporal.db")),
                log_level: "error".into(),
                extra_namespaces: (0..NAMESPACES).map(|i| format!("t{i}")).collect(),
                ui_codec_endpoint: UI_CODEC.get().cloned(),
            };
            let exe = find_temporal_cli().expect("Temporal CLI (run scripts/tools.sh)");
            // The server's own log goes to a file beside its database, out of the test output.
            let log = std::fs::File::create(dir.join("temporal.log")).expect("dev server log file");
            let args = opts.args();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("temporal-dev-server".into())
                .spawn(move || {
                    let mut cmd = Command::new(exe);
                    cmd.args(args)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .stderr(log);
                    // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
                    unsafe {
                        use std::os::unix::process::CommandExt;
                        cmd.pre_exec(|| {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            Ok(())
                        });
                    }
                    let child = cmd.spawn();
                    let ok = child.is_ok();
                    tx.send(child.map(|_| ()).map_err(|e| e.to_string())).ok();
                    if ok {
                        // This thread is the child's parent: it must outlive every test.
                        loop {
                            std::thread::park();
                        }
                    }
                })
                .expect("spawn dev server thread");
            rx.recv()
                .expect("dev server thread")
                .expect("start temporal dev server");
            let address = format!("http://127.0.0.1:{port}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut ready = false;
            while !ready && tokio::time::Instant::now() < deadline {
                ready = wait_ready(&address, Duration::from_millis(500)).await;
            }
            assert!(
                ready,
                "Temporal dev server at {address} did not come up in 60 s"
            );
            address
        })
        .await
}

/// A per-process scratch directory under `target/e2e` (git-ignored).
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/e2e")).join(format!(
        "payflow-{}-{}",
        std::process::id(),
        name
    ));
    std::fs::create_dir_all(&base).expect("scratch dir");
    base
}

/// Keys shared by the tests of one binary (generated once; RSA key generation is slow).
pub fn keys() -> &'static DevKeys {
    static KEYS: OnceLock<DevKeys> = OnceLock::new();
    KEYS.get_or_init(|| DevKeys::ensure(&scratch_dir("keys")).expect("test keys"))
}

/// The PostgreSQL server tests use: `DATABASE_URL`, else the local trust-auth server.
pub fn postgres_base_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Creates a fresh database for one test and returns its URL, or `None` (with the reason on
/// stderr) when PostgreSQL is not reachable and `PAYFLOW_REQUIRE_POSTGRES` is not set.
pub async fn fresh_database(db: Db) -> Option<String> {
    match db {
        Db::Sqlite => {
            let path = scratch_dir("db").join(format!("{}.db", uuid::Uuid::new_v4().simple()));
            Some(format!("sqlite://{}", path.display()))
        }
        Db::Postgres => {
            use sqlx::Connection;
            let base = postgres_base_url();
            let mut conn = match sqlx::PgConnection::connect(&base).await {
                Ok(c) => c,
                Err(e) => {
                    if std::env::var_os("PAYFLOW_REQUIRE_POSTGRES").is_some() {
                        panic!("PostgreSQL required but unreachable at {base}: {e}");
                    }
                    eprintln!("skipping postgres: cannot connect to {base}: {e}");
                    return None;
                }
            };
            sweep_dead_databases(&mut conn).await;
            let name = format!(
                "payflow_e2e_{}_{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            );
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create test database");
            let (prefix, _) = base.rsplit_once('/').expect("database URL has a path");
            Some(format!("{prefix}/{name}"))
        }
    }
}

/// Drops the databases of earlier test processes that have exited (names carry the creating
/// process id), once per process, so repeated runs do not pile databases up on the server.
async fn sweep_dead_databases(conn: &mut sqlx::PgConnection) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT datname FROM pg_database WHERE datname LIKE 'payflow_e2e_%'",
            )
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
            for name in names {
                let pid = name
                    .trim_start_matches("payflow_e2e_")
                    .split('_')
                    .next()
                    .and_then(|p| p.parse::<u32>().ok());
                let alive =
                    pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
                if !alive {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut *conn)
                        .await;
                }
            }
        })
        .await;
}

/// Test-speed timing: queries and retries in milliseconds instead of minutes.
pub struct Timing {
    pub pay_after: Option<Duration>,
    pub query_schedule_ms: Vec<u64>,
    pub expiry_scale_percent: u32,
    pub notify_schedule_ms: Vec<u64>,
    /// Notification workflows continue as new past this many events (`None`: the default).
    pub notify_continue_after_events: Option<u32>,
    /// The ingress's source allowlist (empty: any source).
    pub ingress_allowed_ips: Vec<String>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            pay_after: Some(Duration::from_millis(300)),
            query_schedule_ms: vec![2_000],
            expiry_scale_percent: 100,
            notify_schedule_ms: vec![200, 200, 400],
            notify_continue_after_events: None,
            ingress_allowed_ips: Vec::new(),
        }
    }
}

/// Starts the whole stack for one test, or `None` when its database is unavailable.
pub async fn spawn_app(db: Db, timing: Timing) -> Option<Stack> {
    spawn_app_with(db, timing, String::new()).await
}

/// Like [`spawn_app`], with extra TOML appended to the generated configuration.
pub async fn spawn_app_with(db: Db, timing: Timing, extra_toml: String) -> Option<Stack> {
    // `RUST_LOG=...` shows the worker's log in a failing test's output.
    if std::env::var_os("RUST_LOG").is_some() {
        payflow::telemetry::init_stderr(payflow::config::LogFormat::Pretty);
    }
    let address = dev_server().await.to_string();
    let database_url = fresh_database(db).await?;
    let ns = NEXT_NAMESPACE.fetch_add(1, Ordering::SeqCst);
    assert!(
        ns < NAMESPACES,
        "more tests than namespaces: raise NAMESPACES"
    );
    let stack = Stack::start(StackOptions {
        temporal_address: address,
        namespace: format!("t{ns}"),
        database_url,
        keys: keys(),
        pay_after: timing.pay_after,
        query_schedule_ms: timing.query_schedule_ms,
        expiry_scale_percent: timing.expiry_scale_percent,
        notify_schedule_ms: timing.notify_schedule_ms,
        notify_continue_after_events: timing.notify_continue_after_events,
        sandbox_notify_retry: vec![Duration::from_millis(300); 5],
        ingress_listen: "127.0.0.1:0".into(),
        ingress_allowed_ips: timing.ingress_allowed_ips,
        extra_toml,
    })
    .await
    .expect("start payflow stack");
    Some(stack)
}

/// Polls `f` until it returns `Some`, or panics after `deadline` with `what`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        // Poll interval for conditions observable only by asking (workflow queries).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CNY payment request from the stack's demo merchant for its QR product.
pub fn payment_request(order_no: &str, amount: &str) -> PaymentRequest {
    PaymentRequest {
        merchant_id: MerchantId::parse(stack::MERCHANT).expect("merchant id"),
        merchant_order_no: OrderNo::parse(order_no).expect("order no"),
        amount: Money::parse(amount, Currency::Cny).expect("amount"),
        product_id: ProductId::parse(stack::PRODUCT).expect("product id"),
        subject: format!("test {order_no}"),
        notify_url: None,
        expires_in_secs: None,
        recharge_wallet: None,
    }
}

/// Waits until the merchant accepted at least one callback; returns the accepted ones.
pub async fn accepted_callbacks(app: &Stack) -> Vec<payflow::merchant_receiver::ReceivedCallback> {
    let got = app
        .merchant
        .wait_for(Duration::from_secs(45), |got| {
            got.iter().any(|c| c.answered == 200)
        })
        .await
        .expect("the merchant accepted a callback in time");
    got.into_iter().filter(|c| c.answered == 200).collect()
}

/// Waits until the payment's `status` query satisfies `pred`, or panics naming `what`.
pub async fn payment_where(
    app: &Stack,
    req: &PaymentRequest,
    what: &str,
    pred: impl Fn(&PaymentStatus) -> bool,
) -> PaymentStatus {
    eventually(Duration::from_secs(45), what, || async {
        let s = app
            .payflow
            .payment(&req.merchant_id, &req.merchant_order_no)
            .await
            .ok()?;
        pred(&s).then_some(s)
    })
    .await
}

/// A CNY amount from a decimal string (test input, so a bad literal panics).
pub fn cny(amount: &str) -> Money {
    Money::parse(amount, Currency::Cny).expect("amount")
}

/// Posted balance of the demo merchant's payable account, in minor units.
pub async fn payable(app: &Stack) -> i64 {
    merchant_account(app).await.posted_net().minor_units()
}

/// What holds on the demo merchant's payable account still reserve, in minor units.
pub async fn payable_pending_debits(app: &Stack) -> i64 {
    merchant_account(app).await.debits_pending.minor_units()
}

async fn merchant_account(app: &Stack) -> payflow_activities::store::accounts::AccountBalance {
    app.store
        .account_balance(&payflow_activities::accounting::merchant_payable(
            stack::MERCHANT,
        ))
        .await
        .expect("the merchant's payable account")
}

/// Event types of the callbacks the merchant accepted.
pub fn accepted_types(got: &[payflow::merchant_receiver::ReceivedCallback]) -> Vec<String> {
    got.iter()
        .filter(|c| c.answered == 200)
        .filter_map(|c| c.body["type"].as_str().map(str::to_string))
        .collect()
}

/// The trial balance is zero in every currency.
pub async fn assert_balanced(app: &Stack) {
    let tb = app.store.trial_balance().await.unwrap();
    assert!(tb.values().all(|v| *v == 0), "trial balance {tb:?}");
}

/// Waits until the merchant accepted a callback of `event_type`; returns how many it accepted.
pub async fn accepted_count(app: &Stack, event_type: &str, deadline: Duration) -> usize {
    let count = |got: &[payflow::merchant_receiver::ReceivedCallback]| {
        got.iter()
            .filter(|c| c.answered == 200 && c.body["type"] == event_type)
            .count()
    };
    let got = app
        .merchant
        .wait_for(deadline, |got| count(got) >= 1)
        .await
        .unwrap_or_else(|| panic!("a {event_type} callback in time"));
    count(&got)
}

/// An operator's cancel request, as the UI's *Request Cancellation* or `temporal workflow
/// cancel --workflow-id ID` sends it.
pub async fn operator_cancel(app: &Stack, workflow_id: String) {
    app.payflow
        .temporal()
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(workflow_id.clone())
        .cancel(Default::default())
        .await
        .unwrap_or_else(|e| panic!("cancel {workflow_id}: {e}"));
}
