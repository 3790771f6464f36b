//! Payment activities: validate and create the order, call the channel (prepay, query, close),
//! and move the order with compare-and-set, posting the ledger in the same transaction.
//!
//! Business outcomes (declined, not paid yet) are return values; only transient trouble is
//! an activity failure, which Temporal retries.

use std::sync::Arc;

use payflow_client::{ChannelFailure, Money, PayState, PaymentRequest, Prepay};
use serde::{Deserialize, Serialize};
use temporalio_common::error::ApplicationFailure;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::accounting;
use crate::channels::{Channel, ChannelError, CloseOutcome, PrecreateRequest, TradeQuery};
use crate::services::{PaymentTiming, Services, SharedServices};
use crate::store::StoreError;
use crate::store::orders::{NewOrder, Order, OrderPatch};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenPayment {
    /// payflow's order id (deterministic, drawn by the workflow).
    pub order_id: String,
    pub request: PaymentRequest,
    /// Workflow time of the request (unix ms); expiry counts from here.
    pub requested_at_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Opened {
    /// The order exists in state `Created` (or later, when retried).
    Order {
        order: Box<Order>,
        timing: PaymentTiming,
    },
    /// Invalid request: nothing was created.
    Rejected { reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum PrepayOutcome {
    Ready(Prepay),
    Declined(ChannelFailure),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettlePaid {
    pub order_id: String,
    pub channel_trade_no: Option<String>,
    pub paid_amount: Money,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MoveOrder {
    pub order_id: String,
    pub from: PayState,
    pub to: PayState,
    pub failure: Option<ChannelFailure>,
    /// What the channel collected (kept on an order in `Exception` for the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_amount: Option<Money>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_trade_no: Option<String>,
}

pub struct PaymentActivities {
    services: SharedServices,
}

impl PaymentActivities {
    pub fn new(services: SharedServices) -> Self {
        PaymentActivities { services }
    }
}

pub(crate) fn transient(e: impl std::fmt::Display) -> ActivityError {
    ActivityError::application(ApplicationFailure::new(e.to_string()))
}

pub(crate) fn fatal(e: impl std::fmt::Display) -> ActivityError {
    ActivityError::application(ApplicationFailure::non_retryable(e.to_string()))
}

pub(crate) fn store_err(e: StoreError) -> ActivityError {
    match e {
        StoreError::Db(_) | StoreError::Migrate(_) => transient(e),
        other => fatal(other),
    }
}

/// The configured channel by name, its calls measured (`Services::metrics`); an unknown one
/// is a configuration error, not worth retrying.
pub(crate) fn channel(services: &Services, name: &str) -> Result<Arc<dyn Channel>, ActivityError> {
    services
        .channels
        .get(name)
        .cloned()
        .map(|c| services.metrics.measure_channel(c))
        .ok_or_else(|| fatal(format!("channel {name} not configured")))
}

pub(crate) fn channel_err(e: ChannelError) -> ActivityError {
    // Untrusted answers are retried too: a forged or garbled response must not end a payment.
    transient(e)
}

impl PaymentActivities {
    async fn order(&self, order_id: &str) -> Result<Order, ActivityError> {
        self.services
            .store
            .order(order_id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| fatal(format!("order {order_id} not found")))
    }

    /// The order and the channel it was routed to.
    async fn order_and_channel(
        &self,
        order_id: &str,
    ) -> Result<(Order, Arc<dyn Channel>), ActivityError> {
        let order = self.order(order_id).await?;
        let channel = channel(&self.services, &order.channel)?;
        Ok((order, channel))
    }
}

impl PaymentActivities {
    /// `from -> Succeeded` with the payment's ledger entry (amount, less the product's fee) in
    /// one transaction. The fee rate is the product's as configured at settlement.
    async fn settle(
        &self,
        order: &Order,
        from: PayState,
        paid: Money,
        patch: OrderPatch,
    ) -> Result<Order, ActivityError> {
        let s = &self.services;
        let fee = s
            .routing
            .product(&order.product_id)
            .and_then(|p| accounting::fee_for(paid, p.fee_rate));
        let booking = match &order.recharge_wallet {
            // A top-up: the payer's wallet is credited, the merchant is not, no fee.
            Some(owner) => {
                accounting::recharge_succeeded(&order.order_id, &order.channel, owner, paid)
            }
            None => accounting::payment_succeeded(
                &order.order_id,
                &order.channel,
                &order.merchant_id,
                paid,
                fee,
            ),
        };
        s.store
            .transition_with_entry(
                &order.order_id,
                from,
                PayState::Succeeded,
                &patch,
                Some(&booking),
            )
            .await
            .map_err(store_err)
    }
}

#[activities]
impl PaymentActivities {
    /// Validates the request against merchants and routing, then creates the order.
    #[activity]
    pub async fn open_payment(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OpenPayment,
    ) -> Result<Opened, ActivityError> {
        let s = &self.services;
        let req = &input.request;
        let rejected = |reason: String| Ok(Opened::Rejected { reason });
        if let Err(e) = req.validate() {
            return rejected(e.to_string());
        }
        let merchant = match s.merchants.enabled(&req.merchant_id) {
            Ok(m) => m,
            Err(e) => return rejected(e.to_string()),
        };
        if let Err(e) = merchant.notify_url(req.notify_url.as_deref()) {
            return rejected(e.to_string());
        }
        let product = match s.routing.route(&req.product_id, &req.amount) {
            Ok(p) => p,
            Err(e) => return rejected(e.to_string()),
        };
        if s.channels.get(&product.channel).is_none() {
            return rejected(format!("channel {} is not configured", product.channel));
        }
        // A retried activity whose order exists is past routing: health no longer matters.
        if !s.health.is_up(&product.channel)
            && s.store
                .order(&input.order_id)
                .await
                .map_err(store_err)?
                .is_none()
        {
            return rejected(format!(
                "channel {} is temporarily unavailable, try another payment method",
                product.channel
            ));
        }
        let recent = s
            .store
            .recent_activity(
                req.merchant_id.as_str(),
                req.amount.currency(),
                crate::store::now_ms(),
            )
            .await
            .map_err(store_err)?;
        if let Err(decline) = crate::risk::check(&merchant.risk, &req.amount, recent) {
            // A retried activity whose order already exists must not be refused by its own
            // order counting against the limits.
            let existing = s.store.order(&input.order_id).await.map_err(store_err)?;
            if existing.is_none() {
                return rejected(decline.to_string());
            }
        }
        let order = s
            .store
            .create_order(&NewOrder {
                order_id: input.order_id.clone(),
                merchant_id: req.merchant_id.to_string(),
                merchant_order_no: req.merchant_order_no.to_string(),
                amount: req.amount,
                product_id: req.product_id.to_string(),
                channel: product.channel.clone(),
                subject: req.subject.clone(),
                expires_at_ms: input.requested_at_ms
                    + s.payment_timing.scaled_expiry_ms(req.expires_in_secs()),
                recharge_wallet: req.recharge_wallet.as_ref().map(|w| w.to_string()),
            })
            .await;
        match order {
            Ok(order) => Ok(Opened::Order {
                order: Box::new(order),
                timing: s.payment_timing.clone(),
            }),
            Err(StoreError::Conflict(msg)) => rejected(format!("conflict: {msg}")),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Asks the channel for the prepay credential; the order goes `Created -> Pending`, or
    /// `Created -> Failed` on the channel's definite refusal.
    #[activity]
    pub async fn prepay(
        self: Arc<Self>,
        _ctx: ActivityContext,
        order_id: String,
    ) -> Result<PrepayOutcome, ActivityError> {
        let s = &self.services;
        let (order, channel) = self.order_and_channel(&order_id).await?;
        let result = channel
            .precreate(&PrecreateRequest {
                out_trade_no: order.order_id.clone(),
                amount: order.amount,
                subject: order.subject.clone(),
                notify_url: s.notify_url_for(&order.channel),
                expires_at_ms: order.expires_at_ms,
            })
            .await;
        match &result {
            Ok(_) | Err(ChannelError::Declined { .. }) => s.health.record_success(&order.channel),
            Err(_) => s.health.record_failure(&order.channel),
        }
        match result {
            Ok(resp) => {
                s.store
                    .transition(
                        &order_id,
                        PayState::Created,
                        PayState::Pending,
                        &OrderPatch::default(),
                    )
                    .await
                    .map_err(store_err)?;
                Ok(PrepayOutcome::Ready(Prepay {
                    order_id: order.order_id,
                    channel: order.channel,
                    qr_code: resp.qr_code,
                    expires_at_ms: order.expires_at_ms,
                }))
            }
            Err(ChannelError::Declined { code, message }) => {
                let failure = ChannelFailure { code, message };
                s.store
                    .transition(
                        &order_id,
                        PayState::Created,
                        PayState::Failed,
                        &OrderPatch {
                            failure: Some(failure.clone()),
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(store_err)?;
                Ok(PrepayOutcome::Declined(failure))
            }
            Err(e) => Err(channel_err(e)),
        }
    }

    /// Asks the channel what it knows about the trade.
    #[activity]
    pub async fn query_trade(
        self: Arc<Self>,
        _ctx: ActivityContext,
        order_id: String,
    ) -> Result<TradeQuery, ActivityError> {
        let (order, channel) = self.order_and_channel(&order_id).await?;
        channel.query(&order.order_id).await.map_err(channel_err)
    }

    /// Closes the trade at the channel (expiry or merchant close).
    #[activity]
    pub async fn close_trade(
        self: Arc<Self>,
        _ctx: ActivityContext,
        order_id: String,
    ) -> Result<CloseOutcome, ActivityError> {
        let (order, channel) = self.order_and_channel(&order_id).await?;
        channel.close(&order.order_id).await.map_err(channel_err)
    }

    /// The channel confirmed payment: `Pending -> Succeeded` and the ledger entry, in one
    /// database transaction.
    #[activity]
    pub async fn settle_paid(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: SettlePaid,
    ) -> Result<Order, ActivityError> {
        let order = self.order(&input.order_id).await?;
        self.settle(
            &order,
            PayState::Pending,
            input.paid_amount,
            OrderPatch {
                channel_trade_no: input.channel_trade_no,
                paid_amount: Some(input.paid_amount),
                failure: None,
            },
        )
        .await
    }

    /// A plain compare-and-set state change with no money movement (close, fail).
    #[activity]
    pub async fn move_order(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: MoveOrder,
    ) -> Result<Order, ActivityError> {
        self.services
            .store
            .transition(
                &input.order_id,
                input.from,
                input.to,
                &OrderPatch {
                    failure: input.failure,
                    paid_amount: input.paid_amount,
                    channel_trade_no: input.channel_trade_no,
                },
            )
            .await
            .map_err(store_err)
    }

    /// An operator accepted an exception payment: `Exception -> Succeeded` with the amount
    /// actually collected posted to the ledger, in one transaction.
    #[activity]
    pub async fn accept_exception(
        self: Arc<Self>,
        _ctx: ActivityContext,
        order_id: String,
    ) -> Result<Order, ActivityError> {
        let order = self.order(&order_id).await?;
        let paid = order
            .paid_amount
            .ok_or_else(|| fatal(format!("order {order_id} has no collected amount")))?;
        self.settle(&order, PayState::Exception, paid, OrderPatch::default())
            .await
    }
}
