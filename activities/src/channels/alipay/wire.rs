//! Alipay wire types: `biz_content` payloads and response nodes, as Alipay spells them.

use serde::{Deserialize, Serialize};

pub const PRECREATE: &str = "alipay.trade.precreate";
pub const QUERY: &str = "alipay.trade.query";
pub const CLOSE: &str = "alipay.trade.close";

/// Gateway code for success.
pub const CODE_SUCCESS: &str = "10000";
/// Gateway code for "service currently unavailable": retry.
pub const CODE_UNAVAILABLE: &str = "20000";

#[derive(Debug, Serialize, Deserialize)]
pub struct PrecreateBiz {
    pub out_trade_no: String,
    /// Yuan with two decimals, e.g. `"88.88"`.
    pub total_amount: String,
    pub subject: String,
    /// `yyyy-MM-dd HH:mm:ss`, Beijing time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TradeRefBiz {
    pub out_trade_no: String,
}

/// Fields shared by every response node.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct Common {
    pub code: String,
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_msg: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PrecreateResponse {
    #[serde(flatten)]
    pub common: Common,
    pub qr_code: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct QueryResponse {
    #[serde(flatten)]
    pub common: Common,
    pub trade_no: Option<String>,
    /// `WAIT_BUYER_PAY`, `TRADE_CLOSED`, `TRADE_SUCCESS`, `TRADE_FINISHED`
    pub trade_status: Option<String>,
    pub total_amount: Option<String>,
    pub buyer_pay_amount: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CloseResponse {
    #[serde(flatten)]
    pub common: Common,
}
