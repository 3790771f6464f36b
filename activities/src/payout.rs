//! Payout activities: hold the merchant's funds, submit once to the channel, query until the
//! outcome is definite, then post or void.
//!
//! "Never pay twice": the submit is one attempt only (its options forbid retries) and any
//! doubt about it (timeout, 5xx, a lost answer) comes back as [`Submitted::Unknown`]; the
//! workflow then queries by our payout id, which is also the channel's idempotency key, and
//! submits again only when the channel has no record of it.

use std::sync::Arc;

use payflow_client::{ChannelFailure, Money, PayoutRequest};
use serde::{Deserialize, Serialize};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::accounting;
use crate::channels::{self, ChannelError, PayoutState};
use crate::payment::{channel, channel_err, store_err};
use crate::services::{PayoutPolicy, SharedServices};
use crate::store::StoreError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldPayout {
    /// payflow's payout id (deterministic, drawn by the workflow): the channel's `out_biz_no`.
    pub payout_id: String,
    pub request: PayoutRequest,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PayoutHeld {
    Held {
        policy: PayoutPolicy,
    },
    /// Refused before anything was held (unknown merchant or channel, short of funds).
    Refused(ChannelFailure),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Submitted {
    /// The channel's own answer.
    Answered(PayoutState),
    /// We do not know whether the channel took it: query before anything else.
    Unknown(String),
}

pub struct PayoutActivities {
    services: SharedServices,
}

impl PayoutActivities {
    pub fn new(services: SharedServices) -> Self {
        PayoutActivities { services }
    }
}

fn refused(code: &str, message: impl Into<String>) -> Result<PayoutHeld, ActivityError> {
    Ok(PayoutHeld::Refused(ChannelFailure {
        code: code.into(),
        message: message.into(),
    }))
}

#[activities]
impl PayoutActivities {
    /// Try: reserves the payout on the merchant's balance.
    #[activity]
    pub async fn hold_payout(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: HoldPayout,
    ) -> Result<PayoutHeld, ActivityError> {
        let s = &self.services;
        let r = &input.request;
        if let Err(e) = s.merchants.enabled(&r.merchant_id) {
            return refused("payflow.MERCHANT_REFUSED", e.to_string());
        }
        if s.channels.get(&r.channel).is_none() {
            return refused(
                "payflow.UNKNOWN_CHANNEL",
                format!("channel {} is not configured", r.channel),
            );
        }
        let booking = accounting::payout_hold(
            &input.payout_id,
            r.merchant_id.as_str(),
            &r.channel,
            r.amount,
        );
        match s.store.book_hold(&booking).await {
            Ok(_) => Ok(PayoutHeld::Held {
                policy: s.payout_policy.clone(),
            }),
            Err(StoreError::InsufficientFunds { available, .. }) => refused(
                "payflow.INSUFFICIENT_BALANCE",
                format!("available balance {available}"),
            ),
            Err(e) => Err(store_err(e)),
        }
    }

    /// One submit to the channel. Run with no retries: doubt is an answer here.
    #[activity]
    pub async fn submit_payout(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: HoldPayout,
    ) -> Result<Submitted, ActivityError> {
        let r = &input.request;
        let result = channel(&self.services, &r.channel)?
            .payout(&channels::PayoutRequest {
                out_biz_no: input.payout_id.clone(),
                amount: r.amount,
                payee_account: r.payee_account.clone(),
                payee_name: r.payee_name.clone(),
                remark: r.remark.clone(),
            })
            .await;
        Ok(match result {
            Ok(state) => Submitted::Answered(state),
            Err(ChannelError::Declined { code, message }) => {
                Submitted::Answered(PayoutState::Failed { code, message })
            }
            Err(e) => Submitted::Unknown(e.to_string()),
        })
    }

    /// Asks the channel how the payout stands; transient trouble is retried.
    #[activity]
    pub async fn query_payout(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: HoldPayout,
    ) -> Result<PayoutState, ActivityError> {
        channel(&self.services, &input.request.channel)?
            .query_payout(&input.payout_id)
            .await
            .map_err(channel_err)
    }

    /// Confirm: the channel paid; the hold becomes a posted entry. Idempotent.
    #[activity]
    pub async fn post_payout(
        self: Arc<Self>,
        _ctx: ActivityContext,
        payout_id: String,
    ) -> Result<Money, ActivityError> {
        use crate::store::holds::PostOutcome;
        match self
            .services
            .store
            .post_hold(&accounting::payout_hold_id(&payout_id), None)
            .await
            .map_err(store_err)?
        {
            PostOutcome::Posted { amount, .. } | PostOutcome::AlreadyPosted { amount, .. } => {
                Ok(amount)
            }
        }
    }

    /// Cancel: releases the hold (a recorded no-op when the try never ran). Idempotent.
    #[activity]
    pub async fn void_payout(
        self: Arc<Self>,
        _ctx: ActivityContext,
        payout_id: String,
    ) -> Result<(), ActivityError> {
        self.services
            .store
            .void_hold(&accounting::payout_hold_id(&payout_id))
            .await
            .map(|_| ())
            .map_err(store_err)
    }
}
