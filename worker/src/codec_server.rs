//! `payflow codec-server`: the Temporal codec server protocol over payflow's payload codec, so
//! the Temporal UI and CLI show decoded payloads to an operator who holds the token, and
//! nobody else.
//!
//! Protocol (Temporal's "remote data encoding"): `POST …/encode` and `POST …/decode` (only the
//! last path segment counts, so `/{namespace}/decode` works for the CLI's templated
//! `--codec-endpoint`), body and answer `{"payloads":[{"metadata":{"k":"<base64>"},"data":"<base64>"}]}`
//! (the proto3 JSON of `Payloads`). The UI and CLI send `X-Namespace`; one keyring serves
//! every namespace, the header is only logged.
//!
//! Access: every `POST` needs `Authorization: Bearer <token>` (`[codec.server] auth_token`);
//! without it, or with another token, the answer is 401 and nothing is decoded. The UI calls
//! from the browser, so origins listed in `allowed_origins` get CORS answers (preflight
//! `OPTIONS` without a token, as browsers send it; `Authorization`, `Content-Type` and
//! `X-Namespace` allowed; credentials allowed); a request from any other origin is refused.
//! Payload contents are never logged.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use payflow_client::EncryptionCodec;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use temporalio_common::protos::temporal::api::common::v1::Payload;
use tokio::net::TcpListener;

use crate::config::Config;

/// Largest request body (a batch of payloads; one payload may be up to 2 MB).
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Shortest accepted token.
pub const MIN_TOKEN_LEN: usize = 16;

/// What the server needs: the codec, the operators' token and the UI origins.
pub struct CodecServerOptions {
    pub codec: EncryptionCodec,
    pub auth_token: SecretString,
    /// Exact origins (`scheme://host[:port]`) allowed to call from a browser.
    pub allowed_origins: Vec<String>,
}

struct CodecState {
    codec: EncryptionCodec,
    /// `Bearer <token>`, the whole expected `Authorization` value.
    expected: SecretString,
    allowed_origins: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CodecServerError {
    #[error("codec server token must be at least {MIN_TOKEN_LEN} characters")]
    ShortToken,
}

/// The codec server's routes.
pub fn router(options: CodecServerOptions) -> Result<Router, CodecServerError> {
    let token = options.auth_token.expose_secret().trim();
    if token.chars().count() < MIN_TOKEN_LEN {
        return Err(CodecServerError::ShortToken);
    }
    let state = Arc::new(CodecState {
        codec: options.codec,
        expected: SecretString::from(format!("Bearer {token}")),
        allowed_origins: options
            .allowed_origins
            .iter()
            .map(|o| o.trim_end_matches('/').to_string())
            .collect(),
    });
    Ok(Router::new().fallback(handle).with_state(state))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Encode,
    Decode,
}

/// The proto3 JSON of `temporal.api.common.v1.Payloads`: bytes as base64.
#[derive(Debug, Default, Deserialize, Serialize)]
struct JsonPayloads {
    #[serde(default)]
    payloads: Vec<JsonPayload>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct JsonPayload {
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    data: Option<String>,
}

fn decode_b64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(text).ok())
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl JsonPayload {
    fn into_payload(self, index: usize) -> Result<Payload, String> {
        let mut metadata = std::collections::HashMap::new();
        for (k, v) in self.metadata.unwrap_or_default() {
            let bytes = decode_b64(&v)
                .ok_or_else(|| format!("payloads[{index}].metadata.{k}: not base64"))?;
            metadata.insert(k, bytes);
        }
        let data = match self.data {
            Some(d) => {
                decode_b64(&d).ok_or_else(|| format!("payloads[{index}].data: not base64"))?
            }
            None => Vec::new(),
        };
        Ok(Payload {
            metadata,
            data,
            ..Default::default()
        })
    }

    fn from_payload(p: Payload) -> JsonPayload {
        JsonPayload {
            metadata: Some(
                p.metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), b64(v)))
                    .collect(),
            ),
            data: Some(b64(&p.data)),
        }
    }
}

/// Equal in time independent of where the first difference is (length aside).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

fn allowed_origin<'a>(state: &CodecState, headers: &'a HeaderMap) -> Result<Option<&'a str>, ()> {
    match headers.get(header::ORIGIN) {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(o) if state.allowed_origins.iter().any(|a| a == o) => Ok(Some(o)),
            _ => Err(()),
        },
    }
}

fn with_cors(mut resp: Response, origin: Option<&str>) -> Response {
    if let Some(o) = origin.and_then(|o| HeaderValue::from_str(o).ok()) {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

async fn handle(State(state): State<Arc<CodecState>>, req: Request) -> Response {
    let op = match req.uri().path().trim_end_matches('/').rsplit('/').next() {
        Some("encode") => Op::Encode,
        Some("decode") => Op::Decode,
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "not found: POST …/encode or …/decode",
            );
        }
    };
    let headers = req.headers().clone();
    let Ok(origin) = allowed_origin(&state, &headers) else {
        tracing::warn!(?op, origin = ?headers.get(header::ORIGIN), "codec server: origin refused");
        return text(StatusCode::FORBIDDEN, "origin not allowed");
    };
    let namespace = headers
        .get("x-namespace")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    match *req.method() {
        Method::OPTIONS => {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("POST, OPTIONS"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Authorization, Content-Type, X-Namespace"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            return with_cors(resp, origin);
        }
        Method::POST => {}
        _ => {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "POST only");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
            return with_cors(resp, origin);
        }
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same_secret(presented, state.expected.expose_secret().as_bytes()) {
        tracing::warn!(?op, %namespace, "codec server: missing or wrong token");
        let mut resp = text(StatusCode::UNAUTHORIZED, "unauthorized");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"payflow-codec\""),
        );
        return with_cors(resp, origin);
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return with_cors(
                text(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
                origin,
            );
        }
    };
    let resp = match run_codec(&state.codec, op, &body) {
        Ok(answer) => {
            tracing::info!(?op, %namespace, payloads = answer.payloads.len(), "codec server");
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                Body::from(serde_json::to_vec(&answer).unwrap_or_default()),
            )
                .into_response()
        }
        Err(message) => {
            tracing::warn!(?op, %namespace, %message, "codec server: refused");
            text(StatusCode::BAD_REQUEST, message)
        }
    };
    with_cors(resp, origin)
}

/// Parses, encodes or decodes, answers. Errors never quote payload contents.
fn run_codec(codec: &EncryptionCodec, op: Op, body: &[u8]) -> Result<JsonPayloads, String> {
    let request: JsonPayloads =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON payloads: {e}"))?;
    let payloads = request
        .payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.into_payload(i))
        .collect::<Result<Vec<_>, _>>()?;
    let out = match op {
        Op::Encode => codec.encrypt_all(payloads),
        Op::Decode => codec.decrypt_all(payloads),
    }
    .map_err(|e| e.to_string())?;
    Ok(JsonPayloads {
        payloads: out.into_iter().map(JsonPayload::from_payload).collect(),
    })
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// `payflow codec-server`.
#[derive(clap::Args, Debug)]
pub struct CodecServerArgs {
    /// The worker's configuration file (its `[codec]` keys and `[codec.server]`).
    #[arg(long, env = "PAYFLOW_CONFIG", default_value = "payflow.toml")]
    pub config: PathBuf,
    /// Listen here instead of `codec.server.listen`.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
}

/// Loads the configuration and serves until Ctrl-C.
pub async fn run(args: CodecServerArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let codec_config = config.codec.as_ref().with_context(|| {
        format!(
            "{}: no [codec] section (payload encryption is off)",
            args.config.display()
        )
    })?;
    let server = codec_config.server.as_ref().with_context(|| {
        format!(
            "{}: no [codec.server] section (auth_token, allowed_origins)",
            args.config.display()
        )
    })?;
    let codec = codec_config.load()?;
    let auth_token = server.auth_token.load("codec.server.auth_token")?;
    let router = router(CodecServerOptions {
        codec,
        auth_token,
        allowed_origins: server.allowed_origins.clone(),
    })
    .context("config key `codec.server.auth_token`")?;
    let listen = args.listen.unwrap_or(server.listen);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        origins = ?server.allowed_origins,
        current_key_id = codec_config.current_key_id.as_str(),
        "payflow codec server running"
    );
    serve(listener, router, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .context("codec server")
}

#[cfg(test)]
mod tests {
    use super::*;
    use payflow_client::EncryptionKey;

    const TOKEN: &str = "operator-token-0123456789";
    const UI: &str = "http://localhost:8233";

    struct Running {
        base: String,
        http: reqwest::Client,
        codec: EncryptionCodec,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
        }
    }

    async fn start() -> Running {
        payflow_activities::tls::ensure_crypto_provider();
        let codec =
            EncryptionCodec::new("k1", [EncryptionKey::new("k1", [5; 32]).unwrap()]).unwrap();
        let router = router(CodecServerOptions {
            codec: codec.clone(),
            auth_token: SecretString::from(TOKEN.to_string()),
            allowed_origins: vec![UI.to_string()],
        })
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, router, async {
            let _ = stopped.await;
        }));
        Running {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            codec,
            stop: Some(stop),
        }
    }

    fn plain() -> Payload {
        Payload {
            metadata: [("encoding".to_string(), b"json/plain".to_vec())]
                .into_iter()
                .collect(),
            data: br#"{"merchant_order_no":"o-secret-42","amount":"73.19"}"#.to_vec(),
            ..Default::default()
        }
    }

    fn body(payloads: Vec<Payload>) -> serde_json::Value {
        serde_json::to_value(JsonPayloads {
            payloads: payloads
                .into_iter()
                .map(JsonPayload::from_payload)
                .collect(),
        })
        .unwrap()
    }

    fn payloads_of(v: serde_json::Value) -> Vec<Payload> {
        let parsed: JsonPayloads = serde_json::from_value(v).unwrap();
        parsed
            .payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| p.into_payload(i).unwrap())
            .collect()
    }

    async fn post(
        r: &Running,
        path: &str,
        auth: Option<&str>,
        json: &serde_json::Value,
    ) -> reqwest::Response {
        let mut req = r
            .http
            .post(format!("{}{path}", r.base))
            .header("X-Namespace", "default")
            .json(json);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send().await.unwrap()
    }

    #[tokio::test]
    async fn decode_with_the_token_answers_the_plain_payloads() {
        let r = start().await;
        let sealed = r.codec.encrypt(plain()).unwrap();
        let resp = post(
            &r,
            "/decode",
            Some(&format!("Bearer {TOKEN}")),
            &body(vec![sealed.clone(), plain()]),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let json: serde_json::Value = resp.json().await.unwrap();
        // The wire format is proto3 JSON: metadata values and data are base64.
        assert_eq!(
            json["payloads"][0]["metadata"]["encoding"],
            b64(b"json/plain")
        );
        assert_eq!(
            payloads_of(json),
            vec![plain(), plain()],
            "plain ones pass through"
        );

        // Under a namespace path, as the CLI's `--codec-endpoint http://host/{namespace}` calls.
        let resp = post(
            &r,
            "/default/decode",
            Some(&format!("Bearer {TOKEN}")),
            &body(vec![sealed]),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(payloads_of(resp.json().await.unwrap()), vec![plain()]);
    }

    #[tokio::test]
    async fn encode_with_the_token_encrypts_under_the_current_key() {
        let r = start().await;
        let resp = post(
            &r,
            "/encode",
            Some(&format!("Bearer {TOKEN}")),
            &body(vec![plain()]),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let sealed = payloads_of(resp.json().await.unwrap());
        assert!(EncryptionCodec::is_encrypted(&sealed[0]));
        assert_eq!(sealed[0].metadata["encryption-key-id"], b"k1");
        assert_eq!(r.codec.decrypt(sealed[0].clone()).unwrap(), plain());
    }

    #[tokio::test]
    async fn without_the_right_token_nothing_is_decoded() {
        let r = start().await;
        let sealed = body(vec![r.codec.encrypt(plain()).unwrap()]);
        for auth in [
            None,
            Some("Bearer wrong-token-0123456789"),
            Some(TOKEN), // the token without the scheme
            Some("Bearer "),
            Some("Basic b3BlcmF0b3I6dG9rZW4="),
        ] {
            for path in ["/decode", "/encode"] {
                let resp = post(&r, path, auth, &sealed).await;
                assert_eq!(resp.status(), 401, "{path} {auth:?}");
                assert!(resp.headers().contains_key("www-authenticate"));
                let text = resp.text().await.unwrap();
                assert!(
                    !text.contains("o-secret-42") && !text.contains("payloads"),
                    "{text}"
                );
            }
        }
    }

    #[tokio::test]
    async fn the_ui_origin_gets_cors_and_others_are_refused() {
        let r = start().await;
        // The browser's preflight: no Authorization (browsers never send it there).
        let resp = r
            .http
            .request(Method::OPTIONS, format!("{}/decode", r.base))
            .header("Origin", UI)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type,x-namespace",
            )
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], UI);
        assert_eq!(h["access-control-allow-credentials"], "true");
        let allowed = h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        for needed in ["authorization", "content-type", "x-namespace"] {
            assert!(allowed.contains(needed), "{allowed}");
        }
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );

        // The POST from the UI carries CORS headers, also when refused, so the UI can show why.
        let sealed = body(vec![r.codec.encrypt(plain()).unwrap()]);
        for (auth, status) in [(Some(format!("Bearer {TOKEN}")), 200), (None, 401)] {
            let mut req = r
                .http
                .post(format!("{}/decode", r.base))
                .header("Origin", UI)
                .json(&sealed);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), status);
            assert_eq!(resp.headers()["access-control-allow-origin"], UI);
        }

        // Another origin: no CORS, refused even with the token.
        let resp = r
            .http
            .request(Method::OPTIONS, format!("{}/decode", r.base))
            .header("Origin", "https://evil.example")
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        assert!(!resp.headers().contains_key("access-control-allow-origin"));
        let resp = r
            .http
            .post(format!("{}/decode", r.base))
            .header("Origin", "https://evil.example")
            .header("Authorization", format!("Bearer {TOKEN}"))
            .json(&sealed)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        assert!(!resp.text().await.unwrap().contains("o-secret-42"));
    }

    #[tokio::test]
    async fn bad_requests_are_refused_clearly() {
        let r = start().await;
        let auth = format!("Bearer {TOKEN}");
        // Unknown path and method.
        let resp = post(&r, "/other", Some(&auth), &body(vec![])).await;
        assert_eq!(resp.status(), 404);
        let resp = r
            .http
            .get(format!("{}/decode", r.base))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 405);
        // Not the payloads JSON.
        let resp = r
            .http
            .post(format!("{}/decode", r.base))
            .header("Authorization", &auth)
            .body("not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        // A key this server does not hold: named, not decoded, no panic.
        let other = EncryptionCodec::new("k0", [EncryptionKey::new("k0", [1; 32]).unwrap()])
            .unwrap()
            .encrypt(plain())
            .unwrap();
        let resp = post(&r, "/decode", Some(&auth), &body(vec![other])).await;
        assert_eq!(resp.status(), 400);
        let text = resp.text().await.unwrap();
        assert!(text.contains("\"k0\""), "{text}");
        // Tampered.
        let mut tampered = r.codec.encrypt(plain()).unwrap();
        tampered.data[20] ^= 1;
        let resp = post(&r, "/decode", Some(&auth), &body(vec![tampered])).await;
        assert_eq!(resp.status(), 400);
    }

    #[test]
    fn a_short_token_is_refused() {
        let codec =
            EncryptionCodec::new("k1", [EncryptionKey::new("k1", [5; 32]).unwrap()]).unwrap();
        assert!(
            router(CodecServerOptions {
                codec,
                auth_token: SecretString::from("short".to_string()),
                allowed_origins: vec![],
            })
            .is_err()
        );
    }
}
