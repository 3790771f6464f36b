//! `payflow notify ...`: operator controls over merchant callbacks, through Temporal.
//! `list` finds events by state (search attribute `NotifyState`, on Notification workflows and
//! on payments whose callback went out at the first try); `resend` starts a fresh
//! attempt cycle of a parked or held event; `retry-now` skips the current wait.

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use futures::StreamExt;
use payflow_client::definitions::{NotificationWorkflow, Resend, RetryNow};
use payflow_client::{EventId, MerchantId, NotifyState, Payflow};
use temporalio_client::WorkflowListOptions;

#[derive(Subcommand, Debug)]
pub enum NotifyCommand {
    /// Events in a state, newest first.
    List {
        #[arg(long, value_enum)]
        state: StateArg,
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        temporal: TemporalArgs,
    },
    /// Deliver a parked (exhausted) or held event again, from a fresh attempt cycle.
    Resend {
        merchant: String,
        event_id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        temporal: TemporalArgs,
    },
    /// Skip the current wait before the next attempt.
    RetryNow {
        merchant: String,
        event_id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        temporal: TemporalArgs,
    },
}

#[derive(clap::Args, Debug)]
pub struct TemporalArgs {
    #[arg(
        long,
        env = "TEMPORAL_ADDRESS",
        default_value = "http://127.0.0.1:7233"
    )]
    pub address: String,
    #[arg(long, env = "TEMPORAL_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// The worker's configuration: its `[codec]` keys decrypt what the workflows answer
    /// (needed when payloads are encrypted; only that section is read).
    #[arg(long, env = "PAYFLOW_CONFIG")]
    pub config: Option<std::path::PathBuf>,
}

impl TemporalArgs {
    /// A client for these arguments, with the configuration's payload codec when it has one.
    pub async fn connect(&self) -> anyhow::Result<Payflow> {
        let mut options = payflow_client::PayflowOptions::default();
        if let Some(path) = &self.config {
            let config = crate::config::Config::load(path)?;
            if let Some(codec) = &config.codec {
                options = options.codec(codec.load()?);
            }
        }
        Payflow::connect_with(&self.address, &self.namespace, options)
            .await
            .with_context(|| format!("connect to Temporal at {}", self.address))
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StateArg {
    Pending,
    Delivering,
    Retrying,
    Delivered,
    Exhausted,
    Held,
}

impl StateArg {
    fn state(self) -> NotifyState {
        match self {
            StateArg::Pending => NotifyState::Pending,
            StateArg::Delivering => NotifyState::Delivering,
            StateArg::Retrying => NotifyState::Retrying,
            StateArg::Delivered => NotifyState::Delivered,
            StateArg::Exhausted => NotifyState::Exhausted,
            StateArg::Held => NotifyState::Held,
        }
    }
}

async fn connect(t: &TemporalArgs) -> anyhow::Result<Payflow> {
    t.connect().await
}

fn workflow_id(merchant: &str, event_id: &str) -> anyhow::Result<String> {
    let merchant = MerchantId::parse(merchant)?;
    let event = EventId::parse(event_id)?;
    Ok(payflow_client::ids::notification_workflow_id(
        &merchant, &event,
    ))
}

/// What `resend` and `retry-now` print once the signal is sent.
fn requested(workflow_id: &str, signal: &str, json: bool) -> anyhow::Result<()> {
    if json {
        let answer = serde_json::json!({"workflow_id": workflow_id, "signal": signal});
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("{workflow_id}: {signal} requested");
    }
    Ok(())
}

/// One callback found by `notify list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedCallback {
    pub workflow_id: String,
    pub run_id: String,
    /// `Notification`, or `Payment` for a payment whose callback went out at its first try.
    pub workflow_type: String,
    pub state: &'static str,
}

/// Callbacks in `state`, newest first: Notification workflows, and payments whose callback
/// their first try delivered (they carry `NotifyState` themselves; no workflow was needed).
pub async fn list(
    payflow: &Payflow,
    state: NotifyState,
    merchant: Option<&MerchantId>,
    limit: usize,
) -> anyhow::Result<Vec<ListedCallback>> {
    let mut query = format!(
        "WorkflowType IN ('Notification', 'Payment') AND NotifyState = '{}'",
        state.as_str()
    );
    if let Some(m) = merchant {
        // Parsed, so safe inside a visibility query.
        query.push_str(&format!(" AND MerchantId = '{m}'"));
    }
    let mut stream = payflow
        .temporal()
        .list_workflows(query, WorkflowListOptions::builder().limit(limit).build());
    let mut rows = Vec::new();
    while let Some(item) = stream.next().await {
        let wf = item.context("list workflows")?;
        rows.push(ListedCallback {
            workflow_id: wf.id().to_string(),
            run_id: wf.run_id().to_string(),
            workflow_type: wf.workflow_type().to_string(),
            state: state.as_str(),
        });
    }
    Ok(rows)
}

pub async fn run(cmd: NotifyCommand) -> anyhow::Result<()> {
    match cmd {
        NotifyCommand::List {
            state,
            merchant,
            limit,
            json,
            temporal,
        } => {
            let payflow = connect(&temporal).await?;
            let merchant = merchant.map(MerchantId::parse).transpose()?;
            let rows = list(&payflow, state.state(), merchant.as_ref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no notifications {}", state.state().as_str());
            } else {
                for r in &rows {
                    if r.workflow_type == "Payment" {
                        println!(
                            "{} (its callback, delivered at the first try)",
                            r.workflow_id
                        );
                    } else {
                        println!("{}", r.workflow_id);
                    }
                }
            }
            Ok(())
        }
        NotifyCommand::Resend {
            merchant,
            event_id,
            json,
            temporal,
        } => {
            let id = workflow_id(&merchant, &event_id)?;
            let payflow = connect(&temporal).await?;
            let handle = payflow
                .temporal()
                .get_workflow_handle::<NotificationWorkflow>(id.clone());
            if let Err(e) = handle.signal(Resend, (), Default::default()).await {
                bail!("resend {id}: {e}");
            }
            requested(&id, "resend", json)
        }
        NotifyCommand::RetryNow {
            merchant,
            event_id,
            json,
            temporal,
        } => {
            let id = workflow_id(&merchant, &event_id)?;
            let payflow = connect(&temporal).await?;
            let handle = payflow
                .temporal()
                .get_workflow_handle::<NotificationWorkflow>(id.clone());
            if let Err(e) = handle.signal(RetryNow, (), Default::default()).await {
                bail!("retry now {id}: {e}");
            }
            requested(&id, "retry_now", json)
        }
    }
}
