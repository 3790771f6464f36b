//! `payflow recon ...`: reconciliation for operators.
//!
//! - `run --channel X --date D [--wait]` starts (or joins) `recon/{channel}/{date}` through
//!   Temporal; with `--wait`, prints the report when the run is done;
//! - `report --channel X --date D` prints the stored report straight from the database (every
//!   discrepancy, with its kind, both sides' values and what the channel answered), also for a
//!   day a later statement has changed (a cross-day transaction shows as resolved);
//! - `retry --channel X --date D` signals a run parked in `Manual` to try again.
//!
//! Each takes `--json`. Amounts print as decimals, never floats.

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::Subcommand;
use payflow_activities::recon::compare;
use payflow_activities::reconciliation::{discrepancy, summarize};
use payflow_activities::store::Store;
use payflow_client::{
    ReconDiscrepancy, ReconRequest, ReconSide, ReconSubject, ReconSummary, ReconValues,
};

use crate::cli_notify::TemporalArgs;

#[derive(Subcommand, Debug)]
pub enum ReconCommand {
    /// Reconcile a channel's statement of a day (Beijing time); idempotent per channel and day.
    Run {
        #[arg(long)]
        channel: String,
        /// The business day, `yyyy-mm-dd`.
        #[arg(long)]
        date: NaiveDate,
        /// Wait for the run to finish and print its report.
        #[arg(long)]
        wait: bool,
        /// Waits between attempts while the statement is not ready (ms, comma separated);
        /// the worker's `[recon] statement_retry_ms` when absent.
        #[arg(long, value_delimiter = ',')]
        retry_ms: Option<Vec<u64>>,
        /// Give up (park the run for an operator) after this long (ms).
        #[arg(long)]
        deadline_ms: Option<u64>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        temporal: TemporalArgs,
    },
    /// The stored report of a channel's day: counts, totals and every discrepancy.
    Report {
        #[arg(long)]
        channel: String,
        #[arg(long)]
        date: NaiveDate,
        #[arg(long)]
        json: bool,
        /// The payflow database; else the `[database] url` of `--config`.
        #[arg(long, env = "DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, env = "PAYFLOW_CONFIG")]
        config: Option<std::path::PathBuf>,
    },
    /// Try a run parked in `Manual` again (e.g. once the channel has its statement).
    Retry {
        #[arg(long)]
        channel: String,
        #[arg(long)]
        date: NaiveDate,
        #[command(flatten)]
        temporal: TemporalArgs,
    },
}

pub async fn run(cmd: ReconCommand) -> anyhow::Result<()> {
    match cmd {
        ReconCommand::Run {
            channel,
            date,
            wait,
            retry_ms,
            deadline_ms,
            json,
            temporal,
        } => {
            let payflow = temporal.connect().await?;
            let request = ReconRequest {
                statement_retry_ms: retry_ms,
                statement_deadline_ms: deadline_ms,
                ..ReconRequest::new(channel.clone(), date)
            };
            let id = payflow.reconcile_with(request).await?;
            if !wait {
                if json {
                    println!("{}", serde_json::json!({ "workflow_id": id }));
                } else {
                    println!("started {id}");
                }
                return Ok(());
            }
            let summary = payflow
                .recon_result(&channel, date)
                .await
                .with_context(|| format!("waiting for {id}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", render(&summary, None));
            }
            Ok(())
        }
        ReconCommand::Report {
            channel,
            date,
            json,
            database_url,
            config,
        } => {
            let url = match (database_url, config) {
                (Some(url), _) => url,
                (None, Some(path)) => crate::config::Config::load(&path)?.database.url,
                (None, None) => bail!("give --database-url (or DATABASE_URL) or --config"),
            };
            let store = Store::connect(&url)
                .await
                .context("connect to the database")?;
            let found = stored_report(&store, &channel, date).await;
            store.close().await;
            let Some((summary, state)) = found? else {
                bail!("no reconciliation of {channel} for {date}");
            };
            if json {
                let mut value = serde_json::to_value(&summary)?;
                value["run_state"] = serde_json::Value::String(state.clone());
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", render(&summary, Some(&state)));
            }
            Ok(())
        }
        ReconCommand::Retry {
            channel,
            date,
            temporal,
        } => {
            let payflow = temporal.connect().await?;
            payflow.retry_reconciliation(&channel, date).await?;
            println!(
                "retry sent to {}",
                payflow_client::recon::recon_workflow_id(&channel, date)
            );
            Ok(())
        }
    }
}

/// The stored report with every discrepancy (paged from the store), and the run's state.
pub async fn stored_report(
    store: &Store,
    channel: &str,
    date: NaiveDate,
) -> anyhow::Result<Option<(ReconSummary, String)>> {
    let Some(report) = compare::report(store, channel, date).await? else {
        return Ok(None);
    };
    let mut summary = summarize(&report, report.discrepancies.len());
    if report.discrepancies_truncated {
        let run = store
            .recon_run(&report.run_id)
            .await?
            .context("the run disappeared")?;
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = compare::discrepancies(store, &run, after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            all.extend(page.iter().map(discrepancy));
        }
        summary.discrepancies = all;
    }
    Ok(Some((summary, report.state.as_str().to_string())))
}

fn money(v: Option<rust_decimal::Decimal>, values: &ReconValues) -> String {
    match (v, values.currency) {
        (Some(a), Some(c)) => format!("{a} {c}"),
        (Some(a), None) => a.to_string(),
        (None, _) => "-".into(),
    }
}

/// One side's values in a few words: `20.00 CNY fee 0.12 Succeeded`.
fn values(v: &ReconValues) -> String {
    let mut parts = Vec::new();
    if v.amount.is_some() {
        parts.push(money(v.amount, v));
    }
    if v.fee.is_some() {
        parts.push(format!("fee {}", money(v.fee, v)));
    }
    if let Some(s) = &v.status {
        parts.push(s.clone());
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

fn line(d: &ReconDiscrepancy) -> String {
    let subject = match (d.subject, &d.refund_id) {
        (ReconSubject::Payment, _) => format!("payment {}", d.order_id),
        (ReconSubject::Refund, Some(r)) => format!("refund {r} of {}", d.order_id),
        (ReconSubject::Refund, None) => format!("refunds of {}", d.order_id),
    };
    let mut out = format!(
        "  {:<17} {subject}\n      ours: {}   statement: {}",
        d.kind.as_str(),
        values(&d.ours),
        values(&d.channel)
    );
    if let Some(line_no) = d.line_no {
        out.push_str(&format!(" (line {line_no})"));
    }
    if let Some(now) = &d.channel_now {
        out.push_str(&format!("   channel now: {now}"));
    }
    if let Some(r) = &d.resolution {
        out.push_str(&format!("\n      resolved: {r}"));
    }
    out.push('\n');
    out
}

/// The human form of a report.
pub fn render(s: &ReconSummary, run_state: Option<&str>) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k:<14} {v}\n"));
    kv(
        "run",
        match run_state {
            Some(state) => format!("{} ({state})", s.run_id),
            None => s.run_id.clone(),
        },
    );
    let open = s.open_total();
    kv(
        "result",
        match open {
            0 => "balanced".into(),
            1 => "1 open discrepancy".into(),
            n => format!("{n} open discrepancies"),
        },
    );
    kv(
        "statement",
        format!(
            "{} lines ({} duplicate), {} matched",
            s.statement_lines, s.duplicate_lines, s.matched_lines
        ),
    );
    kv(
        "ours",
        format!("{} records, {} matched", s.our_records, s.matched_records),
    );
    kv(
        "checked",
        format!(
            "{} differences asked of the channel, {} dismissed by its answer",
            s.candidates, s.dismissed
        ),
    );
    if s.resolved_elsewhere > 0 {
        kv(
            "cross-day",
            format!("resolved {} of other days", s.resolved_elsewhere),
        );
    }
    for (i, t) in s.totals.iter().enumerate() {
        let side = match t.side {
            ReconSide::Statement => "statement",
            ReconSide::Ours => "ours",
        };
        let subject = match t.subject {
            ReconSubject::Payment => "payments",
            ReconSubject::Refund => "refunds",
        };
        kv(
            if i == 0 { "totals" } else { "" },
            format!(
                "{side:<9} {subject:<8} {:>6}  {} {}  fee {} {}",
                t.count, t.amount, t.currency, t.fee, t.currency
            ),
        );
    }
    for (i, k) in s.by_kind.iter().enumerate() {
        kv(
            if i == 0 { "by kind" } else { "" },
            format!(
                "{:<17} {} open, {} resolved",
                k.kind.as_str(),
                k.open,
                k.resolved
            ),
        );
    }
    if !s.discrepancies.is_empty() {
        out.push_str("discrepancies\n");
        for d in &s.discrepancies {
            out.push_str(&line(d));
        }
        if s.truncated() {
            out.push_str(&format!(
                "  ... {} more: `payflow recon report`\n",
                s.discrepancy_count - s.discrepancies.len() as u64
            ));
        }
    }
    out
}
