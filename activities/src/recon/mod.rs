//! Reconciliation (对账): the channel's statement of a day against our own records.
//!
//! - [`line`]: the standard statement line every channel format is normalised into, and the
//!   typed errors of a malformed statement (each names its line number);
//! - [`alipay`], [`wechat`]: streaming parsers of the two statement formats (the sandbox's
//!   Alipay-style trade bill, WeChat Pay's `ALL` trade bill). They read one line at a time from
//!   any [`tokio::io::AsyncBufRead`]; a statement is never held in memory whole;
//! - [`compare`]: the API the reconciliation workflow's activities call (open a run, load the
//!   statement, compare both ways, confirm candidates with a channel query, record, report),
//!   with its serde types;
//! - the tables and the set-based comparison queries live in `store::recon`, which also
//!   documents how cross-day transactions and reruns are resolved.

pub mod alipay;
pub mod compare;
pub mod line;
mod reader;
pub mod wechat;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufRead;

pub use compare::{
    Candidate, ChannelFeeRate, ChannelView, Checked, CompareSummary, Discrepancy, DiscrepancyKind,
    KindCount, LoadSummary, ReconReport, ReconRun, RecordSummary, Resolution, RunState, Side,
    Subject, Totals, Values, Verdict,
};
pub use line::{LineKind, LineStatus, StatementError, StatementLine};

use crate::store::StoreError;

/// Which statement format a channel serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatementFormat {
    /// The sandbox's Alipay-style trade bill (`worker/src/sandbox/alipay/bill.rs`): one CSV row
    /// per trade paid that day, its refunds as a running total.
    AlipayTrade,
    /// WeChat Pay's trade bill of type `ALL`: one row per payment and one per refund, fields
    /// prefixed with a backtick, two summary lines at the end.
    WechatTradeAll,
}

impl StatementFormat {
    /// Whether the format lists every refund on its own line (see
    /// [`StatementParser::itemised_refunds`]).
    pub fn itemised_refunds(self) -> bool {
        match self {
            StatementFormat::AlipayTrade => false,
            StatementFormat::WechatTradeAll => true,
        }
    }
}

/// A statement being read, whatever its format.
pub enum StatementParser<R> {
    Alipay(alipay::AlipayStatement<R>),
    Wechat(wechat::WechatStatement<R>),
}

impl<R: AsyncBufRead + Unpin> StatementParser<R> {
    /// Reads the header of a statement of `format` served by `channel` (our channel name).
    pub async fn open(
        format: StatementFormat,
        channel: &str,
        reader: R,
    ) -> Result<Self, StatementError> {
        Ok(match format {
            StatementFormat::AlipayTrade => {
                StatementParser::Alipay(alipay::AlipayStatement::open(channel, reader).await?)
            }
            StatementFormat::WechatTradeAll => {
                StatementParser::Wechat(wechat::WechatStatement::open(channel, reader).await?)
            }
        })
    }

    /// The next line, `None` at the end of the statement.
    pub async fn next_line(&mut self) -> Result<Option<StatementLine>, StatementError> {
        match self {
            StatementParser::Alipay(p) => p.next_line().await,
            StatementParser::Wechat(p) => p.next_line().await,
        }
    }

    /// Whether the format lists every refund on its own line, dated when the channel accepted
    /// it (WeChat), rather than as a running total on the trade's line (the sandbox's Alipay
    /// bill). Only then can our refunds of the day be looked for in the day's statement.
    pub fn itemised_refunds(&self) -> bool {
        match self {
            StatementParser::Alipay(_) => StatementFormat::AlipayTrade.itemised_refunds(),
            StatementParser::Wechat(_) => StatementFormat::WechatTradeAll.itemised_refunds(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("statement: {0}")]
    Statement(#[from] StatementError),
    /// `finish` was called while candidates still wait for their channel query.
    #[error("{0} candidates have not been checked with the channel yet")]
    Unchecked(u64),
    #[error("no reconciliation run {0}")]
    NoRun(String),
}
