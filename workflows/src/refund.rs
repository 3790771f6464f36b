//! The Refund workflow, `refund/{merchant}/{merchant_refund_no}`.
//!
//! 1. reserve: the over-refund guard records the refund against its order (or refuses it);
//! 2. try: hold the money in the ledger, after registering the cancel, so a crash between the
//!    two can never leak a hold;
//! 3. refund at the channel (idempotent by our refund id), then query on a schedule until the
//!    answer is definite: channels do not always notify refunds;
//! 4. confirm (post the hold, refund `Succeeded`, order refunded) or cancel (void the hold,
//!    refund `Failed`); then tell the merchant.

use std::time::Duration;

use payflow_activities::channels::RefundState as ChannelRefundState;
use payflow_activities::refund::{
    FailRefund, HoldResult, RefundActivities, ReserveRefund, Reserved,
};
use payflow_client::definitions::{names, search_attributes as sa};
use payflow_client::{
    ChannelFailure, Priority, RefundKind, RefundRequest, RefundState, RefundStatus,
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::merchant_events::{MerchantEvent, notify};
use crate::options::{now_ms, side_effect, timer_to_the_end, to_the_end};

#[workflow]
pub struct Refund {
    request: RefundRequest,
    status: RefundStatus,
}

#[workflow_methods]
impl Refund {
    #[init]
    pub fn new(ctx: &WorkflowContextView, request: RefundRequest) -> Self {
        let status = RefundStatus {
            workflow_id: ctx.workflow_id().to_string(),
            merchant_id: request.merchant_id.clone(),
            merchant_order_no: request.merchant_order_no.clone(),
            merchant_refund_no: request.merchant_refund_no.clone(),
            kind: request.kind,
            amount: request.amount,
            state: RefundState::Requested,
            refund_id: None,
            order_id: None,
            channel: None,
            failure: None,
            queries_made: 0,
            refunded_at_ms: None,
        };
        Refund { request, status }
    }

    #[run(name = names::REFUND)]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<RefundStatus> {
        let request = ctx.state(|s| s.request.clone());
        ctx.upsert_search_attributes([
            sa::MERCHANT_ID.value_set(request.merchant_id.to_string()),
            sa::ORDER_NO.value_set(request.merchant_order_no.to_string()),
            sa::AMOUNT_MINOR.value_set(request.amount.minor_units()),
        ]);
        ctx.set_current_details(format!(
            "{} refund of {} on order {} ({})",
            request.kind.as_str(),
            request.amount,
            request.merchant_order_no,
            request.reason
        ));

        // 1. The guard.
        let refund_id = ctx.uuid4().replace('-', "");
        let reserved = ctx
            .execute_activity(
                RefundActivities::reserve_refund,
                ReserveRefund {
                    refund_id,
                    request: request.clone(),
                },
                to_the_end(side_effect(format!("reserve refund {}", request.amount))),
            )
            .await?;
        let (refund, order, timing) = match reserved {
            Reserved::Refund {
                refund,
                order,
                timing,
            } => (refund, order, timing),
            Reserved::Refused(failure) => return Self::fail(ctx, failure, false).await,
        };
        let refund_id = refund.refund_id.clone();
        match refund.state {
            // Recorded by an earlier request with this refund no: report it, do nothing again.
            RefundState::Succeeded | RefundState::Failed => {
                ctx.state_mut(|s| {
                    s.status.refund_id = Some(refund_id.clone());
                    s.status.order_id = Some(order.order_id.clone());
                    s.status.state = refund.state;
                    s.status.failure = refund.failure.clone();
                });
                return Ok(ctx.state(|s| s.status.clone()));
            }
            RefundState::Requested | RefundState::Processing => {}
        }
        ctx.state_mut(|s| {
            s.status.refund_id = Some(refund_id.clone());
            s.status.order_id = Some(order.order_id.clone());
            s.status.channel = Some(order.channel.clone());
            s.status.state = RefundState::Processing;
            // payflow's own refunds return what the channel collected.
            s.status.amount = refund.amount;
        });
        ctx.upsert_search_attributes([sa::CHANNEL.value_set(order.channel.clone())]);

        // 2. TCC try. Its cancel is already registered: the refund row exists, and every
        //    failure path from here on runs `fail_refund`, which voids the hold by its
        //    deterministic id (a recorded empty rollback if the try never ran), so a crash
        //    between the try and its answer cannot leak a hold.
        let held = ctx
            .execute_activity(
                RefundActivities::hold_refund,
                refund_id.clone(),
                to_the_end(side_effect(format!(
                    "hold {} for the refund",
                    refund.amount
                ))),
            )
            .await?;
        if held == HoldResult::InsufficientFunds {
            let failure = ChannelFailure {
                code: "payflow.INSUFFICIENT_BALANCE".into(),
                message: "the balance the refund draws on cannot cover it".into(),
            };
            return Self::fail(ctx, failure, true).await;
        }

        // 3. The channel, until its answer is definite.
        let mut result = ctx
            .execute_activity(
                RefundActivities::refund_at_channel,
                refund_id.clone(),
                to_the_end(side_effect(format!(
                    "refund {} at {}",
                    refund.amount, order.channel
                ))),
            )
            .await?;
        let mut step = 0usize;
        loop {
            match result.state {
                ChannelRefundState::Succeeded => break,
                ChannelRefundState::Failed { code, message } => {
                    return Self::fail(ctx, ChannelFailure { code, message }, true).await;
                }
                ChannelRefundState::Processing => {
                    let schedule = &timing.query_schedule_ms;
                    let wait = schedule
                        .get(step)
                        .or(schedule.last())
                        .copied()
                        .unwrap_or(60_000);
                    step += 1;
                    ctx.timer(timer_to_the_end(Duration::from_millis(wait.max(1))))
                        .await;
                    result = ctx
                        .execute_activity(
                            RefundActivities::query_refund,
                            refund_id.clone(),
                            to_the_end(side_effect(format!("query refund at {}", order.channel))),
                        )
                        .await?;
                    ctx.state_mut(|s| s.status.queries_made += 1);
                }
                // The channel has no record of the submit (lost on the way): submit again;
                // the same refund request no cannot refund twice.
                ChannelRefundState::NotFound => {
                    result = ctx
                        .execute_activity(
                            RefundActivities::refund_at_channel,
                            refund_id.clone(),
                            to_the_end(side_effect(format!(
                                "resubmit refund at {}",
                                order.channel
                            ))),
                        )
                        .await?;
                }
            }
        }

        // 4. Confirm.
        ctx.execute_activity(
            RefundActivities::complete_refund,
            refund_id.clone(),
            to_the_end(side_effect("post the refund hold, refund Succeeded")),
        )
        .await?;
        let now = now_ms(ctx.workflow_time());
        ctx.state_mut(|s| {
            s.status.state = RefundState::Succeeded;
            s.status.refunded_at_ms = Some(now);
        });
        Self::notify_merchant(ctx, "refund.succeeded").await?;
        Ok(ctx.state(|s| s.status.clone()))
    }

    #[query(name = names::STATUS)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> RefundStatus {
        self.status.clone()
    }
}

impl Refund {
    /// Ends the refund as `Failed`: once reserved, the TCC cancel (void the hold, or record an
    /// empty rollback) and the release of the reservation; then the merchant hears of it.
    async fn fail(
        ctx: &mut WorkflowContext<Self>,
        failure: ChannelFailure,
        reserved: bool,
    ) -> WorkflowResult<RefundStatus> {
        let refund_id = ctx.state(|s| s.status.refund_id.clone());
        if let (true, Some(refund_id)) = (reserved, refund_id) {
            ctx.execute_activity(
                RefundActivities::fail_refund,
                FailRefund {
                    refund_id,
                    failure: failure.clone(),
                },
                to_the_end(side_effect("void the refund hold, refund Failed")),
            )
            .await?;
        }
        ctx.state_mut(|s| {
            s.status.state = RefundState::Failed;
            s.status.failure = Some(failure);
        });
        // Refusals of payflow's own refunds (e.g. a forged late-payment notice) concern
        // operators, not the merchant.
        if reserved || ctx.state(|s| s.request.kind) == RefundKind::Merchant {
            Self::notify_merchant(ctx, "refund.failed").await?;
        }
        Ok(ctx.state(|s| s.status.clone()))
    }

    /// Starts the merchant callback, a workflow of its own that outlives this one.
    async fn notify_merchant(
        ctx: &mut WorkflowContext<Self>,
        event_type: &str,
    ) -> WorkflowResult<()> {
        let (request, status) = ctx.state(|s| (s.request.clone(), s.status.clone()));
        notify(
            ctx,
            MerchantEvent {
                merchant: &request.merchant_id,
                event_id: format!(
                    "refund-{}-{}",
                    request.merchant_refund_no,
                    event_type.replace('.', "-")
                ),
                event_type,
                data: &status,
                priority: Priority::Realtime,
                notify_url: None,
                summary: format!(
                    "{event_type} to {} for refund {}",
                    request.merchant_id, request.merchant_refund_no
                ),
            },
        )
        .await
    }
}
