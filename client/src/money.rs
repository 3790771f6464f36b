//! `Money` and `Currency`: amounts are `rust_decimal::Decimal`, never floats.
//!
//! A `Money` can only be built through [`Money::new`] / [`Money::parse`], which check that the
//! amount is positive and has no more fractional digits than the currency's minor unit, so every
//! `Money` in the system converts exactly to integer minor units (fen, cents) and back.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// ISO 4217 currencies payflow settles in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Currency {
    Cny,
    Usd,
    Eur,
    Hkd,
    Jpy,
}

impl Currency {
    /// Number of digits after the decimal point of the currency's minor unit.
    pub fn minor_units(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            Currency::Cny | Currency::Usd | Currency::Eur | Currency::Hkd => 2,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Currency::Cny => "CNY",
            Currency::Usd => "USD",
            Currency::Eur => "EUR",
            Currency::Hkd => "HKD",
            Currency::Jpy => "JPY",
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "CNY" => Ok(Currency::Cny),
            "USD" => Ok(Currency::Usd),
            "EUR" => Ok(Currency::Eur),
            "HKD" => Ok(Currency::Hkd),
            "JPY" => Ok(Currency::Jpy),
            other => Err(MoneyError::UnknownCurrency(other.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount must be greater than zero, got {0}")]
    NotPositive(Decimal),
    #[error("amount {amount} has more than {max} decimal places for {currency}")]
    TooPrecise {
        amount: Decimal,
        currency: Currency,
        max: u32,
    },
    #[error("amount {0:?} is not a decimal number")]
    NotANumber(String),
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    #[error("amount out of range")]
    OutOfRange,
    #[error("currency mismatch: {0} vs {1}")]
    CurrencyMismatch(Currency, Currency),
}

/// A positive amount of a currency, exact to the currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyWire", into = "MoneyWire")]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

/// On the wire and in workflow history: `{"amount": "12.34", "currency": "CNY"}`.
#[derive(Serialize, Deserialize)]
struct MoneyWire {
    amount: String,
    currency: Currency,
}

impl TryFrom<MoneyWire> for Money {
    type Error = MoneyError;
    fn try_from(w: MoneyWire) -> Result<Self, Self::Error> {
        Money::parse(&w.amount, w.currency)
    }
}

impl From<Money> for MoneyWire {
    fn from(m: Money) -> Self {
        MoneyWire {
            amount: m.amount_string(),
            currency: m.currency,
        }
    }
}

impl Money {
    /// Checks that `amount > 0` and fits the currency's minor unit. Trailing zeros are allowed
    /// (`"12.50"`) and normalised to the currency's scale.
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, MoneyError> {
        if amount <= Decimal::ZERO {
            return Err(MoneyError::NotPositive(amount));
        }
        let max = currency.minor_units();
        let normalized = amount.normalize();
        if normalized.scale() > max {
            return Err(MoneyError::TooPrecise {
                amount,
                currency,
                max,
            });
        }
        let mut amount = normalized;
        amount.rescale(max);
        // Bound the amount so minor units always fit an i64 (and a database BIGINT).
        if amount.mantissa() > i64::MAX as i128 {
            return Err(MoneyError::OutOfRange);
        }
        Ok(Money { amount, currency })
    }

    /// Parses a decimal string such as `"12.34"`; exponents and thousands separators are refused.
    pub fn parse(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        let trimmed = amount.trim();
        let valid_chars = !trimmed.is_empty()
            && trimmed
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '-');
        if !valid_chars {
            return Err(MoneyError::NotANumber(amount.to_string()));
        }
        let value =
            Decimal::from_str(trimmed).map_err(|_| MoneyError::NotANumber(amount.to_string()))?;
        Money::new(value, currency)
    }

    /// Builds from integer minor units (e.g. fen), as stored in the database and used by
    /// channels that count in minor units.
    pub fn from_minor(minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        Money::new(Decimal::new(minor, currency.minor_units()), currency)
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount in minor units; exact because construction checked the scale.
    pub fn minor_units(&self) -> i64 {
        // The scale equals the currency's minor units, so the mantissa is the minor amount.
        self.amount.mantissa() as i64
    }

    /// The amount as a plain decimal string at the currency's scale, e.g. `"12.30"`.
    pub fn amount_string(&self) -> String {
        self.amount.to_string()
    }

    /// `self - other`, `None` when the result would not be positive.
    pub fn checked_sub(&self, other: &Money) -> Result<Option<Money>, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        let diff = self.amount - other.amount;
        Ok(Money::new(diff, self.currency).ok())
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_normalises_to_currency_scale() {
        let m = Money::parse("12.5", Currency::Cny).unwrap();
        assert_eq!(m.amount_string(), "12.50");
        assert_eq!(m.minor_units(), 1250);
        let y = Money::parse("1000", Currency::Jpy).unwrap();
        assert_eq!(y.minor_units(), 1000);
        assert_eq!(
            Money::parse("12.500", Currency::Cny)
                .unwrap()
                .amount_string(),
            "12.50"
        );
    }

    #[test]
    fn refuses_bad_amounts() {
        assert!(matches!(
            Money::parse("0", Currency::Cny),
            Err(MoneyError::NotPositive(_))
        ));
        assert!(matches!(
            Money::parse("-1.00", Currency::Cny),
            Err(MoneyError::NotPositive(_))
        ));
        assert!(matches!(
            Money::parse("1.001", Currency::Cny),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            Money::parse("1.5", Currency::Jpy),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            Money::parse("1e3", Currency::Cny),
            Err(MoneyError::NotANumber(_))
        ));
        assert!(matches!(
            Money::parse("", Currency::Cny),
            Err(MoneyError::NotANumber(_))
        ));
    }

    #[test]
    fn serde_uses_decimal_strings_and_validates() {
        let m = Money::parse("0.01", Currency::Usd).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount":"0.01","currency":"USD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        assert!(serde_json::from_str::<Money>(r#"{"amount":"0.001","currency":"USD"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":"5","currency":"XXX"}"#).is_err());
    }

    proptest! {
        #[test]
        fn minor_units_round_trip(minor in 1i64..=i64::MAX / 2, jpy in any::<bool>()) {
            let currency = if jpy { Currency::Jpy } else { Currency::Cny };
            let m = Money::from_minor(minor, currency).unwrap();
            prop_assert_eq!(m.minor_units(), minor);
            let again = Money::parse(&m.amount_string(), currency).unwrap();
            prop_assert_eq!(again, m);
        }
    }
}
