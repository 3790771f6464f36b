//! Refund activities: the guard, the hold (TCC try), the channel refund and its query, and the
//! confirm/cancel that end a refund together with its hold and its order.
//!
//! Business outcomes (refused, insufficient balance, the channel's definite answer) are return
//! values; only transient trouble fails an activity, which Temporal retries.

use std::sync::Arc;

use payflow_client::{ChannelFailure, Money, RefundKind, RefundRequest};
use serde::{Deserialize, Serialize};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::accounting;
use crate::channels::{self, RefundResult, TradeState};
use crate::payment::{channel, channel_err, fatal, store_err};
use crate::services::{PaymentTiming, SharedServices};
use crate::store::StoreError;
use crate::store::orders::Order;
use crate::store::refunds::{NewRefund, Refund, Reservation};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReserveRefund {
    /// payflow's refund id (deterministic, drawn by the workflow); the channel's refund
    /// request no.
    pub refund_id: String,
    pub request: RefundRequest,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Reserved {
    /// The refund is recorded and its amount reserved against the order.
    Refund {
        refund: Box<Refund>,
        order: Box<Order>,
        timing: PaymentTiming,
    },
    /// Refused before anything moved.
    Refused(ChannelFailure),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum HoldResult {
    Held,
    /// The account the refund draws on cannot cover it (e.g. the merchant was settled out).
    InsufficientFunds,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailRefund {
    pub refund_id: String,
    pub failure: ChannelFailure,
}

pub struct RefundActivities {
    services: SharedServices,
}

impl RefundActivities {
    pub fn new(services: SharedServices) -> Self {
        RefundActivities { services }
    }

    async fn refund_and_order(&self, refund_id: &str) -> Result<(Refund, Order), ActivityError> {
        let store = &self.services.store;
        let refund = store
            .refund(refund_id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| fatal(format!("refund {refund_id} not found")))?;
        let order = store
            .order(&refund.order_id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| fatal(format!("order {} not found", refund.order_id)))?;
        Ok((refund, order))
    }
}

fn refused(code: &str, message: impl Into<String>) -> Result<Reserved, ActivityError> {
    Ok(Reserved::Refused(ChannelFailure {
        code: code.to_string(),
        message: message.into(),
    }))
}

#[activities]
impl RefundActivities {
    /// The over-refund guard. For payflow's own refunds (late or exception payments) the
    /// channel is asked first what it collected: a notification alone never moves money.
    #[activity]
    pub async fn reserve_refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ReserveRefund,
    ) -> Result<Reserved, ActivityError> {
        let s = &self.services;
        let req = &input.request;
        if let Err(e) = req.validate() {
            return refused("payflow.INVALID_REFUND", e.to_string());
        }
        let mut collected = None;
        let mut amount = req.amount;
        if req.kind != RefundKind::Merchant {
            let Some(order) = s
                .store
                .order_by_merchant_no(req.merchant_id.as_str(), req.merchant_order_no.as_str())
                .await
                .map_err(store_err)?
            else {
                return refused("payflow.ORDER_NOT_FOUND", "no such order");
            };
            let q = channel(&self.services, &order.channel)?
                .query(&order.order_id)
                .await
                .map_err(channel_err)?;
            let paid = match (q.state, q.paid_amount) {
                (TradeState::Paid, Some(paid)) => paid,
                (state, _) => {
                    return refused(
                        "payflow.NOT_PAID",
                        format!("the channel reports the trade as {state:?}"),
                    );
                }
            };
            // Money we must return (late, or of a wrong amount) is owed to the payer, not the
            // merchant: it is booked as such before it goes back.
            s.store
                .book(&accounting::late_payment_received(
                    &order.order_id,
                    &order.channel,
                    paid,
                ))
                .await
                .map_err(store_err)?;
            // payflow's own refunds return exactly what was collected.
            collected = Some(paid);
            amount = paid;
        }
        let reservation = s
            .store
            .reserve_refund(&NewRefund {
                refund_id: input.refund_id.clone(),
                merchant_id: req.merchant_id.to_string(),
                merchant_order_no: req.merchant_order_no.to_string(),
                merchant_refund_no: req.merchant_refund_no.to_string(),
                kind: req.kind,
                amount,
                reason: req.reason.clone(),
                collected,
            })
            .await
            .map_err(store_err)?;
        match reservation {
            Reservation::Reserved { refund, order } => Ok(Reserved::Refund {
                refund: Box::new(refund),
                order,
                timing: s.payment_timing.clone(),
            }),
            Reservation::Refused { code, message } => refused(&code, message),
        }
    }

    /// TCC try: reserves the refund's money in the ledger.
    #[activity]
    pub async fn hold_refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        refund_id: String,
    ) -> Result<HoldResult, ActivityError> {
        let (refund, order) = self.refund_and_order(&refund_id).await?;
        let booking = match refund.kind {
            RefundKind::Merchant => {
                // The merchant gives back the refund less its share of our fee, which our fee
                // revenue returns when the refund completes.
                let merchant_part = Money::from_minor(
                    refund.amount.minor_units() - refund.fee_minor,
                    refund.amount.currency(),
                )
                .map_err(fatal)?;
                match &order.recharge_wallet {
                    // Refunding a top-up takes it back from the wallet (never below zero).
                    Some(owner) => accounting::recharge_refund_hold(
                        &refund.refund_id,
                        &order.order_id,
                        &order.channel,
                        owner,
                        merchant_part,
                    ),
                    None => accounting::refund_hold(
                        &refund.refund_id,
                        &order.order_id,
                        &order.channel,
                        &order.merchant_id,
                        merchant_part,
                    ),
                }
            }
            RefundKind::LatePayment | RefundKind::Exception => {
                accounting::late_payment_refund_hold(
                    &refund.refund_id,
                    &order.order_id,
                    &order.channel,
                    refund.amount,
                )
            }
        };
        match self.services.store.book_hold(&booking).await {
            Ok(_) => Ok(HoldResult::Held),
            Err(StoreError::InsufficientFunds { .. }) => Ok(HoldResult::InsufficientFunds),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Asks the channel to refund. Idempotent at the channel: the refund id is its refund
    /// request no, so a retried submit never refunds twice.
    #[activity]
    pub async fn refund_at_channel(
        self: Arc<Self>,
        _ctx: ActivityContext,
        refund_id: String,
    ) -> Result<RefundResult, ActivityError> {
        let (refund, order) = self.refund_and_order(&refund_id).await?;
        channel(&self.services, &order.channel)?
            .refund(&channels::RefundRequest {
                out_trade_no: order.order_id.clone(),
                out_request_no: refund.refund_id.clone(),
                amount: refund.amount,
                reason: refund.reason.clone(),
            })
            .await
            .map_err(channel_err)
    }

    /// Asks the channel how the refund stands (channels do not always notify refunds).
    #[activity]
    pub async fn query_refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        refund_id: String,
    ) -> Result<RefundResult, ActivityError> {
        let (refund, order) = self.refund_and_order(&refund_id).await?;
        channel(&self.services, &order.channel)?
            .query_refund(&order.order_id, &refund.refund_id)
            .await
            .map_err(channel_err)
    }

    /// TCC confirm: posts the hold, refund `Succeeded`, order refund state, in one transaction.
    #[activity]
    pub async fn complete_refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        refund_id: String,
    ) -> Result<Refund, ActivityError> {
        self.services
            .store
            .complete_refund(&refund_id)
            .await
            .map_err(store_err)
    }

    /// TCC cancel: voids the hold (a recorded no-op if the try never ran) and fails the refund,
    /// releasing its reservation.
    #[activity]
    pub async fn fail_refund(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: FailRefund,
    ) -> Result<Refund, ActivityError> {
        self.services
            .store
            .fail_refund(&input.refund_id, &input.failure)
            .await
            .map_err(store_err)
    }
}
