//! Payment channels: one module per wire protocol, behind the [`Channel`] trait.
//!
//! Adapters keep wire types (`wire` submodules) apart from these domain types. Errors say
//! whether retrying can help: [`ChannelError::Transient`] (timeout, 5xx, "system busy") is
//! retried by Temporal; [`ChannelError::Declined`] is the channel's definite answer.

pub mod alipay;
pub mod statement;
pub mod wechat;

use std::collections::BTreeMap;
use std::sync::Arc;

use payflow_client::Money;
use serde::{Deserialize, Serialize};

/// What to ask a channel for when creating a payment.
#[derive(Debug, Clone)]
pub struct PrecreateRequest {
    /// Our order id, the channel's `out_trade_no`.
    pub out_trade_no: String,
    pub amount: Money,
    pub subject: String,
    /// Where the channel posts its asynchronous notification.
    pub notify_url: String,
    /// Absolute expiry (unix ms).
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecreateResponse {
    pub qr_code: String,
}

/// The channel's view of a trade, normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TradeState {
    /// The channel does not know the trade (e.g. QR not scanned yet).
    NotFound,
    WaitingForPayment,
    /// Paid (Alipay `TRADE_SUCCESS` / `TRADE_FINISHED`).
    Paid,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeQuery {
    pub state: TradeState,
    pub channel_trade_no: Option<String>,
    /// Set when paid: the amount the channel says it collected.
    pub paid_amount: Option<Money>,
}

/// Outcome of closing a trade at the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseOutcome {
    Closed,
    /// The channel refused to close because the trade was paid meanwhile.
    AlreadyPaid,
}

/// A refund of (part of) a paid trade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The paid trade's `out_trade_no`.
    pub out_trade_no: String,
    /// Our refund id, Alipay's `out_request_no`: the idempotency key (the same id again never
    /// refunds twice).
    pub out_request_no: String,
    pub amount: Money,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefundState {
    Succeeded,
    /// Accepted, or the answer was not definite: confirm with a refund query.
    Processing,
    /// The channel's definite refusal: no money moved for this refund.
    Failed {
        code: String,
        message: String,
    },
    /// The channel has no such refund (never received, or refused without a record).
    NotFound,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResult {
    pub state: RefundState,
    /// When succeeded: the amount this refund returned, as the channel reports it.
    pub refunded_amount: Option<Money>,
}

/// A payout (withdrawal) to an external account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutRequest {
    /// Our payout id = Alipay `out_biz_no` (idempotency key: submitting twice pays once).
    pub out_biz_no: String,
    pub amount: Money,
    /// The payee's channel account (Alipay logon id: e-mail or phone).
    pub payee_account: String,
    /// The payee's real name; the channel checks it against the account.
    pub payee_name: String,
    pub remark: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PayoutState {
    Succeeded {
        channel_order_id: String,
    },
    /// Accepted but not final, or the answer was not definite: confirm with a payout query.
    Processing,
    /// The channel's definite answer that the money was not (or no longer is) paid out.
    Failed {
        code: String,
        message: String,
    },
    /// The channel has no such payout.
    NotFound,
}

/// Where to download the channel's statement (bill) of one day: the input to reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatementUrl {
    /// A short-lived download address (Alipay's expires 30 seconds after it is issued: fetch
    /// it at once, ask again for a new one).
    Ready(String),
    /// The channel has not generated that day's statement yet: ask again later.
    NotReady,
    /// The channel has no statement for that day because the account had no trades (WeChat
    /// Pay's `NO_STATEMENT_EXIST`, as opposed to `STATEMENT_CREATING`): an empty statement.
    Empty,
}

pub use statement::{StatementBody, StatementFile};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Retrying may succeed: network error, timeout, 5xx, the channel's "system busy".
    #[error("channel unavailable: {0}")]
    Transient(String),
    /// The channel's definite refusal, with its own code and message.
    #[error("channel declined: {code}: {message}")]
    Declined { code: String, message: String },
    /// The channel's answer failed verification or could not be parsed: never trusted.
    #[error("channel response rejected: {0}")]
    Untrusted(String),
}

/// A verified asynchronous notification from a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNotice {
    pub notify_id: String,
    pub out_trade_no: String,
    pub channel_trade_no: Option<String>,
    pub trade_status: String,
    pub total_amount: Option<String>,
    /// When the channel says it sent the notification (unix ms).
    pub notify_time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticeError {
    #[error("malformed notification: {0}")]
    Malformed(String),
    #[error("notification signature does not verify")]
    BadSignature,
    #[error("notification is for another app id")]
    WrongApp,
}

/// One payment channel protocol.
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    fn name(&self) -> &str;
    async fn precreate(&self, req: &PrecreateRequest) -> Result<PrecreateResponse, ChannelError>;
    async fn query(&self, out_trade_no: &str) -> Result<TradeQuery, ChannelError>;
    async fn close(&self, out_trade_no: &str) -> Result<CloseOutcome, ChannelError>;
    /// Refunds (part of) a paid trade; idempotent by `out_request_no`.
    async fn refund(&self, req: &RefundRequest) -> Result<RefundResult, ChannelError>;
    async fn query_refund(
        &self,
        out_trade_no: &str,
        out_request_no: &str,
    ) -> Result<RefundResult, ChannelError>;
    /// Pays out to an external account; idempotent by `out_biz_no`.
    async fn payout(&self, req: &PayoutRequest) -> Result<PayoutState, ChannelError>;
    async fn query_payout(&self, out_biz_no: &str) -> Result<PayoutState, ChannelError>;
    /// The download address of the trade statement of `date`, a calendar day in the channel's
    /// time zone (Beijing time for Alipay).
    async fn statement_url(&self, date: chrono::NaiveDate) -> Result<StatementUrl, ChannelError>;
    /// Opens the statement of `date` for reading: asks for its address
    /// ([`Channel::statement_url`]) and starts the download with the channel's own HTTP client.
    /// The body streams as it arrives (never held whole) and, where the channel gives a hash,
    /// is checked against it by the time it is read to the end. The default: the channel has
    /// no statement download.
    async fn open_statement(&self, date: chrono::NaiveDate) -> Result<StatementFile, ChannelError> {
        let _ = date;
        Err(ChannelError::Declined {
            code: "payflow.UNSUPPORTED".into(),
            message: format!("channel {} has no statement download", self.name()),
        })
    }
    /// Verifies an incoming notification (form or body) and extracts its fields.
    fn verify_notice(
        &self,
        params: &BTreeMap<String, String>,
    ) -> Result<VerifiedNotice, NoticeError>;
    /// Verifies an incoming notification as it arrived over HTTP: its headers (names in any
    /// case) and raw body. The default reads the body as a form and calls
    /// [`Channel::verify_notice`] (Alipay); channels that sign in headers and send JSON
    /// (WeChat Pay v3) override it.
    fn verify_notice_http(
        &self,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<VerifiedNotice, NoticeError> {
        let _ = headers;
        let params: BTreeMap<String, String> = serde_urlencoded::from_bytes(body)
            .map_err(|e| NoticeError::Malformed(format!("not a form body: {e}")))?;
        self.verify_notice(&params)
    }
    /// The exact acknowledgement body the channel expects.
    fn ack_body(&self) -> &'static str;
}

/// The configured channels by name.
#[derive(Clone, Default)]
pub struct Channels {
    by_name: BTreeMap<String, Arc<dyn Channel>>,
}

impl Channels {
    pub fn insert(&mut self, channel: Arc<dyn Channel>) {
        self.by_name.insert(channel.name().to_string(), channel);
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Channel>> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}
