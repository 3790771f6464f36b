//! `payflow payment show`: a payment as its workflow reports it (the `status` query), for
//! operators; human output or `--json`.

use anyhow::Context;
use clap::Subcommand;
use payflow_client::{MerchantId, Money, OrderNo, PaymentStatus};

use crate::cli_notify::TemporalArgs;

#[derive(Subcommand, Debug)]
pub enum PaymentCommand {
    /// State, amounts, channel, times and failure of one payment.
    Show {
        merchant: String,
        order_no: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        temporal: TemporalArgs,
    },
}

pub async fn run(cmd: PaymentCommand) -> anyhow::Result<()> {
    let PaymentCommand::Show {
        merchant,
        order_no,
        json,
        temporal,
    } = cmd;
    let merchant = MerchantId::parse(merchant)?;
    let order_no = OrderNo::parse(order_no)?;
    let payflow = temporal.connect().await?;
    let status = payflow
        .payment(&merchant, &order_no)
        .await
        .with_context(|| format!("payment {merchant}/{order_no}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

fn or_dash(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}

/// The human form: one `key: value` per line.
pub fn render(s: &PaymentStatus) -> String {
    let paid: Option<Money> = s.paid_amount;
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<17} {v}\n"));
    line("workflow", s.workflow_id.clone());
    line("merchant", s.merchant_id.to_string());
    line("order no", s.merchant_order_no.to_string());
    line("state", s.state.to_string());
    line("amount", s.amount.to_string());
    if let Some(p) = paid {
        line("collected", p.to_string());
    }
    line("order id", or_dash(s.order_id.as_deref()).to_string());
    line("channel", or_dash(s.channel.as_deref()).to_string());
    line(
        "channel trade no",
        or_dash(s.channel_trade_no.as_deref()).to_string(),
    );
    line(
        "notices/queries",
        format!("{} / {}", s.notices_received, s.queries_made),
    );
    line("paid at", time(s.paid_at_ms));
    line("closed at", time(s.closed_at_ms));
    if let Some(f) = &s.failure {
        line("failure", format!("{}: {}", f.code, f.message));
    }
    if let Some(r) = s.resolution {
        line("resolution", format!("{r:?}"));
    }
    out
}
