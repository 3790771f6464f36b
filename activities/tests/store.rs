//! The store suite, run against both backends (see `common`): orders, their transitions with
//! ledger bookings, channel notices.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use payflow_activities::accounting::{self, Booking};
use payflow_activities::store::Store;
use payflow_activities::store::StoreError;
use payflow_activities::store::ledger::{JournalEntry, Posting};
use payflow_activities::store::notices::NoticeRecord;
use payflow_activities::store::orders::{NewOrder, OrderPatch};
use payflow_client::{Currency, Money, PayState};

backend_tests! {
    case_create_order_idempotent => sqlite_create_order_idempotent, postgres_create_order_idempotent;
    case_transition_cas => sqlite_transition_cas, postgres_transition_cas;
    case_transition_with_entry_posts_once => sqlite_transition_with_entry_posts_once, postgres_transition_with_entry_posts_once;
    case_unbalanced_entry_refused => sqlite_unbalanced_entry_refused, postgres_unbalanced_entry_refused;
    case_concurrent_transitions => sqlite_concurrent_transitions, postgres_concurrent_transitions;
    case_notices => sqlite_notices, postgres_notices;
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn cny(amount: &str) -> Money {
    Money::parse(amount, Currency::Cny).unwrap()
}

fn new_order(order_id: &str, merchant_order_no: &str, amount: Money) -> NewOrder {
    NewOrder {
        order_id: order_id.to_string(),
        merchant_id: "m1".to_string(),
        merchant_order_no: merchant_order_no.to_string(),
        amount,
        product_id: "p1".to_string(),
        channel: "alipay".to_string(),
        subject: "a test order".to_string(),
        expires_at_ms: 4_102_444_800_000,
        recharge_wallet: None,
    }
}

/// An order moved to `Pending`, as the payment workflow does after prepay.
async fn pending_order(store: &Store, order_id: &str, amount: Money) {
    store
        .create_order(&new_order(order_id, &format!("no-{order_id}"), amount))
        .await
        .unwrap();
    let o = store
        .transition(
            order_id,
            PayState::Created,
            PayState::Pending,
            &OrderPatch::default(),
        )
        .await
        .unwrap();
    assert_eq!((o.state, o.version), (PayState::Pending, 2));
}

fn succeeded_patch(amount: Money) -> OrderPatch {
    OrderPatch {
        channel_trade_no: Some("T-2024-0001".to_string()),
        paid_amount: Some(amount),
        failure: None,
    }
}

fn notice(notify_id: &str, workflow_id: Option<&str>) -> NoticeRecord {
    NoticeRecord {
        channel: "alipay".to_string(),
        notify_id: notify_id.to_string(),
        out_trade_no: format!("out-{notify_id}"),
        trade_status: "TRADE_SUCCESS".to_string(),
        total_amount: Some("9.99".to_string()),
        workflow_id: workflow_id.map(str::to_string),
    }
}

fn is_balanced(entry: &JournalEntry) -> bool {
    let mut sums: BTreeMap<Currency, i64> = BTreeMap::new();
    for p in &entry.postings {
        *sums.entry(p.currency).or_default() += p.debit_minor - p.credit_minor;
    }
    sums.values().all(|d| *d == 0)
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

async fn case_create_order_idempotent(store: Store) {
    let amount = cny("9.99");
    let first = store
        .create_order(&new_order("o-1", "mno-1", amount))
        .await
        .unwrap();
    assert_eq!(first.order_id, "o-1");
    assert_eq!(first.merchant_order_no, "mno-1");
    assert_eq!(first.amount, amount);
    assert_eq!(first.state, PayState::Created);
    assert_eq!(first.version, 1);
    assert_eq!(first.paid_amount, None);
    assert_eq!(first.channel_trade_no, None);
    assert_eq!(first.failure, None);

    // A retried activity gets the very same row back.
    let again = store
        .create_order(&new_order("o-1", "mno-1", amount))
        .await
        .unwrap();
    assert_eq!(again, first);

    // The same merchant order no under another order id is refused.
    match store.create_order(&new_order("o-2", "mno-1", amount)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict for a reused merchant order no, got {other:?}"),
    }
    assert_eq!(store.order("o-2").await.unwrap(), None);
    assert_eq!(store.order("o-1").await.unwrap(), Some(first.clone()));
    assert_eq!(
        store.order_by_merchant_no("m1", "mno-1").await.unwrap(),
        Some(first)
    );
}

async fn case_transition_cas(store: Store) {
    let amount = cny("12.34");
    let created = store
        .create_order(&new_order("o-1", "mno-1", amount))
        .await
        .unwrap();
    assert_eq!(created.version, 1);

    let pending = store
        .transition(
            "o-1",
            PayState::Created,
            PayState::Pending,
            &OrderPatch::default(),
        )
        .await
        .unwrap();
    assert_eq!(pending.state, PayState::Pending);
    assert_eq!(pending.version, created.version + 1);

    // A retried transition is a no-op that reports the current row.
    let retried = store
        .transition(
            "o-1",
            PayState::Created,
            PayState::Pending,
            &OrderPatch::default(),
        )
        .await
        .unwrap();
    assert_eq!(retried, pending);

    // From a state the order is not in: refused, and nothing is written.
    let patch = OrderPatch {
        failure: Some(payflow_client::ChannelFailure {
            code: "ACQ.TRADE_HAS_CLOSE".to_string(),
            message: "closed".to_string(),
        }),
        ..OrderPatch::default()
    };
    match store
        .transition("o-1", PayState::Created, PayState::Failed, &patch)
        .await
    {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("expected Conflict moving a Pending order from Created, got {other:?}"),
    }
    assert_eq!(store.order("o-1").await.unwrap(), Some(pending.clone()));

    assert_eq!(
        store.order_history("o-1").await.unwrap(),
        vec![(PayState::Created, PayState::Pending)]
    );

    let succeeded = store
        .transition(
            "o-1",
            PayState::Pending,
            PayState::Succeeded,
            &succeeded_patch(amount),
        )
        .await
        .unwrap();
    assert_eq!(succeeded.state, PayState::Succeeded);
    assert_eq!(succeeded.version, pending.version + 1);
    assert_eq!(succeeded.paid_amount, Some(amount));
    assert_eq!(succeeded.channel_trade_no.as_deref(), Some("T-2024-0001"));
    assert_eq!(
        store.order_history("o-1").await.unwrap(),
        vec![
            (PayState::Created, PayState::Pending),
            (PayState::Pending, PayState::Succeeded),
        ]
    );
    assert_eq!(store.order_history("nope").await.unwrap(), vec![]);

    match store
        .transition(
            "nope",
            PayState::Created,
            PayState::Pending,
            &OrderPatch::default(),
        )
        .await
    {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("expected NotFound for an unknown order, got {other:?}"),
    }
}

async fn case_transition_with_entry_posts_once(store: Store) {
    let amount = cny("9.99");
    pending_order(&store, "o-1", amount).await;
    let booking = accounting::payment_succeeded("o-1", "alipay", "m1", amount, None);
    let entry = booking.entry.clone();
    let patch = succeeded_patch(amount);

    let succeeded = store
        .transition_with_entry(
            "o-1",
            PayState::Pending,
            PayState::Succeeded,
            &patch,
            Some(&booking),
        )
        .await
        .unwrap();
    assert_eq!(succeeded.state, PayState::Succeeded);
    assert_eq!(succeeded.version, 3);
    assert_eq!(succeeded.paid_amount, Some(amount));

    let entries = store.entries_for_order("o-1").await.unwrap();
    assert_eq!(entries, vec![entry.clone()]);
    assert!(is_balanced(&entries[0]));

    // A retried activity changes nothing.
    let again = store
        .transition_with_entry(
            "o-1",
            PayState::Pending,
            PayState::Succeeded,
            &patch,
            Some(&booking),
        )
        .await
        .unwrap();
    assert_eq!(again, succeeded);
    assert_eq!(store.entries_for_order("o-1").await.unwrap(), vec![entry]);
    assert_eq!(store.order("o-1").await.unwrap(), Some(succeeded));

    let balance = store.trial_balance().await.unwrap();
    assert_eq!(balance, BTreeMap::from([("CNY".to_string(), 0)]));
    assert_eq!(
        store
            .account_totals(&accounting::merchant_payable("m1"))
            .await
            .unwrap(),
        (0, 999)
    );
    assert_eq!(
        store
            .account_totals(&accounting::channel_clearing("alipay"))
            .await
            .unwrap(),
        (999, 0)
    );
    assert_eq!(
        store
            .account_totals("merchant:unknown:payable")
            .await
            .unwrap(),
        (0, 0)
    );
    // The booking opened both accounts with the chart's definitions, in the same transaction.
    let payable = store
        .account_balance(&accounting::merchant_payable("m1"))
        .await
        .unwrap();
    assert_eq!(
        payable.account,
        accounting::merchant_payable_account("m1", Currency::Cny)
    );
    assert_eq!(payable.credits_posted, amount);
    assert_eq!(payable.posted_net(), amount);
    let clearing = store
        .account_balance(&accounting::channel_clearing("alipay"))
        .await
        .unwrap();
    assert_eq!(clearing.debits_posted, amount);
    assert!(clearing.credits_posted.is_zero());
}

async fn case_unbalanced_entry_refused(store: Store) {
    let amount = cny("20.00");
    pending_order(&store, "o-1", amount).await;
    let before = store.order("o-1").await.unwrap().unwrap();

    let unbalanced = JournalEntry {
        entry_id: "pay:o-1:succeeded".to_string(),
        kind: "payment_succeeded".to_string(),
        order_id: Some("o-1".to_string()),
        postings: vec![
            Posting::debit(accounting::channel_clearing("alipay"), amount),
            Posting::credit(accounting::merchant_payable("m1"), cny("19.99")),
        ],
    };
    let accounts = accounting::payment_succeeded("o-1", "alipay", "m1", amount, None).accounts;
    match store
        .transition_with_entry(
            "o-1",
            PayState::Pending,
            PayState::Succeeded,
            &succeeded_patch(amount),
            Some(&Booking {
                accounts: accounts.clone(),
                entry: unbalanced.clone(),
            }),
        )
        .await
    {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("expected Invalid for an unbalanced entry, got {other:?}"),
    }
    // Nothing half-applied: no state change, no history row, no postings.
    assert_eq!(store.order("o-1").await.unwrap(), Some(before));
    assert_eq!(
        store.order_history("o-1").await.unwrap(),
        vec![(PayState::Created, PayState::Pending)]
    );
    assert_eq!(store.entries_for_order("o-1").await.unwrap(), vec![]);
    assert!(
        store
            .trial_balance()
            .await
            .unwrap()
            .values()
            .all(|d| *d == 0)
    );

    // Nor did the refused booking open its accounts.
    for a in &accounts {
        match store.account_balance(&a.id).await {
            Err(StoreError::NotFound(_)) => {}
            other => panic!("expected {} not open, got {other:?}", a.id),
        }
    }

    // post_entry and book refuse it too.
    match store.post_entry(&unbalanced).await {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("expected Invalid from post_entry, got {other:?}"),
    }
    match store
        .book(&Booking {
            accounts,
            entry: unbalanced,
        })
        .await
    {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("expected Invalid from book, got {other:?}"),
    }

    // A balanced booking on its own is posted once.
    let booking = accounting::payment_succeeded("o-1", "alipay", "m1", amount, None);
    assert!(store.book(&booking).await.unwrap());
    assert!(!store.book(&booking).await.unwrap());
    assert!(!store.post_entry(&booking.entry).await.unwrap());
    assert_eq!(
        store.entries_for_order("o-1").await.unwrap(),
        vec![booking.entry]
    );
    assert_eq!(
        store.trial_balance().await.unwrap(),
        BTreeMap::from([("CNY".to_string(), 0)])
    );
    assert_eq!(
        store
            .account_totals(&accounting::merchant_payable("m1"))
            .await
            .unwrap(),
        (0, 2000)
    );
}

async fn case_concurrent_transitions(store: Store) {
    let amount = cny("88.88");
    pending_order(&store, "o-1", amount).await;
    let before = store.order("o-1").await.unwrap().unwrap();
    let booking = accounting::payment_succeeded("o-1", "alipay", "m1", amount, None);
    let entry = booking.entry.clone();

    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            let booking = booking.clone();
            tokio::spawn(async move {
                store
                    .transition_with_entry(
                        "o-1",
                        PayState::Pending,
                        PayState::Succeeded,
                        &succeeded_patch(amount),
                        Some(&booking),
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        let order = task
            .await
            .expect("task panicked")
            .expect("every concurrent attempt returns Ok");
        assert_eq!(order.state, PayState::Succeeded);
        assert_eq!(order.version, before.version + 1);
    }

    let after = store.order("o-1").await.unwrap().unwrap();
    assert_eq!(after.state, PayState::Succeeded);
    assert_eq!(after.version, before.version + 1);
    assert_eq!(store.entries_for_order("o-1").await.unwrap(), vec![entry]);
    assert_eq!(
        store.order_history("o-1").await.unwrap(),
        vec![
            (PayState::Created, PayState::Pending),
            (PayState::Pending, PayState::Succeeded),
        ]
    );
    assert_eq!(
        store.trial_balance().await.unwrap(),
        BTreeMap::from([("CNY".to_string(), 0)])
    );
    assert_eq!(
        store
            .account_totals(&accounting::merchant_payable("m1"))
            .await
            .unwrap(),
        (0, 8888)
    );
    let payable = store
        .account_balance(&accounting::merchant_payable("m1"))
        .await
        .unwrap();
    assert_eq!(payable.credits_posted, amount);
    assert!(payable.debits_posted.is_zero());
}

async fn case_notices(store: Store) {
    assert!(!store.notice_seen("alipay", "n-1").await.unwrap());
    assert_eq!(store.unmatched_notices().await.unwrap(), vec![]);

    let matched = notice("n-1", Some("payment-o-1"));
    store.record_notice(&matched).await.unwrap();
    assert!(store.notice_seen("alipay", "n-1").await.unwrap());
    // Same notify id on another channel is another notification.
    assert!(!store.notice_seen("wechat", "n-1").await.unwrap());

    // Recording again (even with other content) changes nothing.
    store.record_notice(&matched).await.unwrap();
    store
        .record_notice(&NoticeRecord {
            workflow_id: None,
            ..matched.clone()
        })
        .await
        .unwrap();
    assert!(store.notice_seen("alipay", "n-1").await.unwrap());
    assert_eq!(store.unmatched_notices().await.unwrap(), vec![]);

    let unknown_a = notice("n-2", None);
    let unknown_b = NoticeRecord {
        total_amount: None,
        ..notice("n-3", None)
    };
    store.record_notice(&unknown_a).await.unwrap();
    store.record_notice(&unknown_b).await.unwrap();
    store
        .record_notice(&notice("n-4", Some("payment-o-4")))
        .await
        .unwrap();
    store.record_notice(&unknown_a).await.unwrap();

    let mut unmatched = store.unmatched_notices().await.unwrap();
    unmatched.sort_by(|a, b| a.notify_id.cmp(&b.notify_id));
    assert_eq!(unmatched, vec![unknown_a, unknown_b]);
    for id in ["n-1", "n-2", "n-3", "n-4"] {
        assert!(store.notice_seen("alipay", id).await.unwrap(), "{id} seen");
    }
}
