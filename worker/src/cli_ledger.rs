//! `payflow ledger ...`: read-only ledger queries for operators, straight from the database.
//! Amounts print as decimals (`"12.34"`), never floats; `--json` gives the same data to scripts.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use clap::Subcommand;
use payflow_activities::store::Store;
use payflow_activities::store::accounts::{AccountBalance, SignedMoney};
use payflow_activities::store::ledger::JournalEntry;
use payflow_client::Currency;
use serde::Serialize;
use serde_json::json;

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// One account: definition, posted and pending totals, net and available balance.
    Balance {
        account: String,
        #[arg(long)]
        json: bool,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// The journal entries of a payment order, with their postings.
    Entries {
        #[arg(long)]
        order: String,
        #[arg(long)]
        json: bool,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Every account's totals and, per currency, debits minus credits (zero in a sound
    /// ledger). Exits with an error when it is not zero.
    TrialBalance {
        #[arg(long)]
        json: bool,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
}

/// Runs the command and prints its answer.
pub async fn run(cmd: LedgerCommand) -> anyhow::Result<()> {
    let url = match &cmd {
        LedgerCommand::Balance { database_url, .. }
        | LedgerCommand::Entries { database_url, .. }
        | LedgerCommand::TrialBalance { database_url, .. } => database_url.clone(),
    };
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("connect {}", redact(&url)))?;
    let out = render(&store, &cmd).await;
    store.close().await;
    let (text, ok) = out?;
    println!("{text}");
    if !ok {
        bail!("the trial balance is not zero");
    }
    Ok(())
}

/// The command's output, and whether the ledger looked sound (false only for a trial balance
/// that is not zero).
pub async fn render(store: &Store, cmd: &LedgerCommand) -> anyhow::Result<(String, bool)> {
    match cmd {
        LedgerCommand::Balance { account, json, .. } => {
            let b = store.account_balance(account).await?;
            Ok((
                if *json {
                    serde_json::to_string_pretty(&BalanceView::from(&b))?
                } else {
                    balance_text(&b)
                },
                true,
            ))
        }
        LedgerCommand::Entries { order, json, .. } => {
            let entries = store.entries_for_order(order).await?;
            let views: Vec<EntryView> = entries.iter().map(EntryView::from).collect();
            Ok((
                if *json {
                    serde_json::to_string_pretty(&views)?
                } else {
                    entries_text(order, &views)
                },
                true,
            ))
        }
        LedgerCommand::TrialBalance { json, .. } => {
            let accounts = store.account_balances().await?;
            let diffs = store.trial_balance().await?;
            let ok = diffs.values().all(|d| *d == 0);
            let mut totals: BTreeMap<Currency, (i64, i64)> = BTreeMap::new();
            for b in &accounts {
                let t = totals.entry(b.account.currency).or_default();
                t.0 += b.debits_posted.minor_units();
                t.1 += b.credits_posted.minor_units();
            }
            let mut currencies = Vec::new();
            for (code, diff) in &diffs {
                let c: Currency = code
                    .parse()
                    .map_err(|e| anyhow::anyhow!("currency {code} in postings: {e}"))?;
                let (d, cr) = totals.get(&c).copied().unwrap_or_default();
                currencies.push(CurrencyView {
                    currency: c,
                    debits: SignedMoney::from_minor(d, c),
                    credits: SignedMoney::from_minor(cr, c),
                    debits_minus_credits: SignedMoney::from_minor(*diff, c),
                });
            }
            let text = if *json {
                serde_json::to_string_pretty(&json!({
                    "balanced": ok,
                    "currencies": currencies,
                    "accounts": accounts.iter().map(BalanceView::from).collect::<Vec<_>>(),
                }))?
            } else {
                trial_text(&accounts, &currencies, ok)
            };
            Ok((text, ok))
        }
    }
}

#[derive(Serialize)]
struct BalanceView<'a> {
    account: &'a payflow_activities::store::accounts::Account,
    debits_posted: SignedMoney,
    credits_posted: SignedMoney,
    debits_pending: SignedMoney,
    credits_pending: SignedMoney,
    posted_net: SignedMoney,
    available: SignedMoney,
}

impl<'a> From<&'a AccountBalance> for BalanceView<'a> {
    fn from(b: &'a AccountBalance) -> Self {
        BalanceView {
            account: &b.account,
            debits_posted: b.debits_posted,
            credits_posted: b.credits_posted,
            debits_pending: b.debits_pending,
            credits_pending: b.credits_pending,
            posted_net: b.posted_net(),
            available: b.available(),
        }
    }
}

#[derive(Serialize)]
struct PostingView {
    account: String,
    side: &'static str,
    amount: SignedMoney,
}

#[derive(Serialize)]
struct EntryView {
    entry_id: String,
    kind: String,
    order_id: Option<String>,
    postings: Vec<PostingView>,
}

impl From<&JournalEntry> for EntryView {
    fn from(e: &JournalEntry) -> Self {
        EntryView {
            entry_id: e.entry_id.clone(),
            kind: e.kind.clone(),
            order_id: e.order_id.clone(),
            postings: e
                .postings
                .iter()
                .map(|p| {
                    let (side, minor) = if p.debit_minor > 0 {
                        ("debit", p.debit_minor)
                    } else {
                        ("credit", p.credit_minor)
                    };
                    PostingView {
                        account: p.account_id.clone(),
                        side,
                        amount: SignedMoney::from_minor(minor, p.currency),
                    }
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct CurrencyView {
    currency: Currency,
    debits: SignedMoney,
    credits: SignedMoney,
    debits_minus_credits: SignedMoney,
}

fn flags_text(b: &AccountBalance) -> String {
    let f = b.account.flags;
    match (
        f.debits_must_not_exceed_credits,
        f.credits_must_not_exceed_debits,
    ) {
        (true, _) => "debits_must_not_exceed_credits".into(),
        (_, true) => "credits_must_not_exceed_debits".into(),
        _ => "no flags".into(),
    }
}

fn balance_text(b: &AccountBalance) -> String {
    let a = &b.account;
    format!(
        "account    {} ({}, {}, {})\n\
         owner      {}\n\
         posted     debits {}  credits {}  net {}\n\
         pending    debits {}  credits {}\n\
         available  {}",
        a.id,
        a.kind,
        a.currency,
        flags_text(b),
        a.owner,
        b.debits_posted.amount(),
        b.credits_posted.amount(),
        b.posted_net().amount(),
        b.debits_pending.amount(),
        b.credits_pending.amount(),
        b.available()
    )
}

fn entries_text(order: &str, entries: &[EntryView]) -> String {
    if entries.is_empty() {
        return format!("no ledger entries for order {order}");
    }
    let mut out = Vec::new();
    for e in entries {
        out.push(format!("{}  ({})", e.entry_id, e.kind));
        for p in &e.postings {
            let dr_cr = if p.side == "debit" { "Dr" } else { "Cr" };
            out.push(format!(
                "  {dr_cr} {:<40} {:>14}",
                p.account,
                p.amount.to_string()
            ));
        }
    }
    out.join("\n")
}

fn trial_text(accounts: &[AccountBalance], currencies: &[CurrencyView], ok: bool) -> String {
    let mut out = vec![format!(
        "{:<40} {:<9} {:>14} {:>14} {:>14} {:>14}",
        "account", "kind", "debits", "credits", "net", "pending out"
    )];
    for b in accounts {
        let pending_out = if b.account.kind.is_credit_normal() {
            b.debits_pending
        } else {
            b.credits_pending
        };
        out.push(format!(
            "{:<40} {:<9} {:>14} {:>14} {:>14} {:>14}",
            b.account.id,
            b.account.kind.to_string(),
            b.debits_posted.to_string(),
            b.credits_posted.to_string(),
            b.posted_net().to_string(),
            pending_out.to_string()
        ));
    }
    out.push(String::new());
    for c in currencies {
        out.push(format!(
            "{}: debits {} credits {} debits - credits {}",
            c.currency,
            c.debits.amount(),
            c.credits.amount(),
            c.debits_minus_credits.amount()
        ));
    }
    out.push(if ok {
        "trial balance: zero in every currency".into()
    } else {
        "trial balance: NOT ZERO".into()
    });
    out.join("\n")
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payflow_activities::accounting;
    use payflow_client::Money;

    #[tokio::test]
    async fn balance_entries_and_trial_balance_render() {
        let path = std::env::temp_dir().join(format!(
            "payflow_cli_ledger_{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let url = format!("sqlite://{}", path.display());
        let store = Store::connect(&url).await.unwrap();
        let amount = Money::parse("12.34", Currency::Cny).unwrap();
        store
            .book(&accounting::payment_succeeded(
                "o-1", "alipay", "m1", amount, None,
            ))
            .await
            .unwrap();

        let (text, ok) = render(
            &store,
            &LedgerCommand::Balance {
                account: "merchant:m1:payable".into(),
                json: true,
                database_url: url.clone(),
            },
        )
        .await
        .unwrap();
        assert!(ok);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["credits_posted"]["amount"], "12.34");
        assert_eq!(v["available"]["amount"], "12.34");
        assert_eq!(v["account"]["kind"], "liability");

        let (text, _) = render(
            &store,
            &LedgerCommand::Entries {
                order: "o-1".into(),
                json: true,
                database_url: url.clone(),
            },
        )
        .await
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v[0]["entry_id"], "pay:o-1:succeeded");
        assert_eq!(v[0]["postings"][0]["side"], "debit");
        assert_eq!(v[0]["postings"][0]["amount"]["amount"], "12.34");

        let (text, ok) = render(
            &store,
            &LedgerCommand::TrialBalance {
                json: false,
                database_url: url.clone(),
            },
        )
        .await
        .unwrap();
        assert!(ok);
        assert!(text.contains("CNY: debits 12.34 credits 12.34 debits - credits 0.00"));

        assert!(
            render(
                &store,
                &LedgerCommand::Balance {
                    account: "nope".into(),
                    json: false,
                    database_url: url,
                },
            )
            .await
            .is_err()
        );
        store.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
