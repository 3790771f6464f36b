//! Accounting rules: the one place that decides which postings a business event produces.
//!
//! Accounts are named `{owner_kind}:{owner}:{purpose}`:
//! - `channel:{channel}:clearing` (asset): money the channel collected for us and owes us;
//! - `merchant:{merchant}:payable` (liability): what we owe the merchant.

use payflow_client::Money;

use crate::store::ledger::{JournalEntry, Posting};

pub fn channel_clearing(channel: &str) -> String {
    format!("channel:{channel}:clearing")
}

pub fn merchant_payable(merchant: &str) -> String {
    format!("merchant:{merchant}:payable")
}

/// A customer paid `amount` for `order_id` through `channel`: the channel owes us, we owe the
/// merchant.
pub fn payment_succeeded(
    order_id: &str,
    channel: &str,
    merchant: &str,
    amount: Money,
) -> JournalEntry {
    JournalEntry {
        entry_id: format!("pay:{order_id}:succeeded"),
        kind: "payment_succeeded".into(),
        order_id: Some(order_id.to_string()),
        postings: vec![
            Posting::debit(channel_clearing(channel), amount),
            Posting::credit(merchant_payable(merchant), amount),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payflow_client::Currency;

    #[test]
    fn payment_succeeded_balances() {
        let e = payment_succeeded(
            "o1",
            "alipay",
            "m1",
            Money::parse("9.99", Currency::Cny).unwrap(),
        );
        e.check_balanced().unwrap();
        assert_eq!(e.entry_id, "pay:o1:succeeded");
        assert_eq!(e.postings[0].debit_minor, 999);
        assert_eq!(e.postings[1].credit_minor, 999);
    }
}
