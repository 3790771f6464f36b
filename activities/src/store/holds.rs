//! Two-phase transfers (TigerBeetle's pending transfers), the TCC primitive: `hold` (try)
//! reserves money as pending postings within the accounts' flags, `post_hold` (confirm) turns
//! all or part of it into a journal entry, `void_hold` (cancel) releases it.
//!
//! The three TCC faults are ruled out here, by the hold id:
//! - a cancel whose try never ran records a tombstone and answers `NothingToVoid`;
//! - confirm and cancel are idempotent and exclude each other;
//! - a try arriving after its cancel finds the tombstone (or the voided hold) and is refused,
//!   so no hold dangles.
//!
//! A hold past `expires_at_ms` is expired: it no longer counts as pending, cannot be posted, and
//! voiding it records the void.

use std::collections::BTreeSet;

use payflow_client::{Currency, Money};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::ledger::{JournalEntry, Posting};
use super::{Store, StoreError, now_ms};
use crate::accounting::HoldBooking;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Unique per business operation (`refund:{id}`, `transfer:{id}`, ...).
    pub hold_id: String,
    /// The business event; also the kind of the entry written when it is posted.
    pub kind: String,
    pub order_id: Option<String>,
    pub debit_account: String,
    pub credit_account: String,
    pub amount: Money,
    /// Unix ms after which the hold no longer reserves anything.
    pub expires_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldState {
    Pending,
    Posted,
    /// Voided, or cancelled before any hold was made (tombstone).
    Voided,
    /// Pending past its expiry and not voided yet.
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldOutcome {
    Held,
    /// The same hold (same fields) was already made.
    AlreadyHeld,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PostOutcome {
    Posted {
        entry_id: String,
        amount: Money,
    },
    /// Posted before; the first answer.
    AlreadyPosted {
        entry_id: String,
        amount: Money,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VoidOutcome {
    Voided,
    AlreadyVoided,
    /// No hold existed: an empty rollback, recorded so that the late try is refused.
    NothingToVoid,
}

const PENDING: &str = "pending";
const POSTED: &str = "posted";
const VOIDED: &str = "voided";
const TOMBSTONE: &str = "tombstone";

const HOLD_COLUMNS: &str = "hold_id, state, kind, order_id, debit_account, credit_account, \
    currency, amount_minor, expires_at_ms, posted_minor, entry_id";

/// A `holds` row: a tombstone has no hold.
struct HoldRow {
    state: String,
    hold: Option<Hold>,
    posted_minor: Option<i64>,
    entry_id: Option<String>,
}

impl HoldRow {
    fn expired(&self, now: i64) -> bool {
        self.state == PENDING
            && self
                .hold
                .as_ref()
                .and_then(|h| h.expires_at_ms)
                .is_some_and(|t| t <= now)
    }

    fn posted(&self) -> Result<PostOutcome, StoreError> {
        let hold = self
            .hold
            .as_ref()
            .ok_or_else(|| corrupt("posted tombstone"))?;
        let amount = Money::from_minor(
            self.posted_minor
                .ok_or_else(|| corrupt("posted hold without amount"))?,
            hold.amount.currency(),
        )
        .map_err(corrupt)?;
        Ok(PostOutcome::AlreadyPosted {
            entry_id: self
                .entry_id
                .clone()
                .ok_or_else(|| corrupt("posted hold without entry"))?,
            amount,
        })
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("hold: {what}"))
}

fn hold_from_row(r: &AnyRow) -> Result<HoldRow, StoreError> {
    let state: String = r.try_get("state")?;
    let hold = if state == TOMBSTONE {
        None
    } else {
        let currency: String = r.try_get("currency")?;
        let currency: Currency = currency.parse().map_err(corrupt)?;
        let kind: Option<String> = r.try_get("kind")?;
        let debit: Option<String> = r.try_get("debit_account")?;
        let credit: Option<String> = r.try_get("credit_account")?;
        let amount: Option<i64> = r.try_get("amount_minor")?;
        Some(Hold {
            hold_id: r.try_get("hold_id")?,
            kind: kind.ok_or_else(|| corrupt("no kind"))?,
            order_id: r.try_get("order_id")?,
            debit_account: debit.ok_or_else(|| corrupt("no debit account"))?,
            credit_account: credit.ok_or_else(|| corrupt("no credit account"))?,
            amount: Money::from_minor(amount.ok_or_else(|| corrupt("no amount"))?, currency)
                .map_err(corrupt)?,
            expires_at_ms: r.try_get("expires_at_ms")?,
        })
    };
    Ok(HoldRow {
        state,
        hold,
        posted_minor: r.try_get("posted_minor")?,
        entry_id: r.try_get("entry_id")?,
    })
}

/// What an existing row means for `hold(h)`.
fn judge_existing(row: &HoldRow, h: &Hold, now: i64) -> Result<HoldOutcome, StoreError> {
    let id = &h.hold_id;
    match row.state.as_str() {
        TOMBSTONE => Err(StoreError::Conflict(format!(
            "hold {id} was cancelled before it was made; refusing the late try"
        ))),
        VOIDED => Err(StoreError::Conflict(format!("hold {id} was voided"))),
        POSTED => Err(StoreError::Conflict(format!("hold {id} was posted"))),
        _ if row.expired(now) => Err(StoreError::Conflict(format!("hold {id} expired"))),
        _ if row.hold.as_ref() != Some(h) => Err(StoreError::Conflict(format!(
            "hold {id} exists with other terms"
        ))),
        _ => Ok(HoldOutcome::AlreadyHeld),
    }
}

impl Store {
    /// Try: reserves `h.amount` as a pending debit of `h.debit_account` and pending credit of
    /// `h.credit_account`. Both accounts must be open in the amount's currency. Idempotent by
    /// hold id. [`StoreError::InsufficientFunds`] when a flag would break;
    /// [`StoreError::Conflict`] when the id was voided, cancelled before (tombstone), posted,
    /// expired, or is held with other terms.
    pub async fn hold(&self, h: &Hold) -> Result<HoldOutcome, StoreError> {
        let mut tx = self.pool().begin().await?;
        let outcome = self.hold_tx(&mut tx, h).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Opens the booking's accounts and makes its hold, in one transaction.
    pub async fn book_hold(&self, b: &HoldBooking) -> Result<HoldOutcome, StoreError> {
        let mut tx = self.pool().begin().await?;
        let outcome = self.book_hold_tx(&mut tx, b).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// [`Store::book_hold`] inside `tx`.
    pub(crate) async fn book_hold_tx(
        &self,
        tx: &mut Transaction<'static, Any>,
        b: &HoldBooking,
    ) -> Result<HoldOutcome, StoreError> {
        self.open_accounts_tx(tx, &b.accounts).await?;
        self.hold_tx(tx, &b.hold).await
    }

    /// [`Store::hold`] inside `tx`.
    pub(crate) async fn hold_tx(
        &self,
        tx: &mut Transaction<'static, Any>,
        h: &Hold,
    ) -> Result<HoldOutcome, StoreError> {
        if h.hold_id.is_empty() {
            return Err(StoreError::Invalid("hold id is empty".into()));
        }
        if h.debit_account == h.credit_account {
            return Err(StoreError::Invalid(format!(
                "hold {}: debit and credit account are the same",
                h.hold_id
            )));
        }
        let accounts = self
            .load_accounts(tx, [h.debit_account.as_str(), h.credit_account.as_str()])
            .await?;
        let mut sides = Vec::with_capacity(2);
        for (id, debit, credit) in [
            (&h.debit_account, h.amount.minor_units(), 0),
            (&h.credit_account, 0, h.amount.minor_units()),
        ] {
            let account = accounts.get(id).ok_or_else(|| {
                StoreError::Invalid(format!("hold {}: account {id} is not open", h.hold_id))
            })?;
            if account.currency != h.amount.currency() {
                return Err(StoreError::Invalid(format!(
                    "hold {}: account {id} is in {}, the hold in {}",
                    h.hold_id,
                    account.currency,
                    h.amount.currency()
                )));
            }
            sides.push((account, debit, credit));
        }
        // Lock before reading the hold row, the order post_hold uses too.
        let to_lock: BTreeSet<String> = sides
            .iter()
            .filter(|(a, d, c)| super::accounts::needs_lock(a, *d, *c, false))
            .map(|(a, _, _)| a.id.clone())
            .collect();
        self.lock_accounts(tx, &to_lock).await?;
        let now = now_ms();

        if let Some(row) = self.hold_row(tx, &h.hold_id, false).await? {
            return judge_existing(&row, h, now);
        }
        if h.expires_at_ms.is_some_and(|t| t <= now) {
            return Err(StoreError::Invalid(format!(
                "hold {} expires in the past",
                h.hold_id
            )));
        }
        for (account, debit, credit) in &sides {
            self.check_flags(tx, account, *debit, *credit, false, now)
                .await?;
        }
        let q = self.sql(&format!(
            "INSERT INTO holds ({HOLD_COLUMNS}, created_at_ms, updated_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?) ON CONFLICT (hold_id) DO NOTHING"
        ));
        let inserted = sqlx::query(&q)
            .bind(&h.hold_id)
            .bind(PENDING)
            .bind(&h.kind)
            .bind(h.order_id.clone())
            .bind(&h.debit_account)
            .bind(&h.credit_account)
            .bind(h.amount.currency().code())
            .bind(h.amount.minor_units())
            .bind(h.expires_at_ms)
            .bind(now)
            .bind(now)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if inserted == 1 {
            return Ok(HoldOutcome::Held);
        }
        // A concurrent call with the same id won the insert (or cancelled it first).
        let row = self
            .hold_row(tx, &h.hold_id, false)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("hold {}", h.hold_id)))?;
        judge_existing(&row, h, now)
    }

    /// Confirm: posts `amount` of the hold (`None`: all of it, otherwise at most what is
    /// held; the rest is released) as the entry `{hold_id}:post`. Idempotent: a posted hold
    /// answers `AlreadyPosted` with what was posted. [`StoreError::Conflict`] when voided,
    /// cancelled or expired; [`StoreError::NotFound`] when never held.
    pub async fn post_hold(
        &self,
        hold_id: &str,
        amount: Option<Money>,
    ) -> Result<PostOutcome, StoreError> {
        let mut tx = self.pool().begin().await?;
        let (outcome, posted) = self.post_hold_tx(&mut tx, hold_id, amount).await?;
        tx.commit().await?;
        if let Some(entry) = &posted {
            self.metrics().entry_posted(entry);
        }
        Ok(outcome)
    }

    /// [`Store::post_hold`] inside `tx`, so a caller can post and move its own rows together.
    /// Also returns the entry this call posted (none when the hold was posted before).
    pub(crate) async fn post_hold_tx(
        &self,
        tx: &mut Transaction<'static, Any>,
        hold_id: &str,
        amount: Option<Money>,
    ) -> Result<(PostOutcome, Option<JournalEntry>), StoreError> {
        let not_found = || StoreError::NotFound(format!("hold {hold_id}"));
        let row = self
            .hold_row(tx, hold_id, false)
            .await?
            .ok_or_else(not_found)?;
        let Some(hold) = row.hold.clone() else {
            return Err(StoreError::Conflict(format!(
                "hold {hold_id} was cancelled before it was made"
            )));
        };
        // Lock the flagged accounts first (the order hold() takes): a concurrent debit must not
        // count this hold as expired while we post it.
        let accounts = self
            .load_accounts(
                tx,
                [hold.debit_account.as_str(), hold.credit_account.as_str()],
            )
            .await?;
        let to_lock: BTreeSet<String> = accounts
            .values()
            .filter(|a| {
                (a.id == hold.debit_account && a.flags.debits_must_not_exceed_credits)
                    || (a.id == hold.credit_account && a.flags.credits_must_not_exceed_debits)
            })
            .map(|a| a.id.clone())
            .collect();
        self.lock_accounts(tx, &to_lock).await?;
        let row = self
            .hold_row(tx, hold_id, true)
            .await?
            .ok_or_else(not_found)?;
        let now = now_ms();
        match row.state.as_str() {
            POSTED => return Ok((row.posted()?, None)),
            VOIDED => return Err(StoreError::Conflict(format!("hold {hold_id} was voided"))),
            TOMBSTONE => {
                return Err(StoreError::Conflict(format!(
                    "hold {hold_id} was cancelled before it was made"
                )));
            }
            _ if row.expired(now) => {
                return Err(StoreError::Conflict(format!("hold {hold_id} expired")));
            }
            _ => {}
        }
        let amount = amount.unwrap_or(hold.amount);
        if amount.currency() != hold.amount.currency() || amount.amount() > hold.amount.amount() {
            return Err(StoreError::Invalid(format!(
                "hold {hold_id}: cannot post {amount} of {}",
                hold.amount
            )));
        }
        let entry_id = format!("{hold_id}:post");
        let q = self.sql(
            "UPDATE holds SET state = ?, posted_minor = ?, entry_id = ?, updated_at_ms = ? \
             WHERE hold_id = ? AND state = ?",
        );
        let done = sqlx::query(&q)
            .bind(POSTED)
            .bind(amount.minor_units())
            .bind(&entry_id)
            .bind(now)
            .bind(hold_id)
            .bind(PENDING)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if done != 1 {
            return Err(StoreError::Conflict(format!(
                "hold {hold_id} moved while locked"
            )));
        }
        // The hold is no longer pending in this transaction, so the entry's flag check sees the
        // reservation released and the posting in its place.
        let entry = JournalEntry {
            entry_id: entry_id.clone(),
            kind: hold.kind.clone(),
            order_id: hold.order_id.clone(),
            postings: vec![
                Posting::debit(&hold.debit_account, amount),
                Posting::credit(&hold.credit_account, amount),
            ],
        };
        if !self.insert_entry(tx, &entry).await? {
            return Err(StoreError::Conflict(format!(
                "entry {entry_id} exists but hold {hold_id} was not posted"
            )));
        }
        Ok((PostOutcome::Posted { entry_id, amount }, Some(entry)))
    }

    /// Cancel: releases the hold. With no hold, records a tombstone (`NothingToVoid`) so that a
    /// try arriving later is refused. Idempotent; [`StoreError::Conflict`] when posted.
    pub async fn void_hold(&self, hold_id: &str) -> Result<VoidOutcome, StoreError> {
        let mut tx = self.pool().begin().await?;
        let outcome = self.void_hold_tx(&mut tx, hold_id).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// [`Store::void_hold`] inside `tx`.
    pub(crate) async fn void_hold_tx(
        &self,
        tx: &mut Transaction<'static, Any>,
        hold_id: &str,
    ) -> Result<VoidOutcome, StoreError> {
        if hold_id.is_empty() {
            return Err(StoreError::Invalid("hold id is empty".into()));
        }
        let now = now_ms();
        let row = match self.hold_row(tx, hold_id, true).await? {
            Some(row) => row,
            None => {
                let q = self.sql(
                    "INSERT INTO holds (hold_id, state, created_at_ms, updated_at_ms) \
                     VALUES (?, ?, ?, ?) ON CONFLICT (hold_id) DO NOTHING",
                );
                let inserted = sqlx::query(&q)
                    .bind(hold_id)
                    .bind(TOMBSTONE)
                    .bind(now)
                    .bind(now)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
                if inserted == 1 {
                    return Ok(VoidOutcome::NothingToVoid);
                }
                // The try committed meanwhile: void what it made.
                self.hold_row(tx, hold_id, true)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("hold {hold_id}")))?
            }
        };
        match row.state.as_str() {
            TOMBSTONE => Ok(VoidOutcome::NothingToVoid),
            VOIDED => Ok(VoidOutcome::AlreadyVoided),
            POSTED => Err(StoreError::Conflict(format!("hold {hold_id} was posted"))),
            _ => {
                let q = self.sql(
                    "UPDATE holds SET state = ?, updated_at_ms = ? WHERE hold_id = ? AND state = ?",
                );
                sqlx::query(&q)
                    .bind(VOIDED)
                    .bind(now)
                    .bind(hold_id)
                    .bind(PENDING)
                    .execute(&mut **tx)
                    .await?;
                Ok(VoidOutcome::Voided)
            }
        }
    }

    /// `None` when no hold and no cancel was ever recorded under this id.
    pub async fn hold_state(&self, hold_id: &str) -> Result<Option<HoldState>, StoreError> {
        let q = self.sql(&format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = ?"
        ));
        let Some(r) = sqlx::query(&q)
            .bind(hold_id)
            .fetch_optional(self.pool())
            .await?
        else {
            return Ok(None);
        };
        let row = hold_from_row(&r)?;
        Ok(Some(match row.state.as_str() {
            POSTED => HoldState::Posted,
            VOIDED | TOMBSTONE => HoldState::Voided,
            _ if row.expired(now_ms()) => HoldState::Expired,
            _ => HoldState::Pending,
        }))
    }

    async fn hold_row(
        &self,
        tx: &mut Transaction<'static, Any>,
        hold_id: &str,
        lock: bool,
    ) -> Result<Option<HoldRow>, StoreError> {
        let q = self.sql(&format!(
            "SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = ?{}",
            if lock { self.for_update() } else { "" }
        ));
        let row = sqlx::query(&q)
            .bind(hold_id)
            .fetch_optional(&mut **tx)
            .await?;
        row.as_ref().map(hold_from_row).transpose()
    }
}
