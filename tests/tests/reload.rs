//! Issue 13, hot reload: `POST /reload` on the admin listener, `enrichd
//! reload --config`, and SIGHUP read the config file again and swap to it
//! at once; a config that does not load changes nothing; deliveries under
//! way during a reload all get their answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use enrichd_tests::process::{eventually, Host};
use enrichd_tests::{
    enrichd_bin, plugin_toml, plugin_toml_as, post, seed_payload, Response, TestServer, SECRET,
    SHARED_CACHE,
};
use serde_json::{json, Value};

const ROUTE: &str = "/r";

/// A config with plugin `p` (keyword-router with `rules`, or another
/// component) on [`ROUTE`], accepting `secrets`.
fn config(plugin: &str, secrets: &[&str]) -> String {
    let secrets: Vec<String> = secrets
        .iter()
        .map(|s| format!("{{ value = {s:?} }}"))
        .collect();
    format!(
        "{plugin}\n[[route]]\npath = \"{ROUTE}\"\nsecrets = [{}]\nchain = [{{ plugin = \"p\" }}]\n",
        secrets.join(", ")
    )
}

/// keyword-router as `p`, sending "coverage" mail to `desk`.
fn router(desk: &str) -> String {
    plugin_toml_as(
        "p",
        "keyword-router",
        &["config"],
        &format!("[plugin.config]\nrules = \"coverage => {desk}\""),
    )
}

/// Replace the server's config file (as `TestServer::start` writes it).
fn rewrite(server: &TestServer, config: &str) {
    rewrite_listening(server, "127.0.0.1:0", config);
}

/// [`rewrite`], with `listen = listen`.
fn rewrite_listening(server: &TestServer, listen: &str, config: &str) {
    std::fs::write(
        server.dir().join("enrichd.toml"),
        format!("listen = {listen:?}\ncache_dir = {SHARED_CACHE:?}\n{config}"),
    )
    .unwrap();
}

/// `POST /reload` on the admin listener: its status and JSON.
async fn reload(server: &TestServer) -> (u16, Value) {
    let res = post(server.admin_addr, "/reload", &[], b"").await;
    (res.status, res.json())
}

/// The seed delivery with an id never sent before (so it is not answered
/// from the idempotency store).
fn fresh() -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut payload = seed_payload();
    payload["id"] = json!(format!("reload-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    payload
}

fn text(res: &Response) -> String {
    String::from_utf8_lossy(&res.body).into_owned()
}

/// The desk keyword-router assigned the seed delivery to (its first
/// action's users), or the first action's name for another plugin.
fn assigned(res: &Response) -> String {
    assert_eq!(res.status, 200, "{}", text(res));
    let body = res.json();
    let action = &body["actions"][0];
    match action["value"]["mainAssignment"]["users"][0].as_str() {
        Some(desk) => desk.to_owned(),
        None => action["name"].as_str().unwrap_or_default().to_owned(),
    }
}

#[tokio::test]
async fn issue_13_reload_swaps_a_plugin_and_the_next_answers_change() {
    let server = TestServer::start(&config(&router("Policy Desk"), &[SECRET])).await;
    assert_eq!(
        assigned(&server.deliver(ROUTE, &fresh()).await),
        "Policy Desk"
    );

    // New config values for the same component.
    rewrite(&server, &config(&router("Claims Desk"), &[SECRET]));
    let (status, answer) = reload(&server).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reloaded"], true, "{answer}");
    assert_eq!(answer["changed"]["generation"], 2);
    assert_eq!(answer["changed"]["plugins"]["loaded"], json!(["p"]));
    assert_eq!(answer["changed"]["routes"]["kept"], json!([ROUTE]));
    assert_eq!(
        assigned(&server.deliver(ROUTE, &fresh()).await),
        "Claims Desk"
    );

    // Another component under the same name.
    rewrite(
        &server,
        &config(&plugin_toml_as("p", "echo", &[], ""), &[SECRET]),
    );
    let (status, answer) = reload(&server).await;
    assert_eq!(
        (status, &answer["reloaded"]),
        (200, &json!(true)),
        "{answer}"
    );
    assert_eq!(assigned(&server.deliver(ROUTE, &fresh()).await), "echo");

    // Nothing changed: the loaded plugin is reused as it is (its call
    // counter goes on).
    let calls = server.app.plugin_calls("p").unwrap();
    let (_, answer) = reload(&server).await;
    assert_eq!(
        answer["changed"]["plugins"]["reused"],
        json!(["p"]),
        "{answer}"
    );
    assert_eq!(
        answer["changed"]["plugins"]["loaded"],
        json!([]),
        "{answer}"
    );
    assert_eq!(server.app.plugin_calls("p"), Some(calls));

    // A route added and one removed.
    let two_routes = format!(
        "{}[[route]]\npath = \"/other\"\nsecrets = [{{ value = \"{SECRET}\" }}]\nchain = [{{ plugin = \"p\" }}]\n",
        plugin_toml_as("p", "echo", &[], "")
    );
    rewrite(&server, &two_routes);
    let (_, answer) = reload(&server).await;
    assert_eq!(
        answer["changed"]["routes"]["added"],
        json!(["/other"]),
        "{answer}"
    );
    assert_eq!(
        answer["changed"]["routes"]["removed"],
        json!([ROUTE]),
        "{answer}"
    );
    assert_eq!(server.deliver(ROUTE, &fresh()).await.status, 404);
    assert_eq!(assigned(&server.deliver("/other", &fresh()).await), "echo");
}

#[tokio::test]
async fn issue_13_a_config_that_does_not_load_changes_nothing() {
    let good = config(&router("Policy Desk"), &[SECRET]);
    let server = TestServer::start(&good).await;
    let pin = "0".repeat(64);
    let missing = server.dir().join("missing.wasm");
    let broken = [
        ("this is [not toml".to_owned(), "invalid config"),
        (
            config(&plugin_toml_at_missing(&missing), &[SECRET]),
            "missing.wasm",
        ),
        (
            config(
                &plugin_toml_as(
                    "p",
                    "keyword-router",
                    &["config"],
                    &format!("sha256 = \"{pin}\""),
                ),
                &[SECRET],
            ),
            &pin,
        ),
        (
            format!("{good}\n[tls]\ncert = \"nope.pem\"\nkey = \"nope.pem\"\n"),
            "nope.pem",
        ),
        (
            config(
                &plugin_toml_as(
                    "p",
                    "keyword-router",
                    &["config"],
                    "max_memory_bytes = 1073741824",
                ),
                &[SECRET],
            ),
            "max_memory_bytes",
        ),
        (
            config(
                &plugin_toml_as("p", "keyword-router", &["config"], "fuel = 50000000"),
                &[SECRET],
            ),
            "does not meter fuel",
        ),
        (
            format!("max_connections = 7\n{good}"),
            "max_connections changed: that needs a restart",
        ),
    ];
    for (text, why) in &broken {
        rewrite(&server, text);
        let (status, answer) = reload(&server).await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["reloaded"], false, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(why), "{why:?} not in {error:?}");
        assert_eq!(server.app.generation().number, 1);
        assert_eq!(
            assigned(&server.deliver(ROUTE, &fresh()).await),
            "Policy Desk"
        );
    }
}

/// A `[[plugin]]` `p` whose component does not exist.
fn plugin_toml_at_missing(path: &std::path::Path) -> String {
    enrichd_tests::plugin_toml_at("p", path, &["config"], "")
}

#[tokio::test]
async fn issue_13_secret_rotation_by_reload() {
    let (old, new) = ("old-secret-0123456789", "new-secret-9876543210");
    let server = TestServer::start(&config(&router("Policy Desk"), &[old])).await;
    let with = |secret: &str| {
        let auth = format!("Bearer {secret}");
        let body = fresh().to_string();
        let addr = server.addr;
        async move {
            post(
                addr,
                ROUTE,
                &[
                    ("Authorization", auth.as_str()),
                    ("Content-Type", "application/json"),
                ],
                body.as_bytes(),
            )
            .await
            .status
        }
    };
    assert_eq!((with(old).await, with(new).await), (200, 401));

    rewrite(&server, &config(&router("Policy Desk"), &[old, new]));
    assert_eq!(reload(&server).await.0, 200);
    assert_eq!((with(old).await, with(new).await), (200, 200));

    rewrite(&server, &config(&router("Policy Desk"), &[new]));
    assert_eq!(reload(&server).await.0, 200);
    assert_eq!((with(old).await, with(new).await), (401, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_reload_under_continuous_load_fails_no_request() {
    let server = Arc::new(TestServer::start(&config(&router("Policy Desk"), &[SECRET])).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (server, stop) = (server.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut sent, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let res = server.deliver(ROUTE, &fresh()).await;
                    sent += 1;
                    if res.status != 200
                        || res.json()["actions"].as_array().is_none_or(Vec::is_empty)
                    {
                        failed.push(text(&res));
                    }
                }
                (sent, failed)
            })
        })
        .collect();
    // Alternate between two plugins, each reload loading one anew.
    let plugins = [
        plugin_toml_as("p", "echo", &[], ""),
        router("Claims Desk"),
        plugin_toml_as("p", "echo", &[], ""),
        router("Policy Desk"),
    ];
    for plugin in &plugins {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rewrite(&server, &config(plugin, &[SECRET]));
        let (status, answer) = reload(&server).await;
        assert_eq!(status, 200, "{answer}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for sender in senders {
        let (sent, failed) = sender.await.unwrap();
        assert!(failed.is_empty(), "failed deliveries: {failed:?}");
        total += sent;
    }
    assert!(
        total >= 20,
        "only {total} deliveries were sent during the reloads"
    );
    assert_eq!(server.app.generation().number, 5);
}

/// A [`Host`]'s config file rewritten (it keeps `cache_dir`; the listeners
/// come from the command line).
fn rewrite_host(host: &Host, config: &str) {
    std::fs::write(
        host.config_path(),
        format!("cache_dir = {SHARED_CACHE:?}\n{config}"),
    )
    .unwrap();
}

#[tokio::test]
async fn issue_13_enrichd_reload_command_end_to_end() {
    let host = Host::start(
        enrichd_bin!(),
        "A",
        &config(&router("Policy Desk"), &[SECRET]),
    )
    .await;
    // The command reads `admin_listen` from the config it is given.
    let dir = tempfile::tempdir().unwrap();
    let client = dir.path().join("client.toml");
    std::fs::write(&client, format!("admin_listen = \"{}\"\n", host.admin_addr)).unwrap();
    let run = move || {
        let out = std::process::Command::new(enrichd_bin!())
            .args(["reload", "--config"])
            .arg(&client)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };

    rewrite_host(&host, &config(&router("Claims Desk"), &[SECRET]));
    let (code, stdout, stderr) = tokio::task::spawn_blocking(run.clone()).await.unwrap();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["changed"]["plugins"]["loaded"], json!(["p"]));
    assert_eq!(
        assigned(&host.deliver(ROUTE, &fresh()).await),
        "Claims Desk"
    );

    let missing = plugin_toml_at_missing(std::path::Path::new("/nonexistent/p.wasm"));
    rewrite_host(&host, &config(&missing, &[SECRET]));
    let (code, stdout, stderr) = tokio::task::spawn_blocking(run).await.unwrap();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("\"reloaded\": false"), "{stdout}");
    assert!(stderr.contains("/nonexistent/p.wasm"), "{stderr}");
    assert!(!host.log_lines("config reload refused").is_empty());
    assert_eq!(
        assigned(&host.deliver(ROUTE, &fresh()).await),
        "Claims Desk"
    );
}

#[tokio::test]
async fn issue_13_sighup_reloads_a_running_serve() {
    let host = Host::start(
        enrichd_bin!(),
        "A",
        &config(&router("Policy Desk"), &[SECRET]),
    )
    .await;
    assert_eq!(
        assigned(&host.deliver(ROUTE, &fresh()).await),
        "Policy Desk"
    );
    rewrite_host(&host, &config(&router("Claims Desk"), &[SECRET]));
    let pid = host.pid().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("the reload to take", Duration::from_secs(120), || async {
        (assigned(&host.deliver(ROUTE, &fresh()).await) == "Claims Desk").then_some(())
    })
    .await;
    assert!(!host.log_lines("config reloaded").is_empty());
    // Still serving after the signal.
    assert_eq!(host.admin_get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_a_delivery_in_flight_finishes_on_the_generation_it_started_on() {
    let slow = plugin_toml_as(
        "p",
        "hostile",
        &["config"],
        "[plugin.config]\nmode = \"spin\"\nms = \"1500\"",
    );
    let server = Arc::new(TestServer::start(&config(&slow, &[SECRET])).await);
    let in_flight = {
        let server = server.clone();
        tokio::spawn(async move { server.deliver(ROUTE, &fresh()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The route and its plugin are gone from the new config.
    let other = format!(
        "{}[[route]]\npath = \"/other\"\nchain = [{{ plugin = \"echo\" }}]\n",
        plugin_toml("echo", &[], "")
    );
    rewrite(&server, &other);
    let (status, answer) = reload(&server).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"]["plugins"]["removed"], json!(["p"]));
    assert!(
        !in_flight.is_finished(),
        "the reload waited for the delivery"
    );
    assert_eq!(server.deliver(ROUTE, &fresh()).await.status, 404);
    // The delivery that started before the reload ran the old chain.
    assert_eq!(assigned(&in_flight.await.unwrap()), "spin");
}

#[tokio::test]
async fn issue_13_reload_swaps_allow_ips() {
    let server = TestServer::start(&config(&router("Policy Desk"), &[SECRET])).await;
    assert_eq!(server.deliver(ROUTE, &fresh()).await.status, 200);
    let fenced = format!(
        "{}allow_ips = [\"192.0.2.0/24\"]\n",
        config(&router("Policy Desk"), &[SECRET])
    );
    rewrite(&server, &fenced);
    assert_eq!(reload(&server).await.0, 200);
    assert_eq!(server.deliver(ROUTE, &fresh()).await.status, 403);
    let stats = server.admin_get("/stats").await.json();
    assert_eq!(stats["sourceIp"][ROUTE]["notAllowed"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_a_queued_callback_whose_route_a_reload_removed_is_counted_and_logged() {
    use enrichd_tests::process::{engagelab_example, engagelab_headers};
    let key = "an-app-key";
    let engagelab = format!(
        "{}[[engagelab]]\npath = \"/el\"\napp_keys = [{{ value = \"{key}\" }}]\nchain = [{{ plugin = \"slow\" }}]\n",
        plugin_toml_as(
            "slow",
            "hostile",
            &["config"],
            "[plugin.config]\nmode = \"spin\"\nms = \"1500\""
        )
    );
    let route_only = config(&router("Policy Desk"), &[SECRET]);
    let server = TestServer::start(&format!("{route_only}{engagelab}")).await;
    let send = |kind: &str| {
        let (headers, body, addr) = (engagelab_headers(key), engagelab_example(kind), server.addr);
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            post(addr, "/el", &headers, body.as_bytes()).await.status
        }
    };
    // The first is taken by the worker (1.5 s in its plugin), the second
    // waits in the queue.
    assert_eq!(send("open").await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(send("click").await, 200);
    rewrite(&server, &route_only);
    let (status, answer) = reload(&server).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"]["engagelab"]["removed"], json!(["/el"]));
    eventually("the queue to drain", Duration::from_secs(30), || async {
        (server.queued().await == 0).then_some(())
    })
    .await;
    let stats = server.admin_get("/stats").await.json();
    // The one in the worker's hands finished on its chain; the other was
    // dropped, counted (and logged at warn).
    assert_eq!(stats["engagelab"]["processed"], 1, "{stats}");
    assert_eq!(stats["engagelab"]["routeGone"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_concurrent_reloads_are_serialized() {
    let server = TestServer::start(&config(&router("Policy Desk"), &[SECRET])).await;
    rewrite(&server, &config(&router("Claims Desk"), &[SECRET]));
    let (a, b, c) = tokio::join!(reload(&server), reload(&server), reload(&server));
    let answers = [a, b, c];
    // Each built on the one before: three generations, none lost.
    let mut generations: Vec<u64> = answers
        .iter()
        .map(|(status, answer)| {
            assert_eq!(*status, 200, "{answer}");
            answer["changed"]["generation"].as_u64().unwrap()
        })
        .collect();
    generations.sort_unstable();
    assert_eq!(generations, [2, 3, 4]);
    assert_eq!(server.app.generation().number, 4);
    assert_eq!(
        assigned(&server.deliver(ROUTE, &fresh()).await),
        "Claims Desk"
    );
}

/// A loopback address nobody listens on (bound, then closed).
async fn free_addr() -> std::net::SocketAddr {
    let probe = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    probe.local_addr().unwrap()
}

/// Whether `addr` refuses new connections (polled: the replaced listener
/// closes on its own task, just after the reload's answer).
async fn refuses(addr: std::net::SocketAddr) {
    eventually(
        "the old listener refuses",
        Duration::from_secs(5),
        || async {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
}

fn healthz(addr: std::net::SocketAddr) -> Vec<u8> {
    format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_reload_to_a_new_listen_port_moves_the_public_listener() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let slow = plugin_toml_as(
        "p",
        "hostile",
        &["config"],
        "[plugin.config]\nmode = \"spin\"\nms = \"1500\"",
    );
    let server = TestServer::start(&config(&slow, &[SECRET])).await;
    let old = server.addr;
    // A keep-alive connection on the old port, its delivery in flight.
    let mut kept = tokio::net::TcpStream::connect(old).await.unwrap();
    let request = String::from_utf8(enrichd_tests::delivery_request(old, ROUTE, &fresh()))
        .unwrap()
        .replace("Connection: close", "Connection: keep-alive");
    kept.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let new = free_addr().await;
    rewrite_listening(&server, &new.to_string(), &config(&slow, &[SECRET]));
    let (status, answer) = reload(&server).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["changed"]["listeners"],
        json!({"listen": new.to_string()})
    );
    assert_eq!(answer["changed"]["plugins"]["reused"], json!(["p"]));
    let res = enrichd_tests::try_raw_request(new, &healthz(new)).await;
    assert_eq!(res.unwrap().status, 200);
    refuses(old).await;
    // The delivery in flight on the old port finishes there, then the
    // drained connection closes.
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), kept.read_to_end(&mut buf))
        .await
        .expect("the old connection closes after its answer")
        .unwrap();
    assert_eq!(assigned(&enrichd_tests::parse_response(&buf)), "spin");
}

#[tokio::test]
async fn issue_13_a_listen_port_taken_refuses_the_reload() {
    let good = config(&router("Policy Desk"), &[SECRET]);
    let server = TestServer::start(&good).await;
    let holder = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken = holder.local_addr().unwrap();
    rewrite_listening(
        &server,
        &taken.to_string(),
        &config(&router("Other"), &[SECRET]),
    );
    let (status, answer) = reload(&server).await;
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().unwrap();
    let want = format!("cannot listen on {taken} (listen)");
    assert!(error.contains(&want), "{error}");
    // Nothing was swapped: the old port serves the old routes.
    assert_eq!(server.app.generation().number, 1);
    assert_eq!(
        assigned(&server.deliver(ROUTE, &fresh()).await),
        "Policy Desk"
    );
}

#[tokio::test]
async fn issue_13_reload_moves_and_turns_off_the_admin_listener() {
    let good = config(&router("Policy Desk"), &[SECRET]);
    let server = TestServer::start(&good).await;
    let moved = free_addr().await;
    rewrite(&server, &format!("admin_listen = \"{moved}\"\n{good}"));
    let (status, answer) = reload(&server).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["changed"]["listeners"],
        json!({"admin_listen": moved.to_string()})
    );
    assert_eq!(enrichd_tests::get(moved, "/stats").await.status, 200);
    refuses(server.admin_addr).await;
    // The public listener was not touched.
    assert_eq!(
        assigned(&server.deliver(ROUTE, &fresh()).await),
        "Policy Desk"
    );

    rewrite(&server, &format!("admin_listen = \"off\"\n{good}"));
    let answer = post(moved, "/reload", &[], b"").await.json();
    assert_eq!(
        answer["changed"]["listeners"],
        json!({"admin_listen": "off"})
    );
    refuses(moved).await;
    assert_eq!(server.deliver(ROUTE, &fresh()).await.status, 200);
}

/// A reload that sets `admin_token` (as moving the admin listener off
/// loopback requires) is refused: the admin listener checks the token it
/// started with, so taking it would serve the admin endpoints unguarded.
#[tokio::test]
async fn issue_14_a_reload_that_changes_admin_token_is_refused() {
    let good = config(&router("Policy Desk"), &[SECRET]);
    let server = TestServer::start(&good).await;
    let open = format!("admin_listen = \"0.0.0.0:0\"\nadmin_token = {{ value = \"t0k\" }}\n{good}");
    rewrite(&server, &open);
    let (status, answer) = reload(&server).await;
    assert_eq!(status, 422, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("admin_token changed: that needs a restart"),
        "{answer}"
    );
    assert_eq!(
        enrichd_tests::get(server.admin_addr, "/stats").await.status,
        200
    );
}

#[tokio::test]
async fn issue_13_reload_turns_tls_on_then_follows_a_new_certificate_path() {
    use enrichd_tests::tls::{client, connect, https_request, one_route, presented, TestCert};
    let server = TestServer::start(&one_route()).await;
    let addr = server.addr;
    assert_eq!(enrichd_tests::get(addr, "/healthz").await.status, 200);
    let cert = TestCert::new();
    cert.write(server.dir());
    let with_tls =
        |cert: &str, key: &str| format!("{}\n[tls]\ncert = {cert:?}\nkey = {key:?}\n", one_route());
    rewrite(&server, &with_tls("cert.pem", "key.pem"));
    let (status, answer) = reload(&server).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"]["tls"], true, "{answer}");
    assert_eq!(answer["changed"]["listeners"], json!({}), "not re-bound");
    let res = https_request(addr, client(&[&cert], &[]), &healthz(addr)).await;
    assert_eq!(res.status, 200);
    let plain = enrichd_tests::try_raw_request(addr, &healthz(addr)).await;
    assert!(
        plain.is_err(),
        "plain HTTP answered on the TLS port: {plain:?}"
    );

    // A new certificate path: the next connection gets it, and the file
    // watcher follows the new files.
    let second = TestCert::new();
    std::fs::write(server.dir().join("cert2.pem"), &second.cert_pem).unwrap();
    std::fs::write(server.dir().join("key2.pem"), &second.key_pem).unwrap();
    rewrite(&server, &with_tls("cert2.pem", "key2.pem"));
    assert_eq!(reload(&server).await.0, 200);
    let stream = connect(addr, client(&[&second], &[])).await.unwrap();
    assert_eq!(presented(&stream), second.der);
    let third = TestCert::new();
    std::fs::write(server.dir().join("cert2.pem"), &third.cert_pem).unwrap();
    std::fs::write(server.dir().join("key2.pem"), &third.key_pem).unwrap();
    let within = enrichd::app::tls::CERT_POLL_INTERVAL * 3;
    eventually("the watcher serves the renewed file", within, || async {
        let stream = connect(addr, client(&[&third], &[])).await.ok()?;
        (presented(&stream) == third.der).then_some(())
    })
    .await;

    // TLS turned off: plain HTTP again, on the same port.
    rewrite(&server, &one_route());
    assert_eq!(reload(&server).await.0, 200);
    assert_eq!(enrichd_tests::get(addr, "/healthz").await.status, 200);
}

#[tokio::test]
async fn issue_13_reload_raising_min_version_refuses_a_tls_1_2_client() {
    use enrichd_tests::tls::{client, connect, one_route, start_https, TestCert};
    let cert = TestCert::new();
    let server = start_https(&cert, &one_route(), "").await;
    let only_12 = client(&[&cert], &[&rustls::version::TLS12]);
    let before = connect(server.addr, only_12.clone()).await;
    before.expect("TLS 1.2 is served before");
    let tls = "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nmin_version = \"1.3\"\n";
    rewrite(&server, &format!("{}\n{tls}", one_route()));
    let (status, answer) = reload(&server).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"]["tls"], true, "{answer}");
    assert!(connect(server.addr, only_12).await.is_err());
    let only_13 = client(&[&cert], &[&rustls::version::TLS13]);
    connect(server.addr, only_13)
        .await
        .expect("TLS 1.3 is served");
}
