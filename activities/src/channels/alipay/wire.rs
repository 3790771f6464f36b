//! Alipay wire types: `biz_content` payloads and response nodes, as Alipay spells them.

use serde::{Deserialize, Serialize};

pub const PRECREATE: &str = "alipay.trade.precreate";
pub const QUERY: &str = "alipay.trade.query";
pub const CLOSE: &str = "alipay.trade.close";
pub const REFUND: &str = "alipay.trade.refund";
pub const REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";
pub const TRANSFER: &str = "alipay.fund.trans.uni.transfer";
pub const TRANSFER_QUERY: &str = "alipay.fund.trans.common.query";
pub const BILL_URL_QUERY: &str = "alipay.data.dataservice.bill.downloadurl.query";

/// Gateway code for success.
pub const CODE_SUCCESS: &str = "10000";
/// Gateway code for "service currently unavailable": retry.
pub const CODE_UNAVAILABLE: &str = "20000";
/// Gateway code for a business failure; `sub_code` says which.
pub const CODE_BUSINESS_FAILED: &str = "40004";

/// Transfer product: to an Alipay account, without the payer's password.
pub const PRODUCT_TRANS_ACCOUNT_NO_PWD: &str = "TRANS_ACCOUNT_NO_PWD";
pub const BIZ_SCENE_DIRECT_TRANSFER: &str = "DIRECT_TRANSFER";
/// Payee identified by Alipay logon id (e-mail or phone); `name` is then required.
pub const IDENTITY_ALIPAY_LOGON_ID: &str = "ALIPAY_LOGON_ID";
/// Bill of the merchant's acquiring trades (`signcustomer` would be the account's fund moves).
pub const BILL_TYPE_TRADE: &str = "trade";
/// The statement of that day is not generated yet (day D's comes the morning after, Beijing
/// time; today's never exists).
pub const SUB_BILL_NOT_EXIST: &str = "isp.bill_not_exist";

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

#[derive(Debug, Serialize, Deserialize)]
pub struct RefundBiz {
    pub out_trade_no: String,
    /// Yuan with two decimals.
    pub refund_amount: String,
    /// Identifies one refund of the trade; repeating it never refunds twice.
    pub out_request_no: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RefundResponse {
    #[serde(flatten)]
    pub common: Common,
    pub trade_no: Option<String>,
    pub out_trade_no: Option<String>,
    /// `Y`: this call moved money; `N`: it did not (a repeat, or not yet).
    pub fund_change: Option<String>,
    /// The trade's total refunded so far (all its refunds), yuan.
    pub refund_fee: Option<String>,
    /// What the merchant actually returned in this refund, yuan; not always given.
    pub send_back_fee: Option<String>,
    pub gmt_refund_pay: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RefundQueryBiz {
    pub out_trade_no: String,
    pub out_request_no: String,
}

#[derive(Debug, Deserialize)]
pub struct RefundQueryResponse {
    #[serde(flatten)]
    pub common: Common,
    pub trade_no: Option<String>,
    pub out_trade_no: Option<String>,
    pub out_request_no: Option<String>,
    /// The trade's amount.
    pub total_amount: Option<String>,
    /// This refund's amount.
    pub refund_amount: Option<String>,
    /// `REFUND_SUCCESS`; absent while not (yet) refunded.
    pub refund_status: Option<String>,
    pub gmt_refund_pay: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Participant {
    pub identity: String,
    pub identity_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TransferBiz {
    pub out_biz_no: String,
    /// Yuan with two decimals.
    pub trans_amount: String,
    pub product_code: String,
    pub biz_scene: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_title: Option<String>,
    pub payee_info: Participant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remark: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TransferResponse {
    #[serde(flatten)]
    pub common: Common,
    pub out_biz_no: Option<String>,
    /// Alipay's transfer order id.
    pub order_id: Option<String>,
    pub pay_fund_order_id: Option<String>,
    /// `SUCCESS`, `DEALING`, `FAIL`, `REFUND` (bounced back after paying)
    pub status: Option<String>,
    pub trans_date: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TransferQueryBiz {
    pub product_code: String,
    pub biz_scene: String,
    pub out_biz_no: String,
}

#[derive(Debug, Deserialize)]
pub struct TransferQueryResponse {
    #[serde(flatten)]
    pub common: Common,
    pub order_id: Option<String>,
    pub out_biz_no: Option<String>,
    pub pay_fund_order_id: Option<String>,
    /// `SUCCESS`, `DEALING`, `WAIT_PAY`, `FAIL`, `REFUND`, `CLOSED`
    pub status: Option<String>,
    pub trans_amount: Option<String>,
    pub pay_date: Option<String>,
    /// Set when the status is `FAIL` or `REFUND`.
    pub error_code: Option<String>,
    pub fail_reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BillUrlBiz {
    pub bill_type: String,
    /// `yyyy-MM-dd` for a daily bill (`yyyy-MM` would be a monthly one), Beijing time.
    pub bill_date: String,
}

#[derive(Debug, Deserialize)]
pub struct BillUrlResponse {
    #[serde(flatten)]
    pub common: Common,
    /// Valid for 30 seconds; serves a zip of GBK-encoded CSV files.
    pub bill_download_url: Option<String>,
}
