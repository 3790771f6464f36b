//! The ledger read activity behind the client's `account_balance`, `order_entries` and
//! `trial_balance`: store types turned into the client's exact-decimal views.

use std::collections::BTreeMap;
use std::sync::Arc;

use payflow_client::{
    AccountBalanceView, Currency, EntryView, LedgerAnswer, LedgerRequest, PostingView,
};
use rust_decimal::Decimal;
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::payment::{fatal, store_err};
use crate::services::SharedServices;
use crate::store::StoreError;

pub struct LedgerActivities {
    services: SharedServices,
}

impl LedgerActivities {
    pub fn new(services: SharedServices) -> Self {
        LedgerActivities { services }
    }
}

fn decimal(minor: i64, currency: Currency) -> Decimal {
    Decimal::new(minor, currency.minor_units())
}

#[activities]
impl LedgerActivities {
    #[activity]
    pub async fn read_ledger(
        self: Arc<Self>,
        _ctx: ActivityContext,
        req: LedgerRequest,
    ) -> Result<LedgerAnswer, ActivityError> {
        let store = &self.services.store;
        Ok(match req {
            LedgerRequest::Balance { account_id } => match store.account_balance(&account_id).await
            {
                Ok(b) => LedgerAnswer::Balance(Some(AccountBalanceView {
                    account_id: b.account.id.clone(),
                    kind: b.account.kind.as_str().to_string(),
                    currency: b.account.currency,
                    posted_debits: b.debits_posted.amount(),
                    posted_credits: b.credits_posted.amount(),
                    pending_debits: b.debits_pending.amount(),
                    pending_credits: b.credits_pending.amount(),
                    balance: b.posted_net().amount(),
                    available: b.available().amount(),
                })),
                Err(StoreError::NotFound(_)) => LedgerAnswer::Balance(None),
                Err(e) => return Err(store_err(e)),
            },
            LedgerRequest::OrderEntries { order_id } => LedgerAnswer::Entries(
                store
                    .entries_for_order(&order_id)
                    .await
                    .map_err(store_err)?
                    .into_iter()
                    .map(|e| EntryView {
                        entry_id: e.entry_id,
                        kind: e.kind,
                        postings: e
                            .postings
                            .into_iter()
                            .map(|p| PostingView {
                                account_id: p.account_id,
                                currency: p.currency,
                                debit: decimal(p.debit_minor, p.currency),
                                credit: decimal(p.credit_minor, p.currency),
                            })
                            .collect(),
                    })
                    .collect(),
            ),
            LedgerRequest::TrialBalance => {
                let mut out = BTreeMap::new();
                for (code, diff) in store.trial_balance().await.map_err(store_err)? {
                    let currency: Currency = code.parse().map_err(fatal)?;
                    out.insert(currency, decimal(diff, currency));
                }
                LedgerAnswer::TrialBalance(out)
            }
        })
    }
}
