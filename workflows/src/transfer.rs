//! The Transfer workflow, `transfer/{transfer_no}`: wallet to wallet inside the ledger.
//! Hold (try) then post (confirm); short of funds, it is rejected and nothing changes.

use payflow_activities::transfer::{HoldTransfer, TransferActivities, TransferHeld};
use payflow_client::definitions::names;
use payflow_client::{ChannelFailure, TransferRequest, TransferState, TransferStatus};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::options::{side_effect, to_the_end};

#[workflow]
pub struct Transfer {
    request: TransferRequest,
    status: TransferStatus,
}

#[workflow_methods]
impl Transfer {
    #[init]
    pub fn new(ctx: &WorkflowContextView, request: TransferRequest) -> Self {
        let status = TransferStatus {
            workflow_id: ctx.workflow_id().to_string(),
            transfer_no: request.transfer_no.clone(),
            from: request.from.clone(),
            to: request.to.clone(),
            amount: request.amount,
            state: TransferState::Requested,
            failure: None,
        };
        Transfer { request, status }
    }

    #[run(name = names::TRANSFER)]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<TransferStatus> {
        let request = ctx.state(|s| s.request.clone());
        ctx.set_current_details(format!(
            "transfer {} from {} to {}",
            request.amount, request.from, request.to
        ));
        let transfer_id = ctx.uuid4().replace('-', "");
        let held = ctx
            .execute_activity(
                TransferActivities::hold_transfer,
                HoldTransfer {
                    transfer_id: transfer_id.clone(),
                    request: request.clone(),
                },
                to_the_end(side_effect(format!(
                    "hold {} on {}",
                    request.amount, request.from
                ))),
            )
            .await?;
        if held == TransferHeld::InsufficientFunds {
            ctx.state_mut(|s| {
                s.status.state = TransferState::Rejected;
                s.status.failure = Some(ChannelFailure {
                    code: "payflow.INSUFFICIENT_BALANCE".into(),
                    message: format!("wallet {} cannot cover {}", request.from, request.amount),
                });
            });
            return Ok(ctx.state(|s| s.status.clone()));
        }
        ctx.execute_activity(
            TransferActivities::post_transfer,
            transfer_id,
            to_the_end(side_effect("post the transfer")),
        )
        .await?;
        ctx.state_mut(|s| s.status.state = TransferState::Succeeded);
        Ok(ctx.state(|s| s.status.clone()))
    }

    #[query(name = names::STATUS)]
    pub fn status(&self, _ctx: &WorkflowContextView) -> TransferStatus {
        self.status.clone()
    }
}
