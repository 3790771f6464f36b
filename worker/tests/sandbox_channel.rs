//! The real Alipay adapter against the sandbox channel over loopback HTTP: refunds, payouts and
//! the sandbox's exception knobs (late payment after close, a hanging gateway, a 5xx after the
//! transfer was applied). Waits are on conditions with deadlines, never on fixed sleeps.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use payflow::sandbox::alipay::{
    Knobs, PayoutMode, SandboxConfig, SandboxHandle, SandboxPayoutStatus, SandboxRefundStatus,
    SandboxStatus,
};
use payflow_activities::channels::alipay::{AlipayChannel, AlipayConfig, wire};
use payflow_activities::channels::{
    Channel, ChannelError, CloseOutcome, PayoutRequest, PayoutState, PrecreateRequest,
    RefundRequest, RefundResult, RefundState, StatementUrl, TradeState,
};
use payflow_activities::crypto::rsa_keys::RsaSigner;
use payflow_client::{Currency, Money};
use rust_decimal::Decimal;
use tokio::net::TcpListener;

const APP_ID: &str = "2021000000000009";
const WAIT: Duration = Duration::from_secs(10);

/// Our app key and the sandbox's key, generated once per test binary (RSA keygen is slow).
fn keys() -> &'static (RsaSigner, RsaSigner) {
    static KEYS: OnceLock<(RsaSigner, RsaSigner)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (app, _) = RsaSigner::generate().expect("app key");
        let (sandbox, _) = RsaSigner::generate().expect("sandbox key");
        (app, sandbox)
    })
}

struct Rig {
    sandbox: SandboxHandle,
    channel: AlipayChannel,
}

async fn rig(knobs: Knobs) -> Rig {
    rig_with_timeout(knobs, Duration::from_secs(10)).await
}

async fn rig_with_timeout(knobs: Knobs, request_timeout: Duration) -> Rig {
    let (app, sandbox_key) = keys();
    let sandbox = payflow::sandbox::spawn(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        SandboxConfig {
            app_id: APP_ID.into(),
            app_public_key: app.verifier(),
            signer: sandbox_key.clone(),
            knobs,
            notify_retry: vec![],
        },
    )
    .await
    .unwrap();
    let channel = AlipayChannel::new(AlipayConfig {
        name: "alipay".into(),
        gateway_url: sandbox.gateway_url().parse().unwrap(),
        app_id: APP_ID.into(),
        app_private_key: app.clone(),
        alipay_public_key: sandbox_key.verifier(),
        connect_timeout: Duration::from_secs(2),
        request_timeout,
    })
    .unwrap();
    Rig { sandbox, channel }
}

fn cny(text: &str) -> Money {
    Money::parse(text, Currency::Cny).unwrap()
}

fn dec(text: &str) -> Decimal {
    text.parse().unwrap()
}

/// Nobody listens there: notifications fail and the sandbox gives up (no retry schedule).
const NOWHERE: &str = "http://127.0.0.1:9/notify";

impl Rig {
    async fn open_trade(&self, no: &str, amount: &str, notify_url: &str) {
        self.channel
            .precreate(&PrecreateRequest {
                out_trade_no: no.into(),
                amount: cny(amount),
                subject: "sandbox test".into(),
                notify_url: notify_url.into(),
                expires_at_ms: chrono::Utc::now().timestamp_millis() + 900_000,
            })
            .await
            .unwrap();
    }

    async fn paid_trade(&self, no: &str, amount: &str) {
        self.open_trade(no, amount, NOWHERE).await;
        assert!(self.sandbox.pay(no));
    }

    async fn refund(&self, no: &str, request_no: &str, amount: &str) -> RefundResult {
        self.channel
            .refund(&RefundRequest {
                out_trade_no: no.into(),
                out_request_no: request_no.into(),
                amount: cny(amount),
                reason: "test refund".into(),
            })
            .await
            .unwrap()
    }

    async fn payout(&self, no: &str, amount: &str) -> Result<PayoutState, ChannelError> {
        self.channel
            .payout(&PayoutRequest {
                out_biz_no: no.into(),
                amount: cny(amount),
                payee_account: "payee@example.com".into(),
                payee_name: "Zhang San".into(),
                remark: "withdrawal".into(),
            })
            .await
    }
}

fn succeeded(amount: &str) -> RefundResult {
    RefundResult {
        state: RefundState::Succeeded,
        refunded_amount: Some(cny(amount)),
    }
}

fn without_amount(state: RefundState) -> RefundResult {
    RefundResult {
        state,
        refunded_amount: None,
    }
}

#[tokio::test]
async fn partial_refunds_then_the_rest_close_the_trade() {
    let rig = rig(Knobs::default()).await;
    rig.paid_trade("T-full", "100.00").await;

    assert_eq!(
        rig.refund("T-full", "R1", "30.00").await,
        succeeded("30.00")
    );
    let q = rig.channel.query("T-full").await.unwrap();
    assert_eq!(
        q.state,
        TradeState::Paid,
        "a partial refund leaves the trade paid"
    );
    assert_eq!(
        rig.channel.query_refund("T-full", "R1").await.unwrap(),
        succeeded("30.00")
    );

    assert_eq!(
        rig.refund("T-full", "R2", "70.00").await,
        succeeded("70.00")
    );
    // Refunded in full: Alipay reads the trade TRADE_CLOSED, which the payment query maps to
    // Closed (a finished payment workflow never asks again).
    let q = rig.channel.query("T-full").await.unwrap();
    assert_eq!(q.state, TradeState::Closed);
    let order = rig.sandbox.order("T-full").unwrap();
    assert_eq!(order.refunded(), dec("100.00"));
    assert_eq!(order.status, SandboxStatus::Closed);
    // Nothing is left to refund, and a closed trade refuses new refunds.
    assert!(matches!(
        rig.refund("T-full", "R3", "0.01").await.state,
        RefundState::Failed { .. }
    ));
    assert_eq!(rig.sandbox.calls(wire::REFUND), 3);
}

#[tokio::test]
async fn the_same_out_request_no_twice_refunds_once() {
    let rig = rig(Knobs::default()).await;
    rig.paid_trade("T-twice", "50.00").await;
    assert_eq!(
        rig.refund("T-twice", "R1", "10.00").await,
        succeeded("10.00")
    );
    // A repeat answers like Alipay: success without fund change, so the adapter says
    // "processing" and the query confirms the first refund.
    assert_eq!(
        rig.refund("T-twice", "R1", "10.00").await,
        without_amount(RefundState::Processing)
    );
    assert_eq!(
        rig.channel.query_refund("T-twice", "R1").await.unwrap(),
        succeeded("10.00")
    );
    let order = rig.sandbox.order("T-twice").unwrap();
    assert_eq!(order.refunds.len(), 1);
    assert_eq!(order.refunded(), dec("10.00"));
    assert_eq!(rig.sandbox.refund("T-twice", "R1").unwrap().requests, 2);
}

#[tokio::test]
async fn refunds_the_channel_refuses_are_failed() {
    let rig = rig(Knobs::default()).await;
    rig.paid_trade("T-over", "10.00").await;
    assert_eq!(rig.refund("T-over", "R1", "6.00").await, succeeded("6.00"));
    // More than what is left.
    match rig.refund("T-over", "R2", "5.00").await.state {
        RefundState::Failed { code, .. } => assert_eq!(code, "ACQ.REASON_TRADE_REFUND_FEE_ERR"),
        other => panic!("over-refund: {other:?}"),
    }
    assert_eq!(
        rig.channel.query_refund("T-over", "R2").await.unwrap(),
        without_amount(RefundState::NotFound)
    );
    assert_eq!(rig.sandbox.order("T-over").unwrap().refunded(), dec("6.00"));

    // Only paid trades refund; unknown trades do not exist.
    rig.open_trade("T-unpaid", "10.00", NOWHERE).await;
    match rig.refund("T-unpaid", "R1", "1.00").await.state {
        RefundState::Failed { code, .. } => assert_eq!(code, "ACQ.TRADE_STATUS_ERROR"),
        other => panic!("unpaid: {other:?}"),
    }
    match rig.refund("T-nobody", "R1", "1.00").await.state {
        RefundState::Failed { code, .. } => assert_eq!(code, "ACQ.TRADE_NOT_EXIST"),
        other => panic!("unknown trade: {other:?}"),
    }
    assert_eq!(
        rig.channel.query_refund("T-nobody", "R1").await.unwrap(),
        without_amount(RefundState::NotFound)
    );

    // The decline knob.
    rig.sandbox.update_knobs(|k| {
        k.refund_decline = Some((
            "ACQ.SELLER_BALANCE_NOT_ENOUGH".into(),
            "seller balance too low".into(),
        ))
    });
    assert_eq!(
        rig.refund("T-over", "R3", "1.00").await,
        without_amount(RefundState::Failed {
            code: "ACQ.SELLER_BALANCE_NOT_ENOUGH".into(),
            message: "seller balance too low".into()
        })
    );
    // A refund made before keeps its answer.
    assert_eq!(
        rig.channel.query_refund("T-over", "R1").await.unwrap(),
        succeeded("6.00")
    );
}

#[tokio::test]
async fn a_processing_refund_is_confirmed_by_query() {
    let rig = rig(Knobs {
        refund_processing_ms: Some(300),
        ..Knobs::default()
    })
    .await;
    rig.paid_trade("T-slow", "20.00").await;
    assert_eq!(
        rig.refund("T-slow", "R1", "20.00").await,
        without_amount(RefundState::Processing)
    );
    assert_eq!(
        rig.channel.query_refund("T-slow", "R1").await.unwrap(),
        without_amount(RefundState::Processing)
    );
    // Still paid while the refund is in flight.
    assert_eq!(
        rig.channel.query("T-slow").await.unwrap().state,
        TradeState::Paid
    );
    assert!(
        rig.sandbox
            .wait_until(WAIT, |s| s
                .refund("T-slow", "R1")
                .is_some_and(|r| r.status == SandboxRefundStatus::Success))
            .await
    );
    assert_eq!(
        rig.channel.query_refund("T-slow", "R1").await.unwrap(),
        succeeded("20.00")
    );
    assert_eq!(
        rig.channel.query("T-slow").await.unwrap().state,
        TradeState::Closed
    );
}

#[tokio::test]
async fn payout_succeeds_once_however_often_submitted() {
    let rig = rig(Knobs::default()).await;
    let first = rig.payout("P-ok", "100.00").await.unwrap();
    let PayoutState::Succeeded { channel_order_id } = &first else {
        panic!("payout: {first:?}");
    };
    assert_eq!(rig.payout("P-ok", "100.00").await.unwrap(), first);
    assert_eq!(rig.channel.query_payout("P-ok").await.unwrap(), first);
    let p = rig.sandbox.payout("P-ok").unwrap();
    assert_eq!(&p.order_id, channel_order_id);
    assert_eq!(p.amount, dec("100.00"));
    assert_eq!(p.payee_account, "payee@example.com");
    assert_eq!(p.submits, 2);
    assert_eq!(rig.sandbox.payouts_executed("P-ok"), 1);
    assert_eq!(rig.sandbox.calls(wire::TRANSFER), 2);
    assert_eq!(
        rig.channel.query_payout("P-nobody").await.unwrap(),
        PayoutState::NotFound
    );
}

#[tokio::test]
async fn a_dealing_payout_is_confirmed_by_query() {
    let rig = rig(Knobs {
        payout: PayoutMode::Dealing(Duration::from_millis(300)),
        ..Knobs::default()
    })
    .await;
    assert_eq!(
        rig.payout("P-slow", "8.88").await.unwrap(),
        PayoutState::Processing
    );
    assert_eq!(
        rig.channel.query_payout("P-slow").await.unwrap(),
        PayoutState::Processing
    );
    assert_eq!(rig.sandbox.payouts_executed("P-slow"), 0);
    assert!(
        rig.sandbox
            .wait_until(WAIT, |s| s
                .payout("P-slow")
                .is_some_and(|p| p.status == SandboxPayoutStatus::Success))
            .await
    );
    assert!(matches!(
        rig.channel.query_payout("P-slow").await.unwrap(),
        PayoutState::Succeeded { .. }
    ));
    assert_eq!(rig.sandbox.payouts_executed("P-slow"), 1);
}

#[tokio::test]
async fn failed_and_refused_payouts() {
    let rig = rig(Knobs {
        payout: PayoutMode::Fail {
            code: "PAYEE_ACCOUNT_STATUS_ERROR".into(),
            reason: "payee account frozen".into(),
        },
        ..Knobs::default()
    })
    .await;
    assert!(matches!(
        rig.payout("P-fail", "5.00").await.unwrap(),
        PayoutState::Failed { .. }
    ));
    assert_eq!(
        rig.channel.query_payout("P-fail").await.unwrap(),
        PayoutState::Failed {
            code: "PAYEE_ACCOUNT_STATUS_ERROR".into(),
            message: "payee account frozen".into()
        }
    );
    assert_eq!(rig.sandbox.payouts_executed("P-fail"), 0);

    rig.sandbox.update_knobs(|k| {
        k.payout = PayoutMode::Decline {
            code: "PAYEE_NOT_EXIST".into(),
            message: "payee does not exist".into(),
        }
    });
    assert_eq!(
        rig.payout("P-nobody", "5.00").await.unwrap(),
        PayoutState::Failed {
            code: "PAYEE_NOT_EXIST".into(),
            message: "payee does not exist".into()
        }
    );
    assert_eq!(
        rig.channel.query_payout("P-nobody").await.unwrap(),
        PayoutState::NotFound
    );

    rig.sandbox.update_knobs(|k| {
        k.payout = PayoutMode::Succeed;
        k.payout_limit = Some(dec("1000"));
    });
    assert!(matches!(
        rig.payout("P-big", "1000.01").await.unwrap(),
        PayoutState::Failed { code, .. } if code == "EXCEED_LIMIT_SM_AMOUNT"
    ));
    assert!(matches!(
        rig.payout("P-small", "1000.00").await.unwrap(),
        PayoutState::Succeeded { .. }
    ));
}

#[tokio::test]
async fn a_payout_applied_behind_a_5xx_is_found_by_query_and_never_paid_twice() {
    let rig = rig(Knobs {
        payout: PayoutMode::AppliedThen5xx,
        ..Knobs::default()
    })
    .await;
    assert!(matches!(
        rig.payout("P-5xx", "42.00").await,
        Err(ChannelError::Transient(_))
    ));
    assert!(matches!(
        rig.channel.query_payout("P-5xx").await.unwrap(),
        PayoutState::Succeeded { .. }
    ));
    assert_eq!(rig.sandbox.payouts_executed("P-5xx"), 1);
    // A retried submit with the same out_biz_no gets the existing order.
    rig.sandbox.update_knobs(|k| k.payout = PayoutMode::Succeed);
    assert!(matches!(
        rig.payout("P-5xx", "42.00").await.unwrap(),
        PayoutState::Succeeded { .. }
    ));
    assert_eq!(rig.sandbox.payouts_executed("P-5xx"), 1);
    assert_eq!(rig.sandbox.payout("P-5xx").unwrap().submits, 2);
}

#[tokio::test]
async fn a_hanging_gateway_is_transient_within_the_request_timeout() {
    let timeout = Duration::from_millis(400);
    let rig = rig_with_timeout(
        Knobs {
            hang_methods: vec![wire::QUERY.into()],
            ..Knobs::default()
        },
        timeout,
    )
    .await;
    rig.paid_trade("T-hang", "1.00").await;
    let started = Instant::now();
    let r = rig.channel.query("T-hang").await;
    let took = started.elapsed();
    assert!(matches!(r, Err(ChannelError::Transient(_))), "{r:?}");
    assert!(took >= timeout, "answered after {took:?}");
    assert!(took < Duration::from_secs(5), "timed out after {took:?}");
    assert_eq!(rig.sandbox.calls(wire::QUERY), 1);
    // Other methods are served meanwhile; clearing the knob serves queries again.
    assert_eq!(rig.refund("T-hang", "R1", "0.50").await, succeeded("0.50"));
    rig.sandbox.update_knobs(|k| k.hang_methods.clear());
    assert_eq!(
        rig.channel.query("T-hang").await.unwrap().state,
        TradeState::Paid
    );
}

/// Notification forms received, in order.
type Seen = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

/// A notify endpoint that records what it receives and acknowledges it.
async fn notify_receiver() -> (String, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route(
            "/notify",
            post(
                |State(seen): State<Seen>,
                 axum::Form(form): axum::Form<BTreeMap<String, String>>| async move {
                    seen.lock().unwrap().push(form);
                    "success"
                },
            ),
        )
        .with_state(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/notify", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test]
async fn a_payment_can_arrive_after_close() {
    let rig = rig(Knobs {
        pay_after_close_ms: Some(200),
        ..Knobs::default()
    })
    .await;
    let (notify_url, seen) = notify_receiver().await;
    rig.open_trade("T-late", "12.34", &notify_url).await;
    assert_eq!(
        rig.channel.query("T-late").await.unwrap().state,
        TradeState::WaitingForPayment
    );
    assert_eq!(
        rig.channel.close("T-late").await.unwrap(),
        CloseOutcome::Closed
    );
    assert_eq!(
        rig.sandbox.order("T-late").unwrap().status,
        SandboxStatus::Closed
    );
    // The customer's payment arrives anyway, and is notified.
    let order = rig
        .sandbox
        .wait_for("T-late", WAIT, |o| {
            o.status == SandboxStatus::Success && o.acknowledged
        })
        .await
        .expect("late payment");
    let q = rig.channel.query("T-late").await.unwrap();
    assert_eq!(q.state, TradeState::Paid);
    assert_eq!(q.paid_amount, Some(cny("12.34")));
    assert_eq!(q.channel_trade_no.as_deref(), Some(order.trade_no.as_str()));
    let notices = seen.lock().unwrap().clone();
    assert_eq!(notices.len(), 1);
    let notice = rig.channel.verify_notice(&notices[0]).unwrap();
    assert_eq!(notice.out_trade_no, "T-late");
    assert_eq!(notice.trade_status, "TRADE_SUCCESS");
    assert_eq!(notice.total_amount.as_deref(), Some("12.34"));
    // The late payment is refundable like any other.
    assert_eq!(
        rig.refund("T-late", "R1", "12.34").await,
        succeeded("12.34")
    );
}

/// The Beijing calendar day of an instant (unix ms): Alipay's statement day.
fn beijing_date(ms: i64) -> chrono::NaiveDate {
    let beijing = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .with_timezone(&beijing)
        .date_naive()
}

async fn fetch(url: &str) -> String {
    let resp = reqwest::get(url).await.unwrap();
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.text().await.unwrap()
}

#[tokio::test]
async fn the_statement_is_not_ready_then_lists_the_days_paid_trades() {
    let rig = rig(Knobs {
        statement_pending: true,
        ..Knobs::default()
    })
    .await;
    rig.paid_trade("T-bill", "88.80").await;
    rig.open_trade("T-bill-unpaid", "1.00", NOWHERE).await;
    let order = rig.sandbox.order("T-bill").unwrap();
    // The day the customer paid, Beijing time (not "today": midnight may have passed since).
    let day = beijing_date(order.paid_at_ms.expect("paid"));
    assert_eq!(
        rig.channel.statement_url(day).await.unwrap(),
        StatementUrl::NotReady
    );

    rig.sandbox.update_knobs(|k| k.statement_pending = false);
    assert_eq!(rig.refund("T-bill", "R1", "8.80").await, succeeded("8.80"));
    let StatementUrl::Ready(url) = rig.channel.statement_url(day).await.unwrap() else {
        panic!("statement of {day} not ready");
    };
    assert_eq!(
        url,
        format!("http://{}/sandbox/bills/trade/{day}.csv", rig.sandbox.addr)
    );
    let csv = fetch(&url).await;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        [
            "out_trade_no,trade_no,status,total_amount,refund_amount,paid_at,fee",
            &format!(
                // The channel's fee: 0.6 % of 88.80 = 0.5328, half-up to the fen.
                "T-bill,{},TRADE_SUCCESS,88.80,8.80,{},0.53",
                order.trade_no,
                payflow_activities::channels::alipay::sign::format_time(order.paid_at_ms.unwrap())
            ),
        ],
        "{csv}"
    );

    // The day before lists nothing of it; a day not over yet (Beijing time) has no bill.
    let StatementUrl::Ready(before) = rig
        .channel
        .statement_url(day.pred_opt().unwrap())
        .await
        .unwrap()
    else {
        panic!("the day before not ready");
    };
    assert!(!fetch(&before).await.contains("T-bill"));
    assert_eq!(
        rig.channel
            .statement_url(day + chrono::Days::new(2))
            .await
            .unwrap(),
        StatementUrl::NotReady
    );
    assert_eq!(rig.sandbox.calls(wire::BILL_URL_QUERY), 4);
}
