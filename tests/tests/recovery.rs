//! Durability: a worker killed mid-payment and started again finishes the payment with
//! exactly one ledger entry and one merchant event.

use payflow::sandbox::{Knobs, NotifyMode};
use payflow_client::PayState;
use payflow_tests::{Db, Timing, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_payment_finishes_it_after_restart() {
    let timing = Timing {
        pay_after: None,
        query_schedule_ms: vec![1_000],
        ..Timing::default()
    };
    let Some(mut app) = spawn_app(Db::Postgres, timing).await else {
        return;
    };
    app.sandbox.set_knobs(Knobs {
        pay_after: None,
        notify: NotifyMode::Once,
        ..Knobs::default()
    });
    let req = payflow_tests::payment_request("o-crash", "42.00");
    let prepay = app.payflow.pay(req.clone()).await.unwrap();

    // The worker (and its ingress) dies while the payment waits for the customer ...
    app.kill_worker().await.unwrap();
    // ... who pays meanwhile; the channel's notifications find nobody listening.
    assert!(app.sandbox.pay(&prepay.order_id));
    app.start_worker().await.unwrap();

    let status = payflow_tests::payment_where(&app, &req, "payment Succeeded after restart", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    assert_eq!(status.amount, req.amount);
    assert_eq!(
        app.store
            .entries_for_order(&prepay.order_id)
            .await
            .unwrap()
            .len(),
        1,
        "exactly one ledger entry"
    );
    assert_eq!(
        app.store.order_history(&prepay.order_id).await.unwrap(),
        vec![
            (PayState::Created, PayState::Pending),
            (PayState::Pending, PayState::Succeeded)
        ]
    );
    let got = payflow_tests::accepted_callbacks(&app).await;
    assert_eq!(got.len(), 1, "one merchant event");
    assert!(
        app.store
            .trial_balance()
            .await
            .unwrap()
            .values()
            .all(|v| *v == 0)
    );
    app.shutdown().await.unwrap();
}
