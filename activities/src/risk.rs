//! Risk pre-check, before anything is created: per-transaction and rolling 24-hour amount
//! limits and a per-minute count limit per merchant (blocked merchants are refused earlier,
//! by their status).
//!
//! The check reads recent orders and is a pre-check, not a reservation: two requests racing
//! at the limit can both pass. Hard money limits live in the ledger (holds and account flags).

use payflow_client::Money;
use rust_decimal::Decimal;

/// A merchant's limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RiskLimits {
    pub max_amount: Option<Decimal>,
    pub daily_limit: Option<Decimal>,
    pub max_per_minute: Option<u32>,
}

/// What the merchant did recently, in the request's currency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recent {
    /// Sum of live (not failed, not closed) orders over the last 24 hours.
    pub last_day_total: Decimal,
    /// Orders created in the last minute.
    pub last_minute_count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RiskDecline {
    #[error("risk: amount {amount} exceeds the per-transaction limit {limit}")]
    PerTransaction { amount: String, limit: String },
    #[error("risk: the 24-hour total would reach {total}, over the limit {limit}")]
    Daily { total: String, limit: String },
    #[error("risk: more than {limit} payments in a minute")]
    Rate { limit: u32 },
}

pub fn check(limits: &RiskLimits, amount: &Money, recent: Recent) -> Result<(), RiskDecline> {
    let a = amount.amount();
    if let Some(limit) = limits.max_amount
        && a > limit
    {
        return Err(RiskDecline::PerTransaction {
            amount: a.to_string(),
            limit: limit.to_string(),
        });
    }
    if let Some(limit) = limits.daily_limit {
        let total = recent.last_day_total + a;
        if total > limit {
            return Err(RiskDecline::Daily {
                total: total.to_string(),
                limit: limit.to_string(),
            });
        }
    }
    if let Some(limit) = limits.max_per_minute
        && recent.last_minute_count >= limit
    {
        return Err(RiskDecline::Rate { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use payflow_client::Currency;
    use proptest::prelude::*;

    fn cny(s: &str) -> Money {
        Money::parse(s, Currency::Cny).unwrap()
    }

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    const QUIET: Recent = Recent {
        last_day_total: Decimal::ZERO,
        last_minute_count: 0,
    };

    #[test]
    fn limits_apply_at_their_edges() {
        let l = RiskLimits {
            max_amount: Some(d("100.00")),
            daily_limit: Some(d("150.00")),
            max_per_minute: Some(2),
        };
        assert!(check(&l, &cny("100.00"), QUIET).is_ok());
        assert!(matches!(
            check(&l, &cny("100.01"), QUIET),
            Err(RiskDecline::PerTransaction { .. })
        ));
        let busy = Recent {
            last_day_total: d("50.00"),
            last_minute_count: 1,
        };
        assert!(check(&l, &cny("100.00"), busy).is_ok());
        assert!(matches!(
            check(&l, &cny("100.01"), busy),
            Err(RiskDecline::PerTransaction { .. })
        ));
        let spent = Recent {
            last_day_total: d("50.01"),
            last_minute_count: 0,
        };
        assert!(matches!(
            check(&l, &cny("100.00"), spent),
            Err(RiskDecline::Daily { .. })
        ));
        let fast = Recent {
            last_day_total: Decimal::ZERO,
            last_minute_count: 2,
        };
        assert_eq!(
            check(&l, &cny("1.00"), fast),
            Err(RiskDecline::Rate { limit: 2 })
        );
        assert!(check(&RiskLimits::default(), &cny("99999999.99"), fast).is_ok());
    }

    proptest! {
        /// Whatever the limits, an accepted payment respects every one of them.
        #[test]
        fn accepted_payments_respect_all_limits(
            amount in 1i64..1_000_000, max in 1i64..1_000_000, daily in 1i64..2_000_000,
            spent in 0i64..2_000_000, per_min in 1u32..10, count in 0u32..12,
        ) {
            let l = RiskLimits {
                max_amount: Some(Decimal::new(max, 2)),
                daily_limit: Some(Decimal::new(daily, 2)),
                max_per_minute: Some(per_min),
            };
            let recent = Recent { last_day_total: Decimal::new(spent, 2), last_minute_count: count };
            let m = Money::from_minor(amount, Currency::Cny).unwrap();
            if check(&l, &m, recent).is_ok() {
                prop_assert!(amount <= max);
                prop_assert!(spent + amount <= daily);
                prop_assert!(count < per_min);
            }
        }
    }
}
