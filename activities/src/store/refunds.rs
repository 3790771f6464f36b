//! Refunds: the over-refund guard and the refund's own states.
//!
//! `reserve_refund` checks and reserves in one transaction with the order row locked, so
//! concurrent refunds of one order cannot together exceed what was paid. `complete_refund` and
//! `fail_refund` end a refund together with its ledger hold (posted or voided) and the order's
//! refund state, also in one transaction: nothing is ever half-applied.

use payflow_client::{ChannelFailure, Currency, Money, PayState, RefundKind, RefundState};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::orders::{Order, OrderPatch};
use super::{Store, StoreError, now_ms};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRefund {
    pub refund_id: String,
    pub merchant_id: String,
    pub merchant_order_no: String,
    pub merchant_refund_no: String,
    pub kind: RefundKind,
    pub amount: Money,
    pub reason: String,
    /// What the channel collected for the order, as confirmed by a channel query; the limit
    /// for late-payment and exception refunds (the order's own paid amount is the limit for
    /// merchant refunds).
    pub collected: Option<Money>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub order_id: String,
    pub merchant_id: String,
    pub merchant_refund_no: String,
    pub kind: RefundKind,
    pub amount: Money,
    /// The part of our fee this refund returns, in minor units: the merchant's balance gives
    /// back `amount - fee_minor`, our fee revenue the rest.
    pub fee_minor: i64,
    pub reason: String,
    pub state: RefundState,
    pub failure: Option<ChannelFailure>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// The guard's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reservation {
    /// The refund row exists (now, or from an earlier identical request) with its order.
    Reserved { refund: Refund, order: Box<Order> },
    /// Refused; nothing was written.
    Refused { code: String, message: String },
}

const COLUMNS: &str = "refund_id, order_id, merchant_id, merchant_refund_no, kind, amount_minor, \
    fee_minor, currency, reason, state, failure_code, failure_message, created_at_ms, updated_at_ms";

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn kind_from(s: &str) -> Result<RefundKind, StoreError> {
    [
        RefundKind::Merchant,
        RefundKind::LatePayment,
        RefundKind::Exception,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
    .ok_or_else(|| corrupt(format!("refund kind {s}")))
}

fn state_from(s: &str) -> Result<RefundState, StoreError> {
    [
        RefundState::Requested,
        RefundState::Processing,
        RefundState::Succeeded,
        RefundState::Failed,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
    .ok_or_else(|| corrupt(format!("refund state {s}")))
}

fn refund_from_row(row: &AnyRow) -> Result<Refund, StoreError> {
    let currency: String = row.try_get("currency")?;
    let currency: Currency = currency.parse().map_err(corrupt)?;
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    let code: Option<String> = row.try_get("failure_code")?;
    let message: Option<String> = row.try_get("failure_message")?;
    Ok(Refund {
        refund_id: row.try_get("refund_id")?,
        order_id: row.try_get("order_id")?,
        merchant_id: row.try_get("merchant_id")?,
        merchant_refund_no: row.try_get("merchant_refund_no")?,
        kind: kind_from(&kind)?,
        amount: Money::from_minor(row.try_get("amount_minor")?, currency).map_err(corrupt)?,
        fee_minor: row.try_get("fee_minor")?,
        reason: row.try_get("reason")?,
        state: state_from(&state)?,
        failure: code.map(|code| ChannelFailure {
            code,
            message: message.unwrap_or_default(),
        }),
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

fn refused(code: &str, message: String) -> Reservation {
    Reservation::Refused {
        code: code.to_string(),
        message,
    }
}

/// The part of the order's `fee` a refund of `amount` returns: proportional, rounded half-up,
/// and the last refund (the one that takes what is left) returns exactly what is left of the
/// fee, so a full refund in any number of parts returns the whole fee and rounding never drifts.
fn fee_share(fee: i64, fee_returned: i64, amount: i64, available: i64, paid: i64) -> i64 {
    if fee == 0 || paid == 0 {
        return 0;
    }
    if amount == available {
        return (fee - fee_returned).max(0);
    }
    let share =
        (i128::from(fee) * i128::from(amount) * 2 + i128::from(paid)) / (2 * i128::from(paid));
    (share as i64).min(fee - fee_returned).max(0)
}

/// The merchant's part of a refund must stay positive (a hold is never empty); only a fee rate
/// near 100 % on a one-unit refund could hit this cap.
fn capped_fee_share(share: i64, amount: i64) -> i64 {
    share.min(amount - 1).max(0)
}

impl Store {
    /// The over-refund guard: with the order locked, checks the order's state and that
    /// refunds in flight or done plus this one stay within what was paid, then records the
    /// refund as `Processing`. Idempotent by `(merchant, merchant_refund_no)`: the same request
    /// again returns the existing refund; the same refund no with other terms is refused.
    pub async fn reserve_refund(&self, r: &NewRefund) -> Result<Reservation, StoreError> {
        let mut tx = self.pool().begin().await?;
        let q = self.sql(&format!(
            "SELECT {} FROM payment_orders WHERE merchant_id = ? AND merchant_order_no = ?{}",
            super::orders::COLUMNS,
            self.for_update()
        ));
        let Some(row) = sqlx::query(&q)
            .bind(&r.merchant_id)
            .bind(&r.merchant_order_no)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(refused(
                "payflow.ORDER_NOT_FOUND",
                format!(
                    "no order {} for merchant {}",
                    r.merchant_order_no, r.merchant_id
                ),
            ));
        };
        let order = super::orders::order_from_row(&row)?;

        if let Some(existing) = self
            .refund_by_merchant_no(&mut tx, &r.merchant_id, &r.merchant_refund_no)
            .await?
        {
            if existing.order_id != order.order_id
                || existing.amount != r.amount
                || existing.kind != r.kind
            {
                return Ok(refused(
                    "payflow.REFUND_CONFLICT",
                    format!(
                        "refund {} exists for order {} with amount {}",
                        r.merchant_refund_no, existing.order_id, existing.amount
                    ),
                ));
            }
            return Ok(Reservation::Reserved {
                refund: existing,
                order: Box::new(order),
            });
        }

        let expected: &[PayState] = match r.kind {
            RefundKind::Merchant => &[PayState::Succeeded, PayState::PartiallyRefunded],
            RefundKind::LatePayment => &[PayState::Closed],
            RefundKind::Exception => &[PayState::Exception],
        };
        if !expected.contains(&order.state) {
            return Ok(refused(
                "payflow.ORDER_NOT_REFUNDABLE",
                format!(
                    "order {} is {}; a {} refund needs {}",
                    r.merchant_order_no,
                    order.state,
                    r.kind.as_str(),
                    expected
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ));
        }
        let limit = match r.kind {
            RefundKind::Merchant => order.paid_amount.unwrap_or(order.amount),
            RefundKind::LatePayment | RefundKind::Exception => match r.collected {
                Some(c) => c,
                None => {
                    return Err(StoreError::Invalid(
                        "a late-payment or exception refund needs the collected amount".into(),
                    ));
                }
            },
        };
        if r.amount.currency() != limit.currency() {
            return Ok(refused(
                "payflow.CURRENCY_MISMATCH",
                format!("order is in {}", limit.currency()),
            ));
        }
        let q = self.sql(
            "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS reserved, \
             CAST(COALESCE(SUM(fee_minor), 0) AS BIGINT) AS fee_returned FROM refunds \
             WHERE order_id = ? AND state <> ?",
        );
        let row = sqlx::query(&q)
            .bind(&order.order_id)
            .bind(RefundState::Failed.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let reserved: i64 = row.try_get("reserved")?;
        let fee_returned: i64 = row.try_get("fee_returned")?;
        let available = limit.minor_units() - reserved;
        if r.amount.minor_units() > available {
            let available = Money::from_minor(available, limit.currency())
                .map(|m| m.to_string())
                .unwrap_or_else(|_| format!("0 {}", limit.currency()));
            return Ok(refused(
                "payflow.REFUND_EXCEEDS_PAID",
                format!(
                    "refund {} exceeds what is left to refund on order {}: {available}",
                    r.amount, r.merchant_order_no
                ),
            ));
        }
        let fee_minor = match r.kind {
            RefundKind::Merchant => {
                let fee = self.order_fee_minor(&mut tx, &order.order_id).await?;
                let amount = r.amount.minor_units();
                let share = fee_share(fee, fee_returned, amount, available, limit.minor_units());
                capped_fee_share(share, amount)
            }
            // payflow's own refunds return money no fee was charged on.
            RefundKind::LatePayment | RefundKind::Exception => 0,
        };
        let now = now_ms();
        let insert = self.sql(
            "INSERT INTO refunds (refund_id, order_id, merchant_id, merchant_refund_no, kind, \
             amount_minor, fee_minor, currency, reason, state, created_at_ms, updated_at_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        sqlx::query(&insert)
            .bind(&r.refund_id)
            .bind(&order.order_id)
            .bind(&r.merchant_id)
            .bind(&r.merchant_refund_no)
            .bind(r.kind.as_str())
            .bind(r.amount.minor_units())
            .bind(fee_minor)
            .bind(r.amount.currency().code())
            .bind(&r.reason)
            .bind(RefundState::Processing.as_str())
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let refund = self
            .refund(&r.refund_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(r.refund_id.clone()))?;
        Ok(Reservation::Reserved {
            refund,
            order: Box::new(order),
        })
    }

    /// The fee we charged on the order's payment (its `platform:fees` credit), in minor units.
    async fn order_fee_minor(
        &self,
        tx: &mut Transaction<'static, Any>,
        order_id: &str,
    ) -> Result<i64, StoreError> {
        let q = self.sql(
            "SELECT CAST(COALESCE(SUM(credit_minor), 0) AS BIGINT) AS fee FROM postings \
             WHERE entry_id = ? AND account_id = ?",
        );
        Ok(sqlx::query(&q)
            .bind(crate::accounting::payment_entry_id(order_id))
            .bind(crate::accounting::PLATFORM_FEES)
            .fetch_one(&mut **tx)
            .await?
            .try_get("fee")?)
    }

    pub async fn refund(&self, refund_id: &str) -> Result<Option<Refund>, StoreError> {
        let q = self.sql(&format!(
            "SELECT {COLUMNS} FROM refunds WHERE refund_id = ?"
        ));
        let row = sqlx::query(&q)
            .bind(refund_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(refund_from_row).transpose()
    }

    /// The refunds of an order, oldest first.
    pub async fn refunds_for_order(&self, order_id: &str) -> Result<Vec<Refund>, StoreError> {
        let q = self.sql(&format!(
            "SELECT {COLUMNS} FROM refunds WHERE order_id = ? ORDER BY created_at_ms, refund_id"
        ));
        let rows = sqlx::query(&q)
            .bind(order_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(refund_from_row).collect()
    }

    async fn refund_by_merchant_no(
        &self,
        tx: &mut Transaction<'static, Any>,
        merchant_id: &str,
        merchant_refund_no: &str,
    ) -> Result<Option<Refund>, StoreError> {
        let q = self.sql(&format!(
            "SELECT {COLUMNS} FROM refunds WHERE merchant_id = ? AND merchant_refund_no = ?"
        ));
        let row = sqlx::query(&q)
            .bind(merchant_id)
            .bind(merchant_refund_no)
            .fetch_optional(&mut **tx)
            .await?;
        row.as_ref().map(refund_from_row).transpose()
    }

    /// The channel refunded: posts the refund's hold, marks the refund `Succeeded` and moves
    /// a merchant-refunded order to `PartiallyRefunded` / `Refunded` (an exception order to
    /// `Refunded`; a late payment's order stays `Closed`), in one transaction. Idempotent.
    pub async fn complete_refund(&self, refund_id: &str) -> Result<Refund, StoreError> {
        let mut tx = self.pool().begin().await?;
        let refund = self.lock_refund(&mut tx, refund_id).await?;
        match refund.state {
            RefundState::Succeeded => return Ok(refund),
            RefundState::Failed => {
                return Err(StoreError::Conflict(format!(
                    "refund {refund_id} already failed"
                )));
            }
            RefundState::Requested | RefundState::Processing => {}
        }
        // The order first (the order every writer of an order takes its locks in), then the
        // hold's accounts.
        let q = self.sql(&format!(
            "SELECT {} FROM payment_orders WHERE order_id = ?{}",
            super::orders::COLUMNS,
            self.for_update()
        ));
        let row = sqlx::query(&q)
            .bind(&refund.order_id)
            .fetch_one(&mut *tx)
            .await?;
        let order = super::orders::order_from_row(&row)?;
        let (_, posted) = self
            .post_hold_tx(&mut tx, &crate::accounting::refund_hold_id(refund_id), None)
            .await?;
        let mut fee_posted = None;
        if let Some(fee) = Money::from_minor(refund.fee_minor, refund.amount.currency())
            .ok()
            .filter(|_| refund.fee_minor > 0)
        {
            let booking = crate::accounting::refund_fee_return(
                refund_id,
                &refund.order_id,
                &order.channel,
                fee,
            );
            if self.book_tx(&mut tx, &booking).await? {
                fee_posted = Some(booking.entry);
            }
        }
        self.set_refund_state(&mut tx, refund_id, RefundState::Succeeded, None)
            .await?;
        let to = match refund.kind {
            RefundKind::LatePayment => None,
            RefundKind::Exception => Some(PayState::Refunded),
            RefundKind::Merchant => {
                let q = self.sql(
                    "SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) AS done FROM refunds \
                     WHERE order_id = ? AND state = ?",
                );
                let done: i64 = sqlx::query(&q)
                    .bind(&order.order_id)
                    .bind(RefundState::Succeeded.as_str())
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get("done")?;
                let paid = order.paid_amount.unwrap_or(order.amount).minor_units();
                Some(if done >= paid {
                    PayState::Refunded
                } else {
                    PayState::PartiallyRefunded
                })
            }
        };
        let mut moved = None;
        if let Some(to) = to
            && to != order.state
        {
            // The order is locked: losing the compare-and-set here would be a bug.
            if !self
                .move_tx(&mut tx, &order, to, &OrderPatch::default())
                .await?
            {
                return Err(StoreError::Conflict(format!(
                    "order {} moved while it was locked",
                    order.order_id
                )));
            }
            moved = Some(to);
        }
        tx.commit().await?;
        for entry in posted.iter().chain(fee_posted.iter()) {
            self.metrics().entry_posted(entry);
        }
        if let Some(to) = moved {
            self.metrics()
                .payment_moved(&order.channel, Some(order.state), to);
        }
        self.refund(refund_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(refund_id.to_string()))
    }

    /// The refund is definitely not happening: voids its hold (an empty rollback when the hold
    /// was never made) and marks it `Failed`, which releases its reservation. Idempotent.
    pub async fn fail_refund(
        &self,
        refund_id: &str,
        failure: &ChannelFailure,
    ) -> Result<Refund, StoreError> {
        let mut tx = self.pool().begin().await?;
        let refund = self.lock_refund(&mut tx, refund_id).await?;
        match refund.state {
            RefundState::Failed => return Ok(refund),
            RefundState::Succeeded => {
                return Err(StoreError::Conflict(format!(
                    "refund {refund_id} already succeeded"
                )));
            }
            RefundState::Requested | RefundState::Processing => {}
        }
        self.void_hold_tx(&mut tx, &crate::accounting::refund_hold_id(refund_id))
            .await?;
        self.set_refund_state(&mut tx, refund_id, RefundState::Failed, Some(failure))
            .await?;
        tx.commit().await?;
        self.refund(refund_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(refund_id.to_string()))
    }

    async fn lock_refund(
        &self,
        tx: &mut Transaction<'static, Any>,
        refund_id: &str,
    ) -> Result<Refund, StoreError> {
        let q = self.sql(&format!(
            "SELECT {COLUMNS} FROM refunds WHERE refund_id = ?{}",
            self.for_update()
        ));
        let row = sqlx::query(&q)
            .bind(refund_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("refund {refund_id}")))?;
        refund_from_row(&row)
    }

    async fn set_refund_state(
        &self,
        tx: &mut Transaction<'static, Any>,
        refund_id: &str,
        state: RefundState,
        failure: Option<&ChannelFailure>,
    ) -> Result<(), StoreError> {
        let q = self.sql(
            "UPDATE refunds SET state = ?, failure_code = ?, failure_message = ?, \
             updated_at_ms = ? WHERE refund_id = ?",
        );
        sqlx::query(&q)
            .bind(state.as_str())
            .bind(failure.map(|f| f.code.clone()))
            .bind(failure.map(|f| f.message.clone()))
            .bind(now_ms())
            .bind(refund_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{capped_fee_share, fee_share};

    #[test]
    fn fee_shares_are_proportional_and_a_full_refund_returns_the_whole_fee() {
        // 10.00 paid, 0.06 fee.
        assert_eq!(fee_share(6, 0, 1000, 1000, 1000), 6);
        assert_eq!(fee_share(6, 0, 300, 1000, 1000), 2, "1.8 rounds to 2");
        assert_eq!(
            fee_share(6, 2, 700, 700, 1000),
            4,
            "the last part takes the rest"
        );
        // Three thirds of 0.10 on 1.00: 3 + 3 + rest 4.
        assert_eq!(fee_share(10, 0, 33, 100, 100), 3);
        assert_eq!(fee_share(10, 3, 33, 67, 100), 3);
        assert_eq!(fee_share(10, 6, 34, 34, 100), 4);
        assert_eq!(
            fee_share(0, 0, 500, 1000, 1000),
            0,
            "no fee, nothing to return"
        );
        assert_eq!(
            capped_fee_share(1, 1),
            0,
            "a one-fen refund keeps a positive merchant part"
        );
    }
}
