//! Determinism (issue 8): every recorded history in `tests/histories/` replays against the
//! current workflow code with the SDK's replayer, and a deliberately changed workflow does not.
//!
//! No server is needed: the replayer feeds each history to an in-process worker and reports
//! whether the code issued the same commands. Histories are recorded by
//! `scripts/record-histories.sh`; how to change a workflow without breaking them is in the
//! README ("Determinism and versioning").

use payflow_activities::payment::{OpenPayment, PaymentActivities};
use payflow_client::definitions::{names, search_attributes as sa};
use payflow_client::{PayState, PaymentRequest, PaymentStatus, Prepay};
use payflow_tests::histories::{self, Recorded, probe};
use payflow_workflows::options::{now_ms, side_effect};
use temporalio_client::WorkflowHistory;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::workflow_replayer::{
    WorkflowReplayFailure, WorkflowReplayer, WorkflowReplayerOptions,
};
use temporalio_sdk::{ApplicationFailure, WorkflowContext, WorkflowContextView, WorkflowResult};

type HandlerError = Box<dyn std::error::Error + Send + Sync>;

fn of_type<'a>(all: &'a [Recorded], workflow_type: &str) -> Vec<&'a Recorded> {
    all.iter()
        .filter(|r| r.workflow_type == workflow_type)
        .collect()
}

#[tokio::test]
async fn every_recorded_history_replays() {
    let recorded = histories::load_all();
    assert!(
        !recorded.is_empty(),
        "no histories in {}: record them with scripts/record-histories.sh",
        histories::histories_dir().display()
    );
    let failed = histories::replay_failures(&histories::replayer(), &recorded).await;
    assert!(
        failed.is_empty(),
        "{} of {} recorded histories do not replay against the current workflow code \
         (a non-deterministic change: guard it with ctx.patched(..), see the README's \
         \"Determinism and versioning\"):\n  {}",
        failed.len(),
        recorded.len(),
        failed.join("\n  ")
    );
    eprintln!("{} histories replayed", recorded.len());
}

/// Each workflow type the worker runs has recorded histories, Payment and Refund their failure
/// paths too.
#[test]
fn every_workflow_type_is_recorded() {
    let recorded = histories::load_all();
    for t in histories::WORKFLOW_TYPES {
        assert!(
            !of_type(&recorded, t).is_empty(),
            "no recorded {t} history in {}",
            histories::histories_dir().display()
        );
    }
    let names: Vec<&str> = recorded.iter().map(|r| r.name.as_str()).collect();
    for expected in [
        "Payment-happy",
        "Payment-expired",
        "Payment-declined",
        "Payment-rejected",
        "Payment-mismatch_accept",
        "Payment-mismatch_refund",
        "Refund-succeeded",
        "Refund-declined",
        "Refund-exceeds_paid",
        "Refund-processing_then_query",
        "Refund-late_payment",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} not recorded: {names:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Red on a non-deterministic change

/// Payment as someone might change it: "ask the channel about the trade before opening the
/// order". The same name, input and early steps as [`payflow_workflows::Payment`], then an
/// activity the recorded runs never scheduled at that point.
#[workflow]
struct QueryFirstPayment {
    request: PaymentRequest,
}

#[workflow_methods]
impl QueryFirstPayment {
    #[init]
    fn new(_ctx: &WorkflowContextView, request: PaymentRequest) -> Self {
        QueryFirstPayment { request }
    }

    #[run(name = names::PAYMENT)]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<PaymentStatus> {
        let request = ctx.state(|s| s.request.clone());
        ctx.upsert_search_attributes([
            sa::MERCHANT_ID.value_set(request.merchant_id.to_string()),
            sa::ORDER_NO.value_set(request.merchant_order_no.to_string()),
            sa::AMOUNT_MINOR.value_set(request.amount.minor_units()),
            sa::PAY_STATE.value_set(PayState::Created.to_string()),
        ]);
        let order_id = ctx.uuid4().replace('-', "");
        let requested_at_ms = now_ms(ctx.workflow_time());
        // The change: a new first activity.
        ctx.execute_activity(
            PaymentActivities::query_trade,
            order_id.clone(),
            side_effect("query the trade first"),
        )
        .await?;
        ctx.execute_activity(
            PaymentActivities::open_payment,
            OpenPayment {
                order_id,
                request,
                requested_at_ms,
            },
            side_effect("open order"),
        )
        .await?;
        Err(ApplicationFailure::non_retryable("replay never gets this far").into())
    }

    /// The recorded runs were started with this update (update-with-start); it is kept so the
    /// only difference is the activity.
    #[update(name = names::PREPAY)]
    async fn prepay(
        ctx: &mut WorkflowContext<Self>,
        _req: PaymentRequest,
    ) -> Result<Prepay, HandlerError> {
        ctx.wait_condition(|_: &Self| false).await?;
        Err("no prepay".into())
    }
}

#[tokio::test]
async fn a_non_deterministic_payment_change_fails_replay() {
    let recorded = histories::load_all();
    let payments: Vec<Recorded> = of_type(&recorded, names::PAYMENT)
        .into_iter()
        .cloned()
        .collect();
    assert!(!payments.is_empty(), "no recorded Payment history");

    // The current code replays them...
    let current = histories::replay_failures(&histories::replayer(), &payments).await;
    assert!(current.is_empty(), "{current:?}");

    // ...the changed code replays none of them, and says why.
    let changed = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<QueryFirstPayment>()
            .unwrap()
            .build(),
    )
    .unwrap();
    for p in &payments {
        let outcome = histories::replay_one(&changed, p.history())
            .await
            .unwrap_or_else(|e| panic!("{}: replay did not run: {e}", p.name));
        match outcome {
            Some(WorkflowReplayFailure::Nondeterminism { message }) => {
                // Caught where the change is: the recorded first step (the `open_payment`
                // activity, in later runs the `payment-v2` or `payment-v3` patch marker, and
                // in runs started at version 1 the local `open_payment`'s marker) is not
                // what the changed code does first.
                assert!(
                    (message.contains("open_payment") && message.contains("query_trade"))
                        || message.contains("payment-v2")
                        || message.contains("payment-v3")
                        || message.contains("Missing associated machine for LocalActivity"),
                    "{}: {message}",
                    p.name
                );
                eprintln!("{}: nondeterminism detected: {message}", p.name);
            }
            other => panic!(
                "{}: expected a nondeterminism failure against the changed Payment, got {other:?}",
                p.name
            ),
        }
    }
    // And the suite's own check reports each of them.
    let failed = histories::replay_failures(&changed, &payments).await;
    assert_eq!(failed.len(), payments.len(), "{failed:?}");
}

// ---------------------------------------------------------------------------------------------
// Versioned inputs (`payflow_client::Versioned`) during a rolling upgrade

/// `recorded` as if its starter had been a client at version 1: the started event's input
/// gets `payflow_workflow_version`, the rest of the history is unchanged. That is the history
/// a worker from before versioned inputs writes for such a client's start: it ignores the
/// field and asks its patches. (A start at a later version implies more than those patches:
/// its workers must be upgraded first.)
fn started_by_a_versioned_client(recorded: &Recorded) -> WorkflowHistory {
    use base64::Engine;
    let mut history: serde_json::Value = serde_json::from_slice(&recorded.json).unwrap();
    let data = input_data(&mut history);
    let mut input = decode_json(data);
    assert!(
        input.get("payflow_workflow_version").is_none(),
        "{}: already versioned",
        recorded.name
    );
    input["payflow_workflow_version"] = 1.into();
    *data = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&input).unwrap())
        .into();
    WorkflowHistory::from_json(&serde_json::to_vec(&history).unwrap()).unwrap()
}

/// The started event's input payload (its base64 `data`) in a history's JSON.
fn input_data(history: &mut serde_json::Value) -> &mut serde_json::Value {
    &mut history["events"][0]["attributes"]["WorkflowExecutionStartedEventAttributes"]["input"]["payloads"]
        [0]["data"]
}

/// A payload's base64 `data`, read as JSON.
fn decode_json(data: &serde_json::Value) -> serde_json::Value {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.as_str().expect("base64 payload data"))
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A new client's payment and callback, run by a worker that predates versioned inputs (its
/// histories hold the `payment-v3` and `notify-v2` markers), still replay once the workers are
/// upgraded: the version says the patch is on, and replay consumes the old marker.
#[tokio::test]
async fn runs_of_new_clients_on_old_workers_replay_after_the_upgrade() {
    let recorded = histories::load_all();
    let marked = |name: &str, patch: &str| {
        let r = recorded
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} is not recorded"));
        assert_eq!(patch_markers(r), [patch], "{name}");
        r.clone()
    };
    let cases = [
        marked("Payment-happy.v4", "payment-v3"),
        marked("Payment-expired.v4", "payment-v3"),
        marked("Notification-delivered.v5", "notify-v2"),
        marked("Notification-retried-before1.v5", "notify-v2"),
    ];
    let replayer = histories::replayer();
    for r in &cases {
        let outcome = histories::replay_one(&replayer, started_by_a_versioned_client(r))
            .await
            .unwrap_or_else(|e| panic!("{}: replay did not run: {e}", r.name));
        assert!(outcome.is_none(), "{}: {outcome:?}", r.name);
    }
}

/// The other half of the bargain: a versioned run's history has no patch marker (that is what
/// the version saves), and it replays.
#[tokio::test]
async fn versioned_runs_record_no_patch_marker() {
    let recorded = histories::load_all();
    let replayer = histories::replayer();
    for name in [
        "Payment-happy.v6",
        "Payment-happy.v7",
        "Notification-delivered.v6",
    ] {
        let r = recorded
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} is not recorded"));
        let text = String::from_utf8_lossy(&r.json);
        assert!(input_version(r) >= 1, "{name} was not started versioned");
        assert_eq!(patch_markers(r), Vec::<String>::new(), "{name}");
        assert!(
            !text.contains("TemporalChangeVersion"),
            "{name} upserts TemporalChangeVersion"
        );
        let outcome = histories::replay_one(&replayer, r.history()).await.unwrap();
        assert!(outcome.is_none(), "{name}: {outcome:?}");
    }
}

/// The patch ids of a history's patch markers, in order.
fn patch_markers(r: &Recorded) -> Vec<String> {
    let history: serde_json::Value = serde_json::from_slice(&r.json).unwrap();
    history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["attributes"].get("MarkerRecordedEventAttributes"))
        .filter(|m| m["marker_name"] == "core_patch")
        .map(|m| {
            decode_json(&m["details"]["patch-data"]["payloads"][0]["data"])["id"]
                .as_str()
                .expect("patch id")
                .to_string()
        })
        .collect()
}

/// The input version a history's run was started at (0: none).
fn input_version(r: &Recorded) -> u64 {
    let mut history: serde_json::Value = serde_json::from_slice(&r.json).unwrap();
    decode_json(input_data(&mut history))
        .get("payflow_workflow_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Versioning with the SDK's patching API, on the probe's recorded history

/// Version 2 of the probe, unguarded: one more step before the others.
#[workflow]
struct ProbeV2Unguarded {
    steps: u32,
}

#[workflow_methods]
impl ProbeV2Unguarded {
    #[init]
    fn new(_ctx: &WorkflowContextView, steps: u32) -> Self {
        ProbeV2Unguarded { steps }
    }

    #[run(name = probe::NAME)]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<u32> {
        let steps = ctx.state(|s| s.steps);
        ctx.timer(probe::STEP).await;
        for _ in 0..steps {
            ctx.timer(probe::STEP).await;
        }
        Ok(steps + 1)
    }
}

/// Version 2 of the probe done right: the new step only in runs that recorded the patch.
#[workflow]
struct ProbeV2Patched {
    steps: u32,
}

#[workflow_methods]
impl ProbeV2Patched {
    #[init]
    fn new(_ctx: &WorkflowContextView, steps: u32) -> Self {
        ProbeV2Patched { steps }
    }

    #[run(name = probe::NAME)]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<u32> {
        let steps = ctx.state(|s| s.steps);
        let extra = if ctx.patched("probe-extra-step") {
            ctx.timer(probe::STEP).await;
            1
        } else {
            0
        };
        for _ in 0..steps {
            ctx.timer(probe::STEP).await;
        }
        Ok(steps + extra)
    }
}

fn probe_history() -> Recorded {
    let dir = histories::histories_dir().join("probe");
    histories::load_dir(&dir)
        .into_iter()
        .find(|r| r.name == "ReplayProbe-v1")
        .unwrap_or_else(|| panic!("{}/ReplayProbe-v1.json not recorded", dir.display()))
}

async fn replay_probe(options: WorkflowReplayerOptions) -> Option<WorkflowReplayFailure> {
    let replayer = WorkflowReplayer::new(options).unwrap();
    histories::replay_one(&replayer, probe_history().history())
        .await
        .expect("replay runs")
}

#[tokio::test]
async fn probe_v1_replays_against_itself() {
    let outcome = replay_probe(
        WorkflowReplayerOptions::new()
            .register_workflow::<probe::ProbeV1>()
            .unwrap()
            .build(),
    )
    .await;
    assert_eq!(outcome, None);
}

#[tokio::test]
async fn an_unguarded_change_fails_replay() {
    let outcome = replay_probe(
        WorkflowReplayerOptions::new()
            .register_workflow::<ProbeV2Unguarded>()
            .unwrap()
            .build(),
    )
    .await;
    assert!(
        matches!(outcome, Some(WorkflowReplayFailure::Nondeterminism { .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_patched_change_replays_old_histories() {
    let outcome = replay_probe(
        WorkflowReplayerOptions::new()
            .register_workflow::<ProbeV2Patched>()
            .unwrap()
            .build(),
    )
    .await;
    assert_eq!(outcome, None);
}
