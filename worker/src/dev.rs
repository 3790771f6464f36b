//! `payflow dev`: Temporal dev server + worker + ingress + sandbox channel + demo merchant,
//! all on this machine. With `--demo`, one payment end to end, each step printed; then
//! everything started is stopped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use payflow_client::{Currency, MerchantId, Money, OrderNo, PayState, PaymentRequest, ProductId};

use crate::config::Config;
use crate::devkeys::DevKeys;
use crate::devserver::{DevServer, DevServerOptions};
use crate::stack::{self, Stack, StackOptions};

pub struct DevArgs {
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub demo: bool,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let keys = DevKeys::ensure(&args.data_dir.join("keys"))
        .with_context(|| format!("creating dev keys in {}", args.data_dir.display()))?;
    // The checked-in dev config is the source of the settings; `payflow dev` only rewires
    // the addresses of the parts it starts itself.
    let config = Config::load(&args.config)?;
    let (server, temporal_address) = match std::env::var("TEMPORAL_ADDRESS") {
        Ok(addr) => (None, addr),
        Err(_) => {
            let server = DevServer::start(DevServerOptions {
                ip: "127.0.0.1".into(),
                port: 7233,
                ui_port: Some(8233),
                db_file: Some(args.data_dir.join("temporal.db")),
                log_level: "error".into(),
                extra_namespaces: Vec::new(),
                ui_codec_endpoint: None,
            })
            .await?;
            let addr = server.address.clone();
            (Some(server), addr)
        }
    };
    let ui = server
        .as_ref()
        .and_then(|s| s.ui_url.clone())
        .unwrap_or_else(|| "(your Temporal UI)".into());
    println!("payflow dev: Temporal {temporal_address}, UI {ui}");
    let stack = Stack::start(StackOptions {
        temporal_address,
        namespace: "default".into(),
        database_url: config.database.url.clone(),
        keys: &keys,
        pay_after: Some(Duration::from_millis(800)),
        query_schedule_ms: config.payment.query_schedule_ms.clone(),
        expiry_scale_percent: config.payment.expiry_scale_percent,
        notify_schedule_ms: config.notify.retry_schedule_ms.clone(),
        notify_continue_after_events: Some(config.notify.continue_as_new_after_events),
        sandbox_notify_retry: vec![
            Duration::from_secs(2),
            Duration::from_secs(5),
            Duration::from_secs(30),
        ],
        ingress_listen: config.ingress.listen.to_string(),
        ingress_allowed_ips: config
            .ingress
            .allowed_ips
            .iter()
            .map(|ip| ip.to_string())
            .collect(),
        extra_toml: String::new(),
    })
    .await?;
    println!(
        "payflow dev: ingress http://{}, sandbox channel {}, demo merchant {}",
        stack.ingress_addr,
        stack.sandbox.gateway_url(),
        stack.merchant.notify_url()
    );
    let outcome = if args.demo {
        let r = demo(&stack, &ui).await;
        if r.is_ok() {
            println!(
                "payflow dev: demo payment done in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        r
    } else {
        println!("payflow dev: running; Ctrl-C stops everything");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok(())
    };
    let stopped = stack.shutdown().await;
    if let Some(s) = server {
        s.stop().await;
    }
    println!("payflow dev: stopped");
    outcome?;
    stopped?;
    Ok(())
}

async fn demo(stack: &Stack, ui: &str) -> anyhow::Result<()> {
    let deadline = Duration::from_secs(25);
    let order_no = format!("demo-{}", chrono::Utc::now().format("%Y%m%d%H%M%S%3f"));
    let req = PaymentRequest {
        merchant_id: MerchantId::parse(stack::MERCHANT)?,
        merchant_order_no: OrderNo::parse(&order_no)?,
        amount: Money::parse("88.88", Currency::Cny)?,
        product_id: ProductId::parse(stack::PRODUCT)?,
        subject: "payflow demo".into(),
        notify_url: None,
        expires_in_secs: None,
        recharge_wallet: None,
    };
    let prepay = stack
        .payflow
        .pay(req.clone())
        .await
        .context("step 1 failed: order created")?;
    println!(
        "[1/6] order created: workflow pay/{}/{} order {}",
        stack::MERCHANT,
        order_no,
        prepay.order_id
    );
    println!(
        "[2/6] channel prepay: {} qr_code {}",
        prepay.channel, prepay.qr_code
    );
    let notified = stack
        .sandbox
        .wait_for(&prepay.order_id, deadline, |o| o.acknowledged)
        .await;
    let Some(n) = notified else {
        bail!("step 3 failed: channel notification was not acknowledged by the ingress");
    };
    println!(
        "[3/6] channel notification: trade {} acknowledged by the ingress after {} post(s)",
        n.trade_no, n.notifications_sent
    );
    let start = Instant::now();
    let status = loop {
        let s = stack
            .payflow
            .payment(&req.merchant_id, &req.merchant_order_no)
            .await?;
        if s.state != PayState::Pending && s.state != PayState::Created {
            break s;
        }
        if start.elapsed() > deadline {
            bail!(
                "step 4 failed: payment still {} after {deadline:?}",
                s.state
            );
        }
        // Poll interval of the status query.
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if status.state != PayState::Succeeded {
        bail!("step 4 failed: payment ended {}", status.state);
    }
    println!(
        "[4/6] confirmed by query: state {} (channel trade {}, {} channel quer{})",
        status.state,
        status.channel_trade_no.as_deref().unwrap_or("-"),
        status.queries_made,
        if status.queries_made == 1 { "y" } else { "ies" }
    );
    let entries = stack.store.entries_for_order(&prepay.order_id).await?;
    let Some(entry) = entries.first() else {
        bail!(
            "step 5 failed: no ledger entry for order {}",
            prepay.order_id
        );
    };
    let lines: Vec<String> = entry
        .postings
        .iter()
        .map(|p| {
            let (side, minor) = if p.debit_minor > 0 {
                ("Dr", p.debit_minor)
            } else {
                ("Cr", p.credit_minor)
            };
            let money = Money::from_minor(minor, p.currency)
                .map(|m| m.to_string())
                .unwrap_or_default();
            format!("{side} {} {money}", p.account_id)
        })
        .collect();
    println!(
        "[5/6] ledger posted: {} ({})",
        entry.entry_id,
        lines.join(" / ")
    );
    let received = stack
        .merchant
        .wait_for(deadline, |got| got.iter().any(|c| c.answered == 200))
        .await;
    let Some(got) = received else {
        bail!("step 6 failed: the merchant received no accepted callback");
    };
    let cb = got
        .iter()
        .find(|c| c.answered == 200)
        .expect("checked above");
    if !cb.signature_valid {
        bail!("step 6 failed: callback signature did not verify");
    }
    println!(
        "[6/6] merchant callback received, signature verified: webhook-id {} type {}",
        cb.webhook_id, cb.body["type"]
    );
    println!(
        "      see it in the UI: {ui}/namespaces/default/workflows?query=MerchantId%3D%22{}%22",
        stack::MERCHANT
    );
    Ok(())
}
