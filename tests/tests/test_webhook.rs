//! Issue 13 (`enrichd test-webhook`): the real binary against a real
//! enrichd over HTTPS (success; a wrong secret's 401; an untrusted
//! certificate), and against loopback stubs giving each kind of bad answer:
//! every failure has its message and its exit status.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use enrichd::cli::test_webhook::{MAX_ANSWER_BYTES, SUCCESS};
use enrichd_tests::tls::{one_route, start_https, TestCert, ROUTE};
use enrichd_tests::{enrichd_bin, SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a run printed, and its exit status.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run `enrichd test-webhook ARGS` with `env` set.
async fn test_webhook(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(enrichd_bin!());
    cmd.arg("test-webhook").args(args).env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run enrichd"))
        .await
        .unwrap();
    Run {
        code: out.status.code().expect("exited"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A loopback endpoint that reads each request and answers `answer` (raw
/// HTTP), or never answers when it is empty.
async fn stub(answer: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                // The request is small: one read gets its head and the
                // sample payload, or enough of it.
                let mut buf = vec![0; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                if answer.is_empty() {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let _ = conn.write_all(&answer).await;
            });
        }
    });
    addr
}

/// A 200 answer with `body` as JSON.
fn answer(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// `test-webhook` against a stub answering `body`, with the test secret.
async fn against(raw: Vec<u8>, extra: &[&str]) -> Run {
    let url = format!("http://{}/hook", stub(raw).await);
    let mut args = vec!["--url", &url, "--secret", SECRET];
    args.extend_from_slice(extra);
    test_webhook(&args, &[]).await
}

#[tokio::test]
async fn issue_13_test_webhook_succeeds_against_enrichd_over_https() {
    let cert = TestCert::new();
    let server = start_https(&cert, &one_route(), "").await;
    let url = format!("https://127.0.0.1:{}{ROUTE}", server.addr.port());
    let ca = server.dir().join("cert.pem");
    let ca = ca.to_str().unwrap();

    let run = test_webhook(&["--url", &url, "--secret", SECRET, "--ca", ca], &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.starts_with(SUCCESS), "{}", run.stdout);
    assert!(
        run.stdout.contains("actions: 1\n  1. assign"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Policy Desk"), "{}", run.stdout);

    // The secret from the environment; the certificate not verified.
    let env = [("HOOK_SECRET", SECRET)];
    let run = test_webhook(
        &["--url", &url, "--secret-env", "HOOK_SECRET", "--insecure"],
        &env,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);

    // A wrong secret: the 401 is reported.
    let run = test_webhook(
        &["--url", &url, "--secret", "wrong-secret-0123", "--ca", ca],
        &[],
    )
    .await;
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("Non-200 response: HTTP 401"),
        "{}",
        run.stderr
    );

    // Not trusting the certificate: a TLS error, no request.
    let other = TestCert::new();
    let dir = tempfile::tempdir().unwrap();
    other.write(dir.path());
    let other_ca = dir.path().join("cert.pem");
    let run = test_webhook(
        &[
            "--url",
            &url,
            "--secret",
            SECRET,
            "--ca",
            other_ca.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("Connection error") && run.stderr.contains("invalid peer certificate"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn issue_13_test_webhook_names_each_bad_answer_with_its_exit_status() {
    let run = against(answer("{\"status\": \"success\""), &[]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("Malformed response: not JSON"),
        "{}",
        run.stderr
    );

    let run = against(answer(r#"{"status": "success"}"#), &[]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("`message` is missing"),
        "{}",
        run.stderr
    );

    let run = against(answer(r#"{"status": "ok", "message": "fine"}"#), &[]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("must be \"success\" or \"error\""),
        "{}",
        run.stderr
    );

    let run = against(
        answer(r#"{"status": "error", "message": "CRM service unavailable."}"#),
        &[],
    )
    .await;
    assert_eq!(run.code, 5, "{}", run.stderr);
    assert!(
        run.stderr.ends_with("\nCRM service unavailable.\n"),
        "verbatim: {}",
        run.stderr
    );

    let actions = r#"{"status": "success", "message": "m", "actions": [
        {"type": "tag", "value": {"tags": ["VIP"]}},
        {"type": "tag", "value": {"tags": []}},
        {"type": "label", "value": {}}]}"#;
    let run = against(answer(actions), &[]).await;
    assert_eq!(run.code, 6, "{}", run.stderr);
    assert!(run.stderr.contains("action 2: tag.tags"), "{}", run.stderr);
    assert!(
        run.stderr.contains("action 3: unknown variant `label`"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("action 1"), "{}", run.stderr);

    let run = against(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy".into(),
        &[],
    )
    .await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains("HTTP 503 Service Unavailable: busy"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn issue_13_test_webhook_that_cannot_run_exits_1() {
    let args = [
        "--url",
        "https://127.0.0.1:9/x",
        "--secret-env",
        "ENRICHD_TEST_UNSET_VAR",
    ];
    let run = test_webhook(&args, &[]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("--secret-env ENRICHD_TEST_UNSET_VAR: not set"),
        "{}",
        run.stderr
    );
    let run = test_webhook(&["--url", "ftp://127.0.0.1/x"], &[]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("must be an https://"), "{}", run.stderr);
}

#[tokio::test]
async fn issue_13_test_webhook_bounds_its_wait_and_the_answer_size() {
    // Within the bounds: an answer at the size cap is read.
    let pad = "x".repeat(MAX_ANSWER_BYTES - 40);
    let at_cap = format!(r#"{{"status": "success", "message": "{pad}"}}"#);
    let fits = against(answer(&at_cap), &[]).await;
    assert_eq!(fits.code, 0, "{}", fits.stderr);
    assert!(
        fits.stdout
            .ends_with("Emailgistics only calls https:// URLs\n"),
        "{}",
        fits.stdout
    );

    let over = format!(r#"{{"status": "success", "message": "{pad}", "more": "0123456789"}}"#);
    let run = against(answer(&over), &[]).await;
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("larger than {MAX_ANSWER_BYTES} bytes")),
        "{}",
        run.stderr
    );

    let started = std::time::Instant::now();
    let run = against(Vec::new(), &["--timeout", "300ms"]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("no answer within 300ms"),
        "{}",
        run.stderr
    );
    // The process starts, waits 300 ms and exits: well within 4 s.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Nobody listening.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{closed}/hook");
    let run = test_webhook(&["--url", &url, "--secret", SECRET], &[]).await;
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("Connection error"), "{}", run.stderr);
}
