//! Browser-level check of what operators use: headless Chromium (Debian's `chromium`, installed
//! by `scripts/install-browser.sh`) loads the Temporal UI of the test dev server, on the
//! workflows page filtered by a visibility query on payflow's search attributes, and must
//! render the row of the payment the query names and not the row of another payment of the
//! same merchant (which the unfiltered page shows).
//!
//! Without Chromium the test is skipped with the reason on stderr, except in CI (`CI=true`, or
//! `PAYFLOW_REQUIRE_BROWSER` set by `scripts/test.sh` in CI), where it fails.

use payflow_client::PayState;
use payflow_client::ids::payment_workflow_id;
use payflow_tests::browser::{chromium, percent_encode, render_until};
use payflow_tests::{Db, Timing, enable_ui, payment_request, payment_where, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_finds_payment_by_search_attribute_query() {
    let Some(chromium) = chromium() else {
        return;
    };
    let ui = enable_ui();
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    let (_, ns) = app.temporal_target();
    let ns = ns.to_string();

    let wanted = payment_request("o-ui-wanted", "12.34");
    let other = payment_request("o-ui-other", "12.34");
    for req in [&wanted, &other] {
        app.payflow.pay(req.clone()).await.expect("pay");
    }
    for req in [&wanted, &other] {
        payment_where(&app, req, "payment Succeeded", |s| {
            s.state == PayState::Succeeded
        })
        .await;
    }
    // A row links to its workflow's page: /namespaces/{ns}/workflows/{id, URL-encoded}/{run}.
    let row = |req: &payflow_client::PaymentRequest| {
        let id = payment_workflow_id(&req.merchant_id, &req.merchant_order_no);
        format!("href=\"/namespaces/{ns}/workflows/{}/", percent_encode(&id))
    };
    let (wanted_row, other_row) = (row(&wanted), row(&other));
    let other_id = payment_workflow_id(&other.merchant_id, &other.merchant_order_no);

    // Unfiltered, the UI lists both payments: the filter below is what hides the other one.
    let all = format!("{ui}/namespaces/{ns}/workflows");
    render_until(&chromium, &all, "both payments listed", |dom| {
        dom.contains(&wanted_row) && dom.contains(&other_row)
    })
    .await;

    let query = format!(
        "MerchantId=\"{}\" AND OrderNo=\"{}\"",
        wanted.merchant_id, wanted.merchant_order_no
    );
    let filtered = format!(
        "{ui}/namespaces/{ns}/workflows?query={}",
        percent_encode(&query)
    );
    let dom = render_until(&chromium, &filtered, "the filtered payment's row", |dom| {
        dom.contains(&wanted_row)
    })
    .await;
    assert!(
        !dom.contains(&other_row) && !dom.contains(&other_id),
        "{filtered} also shows {other_id}, which its query excludes"
    );
}
