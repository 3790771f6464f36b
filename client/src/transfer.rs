//! Money moving without a customer checkout: internal transfers between wallets, and payouts
//! (withdrawals) from a merchant's balance to an external account through a channel.

use serde::{Deserialize, Serialize};

use crate::ids::{MerchantId, PayoutNo, TransferNo, WalletId};
use crate::money::Money;
use crate::payment::ChannelFailure;

/// Moves money from one wallet to another inside payflow's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferRequest {
    /// The idempotency key: the same transfer no is one transfer.
    pub transfer_no: TransferNo,
    pub from: WalletId,
    pub to: WalletId,
    pub amount: Money,
    pub memo: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransferState {
    Requested,
    Succeeded,
    /// Refused (e.g. insufficient funds); nothing changed.
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferStatus {
    pub workflow_id: String,
    pub transfer_no: TransferNo,
    pub from: WalletId,
    pub to: WalletId,
    pub amount: Money,
    pub state: TransferState,
    pub failure: Option<ChannelFailure>,
}

/// Pays money out of a merchant's balance to an external account through a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayoutRequest {
    pub merchant_id: MerchantId,
    /// The idempotency key: the same payout no is one payout, never two.
    pub payout_no: PayoutNo,
    pub amount: Money,
    /// The channel that pays (e.g. `alipay`).
    pub channel: String,
    /// The payee's account at the channel and the name it must match.
    pub payee_account: String,
    pub payee_name: String,
    pub remark: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PayoutState {
    /// Funds held; waiting for an operator (large payouts) or for the channel.
    Held,
    AwaitingApproval,
    /// Submitted; the channel's answer is not definite yet.
    Submitted,
    Succeeded,
    /// The channel refused or the funds were short: the hold was voided, nothing left.
    Failed,
    /// An operator rejected it, or nobody approved in time: the hold was voided.
    Rejected,
}

impl PayoutState {
    pub fn as_str(self) -> &'static str {
        match self {
            PayoutState::Held => "Held",
            PayoutState::AwaitingApproval => "AwaitingApproval",
            PayoutState::Submitted => "Submitted",
            PayoutState::Succeeded => "Succeeded",
            PayoutState::Failed => "Failed",
            PayoutState::Rejected => "Rejected",
        }
    }
}

/// An operator's review of a large payout (the `review` signal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayoutDecision {
    Approve,
    Reject { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayoutStatus {
    pub workflow_id: String,
    pub merchant_id: MerchantId,
    pub payout_no: PayoutNo,
    pub amount: Money,
    pub state: PayoutState,
    /// payflow's payout id: the channel's idempotency key (`out_biz_no`).
    pub payout_id: Option<String>,
    pub channel_order_id: Option<String>,
    pub failure: Option<ChannelFailure>,
    /// Submits sent to the channel (more than one only when the channel had no record of the
    /// first).
    pub submits: u32,
    pub queries_made: u32,
}
