//! The ledger suite, every case on SQLite and on PostgreSQL (see `common`): accounts and their
//! flags, journal entries, two-phase holds (the TCC primitive) and its three classic faults,
//! a property test against an in-memory model, and concurrent debits of one wallet.

#[macro_use]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use payflow_activities::accounting::{self, Booking};
use payflow_activities::store::accounts::{
    Account, AccountBalance, AccountFlags, AccountKind, SignedMoney,
};
use payflow_activities::store::holds::{Hold, HoldOutcome, HoldState, PostOutcome, VoidOutcome};
use payflow_activities::store::ledger::{JournalEntry, Posting};
use payflow_activities::store::{Backend, Store, StoreError, now_ms};
use payflow_client::{Currency, Money};

backend_tests! {
    case_open_account => sqlite_open_account, postgres_open_account;
    case_unbalanced_entry_refused_whole => sqlite_unbalanced_entry_refused_whole, postgres_unbalanced_entry_refused_whole;
    case_unknown_account_or_currency_refused => sqlite_unknown_account_or_currency_refused, postgres_unknown_account_or_currency_refused;
    case_duplicate_entry_is_one_entry => sqlite_duplicate_entry_is_one_entry, postgres_duplicate_entry_is_one_entry;
    case_flags_enforced => sqlite_flags_enforced, postgres_flags_enforced;
    case_hold_post_full_partial_and_void => sqlite_hold_post_full_partial_and_void, postgres_hold_post_full_partial_and_void;
    case_post_and_void_exclude_each_other => sqlite_post_and_void_exclude_each_other, postgres_post_and_void_exclude_each_other;
    case_tcc_faults => sqlite_tcc_faults, postgres_tcc_faults;
    case_expired_hold => sqlite_expired_hold, postgres_expired_hold;
    case_every_rule_then_trial_balance => sqlite_every_rule_then_trial_balance, postgres_every_rule_then_trial_balance;
    case_concurrent_debits_never_overdraw => sqlite_concurrent_debits_never_overdraw, postgres_concurrent_debits_never_overdraw;
    case_concurrent_post_and_void => sqlite_concurrent_post_and_void, postgres_concurrent_post_and_void;
    case_model => sqlite_model, postgres_model;
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn cny(amount: &str) -> Money {
    Money::parse(amount, Currency::Cny).unwrap()
}

fn minor(m: i64) -> Money {
    Money::from_minor(m, Currency::Cny).unwrap()
}

fn entry(id: &str, postings: Vec<Posting>) -> JournalEntry {
    JournalEntry {
        entry_id: id.to_string(),
        kind: "test".to_string(),
        order_id: Some(format!("order-{id}")),
        postings,
    }
}

fn transfer(id: &str, from: &str, to: &str, amount: Money) -> JournalEntry {
    entry(
        id,
        vec![Posting::debit(from, amount), Posting::credit(to, amount)],
    )
}

fn hold(id: &str, from: &str, to: &str, amount: Money) -> Hold {
    Hold {
        hold_id: id.to_string(),
        kind: "test_hold".to_string(),
        order_id: Some(format!("order-{id}")),
        debit_account: from.to_string(),
        credit_account: to.to_string(),
        amount,
        expires_at_ms: None,
    }
}

/// (debits posted, credits posted, debits pending, credits pending) in minor units.
async fn totals(store: &Store, id: &str) -> (i64, i64, i64, i64) {
    let b = store.account_balance(id).await.unwrap();
    (
        b.debits_posted.minor_units(),
        b.credits_posted.minor_units(),
        b.debits_pending.minor_units(),
        b.credits_pending.minor_units(),
    )
}

/// Funds `wallet:{owner}` with `amount` from a channel (a recharge).
async fn fund_wallet(store: &Store, owner: &str, amount: Money) {
    let b = accounting::recharge_succeeded(&format!("fund-{owner}"), "ch", owner, amount);
    assert!(store.book(&b).await.unwrap());
}

/// Debits minus credits per currency over every account is zero, the balances kept per
/// account equal the postings they came from, and no flag is broken.
async fn assert_ledger_sound(store: &Store) {
    let tb = store.trial_balance().await.unwrap();
    assert!(tb.values().all(|d| *d == 0), "trial balance {tb:?}");
    let mut per_currency: BTreeMap<Currency, i64> = BTreeMap::new();
    for b in store.account_balances().await.unwrap() {
        *per_currency.entry(b.account.currency).or_default() +=
            b.debits_posted.minor_units() - b.credits_posted.minor_units();
        assert_eq!(
            store.account_totals(&b.account.id).await.unwrap(),
            (
                b.debits_posted.minor_units(),
                b.credits_posted.minor_units()
            ),
            "kept balance of {} differs from its postings",
            b.account.id
        );
        assert_flags_hold(&b);
    }
    assert!(
        per_currency.values().all(|d| *d == 0),
        "account balances do not sum to zero: {per_currency:?}"
    );
}

fn assert_flags_hold(b: &AccountBalance) {
    let (dp, cp, dpend, cpend) = (
        b.debits_posted.minor_units(),
        b.credits_posted.minor_units(),
        b.debits_pending.minor_units(),
        b.credits_pending.minor_units(),
    );
    if b.account.flags.debits_must_not_exceed_credits {
        assert!(dp + dpend <= cp, "{} overdrawn: {b:?}", b.account.id);
    }
    if b.account.flags.credits_must_not_exceed_debits {
        assert!(cp + cpend <= dp, "{} over-credited: {b:?}", b.account.id);
    }
}

fn expect_insufficient<T: std::fmt::Debug>(
    r: Result<T, StoreError>,
    account: &str,
    needed: Money,
    available: i64,
) {
    match r {
        Err(StoreError::InsufficientFunds {
            account: a,
            needed: n,
            available: av,
        }) => {
            assert_eq!(a, account);
            assert_eq!(n, needed);
            assert_eq!(av, SignedMoney::from_minor(available, needed.currency()));
        }
        other => panic!("expected InsufficientFunds on {account}, got {other:?}"),
    }
}

fn expect_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

fn expect_invalid<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::Invalid(_)) => {}
        other => panic!("{what}: expected Invalid, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

async fn case_open_account(store: Store) {
    let wallet = accounting::wallet_account("alice", Currency::Cny);
    match store.account_balance(&wallet.id).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("expected NotFound before opening, got {other:?}"),
    }
    store.open_account(&wallet).await.unwrap();
    store.open_account(&wallet).await.unwrap();
    let b = store.account_balance(&wallet.id).await.unwrap();
    assert_eq!(b.account, wallet);
    assert_eq!(totals(&store, &wallet.id).await, (0, 0, 0, 0));
    assert!(b.posted_net().is_zero() && b.available().is_zero());

    let other_kind = Account {
        kind: AccountKind::Asset,
        ..wallet.clone()
    };
    let other_currency = Account {
        currency: Currency::Usd,
        ..wallet.clone()
    };
    let other_flags = Account {
        flags: AccountFlags::default(),
        ..wallet.clone()
    };
    for (a, what) in [
        (other_kind, "kind"),
        (other_currency, "currency"),
        (other_flags, "flags"),
    ] {
        expect_conflict(store.open_account(&a).await, what);
    }
    // The first definition stands.
    assert_eq!(
        store.account_balance(&wallet.id).await.unwrap().account,
        wallet
    );

    let both_flags = Account {
        id: "odd".into(),
        flags: AccountFlags {
            debits_must_not_exceed_credits: true,
            credits_must_not_exceed_debits: true,
        },
        ..wallet.clone()
    };
    expect_invalid(store.open_account(&both_flags).await, "both flags");
    assert!(matches!(
        store.account_balance("odd").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.account_balances().await.unwrap().len(), 1);
}

async fn case_unbalanced_entry_refused_whole(store: Store) {
    let a = accounting::channel_clearing_account("ch", Currency::Cny);
    let b = accounting::wallet_account("bob", Currency::Cny);
    let c = accounting::platform_fees_account(Currency::Cny);
    for acc in [&a, &b, &c] {
        store.open_account(acc).await.unwrap();
    }
    // Three postings, two of which balance: the whole entry is refused.
    let bad = entry(
        "e-1",
        vec![
            Posting::debit(&a.id, cny("10.00")),
            Posting::credit(&b.id, cny("9.00")),
            Posting::credit(&c.id, cny("0.99")),
        ],
    );
    expect_invalid(store.post_entry(&bad).await, "unbalanced");
    expect_invalid(
        store
            .book(&Booking {
                accounts: vec![a.clone(), b.clone(), c.clone()],
                entry: bad.clone(),
            })
            .await,
        "unbalanced booking",
    );
    // A single posting, and a zero posting, are refused too.
    expect_invalid(
        store
            .post_entry(&entry("e-2", vec![Posting::debit(&a.id, cny("1.00"))]))
            .await,
        "one posting",
    );
    let zero = JournalEntry {
        postings: vec![
            Posting {
                account_id: a.id.clone(),
                currency: Currency::Cny,
                debit_minor: 0,
                credit_minor: 0,
            },
            Posting {
                account_id: b.id.clone(),
                currency: Currency::Cny,
                debit_minor: 0,
                credit_minor: 0,
            },
        ],
        ..entry("e-3", vec![])
    };
    expect_invalid(store.post_entry(&zero).await, "zero postings");
    for acc in [&a, &b, &c] {
        assert_eq!(totals(&store, &acc.id).await, (0, 0, 0, 0));
    }
    assert!(
        store
            .entries_for_order("order-e-1")
            .await
            .unwrap()
            .is_empty()
    );
    // The refused id was not used up.
    let good = entry(
        "e-1",
        vec![
            Posting::debit(&a.id, cny("10.00")),
            Posting::credit(&b.id, cny("9.01")),
            Posting::credit(&c.id, cny("0.99")),
        ],
    );
    assert!(store.post_entry(&good).await.unwrap());
    assert_eq!(
        store.entries_for_order("order-e-1").await.unwrap(),
        vec![good]
    );
    assert_eq!(totals(&store, &b.id).await, (0, 901, 0, 0));
    assert_ledger_sound(&store).await;
}

async fn case_unknown_account_or_currency_refused(store: Store) {
    let clearing = accounting::channel_clearing_account("ch", Currency::Cny);
    let usd_fees = accounting::platform_fees_account(Currency::Usd);
    store.open_account(&clearing).await.unwrap();
    store.open_account(&usd_fees).await.unwrap();

    // To an account never opened.
    expect_invalid(
        store
            .post_entry(&transfer("e-1", &clearing.id, "wallet:nobody", cny("1.00")))
            .await,
        "unknown account",
    );
    // CNY postings to a USD account.
    expect_invalid(
        store
            .post_entry(&transfer("e-2", &clearing.id, &usd_fees.id, cny("1.00")))
            .await,
        "currency mismatch",
    );
    // A booking that declares an account in one currency and posts in another.
    let mut b = accounting::recharge_succeeded("o-3", "ch", "carol", cny("1.00"));
    b.accounts[1].currency = Currency::Usd;
    expect_invalid(store.book(&b).await, "booking with a USD wallet");
    // Holds too.
    expect_invalid(
        store
            .hold(&hold("h-1", &clearing.id, "wallet:nobody", cny("1.00")))
            .await,
        "hold to unknown account",
    );
    expect_invalid(
        store
            .hold(&hold("h-2", &clearing.id, &usd_fees.id, cny("1.00")))
            .await,
        "hold currency mismatch",
    );

    // Nothing was written anywhere: no postings, no holds, no accounts opened by the refusals.
    assert_eq!(totals(&store, &clearing.id).await, (0, 0, 0, 0));
    assert_eq!(totals(&store, &usd_fees.id).await, (0, 0, 0, 0));
    assert_eq!(store.trial_balance().await.unwrap(), BTreeMap::new());
    assert_eq!(store.hold_state("h-1").await.unwrap(), None);
    assert_eq!(store.hold_state("h-2").await.unwrap(), None);
    for id in ["wallet:nobody", "wallet:carol"] {
        assert!(matches!(
            store.account_balance(id).await,
            Err(StoreError::NotFound(_))
        ));
    }
}

async fn case_duplicate_entry_is_one_entry(store: Store) {
    let b = accounting::payment_succeeded("o-1", "ch", "m1", cny("12.34"), Some(cny("0.07")));
    assert!(store.book(&b).await.unwrap());
    assert!(!store.book(&b).await.unwrap());
    // The same id with other postings is still the first entry.
    let other = accounting::payment_succeeded("o-1", "ch", "m1", cny("99.00"), None);
    assert!(!store.book(&other).await.unwrap());
    assert!(!store.post_entry(&other.entry).await.unwrap());

    assert_eq!(
        store.entries_for_order("o-1").await.unwrap(),
        vec![b.entry.clone()]
    );
    assert_eq!(
        totals(&store, &accounting::channel_clearing("ch")).await,
        (1234, 0, 0, 0)
    );
    assert_eq!(
        totals(&store, &accounting::merchant_payable("m1")).await,
        (0, 1227, 0, 0)
    );
    assert_eq!(
        totals(&store, accounting::PLATFORM_FEES).await,
        (0, 7, 0, 0)
    );
    assert_ledger_sound(&store).await;
}

async fn case_flags_enforced(store: Store) {
    fund_wallet(&store, "alice", cny("10.00")).await;
    let bob = accounting::wallet_account("bob", Currency::Cny);
    store.open_account(&bob).await.unwrap();
    let alice = accounting::wallet("alice");

    // One fen more than the balance: refused, nothing written.
    expect_insufficient(
        store
            .post_entry(&transfer("e-1", &alice, &bob.id, cny("10.01")))
            .await,
        &alice,
        cny("10.01"),
        1000,
    );
    assert_eq!(totals(&store, &alice).await, (0, 1000, 0, 0));
    assert_eq!(totals(&store, &bob.id).await, (0, 0, 0, 0));
    // The id was not used up by the refusal.
    assert!(
        store
            .post_entry(&transfer("e-1", &alice, &bob.id, cny("3.00")))
            .await
            .unwrap()
    );

    // A hold reserves: what is held cannot be spent again.
    assert_eq!(
        store
            .hold(&hold("h-1", &alice, &bob.id, cny("4.00")))
            .await
            .unwrap(),
        HoldOutcome::Held
    );
    let b = store.account_balance(&alice).await.unwrap();
    assert_eq!(b.posted_net(), cny("7.00"));
    assert_eq!(b.available(), cny("3.00"));
    expect_insufficient(
        store
            .post_entry(&transfer("e-2", &alice, &bob.id, cny("3.01")))
            .await,
        &alice,
        cny("3.01"),
        300,
    );
    expect_insufficient(
        store.hold(&hold("h-2", &alice, &bob.id, cny("3.01"))).await,
        &alice,
        cny("3.01"),
        300,
    );
    assert_eq!(store.hold_state("h-2").await.unwrap(), None);
    // Pending credits do not count: bob has 3.00 posted and 4.00 on its way, and can spend
    // only the 3.00.
    expect_insufficient(
        store
            .post_entry(&transfer("e-3", &bob.id, &alice, cny("3.01")))
            .await,
        &bob.id,
        cny("3.01"),
        300,
    );
    // Exactly the available amount is fine, and then nothing is left.
    assert!(
        store
            .post_entry(&transfer("e-4", &alice, &bob.id, cny("3.00")))
            .await
            .unwrap()
    );
    expect_insufficient(
        store
            .post_entry(&transfer("e-5", &alice, &bob.id, cny("0.01")))
            .await,
        &alice,
        cny("0.01"),
        0,
    );
    assert_eq!(totals(&store, &alice).await, (600, 1000, 400, 0));
    assert_eq!(totals(&store, &bob.id).await, (0, 600, 0, 400));
    assert!(
        store
            .account_balance(&alice)
            .await
            .unwrap()
            .available()
            .is_zero()
    );

    // An entry that debits and credits the same flagged account counts its own credit.
    let through = entry(
        "e-6",
        vec![
            Posting::debit(&alice, cny("5.00")),
            Posting::credit(&alice, cny("5.00")),
            Posting::debit(accounting::channel_clearing("ch"), cny("1.00")),
            Posting::credit(&bob.id, cny("1.00")),
        ],
    );
    assert!(store.post_entry(&through).await.unwrap());

    // The symmetric flag: credits may not exceed debits.
    let receivable = Account {
        id: "customer:c1:receivable".into(),
        owner: "customer:c1".into(),
        kind: AccountKind::Asset,
        currency: Currency::Cny,
        flags: AccountFlags {
            debits_must_not_exceed_credits: false,
            credits_must_not_exceed_debits: true,
        },
    };
    store.open_account(&receivable).await.unwrap();
    let fees = accounting::platform_fees_account(Currency::Cny);
    store.open_account(&fees).await.unwrap();
    expect_insufficient(
        store
            .post_entry(&transfer("e-7", &fees.id, &receivable.id, cny("0.01")))
            .await,
        &receivable.id,
        cny("0.01"),
        0,
    );
    assert!(
        store
            .post_entry(&transfer("e-8", &receivable.id, &fees.id, cny("2.00")))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .hold(&hold("h-3", &fees.id, &receivable.id, cny("1.50")))
            .await
            .unwrap(),
        HoldOutcome::Held
    );
    expect_insufficient(
        store
            .post_entry(&transfer("e-9", &fees.id, &receivable.id, cny("0.51")))
            .await,
        &receivable.id,
        cny("0.51"),
        50,
    );
    assert_ledger_sound(&store).await;
}

async fn case_hold_post_full_partial_and_void(store: Store) {
    fund_wallet(&store, "alice", cny("100.00")).await;
    let bob = accounting::wallet_account("bob", Currency::Cny);
    store.open_account(&bob).await.unwrap();
    let alice = accounting::wallet("alice");

    // Full post.
    store
        .hold(&hold("h-full", &alice, &bob.id, cny("30.00")))
        .await
        .unwrap();
    assert_eq!(
        store.hold_state("h-full").await.unwrap(),
        Some(HoldState::Pending)
    );
    assert_eq!(totals(&store, &alice).await, (0, 10000, 3000, 0));
    assert_eq!(totals(&store, &bob.id).await, (0, 0, 0, 3000));
    assert_eq!(
        store.post_hold("h-full", None).await.unwrap(),
        PostOutcome::Posted {
            entry_id: "h-full:post".into(),
            amount: cny("30.00")
        }
    );
    assert_eq!(
        store.hold_state("h-full").await.unwrap(),
        Some(HoldState::Posted)
    );
    assert_eq!(totals(&store, &alice).await, (3000, 10000, 0, 0));
    assert_eq!(totals(&store, &bob.id).await, (0, 3000, 0, 0));
    // The posting is a journal entry with the hold's kind and order.
    assert_eq!(
        store.entries_for_order("order-h-full").await.unwrap(),
        vec![JournalEntry {
            entry_id: "h-full:post".into(),
            kind: "test_hold".into(),
            order_id: Some("order-h-full".into()),
            postings: vec![
                Posting::debit(&alice, cny("30.00")),
                Posting::credit(&bob.id, cny("30.00")),
            ],
        }]
    );

    // Partial post: the rest is released.
    store
        .hold(&hold("h-part", &alice, &bob.id, cny("50.00")))
        .await
        .unwrap();
    assert_eq!(totals(&store, &alice).await, (3000, 10000, 5000, 0));
    expect_invalid(
        store.post_hold("h-part", Some(cny("50.01"))).await,
        "post more than held",
    );
    expect_invalid(
        store
            .post_hold("h-part", Some(Money::parse("1.00", Currency::Usd).unwrap()))
            .await,
        "post in another currency",
    );
    assert_eq!(
        store.post_hold("h-part", Some(cny("20.00"))).await.unwrap(),
        PostOutcome::Posted {
            entry_id: "h-part:post".into(),
            amount: cny("20.00")
        }
    );
    assert_eq!(totals(&store, &alice).await, (5000, 10000, 0, 0));
    assert_eq!(totals(&store, &bob.id).await, (0, 5000, 0, 0));
    assert_eq!(
        store.account_balance(&alice).await.unwrap().available(),
        cny("50.00")
    );

    // Void releases everything.
    store
        .hold(&hold("h-void", &alice, &bob.id, cny("50.00")))
        .await
        .unwrap();
    assert!(
        store
            .account_balance(&alice)
            .await
            .unwrap()
            .available()
            .is_zero()
    );
    assert_eq!(
        store.void_hold("h-void").await.unwrap(),
        VoidOutcome::Voided
    );
    assert_eq!(
        store.hold_state("h-void").await.unwrap(),
        Some(HoldState::Voided)
    );
    assert_eq!(totals(&store, &alice).await, (5000, 10000, 0, 0));
    assert_eq!(totals(&store, &bob.id).await, (0, 5000, 0, 0));
    assert!(
        store
            .entries_for_order("order-h-void")
            .await
            .unwrap()
            .is_empty()
    );
    assert_ledger_sound(&store).await;
}

async fn case_post_and_void_exclude_each_other(store: Store) {
    fund_wallet(&store, "alice", cny("10.00")).await;
    let bob = accounting::wallet_account("bob", Currency::Cny);
    store.open_account(&bob).await.unwrap();
    let alice = accounting::wallet("alice");

    store
        .hold(&hold("h-1", &alice, &bob.id, cny("4.00")))
        .await
        .unwrap();
    store.void_hold("h-1").await.unwrap();
    expect_conflict(store.post_hold("h-1", None).await, "post after void");
    expect_conflict(
        store.hold(&hold("h-1", &alice, &bob.id, cny("4.00"))).await,
        "hold again after void",
    );

    store
        .hold(&hold("h-2", &alice, &bob.id, cny("4.00")))
        .await
        .unwrap();
    store.post_hold("h-2", None).await.unwrap();
    expect_conflict(store.void_hold("h-2").await, "void after post");
    expect_conflict(
        store.hold(&hold("h-2", &alice, &bob.id, cny("4.00"))).await,
        "hold again after post",
    );
    assert_eq!(
        store.hold_state("h-2").await.unwrap(),
        Some(HoldState::Posted)
    );
    assert_eq!(totals(&store, &alice).await, (400, 1000, 0, 0));
    assert_eq!(totals(&store, &bob.id).await, (0, 400, 0, 0));
    assert_ledger_sound(&store).await;
}

async fn case_tcc_faults(store: Store) {
    fund_wallet(&store, "alice", cny("10.00")).await;
    let t = accounting::transfer_hold("t-1", "alice", "bob", cny("6.00"));

    // 1. Empty rollback: the cancel arrives first and finds no hold. It is recorded...
    assert_eq!(
        store.void_hold(&t.hold.hold_id).await.unwrap(),
        VoidOutcome::NothingToVoid
    );
    assert_eq!(
        store.hold_state(&t.hold.hold_id).await.unwrap(),
        Some(HoldState::Voided)
    );
    assert_eq!(
        store.void_hold(&t.hold.hold_id).await.unwrap(),
        VoidOutcome::NothingToVoid
    );
    // 3. ...so the late try is refused: no dangling hold, nothing reserved.
    expect_conflict(store.book_hold(&t).await, "try after cancel");
    assert_eq!(
        totals(&store, &accounting::wallet("alice")).await,
        (0, 1000, 0, 0)
    );
    expect_conflict(
        store.post_hold(&t.hold.hold_id, None).await,
        "confirm after cancel",
    );
    match store.post_hold("never-held", None).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("expected NotFound for a hold never made, got {other:?}"),
    }

    // 2. Idempotence: try, confirm and cancel each answer the same when repeated.
    let t2 = accounting::transfer_hold("t-2", "alice", "bob", cny("6.00"));
    assert_eq!(store.book_hold(&t2).await.unwrap(), HoldOutcome::Held);
    assert_eq!(
        store.book_hold(&t2).await.unwrap(),
        HoldOutcome::AlreadyHeld
    );
    let mut other_terms = t2.clone();
    other_terms.hold.amount = cny("6.01");
    expect_conflict(store.book_hold(&other_terms).await, "same id, other amount");
    let first = store.post_hold(&t2.hold.hold_id, None).await.unwrap();
    assert_eq!(
        first,
        PostOutcome::Posted {
            entry_id: "transfer:t-2:post".into(),
            amount: cny("6.00")
        }
    );
    // A retried confirm (even asking for another amount) gets the first answer.
    assert_eq!(
        store
            .post_hold(&t2.hold.hold_id, Some(cny("1.00")))
            .await
            .unwrap(),
        PostOutcome::AlreadyPosted {
            entry_id: "transfer:t-2:post".into(),
            amount: cny("6.00")
        }
    );
    let t3 = accounting::transfer_hold("t-3", "alice", "bob", cny("4.00"));
    assert_eq!(store.book_hold(&t3).await.unwrap(), HoldOutcome::Held);
    assert_eq!(
        store.void_hold(&t3.hold.hold_id).await.unwrap(),
        VoidOutcome::Voided
    );
    assert_eq!(
        store.void_hold(&t3.hold.hold_id).await.unwrap(),
        VoidOutcome::AlreadyVoided
    );
    assert_eq!(
        totals(&store, &accounting::wallet("alice")).await,
        (600, 1000, 0, 0)
    );
    assert_eq!(
        totals(&store, &accounting::wallet("bob")).await,
        (0, 600, 0, 0)
    );
    assert_ledger_sound(&store).await;
}

async fn case_expired_hold(store: Store) {
    fund_wallet(&store, "alice", cny("10.00")).await;
    let bob = accounting::wallet_account("bob", Currency::Cny);
    store.open_account(&bob).await.unwrap();
    let alice = accounting::wallet("alice");

    let mut h = hold("h-exp", &alice, &bob.id, cny("8.00"));
    h.expires_at_ms = Some(now_ms() - 1);
    expect_invalid(store.hold(&h).await, "already expired");
    assert_eq!(store.hold_state("h-exp").await.unwrap(), None);

    let expires = now_ms() + 1500;
    h.expires_at_ms = Some(expires);
    assert_eq!(store.hold(&h).await.unwrap(), HoldOutcome::Held);
    assert_eq!(totals(&store, &alice).await, (0, 1000, 800, 0));
    expect_insufficient(
        store
            .post_entry(&transfer("e-1", &alice, &bob.id, cny("2.01")))
            .await,
        &alice,
        cny("2.01"),
        200,
    );
    // The expiry is wall-clock time in the store: wait it out.
    while now_ms() <= expires {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        store.hold_state("h-exp").await.unwrap(),
        Some(HoldState::Expired)
    );
    // No longer pending on either side...
    assert_eq!(totals(&store, &alice).await, (0, 1000, 0, 0));
    assert_eq!(totals(&store, &bob.id).await, (0, 0, 0, 0));
    // ...not postable, not re-holdable...
    expect_conflict(store.post_hold("h-exp", None).await, "post expired");
    expect_conflict(store.hold(&h).await, "hold again after expiry");
    // ...and its money is available again.
    assert!(
        store
            .post_entry(&transfer("e-1", &alice, &bob.id, cny("9.00")))
            .await
            .unwrap()
    );
    assert_eq!(store.void_hold("h-exp").await.unwrap(), VoidOutcome::Voided);
    assert_eq!(
        store.hold_state("h-exp").await.unwrap(),
        Some(HoldState::Voided)
    );
    assert_eq!(totals(&store, &alice).await, (900, 1000, 0, 0));
    assert_ledger_sound(&store).await;
}

async fn case_every_rule_then_trial_balance(store: Store) {
    // Payments into merchant m1 through two channels, one with a fee.
    let fee = accounting::fee_for(cny("100.00"), "0.006".parse().unwrap());
    assert_eq!(fee, Some(cny("0.60")));
    store
        .book(&accounting::payment_succeeded(
            "o-1",
            "alipay",
            "m1",
            cny("100.00"),
            fee,
        ))
        .await
        .unwrap();
    store
        .book(&accounting::payment_succeeded(
            "o-2",
            "wechat",
            "m1",
            cny("50.00"),
            None,
        ))
        .await
        .unwrap();
    // A late payment and its refund.
    store
        .book(&accounting::late_payment_received(
            "o-3",
            "alipay",
            cny("20.00"),
        ))
        .await
        .unwrap();
    let late = accounting::late_payment_refund_hold("r-late", "o-3", "alipay", cny("20.00"));
    store.book_hold(&late).await.unwrap();
    store.post_hold(&late.hold.hold_id, None).await.unwrap();
    // A merchant refund, confirmed.
    let refund = accounting::refund_hold("r-1", "o-1", "alipay", "m1", cny("30.00"));
    assert_eq!(refund.hold.hold_id, accounting::refund_hold_id("r-1"));
    store.book_hold(&refund).await.unwrap();
    store.post_hold(&refund.hold.hold_id, None).await.unwrap();
    // A refund larger than the payable is refused by the flag.
    let too_big = accounting::refund_hold("r-2", "o-2", "wechat", "m1", cny("119.41"));
    expect_insufficient(
        store.book_hold(&too_big).await,
        &accounting::merchant_payable("m1"),
        cny("119.41"),
        11940,
    );
    // A payout, failed at the channel: cancelled.
    let payout = accounting::payout_hold("p-1", "m1", "alipay", cny("100.00"));
    store.book_hold(&payout).await.unwrap();
    assert_eq!(
        store.void_hold(&payout.hold.hold_id).await.unwrap(),
        VoidOutcome::Voided
    );
    // A recharge and a wallet transfer, and a transfer beyond the wallet.
    store
        .book(&accounting::recharge_succeeded(
            "o-4",
            "alipay",
            "alice",
            cny("15.00"),
        ))
        .await
        .unwrap();
    let t = accounting::transfer_hold("t-1", "alice", "bob", cny("5.00"));
    store.book_hold(&t).await.unwrap();
    store.post_hold(&t.hold.hold_id, None).await.unwrap();
    expect_insufficient(
        store
            .book_hold(&accounting::transfer_hold(
                "t-2",
                "alice",
                "bob",
                cny("10.01"),
            ))
            .await,
        &accounting::wallet("alice"),
        cny("10.01"),
        1000,
    );

    let net = |id: String| {
        let store = store.clone();
        async move { store.account_balance(&id).await.unwrap().posted_net() }
    };
    assert_eq!(net(accounting::merchant_payable("m1")).await, cny("119.40"));
    assert_eq!(net(accounting::PLATFORM_FEES.into()).await, cny("0.60"));
    assert!(
        net(accounting::PLATFORM_LATE_PAYMENTS.into())
            .await
            .is_zero()
    );
    // alipay collected 100 + 20 + 15 and paid back 20 + 30.
    assert_eq!(
        net(accounting::channel_clearing("alipay")).await,
        cny("85.00")
    );
    assert_eq!(
        net(accounting::channel_clearing("wechat")).await,
        cny("50.00")
    );
    assert_eq!(net(accounting::wallet("alice")).await, cny("10.00"));
    assert_eq!(net(accounting::wallet("bob")).await, cny("5.00"));
    assert_eq!(
        store.trial_balance().await.unwrap(),
        BTreeMap::from([("CNY".to_string(), 0)])
    );
    assert_ledger_sound(&store).await;
    // The refund's posting is an entry of its order.
    let entries = store.entries_for_order("o-1").await.unwrap();
    let ids: Vec<&str> = entries.iter().map(|e| e.entry_id.as_str()).collect();
    assert_eq!(ids, ["pay:o-1:succeeded", "refund:r-1:post"]);
}

/// 50 concurrent debits of one wallet funded for 30 of them: exactly 30 succeed, whether the
/// debit is a hold or a posted entry. On PostgreSQL these run on separate connections.
async fn case_concurrent_debits_never_overdraw(store: Store) {
    fund_wallet(&store, "alice", cny("30.00")).await;
    let bob = accounting::wallet_account("bob", Currency::Cny);
    store.open_account(&bob).await.unwrap();
    let alice = accounting::wallet("alice");

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            let barrier = barrier.clone();
            let (alice, bob) = (alice.clone(), bob.id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                if i % 2 == 0 {
                    store
                        .book_hold(&accounting::transfer_hold(
                            &format!("t-{i}"),
                            "alice",
                            "bob",
                            cny("1.00"),
                        ))
                        .await
                        .map(|_| ())
                } else {
                    store
                        .post_entry(&transfer(&format!("e-{i}"), &alice, &bob, cny("1.00")))
                        .await
                        .map(|_| ())
                }
            })
        })
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        match task.await.expect("task panicked") {
            Ok(()) => ok += 1,
            Err(StoreError::InsufficientFunds { account, .. }) => {
                assert_eq!(account, alice);
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((ok, refused), (30, 20));
    let b = store.account_balance(&alice).await.unwrap();
    assert_eq!(
        b.debits_posted.minor_units() + b.debits_pending.minor_units(),
        3000
    );
    assert!(b.available().is_zero());
    assert_ledger_sound(&store).await;
}

/// Confirm and cancel racing on one hold: exactly one of them wins, and every call agrees.
async fn case_concurrent_post_and_void(store: Store) {
    fund_wallet(&store, "alice", cny("10.00")).await;
    let t = accounting::transfer_hold("t-1", "alice", "bob", cny("7.00"));
    store.book_hold(&t).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            let id = t.hold.hold_id.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    store.post_hold(&id, None).await.map(|_| "post")
                } else {
                    store.void_hold(&id).await.map(|_| "void")
                }
            })
        })
        .collect();
    let mut won: HashMap<&str, usize> = HashMap::new();
    for task in tasks {
        match task.await.expect("task panicked") {
            Ok(what) => *won.entry(what).or_default() += 1,
            Err(StoreError::Conflict(_)) => *won.entry("conflict").or_default() += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let state = store.hold_state(&t.hold.hold_id).await.unwrap();
    let alice = totals(&store, &accounting::wallet("alice")).await;
    match state {
        Some(HoldState::Posted) => {
            assert_eq!(won.get("post"), Some(&10));
            assert_eq!(won.get("conflict"), Some(&10));
            assert_eq!(alice, (700, 1000, 0, 0));
        }
        Some(HoldState::Voided) => {
            assert_eq!(won.get("void"), Some(&10));
            assert_eq!(won.get("conflict"), Some(&10));
            assert_eq!(alice, (0, 1000, 0, 0));
        }
        other => panic!("hold ended {other:?}"),
    }
    assert_ledger_sound(&store).await;
}

// ---------------------------------------------------------------------------------------------
// Property test: random operations against an in-memory model
// ---------------------------------------------------------------------------------------------

mod model {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};

    /// The accounts a case may touch, by index: an unflagged asset, two wallets, an asset that
    /// credits may not exceed, and a USD account (CNY postings to it are refused).
    pub const ACCOUNTS: usize = 5;

    fn account(prefix: &str, i: usize) -> Account {
        let (kind, currency, flags) = match i {
            0 => (AccountKind::Asset, Currency::Cny, (false, false)),
            1 | 2 => (AccountKind::Liability, Currency::Cny, (true, false)),
            3 => (AccountKind::Asset, Currency::Cny, (false, true)),
            _ => (AccountKind::Revenue, Currency::Usd, (false, false)),
        };
        Account {
            id: format!("{prefix}:a{i}"),
            owner: prefix.to_string(),
            kind,
            currency,
            flags: AccountFlags {
                debits_must_not_exceed_credits: flags.0,
                credits_must_not_exceed_debits: flags.1,
            },
        }
    }

    #[derive(Debug, Clone)]
    pub enum Op {
        Open {
            account: usize,
            conflicting: bool,
        },
        Entry {
            id: u8,
            from: usize,
            to: usize,
            amount: i64,
            skew: i64,
        },
        Hold {
            id: u8,
            from: usize,
            to: usize,
            amount: i64,
        },
        Post {
            id: u8,
            amount: Option<i64>,
        },
        Void {
            id: u8,
        },
        /// The previous operation again (a retried call).
        Retry,
    }

    /// Mostly the unflagged asset (which funds the others), rarely the USD account.
    fn acc() -> impl Strategy<Value = usize> {
        prop_oneof![4 => Just(0), 3 => Just(1), 3 => Just(2), 2 => Just(3), 1 => Just(4)]
    }

    /// Mostly small amounts, so that funded accounts can often pay.
    fn amount() -> impl Strategy<Value = i64> {
        prop_oneof![3 => 1i64..200, 1 => 200i64..1000]
    }

    /// A hold id for a post or void: mostly one that holds use, sometimes 3, never held.
    fn hold_id() -> impl Strategy<Value = u8> {
        prop_oneof![6 => 0u8..3, 1 => Just(3u8)]
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few hold ids, so that posts, voids and retries often meet an existing hold; id 3 is
        // never held.
        prop_oneof![
            1 => (0..ACCOUNTS, prop::bool::weighted(0.5))
                .prop_map(|(account, conflicting)| Op::Open { account, conflicting }),
            5 => (0u8..10, acc(), acc(), amount(), prop_oneof![9 => Just(0i64), 1 => 1i64..5])
                .prop_map(|(id, from, to, amount, skew)| Op::Entry { id, from, to, amount, skew }),
            // Mostly between two different accounts (the same one twice is refused).
            4 => (0u8..3, acc(), acc(), amount(), prop::bool::weighted(0.1))
                .prop_map(|(id, from, to, amount, same)| Op::Hold {
                    id,
                    from,
                    to: if same { from } else if to == from { (from + 1) % 4 } else { to },
                    amount,
                }),
            4 => (hold_id(), prop::option::weighted(0.7, amount()))
                .prop_map(|(id, amount)| Op::Post { id, amount }),
            3 => hold_id().prop_map(|id| Op::Void { id }),
            3 => Just(Op::Retry),
        ]
    }

    /// Most accounts are opened first (the others may be opened later, or never).
    pub fn ops() -> impl Strategy<Value = Vec<Op>> {
        (
            prop::collection::vec(prop::bool::weighted(0.9), ACCOUNTS),
            prop::collection::vec(op(), 1..50),
        )
            .prop_map(|(open, ops)| {
                open.iter()
                    .enumerate()
                    .filter(|(_, o)| **o)
                    .map(|(account, _)| Op::Open {
                        account,
                        conflicting: false,
                    })
                    .chain(ops)
                    .collect()
            })
    }

    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    struct Totals {
        dp: i64,
        cp: i64,
        dpend: i64,
        cpend: i64,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum HoldModel {
        Pending { from: usize, to: usize, amount: i64 },
        Posted { amount: i64 },
        Voided,
        Tombstone,
    }

    /// What the model expects a call to answer.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Expect {
        Ok(String),
        Invalid,
        Conflict,
        NotFound,
        Insufficient,
    }

    fn answer<T: std::fmt::Debug>(r: Result<T, StoreError>) -> Expect {
        match r {
            Ok(v) => Expect::Ok(format!("{v:?}")),
            Err(StoreError::Invalid(_)) => Expect::Invalid,
            Err(StoreError::Conflict(_)) => Expect::Conflict,
            Err(StoreError::NotFound(_)) => Expect::NotFound,
            Err(StoreError::InsufficientFunds { .. }) => Expect::Insufficient,
            Err(e) => panic!("unexpected store error: {e}"),
        }
    }

    #[derive(Default)]
    struct Model {
        open: [bool; ACCOUNTS],
        totals: [Totals; ACCOUNTS],
        entries: std::collections::HashSet<u8>,
        holds: HashMap<u8, HoldModel>,
    }

    impl Model {
        fn cny(&self, i: usize) -> bool {
            i != 4
        }

        /// Whether adding these amounts (posted or pending) breaks account `i`'s flag.
        fn breaks(&self, i: usize, debit: i64, credit: i64, posted: bool) -> bool {
            let t = self.totals[i];
            let other = |x: i64| if posted { x } else { 0 };
            match i {
                1 | 2 => debit - other(credit) > 0 && debit - other(credit) > t.cp - t.dp - t.dpend,
                3 => credit - other(debit) > 0 && credit - other(debit) > t.dp - t.cp - t.cpend,
                _ => false,
            }
        }
    }

    /// What the run exercised: `{op}:{answer}` counts.
    pub type Coverage = std::sync::Mutex<BTreeMap<String, usize>>;

    async fn run(
        store: &Store,
        prefix: &str,
        ops: &[Op],
        coverage: &Coverage,
    ) -> Result<(), TestCaseError> {
        let mut m = Model::default();
        let acc = |i: usize| account(prefix, i);
        let hid = |id: u8| format!("{prefix}:h{id}");
        let mut last: Option<&Op> = None;
        for (n, op) in ops.iter().enumerate() {
            let op = match (op, last) {
                (Op::Retry, Some(previous)) => previous,
                (Op::Retry, None) => continue,
                (op, _) => op,
            };
            last = Some(op);
            let (got, want) = match op {
                Op::Open {
                    account: i,
                    conflicting,
                } => {
                    if *conflicting && !m.open[*i] {
                        continue;
                    }
                    let mut a = acc(*i);
                    if *conflicting {
                        a.kind = AccountKind::Expense;
                    }
                    let got = answer(store.open_account(&a).await);
                    let want = if *conflicting {
                        Expect::Conflict
                    } else {
                        m.open[*i] = true;
                        Expect::Ok("()".into())
                    };
                    (got, want)
                }
                Op::Entry {
                    id,
                    from,
                    to,
                    amount,
                    skew,
                } => {
                    let e = JournalEntry {
                        entry_id: format!("{prefix}:e{id}"),
                        kind: "prop".into(),
                        order_id: None,
                        postings: vec![
                            Posting::debit(acc(*from).id, minor(*amount)),
                            Posting::credit(acc(*to).id, minor(amount + skew)),
                        ],
                    };
                    let got = answer(store.post_entry(&e).await);
                    let (mut d, mut c) = ([0i64; ACCOUNTS], [0i64; ACCOUNTS]);
                    d[*from] += amount;
                    c[*to] += amount;
                    let want = if *skew != 0 {
                        Expect::Invalid
                    } else if m.entries.contains(id) {
                        Expect::Ok("false".into())
                    } else if [from, to].iter().any(|i| !m.open[**i] || !m.cny(**i)) {
                        Expect::Invalid
                    } else if (0..ACCOUNTS).any(|i| m.breaks(i, d[i], c[i], true)) {
                        Expect::Insufficient
                    } else {
                        m.entries.insert(*id);
                        m.totals[*from].dp += amount;
                        m.totals[*to].cp += amount;
                        Expect::Ok("true".into())
                    };
                    (got, want)
                }
                Op::Hold {
                    id,
                    from,
                    to,
                    amount,
                } => {
                    let h = Hold {
                        hold_id: hid(*id),
                        kind: "prop".into(),
                        order_id: None,
                        debit_account: acc(*from).id,
                        credit_account: acc(*to).id,
                        amount: minor(*amount),
                        expires_at_ms: None,
                    };
                    let got = answer(store.hold(&h).await);
                    let want = if from == to
                        || [from, to].iter().any(|i| !m.open[**i] || !m.cny(**i))
                    {
                        Expect::Invalid
                    } else if let Some(existing) = m.holds.get(id) {
                        let same = HoldModel::Pending {
                            from: *from,
                            to: *to,
                            amount: *amount,
                        };
                        if *existing == same {
                            Expect::Ok(format!("{:?}", HoldOutcome::AlreadyHeld))
                        } else {
                            Expect::Conflict
                        }
                    } else if m.breaks(*from, *amount, 0, false) || m.breaks(*to, 0, *amount, false)
                    {
                        Expect::Insufficient
                    } else {
                        m.holds.insert(
                            *id,
                            HoldModel::Pending {
                                from: *from,
                                to: *to,
                                amount: *amount,
                            },
                        );
                        m.totals[*from].dpend += amount;
                        m.totals[*to].cpend += amount;
                        Expect::Ok(format!("{:?}", HoldOutcome::Held))
                    };
                    (got, want)
                }
                Op::Post { id, amount } => {
                    let got = answer(store.post_hold(&hid(*id), amount.map(minor)).await);
                    let entry_id = format!("{}:post", hid(*id));
                    let want = match m.holds.get(id).cloned() {
                        None => Expect::NotFound,
                        Some(HoldModel::Tombstone | HoldModel::Voided) => Expect::Conflict,
                        Some(HoldModel::Posted { amount: posted }) => Expect::Ok(format!(
                            "{:?}",
                            PostOutcome::AlreadyPosted {
                                entry_id,
                                amount: minor(posted)
                            }
                        )),
                        Some(HoldModel::Pending {
                            from,
                            to,
                            amount: held,
                        }) => {
                            let amount = amount.unwrap_or(held);
                            if amount > held {
                                Expect::Invalid
                            } else {
                                m.holds.insert(*id, HoldModel::Posted { amount });
                                m.totals[from].dpend -= held;
                                m.totals[to].cpend -= held;
                                m.totals[from].dp += amount;
                                m.totals[to].cp += amount;
                                Expect::Ok(format!(
                                    "{:?}",
                                    PostOutcome::Posted {
                                        entry_id,
                                        amount: minor(amount)
                                    }
                                ))
                            }
                        }
                    };
                    (got, want)
                }
                Op::Retry => unreachable!("resolved to the previous operation above"),
                Op::Void { id } => {
                    let got = answer(store.void_hold(&hid(*id)).await);
                    let want = match m.holds.get(id).cloned() {
                        None => {
                            m.holds.insert(*id, HoldModel::Tombstone);
                            Expect::Ok(format!("{:?}", VoidOutcome::NothingToVoid))
                        }
                        Some(HoldModel::Tombstone) => {
                            Expect::Ok(format!("{:?}", VoidOutcome::NothingToVoid))
                        }
                        Some(HoldModel::Voided) => {
                            Expect::Ok(format!("{:?}", VoidOutcome::AlreadyVoided))
                        }
                        Some(HoldModel::Posted { .. }) => Expect::Conflict,
                        Some(HoldModel::Pending { from, to, amount }) => {
                            m.holds.insert(*id, HoldModel::Voided);
                            m.totals[from].dpend -= amount;
                            m.totals[to].cpend -= amount;
                            Expect::Ok(format!("{:?}", VoidOutcome::Voided))
                        }
                    };
                    (got, want)
                }
            };
            prop_assert_eq!(&got, &want, "op {} {:?}", n, op);
            let name = format!("{op:?}");
            let name = name.split([' ', '{']).next().unwrap_or_default();
            let answer = match &want {
                Expect::Ok(v) => v.split([' ', '{']).next().unwrap_or_default().to_string(),
                other => format!("{other:?}"),
            };
            let mut c = coverage.lock().unwrap();
            *c.entry(format!("{name}:{answer}")).or_default() += 1;
            // A debit of a wallet that went through: the flag allowed it.
            if let (Op::Entry { from, to, .. }, Expect::Ok(v)) = (op, &want)
                && v == "true"
                && (1..=2).contains(from)
                && from != to
            {
                *c.entry("debit posted".into()).or_default() += 1;
            }
        }

        // Every account's four totals match the model; flags hold; the case's accounts sum to
        // zero per currency, and so does the whole ledger.
        let mut sum = 0;
        for i in 0..ACCOUNTS {
            let id = acc(i).id;
            match store.account_balance(&id).await {
                Ok(b) => {
                    prop_assert!(m.open[i], "{} open but not in the model", id);
                    let got = Totals {
                        dp: b.debits_posted.minor_units(),
                        cp: b.credits_posted.minor_units(),
                        dpend: b.debits_pending.minor_units(),
                        cpend: b.credits_pending.minor_units(),
                    };
                    prop_assert_eq!(got, m.totals[i], "totals of {}", id);
                    prop_assert_eq!(
                        store.account_totals(&id).await.unwrap(),
                        (got.dp, got.cp),
                        "kept balance vs postings of {}",
                        id
                    );
                    assert_flags_hold(&b);
                    sum += got.dp - got.cp;
                }
                Err(StoreError::NotFound(_)) => prop_assert!(!m.open[i], "{} not open", id),
                Err(e) => panic!("account_balance: {e}"),
            }
        }
        prop_assert_eq!(sum, 0);
        let tb = store.trial_balance().await.unwrap();
        prop_assert!(tb.values().all(|d| *d == 0), "trial balance {:?}", tb);
        Ok(())
    }

    /// Cases share one database; each uses its own account and id prefix.
    pub fn check(store: &Store) {
        let default_cases = match store.backend() {
            Backend::Sqlite => 256,
            Backend::Postgres => 128,
        };
        let cases = std::env::var("PAYFLOW_LEDGER_PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_cases);
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let counter = std::sync::atomic::AtomicUsize::new(0);
        let coverage = Coverage::default();
        let handle = tokio::runtime::Handle::current();
        let result = runner.run(&ops(), |ops| {
            let prefix = format!(
                "p{}",
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            handle.block_on(run(store, &prefix, &ops, &coverage))
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        // The run must have reached every kind of answer, or it proved little.
        let coverage = coverage.into_inner().unwrap();
        eprintln!("{:?} model coverage: {coverage:?}", store.backend());
        let missing: Vec<&str> = [
            "Open:Conflict",
            "Entry:true",
            "Entry:false",
            "Entry:Invalid",
            "Entry:Insufficient",
            "Hold:Held",
            "Hold:AlreadyHeld",
            "Hold:Conflict",
            "Hold:Insufficient",
            "Hold:Invalid",
            "Post:Posted",
            "Post:AlreadyPosted",
            "Post:Conflict",
            "Post:NotFound",
            "Post:Invalid",
            "Void:Voided",
            "Void:AlreadyVoided",
            "Void:NothingToVoid",
            "Void:Conflict",
            "debit posted",
        ]
        .into_iter()
        .filter(|k| coverage.get(*k).copied().unwrap_or(0) == 0)
        .collect();
        assert!(missing.is_empty(), "the model run never saw {missing:?}");
    }
}

async fn case_model(store: Store) {
    // proptest drives synchronous closures; run them on this worker thread, blocking it.
    let s = store.clone();
    tokio::task::block_in_place(move || model::check(&s));
    assert_ledger_sound(&store).await;
}
