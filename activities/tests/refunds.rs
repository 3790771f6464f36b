//! The refund store suite, every case on SQLite and on PostgreSQL (see `common`): the
//! over-refund guard (`reserve_refund`), idempotency by merchant refund no, fee shares, and
//! the confirm/cancel (`complete_refund` / `fail_refund`) that end a refund with its hold.

#[macro_use]
mod common;

use payflow_activities::accounting;
use payflow_activities::store::holds::{HoldOutcome, HoldState};
use payflow_activities::store::orders::{NewOrder, OrderPatch};
use payflow_activities::store::refunds::{NewRefund, Refund, Reservation};
use payflow_activities::store::{Store, StoreError};
use payflow_client::{ChannelFailure, Currency, Money, PayState, RefundKind, RefundState};

backend_tests! {
    case_guard_refuses_over_refund_and_unpaid_orders => sqlite_guard_refuses_over_refund_and_unpaid_orders, postgres_guard_refuses_over_refund_and_unpaid_orders;
    case_same_refund_no_is_one_refund => sqlite_same_refund_no_is_one_refund, postgres_same_refund_no_is_one_refund;
    case_refunds_in_parts_return_exactly_the_fee => sqlite_refunds_in_parts_return_exactly_the_fee, postgres_refunds_in_parts_return_exactly_the_fee;
    case_complete_and_fail_are_idempotent_and_exclusive => sqlite_complete_and_fail_are_idempotent_and_exclusive, postgres_complete_and_fail_are_idempotent_and_exclusive;
    case_concurrent_reservations_never_exceed_the_paid_amount => sqlite_concurrent_reservations_never_exceed_the_paid_amount, postgres_concurrent_reservations_never_exceed_the_paid_amount;
    case_concurrent_same_refund_no_is_one_refund => sqlite_concurrent_same_refund_no_is_one_refund, postgres_concurrent_same_refund_no_is_one_refund;
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const MERCHANT: &str = "m1";
const CHANNEL: &str = "alipay";

fn cny(amount: &str) -> Money {
    Money::parse(amount, Currency::Cny).unwrap()
}

fn minor(m: i64) -> Money {
    Money::from_minor(m, Currency::Cny).unwrap()
}

fn merchant_order_no(order_id: &str) -> String {
    format!("no-{order_id}")
}

/// An order in `Pending`, as the payment workflow leaves it after prepay.
async fn pending_order(store: &Store, order_id: &str, amount: Money) {
    store
        .create_order(&NewOrder {
            order_id: order_id.to_string(),
            merchant_id: MERCHANT.to_string(),
            merchant_order_no: merchant_order_no(order_id),
            amount,
            product_id: "p1".to_string(),
            channel: CHANNEL.to_string(),
            subject: "a test order".to_string(),
            expires_at_ms: 4_102_444_800_000,
            recharge_wallet: None,
        })
        .await
        .unwrap();
    store
        .transition(
            order_id,
            PayState::Created,
            PayState::Pending,
            &OrderPatch::default(),
        )
        .await
        .unwrap();
}

/// An order paid in full, with the payment booked (and our `fee`, if any) as the payment
/// workflow does it: state and entry in one transaction.
async fn paid_order(store: &Store, order_id: &str, amount: Money, fee: Option<Money>) {
    pending_order(store, order_id, amount).await;
    let o = store
        .transition_with_entry(
            order_id,
            PayState::Pending,
            PayState::Succeeded,
            &OrderPatch {
                channel_trade_no: Some(format!("T-{order_id}")),
                paid_amount: Some(amount),
                failure: None,
            },
            Some(&accounting::payment_succeeded(
                order_id, CHANNEL, MERCHANT, amount, fee,
            )),
        )
        .await
        .unwrap();
    assert_eq!(o.state, PayState::Succeeded);
}

fn new_refund(order_id: &str, refund_no: &str, amount: Money) -> NewRefund {
    NewRefund {
        refund_id: format!("rid-{refund_no}"),
        merchant_id: MERCHANT.to_string(),
        merchant_order_no: merchant_order_no(order_id),
        merchant_refund_no: refund_no.to_string(),
        kind: RefundKind::Merchant,
        amount,
        reason: "returned".to_string(),
        collected: None,
    }
}

#[track_caller]
fn reserved(r: Reservation) -> Refund {
    match r {
        Reservation::Reserved { refund, .. } => refund,
        other => panic!("expected Reserved, got {other:?}"),
    }
}

#[track_caller]
fn refused_code(r: Reservation) -> String {
    match r {
        Reservation::Refused { code, .. } => code,
        other => panic!("expected Refused, got {other:?}"),
    }
}

/// The TCC try of a merchant refund, as the `hold_refund` activity makes it: the merchant's
/// part (the refund less its share of our fee) held on the merchant's payable account.
async fn hold(store: &Store, refund: &Refund) {
    let merchant_part = minor(refund.amount.minor_units() - refund.fee_minor);
    let outcome = store
        .book_hold(&accounting::refund_hold(
            &refund.refund_id,
            &refund.order_id,
            CHANNEL,
            MERCHANT,
            merchant_part,
        ))
        .await
        .unwrap();
    assert_eq!(outcome, HoldOutcome::Held);
}

async fn hold_state(store: &Store, refund_id: &str) -> Option<HoldState> {
    store
        .hold_state(&accounting::refund_hold_id(refund_id))
        .await
        .unwrap()
}

/// Posted net balance of an account, in minor units.
async fn posted(store: &Store, account: &str) -> i64 {
    store
        .account_balance(account)
        .await
        .unwrap()
        .posted_net()
        .minor_units()
}

async fn assert_balanced(store: &Store) {
    let tb = store.trial_balance().await.unwrap();
    assert!(tb.values().all(|v| *v == 0), "trial balance {tb:?}");
}

fn declined() -> ChannelFailure {
    ChannelFailure {
        code: "ACQ.SELLER_BALANCE_NOT_ENOUGH".to_string(),
        message: "no balance".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

async fn case_guard_refuses_over_refund_and_unpaid_orders(store: Store) {
    paid_order(&store, "o-paid", cny("10.00"), None).await;

    // More than was paid, in one go.
    let r = store
        .reserve_refund(&new_refund("o-paid", "r-too-much", cny("10.01")))
        .await
        .unwrap();
    assert_eq!(refused_code(r), "payflow.REFUND_EXCEEDS_PAID");

    // Within it: reserved (Processing) at once.
    let first = reserved(
        store
            .reserve_refund(&new_refund("o-paid", "r-1", cny("6.00")))
            .await
            .unwrap(),
    );
    assert_eq!(first.state, RefundState::Processing);
    assert_eq!(first.amount, cny("6.00"));
    assert_eq!(first.order_id, "o-paid");

    // In flight counts: 6.00 reserved leaves 4.00, not 10.00.
    let r = store
        .reserve_refund(&new_refund("o-paid", "r-2", cny("4.01")))
        .await
        .unwrap();
    assert_eq!(refused_code(r), "payflow.REFUND_EXCEEDS_PAID");
    let second = reserved(
        store
            .reserve_refund(&new_refund("o-paid", "r-3", cny("4.00")))
            .await
            .unwrap(),
    );
    assert_eq!(second.state, RefundState::Processing);
    let r = store
        .reserve_refund(&new_refund("o-paid", "r-4", cny("0.01")))
        .await
        .unwrap();
    assert_eq!(refused_code(r), "payflow.REFUND_EXCEEDS_PAID");
    // Refused reservations wrote nothing.
    assert_eq!(store.refunds_for_order("o-paid").await.unwrap().len(), 2);

    // Orders not paid (yet) are not refundable, whatever the amount.
    pending_order(&store, "o-pending", cny("5.00")).await;
    let r = store
        .reserve_refund(&new_refund("o-pending", "r-p", cny("1.00")))
        .await
        .unwrap();
    assert_eq!(refused_code(r), "payflow.ORDER_NOT_REFUNDABLE");
    store
        .create_order(&NewOrder {
            order_id: "o-created".to_string(),
            merchant_id: MERCHANT.to_string(),
            merchant_order_no: merchant_order_no("o-created"),
            amount: cny("5.00"),
            product_id: "p1".to_string(),
            channel: CHANNEL.to_string(),
            subject: "a test order".to_string(),
            expires_at_ms: 4_102_444_800_000,
            recharge_wallet: None,
        })
        .await
        .unwrap();
    let r = store
        .reserve_refund(&new_refund("o-created", "r-c", cny("1.00")))
        .await
        .unwrap();
    assert_eq!(refused_code(r), "payflow.ORDER_NOT_REFUNDABLE");
    assert!(
        store
            .refunds_for_order("o-pending")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .refunds_for_order("o-created")
            .await
            .unwrap()
            .is_empty()
    );

    // No such order.
    let r = store
        .reserve_refund(&new_refund("o-nowhere", "r-n", cny("1.00")))
        .await
        .unwrap();
    assert_eq!(refused_code(r), "payflow.ORDER_NOT_FOUND");
}

async fn case_same_refund_no_is_one_refund(store: Store) {
    paid_order(&store, "o-idem", cny("10.00"), None).await;
    let first = reserved(
        store
            .reserve_refund(&new_refund("o-idem", "r-1", cny("3.00")))
            .await
            .unwrap(),
    );

    // The same request again (a retried activity, or the merchant asking twice) is the same
    // refund, even under another refund id.
    let again = reserved(
        store
            .reserve_refund(&new_refund("o-idem", "r-1", cny("3.00")))
            .await
            .unwrap(),
    );
    assert_eq!(again, first);
    let other_id = NewRefund {
        refund_id: "another-id".to_string(),
        ..new_refund("o-idem", "r-1", cny("3.00"))
    };
    assert_eq!(
        reserved(store.reserve_refund(&other_id).await.unwrap()),
        first
    );
    assert!(store.refund("another-id").await.unwrap().is_none());

    // The same refund no with other terms is refused, and changes nothing.
    let r = store
        .reserve_refund(&new_refund("o-idem", "r-1", cny("4.00")))
        .await
        .unwrap();
    assert_eq!(refused_code(r), "payflow.REFUND_CONFLICT");
    paid_order(&store, "o-other", cny("10.00"), None).await;
    let r = store
        .reserve_refund(&new_refund("o-other", "r-1", cny("3.00")))
        .await
        .unwrap();
    assert_eq!(refused_code(r), "payflow.REFUND_CONFLICT");

    let refunds = store.refunds_for_order("o-idem").await.unwrap();
    assert_eq!(refunds, vec![first.clone()]);
    assert!(store.refunds_for_order("o-other").await.unwrap().is_empty());

    // Only one reservation counts against the order: 7.00 is still available.
    reserved(
        store
            .reserve_refund(&new_refund("o-idem", "r-2", cny("7.00")))
            .await
            .unwrap(),
    );

    // A finished refund asked again answers its final state.
    hold(&store, &first).await;
    store.complete_refund(&first.refund_id).await.unwrap();
    let done = reserved(
        store
            .reserve_refund(&new_refund("o-idem", "r-1", cny("3.00")))
            .await
            .unwrap(),
    );
    assert_eq!(done.refund_id, first.refund_id);
    assert_eq!(done.state, RefundState::Succeeded);
}

async fn case_refunds_in_parts_return_exactly_the_fee(store: Store) {
    // 10.00 paid with a 0.07 fee: the merchant was credited 9.93.
    let fee = cny("0.07");
    paid_order(&store, "o-fee", cny("10.00"), Some(fee)).await;
    let payable = accounting::merchant_payable(MERCHANT);
    let clearing = accounting::channel_clearing(CHANNEL);
    assert_eq!(posted(&store, &payable).await, 993);
    assert_eq!(posted(&store, accounting::PLATFORM_FEES).await, 7);

    // Three parts whose proportional shares (2.331 fen, 2.331 fen, 2.338 fen) round to 2 + 2
    // + 2 = 6: the last part must take what is left (3), or one fen of fee is never returned.
    let mut fee_returned = 0;
    for (no, amount) in [("r-a", "3.33"), ("r-b", "3.33"), ("r-c", "3.34")] {
        let refund = reserved(
            store
                .reserve_refund(&new_refund("o-fee", no, cny(amount)))
                .await
                .unwrap(),
        );
        assert!(refund.fee_minor >= 0 && refund.fee_minor < refund.amount.minor_units());
        fee_returned += refund.fee_minor;
        hold(&store, &refund).await;
        let done = store.complete_refund(&refund.refund_id).await.unwrap();
        assert_eq!(done.state, RefundState::Succeeded);
        assert_eq!(done.fee_minor, refund.fee_minor);
        assert_eq!(
            hold_state(&store, &refund.refund_id).await,
            Some(HoldState::Posted)
        );
    }
    assert_eq!(fee_returned, fee.minor_units(), "the whole fee, exactly");
    let shares: Vec<i64> = store
        .refunds_for_order("o-fee")
        .await
        .unwrap()
        .iter()
        .map(|r| r.fee_minor)
        .collect();
    assert_eq!(shares.iter().sum::<i64>(), 7, "{shares:?}");

    // Refunded in full: the merchant, our fee revenue and the clearing account are all back to
    // zero, and the order is Refunded.
    assert_eq!(posted(&store, &payable).await, 0);
    assert_eq!(posted(&store, accounting::PLATFORM_FEES).await, 0);
    assert_eq!(posted(&store, &clearing).await, 0);
    let order = store.order("o-fee").await.unwrap().unwrap();
    assert_eq!(order.state, PayState::Refunded);
    assert_eq!(
        store.order_history("o-fee").await.unwrap(),
        vec![
            (PayState::Created, PayState::Pending),
            (PayState::Pending, PayState::Succeeded),
            (PayState::Succeeded, PayState::PartiallyRefunded),
            (PayState::PartiallyRefunded, PayState::Refunded),
        ]
    );
    assert_balanced(&store).await;

    // Nothing is left: further refunds are refused before anything is written.
    let r = store
        .reserve_refund(&new_refund("o-fee", "r-d", cny("0.01")))
        .await
        .unwrap();
    assert_eq!(refused_code(r), "payflow.ORDER_NOT_REFUNDABLE");
}

async fn case_complete_and_fail_are_idempotent_and_exclusive(store: Store) {
    paid_order(&store, "o-end", cny("10.00"), None).await;
    let payable = accounting::merchant_payable(MERCHANT);

    // A refund that succeeds: completing it twice is once.
    let ok = reserved(
        store
            .reserve_refund(&new_refund("o-end", "r-ok", cny("4.00")))
            .await
            .unwrap(),
    );
    hold(&store, &ok).await;
    let done = store.complete_refund(&ok.refund_id).await.unwrap();
    assert_eq!(done.state, RefundState::Succeeded);
    let again = store.complete_refund(&ok.refund_id).await.unwrap();
    assert_eq!(again, done);
    assert_eq!(posted(&store, &payable).await, 600, "4.00 refunded once");
    let kinds: Vec<String> = store
        .entries_for_order("o-end")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, vec!["payment_succeeded", "refund"]);
    assert_eq!(
        store.order("o-end").await.unwrap().unwrap().state,
        PayState::PartiallyRefunded
    );
    // ... and it can no longer fail.
    match store.fail_refund(&ok.refund_id, &declined()).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("fail after complete: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.refund(&ok.refund_id).await.unwrap().unwrap().state,
        RefundState::Succeeded
    );
    assert_eq!(
        hold_state(&store, &ok.refund_id).await,
        Some(HoldState::Posted)
    );

    // A refund the channel declines: failing it twice is once, its hold is voided.
    let no = reserved(
        store
            .reserve_refund(&new_refund("o-end", "r-no", cny("6.00")))
            .await
            .unwrap(),
    );
    hold(&store, &no).await;
    let pending = store.account_balance(&payable).await.unwrap();
    assert_eq!(pending.debits_pending.minor_units(), 600);
    let failed = store.fail_refund(&no.refund_id, &declined()).await.unwrap();
    assert_eq!(failed.state, RefundState::Failed);
    assert_eq!(failed.failure, Some(declined()));
    let again = store.fail_refund(&no.refund_id, &declined()).await.unwrap();
    assert_eq!(again, failed);
    assert_eq!(
        hold_state(&store, &no.refund_id).await,
        Some(HoldState::Voided)
    );
    let b = store.account_balance(&payable).await.unwrap();
    assert_eq!(b.debits_pending.minor_units(), 0, "no hold left behind");
    assert_eq!(b.posted_net().minor_units(), 600, "nothing moved");
    // ... and it can no longer complete.
    match store.complete_refund(&no.refund_id).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("complete after fail: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        store.refund(&no.refund_id).await.unwrap().unwrap().state,
        RefundState::Failed
    );
    assert_eq!(posted(&store, &payable).await, 600);

    // A refund failed before its hold was made (a crash between reserve and try): the cancel
    // records an empty rollback, and the late try is refused, so no hold dangles.
    let early = reserved(
        store
            .reserve_refund(&new_refund("o-end", "r-early", cny("1.00")))
            .await
            .unwrap(),
    );
    store
        .fail_refund(&early.refund_id, &declined())
        .await
        .unwrap();
    assert_eq!(
        hold_state(&store, &early.refund_id).await,
        Some(HoldState::Voided)
    );
    let late_try = store
        .book_hold(&accounting::refund_hold(
            &early.refund_id,
            "o-end",
            CHANNEL,
            MERCHANT,
            cny("1.00"),
        ))
        .await;
    assert!(late_try.is_err(), "a try after its cancel: {late_try:?}");
    assert_eq!(
        store
            .account_balance(&payable)
            .await
            .unwrap()
            .debits_pending
            .minor_units(),
        0
    );

    // Failed refunds released their reservations: the 6.00 not refunded is refundable again.
    let rest = reserved(
        store
            .reserve_refund(&new_refund("o-end", "r-rest", cny("6.00")))
            .await
            .unwrap(),
    );
    hold(&store, &rest).await;
    store.complete_refund(&rest.refund_id).await.unwrap();
    assert_eq!(
        store.order("o-end").await.unwrap().unwrap().state,
        PayState::Refunded
    );
    assert_eq!(posted(&store, &payable).await, 0);
    assert_balanced(&store).await;

    // Unknown refunds are neither completed nor failed.
    assert!(matches!(
        store.complete_refund("no-such-refund").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.fail_refund("no-such-refund", &declined()).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn case_concurrent_reservations_never_exceed_the_paid_amount(store: Store) {
    paid_order(&store, "o-crowd", cny("10.00"), None).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .reserve_refund(&new_refund("o-crowd", &format!("c-{i}"), cny("1.00")))
                    .await
            })
        })
        .collect();
    let mut reserved_count = 0;
    let mut refused = 0;
    for t in futures::future::join_all(tasks).await {
        match t.unwrap().unwrap() {
            Reservation::Reserved { refund, .. } => {
                assert_eq!(refund.state, RefundState::Processing);
                reserved_count += 1;
            }
            Reservation::Refused { code, message } => {
                assert_eq!(code, "payflow.REFUND_EXCEEDS_PAID", "{message}");
                refused += 1;
            }
        }
    }
    assert_eq!((reserved_count, refused), (10, 40));
    let refunds = store.refunds_for_order("o-crowd").await.unwrap();
    assert_eq!(refunds.len(), 10);
    let total: i64 = refunds.iter().map(|r| r.amount.minor_units()).sum();
    assert_eq!(total, 1000, "exactly what was paid, never more");
}

async fn case_concurrent_same_refund_no_is_one_refund(store: Store) {
    paid_order(&store, "o-race", cny("10.00"), None).await;
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let r = NewRefund {
                    refund_id: format!("rid-race-{i}"),
                    ..new_refund("o-race", "r-same", cny("2.00"))
                };
                store.reserve_refund(&r).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in futures::future::join_all(tasks).await {
        ids.push(reserved(t.unwrap().unwrap()).refund_id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "every request got the same refund: {ids:?}");
    let refunds = store.refunds_for_order("o-race").await.unwrap();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].refund_id, ids[0]);
}
