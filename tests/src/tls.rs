//! HTTPS for the tests: certificates made on the spot (rcgen), an enrichd
//! serving `[tls]` with one, and TLS clients that trust chosen
//! certificates.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::{parse_response, plugin_toml, Response, TestServer, SECRET};

/// The name the test certificates are issued for: the loopback address
/// the servers listen on.
pub const HOST: &str = "127.0.0.1";

/// The route of [`one_route`].
pub const ROUTE: &str = "/emailgistics-webhook";

/// A config with one route ([`ROUTE`], the test secret) running
/// keyword-router alone: the seed payload gets one `assign` action.
pub fn one_route() -> String {
    format!(
        "{}\n[[route]]\npath = \"{ROUTE}\"\nsecrets = [{{ value = \"{SECRET}\" }}]\nchain = [{{ plugin = \"keyword-router\" }}]\n",
        plugin_toml(
            "keyword-router",
            &["config"],
            "[plugin.config]\nrules = \"coverage, policy => Policy Desk\"",
        )
    )
}

/// A self-signed certificate for [`HOST`] and its key.
pub struct TestCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER (what a client sees).
    pub der: CertificateDer<'static>,
}

impl TestCert {
    /// A fresh certificate and key.
    ///
    /// # Panics
    /// When rcgen fails.
    pub fn new() -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).expect("rcgen");
        TestCert {
            cert_pem: made.cert.pem(),
            key_pem: made.signing_key.serialize_pem(),
            der: made.cert.der().clone(),
        }
    }

    /// Write `cert.pem` and `key.pem` into `dir`.
    ///
    /// # Panics
    /// When a file cannot be written.
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("cert.pem"), &self.cert_pem).expect("write cert.pem");
        std::fs::write(dir.join("key.pem"), &self.key_pem).expect("write key.pem");
    }
}

impl Default for TestCert {
    fn default() -> Self {
        Self::new()
    }
}

/// Serve `config` (TOML without `listen` or `[tls]`) over HTTPS with
/// `cert` (written as `cert.pem`/`key.pem` beside the config); `tls` is more
/// of the `[tls]` table.
pub async fn start_https(cert: &TestCert, config: &str, tls: &str) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    cert.write(dir.path());
    let config = format!("{config}\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n{tls}\n");
    TestServer::start_in(dir, &config).await
}

/// A client that trusts `roots` only, speaking `versions` (all rustls
/// offers when empty) and offering ALPN `http/1.1`. No session resumption:
/// each connection makes a full handshake and sees the certificate the
/// server presents now.
pub fn client(
    roots: &[&TestCert],
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store.add(r.der.clone()).expect("trust the test cert");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider);
    let builder = if versions.is_empty() {
        builder.with_safe_default_protocol_versions()
    } else {
        builder.with_protocol_versions(versions)
    };
    let mut config = builder
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// A TLS connection to `addr` with `config`, handshake done.
pub async fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(HOST).expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// The certificate the server presented on `stream`.
pub fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates")[0]
        .clone()
}

/// Send `request` (raw bytes, `Connection: close`) over a new TLS
/// connection and read the response until the server closes.
///
/// # Panics
/// When the handshake fails or no response comes.
pub async fn https_request(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    request: &[u8],
) -> Response {
    let mut stream = connect(addr, config).await.expect("TLS handshake");
    stream.write_all(request).await.expect("send");
    let mut buf = Vec::new();
    // A server that closes without close_notify is still a complete answer.
    let _ = stream.read_to_end(&mut buf).await;
    parse_response(&buf)
}
