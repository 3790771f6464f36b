//! payflow's business metrics on the worker's Prometheus endpoint (`[telemetry]
//! metrics_listen`), scraped over HTTP after a payment end to end.

use std::collections::BTreeMap;
use std::time::Duration;

use payflow::stack;
use payflow_activities::channels::alipay::wire::{PRECREATE, QUERY};
use payflow_client::PayState;
use payflow_tests::{Db, Timing, eventually, payment_request, payment_where, spawn_app_with};

/// One sample of the text exposition format: metric name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some(Sample {
                name: name.to_string(),
                labels,
                value,
            })
        })
        .collect()
}

/// The value of the one series of `name` whose labels are exactly `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == want)
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} twice: {found:?}");
    found.first().map(|s| s.value)
}

async fn scrape(url: &str) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_metrics_after_a_payment() {
    // Port 0: the worker binds a free port and the stack says which.
    let extra = "\n[telemetry]\nmetrics_listen = \"127.0.0.1:0\"\n".to_string();
    let Some(app) = spawn_app_with(Db::Sqlite, Timing::default(), extra).await else {
        return;
    };
    // The first gateway call answers 503: one transient precreate error, then a retry.
    app.sandbox.update_knobs(|k| k.server_errors = 1);
    let req = payment_request("o-metrics", "12.34");
    let prepay = app.payflow.pay(req.clone()).await.expect("pay");
    payment_where(&app, &req, "payment Succeeded", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    payflow_tests::accepted_callbacks(&app).await;

    // The delivery activity records its outcome after the merchant answered: scrape until it
    // shows.
    let url = format!(
        "http://{}/metrics",
        app.metrics_addr().expect("metrics bound")
    );
    let delivered = [("merchant", stack::MERCHANT), ("outcome", "delivered")];
    let text = eventually(
        Duration::from_secs(30),
        "the delivered callback counted",
        || {
            let url = url.clone();
            async move {
                let text = scrape(&url).await?;
                let samples = parse(&text);
                value(&samples, "payflow_notification_attempts_total", &delivered).map(|_| text)
            }
        },
    )
    .await;
    let samples = parse(&text);
    let get = |name: &str, labels: &[(&str, &str)]| {
        value(&samples, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in the scrape:\n{text}"))
    };

    // Payment states: the order was created, became pending, then succeeded, once each.
    let transitions = "payflow_payment_transitions_total";
    for (from, to) in [
        ("none", "Created"),
        ("Created", "Pending"),
        ("Pending", "Succeeded"),
    ] {
        assert_eq!(
            get(
                transitions,
                &[("channel", stack::CHANNEL), ("from", from), ("to", to)]
            ),
            1.0,
            "{from} -> {to}"
        );
    }

    // Merchant callbacks: one delivered attempt, timed.
    assert_eq!(get("payflow_notification_attempts_total", &delivered), 1.0);
    assert_eq!(
        get(
            "payflow_notification_attempt_duration_seconds_count",
            &delivered
        ),
        1.0
    );
    assert!(
        get(
            "payflow_notification_attempt_duration_seconds_sum",
            &delivered
        ) > 0.0
    );
    assert_eq!(
        value(
            &samples,
            "payflow_notification_attempts_total",
            &[("merchant", stack::MERCHANT), ("outcome", "failed")]
        ),
        None
    );

    // Channel calls: precreate twice (a 503, then answered), queries as many as the sandbox
    // answered, each timed; the 503 counted as a transient error.
    let call = |method: &'static str| [("channel", stack::CHANNEL), ("method", method)];
    let duration = "payflow_channel_call_duration_seconds";
    assert_eq!(get(&format!("{duration}_count"), &call("precreate")), 2.0);
    assert_eq!(app.sandbox.calls(PRECREATE), 1);
    let mut bucket = call("precreate").to_vec();
    bucket.push(("le", "+Inf"));
    assert_eq!(get(&format!("{duration}_bucket"), &bucket), 2.0);
    let queries = get(&format!("{duration}_count"), &call("query"));
    assert!(queries >= 1.0, "a query confirmed the payment");
    assert_eq!(queries, f64::from(app.sandbox.calls(QUERY)));
    assert_eq!(
        get(
            "payflow_channel_call_errors_total",
            &[
                ("channel", stack::CHANNEL),
                ("method", "precreate"),
                ("kind", "transient")
            ]
        ),
        1.0
    );

    // Ledger: the payment's one entry, 12.34 CNY of debits.
    assert_eq!(
        get(
            "payflow_ledger_entries_total",
            &[("rule", "payment_succeeded")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "payflow_ledger_amount_minor_total",
            &[("rule", "payment_succeeded"), ("currency", "CNY")]
        ),
        1234.0
    );

    // The SDK's own metrics share the endpoint; no order id or order no is ever a label.
    assert!(
        samples.iter().any(|s| s.name.starts_with("temporal_")),
        "the SDK's metrics on the same endpoint"
    );
    assert!(!text.contains(&prepay.order_id));
    assert!(!text.contains("o-metrics"));

    app.shutdown().await.unwrap();
    // The endpoint goes away with the worker.
    let gone = eventually(Duration::from_secs(10), "the endpoint closed", || {
        let url = url.clone();
        async move { scrape(&url).await.is_none().then_some(()) }
    })
    .await;
    assert_eq!(gone, ());
}
