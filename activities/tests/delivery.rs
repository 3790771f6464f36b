//! Merchant callback delivery against real local servers: the SSRF guard (IP literals and
//! names that resolve to loopback), per-merchant TLS trust (extra CA, pins) with certificates
//! made by `rcgen`, egress through a forward proxy, per-merchant timeouts and the RSA header.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use payflow_activities::crypto::rsa_keys::RsaSigner;
use payflow_activities::crypto::webhook::{WebhookSecret, signed_content};
use payflow_activities::notify::guard::AddressPolicy;
use payflow_activities::notify::trust::{Trust, fingerprint, load_ca_file};
use payflow_activities::notify::{
    Callback, Deliverer, DeliveryError, DeliveryPolicy, MerchantTransport, RSA_SIGNATURE_HEADER,
    Refusal,
};
use payflow_client::MerchantId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// A merchant endpoint (plain or TLS) that records what it receives and answers `success`.

#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

struct Endpoint {
    addr: SocketAddr,
    received: Log,
}

impl Endpoint {
    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }
}

fn router(received: Log) -> Router {
    Router::new()
        .route(
            "/notify",
            post(
                |State(log): State<Log>, headers: HeaderMap, body: Bytes| async move {
                    log.lock().unwrap().push(Received { headers, body });
                    "success"
                },
            ),
        )
        .with_state(received)
}

async fn serve_http() -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Log::default();
    let app = router(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Endpoint { addr, received }
}

/// A TCP listener that completes TLS handshakes before axum sees the connection; failed
/// handshakes (the client refusing our certificate) are skipped.
struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn serve_https(chain: Vec<CertificateDer<'static>>, key: &rcgen::KeyPair) -> Endpoint {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let received = Log::default();
    let app = router(received.clone());
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    Endpoint { addr, received }
}

/// A test CA and a leaf it issued for `localhost` and `merchant.test`.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
    leaf_key: rcgen::KeyPair,
}

fn pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "payflow test merchant CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "merchant.test".into()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        leaf_der: leaf.der().clone(),
        leaf_key,
    }
}

/// Writes `pem` to a file and loads it as the config does.
fn ca_file(name: &str, pem: &str) -> Vec<CertificateDer<'static>> {
    let dir = std::env::temp_dir().join(format!("payflow-delivery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    load_ca_file(&path).unwrap()
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP forward proxy: absolute-form requests are forwarded in origin form, CONNECT is
// tunnelled. It resolves `merchant.test` to 127.0.0.1 (the client cannot: only the proxy knows
// that name) and records each request line.

struct Proxy {
    url: url::Url,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn spawn_proxy() -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            tokio::spawn(proxy_connection(client, log.clone()));
        }
    });
    Proxy { url, seen }
}

async fn proxy_connection(
    mut client: TcpStream,
    log: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let request_line = head.lines().next().unwrap_or_default().to_string();
    log.lock().unwrap().push(request_line.clone());
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let upstream_for = |host: &str, port: u16| -> std::io::Result<SocketAddr> {
        match host {
            "merchant.test" => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
            _ => Err(std::io::Error::other("unknown host")),
        }
    };
    let mut upstream;
    if method == "CONNECT" {
        let (host, port) = target.rsplit_once(':').unwrap_or((target, "443"));
        upstream = TcpStream::connect(upstream_for(host, port.parse().unwrap_or(443))?).await?;
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        upstream.write_all(&buf[head_end..]).await?;
    } else {
        let url = url::Url::parse(target).map_err(std::io::Error::other)?;
        let port = url.port_or_known_default().unwrap_or(80);
        upstream = TcpStream::connect(upstream_for(url.host_str().unwrap_or(""), port)?).await?;
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let origin_form = request_line.replacen(target, &path, 1);
        upstream.write_all(origin_form.as_bytes()).await?;
        upstream
            .write_all(&head.as_bytes()[request_line.len()..])
            .await?;
        upstream.write_all(&buf[head_end..]).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------

fn transport(f: impl FnOnce(&mut MerchantTransport)) -> MerchantTransport {
    let mut t = MerchantTransport::new(&DeliveryPolicy::default());
    f(&mut t);
    t
}

fn private_ok(t: &mut MerchantTransport) {
    t.network = AddressPolicy {
        allow_private_network: true,
    };
}

fn id(s: &str) -> MerchantId {
    MerchantId::parse(s).unwrap()
}

fn deliverer(merchants: Vec<(&str, MerchantTransport)>) -> Deliverer {
    let mut d = Deliverer::new(None);
    for (name, t) in merchants {
        d.add_merchant(id(name), &t).unwrap();
    }
    d
}

async fn send(d: &Deliverer, merchant: &str, url: &str) -> payflow_activities::notify::Delivery {
    let secret = WebhookSecret::parse(&WebhookSecret::generate()).unwrap();
    let url = url::Url::parse(url).unwrap();
    d.deliver(
        &id(merchant),
        Callback {
            url: &url,
            event_id: "evt_1",
            body: br#"{"type":"payment.succeeded"}"#,
            secret: &secret,
            expect_body: Some("success"),
            attempt: 1,
        },
    )
    .await
}

fn assert_refused(delivery: &payflow_activities::notify::Delivery, what: &str) {
    assert!(!delivery.attempt.delivered, "{delivery:?}");
    assert!(
        matches!(&delivery.refused, Some(Refusal::AddressNotAllowed(_))),
        "{delivery:?}"
    );
    let error = delivery.attempt.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("address not allowed") && error.contains(what),
        "{error}"
    );
    assert_eq!(delivery.attempt.status, None);
}

fn assert_delivered(delivery: &payflow_activities::notify::Delivery) {
    assert!(delivery.attempt.delivered, "{delivery:?}");
    assert_eq!(delivery.attempt.status, Some(200));
    assert_eq!(delivery.refused, None);
}

#[tokio::test]
async fn loopback_by_ip_is_refused_unless_the_merchant_allows_private_networks() {
    let server = serve_http().await;
    let d = deliverer(vec![
        ("strict", transport(|_| {})),
        ("dev", transport(private_ok)),
    ]);
    let url = format!("http://127.0.0.1:{}/notify", server.port());
    assert_refused(&send(&d, "strict", &url).await, "loopback");
    assert_eq!(server.count(), 0, "nothing reached the server");
    assert_delivered(&send(&d, "dev", &url).await);
    assert_eq!(server.count(), 1);
    let got = server.received.lock().unwrap()[0].clone();
    assert_eq!(got.headers["webhook-id"], "evt_1");
    assert!(got.headers.contains_key("webhook-signature"));
    assert!(!got.headers.contains_key(RSA_SIGNATURE_HEADER));
}

#[tokio::test]
async fn a_name_that_resolves_to_loopback_is_refused_when_connecting() {
    // `localhost` is a name: reqwest asks the merchant's resolver, which drops loopback.
    let server = serve_http().await;
    let d = deliverer(vec![
        ("strict", transport(|_| {})),
        ("dev", transport(private_ok)),
    ]);
    let url = format!("http://localhost:{}/notify", server.port());
    assert_refused(
        &send(&d, "strict", &url).await,
        "localhost resolves to 127.0.0.1",
    );
    assert_eq!(server.count(), 0);
    assert_delivered(&send(&d, "dev", &url).await);
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn the_metadata_address_is_refused_even_for_private_network_merchants() {
    let d = deliverer(vec![
        ("strict", transport(|_| {})),
        ("dev", transport(private_ok)),
    ]);
    for merchant in ["strict", "dev"] {
        let delivery = send(&d, merchant, "http://169.254.169.254/latest/meta-data/").await;
        assert_refused(&delivery, "cloud metadata");
        let delivery = send(&d, merchant, "http://[fd00:ec2::254]/latest/meta-data/").await;
        assert_refused(&delivery, "cloud metadata");
    }
    // Other link-local addresses follow the private-network allowance.
    let strict = send(&d, "strict", "http://169.254.1.1:9/notify").await;
    assert_refused(&strict, "link-local");
}

#[tokio::test]
async fn an_unknown_merchant_is_refused_without_sending() {
    let d = deliverer(vec![]);
    let delivery = send(&d, "nobody", "https://shop.example/notify").await;
    assert_eq!(
        delivery.refused,
        Some(Refusal::UnknownMerchant("nobody".into()))
    );
    assert!(!delivery.attempt.delivered);
}

#[tokio::test]
async fn tls_to_a_server_with_a_private_ca_fails_unless_its_ca_is_configured() {
    let pki = pki();
    let server = serve_https(vec![pki.leaf_der.clone()], &pki.leaf_key).await;
    let ca = ca_file("ca.pem", &pki.ca_pem);
    let d = deliverer(vec![
        ("system-roots", transport(private_ok)),
        (
            "with-ca",
            transport(|t| {
                private_ok(t);
                t.trust = Trust {
                    extra_ca: ca.clone(),
                    pinned_sha256: vec![],
                };
            }),
        ),
    ]);
    let url = format!("https://localhost:{}/notify", server.port());
    let failed = send(&d, "system-roots", &url).await;
    assert!(!failed.attempt.delivered);
    assert_eq!(failed.refused, None, "a TLS failure is an ordinary attempt");
    let error = failed.attempt.error.unwrap_or_default();
    assert!(
        error.starts_with("TLS: invalid peer certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert_eq!(server.count(), 0);
    assert_delivered(&send(&d, "with-ca", &url).await);
    assert_eq!(server.count(), 1);
    // The CA vouches for the names in the certificate only.
    let by_ip = send(
        &d,
        "with-ca",
        &format!("https://127.0.0.1:{}/notify", server.port()),
    )
    .await;
    let error = by_ip.attempt.error.unwrap_or_default();
    assert!(error.contains("not valid for name"), "{error}");
}

#[tokio::test]
async fn a_self_signed_server_is_trusted_by_its_pin() {
    let self_signed = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert = self_signed.cert.der().clone();
    let server = serve_https(vec![cert.clone()], &self_signed.signing_key).await;
    let pinned = |pin: [u8; 32]| {
        transport(move |t| {
            private_ok(t);
            t.trust = Trust {
                extra_ca: vec![],
                pinned_sha256: vec![[0u8; 32], pin],
            };
        })
    };
    let d = deliverer(vec![
        ("unpinned", transport(private_ok)),
        ("pinned", pinned(fingerprint(&cert))),
        ("wrong-pin", pinned([7u8; 32])),
    ]);
    let url = format!("https://localhost:{}/notify", server.port());
    let error = send(&d, "unpinned", &url).await.attempt.error.unwrap();
    assert!(error.starts_with("TLS:"), "{error}");
    let error = send(&d, "wrong-pin", &url).await.attempt.error.unwrap();
    assert!(
        error.contains("does not match the pinned SHA-256 fingerprint"),
        "{error}"
    );
    assert_eq!(server.count(), 0);
    assert_delivered(&send(&d, "pinned", &url).await);
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn with_a_ca_and_a_pin_both_must_hold() {
    let pki = pki();
    let server = serve_https(vec![pki.leaf_der.clone()], &pki.leaf_key).await;
    let ca = ca_file("ca-and-pin.pem", &pki.ca_pem);
    let both = |pin: [u8; 32]| {
        let ca = ca.clone();
        transport(move |t| {
            private_ok(t);
            t.trust = Trust {
                extra_ca: ca,
                pinned_sha256: vec![pin],
            };
        })
    };
    let d = deliverer(vec![
        ("right", both(fingerprint(&pki.leaf_der))),
        // Pinning the CA's own certificate does not pin the leaf.
        ("ca-pinned", both(fingerprint(&pki.ca_der))),
    ]);
    let url = format!("https://localhost:{}/notify", server.port());
    let error = send(&d, "ca-pinned", &url).await.attempt.error.unwrap();
    assert!(error.contains("pinned"), "{error}");
    assert_eq!(server.count(), 0);
    assert_delivered(&send(&d, "right", &url).await);
}

#[tokio::test]
async fn plain_http_egress_goes_through_the_merchants_proxy() {
    let server = serve_http().await;
    let proxy = spawn_proxy().await;
    // No private-network allowance: the proxy is operator configuration, and through it the
    // merchant's name is resolved by the proxy (only it knows `merchant.test`).
    let d = deliverer(vec![(
        "proxied",
        transport(|t| t.proxy = Some(proxy.url.clone())),
    )]);
    let url = format!("http://merchant.test:{}/notify", server.port());
    assert_delivered(&send(&d, "proxied", &url).await);
    assert_eq!(
        *proxy.seen.lock().unwrap(),
        vec![format!("POST {url} HTTP/1.1")],
        "the proxy received the absolute-form request"
    );
    assert_eq!(server.count(), 1);
    assert_eq!(
        server.received.lock().unwrap()[0].headers["webhook-id"],
        "evt_1"
    );
    // An IP-literal target is still checked before anything goes to the proxy.
    let before = proxy.seen.lock().unwrap().len();
    let literal = format!("http://127.0.0.1:{}/notify", server.port());
    assert_refused(&send(&d, "proxied", &literal).await, "loopback");
    assert_eq!(proxy.seen.lock().unwrap().len(), before);
}

#[tokio::test]
async fn https_through_the_proxy_is_tunnelled_and_still_verified_end_to_end() {
    let pki = pki();
    let server = serve_https(vec![pki.leaf_der.clone()], &pki.leaf_key).await;
    let proxy = spawn_proxy().await;
    let ca = ca_file("proxied-ca.pem", &pki.ca_pem);
    let d = deliverer(vec![
        (
            "proxied",
            transport(|t| {
                t.proxy = Some(proxy.url.clone());
                t.trust = Trust {
                    extra_ca: ca,
                    pinned_sha256: vec![],
                };
            }),
        ),
        (
            "proxied-no-ca",
            transport(|t| t.proxy = Some(proxy.url.clone())),
        ),
    ]);
    let url = format!("https://merchant.test:{}/notify", server.port());
    let error = send(&d, "proxied-no-ca", &url).await.attempt.error.unwrap();
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert_eq!(server.count(), 0);
    assert_delivered(&send(&d, "proxied", &url).await);
    assert_eq!(server.count(), 1);
    let connect = format!("CONNECT merchant.test:{} HTTP/1.1", server.port());
    let seen = proxy.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![connect.clone(), connect],
        "one tunnel per attempt"
    );
}

#[tokio::test]
async fn the_merchants_total_timeout_bounds_an_endpoint_that_never_answers() {
    // Accepts, reads the request, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let _ = accepted_tx.send(());
        let mut sink = Vec::new();
        let _ = conn.read_to_end(&mut sink).await;
    });
    let d = deliverer(vec![(
        "hasty",
        transport(|t| {
            private_ok(t);
            t.total_timeout = Duration::from_millis(300);
        }),
    )]);
    let delivery = send(&d, "hasty", &format!("http://127.0.0.1:{port}/notify")).await;
    accepted_rx.await.expect("the endpoint was reached");
    assert_eq!(delivery.attempt.error.as_deref(), Some("timeout"));
    assert_eq!(delivery.refused, None);
    assert!(delivery.attempt.latency_ms >= 300, "{delivery:?}");
}

#[tokio::test]
async fn the_rsa_header_is_sent_only_to_merchants_configured_for_it() {
    let server = serve_http().await;
    let (platform, _) = RsaSigner::generate().unwrap();
    // Without a platform key, an RSA merchant cannot be configured at all.
    let mut keyless = Deliverer::new(None);
    let rsa = transport(|t| {
        private_ok(t);
        t.sign_rsa = true;
    });
    assert!(matches!(
        keyless.add_merchant(id("rsa"), &rsa),
        Err(DeliveryError::NoPlatformKey)
    ));
    let mut d = Deliverer::new(Some(platform.clone()));
    d.add_merchant(id("rsa"), &rsa).unwrap();
    d.add_merchant(id("hmac"), &transport(private_ok)).unwrap();
    let url = format!("http://127.0.0.1:{}/notify", server.port());
    assert_delivered(&send(&d, "rsa", &url).await);
    assert_delivered(&send(&d, "hmac", &url).await);
    let got = server.received.lock().unwrap().clone();
    let h = &got[0].headers;
    let ts: i64 = h["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let content = signed_content("evt_1", ts, &got[0].body);
    let sig = h[RSA_SIGNATURE_HEADER].to_str().unwrap();
    platform.verifier().verify_base64(&content, sig).unwrap();
    let mut changed = content.clone();
    *changed.last_mut().unwrap() ^= 1;
    assert!(platform.verifier().verify_base64(&changed, sig).is_err());
    assert!(!got[1].headers.contains_key(RSA_SIGNATURE_HEADER));
}
