//! Issue 13 (HTTPS): the public listener speaks TLS 1.2/1.3 with the
//! configured certificate, refuses older versions and plain HTTP, cuts a
//! client that never completes its handshake, and presents a new
//! certificate to the next connection after a reload (SIGHUP's function, or
//! the files changing) while open connections keep working; a broken new
//! certificate is refused and the old one kept.

use std::time::{Duration, Instant};

use bytes::Bytes;
use enrichd::app::tls::CERT_POLL_INTERVAL;
use enrichd_tests::process::{eventually, Host};
use enrichd_tests::tls::{
    client, connect, https_request, one_route as config, presented, start_https, TestCert, ROUTE,
};
use enrichd_tests::{delivery_request, enrichd_bin, seed_payload, SECRET};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read from `stream` until it closes or 5 s pass; what arrived, and when.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    (buf, started.elapsed())
}

/// A TLS 1.1 ClientHello, as an old client sends it (no supported_versions
/// extension): rustls cannot be made to send one.
fn tls_1_1_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // no session id
                  // Suites rustls has (ECDHE-ECDSA/RSA AES-128-GCM), so only the version is wrong.
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x2b, 0xc0, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // null compression
                                           // signature_algorithms (ecdsa_secp256r1_sha256), which rustls requires
                                           // before it looks at the version.
    body.extend_from_slice(&[0x00, 0x08, 0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]);
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn issue_13_a_client_trusting_the_certificate_gets_the_envelope() {
    let cert = TestCert::new();
    let server = start_https(&cert, &config(), "").await;
    let req = delivery_request(server.addr, ROUTE, &seed_payload());
    let res = https_request(server.addr, client(&[&cert], &[]), &req).await;
    assert_eq!(res.status, 200);
    let body = res.json();
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["actions"][0]["type"], "assign", "{body}");

    // ALPN: the protocol the server speaks.
    let stream = connect(server.addr, client(&[&cert], &[])).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // A client offering only a protocol the server does not speak is
    // refused in the handshake.
    let mut h2_only = (*client(&[&cert], &[])).clone();
    h2_only.alpn_protocols = vec![b"h2".to_vec()];
    let err = connect(server.addr, std::sync::Arc::new(h2_only))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
    // A client that does not trust it gets no connection.
    let stranger = TestCert::new();
    assert!(connect(server.addr, client(&[&stranger], &[]))
        .await
        .is_err());
}

#[tokio::test]
async fn issue_13_plain_http_and_tls_1_1_are_refused() {
    let cert = TestCert::new();
    let server = start_https(&cert, &config(), "").await;

    let mut plain = TcpStream::connect(server.addr).await.unwrap();
    let get = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    plain.write_all(get.as_bytes()).await.unwrap();
    let (answer, took) = read_until_closed(&mut plain).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP answered: {answer:?}"
    );
    assert!(took < Duration::from_secs(5), "not closed");

    let mut old = TcpStream::connect(server.addr).await.unwrap();
    old.write_all(&tls_1_1_client_hello()).await.unwrap();
    let (answer, took) = read_until_closed(&mut old).await;
    // One fatal alert record: protocol_version (70).
    assert_eq!(answer.first(), Some(&0x15), "not an alert: {answer:?}");
    assert_eq!(answer.get(5..7), Some(&[2, 70][..]), "{answer:?}");
    assert!(took < Duration::from_secs(5), "not closed");
}

#[tokio::test]
async fn issue_13_min_version_1_3_refuses_a_tls_1_2_client() {
    let cert = TestCert::new();
    let server = start_https(&cert, &config(), "min_version = \"1.3\"").await;
    let only_12 = client(&[&cert], &[&rustls::version::TLS12]);
    assert!(connect(server.addr, only_12).await.is_err());
    let only_13 = client(&[&cert], &[&rustls::version::TLS13]);
    let stream = connect(server.addr, only_13)
        .await
        .expect("TLS 1.3 is served");
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // The default (1.2) serves a 1.2-only client.
    let server = start_https(&cert, &config(), "").await;
    let only_12 = client(&[&cert], &[&rustls::version::TLS12]);
    connect(server.addr, only_12)
        .await
        .expect("TLS 1.2 is served by default");
}

#[tokio::test]
async fn issue_13_a_client_that_never_speaks_is_cut_at_the_handshake_timeout() {
    let cert = TestCert::new();
    let config = format!("max_connections = 1\n{}", config());
    let server = start_https(&cert, &config, "handshake_timeout_ms = 500").await;
    let trusting = client(&[&cert], &[]);
    let request = delivery_request(server.addr, ROUTE, &seed_payload());

    // Within the timeout: a slow handshake is served.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let name = rustls::pki_types::ServerName::try_from(enrichd_tests::tls::HOST).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(trusting.clone())
        .connect(name, slow)
        .await
        .expect("a handshake within the timeout");
    tls.write_all(&request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    assert_eq!(enrichd_tests::parse_response(&buf).status, 200);

    // Silent: it holds the only slot (a delivery meanwhile gets the
    // reserve's 503), and is closed at the timeout, freeing it.
    slow = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let busy = https_request(server.addr, trusting.clone(), &request).await;
    assert_eq!(busy.status, 503, "the silent client holds the slot");
    let (answer, took) = read_until_closed(&mut slow).await;
    assert!(answer.is_empty(), "{answer:?}");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    let freed = https_request(server.addr, trusting, &request).await;
    assert_eq!(freed.status, 200, "the slot is free again");
}

/// An HTTP/1.1 keep-alive connection over TLS: the certificate it was
/// given, and a way to send requests on it.
async fn keep_alive(
    server: &enrichd_tests::TestServer,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> (
    rustls::pki_types::CertificateDer<'static>,
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) {
    let stream = connect(server.addr, config).await.unwrap();
    let cert = presented(&stream);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    (cert, sender)
}

async fn deliver_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) -> (u16, serde_json::Value) {
    let req = hyper::Request::post(ROUTE)
        .header("host", enrichd_tests::tls::HOST)
        .header("authorization", format!("Bearer {SECRET}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(seed_payload().to_string())))
        .unwrap();
    let res = sender.send_request(req).await.expect("answer");
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn issue_13_reload_presents_the_new_certificate_and_keeps_open_connections() {
    let (a, b) = (TestCert::new(), TestCert::new());
    let server = start_https(&a, &config(), "").await;
    let both = client(&[&a, &b], &[]);
    let (first, mut open) = keep_alive(&server, both.clone()).await;
    assert_eq!(first, a.der);
    assert_eq!(deliver_on(&mut open).await.0, 200);

    b.write(server.dir());
    assert!(server.app.reload_tls().expect("the new pair loads"));
    let (next, mut fresh) = keep_alive(&server, both.clone()).await;
    assert_eq!(next, b.der, "the next connection sees the new certificate");
    assert_eq!(deliver_on(&mut fresh).await.0, 200);
    let (status, body) = deliver_on(&mut open).await;
    assert_eq!(status, 200, "the open connection keeps working: {body}");
}

#[tokio::test]
async fn issue_13_a_broken_new_certificate_is_refused_and_the_old_one_kept() {
    let (a, b) = (TestCert::new(), TestCert::new());
    let server = start_https(&a, &config(), "").await;
    let both = client(&[&a, &b], &[]);
    let dir = server.dir().to_owned();

    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    let err = server.app.reload_tls().unwrap_err().to_string();
    assert!(
        err.contains("cert.pem") && err.contains("CERTIFICATE"),
        "{err}"
    );
    // B's certificate with A's key: they do not belong together.
    std::fs::write(dir.join("cert.pem"), &b.cert_pem).unwrap();
    let err = server.app.reload_tls().unwrap_err().to_string();
    assert!(err.contains("does not go with"), "{err}");
    std::fs::remove_file(dir.join("key.pem")).unwrap();
    let err = server.app.reload_tls().unwrap_err().to_string();
    assert!(err.contains("key.pem"), "{err}");

    let (still, mut conn) = keep_alive(&server, both).await;
    assert_eq!(still, a.der, "the old certificate is kept");
    assert_eq!(deliver_on(&mut conn).await.0, 200);
}

#[tokio::test]
async fn issue_13_changed_certificate_files_are_picked_up_without_a_signal() {
    let (a, b) = (TestCert::new(), TestCert::new());
    let server = start_https(&a, &config(), "").await;
    let both = client(&[&a, &b], &[]);
    b.write(server.dir());
    eventually("the new certificate", CERT_POLL_INTERVAL * 3, || async {
        let (seen, _) = keep_alive(&server, both.clone()).await;
        (seen == b.der).then_some(())
    })
    .await;
}

#[tokio::test]
async fn issue_13_sighup_reloads_the_certificate_and_never_stops_enrichd() {
    let certs = tempfile::tempdir().unwrap();
    let cert = TestCert::new();
    cert.write(certs.path());
    let tls = format!(
        "{}\n[tls]\ncert = {:?}\nkey = {:?}\n",
        config(),
        certs.path().join("cert.pem"),
        certs.path().join("key.pem")
    );
    let https = Host::start(enrichd_bin!(), "https", &tls).await;
    let plain = Host::start(enrichd_bin!(), "plain", &config()).await;
    https.hangup();
    plain.hangup();
    let within = Duration::from_secs(10);
    eventually("the reload's log line", within, || async {
        let reloaded = https.log_lines("TLS certificate reloaded");
        reloaded
            .iter()
            .any(|l| l.contains("reload requested"))
            .then_some(())
    })
    .await;
    eventually("the plain host's log line", within, || async {
        (!plain.log_lines("config reloaded").is_empty()).then_some(())
    })
    .await;
    // Both still serve.
    let get = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let res = https_request(https.addr, client(&[&cert], &[]), get.as_bytes()).await;
    assert_eq!(res.status, 200);
    assert_eq!(enrichd_tests::get(plain.addr, "/healthz").await.status, 200);
}

#[tokio::test]
async fn issue_13_a_certificate_that_does_not_load_stops_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    TestCert::new().write(dir.path());
    std::fs::remove_file(dir.path().join("key.pem")).unwrap();
    let path = dir.path().join("enrichd.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n{}\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
        config()
    );
    std::fs::write(&path, text).unwrap();
    let config = enrichd::config::Config::load(&path).unwrap();
    let err = match enrichd::app::App::build(&config).await {
        Ok(_) => panic!("started without its key"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&dir.path().join("key.pem").display().to_string()),
        "{err}"
    );
}
