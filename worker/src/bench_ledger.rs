//! `payflow bench ledger`: how fast the ledger takes postings into one hot account compared
//! with postings spread over many accounts, per database, printed side by side.
//!
//! Every scenario books real payment entries through `Store::book` (open accounts, check,
//! post, in one transaction) from `--concurrency` tasks at once. Each run uses fresh account
//! names, so it can be pointed at a database that already holds data. Not a test: it prints
//! figures and asserts nothing but the trial balance.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use payflow_activities::accounting;
use payflow_activities::store::Store;
use payflow_activities::store::accounts::{balance_shards, set_balance_shards};
use payflow_client::{Currency, Money};

#[derive(Args, Debug)]
pub struct BenchLedgerArgs {
    /// Database to measure; repeat to compare several side by side (sqlite://... postgres://...).
    #[arg(long = "database-url", required = true)]
    pub database_urls: Vec<String>,
    /// Journal entries per scenario (each payment entry has two postings).
    #[arg(long, default_value_t = 2000)]
    pub entries: usize,
    /// Entries in flight at once (PostgreSQL's pool has 16 connections; SQLite has one).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Distinct accounts of the spread scenario.
    #[arg(long, default_value_t = 256)]
    pub accounts: usize,
    /// Rounds of all scenarios, interleaved; the medians are printed (steadier on a busy
    /// machine than one long round).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
}

/// One scenario's result.
struct Run {
    postings_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

struct Column {
    url: String,
    rows: Vec<String>,
}

const POSTINGS_PER_ENTRY: usize = 2;

pub async fn run(args: BenchLedgerArgs) -> anyhow::Result<()> {
    if args.entries == 0 || args.concurrency == 0 || args.accounts == 0 || args.rounds == 0 {
        bail!("--entries, --concurrency, --accounts and --rounds must be positive");
    }
    let shards = balance_shards();
    let labels = [
        format!("spread over {} merchant accounts", args.accounts),
        format!("one hot merchant account ({shards} balance shards)"),
        "one hot merchant account (1 balance row)".to_string(),
        "debits of the hot account (payout hold+post)".to_string(),
        "hot balance read, kept shards".to_string(),
        "hot balance read, SUM over its postings".to_string(),
    ];
    let mut columns = Vec::new();
    for url in &args.database_urls {
        eprintln!("benchmarking {} ...", redact(url));
        let rows = bench_one(url, &args, shards)
            .await
            .with_context(|| format!("bench on {}", redact(url)))?;
        columns.push(Column {
            url: redact(url),
            rows,
        });
    }

    println!(
        "payflow bench ledger: {} entries per scenario ({} postings each), concurrency {}, \
         median of {} round(s)",
        args.entries, POSTINGS_PER_ENTRY, args.concurrency, args.rounds
    );
    let width = 48;
    let col = columns
        .iter()
        .map(|c| c.url.len().max(34))
        .collect::<Vec<_>>();
    let mut header = format!("{:<width$}", "");
    for (c, w) in columns.iter().zip(&col) {
        header.push_str(&format!("  {:>w$}", c.url));
    }
    println!("{header}");
    for (i, label) in labels.iter().enumerate() {
        let mut line = format!("{label:<width$}");
        for (c, w) in columns.iter().zip(&col) {
            line.push_str(&format!("  {:>w$}", c.rows[i]));
        }
        println!("{line}");
    }
    Ok(())
}

async fn bench_one(url: &str, args: &BenchLedgerArgs, shards: u32) -> anyhow::Result<Vec<String>> {
    let store = Store::connect(url).await?;
    let mut runs: [Vec<Run>; 4] = Default::default();
    let mut reads: [Vec<f64>; 2] = Default::default();
    for _ in 0..args.rounds {
        let round = bench_round(&store, args, shards).await?;
        for (all, r) in runs.iter_mut().zip(round.0) {
            all.push(r);
        }
        for (all, r) in reads.iter_mut().zip(round.1) {
            all.push(r);
        }
    }
    let tb = store.trial_balance().await?;
    store.close().await;
    if tb.values().any(|d| *d != 0) {
        bail!("trial balance not zero after the bench: {tb:?}");
    }
    let rate = |all: &mut Vec<Run>| {
        let rate = median(all.iter().map(|r| r.postings_per_s).collect());
        let p50 = median(all.iter().map(|r| r.p50_ms).collect());
        let p99 = median(all.iter().map(|r| r.p99_ms).collect());
        format!("{rate:>7.0} postings/s (p50 {p50:.1} ms, p99 {p99:.1} ms)")
    };
    let n = args.entries;
    Ok(vec![
        rate(&mut runs[0]),
        rate(&mut runs[1]),
        rate(&mut runs[2]),
        rate(&mut runs[3]),
        format!("{:.2} ms", median(reads[0].clone())),
        format!(
            "{:.2} ms ({} postings)",
            median(reads[1].clone()),
            n + n / 4
        ),
    ])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One round of every scenario on fresh accounts: the four runs and the two read timings.
async fn bench_round(
    store: &Store,
    args: &BenchLedgerArgs,
    shards: u32,
) -> anyhow::Result<([Run; 4], [f64; 2])> {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let amount = Money::parse("1.00", Currency::Cny)?;
    let n = args.entries;
    let k = args.accounts;

    // Spread: entry i credits merchant i % k, debits channel i % k.
    let spread = {
        let (store, run_id) = (store.clone(), run_id.clone());
        scenario(n, args.concurrency, move |i| {
            let (store, run_id) = (store.clone(), run_id.clone());
            async move {
                store
                    .book(&accounting::payment_succeeded(
                        &format!("{run_id}-s{i}"),
                        &format!("{run_id}-c{}", i % k),
                        &format!("{run_id}-m{}", i % k),
                        amount,
                        None,
                    ))
                    .await
                    .map(|_| ())
            }
        })
        .await?
    };

    // Hot: every entry credits the same merchant; the debit side stays spread over channels.
    let hot = |label: &'static str| {
        let (store, run_id) = (store.clone(), run_id.clone());
        move |i: usize| {
            let (store, run_id) = (store.clone(), run_id.clone());
            async move {
                store
                    .book(&accounting::payment_succeeded(
                        &format!("{run_id}-{label}{i}"),
                        &format!("{run_id}-c{}", i % k),
                        &format!("{run_id}-{label}"),
                        amount,
                        None,
                    ))
                    .await
                    .map(|_| ())
            }
        }
    };
    let hot_sharded = scenario(n, args.concurrency, hot("hot")).await?;
    set_balance_shards(1);
    let hot_single = scenario(n, args.concurrency, hot("hot1")).await;
    set_balance_shards(shards);
    let hot_single = hot_single?;

    // Debits of the hot (flagged) account: each takes the account's lock.
    let debits = {
        let (store, run_id) = (store.clone(), run_id.clone());
        scenario(n / 4, args.concurrency, move |i| {
            let (store, run_id) = (store.clone(), run_id.clone());
            async move {
                let b = accounting::payout_hold(
                    &format!("{run_id}-p{i}"),
                    &format!("{run_id}-hot"),
                    &format!("{run_id}-c{}", i % k),
                    amount,
                );
                store.book_hold(&b).await?;
                store.post_hold(&b.hold.hold_id, None).await.map(|_| ())
            }
        })
        .await?
    };

    let hot_account = accounting::merchant_payable(&format!("{run_id}-hot"));
    let kept = time_reads(|| {
        let (store, id) = (store.clone(), hot_account.clone());
        async move { store.account_balance(&id).await.map(|_| ()) }
    })
    .await?;
    let summed = time_reads(|| {
        let (store, id) = (store.clone(), hot_account.clone());
        async move { store.account_totals(&id).await.map(|_| ()) }
    })
    .await?;
    Ok(([spread, hot_sharded, hot_single, debits], [kept, summed]))
}

/// Runs `op(0..n)` from `concurrency` tasks; postings per second over the wall time.
async fn scenario<F, Fut>(n: usize, concurrency: usize, op: F) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), payflow_activities::store::StoreError>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, next) = (op.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(latencies);
                    }
                    let t = Instant::now();
                    op(i).await?;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::with_capacity(n);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Run {
        postings_per_s: (n * POSTINGS_PER_ENTRY) as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}

/// Mean milliseconds of 20 sequential reads (after one warm-up read).
async fn time_reads<F, Fut>(read: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), payflow_activities::store::StoreError>>,
{
    read().await?;
    let start = Instant::now();
    for _ in 0..20 {
        read().await?;
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0 / 20.0)
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}
