//! Double-entry journal: entries with a unique id, each with postings that balance per
//! currency, to open accounts in their currency, within the accounts' balance flags. Posting
//! the same entry id twice is one entry. Which postings a business event produces is decided
//! in `crate::accounting`, nowhere else; postings are append-only.

use std::collections::{BTreeMap, BTreeSet};

use payflow_client::{Currency, Money};
use serde::{Deserialize, Serialize};
use sqlx::{Any, Row, Transaction};

use super::accounts::{needs_lock, per_account};
use super::{Store, StoreError, now_ms};
use crate::accounting::Booking;

/// One side of an entry: a debit or a credit to an account, in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub account_id: String,
    pub currency: Currency,
    pub debit_minor: i64,
    pub credit_minor: i64,
}

impl Posting {
    pub fn debit(account_id: impl Into<String>, amount: Money) -> Posting {
        Posting {
            account_id: account_id.into(),
            currency: amount.currency(),
            debit_minor: amount.minor_units(),
            credit_minor: 0,
        }
    }

    pub fn credit(account_id: impl Into<String>, amount: Money) -> Posting {
        Posting {
            account_id: account_id.into(),
            currency: amount.currency(),
            debit_minor: 0,
            credit_minor: amount.minor_units(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Unique and deterministic for the business event (idempotency key).
    pub entry_id: String,
    /// The business event, e.g. `payment_succeeded`.
    pub kind: String,
    pub order_id: Option<String>,
    pub postings: Vec<Posting>,
}

impl JournalEntry {
    /// Refuses an entry whose debits and credits differ in any currency.
    pub fn check_balanced(&self) -> Result<(), StoreError> {
        if self.postings.len() < 2 {
            return Err(StoreError::Invalid(format!(
                "entry {} needs at least two postings",
                self.entry_id
            )));
        }
        let mut sums: BTreeMap<Currency, i128> = BTreeMap::new();
        for p in &self.postings {
            if p.debit_minor < 0
                || p.credit_minor < 0
                || (p.debit_minor == 0) == (p.credit_minor == 0)
            {
                return Err(StoreError::Invalid(format!(
                    "entry {}: each posting is one positive debit or credit",
                    self.entry_id
                )));
            }
            *sums.entry(p.currency).or_default() += p.debit_minor as i128 - p.credit_minor as i128;
        }
        if let Some((c, diff)) = sums.iter().find(|(_, d)| **d != 0) {
            return Err(StoreError::Invalid(format!(
                "entry {} does not balance in {c}: debits - credits = {diff}",
                self.entry_id
            )));
        }
        Ok(())
    }
}

impl Store {
    /// Inserts an entry inside `tx`. Every account must be open and in the posting's
    /// currency, and no account's balance flag may break; otherwise the whole entry is
    /// refused. An entry id already present is left as it is and `Ok(false)` returned, before
    /// any check, so a retry gets the first answer even when balances moved since.
    pub(crate) async fn insert_entry(
        &self,
        tx: &mut Transaction<'static, Any>,
        entry: &JournalEntry,
    ) -> Result<bool, StoreError> {
        entry.check_balanced()?;
        let per = per_account(entry.postings.iter().map(|p| {
            (
                p.account_id.as_str(),
                p.currency,
                p.debit_minor,
                p.credit_minor,
            )
        }))?;
        let q = self.sql(
            "INSERT INTO journal_entries (entry_id, kind, order_id, created_at_ms) \
             VALUES (?, ?, ?, ?) ON CONFLICT (entry_id) DO NOTHING",
        );
        let inserted = sqlx::query(&q)
            .bind(&entry.entry_id)
            .bind(&entry.kind)
            .bind(entry.order_id.clone())
            .bind(now_ms())
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }

        let accounts = self.load_accounts(tx, per.keys().copied()).await?;
        let mut to_lock = BTreeSet::new();
        for (id, (currency, d, c)) in &per {
            let account = accounts.get(*id).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "entry {}: account {id} is not open",
                    entry.entry_id
                ))
            })?;
            if account.currency != *currency {
                return Err(StoreError::Invalid(format!(
                    "entry {}: account {id} is in {}, the posting in {currency}",
                    entry.entry_id, account.currency
                )));
            }
            if needs_lock(account, *d, *c, true) {
                to_lock.insert(id.to_string());
            }
        }
        self.lock_accounts(tx, &to_lock).await?;
        // Read the clock after the lock: holds that expired while we waited no longer count.
        let now = now_ms();
        for id in &to_lock {
            let (_, d, c) = per[id.as_str()];
            self.check_flags(tx, &accounts[id], d, c, true, now).await?;
        }

        let q = self.sql(
            "INSERT INTO postings (entry_id, seq, account_id, currency, debit_minor, credit_minor) \
             VALUES (?, ?, ?, ?, ?, ?)",
        );
        for (seq, p) in entry.postings.iter().enumerate() {
            sqlx::query(&q)
                .bind(&entry.entry_id)
                .bind(seq as i64)
                .bind(&p.account_id)
                .bind(p.currency.code())
                .bind(p.debit_minor)
                .bind(p.credit_minor)
                .execute(&mut **tx)
                .await?;
        }
        for (id, (_, d, c)) in &per {
            self.add_posted(tx, id, *d, *c).await?;
        }
        Ok(true)
    }

    /// Opens the booking's accounts and posts its entry, in one transaction. Returns false when
    /// the entry id was already posted (nothing written).
    pub async fn book(&self, b: &Booking) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let inserted = self.book_tx(&mut tx, b).await?;
        tx.commit().await?;
        if inserted {
            self.metrics().entry_posted(&b.entry);
        }
        Ok(inserted)
    }

    /// [`Store::book`] inside `tx`.
    pub(crate) async fn book_tx(
        &self,
        tx: &mut Transaction<'static, Any>,
        b: &Booking,
    ) -> Result<bool, StoreError> {
        b.entry.check_balanced()?;
        self.open_accounts_tx(tx, &b.accounts).await?;
        self.insert_entry(tx, &b.entry).await
    }

    /// Posts an entry whose accounts are open. Returns false when the entry id was already
    /// posted.
    pub async fn post_entry(&self, entry: &JournalEntry) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        let inserted = self.insert_entry(&mut tx, entry).await?;
        tx.commit().await?;
        if inserted {
            self.metrics().entry_posted(entry);
        }
        Ok(inserted)
    }

    /// The entries recorded for an order, with their postings.
    pub async fn entries_for_order(&self, order_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let q = self.sql(
            "SELECT e.entry_id, e.kind, p.account_id, p.currency, p.debit_minor, p.credit_minor \
             FROM journal_entries e JOIN postings p ON p.entry_id = e.entry_id \
             WHERE e.order_id = ? ORDER BY e.created_at_ms, e.entry_id, p.seq",
        );
        let rows = sqlx::query(&q)
            .bind(order_id)
            .fetch_all(self.pool())
            .await?;
        let mut out: Vec<JournalEntry> = Vec::new();
        for r in rows {
            let entry_id: String = r.try_get("entry_id")?;
            let currency: String = r.try_get("currency")?;
            let posting = Posting {
                account_id: r.try_get("account_id")?,
                currency: currency
                    .parse()
                    .map_err(|e: payflow_client::MoneyError| StoreError::Corrupt(e.to_string()))?,
                debit_minor: r.try_get("debit_minor")?,
                credit_minor: r.try_get("credit_minor")?,
            };
            match out.last_mut() {
                Some(last) if last.entry_id == entry_id => last.postings.push(posting),
                _ => out.push(JournalEntry {
                    entry_id,
                    kind: r.try_get("kind")?,
                    order_id: Some(order_id.to_string()),
                    postings: vec![posting],
                }),
            }
        }
        Ok(out)
    }

    /// Debits minus credits per currency over every account: zero in a sound ledger.
    pub async fn trial_balance(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        // SUM(BIGINT) is NUMERIC in PostgreSQL, which `sqlx::Any` cannot decode: cast back.
        let q = "SELECT currency, CAST(SUM(debit_minor) AS BIGINT) AS d, \
                 CAST(SUM(credit_minor) AS BIGINT) AS c FROM postings GROUP BY currency";
        let rows = sqlx::query(q).fetch_all(self.pool()).await?;
        let mut out = BTreeMap::new();
        for r in rows {
            let currency: String = r.try_get("currency")?;
            let d: i64 = r.try_get("d")?;
            let c: i64 = r.try_get("c")?;
            out.insert(currency, d - c);
        }
        Ok(out)
    }

    /// Posted (debit, credit) totals of one account in minor units, recomputed from its
    /// postings (an audit of the maintained balance; (0, 0) for an unknown account).
    pub async fn account_totals(&self, account_id: &str) -> Result<(i64, i64), StoreError> {
        let q = self.sql(
            "SELECT CAST(COALESCE(SUM(debit_minor), 0) AS BIGINT) AS d, \
             CAST(COALESCE(SUM(credit_minor), 0) AS BIGINT) AS c \
             FROM postings WHERE account_id = ?",
        );
        let r = sqlx::query(&q)
            .bind(account_id)
            .fetch_one(self.pool())
            .await?;
        Ok((r.try_get("d")?, r.try_get("c")?))
    }
}
