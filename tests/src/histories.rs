//! # Recorded workflow histories and their replay (determinism, issue 8)
//!
//! `tests/histories/*.json` holds real histories of every payflow workflow type, recorded from
//! the end-to-end scenarios by `scripts/record-histories.sh` (the `#[ignore]`d tests of
//! `tests/tests/record_histories.rs`). `tests/tests/replay.rs` replays each of them against the
//! current workflow code with the SDK's [`WorkflowReplayer`] (no server needed): a change that
//! makes the code issue different commands for an old history fails the suite, and with it CI.
//!
//! A file holds the JSON form of `temporal.api.history.v1.History` as the SDK writes it
//! ([`WorkflowHistory::to_json`]), pretty-printed; the file name is
//! `{WorkflowType}-{scenario}[.{tag}].json`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use payflow_workflows::{
    LedgerRead, Notification, Payment, Payout, ReconDaily, Reconciliation, Refund, Transfer,
};
use temporalio_client::{Client, NamespacedClient, UntypedWorkflow, WorkflowHistory};
use temporalio_sdk::workflow_replayer::{
    WorkflowReplayError, WorkflowReplayFailure, WorkflowReplayer, WorkflowReplayerOptions,
    workflow_replayer_options_builder,
};

/// Where the recorded histories live (`tests/histories`).
pub fn histories_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/histories"))
}

/// Every workflow type the worker registers (`payflow::startup::App::run`), by name.
pub const WORKFLOW_TYPES: [&str; 8] = [
    payflow_client::definitions::names::PAYMENT,
    payflow_client::definitions::names::REFUND,
    payflow_client::definitions::names::TRANSFER,
    payflow_client::definitions::names::PAYOUT,
    payflow_client::definitions::names::LEDGER_READ,
    payflow_client::definitions::names::NOTIFICATION,
    payflow_client::definitions::names::RECONCILIATION,
    payflow_client::definitions::names::RECON_DAILY,
];

/// Replayer options with every payflow workflow registered, as `App::run` registers them on
/// its task queues, and the same (default) data converter as the worker's client. A payload
/// codec added to the worker must be added here too, or recorded inputs cannot be decoded.
pub fn replayer_options() -> WorkflowReplayerOptions {
    all_workflows(WorkflowReplayerOptions::new())
        .expect("payflow's workflows register once each")
        .build()
}

/// Registers payflow's workflow types on a replayer options builder.
pub fn all_workflows<S: workflow_replayer_options_builder::State>(
    builder: temporalio_sdk::workflow_replayer::WorkflowReplayerOptionsBuilder<S>,
) -> Result<
    temporalio_sdk::workflow_replayer::WorkflowReplayerOptionsBuilder<S>,
    temporalio_sdk::WorkflowRegistrationError,
> {
    builder
        .register_workflow::<Payment>()?
        .register_workflow::<Refund>()?
        .register_workflow::<Transfer>()?
        .register_workflow::<Payout>()?
        .register_workflow::<LedgerRead>()?
        .register_workflow::<Notification>()?
        .register_workflow::<Reconciliation>()?
        .register_workflow::<ReconDaily>()
}

/// The replayer for histories the worker wrote through `codec` (`None`: plain payloads).
pub fn replayer_with(codec: Option<&payflow_client::EncryptionCodec>) -> WorkflowReplayer {
    let Some(codec) = codec else {
        return replayer();
    };
    let options =
        all_workflows(WorkflowReplayerOptions::new().data_converter(codec.data_converter()))
            .expect("payflow's workflows register once each")
            .build();
    WorkflowReplayer::new(options).expect("replayer with payflow's workflows")
}

/// The replayer for the current workflow code.
pub fn replayer() -> WorkflowReplayer {
    WorkflowReplayer::new(replayer_options()).expect("replayer with payflow's workflows")
}

/// One recorded history file.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// File name without `.json`, e.g. `Payment-happy`.
    pub name: String,
    pub path: PathBuf,
    /// The workflow type named in the history's first event.
    pub workflow_type: String,
    pub json: Vec<u8>,
}

impl Recorded {
    /// A fresh [`WorkflowHistory`] of this file (a history is consumed by a replay).
    pub fn history(&self) -> WorkflowHistory {
        WorkflowHistory::from_json(&self.json)
            .unwrap_or_else(|e| panic!("{}: not a workflow history: {e}", self.path.display()))
    }
}

/// Reads every `*.json` in `dir` (not its subfolders), sorted by name.
pub fn load_dir(dir: &Path) -> Vec<Recorded> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") || !path.is_file() {
            continue;
        }
        let json = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 file name")
            .to_string();
        let workflow_type = workflow_type_of(&json)
            .unwrap_or_else(|| panic!("{}: no WorkflowExecutionStarted event", path.display()));
        out.push(Recorded {
            name,
            path,
            workflow_type,
            json,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// All recorded histories of `tests/histories`.
pub fn load_all() -> Vec<Recorded> {
    load_dir(&histories_dir())
}

/// The workflow type from a history's first (started) event.
pub fn workflow_type_of(json: &[u8]) -> Option<String> {
    use temporalio_common::protos::temporal::api::history::v1::{
        History, history_event::Attributes,
    };
    let history: History = serde_json::from_slice(json).ok()?;
    match history.events.first()?.attributes.as_ref()? {
        Attributes::WorkflowExecutionStartedEventAttributes(a) => {
            a.workflow_type.as_ref().map(|t| t.name.clone())
        }
        _ => None,
    }
}

/// Replays one history; `Ok(None)` when the code is compatible with it, `Ok(Some(failure))`
/// when it is not, `Err` when the replay itself could not run.
pub async fn replay_one(
    replayer: &WorkflowReplayer,
    history: WorkflowHistory,
) -> Result<Option<WorkflowReplayFailure>, WorkflowReplayError> {
    match replayer.replay_workflow(history).await {
        Ok(()) => Ok(None),
        Err(WorkflowReplayError::Replay(failure)) => Ok(Some(failure)),
        Err(e) => Err(e),
    }
}

/// Replays each recorded history on its own worker and returns the ones that failed, with why.
pub async fn replay_failures(replayer: &WorkflowReplayer, recorded: &[Recorded]) -> Vec<String> {
    let mut failed = Vec::new();
    for r in recorded {
        match replay_one(replayer, r.history()).await {
            Ok(None) => {}
            Ok(Some(failure)) => {
                failed.push(format!("{} ({}): {failure}", r.name, r.path.display()))
            }
            Err(e) => failed.push(format!(
                "{} ({}): replay did not run: {e}",
                r.name,
                r.path.display()
            )),
        }
    }
    failed
}

// ---------------------------------------------------------------------------------------------
// Recording

/// What the recorder writes, and how.
#[derive(Debug, Clone, Default)]
pub struct RecordOptions {
    /// Where to write (default `tests/histories`).
    pub dir: Option<PathBuf>,
    /// Appended to the file name (`Payment-happy.v2.json`): histories of a new workflow version
    /// recorded beside the old ones, which must keep replaying.
    pub tag: Option<String>,
    /// Replace an existing file of the same name (default: keep it, it is a fixture).
    pub overwrite: bool,
}

impl RecordOptions {
    /// From the environment the recording script sets: `PAYFLOW_HISTORIES_DIR`,
    /// `PAYFLOW_HISTORIES_TAG`, `PAYFLOW_HISTORIES_OVERWRITE=1`.
    pub fn from_env() -> RecordOptions {
        let non_empty = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        RecordOptions {
            dir: non_empty("PAYFLOW_HISTORIES_DIR").map(PathBuf::from),
            tag: non_empty("PAYFLOW_HISTORIES_TAG"),
            overwrite: non_empty("PAYFLOW_HISTORIES_OVERWRITE").is_some_and(|v| v == "1"),
        }
    }

    fn path(&self, stem: &str) -> PathBuf {
        let dir = self.dir.clone().unwrap_or_else(histories_dir);
        let name = match &self.tag {
            Some(tag) => format!("{stem}.{tag}.json"),
            None => format!("{stem}.json"),
        };
        dir.join(name)
    }
}

/// Waits until no workflow of the client's namespace is running (children and callbacks
/// included), so every recorded history is complete.
pub async fn wait_all_closed(client: &Client, deadline: Duration) {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let running = client
            .count_workflows("ExecutionStatus = \"Running\"", Default::default())
            .await
            .map(|c| c.count())
            .unwrap_or(usize::MAX);
        if running == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{running} workflow(s) of namespace {} still running after {deadline:?}",
            client.namespace()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ids of the workflows of `workflow_type` in the client's namespace, oldest first.
pub async fn workflow_ids_of_type(client: &Client, workflow_type: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let mut found: Vec<(Option<std::time::SystemTime>, String)> = client
        .list_workflows(
            format!("WorkflowType = \"{workflow_type}\""),
            Default::default(),
        )
        .map_ok(|w| (w.start_time(), w.id().to_string()))
        .try_collect()
        .await
        .expect("list workflows");
    found.sort();
    found.dedup_by(|a, b| a.1 == b.1);
    found.into_iter().map(|(_, id)| id).collect()
}

/// The full histories of `workflow_id`'s runs as JSON: the latest first, then each run it
/// continued from (at most ten).
pub async fn fetch_runs(client: &Client, workflow_id: &str) -> Vec<serde_json::Value> {
    let mut runs = Vec::new();
    let mut run_id: Option<String> = None;
    for _ in 0..10 {
        let handle = match &run_id {
            None => client.get_workflow_handle::<UntypedWorkflow>(workflow_id.to_string()),
            Some(run) => temporalio_client::WorkflowExecutionInfo::builder()
                .namespace(client.namespace())
                .workflow_id(workflow_id)
                .run_id(run.clone())
                .build()
                .bind_untyped(client.clone()),
        };
        let json = handle
            .fetch_history(Default::default())
            .to_json()
            .await
            .unwrap_or_else(|e| panic!("history of {workflow_id}: {e}"));
        let value: serde_json::Value = serde_json::from_slice(&json).expect("history JSON");
        run_id = value["events"][0]["attributes"]["WorkflowExecutionStartedEventAttributes"]
            ["continued_execution_run_id"]
            .as_str()
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        runs.push(value);
        if run_id.is_none() {
            break;
        }
    }
    runs
}

/// Fetches the full history of the latest run of `workflow_id` and writes it as
/// `{stem}.json`; returns the path written, or `None` when a file was kept.
pub async fn save(
    client: &Client,
    workflow_id: &str,
    stem: &str,
    opts: &RecordOptions,
) -> Option<PathBuf> {
    let path = opts.path(stem);
    if path.exists() && !opts.overwrite {
        eprintln!(
            "kept {} (set PAYFLOW_HISTORIES_OVERWRITE=1 to replace)",
            path.display()
        );
        return None;
    }
    // The latest run as `{stem}`, then each run it continued from as `{stem}-before{n}` (a run
    // that continued as new, e.g. onto another task queue, has code paths of its own).
    for (n, value) in fetch_runs(client, workflow_id)
        .await
        .into_iter()
        .enumerate()
    {
        let mut text = serde_json::to_string_pretty(&value).expect("history JSON");
        text.push('\n');
        let file = if n == 0 {
            path.clone()
        } else {
            opts.path(&format!("{stem}-before{n}"))
        };
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("histories dir");
        }
        std::fs::write(&file, text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        eprintln!("recorded {workflow_id} -> {}", file.display());
    }
    Some(path)
}

// ---------------------------------------------------------------------------------------------
// The versioning probe

/// A two-timer workflow whose recorded history (`tests/histories/probe/`) shows, in
/// `tests/tests/replay.rs`, what an unguarded change does to replay (it fails) and what the
/// SDK's patching API does (`ctx.patched(...)`: old histories replay, new runs take the new
/// path). Not registered by the worker; the recorder runs it on a worker of its own.
pub mod probe {
    use std::time::Duration;

    use temporalio_macros::{workflow, workflow_methods};
    use temporalio_sdk::{WorkflowContext, WorkflowContextView, WorkflowResult};

    pub const NAME: &str = "ReplayProbe";
    pub const TASK_QUEUE: &str = "payflow-replay-probe";
    /// One step of the probe.
    pub const STEP: Duration = Duration::from_millis(10);

    /// Version 1, the one recorded: two timers, then the number of steps taken.
    #[workflow]
    pub struct ProbeV1 {
        steps: u32,
    }

    #[workflow_methods]
    impl ProbeV1 {
        #[init]
        pub fn new(_ctx: &WorkflowContextView, steps: u32) -> Self {
            ProbeV1 { steps }
        }

        #[run(name = NAME)]
        pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<u32> {
            let steps = ctx.state(|s| s.steps);
            for _ in 0..steps {
                ctx.timer(STEP).await;
            }
            Ok(steps)
        }
    }
}
