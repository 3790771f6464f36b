//! The Payout workflow, `payout/{merchant}/{payout_no}`: money out of a merchant's balance to
//! an external account.
//!
//! 1. try: hold the amount on the merchant's balance (short of funds: refused, nothing held);
//! 2. large payouts wait for an operator's `review` (approve / reject); rejected or not
//!    reviewed in time: void;
//! 3. submit once; an unknown outcome (timeout, 5xx) is never resubmitted blindly: query by our
//!    payout id until the channel's answer is definite, resubmitting only if it has no record;
//! 4. confirm (post) on success, cancel (void) on a definite failure; tell the merchant.

use std::time::Duration;

use payflow_activities::channels::PayoutState as ChannelPayout;
use payflow_activities::payout::{HoldPayout, PayoutActivities, PayoutHeld, Submitted};
use payflow_client::definitions::{names, search_attributes as sa};
use payflow_client::{
    ChannelFailure, PayoutDecision, PayoutRequest, PayoutState, PayoutStatus, Priority,
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::merchant_events::{MerchantEvent, notify};
use crate::options::{side_effect, single_attempt, timer_to_the_end, to_the_end};

#[workflow]
pub struct Payout {
    request: PayoutRequest,
    status: PayoutStatus,
    decision: Option<PayoutDecision>,
}

#[workflow_methods]
impl Payout {
    #[init]
    pub fn new(ctx: &WorkflowContextView, request: PayoutRequest) -> Self {
        let status = PayoutStatus {
            workflow_id: ctx.workflow_id().to_string(),
            merchant_id: request.merchant_id.clone(),
            payout_no: request.payout_no.clone(),
            amount: request.amount,
            state: PayoutState::Held,
            payout_id: None,
            channel_order_id: None,
            failure: None,
            submits: 0,
            queries_made: 0,
        };
        Payout {
            request,
            status,
            decision: None,
        }
    }

    #[run(name = names::PAYOUT)]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<PayoutStatus> {
        let request = ctx.state(|s| s.request.clone());
        ctx.upsert_search_attributes([
            sa::MERCHANT_ID.value_set(request.merchant_id.to_string()),
            sa::CHANNEL.value_set(request.channel.clone()),
            sa::AMOUNT_MINOR.value_set(request.amount.minor_units()),
        ]);
        ctx.set_current_details(format!(
            "payout {} for {} via {}",
            request.amount, request.merchant_id, request.channel
        ));
        let payout_id = ctx.uuid4().replace('-', "");
        ctx.state_mut(|s| s.status.payout_id = Some(payout_id.clone()));
        let input = HoldPayout {
            payout_id: payout_id.clone(),
            request: request.clone(),
        };

        // 1. Try.
        let held = ctx
            .execute_activity(
                PayoutActivities::hold_payout,
                input.clone(),
                to_the_end(side_effect(format!(
                    "hold {} on {}",
                    request.amount, request.merchant_id
                ))),
            )
            .await?;
        let policy = match held {
            PayoutHeld::Held { policy } => policy,
            PayoutHeld::Refused(failure) => {
                return Self::end(ctx, PayoutState::Failed, Some(failure)).await;
            }
        };

        // 2. Review of large payouts.
        if policy
            .review_above
            .is_some_and(|limit| request.amount.amount() > limit)
        {
            Self::set_state(ctx, PayoutState::AwaitingApproval);
            let timeout = Duration::from_millis(policy.review_timeout_ms);
            // An operator's cancel (the UI's Request Cancellation) rejects a payout under
            // review. It ends every wait in the select (each takes the workflow's
            // cancellation), so the token says whether it came, not the branch.
            temporalio_sdk::workflows::select! {
                _ = ctx.wait_condition(|s: &Self| s.decision.is_some()) => {}
                _ = ctx.timer(timeout) => {}
            };
            let decision = ctx.state(|s| s.decision.clone());
            let rejection = match decision {
                Some(PayoutDecision::Approve) => None,
                Some(PayoutDecision::Reject { reason }) => Some(reason),
                None if ctx.cancellation_token().is_cancelled() => {
                    Some("cancelled by an operator under review".to_string())
                }
                None => Some("not reviewed in time".to_string()),
            };
            if let Some(reason) = rejection {
                Self::void(ctx, &payout_id).await?;
                let failure = ChannelFailure {
                    code: "payflow.PAYOUT_REJECTED".into(),
                    message: reason,
                };
                return Self::end(ctx, PayoutState::Rejected, Some(failure)).await;
            }
        }

        // 3. Submit once, then make the outcome definite.
        Self::set_state(ctx, PayoutState::Submitted);
        let mut outcome = Self::submit(ctx, &input).await?;
        let mut step = 0usize;
        loop {
            match outcome {
                Some(ChannelPayout::Succeeded { channel_order_id }) => {
                    ctx.execute_activity(
                        PayoutActivities::post_payout,
                        payout_id.clone(),
                        to_the_end(side_effect("post the payout")),
                    )
                    .await?;
                    ctx.state_mut(|s| s.status.channel_order_id = Some(channel_order_id));
                    return Self::end(ctx, PayoutState::Succeeded, None).await;
                }
                Some(ChannelPayout::Failed { code, message }) => {
                    Self::void(ctx, &payout_id).await?;
                    let failure = ChannelFailure { code, message };
                    return Self::end(ctx, PayoutState::Failed, Some(failure)).await;
                }
                // Only now is it certain the channel never took it: submit again, same key.
                Some(ChannelPayout::NotFound) => outcome = Self::submit(ctx, &input).await?,
                Some(ChannelPayout::Processing) | None => {
                    let wait = policy
                        .query_schedule_ms
                        .get(step)
                        .or(policy.query_schedule_ms.last())
                        .copied()
                        .unwrap_or(60_000);
                    step += 1;
                    ctx.timer(timer_to_the_end(Duration::from_millis(wait.max(1))))
                        .await;
                    let q = ctx
                        .execute_activity(
                            PayoutActivities::query_payout,
                            input.clone(),
                            to_the_end(side_effect(format!("query payout at {}", request.channel))),
                        )
                        .await?;
                    ctx.state_mut(|s| s.status.queries_made += 1);
                    outcome = Some(q);
                }
            }
        }
    }

    /// Operator review of a payout waiting for approval; ignored otherwise.
    #[signal(name = names::REVIEW)]
    pub fn review(&mut self, _ctx: &mut SyncWorkflowContext<Self>, decision: PayoutDecision) {
        if self.status.state == PayoutState::AwaitingApproval && self.decision.is_none() {
            self.decision = Some(decision);
        }
    }

    #[query(name = names::STATUS)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> PayoutStatus {
        self.status.clone()
    }
}

impl Payout {
    fn set_state(ctx: &mut WorkflowContext<Self>, state: PayoutState) {
        ctx.state_mut(|s| s.status.state = state);
        ctx.upsert_search_attributes(
            [sa::PAY_STATE.value_set(format!("Payout{}", state.as_str()))],
        );
    }

    /// One submit. `None`: the outcome is unknown (the attempt failed or timed out).
    async fn submit(
        ctx: &mut WorkflowContext<Self>,
        input: &HoldPayout,
    ) -> WorkflowResult<Option<ChannelPayout>> {
        ctx.state_mut(|s| s.status.submits += 1);
        let submitted = ctx
            .execute_activity(
                PayoutActivities::submit_payout,
                input.clone(),
                to_the_end(single_attempt(format!(
                    "submit payout {} to {}",
                    input.request.amount, input.request.channel
                ))),
            )
            .await;
        Ok(match submitted {
            Ok(Submitted::Answered(state)) => Some(state),
            Ok(Submitted::Unknown(_)) | Err(_) => None,
        })
    }

    async fn void(ctx: &mut WorkflowContext<Self>, payout_id: &str) -> WorkflowResult<()> {
        ctx.execute_activity(
            PayoutActivities::void_payout,
            payout_id.to_string(),
            to_the_end(side_effect("void the payout hold")),
        )
        .await?;
        Ok(())
    }

    async fn end(
        ctx: &mut WorkflowContext<Self>,
        state: PayoutState,
        failure: Option<ChannelFailure>,
    ) -> WorkflowResult<PayoutStatus> {
        Self::set_state(ctx, state);
        ctx.state_mut(|s| s.status.failure = failure);
        let (request, status) = ctx.state(|s| (s.request.clone(), s.status.clone()));
        let event_type = match state {
            PayoutState::Succeeded => "payout.succeeded",
            _ => "payout.failed",
        };
        notify(
            ctx,
            MerchantEvent {
                merchant: &request.merchant_id,
                event_id: format!(
                    "payout-{}-{}",
                    request.payout_no,
                    event_type.replace('.', "-")
                ),
                event_type,
                data: &status,
                // Payouts are batch events: they never take slots from checkout callbacks.
                priority: Priority::Batch,
                notify_url: None,
                summary: format!(
                    "{event_type} to {} for payout {}",
                    request.merchant_id, request.payout_no
                ),
            },
        )
        .await?;
        Ok(ctx.state(|s| s.status.clone()))
    }
}
