//! The transport against a real listener on 127.0.0.1:0 and raw clients:
//! body limits and deadlines, the health reserve, the graceful drain.

use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::*;

/// A server answering every request by reading its body under `limits`
/// and a deadline of `budget` named "the test budget"; 200 echoes the body
/// length. Dropping the sender stops it.
async fn start(
    cap: ConnectionCap,
    limits: BodyLimits,
    budget: Duration,
) -> (std::net::SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        serve_capped(
            listener,
            shutdown,
            Duration::from_secs(5),
            &cap,
            move |req| async move {
                if req.uri().path() == HEALTHZ_PATH {
                    return json(StatusCode::OK, r#"{"status":"ok"}"#.into());
                }
                let deadline = Deadline::after(Instant::now(), budget, "the test budget");
                match read_body(req, &limits, &deadline).await {
                    Ok(body) => json(StatusCode::OK, format!("{}", body.len()).into()),
                    Err(res) => res,
                }
            },
        )
        .await
        .unwrap();
    });
    (addr, stop, task)
}

const LIMITS: BodyLimits = BodyLimits {
    max_bytes: 1000,
    read_timeout: Duration::from_secs(10),
};

/// Send `head` (and `body`), read the answer to the end of the connection
/// or 10 s.
async fn exchange(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    read_answer(&mut conn).await
}

async fn read_answer(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(until, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // One answer is enough: its body is short JSON.
                let text = String::from_utf8_lossy(&out);
                if text.contains("\r\n\r\n") && text.trim_end().ends_with('}') {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn post(len: usize) -> String {
    format!("POST /hook HTTP/1.1\r\nhost: x\r\ncontent-length: {len}\r\n\r\n")
}

#[tokio::test]
async fn a_body_within_the_limits_is_read() {
    let (addr, _stop, _task) = start(ConnectionCap::new(4), LIMITS, Duration::from_secs(5)).await;
    let answer = exchange(addr, &post(5), b"hello").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with('5'), "{answer}");
}

#[tokio::test]
async fn a_declared_or_actual_body_over_the_limit_is_413() {
    let (addr, _stop, _task) = start(ConnectionCap::new(4), LIMITS, Duration::from_secs(5)).await;
    let declared = exchange(addr, &post(1001), b"").await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    assert!(declared.contains("exceeds 1000 bytes"), "{declared}");
    let chunked = "POST /hook HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n";
    let body = format!("7d1\r\n{}\r\n0\r\n\r\n", "x".repeat(2001));
    let actual = exchange(addr, chunked, body.as_bytes()).await;
    assert!(actual.starts_with("HTTP/1.1 413"), "{actual}");
}

#[tokio::test]
async fn a_trickling_body_ends_at_the_handler_deadline_when_it_comes_first() {
    // The body read timeout is 10 s; the handler's own budget 1 s (as
    // EngageLab's 3 s comes before the default body timeout).
    let (addr, _stop, _task) = start(ConnectionCap::new(4), LIMITS, Duration::from_secs(1)).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(post(100).as_bytes()).await.unwrap();
    conn.write_all(b"x").await.unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut conn).await;
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("the test budget of 1000 ms"), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test]
async fn a_trickling_body_ends_at_the_body_read_timeout_when_it_comes_first() {
    let limits = BodyLimits {
        read_timeout: Duration::from_millis(500),
        ..LIMITS
    };
    let (addr, _stop, _task) = start(ConnectionCap::new(4), limits, Duration::from_secs(30)).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(post(100).as_bytes()).await.unwrap();
    let answer = read_answer(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_read_timeout_ms = 500"), "{answer}");
}

#[tokio::test]
async fn past_the_cap_the_reserve_answers_only_healthz() {
    let cap = ConnectionCap::new(1);
    let (addr, _stop, _task) = start(cap.clone(), LIMITS, Duration::from_secs(30)).await;
    // Holds the one ordinary slot: its body never comes.
    let mut holder = TcpStream::connect(addr).await.unwrap();
    holder.write_all(post(10).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = exchange(addr, &post(2), b"hi").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(
        refused.to_lowercase().contains("retry-after: 5"),
        "{refused}"
    );
    let health = exchange(addr, "GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", b"").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert_eq!(cap.refused(), 0, "reserve connections are not refused");
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let (addr, stop, task) = start(ConnectionCap::new(4), LIMITS, Duration::from_secs(30)).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(post(5).as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The listener is closed; the connection in flight still gets its answer.
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    conn.write_all(b"hello").await.unwrap();
    let answer = read_answer(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve returns once the connection is done")
        .unwrap();
}

/// Connections handed over a channel: any `AsyncRead + AsyncWrite` stream
/// (here in-memory pipes) is served like a TCP one, as a TLS stream would be.
struct Pipes(tokio::sync::mpsc::Receiver<tokio::io::DuplexStream>);

impl Accept for Pipes {
    type Stream = tokio::io::DuplexStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Stream, std::net::SocketAddr)> {
        match self.0.recv().await {
            Some(pipe) => Ok((pipe, ([127, 0, 0, 1], 0).into())),
            // No more connections: wait for the shutdown.
            None => std::future::pending().await,
        }
    }
}

#[tokio::test]
async fn the_accept_loop_serves_any_stream() {
    let (connect, accepted) = tokio::sync::mpsc::channel(1);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        Pipes(accepted),
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
        |req| async move {
            let deadline =
                Deadline::after(Instant::now(), Duration::from_secs(5), "the test budget");
            match read_body(req, &LIMITS, &deadline).await {
                Ok(body) => json(StatusCode::OK, body),
                Err(res) => res,
            }
        },
    ));
    let (mut client, pipe) = tokio::io::duplex(4096);
    connect.send(pipe).await.unwrap();
    let body = r#"{"over":"a pipe"}"#;
    client
        .write_all(
            format!(
                "{}{body}",
                post(body.len()).replace("HTTP/1.1\r\n", "HTTP/1.1\r\nconnection: close\r\n")
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut answer))
        .await
        .expect("answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with(body), "{answer}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
