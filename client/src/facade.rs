//! `Payflow`: the typed facade services use to start and inspect payflow workflows.

use temporalio_client::errors::{
    WorkflowQueryError, WorkflowStartError, WorkflowUpdateError, WorkflowUpdateWithStartError,
};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, WorkflowExecuteUpdateOptions,
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions, WorkflowStartOptions,
    WorkflowUpdateWithStartOptions,
};

use temporalio_common::HasWorkflowDefinition;

use std::collections::BTreeMap;

use rust_decimal::Decimal;

use crate::codec::EncryptionCodec;
use crate::definitions::{
    ClosePayment, LedgerReadWorkflow, NotificationStatusQuery, NotificationWorkflow,
    PaymentStatusQuery, PaymentWorkflow, PayoutStatusQuery, PayoutWorkflow, PrepayUpdate,
    RefundStatusQuery, RefundWorkflow, ResolvePayment, ReviewPayout, TransferWorkflow, task_queues,
};
use crate::ids::{
    EventId, MerchantId, OrderNo, PayoutNo, RefundNo, TransferNo, notification_workflow_id,
    payment_workflow_id, payout_workflow_id, refund_workflow_id, transfer_workflow_id,
};
use crate::ledger::{AccountBalanceView, EntryView, LedgerAnswer, LedgerRequest};
use crate::money::Currency;
use crate::notification::{NotificationRequest, NotificationStatus, Priority};
use crate::payment::{PayState, PaymentRequest, PaymentStatus, Prepay, RequestError, Resolution};
use crate::refund::{RefundKind, RefundRequest, RefundRequestError, RefundStatus};
use crate::transfer::{
    PayoutDecision, PayoutRequest, PayoutStatus, TransferRequest, TransferStatus,
};
use crate::versioned::Versioned;

/// Errors a service can act on. Server-side details are kept as text, never secrets.
#[derive(Debug, thiserror::Error)]
pub enum PayflowError {
    #[error("invalid request: {0}")]
    Invalid(#[from] RequestError),
    #[error("invalid refund: {0}")]
    InvalidRefund(#[from] RefundRequestError),
    #[error("invalid reconciliation request: {0}")]
    InvalidRecon(#[from] crate::recon::ReconRequestError),
    #[error("payment rejected: {0}")]
    Rejected(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("cannot reach Temporal at {address}: {message}")]
    Connect { address: String, message: String },
    #[error("temporal: {0}")]
    Temporal(String),
}

/// Typed access to payflow. Cheap to clone.
#[derive(Clone)]
pub struct Payflow {
    client: Client,
    /// Whether workflows are started with a readable summary (see [`Payflow::redact_summaries`]).
    summaries: bool,
}

/// How [`Payflow::connect_with`] connects.
#[derive(Debug, Clone, Default)]
pub struct PayflowOptions {
    /// Encrypts every payload this client writes to Temporal (inputs, signals, updates, query
    /// arguments) and decrypts what it reads (results, query answers). Give it the worker's
    /// keyring: at least every key the payloads it reads were encrypted under.
    pub codec: Option<EncryptionCodec>,
}

impl PayflowOptions {
    /// With payload encryption by `codec`.
    pub fn codec(mut self, codec: EncryptionCodec) -> Self {
        self.codec = Some(codec);
        self
    }
}

impl Payflow {
    /// Connects to the Temporal frontend at `address` (e.g. `http://127.0.0.1:7233`), without
    /// payload encryption.
    pub async fn connect(address: &str, namespace: &str) -> Result<Self, PayflowError> {
        Self::connect_with(address, namespace, PayflowOptions::default()).await
    }

    /// Connects with `options`, e.g. the payload codec of a deployment that encrypts Temporal
    /// history (`PayflowOptions::default().codec(codec)`). With a codec, workflows are started
    /// without a readable summary ([`Payflow::redact_summaries`]).
    pub async fn connect_with(
        address: &str,
        namespace: &str,
        options: PayflowOptions,
    ) -> Result<Self, PayflowError> {
        let connect_err = |message: String| PayflowError::Connect {
            address: address.to_string(),
            message,
        };
        let url = url::Url::parse(address).map_err(|e| connect_err(e.to_string()))?;
        let conn = Connection::connect(
            ConnectionOptions::new(url)
                .identity("payflow-client")
                .build(),
        )
        .await
        .map_err(|e| connect_err(e.to_string()))?;
        let client_options = match &options.codec {
            Some(codec) => ClientOptions::new(namespace)
                .data_converter(codec.data_converter())
                .build(),
            None => ClientOptions::new(namespace).build(),
        };
        let client = Client::new(conn, client_options).map_err(|e| connect_err(e.to_string()))?;
        let payflow = Payflow::from_client(client);
        Ok(match options.codec {
            Some(_) => payflow.redact_summaries(),
            None => payflow,
        })
    }

    /// Over a client connected elsewhere (its data converter, with or without a codec, is
    /// used as it is). Call [`Payflow::redact_summaries`] when that client encrypts payloads.
    pub fn from_client(client: Client) -> Self {
        Payflow {
            client,
            summaries: true,
        }
    }

    /// Starts workflows without the one-line summary shown in the Temporal UI. The SDK sends
    /// the summary of a workflow start unencoded, so with payload encryption it would be the
    /// one readable copy of amounts, order numbers and accounts in history; workflows still
    /// describe themselves through their (encrypted) details and `status` query.
    pub fn redact_summaries(mut self) -> Self {
        self.summaries = false;
        self
    }

    /// `text` as a start summary, unless summaries are redacted.
    pub(crate) fn summary(&self, text: impl FnOnce() -> String) -> Option<String> {
        self.summaries.then(text)
    }

    pub fn temporal(&self) -> &Client {
        &self.client
    }

    /// Starts (or joins) the payment for `req.merchant_order_no` and returns the channel's
    /// prepay credential as soon as it is known.
    ///
    /// Idempotent by merchant order no: a repeated call returns the same prepay, also after the
    /// payment finished; the same order no with a different amount, currency or product is a
    /// [`PayflowError::Conflict`].
    pub async fn pay(&self, req: PaymentRequest) -> Result<Prepay, PayflowError> {
        req.validate()?;
        let workflow_id = payment_workflow_id(&req.merchant_id, &req.merchant_order_no);
        let options = WorkflowUpdateWithStartOptions::new(
            task_queues::PAYMENTS,
            workflow_id.clone(),
            // A running payment with this id is joined, never duplicated ...
            WorkflowIdConflictPolicy::UseExisting,
        )
        // ... and a completed one is never started again (the SDK default would allow it).
        // Only a run that failed (a request refused before anything was created) may be
        // replaced by a corrected request.
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicateFailedOnly)
        .maybe_static_summary(self.summary(|| {
            format!(
                "pay {} {} order {}",
                req.merchant_id, req.amount, req.merchant_order_no
            )
        }))
        .build();
        // Under load the server may abort an in-flight update or refuse more than its limit
        // of concurrent updates per workflow ("try again"); asking again is safe because the
        // payment is idempotent by its id. Jittered so a crowd of callers spreads out.
        let mut attempt = 0u32;
        let result = loop {
            let result = self
                .client
                .execute_update_with_start_workflow(
                    PaymentWorkflow,
                    Versioned::current(req.clone()),
                    PrepayUpdate,
                    req.clone(),
                    options.clone(),
                )
                .await;
            match &result {
                Err(e) if is_retryable(e) && attempt < 10 => {
                    attempt += 1;
                    tracing::debug!(%workflow_id, attempt, error = %e, "pay: the server asked to try again");
                    let base = 100u64 << attempt.min(5);
                    let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * base / 255;
                    tokio::time::sleep(std::time::Duration::from_millis(base + jitter)).await;
                }
                _ => break result,
            }
        };
        match result {
            Ok(prepay) => Ok(prepay),
            Err(WorkflowUpdateWithStartError::Start(WorkflowStartError::AlreadyStarted {
                ..
            })) => self.existing_prepay(&req).await,
            Err(WorkflowUpdateWithStartError::Update(e)) => Err(update_error(e)),
            Err(e) => Err(PayflowError::Temporal(e.to_string())),
        }
    }

    /// The payment already finished: answer from its final status.
    async fn existing_prepay(&self, req: &PaymentRequest) -> Result<Prepay, PayflowError> {
        let status = self
            .payment(&req.merchant_id, &req.merchant_order_no)
            .await?;
        if status.amount != req.amount {
            return Err(PayflowError::Conflict(format!(
                "order {} exists with amount {}",
                req.merchant_order_no, status.amount
            )));
        }
        match status.prepay {
            Some(p) => Ok(p),
            None => Err(PayflowError::Rejected(
                status
                    .failure
                    .map(|f| format!("{}: {}", f.code, f.message))
                    .unwrap_or_else(|| format!("payment ended in state {}", status.state)),
            )),
        }
    }

    /// The payment's current status (also after it finished).
    pub async fn payment(
        &self,
        merchant: &MerchantId,
        order_no: &OrderNo,
    ) -> Result<PaymentStatus, PayflowError> {
        let id = payment_workflow_id(merchant, order_no);
        self.client
            .get_workflow_handle::<PaymentWorkflow>(id.clone())
            .query(PaymentStatusQuery, (), WorkflowQueryOptions::default())
            .await
            .map_err(|e| query_error(&id, e))
    }

    /// Closes an unpaid payment (merchant-initiated). Returns the final state: `Closed`, or
    /// `Succeeded` if the customer paid before the channel closed the trade.
    pub async fn close_payment(
        &self,
        merchant: &MerchantId,
        order_no: &OrderNo,
    ) -> Result<PayState, PayflowError> {
        let id = payment_workflow_id(merchant, order_no);
        self.client
            .get_workflow_handle::<PaymentWorkflow>(id.clone())
            .execute_update(ClosePayment, (), WorkflowExecuteUpdateOptions::default())
            .await
            .map_err(update_error)
    }

    /// An operator's decision on a payment in `Exception`: keep the money paid, or return it.
    pub async fn resolve_payment(
        &self,
        merchant: &MerchantId,
        order_no: &OrderNo,
        resolution: Resolution,
    ) -> Result<(), PayflowError> {
        let id = payment_workflow_id(merchant, order_no);
        self.client
            .get_workflow_handle::<PaymentWorkflow>(id.clone())
            .signal(ResolvePayment, resolution, Default::default())
            .await
            .map_err(|e| PayflowError::Temporal(e.to_string()))
    }

    /// Starts (or joins) a refund of a paid order. Idempotent by merchant refund no: the same
    /// refund no is one refund, also after it finished. Returns at once; follow it with
    /// [`Payflow::refund_status`] or wait for it with [`Payflow::refund_result`].
    pub async fn refund(&self, mut req: RefundRequest) -> Result<(), PayflowError> {
        req.validate()?;
        // Only payflow itself refunds late or exception payments.
        req.kind = RefundKind::Merchant;
        let id = refund_workflow_id(&req.merchant_id, &req.merchant_refund_no);
        let summary = self.summary(|| {
            format!(
                "refund {} {} of order {}",
                req.merchant_id, req.amount, req.merchant_order_no
            )
        });
        self.start_once(RefundWorkflow, req, task_queues::PAYMENTS, id, summary)
            .await
    }

    /// The refund's current status (also after it finished).
    pub async fn refund_status(
        &self,
        merchant: &MerchantId,
        refund_no: &RefundNo,
    ) -> Result<RefundStatus, PayflowError> {
        let id = refund_workflow_id(merchant, refund_no);
        self.client
            .get_workflow_handle::<RefundWorkflow>(id.clone())
            .query(RefundStatusQuery, (), WorkflowQueryOptions::default())
            .await
            .map_err(|e| query_error(&id, e))
    }

    /// Waits until the refund is definite (`Succeeded` or `Failed`) and returns it.
    pub async fn refund_result(
        &self,
        merchant: &MerchantId,
        refund_no: &RefundNo,
    ) -> Result<RefundStatus, PayflowError> {
        self.result::<RefundWorkflow>(refund_workflow_id(merchant, refund_no))
            .await
    }

    /// Asks payflow to deliver an event to a merchant's notify URL (idempotent by event id).
    pub async fn notify(&self, req: NotificationRequest) -> Result<(), PayflowError> {
        let id = notification_workflow_id(&req.merchant_id, &req.event_id);
        // An event whose first try its business workflow made and lost starts where a
        // Notification that failed its own first try continues: on the retry queue.
        let queue = match req.priority {
            _ if req.resume.as_ref().is_some_and(|r| r.on_retry_queue) => task_queues::NOTIFY_RETRY,
            Priority::Realtime => task_queues::NOTIFY_REALTIME,
            Priority::Batch => task_queues::NOTIFY_BATCH,
        };
        let summary = self.summary(|| format!("{} to {}", req.event_type, req.merchant_id));
        self.start_once(
            NotificationWorkflow,
            Versioned::current(req),
            queue,
            id,
            summary,
        )
        .await
    }

    /// Moves money between two wallets (idempotent by transfer no). Returns at once; wait for
    /// the outcome with [`Payflow::transfer_result`].
    pub async fn transfer(&self, req: TransferRequest) -> Result<(), PayflowError> {
        let id = transfer_workflow_id(&req.transfer_no);
        let summary =
            self.summary(|| format!("transfer {} from {} to {}", req.amount, req.from, req.to));
        self.start_once(TransferWorkflow, req, task_queues::PAYMENTS, id, summary)
            .await
    }

    pub async fn transfer_result(
        &self,
        transfer_no: &TransferNo,
    ) -> Result<TransferStatus, PayflowError> {
        self.result::<TransferWorkflow>(transfer_workflow_id(transfer_no))
            .await
    }

    /// Pays out of a merchant's balance to an external account (idempotent by payout no: one
    /// payout no never pays twice). Returns at once.
    pub async fn payout(&self, req: PayoutRequest) -> Result<(), PayflowError> {
        let id = payout_workflow_id(&req.merchant_id, &req.payout_no);
        let summary = self.summary(|| {
            format!(
                "payout {} for {} to {}",
                req.amount, req.merchant_id, req.channel
            )
        });
        // Payouts are batch work: they must never compete with checkouts for worker slots.
        self.start_once(PayoutWorkflow, req, task_queues::PAYMENTS, id, summary)
            .await
    }

    pub async fn payout_status(
        &self,
        merchant: &MerchantId,
        payout_no: &PayoutNo,
    ) -> Result<PayoutStatus, PayflowError> {
        let id = payout_workflow_id(merchant, payout_no);
        self.client
            .get_workflow_handle::<PayoutWorkflow>(id.clone())
            .query(PayoutStatusQuery, (), WorkflowQueryOptions::default())
            .await
            .map_err(|e| query_error(&id, e))
    }

    pub async fn payout_result(
        &self,
        merchant: &MerchantId,
        payout_no: &PayoutNo,
    ) -> Result<PayoutStatus, PayflowError> {
        self.result::<PayoutWorkflow>(payout_workflow_id(merchant, payout_no))
            .await
    }

    /// An operator's review of a payout waiting for approval.
    pub async fn review_payout(
        &self,
        merchant: &MerchantId,
        payout_no: &PayoutNo,
        decision: PayoutDecision,
    ) -> Result<(), PayflowError> {
        let id = payout_workflow_id(merchant, payout_no);
        self.client
            .get_workflow_handle::<PayoutWorkflow>(id)
            .signal(ReviewPayout, decision, Default::default())
            .await
            .map_err(|e| PayflowError::Temporal(e.to_string()))
    }

    /// An account's balance (`None`: no such account), e.g.
    /// `accounting`'s `merchant:{merchant}:payable` or `wallet:{owner}`.
    pub async fn account_balance(
        &self,
        account_id: &str,
    ) -> Result<Option<AccountBalanceView>, PayflowError> {
        match self
            .read_ledger(LedgerRequest::Balance {
                account_id: account_id.to_string(),
            })
            .await?
        {
            LedgerAnswer::Balance(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// The journal entries of one order (payflow's order id), oldest first.
    pub async fn order_entries(&self, order_id: &str) -> Result<Vec<EntryView>, PayflowError> {
        match self
            .read_ledger(LedgerRequest::OrderEntries {
                order_id: order_id.to_string(),
            })
            .await?
        {
            LedgerAnswer::Entries(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    /// Debits minus credits per currency over every account: all zero in a sound ledger.
    pub async fn trial_balance(&self) -> Result<BTreeMap<Currency, Decimal>, PayflowError> {
        match self.read_ledger(LedgerRequest::TrialBalance).await? {
            LedgerAnswer::TrialBalance(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// One ledger read as a short workflow: services reach the books through Temporal with
    /// the access they already have, never through the database.
    async fn read_ledger(&self, req: LedgerRequest) -> Result<LedgerAnswer, PayflowError> {
        let id = format!("ledger-read/{}", uuid::Uuid::new_v4().simple());
        let options = WorkflowStartOptions::new(task_queues::PAYMENTS, id.clone())
            .maybe_static_summary(self.summary(|| "ledger read".to_string()))
            .build();
        let handle = self
            .client
            .start_workflow(LedgerReadWorkflow, req, options)
            .await
            .map_err(|e| PayflowError::Temporal(e.to_string()))?;
        handle
            .get_result(Default::default())
            .await
            .map_err(|e| PayflowError::Temporal(e.to_string()))
    }

    /// Starts `id` unless a workflow with that id runs or ran: business ids are idempotency
    /// keys, so a repeated call joins the first, also after it finished.
    pub(crate) async fn start_once<W>(
        &self,
        workflow: W,
        input: W::Input,
        queue: &str,
        id: String,
        summary: Option<String>,
    ) -> Result<(), PayflowError>
    where
        W: HasWorkflowDefinition,
        W::Input: Send,
    {
        let options = WorkflowStartOptions::new(queue, id)
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .maybe_static_summary(summary)
            // Eager start: when this client is a worker's (a callback started by a payment),
            // the server hands the first workflow task back in its answer instead of queueing
            // it for a poller. Any other client asks for nothing (the SDK drops the request
            // when no local worker has a free slot).
            .enable_eager_workflow_start(true)
            .build();
        match self.client.start_workflow(workflow, input, options).await {
            Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(()),
            Err(e) => Err(PayflowError::Temporal(e.to_string())),
        }
    }

    /// Waits for a workflow's result.
    pub(crate) async fn result<W>(&self, id: String) -> Result<W::Output, PayflowError>
    where
        W: HasWorkflowDefinition,
    {
        self.client
            .get_workflow_handle::<W>(id)
            .get_result(Default::default())
            .await
            .map_err(|e| PayflowError::Temporal(e.to_string()))
    }

    pub async fn notification(
        &self,
        merchant: &MerchantId,
        event_id: &EventId,
    ) -> Result<NotificationStatus, PayflowError> {
        let id = notification_workflow_id(merchant, event_id);
        self.client
            .get_workflow_handle::<NotificationWorkflow>(id.clone())
            .query(NotificationStatusQuery, (), WorkflowQueryOptions::default())
            .await
            .map_err(|e| query_error(&id, e))
    }
}

fn unexpected(answer: LedgerAnswer) -> PayflowError {
    PayflowError::Temporal(format!("unexpected ledger answer {answer:?}"))
}

/// The server's "try again": `UNAVAILABLE` (an update aborted under load) or
/// `RESOURCE_EXHAUSTED` (too many updates in flight on one workflow).
fn is_retryable(e: &WorkflowUpdateWithStartError) -> bool {
    use temporalio_client::tonic::Code;
    match e {
        WorkflowUpdateWithStartError::Rpc(status)
        | WorkflowUpdateWithStartError::Update(WorkflowUpdateError::Rpc(status)) => {
            matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
        }
        _ => false,
    }
}

pub(crate) fn query_error(id: &str, e: WorkflowQueryError) -> PayflowError {
    match e {
        WorkflowQueryError::NotFound(_) => PayflowError::NotFound(id.to_string()),
        other => PayflowError::Temporal(other.to_string()),
    }
}

fn update_error(e: WorkflowUpdateError) -> PayflowError {
    match e {
        WorkflowUpdateError::Failed(failure) => {
            let msg = failure.message.clone();
            match msg.strip_prefix("conflict: ") {
                Some(rest) => PayflowError::Conflict(rest.to_string()),
                None => PayflowError::Rejected(msg),
            }
        }
        WorkflowUpdateError::NotFound(_) => PayflowError::NotFound("payment workflow".into()),
        other => PayflowError::Temporal(other.to_string()),
    }
}
