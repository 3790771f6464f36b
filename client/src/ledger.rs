//! Ledger reads as services see them: an account's balance, an order's entries, the trial
//! balance. Amounts are exact decimals in the account's currency.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::Currency;

/// What to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerRequest {
    Balance { account_id: String },
    OrderEntries { order_id: String },
    TrialBalance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountBalanceView {
    pub account_id: String,
    /// `asset`, `liability`, `revenue` or `expense`.
    pub kind: String,
    pub currency: Currency,
    pub posted_debits: Decimal,
    pub posted_credits: Decimal,
    pub pending_debits: Decimal,
    pub pending_credits: Decimal,
    /// Posted balance on the account's normal side (credits - debits for liabilities).
    pub balance: Decimal,
    /// The balance less pending amounts that would reduce it.
    pub available: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostingView {
    pub account_id: String,
    pub currency: Currency,
    pub debit: Decimal,
    pub credit: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryView {
    pub entry_id: String,
    pub kind: String,
    pub postings: Vec<PostingView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LedgerAnswer {
    /// `None`: no such account.
    Balance(Option<AccountBalanceView>),
    Entries(Vec<EntryView>),
    /// Debits minus credits per currency over all accounts: all zero in a sound ledger.
    TrialBalance(BTreeMap<Currency, Decimal>),
}
