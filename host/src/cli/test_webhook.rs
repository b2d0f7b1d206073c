//! `enrichd test-webhook`: what Emailgistics Admin's "Test Webhook" button
//! does, from the command line. POST the canned sample `received` payload
//! with the bearer secret, read the answer, and check it as Emailgistics
//! would (HTTP 200, JSON, `status` and `message`), and each action against
//! the action reference ([`crate::emailgistics::validate`]). The exit
//! status says which step failed ([`Failure::code`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::emailgistics::actions::Action;
use crate::emailgistics::validate::{check, Caps};
use crate::http::error_chain;

/// The canned sample delivery: the Emailgistics documentation's sample
/// `received` payload (`examples/seed-payload.json`).
const SAMPLE_PAYLOAD: &str = include_str!("../../../examples/seed-payload.json");

/// The largest answer read. An envelope is a few KiB; enrichd's own is at
/// most its chain's plugin outputs (1 MiB each by default), so 8 MiB fits
/// a long chain and stops a broken endpoint streaming into memory.
pub const MAX_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Most bytes of a non-200 answer's body shown: enough for an error JSON.
const SHOWN_BODY_BYTES: usize = 300;

/// The first line of a successful test, as Emailgistics Admin words it.
pub const SUCCESS: &str = "Success! Mock request sent and webhook response received and validated.";

/// `enrichd test-webhook`
#[derive(Debug, clap::Args)]
pub struct TestWebhookArgs {
    /// The webhook URL, as configured in Emailgistics (`https://…`).
    #[arg(long)]
    pub url: String,
    /// The bearer secret.
    #[arg(long, conflicts_with = "secret_env")]
    pub secret: Option<String>,
    /// Read the bearer secret from this environment variable (keeps it out
    /// of the process list and shell history).
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
    /// Send this payload (JSON) instead of the sample delivery.
    #[arg(long)]
    pub payload: Option<PathBuf>,
    /// Do not verify the server's certificate (a self-signed test set-up).
    #[arg(long, conflicts_with = "ca")]
    pub insecure: bool,
    /// Trust only the certificate authorities (or self-signed certificate)
    /// in this PEM file, not the system's.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// How long to wait for the whole answer; Emailgistics waits 100 s.
    #[arg(long, default_value = "100s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The help's examples and the exit statuses.
pub const HELP: &str = "\
Examples:
  enrichd test-webhook --url https://enrichd.example.com/emailgistics-webhook --secret-env HOOK_SECRET
  enrichd test-webhook --url https://127.0.0.1:8443/emailgistics-webhook --ca /etc/enrichd/cert.pem \\
      --secret 'f72jip905bn85.23po0xY1aQ7bL' --payload examples/seed-payload.json

Exit status:
  0  success: HTTP 200, a valid envelope, every action valid
  1  the test could not run (bad arguments, unreadable --payload or --ca, unset --secret-env)
  2  no answer: connection refused, DNS, TLS (certificate, version), or the timeout
  3  an HTTP status other than 200 (401: the secret is wrong)
  4  a malformed answer: not JSON, larger than 8 MiB, `status` or `message` missing or not a string,
     `status` neither \"success\" nor \"error\", `actions` not a list
  5  `status: \"error\"` (the endpoint's message is shown verbatim)
  6  an action that is not valid against the Emailgistics action reference";

/// Why a test failed, by the step that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer came (connection, TLS, timeout).
    Connection(String),
    /// An HTTP status other than 200.
    Status(String),
    /// The answer is not a valid envelope.
    Malformed(String),
    /// `status: "error"`, with the endpoint's message.
    Error(String),
    /// Actions that do not validate (one line each).
    Actions(Vec<String>),
}

impl Failure {
    /// The process exit status (see [`HELP`]).
    pub fn code(&self) -> i32 {
        match self {
            Failure::Connection(_) => 2,
            Failure::Status(_) => 3,
            Failure::Malformed(_) => 4,
            Failure::Error(_) => 5,
            Failure::Actions(_) => 6,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connection(e) => write!(f, "Connection error: {e}"),
            Failure::Status(e) => write!(f, "Non-200 response: {e}"),
            Failure::Malformed(e) => write!(f, "Malformed response: {e}"),
            Failure::Error(message) => {
                write!(f, "The endpoint answered status \"error\":\n{message}")
            }
            Failure::Actions(lines) => {
                write!(f, "Invalid actions in the response:")?;
                lines.iter().try_for_each(|l| write!(f, "\n  {l}"))
            }
        }
    }
}

/// Run the test and exit with its status.
pub(super) fn run(args: TestWebhookArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match runtime.block_on(test(&args))? {
        Ok(report) => {
            println!("{report}");
            Ok(())
        }
        Err(failure) => {
            eprintln!("{failure}");
            std::process::exit(failure.code());
        }
    }
}

/// Send the test delivery and check the answer: the success report, or why
/// it failed. The outer error: the test could not run.
pub async fn test(args: &TestWebhookArgs) -> anyhow::Result<Result<String, Failure>> {
    let uri: hyper::Uri = args
        .url
        .parse()
        .with_context(|| format!("--url {:?}", args.url))?;
    if uri.scheme_str() != Some("https") && uri.scheme_str() != Some("http") {
        anyhow::bail!("--url {:?}: must be an https:// (or http://) URL", args.url);
    }
    let plain = if uri.scheme_str() == Some("http") {
        "\nnote: plain http://; Emailgistics only calls https:// URLs"
    } else {
        ""
    };
    let payload = match &args.payload {
        Some(path) => {
            let text =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_slice::<serde_json::Value>(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            Bytes::from(text)
        }
        None => Bytes::from_static(SAMPLE_PAYLOAD.as_bytes()),
    };
    let secret = match (&args.secret, &args.secret_env) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(var)) => {
            Some(std::env::var(var).with_context(|| format!("--secret-env {var}: not set"))?)
        }
        (None, None) => None,
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(args)?)
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut request = hyper::Request::post(uri)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("enrichd-test-webhook/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(secret) = secret {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {secret}"));
    }
    let request = request.body(Full::new(payload)).context("the request")?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| Failure::Connection(error_chain(&e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Failure::Malformed(format!(
                        "the answer is larger than {MAX_ANSWER_BYTES} bytes"
                    ))
                } else {
                    Failure::Connection(format!("reading the answer: {}", error_chain(e.as_ref())))
                }
            })?
            .to_bytes();
        Ok((status, body))
    };
    let (status, body) = match tokio::time::timeout(args.timeout, exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(failure)) => return Ok(Err(failure)),
        Err(_) => {
            return Ok(Err(Failure::Connection(format!(
                "no answer within {}",
                humantime::format_duration(args.timeout)
            ))))
        }
    };
    Ok(judge(status, &body).map(|report| report + plain))
}

/// Check an answer as Emailgistics does, and its actions against the
/// action reference.
fn judge(status: hyper::StatusCode, body: &[u8]) -> Result<String, Failure> {
    if status != hyper::StatusCode::OK {
        let text = crate::text::cut(
            &String::from_utf8_lossy(body),
            SHOWN_BODY_BYTES,
            "shown",
            SHOWN_BODY_BYTES,
        );
        return Err(Failure::Status(format!("HTTP {status}: {text}")));
    }
    let envelope: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| Failure::Malformed(format!("not JSON ({e})")))?;
    let field = |name: &str| match envelope.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(Failure::Malformed(format!("`{name}` is not a string"))),
        None => Err(Failure::Malformed(format!("`{name}` is missing"))),
    };
    let (state, message) = (field("status")?, field("message")?);
    match state {
        "success" => {}
        "error" => return Err(Failure::Error(message.to_owned())),
        other => {
            return Err(Failure::Malformed(format!(
                "`status` is {other:?}; it must be \"success\" or \"error\""
            )))
        }
    }
    let actions = match envelope.get("actions") {
        None | Some(serde_json::Value::Null) => &[][..],
        Some(serde_json::Value::Array(a)) => a.as_slice(),
        Some(_) => return Err(Failure::Malformed("`actions` is not a list".into())),
    };
    let mut summary = Vec::new();
    let mut invalid = Vec::new();
    for (i, raw) in actions.iter().enumerate() {
        let n = i + 1;
        let read = serde_json::from_value::<Action>(raw.clone()).map_err(|e| e.to_string());
        match read.and_then(|a| check(a, &Caps::default()).map_err(|r| r.to_string())) {
            Ok(checked) => {
                let a = &checked.action;
                let name = a
                    .name
                    .as_deref()
                    .map(|n| format!(" {n:?}"))
                    .unwrap_or_default();
                let value = serde_json::to_value(a)
                    .map(|v| v["value"].to_string())
                    .unwrap_or_default();
                let value = crate::text::cut(&value, SHOWN_BODY_BYTES, "shown", SHOWN_BODY_BYTES);
                summary.push(format!("  {n}. {}{name}: {value}", a.kind.type_name()));
                summary.extend(
                    checked
                        .notes
                        .iter()
                        .map(|note| format!("     note: {note}")),
                );
            }
            Err(reason) => invalid.push(format!("action {n}: {reason}")),
        }
    }
    if !invalid.is_empty() {
        return Err(Failure::Actions(invalid));
    }
    let mut report = format!("{SUCCESS}\nmessage: {message}\nactions: {}", actions.len());
    for line in summary {
        report.push('\n');
        report.push_str(&line);
    }
    Ok(report)
}

/// The TLS client settings the arguments ask for.
fn tls_config(args: &TestWebhookArgs) -> anyhow::Result<ClientConfig> {
    let provider = crate::http::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?;
    let config = if args.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth()
    } else if let Some(ca) = &args.ca {
        builder
            .with_root_certificates(roots(ca)?)
            .with_no_client_auth()
    } else {
        use hyper_rustls::ConfigBuilderExt;
        builder
            .with_native_roots()
            .context("cannot load the system's certificate authorities")?
            .with_no_client_auth()
    };
    Ok(config)
}

/// The certificates of a PEM file, as trust anchors.
fn roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("--ca {}", path.display()))?;
    for cert in certs {
        store
            .add(cert)
            .with_context(|| format!("--ca {}", path.display()))?;
    }
    anyhow::ensure!(
        !store.is_empty(),
        "--ca {}: no CERTIFICATE in it",
        path.display()
    );
    Ok(store)
}

/// `--insecure`: any certificate is accepted; the handshake's signatures
/// are still checked (a broken server is still caught).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
