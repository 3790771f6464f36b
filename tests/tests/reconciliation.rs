//! Reconciliation end to end (issue 7): real payments and a refund through the stack, then the
//! `Reconciliation` workflow on the dev server against the sandbox's statements, in which the
//! sandbox's statement knobs plant one difference of every kind (a trade nobody has, a trade
//! left out, another amount, another status, another fee, a trade moved to the next day's
//! statement). Every planted difference must be found with its kind, and nothing else. Also:
//! a statement that becomes available only after two retries (the run waits on durable
//! timers), a statement that never comes (`Manual`, then the operator's `retry`), the WeChat
//! Pay bill streamed and checked against its SHA-1, and the daily Temporal Schedule.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Days, FixedOffset, NaiveDate};
use futures::StreamExt;
use payflow::sandbox::{ExtraLine, SandboxStatus, StatementKnobs};
use payflow::stack::{self, Stack};
use payflow_client::definitions::ReconciliationWorkflow;
use payflow_client::{
    MerchantId, OrderNo, PayState, PaymentRequest, ProductId, ReconDiscrepancyKind as Kind,
    ReconRequest, ReconState, ReconSubject, ReconSummary, RefundKind, RefundNo, RefundRequest,
    RefundState,
};
use payflow_tests::{Db, Timing, cny, eventually, payment_request, payment_where, spawn_app_with};
use rust_decimal::Decimal;
use temporalio_client::WorkflowListOptions;
use temporalio_client::schedules::ScheduleOverlapPolicy;
use temporalio_common::protos::temporal::api::enums::v1::EventType;

const DEADLINE: Duration = Duration::from_secs(90);

/// `[recon]` for a test: statement retries in milliseconds.
fn recon_toml(retry_ms: &[u64], deadline_ms: u64, schedule: bool) -> String {
    let retry: Vec<String> = retry_ms.iter().map(u64::to_string).collect();
    format!(
        "\n[recon]\nstatement_retry_ms = [{}]\nstatement_deadline_ms = {deadline_ms}\n\
         schedule = {schedule}\npage_size = 2\n",
        retry.join(", ")
    )
}

fn beijing_date(ms: i64) -> NaiveDate {
    let beijing = FixedOffset::east_opt(8 * 3600).unwrap();
    DateTime::from_timestamp_millis(ms)
        .unwrap()
        .with_timezone(&beijing)
        .date_naive()
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// Pays `amount` for `order_no` through the stack; returns our order id once it succeeded.
async fn paid(app: &Stack, req: PaymentRequest) -> String {
    app.payflow.pay(req.clone()).await.expect("pay");
    let s = payment_where(app, &req, "payment to succeed", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    s.order_id.expect("order id")
}

/// The Beijing day the sandbox booked the trade on.
fn sandbox_day(app: &Stack, order_id: &str) -> NaiveDate {
    beijing_date(
        app.sandbox
            .order(order_id)
            .and_then(|o| o.paid_at_ms)
            .expect("paid at the channel"),
    )
}

type Found = BTreeSet<(Kind, ReconSubject, String, Option<String>)>;

fn found(s: &ReconSummary, resolved: bool) -> Found {
    s.discrepancies
        .iter()
        .filter(|d| d.resolution.is_some() == resolved)
        .map(|d| (d.kind, d.subject, d.order_id.clone(), d.refund_id.clone()))
        .collect()
}

fn payment(kind: Kind, order: &str) -> (Kind, ReconSubject, String, Option<String>) {
    (kind, ReconSubject::Payment, order.to_string(), None)
}

/// Timer events of the workflow's history.
async fn timers_started(app: &Stack, workflow_id: &str) -> usize {
    let events = app
        .payflow
        .temporal()
        .get_workflow_handle::<ReconciliationWorkflow>(workflow_id.to_string())
        .fetch_history(Default::default())
        .into_events()
        .await
        .expect("history");
    events
        .iter()
        .filter(|e| e.event_type == EventType::TimerStarted as i32)
        .count()
}

/// Waits until the visibility store finds `workflow_id` with `query`.
async fn visible(app: &Stack, query: String, workflow_id: &str) {
    eventually(DEADLINE, &format!("{query} to find {workflow_id}"), || {
        let query = query.clone();
        async move {
            let mut stream = app
                .payflow
                .temporal()
                .list_workflows(query, WorkflowListOptions::builder().limit(100).build());
            while let Some(item) = stream.next().await {
                if item.ok()?.id() == workflow_id {
                    return Some(());
                }
            }
            None
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_planted_discrepancy_is_found_with_its_kind_and_nothing_else() {
    let Some(app) = spawn_app_with(
        Db::Sqlite,
        Timing::default(),
        recon_toml(&[200, 400], 30_000, false),
    )
    .await
    else {
        return;
    };

    // Real payments (and a refund) through the stack, all at once.
    let orders = [
        ("rc-ok", "10.00"),
        ("rc-refund", "30.00"),
        ("rc-amount", "20.00"),
        ("rc-status", "40.00"),
        ("rc-fee", "50.00"),
        ("rc-missing", "60.00"),
        ("rc-crossday", "80.00"),
    ];
    let ids: Vec<String> = futures::future::join_all(
        orders
            .iter()
            .map(|(no, amount)| paid(&app, payment_request(no, amount))),
    )
    .await;
    let id = |no: &str| ids[orders.iter().position(|(o, _)| *o == no).unwrap()].clone();
    let refund = RefundRequest {
        merchant_id: MerchantId::parse(stack::MERCHANT).unwrap(),
        merchant_order_no: OrderNo::parse("rc-refund").unwrap(),
        merchant_refund_no: RefundNo::parse("rc-refund-1").unwrap(),
        amount: cny("10.00"),
        reason: "one item back".into(),
        kind: RefundKind::Merchant,
    };
    app.payflow.refund(refund.clone()).await.unwrap();
    let refunded = app
        .payflow
        .refund_result(&refund.merchant_id, &refund.merchant_refund_no)
        .await
        .unwrap();
    assert_eq!(refunded.state, RefundState::Succeeded, "{refunded:?}");

    // The business day: the sandbox books trades by Beijing time, as we do.
    let day = sandbox_day(&app, &id("rc-ok"));
    for order in &ids {
        assert_eq!(
            sandbox_day(&app, order),
            day,
            "the payments straddle Beijing midnight: run the test again"
        );
    }
    let next_day = day + Days::new(1);
    let ghost = format!("ghost{}", &uuid::Uuid::new_v4().simple().to_string()[..20]);
    let ok_paid_at = app.sandbox.order(&id("rc-ok")).unwrap().paid_at_ms.unwrap();

    // Plant one difference of each kind; the statement is ready only after two retries.
    app.sandbox.update_knobs(|k| {
        k.statement = StatementKnobs {
            not_ready_times: 2,
            days_ahead: 1,
            extra: vec![ExtraLine {
                out_trade_no: ghost.clone(),
                trade_no: "2026999999999999".into(),
                amount: dec("7.77"),
                paid_at_ms: ok_paid_at,
            }],
            omit: [id("rc-missing")].into(),
            amount: [(id("rc-amount"), dec("21.00"))].into(),
            fee: [(id("rc-fee"), dec("0.99"))].into(),
            status: [(id("rc-status"), SandboxStatus::Closed)].into(),
            next_day: [id("rc-crossday")].into(),
        }
    });

    let workflow_id = app
        .payflow
        .reconcile_with(ReconRequest::new(stack::CHANNEL, day))
        .await
        .unwrap();
    assert_eq!(workflow_id, format!("recon/alipay/{day}"));
    let report = app.payflow.recon_result(stack::CHANNEL, day).await.unwrap();

    let expected: Found = [
        payment(Kind::MissingLocally, &ghost),
        payment(Kind::MissingAtChannel, &id("rc-missing")),
        payment(Kind::MissingAtChannel, &id("rc-crossday")),
        payment(Kind::AmountMismatch, &id("rc-amount")),
        payment(Kind::StatusMismatch, &id("rc-status")),
        payment(Kind::FeeMismatch, &id("rc-fee")),
    ]
    .into();
    assert_eq!(found(&report, false), expected, "{report:#?}");
    assert!(found(&report, true).is_empty());
    assert_eq!(report.open_total(), 6);
    assert_eq!(report.discrepancy_count, 6);
    assert_eq!((report.candidates, report.dismissed), (6, 0));
    // 6 payment lines (the ghost's included) and the refunded total of rc-refund.
    assert_eq!(report.statement_lines, 7);
    // rc-ok, rc-refund and its refund total.
    assert_eq!(report.matched_lines, 3);
    // 7 payments and 1 refund of the day; rc-ok, rc-refund and the refund match.
    assert_eq!((report.our_records, report.matched_records), (8, 3));

    // Each with both sides' values and the channel's answer.
    let of = |kind: Kind| {
        report
            .discrepancies
            .iter()
            .find(|d| d.kind == kind)
            .unwrap()
            .clone()
    };
    let amount = of(Kind::AmountMismatch);
    assert_eq!(
        (amount.ours.amount, amount.channel.amount),
        (Some(dec("20.00")), Some(dec("21.00")))
    );
    let fee = of(Kind::FeeMismatch);
    // 0.6 % of 50.00, as the channel's configured rate says.
    assert_eq!(
        (fee.ours.fee, fee.channel.fee),
        (Some(dec("0.30")), Some(dec("0.99")))
    );
    let status = of(Kind::StatusMismatch);
    assert_eq!(status.ours.status.as_deref(), Some("Succeeded"));
    assert_eq!(status.channel.status.as_deref(), Some("FullyRefunded"));
    assert_eq!(status.channel_now.as_deref(), Some("trade Closed"));
    let unknown = of(Kind::MissingLocally);
    assert_eq!(unknown.channel_now.as_deref(), Some("trade NotFound"));
    assert!(
        report
            .discrepancies
            .iter()
            .filter(|d| d.kind == Kind::MissingAtChannel)
            .all(|d| d
                .channel_now
                .as_deref()
                .is_some_and(|n| n.starts_with("trade Paid")))
    );

    // The statement came on the third attempt, after two durable timers.
    let status = app.payflow.recon_status(stack::CHANNEL, day).await.unwrap();
    assert_eq!(status.state, ReconState::Discrepancies);
    assert_eq!(status.statement_attempts, 3);
    assert_eq!(status.summary.as_ref(), Some(&report));
    assert_eq!(timers_started(&app, &workflow_id).await, 2);
    assert_eq!(
        app.payflow.recon_report(stack::CHANNEL, day).await.unwrap(),
        Some(report.clone())
    );
    // Operators find it by its search attributes.
    visible(
        &app,
        "ReconState = 'Discrepancies' AND Channel = 'alipay'".into(),
        &workflow_id,
    )
    .await;

    // The next day's statement has the cross-day trade: that run resolves it.
    app.payflow
        .reconcile(stack::CHANNEL, next_day)
        .await
        .unwrap();
    let next = app
        .payflow
        .recon_result(stack::CHANNEL, next_day)
        .await
        .unwrap();
    assert!(next.discrepancies.is_empty(), "{next:#?}");
    assert_eq!(next.candidates, 0);
    assert_eq!((next.statement_lines, next.matched_lines), (1, 1));
    assert_eq!(next.resolved_elsewhere, 1);
    let next_status = app
        .payflow
        .recon_status(stack::CHANNEL, next_day)
        .await
        .unwrap();
    assert_eq!(next_status.state, ReconState::Balanced);
    assert_eq!(next_status.statement_attempts, 1);

    // The stored report of the first day (what `payflow recon report` prints) now shows it
    // resolved by the next day's run; the rest stays open.
    let (stored, run_state) = payflow::cli_recon::stored_report(&app.store, stack::CHANNEL, day)
        .await
        .unwrap()
        .expect("a stored report");
    assert_eq!(run_state, "Completed");
    let crossday = payment(Kind::MissingAtChannel, &id("rc-crossday"));
    let mut still_open = expected.clone();
    still_open.remove(&crossday);
    assert_eq!(found(&stored, false), still_open);
    assert_eq!(found(&stored, true), BTreeSet::from([crossday]));
    let resolved = stored
        .discrepancies
        .iter()
        .find(|d| d.resolution.is_some())
        .unwrap();
    assert_eq!(
        resolved.resolution.as_deref(),
        Some(format!("found in the statement of alipay/{next_day}").as_str())
    );
    let text = payflow::cli_recon::render(&stored, Some(&run_state));
    for kind in Kind::ALL {
        assert!(text.contains(kind.as_str()), "{kind} in\n{text}");
    }
    assert!(text.contains("5 open discrepancies"), "{text}");
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_never_comes_parks_the_run_until_an_operator_retries() {
    let Some(app) = spawn_app_with(
        Db::Postgres,
        Timing::default(),
        recon_toml(&[100, 200, 400], 4_000, false),
    )
    .await
    else {
        return;
    };
    let order = paid(&app, payment_request("rc-manual", "12.34")).await;
    let day = sandbox_day(&app, &order);
    app.sandbox.update_knobs(|k| k.statement_pending = true);

    let workflow_id = app.payflow.reconcile(stack::CHANNEL, day).await.unwrap();
    let parked = eventually(DEADLINE, "the run to be parked Manual", || async {
        let s = app.payflow.recon_status(stack::CHANNEL, day).await.ok()?;
        (s.state == ReconState::Manual).then_some(s)
    })
    .await;
    assert!(
        parked
            .manual_reason
            .as_deref()
            .is_some_and(|r| r.contains("deadline")),
        "{parked:?}"
    );
    // Retried on the schedule until the deadline (durable timers between attempts), never a
    // quick give-up.
    assert!(parked.statement_attempts >= 3, "{parked:?}");
    assert_eq!(
        timers_started(&app, &workflow_id).await,
        parked.statement_attempts as usize - 1
    );
    assert_eq!(parked.summary, None);
    visible(&app, "ReconState = 'Manual'".into(), &workflow_id).await;

    // The statement is there now; the operator's `retry` completes the run.
    app.sandbox.update_knobs(|k| k.statement_pending = false);
    app.payflow
        .retry_reconciliation(stack::CHANNEL, day)
        .await
        .unwrap();
    let report = app.payflow.recon_result(stack::CHANNEL, day).await.unwrap();
    assert_eq!(report.open_total(), 0, "{report:#?}");
    assert_eq!((report.statement_lines, report.matched_lines), (1, 1));
    assert_eq!((report.our_records, report.matched_records), (1, 1));
    let done = app.payflow.recon_status(stack::CHANNEL, day).await.unwrap();
    assert_eq!(done.state, ReconState::Balanced);
    assert_eq!(done.retries, 1);
    assert_eq!(done.manual_reason, None);
    assert_eq!(done.statement_attempts, parked.statement_attempts + 1);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_bill_streams_checked_and_a_day_without_trades_is_empty() {
    let Some(app) = spawn_app_with(
        Db::Sqlite,
        Timing::default(),
        recon_toml(&[100], 5_000, false),
    )
    .await
    else {
        return;
    };
    let req = PaymentRequest {
        product_id: ProductId::parse(stack::WECHAT_PRODUCT).unwrap(),
        ..payment_request("rc-wx", "23.45")
    };
    let order = paid(&app, req).await;
    let paid_at = app
        .wechat
        .trade(&order)
        .and_then(|t| t.paid_at_ms)
        .expect("paid at WeChat Pay");
    let day = beijing_date(paid_at);

    // The signed bill download, checked against its SHA-1, with fees at the configured rate.
    app.payflow
        .reconcile(stack::WECHAT_CHANNEL, day)
        .await
        .unwrap();
    let report = app
        .payflow
        .recon_result(stack::WECHAT_CHANNEL, day)
        .await
        .unwrap();
    assert_eq!(report.open_total(), 0, "{report:#?}");
    assert_eq!((report.statement_lines, report.matched_lines), (1, 1));
    assert_eq!(report.candidates, 0);
    let statement_fee = report
        .totals
        .iter()
        .find(|t| t.side == payflow_client::ReconSide::Statement)
        .map(|t| t.fee);
    // 0.6 % of 23.45 = 0.1407.
    assert_eq!(statement_fee, Some(dec("0.14")));

    // The day before had no trade: WeChat Pay has no bill for it (`NO_STATEMENT_EXIST`), an
    // empty statement rather than one to wait for.
    let before = day - Days::new(1);
    app.payflow
        .reconcile(stack::WECHAT_CHANNEL, before)
        .await
        .unwrap();
    let empty = app
        .payflow
        .recon_result(stack::WECHAT_CHANNEL, before)
        .await
        .unwrap();
    assert_eq!((empty.statement_lines, empty.open_total()), (0, 0));
    let status = app
        .payflow
        .recon_status(stack::WECHAT_CHANNEL, before)
        .await
        .unwrap();
    assert_eq!(
        (status.state, status.statement_attempts),
        (ReconState::Balanced, 1)
    );
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_schedule_exists_and_reconciles_yesterday() {
    let Some(app) = spawn_app_with(
        Db::Sqlite,
        Timing::default(),
        recon_toml(&[100], 5_000, true),
    )
    .await
    else {
        return;
    };
    let client = app.payflow.temporal().clone();
    // Created by the worker at start-up, one per enabled channel.
    for channel in [stack::CHANNEL, stack::WECHAT_CHANNEL] {
        let id = payflow_client::recon::recon_schedule_id(channel);
        let described = eventually(DEADLINE, &format!("schedule {id}"), || {
            let handle = client.get_schedule_handle(id.clone());
            async move { handle.describe(Default::default()).await.ok() }
        })
        .await;
        let temporalio_client::schedules::ScheduleDescriptionAction::StartWorkflow(action) =
            described.action()
        else {
            panic!("schedule {id} does not start a workflow");
        };
        assert_eq!(action.workflow_type(), "ReconDaily");
        assert_eq!(action.task_queue(), "payflow-recon");
        // Daily at 10:00 Beijing time = 02:00 UTC.
        let next = described.future_action_times();
        assert!(!next.is_empty());
        for t in next {
            let t: DateTime<chrono::Utc> = t.into();
            assert_eq!(t.format("%H:%M:%S").to_string(), "02:00:00", "{t}");
        }
    }

    // Triggered once: yesterday's run (Beijing time) of the channel, nothing in it.
    let yesterday = beijing_date(chrono::Utc::now().timestamp_millis()) - Days::new(1);
    client
        .get_schedule_handle(payflow_client::recon::recon_schedule_id(stack::CHANNEL))
        .trigger(ScheduleOverlapPolicy::AllowAll, Default::default())
        .await
        .unwrap();
    let status = eventually(DEADLINE, "yesterday's run to be started", || async {
        app.payflow
            .recon_status(stack::CHANNEL, yesterday)
            .await
            .ok()
    })
    .await;
    assert_eq!(status.workflow_id, format!("recon/alipay/{yesterday}"));
    let report = app
        .payflow
        .recon_result(stack::CHANNEL, yesterday)
        .await
        .unwrap();
    assert_eq!((report.statement_lines, report.open_total()), (0, 0));
    app.shutdown().await.unwrap();
}
