//! Routing: which channel serves a product, honouring the product's amount limits and
//! whether the product and its channel are enabled.

use std::collections::{BTreeMap, BTreeSet};

use payflow_client::{Money, ProductId};
use rust_decimal::Decimal;

#[derive(Debug, Clone)]
pub struct Product {
    pub id: ProductId,
    pub channel: String,
    pub enabled: bool,
    /// Smallest and largest amount this product accepts (in the payment's currency).
    pub min_amount: Option<Decimal>,
    pub max_amount: Option<Decimal>,
    /// Our fee as a fraction of the amount (e.g. `0.006`), charged to the merchant when the
    /// payment succeeds.
    pub fee_rate: Decimal,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("unknown product {0}")]
    UnknownProduct(String),
    #[error("product {0} is disabled")]
    Disabled(String),
    #[error("channel {0} is disabled")]
    ChannelDisabled(String),
    #[error("amount {amount} is outside product {product}'s range")]
    AmountOutOfRange { product: String, amount: String },
}

#[derive(Debug, Clone, Default)]
pub struct Routing {
    products: BTreeMap<ProductId, Product>,
    disabled_channels: BTreeSet<String>,
}

impl Routing {
    pub fn insert(&mut self, p: Product) {
        self.products.insert(p.id.clone(), p);
    }

    /// Takes a channel out of (or back into) service; its products stop routing.
    pub fn set_channel_enabled(&mut self, channel: &str, enabled: bool) {
        if enabled {
            self.disabled_channels.remove(channel);
        } else {
            self.disabled_channels.insert(channel.to_string());
        }
    }

    /// A configured product, enabled or not (settlement looks up its fee after routing).
    pub fn product(&self, id: &str) -> Option<&Product> {
        ProductId::parse(id)
            .ok()
            .and_then(|id| self.products.get(&id))
    }

    /// The product (and so the channel) that serves this payment.
    pub fn route(&self, product: &ProductId, amount: &Money) -> Result<&Product, RouteError> {
        let p = self
            .products
            .get(product)
            .ok_or_else(|| RouteError::UnknownProduct(product.to_string()))?;
        if !p.enabled {
            return Err(RouteError::Disabled(product.to_string()));
        }
        if self.disabled_channels.contains(&p.channel) {
            return Err(RouteError::ChannelDisabled(p.channel.clone()));
        }
        let a = amount.amount();
        let below = p.min_amount.is_some_and(|min| a < min);
        let above = p.max_amount.is_some_and(|max| a > max);
        if below || above {
            return Err(RouteError::AmountOutOfRange {
                product: product.to_string(),
                amount: a.to_string(),
            });
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payflow_client::Currency;

    fn routing() -> Routing {
        let mut r = Routing::default();
        r.insert(Product {
            id: ProductId::parse("qr").unwrap(),
            channel: "alipay".into(),
            enabled: true,
            min_amount: Some("0.10".parse().unwrap()),
            max_amount: Some("5000".parse().unwrap()),
            fee_rate: Decimal::ZERO,
        });
        r.insert(Product {
            id: ProductId::parse("old").unwrap(),
            channel: "alipay".into(),
            enabled: false,
            min_amount: None,
            max_amount: None,
            fee_rate: Decimal::ZERO,
        });
        r
    }

    fn cny(s: &str) -> Money {
        Money::parse(s, Currency::Cny).unwrap()
    }

    #[test]
    fn routes_within_limits_and_refuses_outside() {
        let r = routing();
        let qr = ProductId::parse("qr").unwrap();
        assert_eq!(r.route(&qr, &cny("0.10")).unwrap().channel, "alipay");
        assert_eq!(r.route(&qr, &cny("5000.00")).unwrap().channel, "alipay");
        assert!(matches!(
            r.route(&qr, &cny("0.09")),
            Err(RouteError::AmountOutOfRange { .. })
        ));
        assert!(matches!(
            r.route(&qr, &cny("5000.01")),
            Err(RouteError::AmountOutOfRange { .. })
        ));
        let old = ProductId::parse("old").unwrap();
        assert_eq!(
            r.route(&old, &cny("1.00")).unwrap_err(),
            RouteError::Disabled("old".into())
        );
        let nope = ProductId::parse("nope").unwrap();
        assert!(matches!(
            r.route(&nope, &cny("1.00")),
            Err(RouteError::UnknownProduct(_))
        ));
    }

    #[test]
    fn a_disabled_channel_stops_its_products() {
        let mut r = routing();
        let qr = ProductId::parse("qr").unwrap();
        r.set_channel_enabled("alipay", false);
        assert_eq!(
            r.route(&qr, &cny("1.00")).unwrap_err(),
            RouteError::ChannelDisabled("alipay".into())
        );
        r.set_channel_enabled("alipay", true);
        assert!(r.route(&qr, &cny("1.00")).is_ok());
    }
}
