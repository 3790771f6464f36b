//! Alipay OpenAPI adapter (RSA2), faithful to the real protocol so it works against Alipay's
//! sandbox when configured: form POST to the gateway, signed requests, verified responses and
//! notifications. `sign` holds the canonical-string rules, `wire` the JSON shapes.

pub mod sign;
pub mod wire;

use std::collections::BTreeMap;
use std::time::Duration;

use payflow_client::{Currency, Money};
use serde::de::DeserializeOwned;

use super::{
    Channel, ChannelError, CloseOutcome, NoticeError, PrecreateRequest, PrecreateResponse,
    TradeQuery, TradeState, VerifiedNotice,
};
use crate::crypto::rsa_keys::{RsaSigner, RsaVerifier};

/// Configuration of one Alipay app.
#[derive(Debug, Clone)]
pub struct AlipayConfig {
    /// Channel name in payflow (e.g. `alipay`).
    pub name: String,
    /// e.g. `https://openapi.alipay.com/gateway.do`
    pub gateway_url: url::Url,
    pub app_id: String,
    pub app_private_key: RsaSigner,
    pub alipay_public_key: RsaVerifier,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

pub struct AlipayChannel {
    cfg: AlipayConfig,
    http: reqwest::Client,
}

impl AlipayChannel {
    pub fn new(cfg: AlipayConfig) -> Result<Self, ChannelError> {
        let http = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ChannelError::Transient(format!("http client: {e}")))?;
        Ok(AlipayChannel { cfg, http })
    }

    /// The common request parameters, signed.
    fn signed_params(
        &self,
        method: &str,
        biz_content: String,
        notify_url: Option<&str>,
    ) -> Result<BTreeMap<String, String>, ChannelError> {
        let mut p = BTreeMap::new();
        p.insert("app_id".into(), self.cfg.app_id.clone());
        p.insert("method".into(), method.into());
        p.insert("format".into(), "JSON".into());
        p.insert("charset".into(), "utf-8".into());
        p.insert("sign_type".into(), "RSA2".into());
        p.insert(
            "timestamp".into(),
            sign::format_time(chrono::Utc::now().timestamp_millis()),
        );
        p.insert("version".into(), "1.0".into());
        if let Some(url) = notify_url {
            p.insert("notify_url".into(), url.into());
        }
        p.insert("biz_content".into(), biz_content);
        sign::sign_request(&mut p, &self.cfg.app_private_key)
            .map_err(|e| ChannelError::Transient(format!("signing: {e}")))?;
        Ok(p)
    }

    /// POSTs a signed request and returns the verified response node.
    async fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        biz_content: String,
        notify_url: Option<&str>,
    ) -> Result<(R, wire::Common), ChannelError> {
        let params = self.signed_params(method, biz_content, notify_url)?;
        let resp = self
            .http
            .post(self.cfg.gateway_url.clone())
            .form(&params)
            .send()
            .await
            .map_err(|e| ChannelError::Transient(format!("{method}: {e}")))?;
        let status = resp.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(ChannelError::Transient(format!("{method}: HTTP {status}")));
        }
        if !status.is_success() {
            return Err(ChannelError::Untrusted(format!("{method}: HTTP {status}")));
        }
        let body = resp
            .text()
            .await
            .map_err(|e| ChannelError::Transient(format!("{method}: reading body: {e}")))?;
        let (node, sign) = sign::split_response(&body, method).map_err(ChannelError::Untrusted)?;
        let common: wire::Common = serde_json::from_str(node)
            .map_err(|e| ChannelError::Untrusted(format!("{method}: {e}")))?;
        match sign {
            Some(sig) => self
                .cfg
                .alipay_public_key
                .verify_base64(node.as_bytes(), &sig)
                .map_err(|e| ChannelError::Untrusted(format!("{method}: {e}")))?,
            // Alipay leaves some gateway errors unsigned; an unsigned success is never trusted.
            None if common.code == wire::CODE_SUCCESS => {
                return Err(ChannelError::Untrusted(format!(
                    "{method}: unsigned success response"
                )));
            }
            None => {}
        }
        if common.code == wire::CODE_UNAVAILABLE
            || common.sub_code.as_deref().is_some_and(is_system_error)
        {
            return Err(ChannelError::Transient(format!(
                "{method}: {} {}",
                common.code,
                common.sub_msg.as_deref().unwrap_or(&common.msg)
            )));
        }
        let typed: R = serde_json::from_str(node)
            .map_err(|e| ChannelError::Untrusted(format!("{method}: {e}")))?;
        Ok((typed, common))
    }
}

fn is_system_error(sub_code: &str) -> bool {
    sub_code.ends_with("SYSTEM_ERROR") || sub_code == "ACQ.SYSTEM_BUSY"
}

fn declined(c: &wire::Common) -> ChannelError {
    ChannelError::Declined {
        code: c.sub_code.clone().unwrap_or_else(|| c.code.clone()),
        message: c.sub_msg.clone().unwrap_or_else(|| c.msg.clone()),
    }
}

/// Alipay accounts in CNY; amounts are yuan with two decimals.
fn parse_amount(text: &str) -> Result<Money, ChannelError> {
    Money::parse(text, Currency::Cny)
        .map_err(|e| ChannelError::Untrusted(format!("amount {text:?}: {e}")))
}

#[async_trait::async_trait]
impl Channel for AlipayChannel {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn precreate(&self, req: &PrecreateRequest) -> Result<PrecreateResponse, ChannelError> {
        if req.amount.currency() != Currency::Cny {
            return Err(ChannelError::Declined {
                code: "payflow.UNSUPPORTED_CURRENCY".into(),
                message: format!("Alipay collects CNY, not {}", req.amount.currency()),
            });
        }
        let biz = wire::PrecreateBiz {
            out_trade_no: req.out_trade_no.clone(),
            total_amount: req.amount.amount_string(),
            subject: req.subject.clone(),
            time_expire: Some(sign::format_time(req.expires_at_ms)),
        };
        let biz = serde_json::to_string(&biz).expect("biz content serialises");
        let (r, common): (wire::PrecreateResponse, _) = self
            .call(wire::PRECREATE, biz, Some(&req.notify_url))
            .await?;
        if common.code != wire::CODE_SUCCESS {
            return Err(declined(&common));
        }
        let qr_code = r
            .qr_code
            .ok_or_else(|| ChannelError::Untrusted("precreate success without qr_code".into()))?;
        Ok(PrecreateResponse { qr_code })
    }

    async fn query(&self, out_trade_no: &str) -> Result<TradeQuery, ChannelError> {
        let biz = serde_json::to_string(&wire::TradeRefBiz {
            out_trade_no: out_trade_no.into(),
        })
        .expect("biz content serialises");
        let (r, common): (wire::QueryResponse, _) = self.call(wire::QUERY, biz, None).await?;
        if common.code != wire::CODE_SUCCESS {
            if common.sub_code.as_deref() == Some("ACQ.TRADE_NOT_EXIST") {
                return Ok(TradeQuery {
                    state: TradeState::NotFound,
                    channel_trade_no: None,
                    paid_amount: None,
                });
            }
            return Err(declined(&common));
        }
        let state = match r.trade_status.as_deref() {
            Some("WAIT_BUYER_PAY") => TradeState::WaitingForPayment,
            Some("TRADE_SUCCESS") | Some("TRADE_FINISHED") => TradeState::Paid,
            Some("TRADE_CLOSED") => TradeState::Closed,
            other => {
                return Err(ChannelError::Untrusted(format!(
                    "unknown trade_status {other:?}"
                )));
            }
        };
        let paid_amount = match (state, r.total_amount.as_deref()) {
            (TradeState::Paid, Some(a)) => Some(parse_amount(a)?),
            (TradeState::Paid, None) => {
                return Err(ChannelError::Untrusted(
                    "paid trade without total_amount".into(),
                ));
            }
            _ => None,
        };
        Ok(TradeQuery {
            state,
            channel_trade_no: r.trade_no,
            paid_amount,
        })
    }

    async fn close(&self, out_trade_no: &str) -> Result<CloseOutcome, ChannelError> {
        let biz = serde_json::to_string(&wire::TradeRefBiz {
            out_trade_no: out_trade_no.into(),
        })
        .expect("biz content serialises");
        let (_r, common): (wire::CloseResponse, _) = self.call(wire::CLOSE, biz, None).await?;
        if common.code == wire::CODE_SUCCESS {
            return Ok(CloseOutcome::Closed);
        }
        match common.sub_code.as_deref() {
            // Never scanned: nothing to close at the channel.
            Some("ACQ.TRADE_NOT_EXIST") => Ok(CloseOutcome::Closed),
            // Paid (or finished) meanwhile: the caller confirms with a query.
            Some("ACQ.TRADE_STATUS_ERROR") => Ok(CloseOutcome::AlreadyPaid),
            _ => Err(declined(&common)),
        }
    }

    fn verify_notice(
        &self,
        params: &BTreeMap<String, String>,
    ) -> Result<VerifiedNotice, NoticeError> {
        sign::verify_notify(params, &self.cfg.alipay_public_key)
            .map_err(|_| NoticeError::BadSignature)?;
        let get = |k: &str| {
            params
                .get(k)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| NoticeError::Malformed(format!("missing {k}")))
        };
        if get("app_id")? != self.cfg.app_id {
            return Err(NoticeError::WrongApp);
        }
        let notify_time = get("notify_time")?;
        let notify_time_ms = sign::parse_time(&notify_time)
            .ok_or_else(|| NoticeError::Malformed(format!("notify_time {notify_time:?}")))?;
        Ok(VerifiedNotice {
            notify_id: get("notify_id")?,
            out_trade_no: get("out_trade_no")?,
            channel_trade_no: params.get("trade_no").cloned(),
            trade_status: get("trade_status")?,
            total_amount: params.get("total_amount").cloned(),
            notify_time_ms,
        })
    }

    fn ack_body(&self) -> &'static str {
        "success"
    }
}
