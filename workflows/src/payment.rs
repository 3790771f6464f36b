//! The Payment workflow, `pay/{merchant}/{merchant_order_no}`.
//!
//! 1. open: validate against merchants and routing, create the order (`Created`);
//! 2. prepay at the channel (`Pending`), answered early to the caller through the `prepay`
//!    update;
//! 3. wait, racing the channel's notification (a signal from the ingress) against an active
//!    query schedule; a notification is never trusted alone: a channel query confirms it;
//! 4. paid: `Succeeded` and the ledger entry in one transaction, then the merchant callback
//!    (a Notification workflow of its own, which outlives this one); expired: close at the
//!    channel, `Closed`;
//! 5. paid a different amount: `Exception`, nothing posted, until an operator's `resolve`
//!    signal accepts the money paid or returns it through a child Refund workflow.
//!
//! Every step is a local activity (`options::local_step`): a payment costs the server two
//! workflow tasks, one that opens, prepays and answers `pay`, one that a notice (or a timer)
//! wakes to query, settle and start the callback.
//!
//! A payment that arrives after `Closed` is not this workflow's business any more: the ingress
//! (or reconciliation) starts a late-payment Refund workflow for it.

use std::collections::BTreeSet;
use std::time::Duration;

use payflow_activities::channels::{CloseOutcome, TradeQuery, TradeState};
use payflow_activities::payment::{
    MoveOrder, OpenPayment, Opened, PaymentActivities, PrepayOutcome, SettlePaid,
};
use payflow_activities::store::orders::Order;
use payflow_client::definitions::{names, search_attributes as sa, task_queues};
use payflow_client::{
    ChannelNotice, Money, NotifyState, PayState, PaymentRequest, PaymentStatus, Prepay, Priority,
    RefundKind, RefundNo, RefundRequest, RefundState, Resolution, Versioned,
};
use temporalio_common::search_attributes::SearchAttributeUpdate;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ApplicationFailure, ChildWorkflowOptions, SyncWorkflowContext, WorkflowCancellationToken,
    WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::merchant_events::{MerchantEvent, first_try, notify, notify_by_client};
use crate::options::{local_step, now_ms, wait_to_the_end};
use crate::refund::Refund;
use crate::state::payment::{PayEvent, transition};
use crate::versioning::patched_since;

#[workflow]
pub struct Payment {
    request: PaymentRequest,
    status: PaymentStatus,
    /// Why the request was refused before anything was created.
    rejection: Option<String>,
    /// The merchant asked to close the unpaid order.
    close_requested: bool,
    /// Notify ids already counted, so duplicates change nothing.
    seen_notify_ids: BTreeSet<String>,
    /// An operator's decision on an exception, not yet acted on.
    pending_resolution: Option<Resolution>,
    /// Steps run as local activities (runs recorded before: regular activities).
    local_steps: bool,
    /// A run of the third version (see `V3_PATCH`): merchant, order no, amount and channel
    /// go into the search attributes with the first state change, in one upsert.
    v3: bool,
    /// The version its starter chose (`payflow_client::Versioned`); from 1 on a run is V3
    /// without asking the patch.
    started_at: u32,
}

/// Runs started at this version or later make their callback's first try themselves
/// ([`Payment::notify_merchant`]); no patch marks it, the input's version does.
const FIRST_TRY_SINCE: u32 = 2;

type HandlerError = Box<dyn std::error::Error + Send + Sync>;

#[workflow_methods]
impl Payment {
    #[init]
    pub fn new(ctx: &WorkflowContextView, start: Versioned<PaymentRequest>) -> Self {
        let Versioned {
            request,
            version: started_at,
        } = start;
        let status = PaymentStatus {
            workflow_id: ctx.workflow_id().to_string(),
            merchant_id: request.merchant_id.clone(),
            merchant_order_no: request.merchant_order_no.clone(),
            amount: request.amount,
            state: PayState::Created,
            order_id: None,
            channel: None,
            channel_trade_no: None,
            prepay: None,
            failure: None,
            notices_received: 0,
            queries_made: 0,
            paid_at_ms: None,
            closed_at_ms: None,
            paid_amount: None,
            resolution: None,
        };
        Payment {
            request,
            status,
            rejection: None,
            close_requested: false,
            seen_notify_ids: BTreeSet::new(),
            pending_resolution: None,
            local_steps: false,
            v3: false,
            started_at,
        }
    }

    #[run(name = names::PAYMENT)]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<PaymentStatus> {
        let request = ctx.state(|s| s.request.clone());
        // Search attributes upserted in a workflow task only show when it ends, and each
        // upsert costs the server an event and a visibility write: since V3 the first task
        // upserts once, with its final state (`apply`). Runs recorded before upserted as
        // they went. A patch costs the same (a marker and an upsert of
        // `TemporalChangeVersion`), so V3 implies V2 and callbacks started by the client
        // instead of marking each, and runs started at version 1 are V3 unasked.
        let started_at = ctx.state(|s| s.started_at);
        let v3 = patched_since(ctx, started_at, 1, V3_PATCH);
        let v2 = v3 || ctx.patched(V2_PATCH);
        ctx.state_mut(|s| {
            s.local_steps = v2;
            s.v3 = v3;
        });
        if !v3 {
            ctx.upsert_search_attributes(Self::identity(&request, None, PayState::Created));
        }
        ctx.set_current_details(format!(
            "{} pays {} for order {}",
            request.merchant_id, request.amount, request.merchant_order_no
        ));

        // 1. Validate and create the order.
        let order_id = ctx.uuid4().replace('-', "");
        let requested_at_ms = now_ms(ctx.workflow_time());
        let opened = local_step(
            ctx,
            v2,
            PaymentActivities::open_payment,
            OpenPayment {
                order_id,
                request: request.clone(),
                requested_at_ms,
            },
            format!("open order {}", request.merchant_order_no),
        )
        .await?;
        let (order, timing) = match opened {
            Opened::Order { order, timing } => (order, timing),
            Opened::Rejected { reason } => {
                ctx.state_mut(|s| s.rejection = Some(reason.clone()));
                if v3 {
                    ctx.upsert_search_attributes(Self::identity(&request, None, PayState::Created));
                }
                wait_for_handlers(ctx).await?;
                // Failing the run (not completing it) lets a corrected request reuse the id.
                return Err(
                    ApplicationFailure::non_retryable(format!("rejected: {reason}")).into(),
                );
            }
        };
        ctx.state_mut(|s| {
            s.status.order_id = Some(order.order_id.clone());
            s.status.channel = Some(order.channel.clone());
        });
        if !v3 {
            ctx.upsert_search_attributes([sa::CHANNEL.value_set(order.channel.clone())]);
        }

        // 2. Prepay.
        let prepay = local_step(
            ctx,
            v2,
            PaymentActivities::prepay,
            order.order_id.clone(),
            format!("prepay {} at {}", order.amount, order.channel),
        )
        .await?;
        match prepay {
            PrepayOutcome::Ready(p) => {
                Self::apply(ctx, PayEvent::PrepayAccepted, |s| s.status.prepay = Some(p))?;
            }
            PrepayOutcome::Declined(failure) => {
                Self::apply(ctx, PayEvent::PrepayDeclined, |s| {
                    s.status.failure = Some(failure)
                })?;
                return Self::finish(ctx).await;
            }
        }

        // 3. Wait for the channel's word, confirmed by a query, or for expiry.
        let mut next_query = 0usize;
        // Notices a query has already answered. A notice that came in before this wait began
        // (a customer who paid at once) triggers the query at once too; runs recorded before
        // V2 waited for the next scheduled query instead.
        let mut answered = 0;
        let paid = loop {
            let now = now_ms(ctx.workflow_time());
            let remaining = order.expires_at_ms - now;
            if remaining <= 0 {
                break None;
            }
            let schedule = &timing.query_schedule_ms;
            let step = schedule
                .get(next_query)
                .or(schedule.last())
                .copied()
                .unwrap_or(300_000);
            let wait = Duration::from_millis(step.min(remaining as u64).max(1));
            let counted = if v2 {
                answered
            } else {
                ctx.state(|s| s.status.notices_received)
            };
            // An operator's cancel (the UI's Request Cancellation, `temporal workflow
            // cancel`) closes the payment as the merchant's close does. It ends every wait
            // in the select (each takes the workflow's cancellation), so the token decides,
            // not the branch; and no timer is started once it came.
            let closing = ctx.cancellation_token().is_cancelled()
                || temporalio_sdk::workflows::select! {
                    _ = ctx.wait_condition(|s: &Self| s.close_requested) => true,
                    _ = ctx.timer(wait) => { next_query += 1; false }
                    _ = ctx.wait_condition(move |s: &Self| s.status.notices_received > counted) => false,
                }
                || ctx.cancellation_token().is_cancelled();
            if closing {
                // Closed by the merchant or an operator: the close path below still checks
                // whether it was paid.
                break None;
            }
            answered = ctx.state(|s| s.status.notices_received);
            let q = Self::query(ctx, &order).await?;
            match q.state {
                TradeState::Paid => break Some(q),
                // Closed at the channel (e.g. its own expiry): stop waiting.
                TradeState::Closed => break None,
                TradeState::NotFound | TradeState::WaitingForPayment => {}
            }
        };

        // 4. Settle, or close.
        let paid = match paid {
            Some(q) => Some(q),
            None => match Self::close_at_channel(ctx, &order).await? {
                CloseOutcome::AlreadyPaid => {
                    let q = Self::query(ctx, &order).await?;
                    (q.state == TradeState::Paid).then_some(q)
                }
                CloseOutcome::Closed => None,
            },
        };
        match paid {
            Some(q) => Self::settle(ctx, &order, q).await?,
            None => {
                local_step(
                    ctx,
                    v2,
                    PaymentActivities::move_order,
                    MoveOrder {
                        order_id: order.order_id.clone(),
                        from: PayState::Pending,
                        to: PayState::Closed,
                        failure: None,
                        paid_amount: None,
                        channel_trade_no: None,
                    },
                    "close order",
                )
                .await?;
                let now = now_ms(ctx.workflow_time());
                let updates =
                    Self::transit(ctx, PayEvent::Closed, |s| s.status.closed_at_ms = Some(now))?;
                Self::notify_merchant(ctx, &order, "payment.closed", updates).await?;
            }
        }
        Self::finish(ctx).await
    }

    #[signal(name = names::CHANNEL_NOTIFIED)]
    pub fn channel_notified(
        &mut self,
        _ctx: &mut SyncWorkflowContext<Self>,
        notice: ChannelNotice,
    ) {
        // Duplicates (same notify id) are counted once; the notice only triggers a query.
        if self.seen_notify_ids.insert(notice.notify_id) {
            self.status.notices_received += 1;
        }
    }

    /// Operator decision on a payment in `Exception`; ignored in any other state (a signal
    /// cannot be refused, so a stray one must be harmless).
    #[signal(name = names::RESOLVE)]
    pub fn resolve(&mut self, _ctx: &mut SyncWorkflowContext<Self>, resolution: Resolution) {
        if self.status.state == PayState::Exception && self.pending_resolution.is_none() {
            self.pending_resolution = Some(resolution);
        }
    }

    #[query(name = names::STATUS)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> PaymentStatus {
        self.status.clone()
    }

    #[update_validator(prepay)]
    fn validate_prepay(
        &self,
        _ctx: &WorkflowContextView,
        req: &PaymentRequest,
    ) -> Result<(), HandlerError> {
        let mine = &self.request;
        if req.amount != mine.amount || req.product_id != mine.product_id {
            return Err(format!(
                "conflict: order {} exists with amount {} and product {}",
                mine.merchant_order_no, mine.amount, mine.product_id
            )
            .into());
        }
        Ok(())
    }

    #[update_validator(close)]
    fn validate_close(&self, _ctx: &WorkflowContextView, _: &()) -> Result<(), HandlerError> {
        match self.status.state {
            PayState::Created | PayState::Pending => Ok(()),
            other => Err(format!("cannot close: payment is {other}").into()),
        }
    }

    /// Merchant-initiated close of an unpaid order. Answers the final state: `Closed`, or
    /// `Succeeded` when the customer paid before the channel closed the trade.
    #[update(name = names::CLOSE)]
    pub async fn close(ctx: &mut WorkflowContext<Self>, _: ()) -> Result<PayState, HandlerError> {
        ctx.state_mut(|s| s.close_requested = true);
        ctx.wait_condition_with_options(
            |s: &Self| {
                !matches!(s.status.state, PayState::Created | PayState::Pending)
                    || s.rejection.is_some()
            },
            wait_to_the_end(),
        )
        .await?;
        Ok(ctx.state(|s| s.status.state))
    }

    /// Returns the prepay credential as soon as it is known (the early return of `pay`).
    #[update(name = names::PREPAY)]
    pub async fn prepay(
        ctx: &mut WorkflowContext<Self>,
        _req: PaymentRequest,
    ) -> Result<Prepay, HandlerError> {
        ctx.wait_condition_with_options(
            |s: &Self| {
                s.status.prepay.is_some() || s.rejection.is_some() || s.status.failure.is_some()
            },
            wait_to_the_end(),
        )
        .await?;
        ctx.state(
            |s| match (&s.status.prepay, &s.rejection, &s.status.failure) {
                (Some(p), _, _) => Ok(p.clone()),
                (None, Some(reason), _) => Err(reason.clone().into()),
                (None, None, Some(f)) => Err(format!("declined: {}: {}", f.code, f.message).into()),
                (None, None, None) => Err("no prepay".into()),
            },
        )
    }
}

impl Payment {
    /// Moves the in-workflow state through the pure state machine and mirrors it to the
    /// search attributes.
    fn apply(
        ctx: &mut WorkflowContext<Self>,
        event: PayEvent,
        patch: impl FnOnce(&mut Self),
    ) -> WorkflowResult<()> {
        let updates = Self::transit(ctx, event, patch)?;
        ctx.upsert_search_attributes(updates);
        Ok(())
    }

    /// [`Payment::apply`] without the upsert: the search attribute updates it calls for, for a
    /// caller that has more to upsert in the same task.
    fn transit(
        ctx: &mut WorkflowContext<Self>,
        event: PayEvent,
        patch: impl FnOnce(&mut Self),
    ) -> WorkflowResult<Vec<SearchAttributeUpdate>> {
        let from = ctx.state(|s| s.status.state);
        let to = transition(from, event)
            .map_err(|e| ApplicationFailure::non_retryable(e.to_string()))?;
        let v3 = ctx.state_mut(|s| {
            s.status.state = to;
            patch(s);
            s.v3
        });
        // Every transition out of `Created` is the run's first.
        if v3 && from == PayState::Created {
            let (request, channel) = ctx.state(|s| (s.request.clone(), s.status.channel.clone()));
            Ok(Self::identity(&request, channel, to))
        } else {
            Ok(vec![sa::PAY_STATE.value_set(to.to_string())])
        }
    }

    /// The search attributes operators find a payment by, with its state (and its channel,
    /// once routed).
    fn identity(
        request: &PaymentRequest,
        channel: Option<String>,
        state: PayState,
    ) -> Vec<SearchAttributeUpdate> {
        let mut v = vec![
            sa::MERCHANT_ID.value_set(request.merchant_id.to_string()),
            sa::ORDER_NO.value_set(request.merchant_order_no.to_string()),
            sa::AMOUNT_MINOR.value_set(request.amount.minor_units()),
            sa::PAY_STATE.value_set(state.to_string()),
        ];
        v.extend(channel.map(|c| sa::CHANNEL.value_set(c)));
        v
    }

    async fn query(ctx: &mut WorkflowContext<Self>, order: &Order) -> WorkflowResult<TradeQuery> {
        let local = ctx.state(|s| s.local_steps);
        let q = local_step(
            ctx,
            local,
            PaymentActivities::query_trade,
            order.order_id.clone(),
            format!("query {} trade", order.channel),
        )
        .await?;
        ctx.state_mut(|s| s.status.queries_made += 1);
        Ok(q)
    }

    async fn close_at_channel(
        ctx: &mut WorkflowContext<Self>,
        order: &Order,
    ) -> WorkflowResult<CloseOutcome> {
        let local = ctx.state(|s| s.local_steps);
        Ok(local_step(
            ctx,
            local,
            PaymentActivities::close_trade,
            order.order_id.clone(),
            format!("close {} trade", order.channel),
        )
        .await?)
    }

    /// The channel confirmed the payment.
    async fn settle(
        ctx: &mut WorkflowContext<Self>,
        order: &Order,
        q: TradeQuery,
    ) -> WorkflowResult<()> {
        let paid_amount = q.paid_amount.unwrap_or(order.amount);
        let local = ctx.state(|s| s.local_steps);
        if paid_amount != order.amount {
            // Paid a different amount: no ledger posting; an operator decides.
            local_step(
                ctx,
                local,
                PaymentActivities::move_order,
                MoveOrder {
                    order_id: order.order_id.clone(),
                    from: PayState::Pending,
                    to: PayState::Exception,
                    failure: Some(payflow_client::ChannelFailure {
                        code: "payflow.AMOUNT_MISMATCH".into(),
                        message: format!("paid {paid_amount}, order is {}", order.amount),
                    }),
                    paid_amount: Some(paid_amount),
                    channel_trade_no: q.channel_trade_no.clone(),
                },
                "amount mismatch: order to Exception",
            )
            .await?;
            Self::apply(ctx, PayEvent::AmountMismatch, |s| {
                s.status.channel_trade_no = q.channel_trade_no.clone();
                s.status.paid_amount = Some(paid_amount);
            })?;
            return Self::resolve_exception(ctx, order, paid_amount).await;
        }
        local_step(
            ctx,
            local,
            PaymentActivities::settle_paid,
            SettlePaid {
                order_id: order.order_id.clone(),
                channel_trade_no: q.channel_trade_no.clone(),
                paid_amount,
            },
            format!("order Succeeded, post {paid_amount} to the ledger"),
        )
        .await?;
        let now = now_ms(ctx.workflow_time());
        let updates = Self::transit(ctx, PayEvent::PaidConfirmed, |s| {
            s.status.channel_trade_no = q.channel_trade_no.clone();
            s.status.paid_at_ms = Some(now);
        })?;
        Self::notify_merchant(ctx, order, "payment.succeeded", updates).await
    }

    /// Waits for an operator's decision and carries it out. A refund that fails leaves the
    /// payment in `Exception` for another decision.
    async fn resolve_exception(
        ctx: &mut WorkflowContext<Self>,
        order: &Order,
        paid_amount: Money,
    ) -> WorkflowResult<()> {
        // Each refund attempt is its own refund (a failed one stays on record as failed).
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // An operator's cancel does not end this wait: the money came in, and only
            // `resolve` says what becomes of it.
            ctx.wait_condition_with_options(
                |s: &Self| s.pending_resolution.is_some(),
                wait_to_the_end(),
            )
            .await?;
            let resolution = ctx.state(|s| s.pending_resolution.expect("just waited for it"));
            ctx.state_mut(|s| s.status.resolution = Some(resolution));
            match resolution {
                Resolution::Accept => {
                    let local = ctx.state(|s| s.local_steps);
                    local_step(
                        ctx,
                        local,
                        PaymentActivities::accept_exception,
                        order.order_id.clone(),
                        format!("operator accepts {paid_amount}: order Succeeded"),
                    )
                    .await?;
                    let now = now_ms(ctx.workflow_time());
                    let updates = Self::transit(ctx, PayEvent::OperatorAccepted, |s| {
                        s.status.paid_at_ms = Some(now)
                    })?;
                    return Self::notify_merchant(ctx, order, "payment.succeeded", updates).await;
                }
                Resolution::Refund => {
                    let request = ctx.state(|s| s.request.clone());
                    let refund_no = RefundNo::parse(format!("exc-{}-{attempt}", order.order_id))
                        .map_err(|e| ApplicationFailure::non_retryable(e.to_string()))?;
                    let workflow_id =
                        payflow_client::ids::refund_workflow_id(&request.merchant_id, &refund_no);
                    let child = ctx
                        .start_child_workflow(
                            Refund::run,
                            RefundRequest {
                                merchant_id: request.merchant_id.clone(),
                                merchant_order_no: request.merchant_order_no.clone(),
                                merchant_refund_no: refund_no,
                                amount: paid_amount,
                                reason: "payment of a wrong amount returned".into(),
                                kind: RefundKind::Exception,
                            },
                            ChildWorkflowOptions::builder()
                                // Seen to its end even if an operator cancelled the payment
                                // while it waited for this decision.
                                .cancellation_token(WorkflowCancellationToken::new())
                                .workflow_id(workflow_id)
                                .task_queue(task_queues::PAYMENTS.to_string())
                                .static_summary(format!(
                                    "return {paid_amount} paid on order {}",
                                    request.merchant_order_no
                                ))
                                .build(),
                        )
                        .await
                        .map_err(|e| ApplicationFailure::non_retryable(e.to_string()))?;
                    let refunded = child
                        .result()
                        .await
                        .map_err(|e| ApplicationFailure::non_retryable(e.to_string()))?;
                    if refunded.state == RefundState::Succeeded {
                        return Self::apply(ctx, PayEvent::FullyRefunded, |_| {});
                    }
                    ctx.state_mut(|s| {
                        s.pending_resolution = None;
                        s.status.resolution = None;
                    });
                }
            }
        }
    }

    /// Tells the merchant, and upserts `updates` (the state change the event reports).
    ///
    /// Since [`FIRST_TRY_SINCE`] the callback's first try is made here, in this workflow task
    /// (seed 000: realtime callbacks go out at once, only failures go to the compensating
    /// retry layer): a callback delivered at once costs the server no workflow of its own,
    /// and this payment carries `NotifyState = Delivered`. One it does not deliver is handed
    /// to its Notification workflow, which outlives this one. Runs started before start that
    /// workflow for every callback.
    async fn notify_merchant(
        ctx: &mut WorkflowContext<Self>,
        order: &Order,
        event_type: &str,
        mut updates: Vec<SearchAttributeUpdate>,
    ) -> WorkflowResult<()> {
        let (request, status, v3, started_at) =
            ctx.state(|s| (s.request.clone(), s.status.clone(), s.v3, s.started_at));
        let event = MerchantEvent {
            merchant: &request.merchant_id,
            event_id: format!("{}-{}", order.order_id, event_type.replace('.', "-")),
            event_type,
            data: &status,
            priority: Priority::Realtime,
            notify_url: request.notify_url.clone(),
            summary: format!(
                "{event_type} to {} for order {}",
                request.merchant_id, request.merchant_order_no
            ),
        };
        if started_at < FIRST_TRY_SINCE {
            ctx.upsert_search_attributes(updates);
            return if v3 {
                notify_by_client(ctx, event).await
            } else {
                notify(ctx, event).await
            };
        }
        let event_time_ms = now_ms(ctx.workflow_time());
        if first_try(ctx, event, event_time_ms).await? {
            let delivered = NotifyState::Delivered.as_str().to_string();
            updates.push(sa::NOTIFY_STATE.value_set(delivered));
        }
        ctx.upsert_search_attributes(updates);
        Ok(())
    }

    async fn finish(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<PaymentStatus> {
        wait_for_handlers(ctx).await?;
        Ok(ctx.state(|s| s.status.clone()))
    }
}

/// Marks runs of the second version: every step is a local activity (see [`local_step`])
/// and a channel notice that arrived before the wait for it triggers the query at once.
const V2_PATCH: &str = "payment-v2";

/// Marks runs of the third version: one search attribute upsert per workflow task, and all
/// that V2 and `notify-started-by-client` mark (without their markers).
const V3_PATCH: &str = "payment-v3";

async fn wait_for_handlers(ctx: &mut WorkflowContext<Payment>) -> WorkflowResult<()> {
    let view = ctx.clone();
    ctx.wait_condition_with_options(move |_| view.all_handlers_finished(), wait_to_the_end())
        .await?;
    Ok(())
}
