//! Merchant callbacks end to end: retries on the schedule with every attempt recorded,
//! exhaustion and operator resend, blocked merchants, and long deliveries continuing as new.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use tokio::sync::watch;

use payflow::cli_notify::{NotifyCommand, TemporalArgs};
use payflow::stack::{self, Stack};
use payflow_client::definitions::{NotificationWorkflow, names, task_queues};
use payflow_client::ids::notification_workflow_id;
use payflow_client::{
    EventId, MerchantId, NotificationRequest, NotificationStatus, NotifyState, Priority,
};
use payflow_tests::{Db, Timing, eventually, spawn_app, spawn_app_with};
use temporalio_client::{WorkflowDescribeOptions, WorkflowExecutionStatus};

fn event(merchant: &str, id: &str) -> NotificationRequest {
    NotificationRequest {
        merchant_id: MerchantId::parse(merchant).unwrap(),
        event_id: EventId::parse(id).unwrap(),
        event_type: "order.shipped".into(),
        data: serde_json::json!({"order": id}),
        priority: Priority::Batch,
        notify_url: None,
        resume: None,
    }
}

async fn notification_where(
    app: &Stack,
    req: &NotificationRequest,
    what: &str,
    pred: impl Fn(&NotificationStatus) -> bool,
) -> NotificationStatus {
    eventually(Duration::from_secs(45), what, || async {
        let s = app
            .payflow
            .notification(&req.merchant_id, &req.event_id)
            .await
            .ok()?;
        pred(&s).then_some(s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_down_for_three_attempts_gets_the_fourth() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    app.merchant.fail_next(3);
    let req = event(stack::MERCHANT, "e-down-3");
    app.payflow.notify(req.clone()).await.unwrap();
    let s = notification_where(&app, &req, "delivered", |s| {
        s.state == NotifyState::Delivered
    })
    .await;
    assert_eq!(s.attempts.len(), 4, "{:?}", s.attempts);
    assert!(
        s.attempts[..3]
            .iter()
            .all(|a| a.status == Some(503) && !a.delivered)
    );
    assert!(s.attempts[3].delivered && s.attempts[3].status == Some(200));
    let numbers: Vec<u32> = s.attempts.iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    // The merchant saw four posts of the same event, the same webhook-id each time.
    let got = app.merchant.received();
    assert_eq!(got.len(), 4);
    assert!(
        got.iter()
            .all(|c| c.webhook_id == "e-down-3" && c.signature_valid)
    );
    // The first attempt ran on the event's own queue; after it failed the delivery continued
    // on the retry queue, carrying its attempts (one more run, same workflow id).
    assert!(s.runs >= 1, "continued on the retry queue: {s:?}");
    let id = notification_workflow_id(&req.merchant_id, &req.event_id);
    let current = app
        .payflow
        .temporal()
        .get_workflow_handle::<NotificationWorkflow>(id.to_string())
        .describe(WorkflowDescribeOptions::default())
        .await
        .unwrap();
    assert_eq!(current.task_queue(), task_queues::NOTIFY_RETRY);
    let first = eventually(Duration::from_secs(10), "first run listed", || async {
        use futures::StreamExt;
        let runs: Vec<_> = app
            .payflow
            .temporal()
            .list_workflows(format!("WorkflowId = '{id}'"), Default::default())
            .filter_map(|r| async move { r.ok() })
            .collect()
            .await;
        runs.into_iter()
            .find(|w| w.status() == WorkflowExecutionStatus::ContinuedAsNew)
    })
    .await;
    assert_eq!(first.task_queue(), task_queues::NOTIFY_BATCH);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_event_is_parked_until_an_operator_resends_it() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    app.merchant.fail_next(1_000);
    let req = event(stack::MERCHANT, "e-never");
    app.payflow.notify(req.clone()).await.unwrap();
    // The schedule has three retries: four attempts, then parked.
    let s = notification_where(&app, &req, "exhausted", |s| {
        s.state == NotifyState::Exhausted
    })
    .await;
    assert_eq!(s.attempts.len(), 4);
    assert_eq!(
        app.merchant.received().len(),
        4,
        "nothing more while parked"
    );

    // The operator resends with `payflow notify resend demo e-never --json`.
    app.merchant.fail_next(0);
    let (address, namespace) = app.temporal_target();
    payflow::cli_notify::run(NotifyCommand::Resend {
        merchant: stack::MERCHANT.into(),
        event_id: "e-never".into(),
        json: true,
        temporal: TemporalArgs {
            address: address.to_string(),
            namespace: namespace.to_string(),
            config: None,
        },
    })
    .await
    .unwrap();
    let s = notification_where(&app, &req, "delivered after resend", |s| {
        s.state == NotifyState::Delivered
    })
    .await;
    assert_eq!(s.attempts.len(), 5);
    assert!(s.attempts[4].delivered);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_merchant_is_sent_nothing_and_the_event_is_kept() {
    let secret = payflow_tests::keys().path(payflow::devkeys::DevKeys::MERCHANT_SECRET);
    let extra = format!(
        "\n[[merchants]]\nid = \"banned\"\nstatus = \"blocked\"\nnotify_url = \"http://127.0.0.1:9/notify\"\n\
         allowed_notify_hosts = [\"127.0.0.1\"]\nwebhook_secret = {{ file = \"{}\" }}\n",
        secret.display()
    );
    let Some(app) = spawn_app_with(Db::Sqlite, Timing::default(), extra).await else {
        return;
    };
    let req = event("banned", "e-banned");
    app.payflow.notify(req.clone()).await.unwrap();
    let s = notification_where(&app, &req, "held", |s| s.state == NotifyState::Held).await;
    assert!(s.attempts.is_empty(), "nothing was sent");
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_delivery_continues_as_new_and_keeps_its_attempts() {
    let timing = Timing {
        notify_schedule_ms: vec![100; 8],
        notify_continue_after_events: Some(20),
        ..Timing::default()
    };
    let Some(app) = spawn_app(Db::Sqlite, timing).await else {
        return;
    };
    app.merchant.fail_next(4);
    let req = event(stack::MERCHANT, "e-long");
    app.payflow.notify(req.clone()).await.unwrap();
    let s = notification_where(&app, &req, "delivered", |s| {
        s.state == NotifyState::Delivered
    })
    .await;
    assert!(s.runs >= 1, "continued as new at least once: {s:?}");
    assert_eq!(s.attempts.len(), 5, "attempts carried across runs");
    let numbers: Vec<u32> = s.attempts.iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    assert_eq!(
        app.merchant.received().len(),
        5,
        "no attempt repeated by a new run"
    );
    app.shutdown().await.unwrap();
}

/// A merchant endpoint that holds every callback until released, recording the order in
/// which the events arrived.
struct HoldingMerchant {
    url: String,
    arrived: Arc<Mutex<Vec<String>>>,
    release: watch::Sender<bool>,
}

impl HoldingMerchant {
    async fn spawn() -> HoldingMerchant {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/notify", listener.local_addr().unwrap());
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let (release, released) = watch::channel(false);
        let seen = arrived.clone();
        let app = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                let seen = seen.clone();
                let mut released = released.clone();
                async move {
                    let id = headers["webhook-id"].to_str().unwrap().to_string();
                    seen.lock().unwrap().push(id);
                    let _ = released.wait_for(|open| *open).await;
                    "ok"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        HoldingMerchant {
            url,
            arrived,
            release,
        }
    }

    fn arrived(&self) -> Vec<String> {
        self.arrived.lock().unwrap().clone()
    }
}

/// Deliveries over a merchant's bound (4 at once) wait in its line and are woken by the gate
/// as the merchant's slots free: no polling, no move to the retry queue, no fallback timer
/// (30 s) waited out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_over_a_busy_merchant_s_bound_wait_in_line_and_are_woken() {
    let merchant = HoldingMerchant::spawn().await;
    let secret = payflow_tests::keys().path(payflow::devkeys::DevKeys::MERCHANT_SECRET);
    let extra = format!(
        "\n[[merchants]]\nid = \"slowshop\"\nnotify_url = \"{}\"\n\
         allowed_notify_hosts = [\"127.0.0.1\"]\nallow_plain_http = [\"127.0.0.1\"]\n\
         allow_private_network = true\nwebhook_secret = {{ file = \"{}\" }}\n",
        merchant.url,
        secret.display()
    );
    let Some(app) = spawn_app_with(Db::Sqlite, Timing::default(), extra).await else {
        return;
    };
    let events: Vec<NotificationRequest> = (0..7)
        .map(|i| NotificationRequest {
            priority: Priority::Realtime,
            ..event("slowshop", &format!("e-line-{i}"))
        })
        .collect();
    for e in &events {
        app.payflow.notify(e.clone()).await.unwrap();
    }
    // Four reach the merchant and hang there (a first try runs inside its workflow's task, so
    // those four answer no query until it ends); the other three are deferred (Retrying, no
    // attempt made).
    eventually(
        Duration::from_secs(45),
        "four callbacks at the merchant",
        || async { (merchant.arrived().len() >= 4).then_some(()) },
    )
    .await;
    let arrived = merchant.arrived();
    let mut waiting = Vec::new();
    for e in events
        .iter()
        .filter(|e| !arrived.contains(&e.event_id.to_string()))
    {
        let s = notification_where(&app, e, "deferred", |s| s.state == NotifyState::Retrying).await;
        assert!(s.attempts.is_empty(), "deferred, not attempted: {s:?}");
        waiting.push(e.clone());
    }
    assert_eq!(merchant.arrived().len(), 4, "the merchant's bound");
    assert_eq!(waiting.len(), 3);
    merchant.release.send(true).unwrap();
    for e in &waiting {
        let s =
            notification_where(&app, e, "delivered", |s| s.state == NotifyState::Delivered).await;
        assert_eq!(s.attempts.len(), 1, "one attempt: {s:?}");
        assert_eq!(s.runs, 0, "waited in place, not on the retry queue: {s:?}");
        let id = notification_workflow_id(&e.merchant_id, &e.event_id);
        let events = app
            .payflow
            .temporal()
            .get_workflow_handle::<NotificationWorkflow>(id.to_string())
            .fetch_history(Default::default())
            .into_events()
            .await
            .unwrap();
        let woken = events.iter().any(|e| {
            matches!(
                &e.attributes,
                Some(Attributes::WorkflowExecutionSignaledEventAttributes(a))
                    if a.signal_name == names::WAKE
            )
        });
        assert!(woken, "{id} was woken by the gate");
        assert!(
            !events
                .iter()
                .any(|e| e.event_type() == EventType::TimerFired),
            "{id} did not wait out its fallback timer"
        );
    }
    // Every event reached the merchant exactly once.
    let mut arrived = merchant.arrived();
    arrived.sort();
    let mut all: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    all.sort();
    assert_eq!(arrived, all);
    app.shutdown().await.unwrap();
}

/// A status query that reaches the worker together with a callback's first workflow task (here:
/// asked while no worker runs) makes the SDK end that task early: what the code does after the
/// local first try (after a failed try, the move to the retry queue) lands in a later task.
/// Such a history must replay; it did not when the try ended before the query was answered
/// and the move was decided by a patch asked for after the try (fixed by `notify-v2`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_with_the_first_task_leaves_a_history_that_replays() {
    let Some(mut app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    app.merchant.fail_next(1);
    let req = NotificationRequest {
        priority: Priority::Realtime,
        ..event(stack::MERCHANT, "e-query-first")
    };
    app.kill_worker().await.unwrap();
    app.payflow.notify(req.clone()).await.unwrap();
    let query = {
        let payflow = app.payflow.clone();
        let req = req.clone();
        tokio::spawn(async move { payflow.notification(&req.merchant_id, &req.event_id).await })
    };
    app.start_worker().await.unwrap();
    let answered = query.await.unwrap().expect("the query is answered");
    assert_eq!(answered.event_id, req.event_id);
    let s = notification_where(&app, &req, "delivered", |s| {
        s.state == NotifyState::Delivered
    })
    .await;
    assert_eq!(s.attempts.len(), 2, "{s:?}");
    let id = notification_workflow_id(&req.merchant_id, &req.event_id);
    let runs = payflow_tests::histories::fetch_runs(app.payflow.temporal(), &id).await;
    let first = runs.last().expect("the first run");
    // The split: the retry decision (a continue-as-new onto the retry queue) is not in the
    // first task. Whether the try's result closed that task (the shape that did not replay)
    // or came in the next depends on whether the try ended before the query was answered.
    let history: temporalio_common::protos::temporal::api::history::v1::History =
        serde_json::from_value(first.clone()).unwrap();
    let kinds: Vec<EventType> = history.events.iter().map(|e| e.event_type()).collect();
    let first_done = kinds
        .iter()
        .position(|k| *k == EventType::WorkflowTaskCompleted)
        .expect("a completed first task");
    let second = &kinds[first_done + 1..];
    let next_task = second
        .iter()
        .position(|k| *k == EventType::WorkflowTaskScheduled)
        .expect("a second workflow task");
    assert!(
        !second[..next_task].contains(&EventType::WorkflowExecutionContinuedAsNew),
        "the query split the first task: {kinds:?}"
    );
    let replayer = payflow_tests::histories::replayer_with(app.codec());
    for run in &runs {
        let history =
            temporalio_client::WorkflowHistory::from_json(&serde_json::to_vec(run).unwrap())
                .unwrap();
        let failure = payflow_tests::histories::replay_one(&replayer, history)
            .await
            .expect("replay runs");
        assert!(failure.is_none(), "{id} replays: {failure:?}");
    }
    app.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// A payment's callback: its first try is the payment's own (seed 000's synchronous layer)

/// The payment's callback, delivered at its first try, leaves no Notification workflow behind:
/// the payment itself is found by `payflow notify list --state delivered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_callback_delivered_at_its_first_try_needs_no_workflow() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    let req = payflow_tests::payment_request("o-first-try", "8.80");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    let ok = payflow_tests::accepted_callbacks(&app).await;
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].body["type"], "payment.succeeded");
    let event = format!("{}-payment-succeeded", prepay.order_id);
    assert_eq!(ok[0].webhook_id, event);

    let id = notification_workflow_id(&req.merchant_id, &EventId::parse(&event).unwrap());
    let missing = app
        .payflow
        .temporal()
        .get_workflow_handle::<NotificationWorkflow>(id.clone())
        .describe(WorkflowDescribeOptions::default())
        .await;
    assert!(
        matches!(
            missing,
            Err(temporalio_client::errors::WorkflowInteractionError::NotFound(_))
        ),
        "{id} was started: {missing:?}"
    );

    let payment_id =
        payflow_client::ids::payment_workflow_id(&req.merchant_id, &req.merchant_order_no);
    let listed = eventually(Duration::from_secs(10), "the payment listed", || async {
        let rows = payflow::cli_notify::list(
            &app.payflow,
            NotifyState::Delivered,
            Some(&req.merchant_id),
            10,
        )
        .await
        .ok()?;
        rows.into_iter().find(|r| r.workflow_id == payment_id)
    })
    .await;
    assert_eq!(listed.workflow_type, "Payment");
    app.shutdown().await.unwrap();
}

/// A first try that fails hands the callback to its Notification workflow, which starts on the
/// retry queue with that attempt on record and the same body, and delivers the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_callback_whose_first_try_failed_is_retried_by_its_notification() {
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    app.merchant.fail_next(1);
    let req = payflow_tests::payment_request("o-first-try-fails", "9.90");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();
    let callback = NotificationRequest {
        event_id: EventId::parse(format!("{}-payment-succeeded", prepay.order_id)).unwrap(),
        ..event(stack::MERCHANT, "unused")
    };
    let s = notification_where(&app, &callback, "delivered", |s| {
        s.state == NotifyState::Delivered
    })
    .await;
    let numbers: Vec<(u32, Option<u16>, bool)> = s
        .attempts
        .iter()
        .map(|a| (a.number, a.status, a.delivered))
        .collect();
    assert_eq!(numbers, [(1, Some(503), false), (2, Some(200), true)]);

    let got = app.merchant.received();
    assert_eq!(got.len(), 2, "one failed try, one delivery");
    assert!(
        got.iter()
            .all(|c| c.webhook_id == callback.event_id.as_str() && c.signature_valid)
    );
    assert_eq!(got[0].body, got[1].body, "the retry sends the same body");

    let id = notification_workflow_id(&callback.merchant_id, &callback.event_id);
    let described = app
        .payflow
        .temporal()
        .get_workflow_handle::<NotificationWorkflow>(id)
        .describe(WorkflowDescribeOptions::default())
        .await
        .unwrap();
    assert_eq!(described.task_queue(), task_queues::NOTIFY_RETRY);
    app.shutdown().await.unwrap();
}
