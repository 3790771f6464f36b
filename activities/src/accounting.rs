//! Accounting rules: the one table that decides which postings a business event produces. No
//! posting is written anywhere else. Each rule returns the accounts it touches together with
//! its entry (or hold), and `Store::book` / `Store::book_hold` open those accounts and post in
//! one transaction, so no caller opens accounts by hand.
//!
//! Chart of accounts (`{owner_kind}:{owner}:{purpose}`), one currency each:
//!
//! | account                  | kind      | flags                          | meaning                        |
//! |--------------------------|-----------|--------------------------------|--------------------------------|
//! | `channel:{ch}:clearing`  | asset     | -                              | the channel holds money for us |
//! | `merchant:{m}:payable`   | liability | debits_must_not_exceed_credits | what we owe the merchant       |
//! | `platform:fees`          | revenue   | -                              | our fees                       |
//! | `platform:late_payments` | liability | -                              | late payments owed to payers   |
//! | `wallet:{owner}`         | liability | debits_must_not_exceed_credits | customer / merchant wallets    |
//!
//! Rules (Dr = debit, Cr = credit; ids are derived from the event, so booking twice is once):
//!
//! | event                      | id                           | kind                  | postings                                           |
//! |----------------------------|------------------------------|-----------------------|----------------------------------------------------|
//! | payment succeeded          | `pay:{order}:succeeded`      | `payment_succeeded`   | Dr clearing amount; Cr payable amount-fee; Cr fees |
//! | late payment received      | `pay:{order}:late`           | `late_payment`        | Dr clearing; Cr platform:late_payments             |
//! | refund (hold)              | `refund:{refund}`            | `refund`              | Dr merchant payable; Cr clearing                   |
//! | refund returns our fee     | `refund:{refund}:fee`        | `refund_fee_return`   | Dr platform:fees; Cr clearing                      |
//! | late-payment refund (hold) | `refund:{refund}`            | `late_payment_refund` | Dr platform:late_payments; Cr clearing             |
//! | transfer (hold)            | `transfer:{transfer}`        | `transfer`            | Dr wallet:from; Cr wallet:to                       |
//! | payout (hold)              | `payout:{payout}`            | `payout`              | Dr merchant payable; Cr clearing                   |
//! | recharge succeeded         | `recharge:{order}:succeeded` | `recharge`            | Dr clearing; Cr wallet:owner                       |
//! | recharge refund (hold)     | `refund:{refund}`            | `recharge_refund`     | Dr wallet:owner; Cr clearing                       |
//!
//! A hold posts as the entry `{hold id}:post` with the hold's kind and order.

use payflow_client::{Currency, Money};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::store::accounts::{Account, AccountFlags, AccountKind};
use crate::store::holds::Hold;
use crate::store::ledger::{JournalEntry, Posting};

/// An entry with the accounts it posts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Booking {
    pub accounts: Vec<Account>,
    pub entry: JournalEntry,
}

/// A hold with the accounts it reserves on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldBooking {
    pub accounts: Vec<Account>,
    pub hold: Hold,
}

// ---------------------------------------------------------------------------------------------
// Chart of accounts
// ---------------------------------------------------------------------------------------------

pub fn channel_clearing(channel: &str) -> String {
    format!("channel:{channel}:clearing")
}

pub fn merchant_payable(merchant: &str) -> String {
    format!("merchant:{merchant}:payable")
}

pub const PLATFORM_FEES: &str = "platform:fees";
pub const PLATFORM_LATE_PAYMENTS: &str = "platform:late_payments";

pub fn wallet(owner: &str) -> String {
    format!("wallet:{owner}")
}

const NO_FLAGS: AccountFlags = AccountFlags {
    debits_must_not_exceed_credits: false,
    credits_must_not_exceed_debits: false,
};

/// Never debited below zero.
const NO_OVERDRAFT: AccountFlags = AccountFlags {
    debits_must_not_exceed_credits: true,
    credits_must_not_exceed_debits: false,
};

fn account(
    id: String,
    owner: String,
    kind: AccountKind,
    currency: Currency,
    flags: AccountFlags,
) -> Account {
    Account {
        id,
        owner,
        kind,
        currency,
        flags,
    }
}

pub fn channel_clearing_account(channel: &str, currency: Currency) -> Account {
    account(
        channel_clearing(channel),
        format!("channel:{channel}"),
        AccountKind::Asset,
        currency,
        NO_FLAGS,
    )
}

pub fn merchant_payable_account(merchant: &str, currency: Currency) -> Account {
    account(
        merchant_payable(merchant),
        format!("merchant:{merchant}"),
        AccountKind::Liability,
        currency,
        NO_OVERDRAFT,
    )
}

pub fn platform_fees_account(currency: Currency) -> Account {
    account(
        PLATFORM_FEES.into(),
        "platform".into(),
        AccountKind::Revenue,
        currency,
        NO_FLAGS,
    )
}

pub fn platform_late_payments_account(currency: Currency) -> Account {
    account(
        PLATFORM_LATE_PAYMENTS.into(),
        "platform".into(),
        AccountKind::Liability,
        currency,
        NO_FLAGS,
    )
}

pub fn wallet_account(owner: &str, currency: Currency) -> Account {
    account(
        wallet(owner),
        owner.to_string(),
        AccountKind::Liability,
        currency,
        NO_OVERDRAFT,
    )
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

fn entry(
    entry_id: String,
    kind: &str,
    order_id: Option<&str>,
    postings: Vec<Posting>,
) -> JournalEntry {
    JournalEntry {
        entry_id,
        kind: kind.to_string(),
        order_id: order_id.map(str::to_string),
        postings,
    }
}

fn hold(
    hold_id: String,
    kind: &str,
    order_id: Option<&str>,
    debit: &Account,
    credit: &Account,
    amount: Money,
) -> Hold {
    Hold {
        hold_id,
        kind: kind.to_string(),
        order_id: order_id.map(str::to_string),
        debit_account: debit.id.clone(),
        credit_account: credit.id.clone(),
        amount,
        expires_at_ms: None,
    }
}

/// The id of an order's payment entry.
pub fn payment_entry_id(order_id: &str) -> String {
    format!("pay:{order_id}:succeeded")
}

/// A customer paid `amount` for `order_id` through `channel`: the channel owes us the amount,
/// we owe the merchant the amount less our `fee` (`None`: no fee, no fee posting). A fee in
/// another currency or above the amount makes an entry that `Store::book` refuses.
pub fn payment_succeeded(
    order_id: &str,
    channel: &str,
    merchant: &str,
    amount: Money,
    fee: Option<Money>,
) -> Booking {
    let c = amount.currency();
    let fee_minor = fee.map_or(0, |f| f.minor_units());
    let mut accounts = vec![
        channel_clearing_account(channel, c),
        merchant_payable_account(merchant, c),
    ];
    let mut postings = vec![Posting::debit(channel_clearing(channel), amount)];
    // Built from minor units: amount - fee is zero when the fee takes everything (no posting)
    // and negative for a bad fee (refused by the balance check, never clamped).
    let payable = amount.minor_units() - fee_minor;
    if payable != 0 {
        postings.push(Posting {
            account_id: merchant_payable(merchant),
            currency: c,
            debit_minor: 0,
            credit_minor: payable,
        });
    }
    if let Some(fee) = fee {
        accounts.push(platform_fees_account(c));
        postings.push(Posting::credit(PLATFORM_FEES, fee));
    }
    Booking {
        accounts,
        entry: entry(
            payment_entry_id(order_id),
            "payment_succeeded",
            Some(order_id),
            postings,
        ),
    }
}

/// The channel collected money for an order we had already closed: it is owed back to the
/// payer, not to the merchant.
pub fn late_payment_received(order_id: &str, channel: &str, amount: Money) -> Booking {
    let c = amount.currency();
    Booking {
        accounts: vec![
            channel_clearing_account(channel, c),
            platform_late_payments_account(c),
        ],
        entry: entry(
            format!("pay:{order_id}:late"),
            "late_payment",
            Some(order_id),
            vec![
                Posting::debit(channel_clearing(channel), amount),
                Posting::credit(PLATFORM_LATE_PAYMENTS, amount),
            ],
        ),
    }
}

pub fn refund_hold_id(refund_id: &str) -> String {
    format!("refund:{refund_id}")
}

/// Try of a merchant refund: reserves the merchant's payable (it cannot go negative) against
/// the channel clearing the money back to the payer.
pub fn refund_hold(
    refund_id: &str,
    order_id: &str,
    channel: &str,
    merchant: &str,
    amount: Money,
) -> HoldBooking {
    let c = amount.currency();
    let (debit, credit) = (
        merchant_payable_account(merchant, c),
        channel_clearing_account(channel, c),
    );
    HoldBooking {
        hold: hold(
            refund_hold_id(refund_id),
            "refund",
            Some(order_id),
            &debit,
            &credit,
            amount,
        ),
        accounts: vec![debit, credit],
    }
}

/// A refund gives back our share `fee` of the payment's fee: the merchant's refund hold
/// covers the rest of the refunded amount, our fee revenue this part.
pub fn refund_fee_return(refund_id: &str, order_id: &str, channel: &str, fee: Money) -> Booking {
    let c = fee.currency();
    Booking {
        accounts: vec![
            platform_fees_account(c),
            channel_clearing_account(channel, c),
        ],
        entry: entry(
            format!("refund:{refund_id}:fee"),
            "refund_fee_return",
            Some(order_id),
            vec![
                Posting::debit(PLATFORM_FEES, fee),
                Posting::credit(channel_clearing(channel), fee),
            ],
        ),
    }
}

/// Try of a refund of a late (or exception) payment: paid back from what we hold for payers.
pub fn late_payment_refund_hold(
    refund_id: &str,
    order_id: &str,
    channel: &str,
    amount: Money,
) -> HoldBooking {
    let c = amount.currency();
    let (debit, credit) = (
        platform_late_payments_account(c),
        channel_clearing_account(channel, c),
    );
    HoldBooking {
        hold: hold(
            refund_hold_id(refund_id),
            "late_payment_refund",
            Some(order_id),
            &debit,
            &credit,
            amount,
        ),
        accounts: vec![debit, credit],
    }
}

/// Try of a refund of a recharge: the top-up leaves the owner's wallet (never below zero).
pub fn recharge_refund_hold(
    refund_id: &str,
    order_id: &str,
    channel: &str,
    owner: &str,
    amount: Money,
) -> HoldBooking {
    let c = amount.currency();
    let (debit, credit) = (
        wallet_account(owner, c),
        channel_clearing_account(channel, c),
    );
    HoldBooking {
        hold: hold(
            refund_hold_id(refund_id),
            "recharge_refund",
            Some(order_id),
            &debit,
            &credit,
            amount,
        ),
        accounts: vec![debit, credit],
    }
}

pub fn transfer_hold_id(transfer_id: &str) -> String {
    format!("transfer:{transfer_id}")
}

/// Try of an internal transfer between two wallets (the source cannot go negative).
pub fn transfer_hold(
    transfer_id: &str,
    from_owner: &str,
    to_owner: &str,
    amount: Money,
) -> HoldBooking {
    let c = amount.currency();
    let (debit, credit) = (wallet_account(from_owner, c), wallet_account(to_owner, c));
    HoldBooking {
        hold: hold(
            transfer_hold_id(transfer_id),
            "transfer",
            None,
            &debit,
            &credit,
            amount,
        ),
        accounts: vec![debit, credit],
    }
}

pub fn payout_hold_id(payout_id: &str) -> String {
    format!("payout:{payout_id}")
}

/// Try of a payout: the merchant's payable leaves through the channel.
pub fn payout_hold(payout_id: &str, merchant: &str, channel: &str, amount: Money) -> HoldBooking {
    let c = amount.currency();
    let (debit, credit) = (
        merchant_payable_account(merchant, c),
        channel_clearing_account(channel, c),
    );
    HoldBooking {
        hold: hold(
            payout_hold_id(payout_id),
            "payout",
            None,
            &debit,
            &credit,
            amount,
        ),
        accounts: vec![debit, credit],
    }
}

/// A recharge payment succeeded: the money is in the owner's wallet.
pub fn recharge_succeeded(order_id: &str, channel: &str, owner: &str, amount: Money) -> Booking {
    let c = amount.currency();
    Booking {
        accounts: vec![
            channel_clearing_account(channel, c),
            wallet_account(owner, c),
        ],
        entry: entry(
            format!("recharge:{order_id}:succeeded"),
            "recharge",
            Some(order_id),
            vec![
                Posting::debit(channel_clearing(channel), amount),
                Posting::credit(wallet(owner), amount),
            ],
        ),
    }
}

/// Our fee on `amount` at `rate` (0.006 = 0.6 %), rounded half-up to the currency's minor unit
/// and never more than the amount. `None` when it rounds to nothing (or the rate is not
/// positive): `Money` is always positive.
pub fn fee_for(amount: Money, rate: Decimal) -> Option<Money> {
    let fee = (amount.amount() * rate).round_dp_with_strategy(
        amount.currency().minor_units(),
        RoundingStrategy::MidpointAwayFromZero,
    );
    Money::new(fee.min(amount.amount()), amount.currency()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn cny(s: &str) -> Money {
        Money::parse(s, Currency::Cny).unwrap()
    }

    #[test]
    fn payment_succeeded_balances_with_and_without_fee() {
        let b = payment_succeeded("o1", "alipay", "m1", cny("9.99"), None);
        b.entry.check_balanced().unwrap();
        assert_eq!(b.entry.entry_id, "pay:o1:succeeded");
        assert_eq!(b.entry.postings.len(), 2);
        assert_eq!(b.entry.postings[0].debit_minor, 999);
        assert_eq!(b.entry.postings[1].credit_minor, 999);
        assert_eq!(
            b.accounts.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            ["channel:alipay:clearing", "merchant:m1:payable"]
        );

        let b = payment_succeeded("o1", "alipay", "m1", cny("100.00"), Some(cny("0.60")));
        b.entry.check_balanced().unwrap();
        let credits: Vec<(&str, i64)> = b
            .entry
            .postings
            .iter()
            .filter(|p| p.credit_minor > 0)
            .map(|p| (p.account_id.as_str(), p.credit_minor))
            .collect();
        assert_eq!(
            credits,
            [("merchant:m1:payable", 9940), ("platform:fees", 60)]
        );
        assert!(
            b.accounts
                .iter()
                .any(|a| a.id == PLATFORM_FEES && a.kind == AccountKind::Revenue)
        );

        // The fee takes everything: no zero posting to the merchant.
        let b = payment_succeeded("o1", "alipay", "m1", cny("0.01"), Some(cny("0.01")));
        b.entry.check_balanced().unwrap();
        assert_eq!(b.entry.postings.len(), 2);

        // A fee above the amount is refused, not clamped.
        let b = payment_succeeded("o1", "alipay", "m1", cny("1.00"), Some(cny("2.00")));
        assert!(b.entry.check_balanced().is_err());
    }

    #[test]
    fn every_rule_balances_and_names_its_accounts() {
        let amount = cny("5.00");
        let bookings = [
            payment_succeeded("o", "ch", "m", amount, Some(cny("0.05"))),
            late_payment_received("o", "ch", amount),
            recharge_succeeded("o", "ch", "alice", amount),
            refund_fee_return("r", "o", "ch", cny("0.05")),
        ];
        for b in &bookings {
            b.entry.check_balanced().unwrap();
            for p in &b.entry.postings {
                assert!(
                    b.accounts.iter().any(|a| a.id == p.account_id),
                    "{}",
                    p.account_id
                );
            }
        }
        let holds = [
            refund_hold("r", "o", "ch", "m", amount),
            late_payment_refund_hold("r", "o", "ch", amount),
            transfer_hold("t", "alice", "bob", amount),
            payout_hold("p", "m", "ch", amount),
        ];
        let expected = [
            (
                "refund:r",
                "refund",
                "merchant:m:payable",
                "channel:ch:clearing",
            ),
            (
                "refund:r",
                "late_payment_refund",
                "platform:late_payments",
                "channel:ch:clearing",
            ),
            ("transfer:t", "transfer", "wallet:alice", "wallet:bob"),
            (
                "payout:p",
                "payout",
                "merchant:m:payable",
                "channel:ch:clearing",
            ),
        ];
        for (b, (id, kind, debit, credit)) in holds.iter().zip(expected) {
            assert_eq!(
                (
                    b.hold.hold_id.as_str(),
                    b.hold.kind.as_str(),
                    b.hold.debit_account.as_str(),
                    b.hold.credit_account.as_str()
                ),
                (id, kind, debit, credit)
            );
            for acc in [debit, credit] {
                assert!(b.accounts.iter().any(|a| a.id == acc));
            }
        }
        let w = wallet_account("alice", Currency::Cny);
        assert!(w.flags.debits_must_not_exceed_credits);
        assert_eq!(w.kind, AccountKind::Liability);
    }

    #[test]
    fn fee_rounds_half_up_and_never_exceeds_the_amount() {
        let rate = Decimal::from_str("0.006").unwrap();
        assert_eq!(fee_for(cny("100.00"), rate), Some(cny("0.60")));
        // 0.75 * 0.006 = 0.0045 -> 0.00: nothing.
        assert_eq!(fee_for(cny("0.75"), rate), None);
        // 2.50 * 0.006 = 0.015 -> 0.02 (half up).
        assert_eq!(fee_for(cny("2.50"), rate), Some(cny("0.02")));
        assert_eq!(
            fee_for(cny("3.00"), Decimal::from_str("1.5").unwrap()),
            Some(cny("3.00"))
        );
        assert_eq!(
            fee_for(cny("3.00"), Decimal::from_str("-0.1").unwrap()),
            None
        );
        let jpy = Money::parse("150", Currency::Jpy).unwrap();
        // 150 * 0.01 = 1.5 -> 2 yen.
        assert_eq!(
            fee_for(jpy, Decimal::from_str("0.01").unwrap()),
            Some(Money::parse("2", Currency::Jpy).unwrap())
        );
    }
}
