//! Browser-level check of encrypted payloads in the Temporal UI (issue 8): the dev server's UI,
//! configured with a codec endpoint (`--ui-codec-endpoint`), shows a payment's decoded input and
//! result to an operator who has access, and only its ciphertext to anyone else.
//!
//! The UI calls the codec endpoint from the browser and, over plain http and without single
//! sign-on, sends no credentials of its own. In production the codec server sits behind the
//! sign-in proxy that guards the UI, and that proxy adds `Authorization: Bearer <token>` for
//! signed-in operators (README, "Encryption at rest"). Here a small proxy in the test plays
//! that part, in front of the real `payflow codec-server` router holding the stack's keys; the
//! test signs the operator in and out by telling it whether to add the token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::response::Response;
use payflow_client::PayState;
use payflow_client::ids::payment_workflow_id;
use payflow_tests::browser::{chromium, percent_encode, render_until};
use payflow_tests::{Db, Timing, enable_ui_with_codec, payment_request, payment_where, spawn_app};
use tokio::net::TcpListener;

const TOKEN: &str = "operator-token-for-the-ui-test-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_shows_decoded_payloads_only_to_a_signed_in_operator() {
    let Some(chromium) = chromium() else {
        return;
    };
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy_listener.local_addr().unwrap());
    let ui = enable_ui_with_codec(&proxy_url);
    let Some(app) = spawn_app(Db::Sqlite, Timing::default()).await else {
        return;
    };
    let codec = app
        .codec()
        .expect("the test stack encrypts payloads (PAYFLOW_DEV_CODEC must not be off)")
        .clone();

    // The codec server, allowing the UI's origin, and the sign-in proxy in front of it.
    let router = payflow::codec_server::router(payflow::codec_server::CodecServerOptions {
        codec,
        auth_token: secrecy::SecretString::from(TOKEN.to_string()),
        allowed_origins: vec![ui.clone()],
    })
    .unwrap();
    let codec_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let codec_url = format!("http://{}", codec_listener.local_addr().unwrap());
    tokio::spawn(payflow::codec_server::serve(
        codec_listener,
        router,
        std::future::pending::<()>(),
    ));
    let proxy = Arc::new(SignInProxy {
        upstream: codec_url,
        signed_in: AtomicBool::new(false),
        decoded: AtomicUsize::new(0),
        refused: AtomicUsize::new(0),
        http: reqwest::Client::new(),
    });
    let routes = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(proxy_listener, routes).await });

    let req = payment_request("o-ui-codec", "56.78");
    app.payflow.pay(req.clone()).await.expect("pay");
    let paid = payment_where(&app, &req, "payment Succeeded", |s| {
        s.state == PayState::Succeeded
    })
    .await;
    // The order id is drawn inside the workflow: it is in the run's payloads (the prepay answer,
    // the result) and nowhere the server can read (not in the id, not a search attribute).
    let order_id = paid.order_id.expect("order id");
    let (_, ns) = app.temporal_target();
    let id = payment_workflow_id(&req.merchant_id, &req.merchant_order_no);
    let page = format!("{ui}/namespaces/{ns}/workflows/{}", percent_encode(&id));

    // Not signed in: the UI asks the codec server, is refused, and shows no plaintext.
    let dom = render_until(
        &chromium,
        &page,
        "the payment's page after a refused decode",
        |dom| dom.contains(&id) && proxy.refused.load(Ordering::SeqCst) > 0,
    )
    .await;
    assert!(
        !dom.contains(&order_id),
        "{page} shows the order id {order_id} although the codec server refused to decode"
    );
    assert_eq!(proxy.decoded.load(Ordering::SeqCst), 0);

    // Signed in: the same page shows the decoded payloads.
    proxy.signed_in.store(true, Ordering::SeqCst);
    render_until(&chromium, &page, "the payment's decoded order id", |dom| {
        dom.contains(&order_id)
    })
    .await;
    assert!(proxy.decoded.load(Ordering::SeqCst) > 0);
}

/// Stands for the sign-in proxy: forwards every request to the codec server as it came, adding
/// the bearer token while the operator is signed in, and counts the codec server's answers.
struct SignInProxy {
    upstream: String,
    signed_in: AtomicBool,
    decoded: AtomicUsize,
    refused: AtomicUsize,
    http: reqwest::Client,
}

async fn forward(State(proxy): State<Arc<SignInProxy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 1 << 24)
        .await
        .unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = proxy
        .http
        .request(parts.method.clone(), format!("{}{path}", proxy.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "authorization" {
            out = out.header(name, value);
        }
    }
    if proxy.signed_in.load(Ordering::SeqCst) {
        out = out.header("authorization", format!("Bearer {TOKEN}"));
    }
    let Ok(answer) = out.send().await else {
        return Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::empty())
            .unwrap();
    };
    if parts.method == "POST" {
        match answer.status() {
            StatusCode::OK => proxy.decoded.fetch_add(1, Ordering::SeqCst),
            StatusCode::UNAUTHORIZED => proxy.refused.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
    }
    let mut resp = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != HeaderName::from_static("content-length") {
            resp = resp.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    resp.body(Body::from(bytes)).unwrap()
}
