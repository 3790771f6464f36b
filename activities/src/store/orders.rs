//! Payment orders. Every state change is a compare-and-set on `(state, version)`: zero rows
//! updated means someone else moved the order, and the caller re-reads instead of overwriting.

use payflow_client::{ChannelFailure, Currency, Money, PayState};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Store, StoreError, now_ms};
use crate::accounting::Booking;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewOrder {
    pub order_id: String,
    pub merchant_id: String,
    pub merchant_order_no: String,
    pub amount: Money,
    pub product_id: String,
    pub channel: String,
    pub subject: String,
    pub expires_at_ms: i64,
    /// A recharge: success credits `wallet:{owner}` instead of the merchant.
    #[serde(default)]
    pub recharge_wallet: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub merchant_id: String,
    pub merchant_order_no: String,
    pub amount: Money,
    pub product_id: String,
    pub channel: String,
    pub subject: String,
    pub state: PayState,
    pub version: i64,
    pub channel_trade_no: Option<String>,
    pub paid_amount: Option<Money>,
    pub failure: Option<ChannelFailure>,
    pub expires_at_ms: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(default)]
    pub recharge_wallet: Option<String>,
}

/// Fields set together with a state change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrderPatch {
    pub channel_trade_no: Option<String>,
    pub paid_amount: Option<Money>,
    pub failure: Option<ChannelFailure>,
}

pub(super) const COLUMNS: &str = "order_id, merchant_id, merchant_order_no, amount_minor, currency, \
    product_id, channel, subject, state, version, channel_trade_no, paid_amount_minor, \
    failure_code, failure_message, expires_at_ms, created_at_ms, updated_at_ms, recharge_wallet";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

pub(super) fn order_from_row(row: &AnyRow) -> Result<Order, StoreError> {
    let currency: String = row.try_get("currency")?;
    let currency: Currency = currency.parse().map_err(corrupt)?;
    let state: String = row.try_get("state")?;
    let state = PayState::parse(&state).ok_or_else(|| corrupt(format!("state {state}")))?;
    let paid: Option<i64> = row.try_get("paid_amount_minor")?;
    let code: Option<String> = row.try_get("failure_code")?;
    let message: Option<String> = row.try_get("failure_message")?;
    Ok(Order {
        order_id: row.try_get("order_id")?,
        merchant_id: row.try_get("merchant_id")?,
        merchant_order_no: row.try_get("merchant_order_no")?,
        amount: Money::from_minor(row.try_get("amount_minor")?, currency).map_err(corrupt)?,
        product_id: row.try_get("product_id")?,
        channel: row.try_get("channel")?,
        subject: row.try_get("subject")?,
        state,
        version: row.try_get("version")?,
        channel_trade_no: row.try_get("channel_trade_no")?,
        paid_amount: paid
            .map(|m| Money::from_minor(m, currency))
            .transpose()
            .map_err(corrupt)?,
        failure: code.map(|code| ChannelFailure {
            code,
            message: message.unwrap_or_default(),
        }),
        expires_at_ms: row.try_get("expires_at_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        recharge_wallet: row.try_get("recharge_wallet")?,
    })
}

impl Store {
    /// Creates the order in state `Created`, or returns the existing one with the same
    /// `order_id` (a retried activity). The same merchant order no under another order id is
    /// a [`StoreError::Conflict`].
    pub async fn create_order(&self, o: &NewOrder) -> Result<Order, StoreError> {
        let now = now_ms();
        let insert = self.sql(
            "INSERT INTO payment_orders (order_id, merchant_id, merchant_order_no, amount_minor, \
             currency, product_id, channel, subject, state, version, expires_at_ms, \
             created_at_ms, updated_at_ms, recharge_wallet) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)",
        );
        let result = sqlx::query(&insert)
            .bind(&o.order_id)
            .bind(&o.merchant_id)
            .bind(&o.merchant_order_no)
            .bind(o.amount.minor_units())
            .bind(o.amount.currency().code())
            .bind(&o.product_id)
            .bind(&o.channel)
            .bind(&o.subject)
            .bind(PayState::Created.as_str())
            .bind(o.expires_at_ms)
            .bind(now)
            .bind(now)
            .bind(o.recharge_wallet.clone())
            .execute(self.pool())
            .await;
        match result {
            Ok(_) => self
                .metrics()
                .payment_moved(&o.channel, None, PayState::Created),
            Err(e) if super::is_unique_violation(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let existing = self
            .order_by_merchant_no(&o.merchant_id, &o.merchant_order_no)
            .await?
            .ok_or_else(|| StoreError::NotFound(o.order_id.clone()))?;
        if existing.order_id != o.order_id || existing.amount != o.amount {
            return Err(StoreError::Conflict(format!(
                "merchant order {} already exists as order {}",
                o.merchant_order_no, existing.order_id
            )));
        }
        Ok(existing)
    }

    pub async fn order(&self, order_id: &str) -> Result<Option<Order>, StoreError> {
        self.find_order("order_id = ?", &[order_id]).await
    }

    pub async fn order_by_merchant_no(
        &self,
        merchant_id: &str,
        merchant_order_no: &str,
    ) -> Result<Option<Order>, StoreError> {
        self.find_order(
            "merchant_id = ? AND merchant_order_no = ?",
            &[merchant_id, merchant_order_no],
        )
        .await
    }

    async fn find_order(&self, filter: &str, args: &[&str]) -> Result<Option<Order>, StoreError> {
        let q = self.sql(&format!(
            "SELECT {COLUMNS} FROM payment_orders WHERE {filter}"
        ));
        let mut query = sqlx::query(&q);
        for a in args {
            query = query.bind(a.to_string());
        }
        let row = query.fetch_optional(self.pool()).await?;
        row.as_ref().map(order_from_row).transpose()
    }

    /// Moves the order `from -> to` by compare-and-set. Idempotent: if the order is already in
    /// `to`, returns it unchanged (a retried activity). Any other state is a conflict.
    pub async fn transition(
        &self,
        order_id: &str,
        from: PayState,
        to: PayState,
        patch: &OrderPatch,
    ) -> Result<Order, StoreError> {
        self.transition_with_entry(order_id, from, to, patch, None)
            .await
    }

    /// Like [`Store::transition`], and books `entry` (opens its accounts, posts its journal
    /// entry) in the same database transaction, so the state change and its money movement
    /// are applied together or not at all.
    pub async fn transition_with_entry(
        &self,
        order_id: &str,
        from: PayState,
        to: PayState,
        patch: &OrderPatch,
        entry: Option<&Booking>,
    ) -> Result<Order, StoreError> {
        if let Some(b) = entry {
            b.entry.check_balanced()?;
        }
        // A lost CAS re-reads; the loop ends because every retry either wins, sees `to`, or
        // sees a state it must not overwrite.
        loop {
            let mut tx = self.pool().begin().await?;
            let q = self.sql(&format!(
                "SELECT {COLUMNS} FROM payment_orders WHERE order_id = ?"
            ));
            let row = sqlx::query(&q)
                .bind(order_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::NotFound(order_id.to_string()))?;
            let current = order_from_row(&row)?;
            if current.state == to {
                return Ok(current);
            }
            if current.state != from {
                return Err(StoreError::Conflict(format!(
                    "order {order_id} is {}, expected {from}",
                    current.state
                )));
            }
            if !self.move_tx(&mut tx, &current, to, patch).await? {
                tx.rollback().await?;
                continue;
            }
            let mut posted = None;
            if let Some(booking) = entry
                && self.book_tx(&mut tx, booking).await?
            {
                posted = Some(&booking.entry);
            }
            tx.commit().await?;
            self.metrics()
                .payment_moved(&current.channel, Some(current.state), to);
            if let Some(e) = posted {
                self.metrics().entry_posted(e);
            }
            return self
                .order(order_id)
                .await?
                .ok_or_else(|| StoreError::NotFound(order_id.to_string()));
        }
    }

    /// The compare-and-set itself, inside `tx`: moves `current` (as read) to `to` with `patch`
    /// and appends the audit row. `false` when someone else moved the order since it was read.
    pub(crate) async fn move_tx(
        &self,
        tx: &mut Transaction<'static, Any>,
        current: &Order,
        to: PayState,
        patch: &OrderPatch,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let update = self.sql(
            "UPDATE payment_orders SET state = ?, version = version + 1, updated_at_ms = ?, \
             channel_trade_no = COALESCE(?, channel_trade_no), \
             paid_amount_minor = COALESCE(?, paid_amount_minor), \
             failure_code = COALESCE(?, failure_code), \
             failure_message = COALESCE(?, failure_message) \
             WHERE order_id = ? AND state = ? AND version = ?",
        );
        let done = sqlx::query(&update)
            .bind(to.as_str())
            .bind(now)
            .bind(patch.channel_trade_no.clone())
            .bind(patch.paid_amount.map(|m| m.minor_units()))
            .bind(patch.failure.as_ref().map(|f| f.code.clone()))
            .bind(patch.failure.as_ref().map(|f| f.message.clone()))
            .bind(&current.order_id)
            .bind(current.state.as_str())
            .bind(current.version)
            .execute(&mut **tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let audit = self.sql(
            "INSERT INTO order_transitions (order_id, from_state, to_state, version, at_ms) \
             VALUES (?, ?, ?, ?, ?)",
        );
        sqlx::query(&audit)
            .bind(&current.order_id)
            .bind(current.state.as_str())
            .bind(to.as_str())
            .bind(current.version + 1)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(true)
    }

    /// A merchant's recent live orders in one currency (risk pre-check): the 24-hour amount
    /// total and the count over the last minute. Failed and closed orders do not count.
    pub async fn recent_activity(
        &self,
        merchant_id: &str,
        currency: Currency,
        now_ms: i64,
    ) -> Result<crate::risk::Recent, StoreError> {
        // CAST: PostgreSQL's SUM over BIGINT is NUMERIC, which sqlx::Any cannot decode.
        let q = self.sql(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS total, \
             CAST(COALESCE(SUM(CASE WHEN created_at_ms >= ? THEN 1 ELSE 0 END), 0) AS BIGINT) AS last_minute \
             FROM payment_orders WHERE merchant_id = ? AND currency = ? AND created_at_ms >= ? \
             AND state NOT IN ('Failed', 'Closed')",
        );
        let row = sqlx::query(&q)
            .bind(now_ms - 60_000)
            .bind(merchant_id)
            .bind(currency.code())
            .bind(now_ms - 24 * 3600 * 1000)
            .fetch_one(self.pool())
            .await?;
        let total: i64 = row.try_get("total")?;
        let last_minute: i64 = row.try_get("last_minute")?;
        Ok(crate::risk::Recent {
            last_day_total: rust_decimal::Decimal::new(total, currency.minor_units()),
            last_minute_count: last_minute.clamp(0, u32::MAX as i64) as u32,
        })
    }

    /// The states an order went through, oldest first.
    pub async fn order_history(
        &self,
        order_id: &str,
    ) -> Result<Vec<(PayState, PayState)>, StoreError> {
        let q = self.sql(
            "SELECT from_state, to_state FROM order_transitions WHERE order_id = ? ORDER BY id",
        );
        let rows = sqlx::query(&q)
            .bind(order_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let f: String = r.try_get("from_state")?;
                let t: String = r.try_get("to_state")?;
                Ok((
                    PayState::parse(&f).ok_or_else(|| corrupt(&f))?,
                    PayState::parse(&t).ok_or_else(|| corrupt(&t))?,
                ))
            })
            .collect()
    }
}
