//! Issue 4: kill -9 the real `enrichd` binary repeatedly while deliveries
//! are in flight. The store must reopen every time, and every delivery that
//! was answered before the kill must be replayed byte for byte.
//!
//! The route has no plugins: what is under test is the store, and this test
//! must not depend on the wasm build of the tests crate.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

const ROUNDS: usize = 4;
const CLIENTS: usize = 8;
/// How long load runs before each kill.
const LOAD_FOR: Duration = Duration::from_millis(400);

struct Server {
    child: Child,
    addr: SocketAddr,
}

fn start(config: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_enrichd"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start enrichd");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        assert!(Instant::now() < deadline, "enrichd did not start in time");
        let line = lines
            .next()
            .expect("enrichd exited before listening")
            .expect("log line");
        if let Some(rest) = line.split("enrichd listening addr=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("addr")
                .parse()
                .expect("socket addr");
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

/// POST a delivery with this id; `None` when the server is gone.
async fn deliver(addr: SocketAddr, id: &str) -> Option<(bool, Bytes)> {
    let body = format!(
        r#"{{"id":"{id}","event":"received","mailbox":"info@pinnilly.com","subject":"s","conversationId":"c",
            "sender":{{"emailAddress":{{"name":"R","address":"r@x.com"}}}},
            "from":{{"emailAddress":{{"name":"R","address":"r@x.com"}}}}}}"#
    );
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(conn);
    let req = hyper::Request::post("/hook")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    let res = sender.send_request(req).await.ok()?;
    if res.status() != 200 {
        return None;
    }
    let replayed = res.headers().contains_key("x-enrichd-replay");
    let bytes = res.into_body().collect().await.ok()?.to_bytes();
    Some((replayed, bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_then_every_answered_delivery_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("enrichd.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"off\"\n[[route]]\npath = \"/hook\"\n",
    )
    .unwrap();

    let mut answered: BTreeMap<String, Bytes> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut server = start(&config);
        // Everything answered in earlier rounds, before their kills, replays.
        for (id, body) in &answered {
            let (replayed, again) = deliver(server.addr, id)
                .await
                .expect("answered after restart");
            assert!(replayed, "round {round}: {id} was not replayed");
            assert_eq!(&again, body, "round {round}: {id} changed");
        }
        // Load: clients sending new deliveries until the kill.
        let stop_at = Instant::now() + LOAD_FOR;
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..CLIENTS {
            let addr = server.addr;
            clients.spawn(async move {
                let mut got = Vec::new();
                for n in 0.. {
                    let id = format!("r{round}-c{c}-n{n}");
                    match deliver(addr, &id).await {
                        Some((false, body)) => got.push((id, body)),
                        Some((true, _)) => panic!("{id} is new, yet was replayed"),
                        None => break,
                    }
                    if Instant::now() > stop_at + Duration::from_secs(5) {
                        break;
                    }
                }
                got
            });
        }
        tokio::time::sleep(LOAD_FOR).await;
        server.child.kill().expect("kill -9"); // SIGKILL on Unix
        server.child.wait().expect("reap");
        let before = answered.len();
        for got in clients.join_all().await {
            answered.extend(got);
        }
        assert!(
            answered.len() > before,
            "round {round}: no delivery was answered under load"
        );
    }
    // A final restart checks the last round's answers too.
    let mut server = start(&config);
    for (id, body) in &answered {
        let (replayed, again) = deliver(server.addr, id).await.expect("answered");
        assert!(replayed && again == *body, "{id}");
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    println!(
        "{} deliveries answered across {ROUNDS} kill -9 rounds, all replayed",
        answered.len()
    );
}
