//! WeChat Pay API v3 wire types: request bodies, response bodies and notification envelopes,
//! as WeChat Pay spells them. Amounts are integers in fen; times are RFC 3339 with an offset.

use serde::{Deserialize, Serialize};

/// Native (QR code) prepay: `POST`, answers `code_url`.
pub const PATH_NATIVE: &str = "/v3/pay/transactions/native";
/// Query, close: `/v3/pay/transactions/out-trade-no/{out_trade_no}` (+ `/close`).
pub const PATH_BY_OUT_TRADE_NO: &str = "/v3/pay/transactions/out-trade-no";
/// Refund: `POST`; refund query: `GET .../{out_refund_no}`.
pub const PATH_REFUNDS: &str = "/v3/refund/domestic/refunds";
/// Trade bill: `GET ?bill_date=YYYY-MM-DD&bill_type=ALL`, answers `download_url`.
pub const PATH_TRADEBILL: &str = "/v3/bill/tradebill";

pub const CURRENCY_CNY: &str = "CNY";
/// Every trade of the day (paid and refunded), not only the successful ones.
pub const BILL_TYPE_ALL: &str = "ALL";
/// The only algorithm WeChat Pay uses for notification resources.
pub const ALGORITHM_AEAD_AES_256_GCM: &str = "AEAD_AES_256_GCM";
/// `original_type` of a payment notification's resource.
pub const ORIGINAL_TYPE_TRANSACTION: &str = "transaction";

/// Error codes (HTTP 4xx/5xx bodies) that say "try again with the same parameters".
pub const TRANSIENT_CODES: &[&str] = &[
    "SYSTEM_ERROR",
    // The v2 spelling, still answered by some v3 endpoints.
    "SYSTEMERROR",
    "FREQUENCY_LIMITED",
    "BANK_ERROR",
];
/// Close of a trade that was paid meanwhile.
pub const CODE_ORDERPAID: &str = "ORDERPAID";
pub const CODE_ORDER_CLOSED: &str = "ORDER_CLOSED";
/// "No such trade": the v3 spelling, the v2 one some endpoints still use, and the generic
/// resource code (refund query of an unknown `out_refund_no`).
pub const CODES_NOT_FOUND: &[&str] = &["ORDER_NOT_EXIST", "ORDERNOTEXIST", "RESOURCE_NOT_EXISTS"];
/// Trade bill of a day not generated yet (the next morning, Beijing time): ask again later.
pub const CODE_STATEMENT_CREATING: &str = "STATEMENT_CREATING";
/// Trade bill of a day without any trade: there is none, and there will be none (an empty
/// statement, not a late one).
pub const CODE_NO_STATEMENT_EXIST: &str = "NO_STATEMENT_EXIST";

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    /// Fen.
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// `POST /v3/pay/transactions/native`
#[derive(Debug, Serialize, Deserialize)]
pub struct NativePrepay {
    pub appid: String,
    pub mchid: String,
    /// At most 127 characters.
    pub description: String,
    pub out_trade_no: String,
    /// RFC 3339, e.g. `2026-01-05T10:34:56+08:00`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_expire: Option<String>,
    pub notify_url: String,
    pub amount: Amount,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NativePrepayResponse {
    pub code_url: Option<String>,
}

/// `POST /v3/pay/transactions/out-trade-no/{no}/close` (answers 204 without a body).
#[derive(Debug, Serialize, Deserialize)]
pub struct CloseBody {
    pub mchid: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionAmount {
    /// The order amount, fen.
    pub total: Option<i64>,
    /// What the customer paid (the order amount less coupons), fen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_total: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_currency: Option<String>,
}

/// A trade, as the query answers it and as a payment notification's decrypted resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transaction {
    pub appid: Option<String>,
    pub mchid: Option<String>,
    pub out_trade_no: Option<String>,
    /// WeChat Pay's trade number, set once the customer opened the trade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_type: Option<String>,
    /// `SUCCESS`, `REFUND`, `NOTPAY`, `CLOSED`, `REVOKED`, `USERPAYING`, `PAYERROR`, `ACCEPT`
    pub trade_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trade_state_desc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<TransactionAmount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAmount {
    /// This refund, fen.
    pub refund: i64,
    /// The original order's amount, fen (required by the refund request).
    pub total: i64,
    pub currency: String,
}

/// `POST /v3/refund/domestic/refunds`
#[derive(Debug, Serialize, Deserialize)]
pub struct RefundBody {
    pub out_trade_no: String,
    /// Identifies one refund of the trade; repeating it never refunds twice.
    pub out_refund_no: String,
    /// At most 80 characters; shown to the customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub amount: RefundAmount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundAnswerAmount {
    pub total: Option<i64>,
    /// This refund, fen.
    pub refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_refund: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// The answer of the refund and of the refund query (the same shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: Option<String>,
    pub out_refund_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    pub out_trade_no: Option<String>,
    /// `SUCCESS`, `CLOSED`, `PROCESSING`, `ABNORMAL`
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    pub amount: Option<RefundAnswerAmount>,
}

/// `GET /v3/bill/tradebill`
#[derive(Debug, Serialize, Deserialize)]
pub struct TradeBillResponse {
    /// `SHA1`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_value: Option<String>,
    /// Downloading it is itself a signed v3 `GET` (the address carries a short-lived token).
    pub download_url: Option<String>,
}

/// A notification's envelope (`POST` to our `notify_url`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    /// Unique per notification: our replay key.
    pub id: String,
    pub create_time: Option<String>,
    /// `TRANSACTION.SUCCESS`; refunds send `REFUND.SUCCESS` / `REFUND.ABNORMAL` /
    /// `REFUND.CLOSED` (only to a refund `notify_url`, which we do not set).
    pub event_type: String,
    /// `encrypt-resource`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub resource: EncryptedResource,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncryptedResource {
    /// `AEAD_AES_256_GCM`
    pub algorithm: String,
    /// base64 of the AES-GCM ciphertext followed by its 16-byte tag.
    pub ciphertext: String,
    /// The 12 characters of the GCM nonce (used as their bytes).
    pub nonce: String,
    /// GCM associated data (often `transaction`); may be absent or empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated_data: Option<String>,
    /// `transaction` or `refund`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_type: Option<String>,
}
