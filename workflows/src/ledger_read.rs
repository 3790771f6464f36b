//! `ledger-read/{uuid}`: one ledger read for a service, as a workflow running one activity, so
//! services reach the books through Temporal and never need database credentials.

use payflow_activities::ledger_read::LedgerActivities;
use payflow_client::definitions::names;
use payflow_client::{LedgerAnswer, LedgerRequest};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowContextView, WorkflowResult};

use crate::options::side_effect;

#[workflow]
pub struct LedgerRead {
    request: LedgerRequest,
}

#[workflow_methods]
impl LedgerRead {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, request: LedgerRequest) -> Self {
        LedgerRead { request }
    }

    #[run(name = names::LEDGER_READ)]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<LedgerAnswer> {
        let request = ctx.state(|s| s.request.clone());
        Ok(ctx
            .execute_activity(
                LedgerActivities::read_ledger,
                request,
                side_effect("read the ledger"),
            )
            .await?)
    }
}
