//! payflow's business metrics, recorded through the Temporal SDK's meter so they are served
//! by the same Prometheus endpoint as the SDK's own (`[telemetry] metrics_listen`).
//!
//! The worker starts the SDK's Prometheus exporter, hands its meter to the SDK runtime and to
//! [`Metrics::new`]; everything else holds a [`Metrics`] (in `Services` and in the `Store`)
//! and calls its typed methods where things happen. Without an exporter it is
//! [`Metrics::disabled`] and records nothing.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `payflow_payment_transitions_total` | counter | `channel`, `from` (`none` for a new order), `to` |
//! | `payflow_notification_attempts_total` | counter | `merchant`, `outcome` (`delivered`, `failed`, `deferred`) |
//! | `payflow_notification_attempt_duration_seconds` | histogram | `merchant`, `outcome` (`delivered`, `failed`) |
//! | `payflow_channel_call_duration_seconds` | histogram | `channel`, `method` |
//! | `payflow_channel_call_errors_total` | counter | `channel`, `method`, `kind` (`transient`, `declined`, `untrusted`) |
//! | `payflow_ledger_entries_total` | counter | `rule` (the entry kind, e.g. `payment_succeeded`) |
//! | `payflow_ledger_amount_minor_total` | counter | `rule`, `currency` (debits of the entries, minor units) |
//!
//! Labels are bounded by configuration (channels, merchants) or by code (states, methods,
//! rules); order numbers and ids never become labels. Order transitions and ledger entries are
//! counted by the store after their transaction commits, and only when this call wrote them
//! (a retried activity that finds the work done counts nothing).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use payflow_client::PayState;
use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, HistogramF64, MetricAttributes, MetricKeyValue, MetricParameters,
    NewAttributes,
};

use crate::channels::{
    Channel, ChannelError, CloseOutcome, NoticeError, PayoutRequest, PayoutState, PrecreateRequest,
    PrecreateResponse, RefundRequest, RefundResult, StatementUrl, TradeQuery, VerifiedNotice,
};
use crate::store::ledger::JournalEntry;

pub const PAYMENT_TRANSITIONS: &str = "payflow_payment_transitions_total";
pub const NOTIFICATION_ATTEMPTS: &str = "payflow_notification_attempts_total";
pub const NOTIFICATION_DURATION: &str = "payflow_notification_attempt_duration_seconds";
pub const CHANNEL_CALL_DURATION: &str = "payflow_channel_call_duration_seconds";
pub const CHANNEL_CALL_ERRORS: &str = "payflow_channel_call_errors_total";
pub const LEDGER_ENTRIES: &str = "payflow_ledger_entries_total";
pub const LEDGER_AMOUNT_MINOR: &str = "payflow_ledger_amount_minor_total";

/// Bucket bounds (seconds) of payflow's latency histograms: HTTP calls to channels and
/// merchants, from a few milliseconds to the 30 s a slow merchant may take.
const LATENCY_BUCKETS_SECONDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The exporter's bucket overrides for payflow's histograms (the SDK's defaults are in
/// milliseconds); pass them as `PrometheusExporterOptions::histogram_bucket_overrides`.
pub fn histogram_buckets() -> HashMap<String, Vec<f64>> {
    [NOTIFICATION_DURATION, CHANNEL_CALL_DURATION]
        .into_iter()
        .map(|name| (name.to_string(), LATENCY_BUCKETS_SECONDS.to_vec()))
        .collect()
}

/// How one notification delivery went, as counted by `payflow_notification_attempts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyOutcome {
    /// Sent, and the merchant acknowledged it.
    Delivered,
    /// Sent (or tried to), and the merchant did not acknowledge it.
    Failed,
    /// Not attempted: the merchant's concurrency bound or circuit breaker said wait.
    Deferred,
}

impl NotifyOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOutcome::Delivered => "delivered",
            NotifyOutcome::Failed => "failed",
            NotifyOutcome::Deferred => "deferred",
        }
    }
}

/// Handle on payflow's metrics. Cheap to clone; [`Metrics::disabled`] (the default) records
/// nothing.
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<Instruments>>);

struct Instruments {
    meter: Arc<dyn CoreMeter>,
    payment_transitions: Counter,
    notification_attempts: Counter,
    notification_duration: HistogramF64,
    channel_call_duration: HistogramF64,
    channel_call_errors: Counter,
    ledger_entries: Counter,
    ledger_amount_minor: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Metrics(enabled)",
            None => "Metrics(disabled)",
        })
    }
}

fn params(name: &'static str, description: &'static str) -> MetricParameters {
    MetricParameters {
        name: name.into(),
        description: description.into(),
        unit: "".into(),
    }
}

impl Metrics {
    /// Creates payflow's instruments on `meter` (the SDK's Prometheus meter in the worker).
    pub fn new(meter: Arc<dyn CoreMeter>) -> Metrics {
        let i = Instruments {
            payment_transitions: meter.counter(params(
                PAYMENT_TRANSITIONS,
                "Payment order state changes written, by channel and from/to state",
            )),
            notification_attempts: meter.counter(params(
                NOTIFICATION_ATTEMPTS,
                "Merchant callback deliveries by merchant and outcome",
            )),
            notification_duration: meter.histogram_f64(params(
                NOTIFICATION_DURATION,
                "Duration of merchant callback attempts in seconds",
            )),
            channel_call_duration: meter.histogram_f64(params(
                CHANNEL_CALL_DURATION,
                "Duration of payment channel calls in seconds",
            )),
            channel_call_errors: meter.counter(params(
                CHANNEL_CALL_ERRORS,
                "Failed payment channel calls by channel, method and kind",
            )),
            ledger_entries: meter.counter(params(
                LEDGER_ENTRIES,
                "Journal entries posted, by accounting rule",
            )),
            ledger_amount_minor: meter.counter(params(
                LEDGER_AMOUNT_MINOR,
                "Amount posted (sum of debits) in minor units, by accounting rule and currency",
            )),
            meter,
        };
        Metrics(Some(Arc::new(i)))
    }

    /// Records nothing.
    pub fn disabled() -> Metrics {
        Metrics(None)
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// A new order (`from: None`) or an order state change, after it was committed.
    pub fn payment_moved(&self, channel: &str, from: Option<PayState>, to: PayState) {
        let Some(i) = &self.0 else { return };
        let attrs = labels(
            i,
            [
                ("channel", channel.to_string()),
                ("from", from.map_or("none", PayState::as_str).to_string()),
                ("to", to.as_str().to_string()),
            ],
        );
        i.payment_transitions.add(1, &attrs);
    }

    /// One delivery of a merchant callback; `latency` for attempts actually made.
    pub fn notification(&self, merchant: &str, outcome: NotifyOutcome, latency: Option<Duration>) {
        let Some(i) = &self.0 else { return };
        let attrs = labels(
            i,
            [
                ("merchant", merchant.to_string()),
                ("outcome", outcome.as_str().to_string()),
            ],
        );
        i.notification_attempts.add(1, &attrs);
        if let Some(latency) = latency {
            i.notification_duration
                .record(latency.as_secs_f64(), &attrs);
        }
    }

    /// One call to a channel: its duration, and its error if it failed.
    pub fn channel_call(
        &self,
        channel: &str,
        method: &'static str,
        elapsed: Duration,
        error: Option<&ChannelError>,
    ) {
        let Some(i) = &self.0 else { return };
        let attrs = labels(
            i,
            [
                ("channel", channel.to_string()),
                ("method", method.to_string()),
            ],
        );
        i.channel_call_duration
            .record(elapsed.as_secs_f64(), &attrs);
        if let Some(e) = error {
            let kind = match e {
                ChannelError::Transient(_) => "transient",
                ChannelError::Declined { .. } => "declined",
                ChannelError::Untrusted(_) => "untrusted",
            };
            let attrs = labels(
                i,
                [
                    ("channel", channel.to_string()),
                    ("method", method.to_string()),
                    ("kind", kind.to_string()),
                ],
            );
            i.channel_call_errors.add(1, &attrs);
        }
    }

    /// A journal entry this process posted, after its transaction committed.
    pub fn entry_posted(&self, entry: &JournalEntry) {
        let Some(i) = &self.0 else { return };
        let rule = entry.kind.clone();
        i.ledger_entries
            .add(1, &labels(i, [("rule", rule.clone())]));
        let mut debits: BTreeMap<&str, i64> = BTreeMap::new();
        for p in &entry.postings {
            *debits.entry(p.currency.code()).or_default() += p.debit_minor;
        }
        for (currency, minor) in debits {
            let attrs = labels(
                i,
                [("rule", rule.clone()), ("currency", currency.to_string())],
            );
            i.ledger_amount_minor
                .add(u64::try_from(minor).unwrap_or(0), &attrs);
        }
    }

    /// `channel`, measured: every call's duration and errors are recorded under its name.
    /// Returned unchanged when metrics are disabled.
    pub fn measure_channel(&self, channel: Arc<dyn Channel>) -> Arc<dyn Channel> {
        if self.0.is_none() {
            return channel;
        }
        Arc::new(Measured {
            inner: channel,
            metrics: self.clone(),
        })
    }
}

fn labels<const N: usize>(i: &Instruments, kvs: [(&'static str, String); N]) -> MetricAttributes {
    i.meter.new_attributes(NewAttributes::new(
        kvs.into_iter()
            .map(|(k, v)| MetricKeyValue::new(k, v))
            .collect(),
    ))
}

/// A channel whose calls are timed and whose errors are counted.
struct Measured {
    inner: Arc<dyn Channel>,
    metrics: Metrics,
}

impl Measured {
    async fn timed<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<T, ChannelError>>,
    ) -> Result<T, ChannelError> {
        let start = Instant::now();
        let result = call.await;
        self.metrics.channel_call(
            self.inner.name(),
            method,
            start.elapsed(),
            result.as_ref().err(),
        );
        result
    }
}

#[async_trait::async_trait]
impl Channel for Measured {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn precreate(&self, req: &PrecreateRequest) -> Result<PrecreateResponse, ChannelError> {
        self.timed("precreate", self.inner.precreate(req)).await
    }

    async fn query(&self, out_trade_no: &str) -> Result<TradeQuery, ChannelError> {
        self.timed("query", self.inner.query(out_trade_no)).await
    }

    async fn close(&self, out_trade_no: &str) -> Result<CloseOutcome, ChannelError> {
        self.timed("close", self.inner.close(out_trade_no)).await
    }

    async fn refund(&self, req: &RefundRequest) -> Result<RefundResult, ChannelError> {
        self.timed("refund", self.inner.refund(req)).await
    }

    async fn query_refund(
        &self,
        out_trade_no: &str,
        out_request_no: &str,
    ) -> Result<RefundResult, ChannelError> {
        self.timed(
            "query_refund",
            self.inner.query_refund(out_trade_no, out_request_no),
        )
        .await
    }

    async fn payout(&self, req: &PayoutRequest) -> Result<PayoutState, ChannelError> {
        self.timed("payout", self.inner.payout(req)).await
    }

    async fn query_payout(&self, out_biz_no: &str) -> Result<PayoutState, ChannelError> {
        self.timed("query_payout", self.inner.query_payout(out_biz_no))
            .await
    }

    async fn statement_url(&self, date: chrono::NaiveDate) -> Result<StatementUrl, ChannelError> {
        self.timed("statement_url", self.inner.statement_url(date))
            .await
    }

    /// Timed as `statement_url`: the address query and the start of the download (the body
    /// streams afterwards, at the reader's pace).
    async fn open_statement(
        &self,
        date: chrono::NaiveDate,
    ) -> Result<crate::channels::StatementFile, ChannelError> {
        self.timed("statement_url", self.inner.open_statement(date))
            .await
    }

    fn verify_notice(
        &self,
        params: &BTreeMap<String, String>,
    ) -> Result<VerifiedNotice, NoticeError> {
        self.inner.verify_notice(params)
    }

    fn verify_notice_http(
        &self,
        headers: &BTreeMap<String, String>,
        body: &[u8],
    ) -> Result<VerifiedNotice, NoticeError> {
        self.inner.verify_notice_http(headers, body)
    }

    fn ack_body(&self) -> &'static str {
        self.inner.ack_body()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_records_nothing_and_keeps_the_channel() {
        let m = Metrics::disabled();
        assert!(!m.is_enabled());
        m.payment_moved("alipay", None, PayState::Created);
        m.notification("demo", NotifyOutcome::Deferred, None);
        m.channel_call("alipay", "query", Duration::from_millis(3), None);
    }

    #[test]
    fn buckets_cover_both_histograms() {
        let b = histogram_buckets();
        assert_eq!(b.len(), 2);
        assert!(b[CHANNEL_CALL_DURATION].windows(2).all(|w| w[0] < w[1]));
    }
}
