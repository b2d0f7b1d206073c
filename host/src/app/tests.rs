//! The composition root against real listeners on 127.0.0.1:0, a real
//! sled store in a temp dir and a real Redis: the router sends each path to
//! its handler, the background jobs run, one shutdown stops both listeners
//! and the jobs, letting go of the storage; two roots on one Redis share
//! answers and the queue.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const SECRET: &str = "compose-test-secret";
const APP_KEY: &str = "compose-test-app-key";
const SEED: &str = include_str!("../../../examples/seed-payload.json");
const OPEN: &str = include_str!("../../../examples/engagelab/open.json");

/// A config with one delivery route and one EngageLab route, both with an
/// empty chain (no plugin to build), in `dir`; `storage` is more TOML.
fn config_with(dir: &std::path::Path, storage: &str) -> Config {
    let path = dir.join("enrichd.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\n\
             [[route]]\npath = \"/hook\"\nsecrets = [{{ value = \"{SECRET}\" }}]\nchain = []\n\
             [[engagelab]]\npath = \"/events\"\napp_keys = [{{ value = \"{APP_KEY}\" }}]\nchain = []\n\
             {storage}"
        ),
    )
    .unwrap();
    Config::load(&path).unwrap()
}

/// [`config_with`] on the default storage (sled under `dir`).
fn config(dir: &std::path::Path) -> Config {
    config_with(dir, "")
}

/// A running app: its public and admin addresses, the sender that stops
/// it, and the task that returns once it has stopped.
struct Running {
    addr: SocketAddr,
    admin: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Run `app` on fresh loopback listeners.
async fn serve(app: Arc<App>) -> Running {
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(public, Some(admin), app, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        admin: admin_addr,
        stop,
        task,
    }
}

impl Running {
    /// Stop it; `run` must return within 10 s.
    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("run returns after the shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Send one request (closing the connection) and return the raw answer.
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_string(&mut out))
        .await
        .expect("an answer within 30 s")
        .unwrap();
    out
}

fn status(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

fn event_headers() -> String {
    let ts = crate::engagelab::verify::wall_clock_ms() / 1000;
    format!(
        "X-WebHook-Timestamp: {ts}\r\nX-WebHook-AppKey: email\r\nX-WebHook-Signature: {}\r\n",
        crate::engagelab::verify::sign(APP_KEY, &ts.to_string())
    )
}

/// Wait (bounded) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < end, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_each_path_to_its_handler_and_one_shutdown_stops_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let app = Arc::new(App::build(&config).await.unwrap());
    let running = serve(app.clone()).await;
    let (addr, admin_addr) = (running.addr, running.admin);

    // The router: health, 404, each handler's own method check.
    assert_eq!(
        status(&request(addr, "GET", "/healthz", "", "").await),
        "200"
    );
    assert_eq!(
        status(&request(addr, "POST", "/healthz", "", "").await),
        "405"
    );
    assert_eq!(
        status(&request(addr, "POST", "/nowhere", "", "").await),
        "404"
    );
    assert_eq!(status(&request(addr, "GET", "/hook", "", "").await), "405");
    assert_eq!(
        status(&request(addr, "GET", "/events", "", "").await),
        "405"
    );
    assert_eq!(
        status(&request(addr, "POST", "/hook", "", SEED).await),
        "401"
    );

    // A delivery is answered once and replayed (the delivery state's store
    // and in-flight map are wired).
    let auth = format!("Authorization: Bearer {SECRET}\r\n");
    let first = request(addr, "POST", "/hook", &auth, SEED).await;
    assert_eq!(status(&first), "200", "{first}");
    assert!(!first.contains("x-enrichd-replay"), "{first}");
    let again = request(addr, "POST", "/hook", &auth, SEED).await;
    assert_eq!(status(&again), "200", "{again}");
    assert!(again.contains("x-enrichd-replay: true"), "{again}");
    assert_eq!(app.storage().answers.len().await.unwrap(), 1);

    // A callback is queued by the receiver and processed by the worker job
    // (woken by the shared state).
    let queued = request(addr, "POST", "/events", &event_headers(), OPEN).await;
    assert_eq!(status(&queued), "200", "{queued}");
    let stats = app.event_stats();
    until("the worker processed the callback", || {
        stats.processed.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;

    // The admin listener reads the same state.
    let admin_stats = request(admin_addr, "GET", "/stats", "", "").await;
    assert_eq!(status(&admin_stats), "200", "{admin_stats}");
    assert!(admin_stats.contains(r#""deliveries":1"#), "{admin_stats}");
    assert!(admin_stats.contains(r#""processed":1"#), "{admin_stats}");

    // One shutdown: both listeners close, `run` returns.
    running.stop().await;
    assert!(TcpStream::connect(addr).await.is_err(), "public still open");
    assert!(
        TcpStream::connect(admin_addr).await.is_err(),
        "admin still open"
    );

    // The jobs are gone with their storage handles: once the last App
    // handle is dropped, the data directory opens again (sled's lock is
    // let go by a background thread a moment later).
    drop(app);
    let end = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match App::build(&config).await {
            Ok(_) => break,
            Err(StartError::Store(_)) if std::time::Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the storage was not let go: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_without_an_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let app = Arc::new(App::build(&config(dir.path())).await.unwrap());
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = public.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(run(public, None::<TcpListener>, app, async {
        let _ = stopped.await;
    }));
    assert_eq!(
        status(&request(addr, "GET", "/healthz", "", "").await),
        "200"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("run returns after the shutdown")
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "public still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_roots_on_one_redis_share_answers_and_the_queue() {
    let url = crate::storage::redis::test_util::redis_or_skip!();
    let prefix = crate::storage::redis::test_util::unique_prefix("app-two-roots");
    let storage = format!("[storage]\nkind = \"redis\"\nurl = {url:?}\nkey_prefix = {prefix:?}\n");
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Arc::new(
        App::build(&config_with(dir_a.path(), &storage))
            .await
            .unwrap(),
    );
    let b = Arc::new(
        App::build(&config_with(dir_b.path(), &storage))
            .await
            .unwrap(),
    );
    let (host_a, host_b) = (serve(a.clone()).await, serve(b.clone()).await);

    // Answered by A, replayed by B byte for byte.
    let auth = format!("Authorization: Bearer {SECRET}\r\n");
    let first = request(host_a.addr, "POST", "/hook", &auth, SEED).await;
    assert_eq!(status(&first), "200", "{first}");
    let again = request(host_b.addr, "POST", "/hook", &auth, SEED).await;
    assert!(again.contains("x-enrichd-replay: true"), "{again}");
    let body = |answer: &str| answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    assert_eq!(body(&first), body(&again));

    // A callback queued through B is processed once, by one of the two
    // workers; the copy sent to A is a duplicate.
    let headers = event_headers();
    assert_eq!(
        status(&request(host_b.addr, "POST", "/events", &headers, OPEN).await),
        "200"
    );
    let dup = request(host_a.addr, "POST", "/events", &headers, OPEN).await;
    assert!(dup.contains("duplicate"), "{dup}");
    let processed = |app: &App| {
        app.event_stats()
            .processed
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    until("one worker processed the callback", || {
        processed(&a) + processed(&b) == 1
    })
    .await;
    assert_eq!(a.storage().events.len().await.unwrap(), 0);

    // Each admin listener reads the shared store.
    let stats = request(host_a.admin, "GET", "/stats", "", "").await;
    assert!(stats.contains(r#""storage":"redis""#), "{stats}");
    assert!(stats.contains(r#""deliveries":1"#), "{stats}");
    host_a.stop().await;
    host_b.stop().await;
    assert_eq!(processed(&a) + processed(&b), 1, "processed twice");
}
