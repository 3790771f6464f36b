//! Internal transfer activities: a wallet-to-wallet move as hold (try) then post (confirm).
//! Insufficient funds is an answer, not a failure: nothing is held, nothing changes.

use std::sync::Arc;

use payflow_client::TransferRequest;
use serde::{Deserialize, Serialize};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::accounting;
use crate::payment::store_err;
use crate::services::SharedServices;
use crate::store::StoreError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldTransfer {
    /// payflow's transfer id (deterministic, drawn by the workflow).
    pub transfer_id: String,
    pub request: TransferRequest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferHeld {
    Held,
    InsufficientFunds,
}

pub struct TransferActivities {
    services: SharedServices,
}

impl TransferActivities {
    pub fn new(services: SharedServices) -> Self {
        TransferActivities { services }
    }
}

#[activities]
impl TransferActivities {
    /// Try: reserves the amount on the source wallet.
    #[activity]
    pub async fn hold_transfer(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: HoldTransfer,
    ) -> Result<TransferHeld, ActivityError> {
        let r = &input.request;
        let booking =
            accounting::transfer_hold(&input.transfer_id, r.from.as_str(), r.to.as_str(), r.amount);
        match self.services.store.book_hold(&booking).await {
            Ok(_) => Ok(TransferHeld::Held),
            Err(StoreError::InsufficientFunds { .. }) => Ok(TransferHeld::InsufficientFunds),
            Err(e) => Err(store_err(e)),
        }
    }

    /// Confirm: posts the held amount. Idempotent.
    #[activity]
    pub async fn post_transfer(
        self: Arc<Self>,
        _ctx: ActivityContext,
        transfer_id: String,
    ) -> Result<(), ActivityError> {
        self.services
            .store
            .post_hold(&accounting::transfer_hold_id(&transfer_id), None)
            .await
            .map(|_| ())
            .map_err(store_err)
    }
}
