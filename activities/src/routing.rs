//! Routing: which channel serves a product.

use std::collections::BTreeMap;

use payflow_client::{Money, ProductId};

#[derive(Debug, Clone)]
pub struct Product {
    pub id: ProductId,
    pub channel: String,
    pub enabled: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("unknown product {0}")]
    UnknownProduct(String),
    #[error("product {0} is disabled")]
    Disabled(String),
}

#[derive(Debug, Clone, Default)]
pub struct Routing {
    products: BTreeMap<ProductId, Product>,
}

impl Routing {
    pub fn insert(&mut self, p: Product) {
        self.products.insert(p.id.clone(), p);
    }

    /// The channel for a product and amount.
    pub fn route(&self, product: &ProductId, _amount: &Money) -> Result<&Product, RouteError> {
        let p = self
            .products
            .get(product)
            .ok_or_else(|| RouteError::UnknownProduct(product.to_string()))?;
        if !p.enabled {
            return Err(RouteError::Disabled(product.to_string()));
        }
        Ok(p)
    }
}
