//! Ledger accounts: kind, currency, balance flags, and their balances.
//!
//! Balances: posted totals live in a few shard rows per account (`account_balances`), each
//! posting adding to one shard picked at random, so concurrent postings into one hot account
//! rarely wait on the same row; the posted balance is the sum of the shards (a handful of rows,
//! whatever the account's history). Pending totals are summed over the account's live holds.
//! Postings themselves stay append-only in `postings`; `Store::account_totals` recomputes an
//! account's posted totals from them (audits, tests).
//!
//! Flags are checked under a row lock on the account, taken only by a posting or hold that can
//! break the flag (a net debit to an account with `debits_must_not_exceed_credits`, and
//! symmetrically), so credits into a hot payable account never lock it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use payflow_client::{Currency, Money};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Backend, Store, StoreError, now_ms};

// ---------------------------------------------------------------------------------------------
// SignedMoney
// ---------------------------------------------------------------------------------------------

/// An exact amount that may be zero or negative: balances and totals. [`Money`] is always
/// positive (it is what gets paid), so it cannot say "nothing left" or "overdrawn".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignedMoney {
    minor: i64,
    currency: Currency,
}

impl SignedMoney {
    pub fn from_minor(minor: i64, currency: Currency) -> SignedMoney {
        SignedMoney { minor, currency }
    }

    pub fn zero(currency: Currency) -> SignedMoney {
        SignedMoney::from_minor(0, currency)
    }

    pub fn minor_units(&self) -> i64 {
        self.minor
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount at the currency's scale, e.g. `-12.30`.
    pub fn amount(&self) -> Decimal {
        Decimal::new(self.minor, self.currency.minor_units())
    }

    pub fn amount_string(&self) -> String {
        self.amount().to_string()
    }

    pub fn is_zero(&self) -> bool {
        self.minor == 0
    }

    pub fn is_negative(&self) -> bool {
        self.minor < 0
    }

    /// The amount as [`Money`] when it is positive.
    pub fn to_money(&self) -> Option<Money> {
        Money::from_minor(self.minor, self.currency).ok()
    }
}

impl From<Money> for SignedMoney {
    fn from(m: Money) -> SignedMoney {
        SignedMoney::from_minor(m.minor_units(), m.currency())
    }
}

impl PartialEq<Money> for SignedMoney {
    fn eq(&self, other: &Money) -> bool {
        *self == SignedMoney::from(*other)
    }
}

/// Amounts of different currencies are not ordered.
impl PartialOrd for SignedMoney {
    fn partial_cmp(&self, other: &SignedMoney) -> Option<std::cmp::Ordering> {
        (self.currency == other.currency).then(|| self.minor.cmp(&other.minor))
    }
}

impl PartialOrd<Money> for SignedMoney {
    fn partial_cmp(&self, other: &Money) -> Option<std::cmp::Ordering> {
        self.partial_cmp(&SignedMoney::from(*other))
    }
}

impl fmt::Display for SignedMoney {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount(), self.currency)
    }
}

/// Same wire form as [`Money`]: `{"amount": "-12.34", "currency": "CNY"}`.
#[derive(Serialize, Deserialize)]
struct SignedMoneyWire {
    amount: String,
    currency: Currency,
}

impl Serialize for SignedMoney {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SignedMoneyWire {
            amount: self.amount_string(),
            currency: self.currency,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for SignedMoney {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let w = SignedMoneyWire::deserialize(d)?;
        let mut amount = Decimal::from_str(w.amount.trim()).map_err(D::Error::custom)?;
        let scale = w.currency.minor_units();
        if amount.normalize().scale() > scale {
            return Err(D::Error::custom(format!(
                "{} has more than {scale} decimal places for {}",
                w.amount, w.currency
            )));
        }
        amount.rescale(scale);
        let minor = i64::try_from(amount.mantissa()).map_err(D::Error::custom)?;
        Ok(SignedMoney::from_minor(minor, w.currency))
    }
}

// ---------------------------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountKind {
    Asset,
    Liability,
    Revenue,
    Expense,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Asset => "asset",
            AccountKind::Liability => "liability",
            AccountKind::Revenue => "revenue",
            AccountKind::Expense => "expense",
        }
    }

    /// Liabilities and revenue grow with credits; assets and expenses with debits.
    pub fn is_credit_normal(self) -> bool {
        matches!(self, AccountKind::Liability | AccountKind::Revenue)
    }
}

impl fmt::Display for AccountKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccountKind {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, StoreError> {
        [
            AccountKind::Asset,
            AccountKind::Liability,
            AccountKind::Revenue,
            AccountKind::Expense,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| StoreError::Invalid(format!("account kind {s:?}")))
    }
}

/// TigerBeetle's balance flags. Pending amounts on the limited side count against the limit;
/// pending amounts on the other side do not (money on its way in is not there yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccountFlags {
    /// `debits_posted + debits_pending <= credits_posted` (wallets, payables).
    pub debits_must_not_exceed_credits: bool,
    /// `credits_posted + credits_pending <= debits_posted`.
    pub credits_must_not_exceed_debits: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// `{owner_kind}:{owner}:{purpose}`, see `crate::accounting`.
    pub id: String,
    pub owner: String,
    pub kind: AccountKind,
    pub currency: Currency,
    pub flags: AccountFlags,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBalance {
    pub account: Account,
    pub debits_posted: SignedMoney,
    pub credits_posted: SignedMoney,
    /// Live holds only: expired holds do not count.
    pub debits_pending: SignedMoney,
    pub credits_pending: SignedMoney,
}

impl AccountBalance {
    /// Posted balance on the account's normal side: credits - debits for liabilities and
    /// revenue, debits - credits for assets and expenses.
    pub fn posted_net(&self) -> SignedMoney {
        let (d, c) = (
            self.debits_posted.minor_units(),
            self.credits_posted.minor_units(),
        );
        let net = if self.account.kind.is_credit_normal() {
            c - d
        } else {
            d - c
        };
        SignedMoney::from_minor(net, self.account.currency)
    }

    /// The posted balance less the pending amounts that would reduce it. For an account with
    /// `debits_must_not_exceed_credits` this is the largest debit or hold it accepts.
    pub fn available(&self) -> SignedMoney {
        let pending = if self.account.kind.is_credit_normal() {
            self.debits_pending
        } else {
            self.credits_pending
        };
        SignedMoney::from_minor(
            self.posted_net().minor_units() - pending.minor_units(),
            self.account.currency,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Balance shards
// ---------------------------------------------------------------------------------------------

const DEFAULT_BALANCE_SHARDS: u32 = 8;
static BALANCE_SHARDS: AtomicU32 = AtomicU32::new(DEFAULT_BALANCE_SHARDS);

/// How many shard rows new postings spread over (default 8). Any value is correct, since a
/// balance sums every shard row of its account; `payflow bench ledger` sets 1 to measure a
/// single maintained balance row.
pub fn set_balance_shards(n: u32) {
    BALANCE_SHARDS.store(n.max(1), Ordering::Relaxed);
}

pub fn balance_shards() -> u32 {
    BALANCE_SHARDS.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------------

/// Raw totals of one account in minor units, as the flag checks use them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
}

const ACCOUNT_COLUMNS: &str = "account_id, owner, kind, currency, \
    debits_must_not_exceed_credits, credits_must_not_exceed_debits";

fn account_from_row(r: &AnyRow) -> Result<Account, StoreError> {
    let kind: String = r.try_get("kind")?;
    let currency: String = r.try_get("currency")?;
    let d: i64 = r.try_get("debits_must_not_exceed_credits")?;
    let c: i64 = r.try_get("credits_must_not_exceed_debits")?;
    Ok(Account {
        id: r.try_get("account_id")?,
        owner: r.try_get("owner")?,
        kind: kind
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("account kind {kind}")))?,
        currency: currency
            .parse()
            .map_err(|e: payflow_client::MoneyError| StoreError::Corrupt(e.to_string()))?,
        flags: AccountFlags {
            debits_must_not_exceed_credits: d != 0,
            credits_must_not_exceed_debits: c != 0,
        },
    })
}

/// Totals of `account_id`: posted from the shard rows, pending from its live holds at `now`.
const TOTALS_SQL: &str = "SELECT \
    (SELECT CAST(COALESCE(SUM(debits_posted), 0) AS BIGINT) FROM account_balances \
     WHERE account_id = ?) AS dp, \
    (SELECT CAST(COALESCE(SUM(credits_posted), 0) AS BIGINT) FROM account_balances \
     WHERE account_id = ?) AS cp, \
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM holds \
     WHERE debit_account = ? AND state = 'pending' \
     AND (expires_at_ms IS NULL OR expires_at_ms > ?)) AS dpend, \
    (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM holds \
     WHERE credit_account = ? AND state = 'pending' \
     AND (expires_at_ms IS NULL OR expires_at_ms > ?)) AS cpend";

fn totals_from_row(r: &AnyRow) -> Result<Totals, StoreError> {
    Ok(Totals {
        debits_posted: r.try_get("dp")?,
        credits_posted: r.try_get("cp")?,
        debits_pending: r.try_get("dpend")?,
        credits_pending: r.try_get("cpend")?,
    })
}

impl Store {
    /// Opens an account. Idempotent: opening it again with the same definition is a no-op;
    /// the same id with another owner, kind, currency or flags is a [`StoreError::Conflict`].
    pub async fn open_account(&self, a: &Account) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        self.open_accounts_tx(&mut tx, std::slice::from_ref(a))
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// [`Store::open_account`] for several accounts inside `tx`.
    pub(crate) async fn open_accounts_tx(
        &self,
        tx: &mut Transaction<'static, Any>,
        accounts: &[Account],
    ) -> Result<(), StoreError> {
        for a in accounts {
            if a.id.is_empty() {
                return Err(StoreError::Invalid("account id is empty".into()));
            }
            if a.flags.debits_must_not_exceed_credits && a.flags.credits_must_not_exceed_debits {
                return Err(StoreError::Invalid(format!(
                    "account {}: the two balance flags exclude each other",
                    a.id
                )));
            }
        }
        let ids: BTreeSet<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
        let existing = self.load_accounts(tx, ids).await?;
        let insert = self.sql(&format!(
            "INSERT INTO accounts ({ACCOUNT_COLUMNS}, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (account_id) DO NOTHING"
        ));
        for a in accounts {
            let stored = match existing.get(&a.id) {
                Some(stored) => stored.clone(),
                None => {
                    let inserted = sqlx::query(&insert)
                        .bind(&a.id)
                        .bind(&a.owner)
                        .bind(a.kind.as_str())
                        .bind(a.currency.code())
                        .bind(i64::from(a.flags.debits_must_not_exceed_credits))
                        .bind(i64::from(a.flags.credits_must_not_exceed_debits))
                        .bind(now_ms())
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                    if inserted == 1 {
                        continue;
                    }
                    // Someone opened it meanwhile: compare with theirs.
                    self.load_accounts(tx, [a.id.as_str()])
                        .await?
                        .remove(&a.id)
                        .ok_or_else(|| StoreError::NotFound(format!("account {}", a.id)))?
                }
            };
            if stored != *a {
                return Err(StoreError::Conflict(format!(
                    "account {} is open as {} {} {:?} (owner {}), not as {} {} {:?} (owner {})",
                    a.id,
                    stored.kind,
                    stored.currency,
                    stored.flags,
                    stored.owner,
                    a.kind,
                    a.currency,
                    a.flags,
                    a.owner
                )));
            }
        }
        Ok(())
    }

    /// The account's definition and its four totals. [`StoreError::NotFound`] when it was
    /// never opened.
    pub async fn account_balance(&self, id: &str) -> Result<AccountBalance, StoreError> {
        let q = self.sql(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id = ?"
        ));
        let row = sqlx::query(&q)
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("account {id}")))?;
        let account = account_from_row(&row)?;
        let q = self.sql(TOTALS_SQL);
        let now = now_ms();
        let row = sqlx::query(&q)
            .bind(id)
            .bind(id)
            .bind(id)
            .bind(now)
            .bind(id)
            .bind(now)
            .fetch_one(self.pool())
            .await?;
        Ok(balance_of(account, totals_from_row(&row)?))
    }

    /// Every account with its totals, by id (operators' trial balance).
    pub async fn account_balances(&self) -> Result<Vec<AccountBalance>, StoreError> {
        let now = now_ms();
        let q = self.sql(&format!(
            "SELECT {ACCOUNT_COLUMNS}, \
             (SELECT CAST(COALESCE(SUM(debits_posted), 0) AS BIGINT) FROM account_balances b \
              WHERE b.account_id = a.account_id) AS dp, \
             (SELECT CAST(COALESCE(SUM(credits_posted), 0) AS BIGINT) FROM account_balances b \
              WHERE b.account_id = a.account_id) AS cp, \
             (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM holds h \
              WHERE h.debit_account = a.account_id AND h.state = 'pending' \
              AND (h.expires_at_ms IS NULL OR h.expires_at_ms > ?)) AS dpend, \
             (SELECT CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT) FROM holds h \
              WHERE h.credit_account = a.account_id AND h.state = 'pending' \
              AND (h.expires_at_ms IS NULL OR h.expires_at_ms > ?)) AS cpend \
             FROM accounts a ORDER BY a.account_id"
        ));
        let rows = sqlx::query(&q)
            .bind(now)
            .bind(now)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| Ok(balance_of(account_from_row(r)?, totals_from_row(r)?)))
            .collect()
    }

    /// The definitions of those of `ids` that are open.
    pub(crate) async fn load_accounts<'a>(
        &self,
        tx: &mut Transaction<'static, Any>,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<HashMap<String, Account>, StoreError> {
        let ids: Vec<&str> = ids.into_iter().collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let marks = vec!["?"; ids.len()].join(", ");
        let q = self.sql(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE account_id IN ({marks})"
        ));
        let mut query = sqlx::query(&q);
        for id in &ids {
            query = query.bind(id.to_string());
        }
        let rows = query.fetch_all(&mut **tx).await?;
        rows.iter()
            .map(|r| account_from_row(r).map(|a| (a.id.clone(), a)))
            .collect()
    }

    /// Locks the accounts' rows until the end of `tx`, in id order so that two transactions
    /// never wait on each other in a cycle. No-op on SQLite (one connection, one writer).
    pub(crate) async fn lock_accounts(
        &self,
        tx: &mut Transaction<'static, Any>,
        ids: &BTreeSet<String>,
    ) -> Result<(), StoreError> {
        if self.backend() == Backend::Sqlite {
            return Ok(());
        }
        let q = self.sql(&format!(
            "SELECT account_id FROM accounts WHERE account_id = ?{}",
            self.for_update()
        ));
        for id in ids {
            sqlx::query(&q).bind(id).fetch_optional(&mut **tx).await?;
        }
        Ok(())
    }

    /// The account's totals as `tx` sees them, pending counted at `now`.
    pub(crate) async fn totals_tx(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        now: i64,
    ) -> Result<Totals, StoreError> {
        let q = self.sql(TOTALS_SQL);
        let row = sqlx::query(&q)
            .bind(id)
            .bind(id)
            .bind(id)
            .bind(now)
            .bind(id)
            .bind(now)
            .fetch_one(&mut **tx)
            .await?;
        totals_from_row(&row)
    }

    /// Refuses `new_debit` / `new_credit` on `account` when they would break one of its flags.
    /// `posted`: the amounts are postings (the other side's amount counts towards the limit),
    /// not a hold (pending money on the other side does not count). Call with the account
    /// locked (see [`needs_lock`]) and `now` read after the lock.
    pub(crate) async fn check_flags(
        &self,
        tx: &mut Transaction<'static, Any>,
        account: &Account,
        new_debit: i64,
        new_credit: i64,
        posted: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        if !needs_lock(account, new_debit, new_credit, posted) {
            return Ok(());
        }
        let t = self.totals_tx(tx, &account.id, now).await?;
        let offset = |other: i64| if posted { other } else { 0 };
        let (needed, available) = if account.flags.debits_must_not_exceed_credits {
            (
                new_debit - offset(new_credit),
                t.credits_posted - t.debits_posted - t.debits_pending,
            )
        } else {
            (
                new_credit - offset(new_debit),
                t.debits_posted - t.credits_posted - t.credits_pending,
            )
        };
        if needed > available {
            return Err(StoreError::InsufficientFunds {
                account: account.id.clone(),
                needed: Money::from_minor(needed, account.currency)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
                available: SignedMoney::from_minor(available, account.currency),
            });
        }
        Ok(())
    }

    /// Adds posted amounts to one of the account's shard rows (picked at random).
    pub(crate) async fn add_posted(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        debit: i64,
        credit: i64,
    ) -> Result<(), StoreError> {
        let shard = i64::from(rand::random::<u32>() % balance_shards());
        let q = self.sql(
            "INSERT INTO account_balances (account_id, shard, debits_posted, credits_posted) \
             VALUES (?, ?, ?, ?) ON CONFLICT (account_id, shard) DO UPDATE SET \
             debits_posted = account_balances.debits_posted + excluded.debits_posted, \
             credits_posted = account_balances.credits_posted + excluded.credits_posted",
        );
        sqlx::query(&q)
            .bind(id)
            .bind(shard)
            .bind(debit)
            .bind(credit)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

/// Whether adding `new_debit` / `new_credit` can break the account's flag, i.e. whether the
/// account must be locked and checked. Money moving the safe way never takes the lock.
pub(crate) fn needs_lock(account: &Account, new_debit: i64, new_credit: i64, posted: bool) -> bool {
    let offset = |other: i64| if posted { other } else { 0 };
    (account.flags.debits_must_not_exceed_credits && new_debit - offset(new_credit) > 0)
        || (account.flags.credits_must_not_exceed_debits && new_credit - offset(new_debit) > 0)
}

fn balance_of(account: Account, t: Totals) -> AccountBalance {
    let c = account.currency;
    AccountBalance {
        debits_posted: SignedMoney::from_minor(t.debits_posted, c),
        credits_posted: SignedMoney::from_minor(t.credits_posted, c),
        debits_pending: SignedMoney::from_minor(t.debits_pending, c),
        credits_pending: SignedMoney::from_minor(t.credits_pending, c),
        account,
    }
}

/// Debit and credit totals per account of a set of postings, in account id order (the order
/// writes take, see [`Store::lock_accounts`]).
pub(crate) fn per_account<'a>(
    postings: impl IntoIterator<Item = (&'a str, Currency, i64, i64)>,
) -> Result<BTreeMap<&'a str, (Currency, i64, i64)>, StoreError> {
    let mut out: BTreeMap<&str, (Currency, i64, i64)> = BTreeMap::new();
    for (id, currency, d, c) in postings {
        let e = out.entry(id).or_insert((currency, 0, 0));
        if e.0 != currency {
            return Err(StoreError::Invalid(format!(
                "account {id} posted in both {} and {currency}",
                e.0
            )));
        }
        e.1 += d;
        e.2 += c;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_money_round_trips_and_compares() {
        let m = SignedMoney::from_minor(-1230, Currency::Cny);
        assert_eq!(m.amount_string(), "-12.30");
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount":"-12.30","currency":"CNY"}"#);
        assert_eq!(serde_json::from_str::<SignedMoney>(&json).unwrap(), m);
        assert!(
            serde_json::from_str::<SignedMoney>(r#"{"amount":"1.001","currency":"CNY"}"#).is_err()
        );
        let ten = Money::parse("10.00", Currency::Cny).unwrap();
        assert_eq!(SignedMoney::from(ten), ten);
        assert!(SignedMoney::zero(Currency::Cny) < ten);
        assert_eq!(SignedMoney::zero(Currency::Usd).partial_cmp(&ten), None);
        assert_eq!(SignedMoney::zero(Currency::Cny).to_money(), None);
        assert_eq!(SignedMoney::from(ten).to_money(), Some(ten));
        assert_eq!(
            SignedMoney::from_minor(5, Currency::Jpy).to_string(),
            "5 JPY"
        );
    }

    fn balance(kind: AccountKind, dp: i64, cp: i64, dpend: i64, cpend: i64) -> AccountBalance {
        balance_of(
            Account {
                id: "a".into(),
                owner: "o".into(),
                kind,
                currency: Currency::Cny,
                flags: AccountFlags::default(),
            },
            Totals {
                debits_posted: dp,
                credits_posted: cp,
                debits_pending: dpend,
                credits_pending: cpend,
            },
        )
    }

    #[test]
    fn net_and_available_follow_the_normal_side() {
        let wallet = balance(AccountKind::Liability, 300, 1000, 200, 50);
        assert_eq!(wallet.posted_net().minor_units(), 700);
        assert_eq!(wallet.available().minor_units(), 500);
        let clearing = balance(AccountKind::Asset, 1000, 300, 200, 50);
        assert_eq!(clearing.posted_net().minor_units(), 700);
        assert_eq!(clearing.available().minor_units(), 650);
    }
}
