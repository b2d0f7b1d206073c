//! Issue 13, source-IP allowlist: a route with `allow_ips` answers only its
//! clients; others get 403 before the body is read or the secret checked,
//! and a counter moves. `X-Forwarded-For` names the client only when the
//! peer is a trusted proxy (the rightmost hop that is not one). Clients
//! are told apart by binding their sockets to 127.0.0.2, .3, .5 (Linux
//! routes all of 127/8 to lo).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use enrichd_tests::resources::log_capture;
use enrichd_tests::{
    delivery_request, parse_response, plugin_toml, post_request, seed_payload, Response,
    TestServer, SECRET,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const ALLOWED: &str = "127.0.0.2";
const OTHER: &str = "127.0.0.3";
const PROXY: &str = "127.0.0.5";

fn config() -> String {
    format!(
        "trusted_proxies = [\"{PROXY}/32\"]\nbody_read_timeout_ms = 20000\n{}\
         [[route]]\npath = \"/hook\"\nsecrets = [{{ value = \"{SECRET}\" }}]\n\
         chain = [{{ plugin = \"echo\" }}]\nallow_ips = [\"{ALLOWED}/32\", \"2001:db8::/32\"]\n\
         [[route]]\npath = \"/open\"\nsecrets = [{{ value = \"{SECRET}\" }}]\nchain = [{{ plugin = \"echo\" }}]\n\
         [[engagelab]]\npath = \"/el\"\napp_keys = [{{ value = \"an-app-key\" }}]\nallow_ips = [\"{ALLOWED}\"]\n",
        plugin_toml("echo", &[], "")
    )
}

/// Send `request` to `to` from the local address `local` and read the answer.
async fn send_from(local: &str, to: SocketAddr, request: &[u8]) -> Response {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(local.parse().unwrap(), 0))
        .unwrap();
    let mut stream = socket.connect(to).await.expect("connect");
    let _ = stream.write_all(request).await;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut buf))
        .await
        .expect("answered within 60 s")
        .ok();
    parse_response(&buf)
}

/// A delivery to `path` at `to` with the secret and extra headers.
fn delivery(to: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let auth = format!("Bearer {SECRET}");
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    post_request(to, path, &all, seed_payload().to_string().as_bytes())
}

async fn source_stats(server: &TestServer) -> serde_json::Value {
    server.admin_get("/stats").await.json()["sourceIp"].clone()
}

#[tokio::test]
async fn issue_13_allowlist_answers_its_clients_and_refuses_others_before_the_body() {
    let server = TestServer::start(&config()).await;
    let ok = send_from(
        ALLOWED,
        server.addr,
        &delivery_request(server.addr, "/hook", &seed_payload()),
    )
    .await;
    assert_eq!(ok.status, 200, "{:?}", String::from_utf8_lossy(&ok.body));

    let refused = send_from(
        OTHER,
        server.addr,
        &delivery_request(server.addr, "/hook", &seed_payload()),
    )
    .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.json()["status"], "error");
    assert_eq!(refused.json()["message"], "source address not allowed");

    // No secret: still 403, the secret is never looked at.
    let no_secret = post_request(server.addr, "/hook", &[], b"{}");
    assert_eq!(send_from(OTHER, server.addr, &no_secret).await.status, 403);
    // From the allowed address the secret is checked.
    assert_eq!(
        send_from(ALLOWED, server.addr, &no_secret).await.status,
        401
    );

    // A head announcing a 900 KB body that never comes: answered at once,
    // not after the 20 s body-read timeout (the body is not read).
    let started = Instant::now();
    let head = "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 900000\r\n\r\n";
    let res = send_from(OTHER, server.addr, head.as_bytes()).await;
    assert_eq!(res.status, 403);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The EngageLab route has its own list; routes without one answer all.
    assert_eq!(
        send_from(
            OTHER,
            server.addr,
            &post_request(server.addr, "/el", &[], b"{}")
        )
        .await
        .status,
        403
    );
    assert_eq!(
        send_from(
            ALLOWED,
            server.addr,
            &post_request(server.addr, "/el", &[], b"{}")
        )
        .await
        .status,
        401
    );
    let open = send_from(
        OTHER,
        server.addr,
        &delivery_request(server.addr, "/open", &seed_payload()),
    )
    .await;
    assert_eq!(open.status, 200);
    assert_eq!(
        send_from(
            OTHER,
            server.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .await
        .status,
        200
    );

    // One call for /hook's allowed delivery, one for /open.
    assert_eq!(server.app.plugin_calls("echo"), Some(2));
    assert_eq!(
        source_stats(&server).await,
        serde_json::json!({
            "/hook": {"notAllowed": 3, "badForwardedFor": 0},
            "/el": {"notAllowed": 1, "badForwardedFor": 0},
        })
    );
}

#[tokio::test]
async fn issue_13_forwarded_for_counts_only_from_a_trusted_proxy() {
    let server = TestServer::start(&config()).await;
    let xff = |v: &'static str| [("X-Forwarded-For", v)];
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: [Case; 7] = [
        // Through the proxy: the rightmost hop that is not a proxy.
        (
            PROXY,
            &xff("127.0.0.3, 127.0.0.2"),
            200,
            "client behind the proxy",
        ),
        (
            PROXY,
            &xff("127.0.0.2, 127.0.0.5"),
            200,
            "proxy hops are skipped",
        ),
        // A client writing an allowed address to the left is not believed.
        (
            PROXY,
            &xff("127.0.0.2, 127.0.0.3"),
            403,
            "spoofed leftmost hop",
        ),
        // From an untrusted peer the header is ignored.
        (
            OTHER,
            &xff("127.0.0.2"),
            403,
            "header from an untrusted peer",
        ),
        // No header: the client is the proxy itself.
        (PROXY, &[], 403, "the proxy itself"),
        (PROXY, &xff("::ffff:127.0.0.2"), 200, "mapped IPv6 hop"),
        // A trusted proxy sending garbage: 400, counted apart.
        (PROXY, &xff("127.0.0.2, not-an-ip"), 400, "malformed header"),
    ];
    for (from, headers, want, what) in cases {
        let res = send_from(from, server.addr, &delivery(server.addr, "/hook", headers)).await;
        assert_eq!(
            res.status,
            want,
            "{what}: {:?}",
            String::from_utf8_lossy(&res.body)
        );
    }
    assert_eq!(
        source_stats(&server).await["/hook"],
        serde_json::json!({"notAllowed": 3, "badForwardedFor": 1})
    );
}

#[tokio::test]
async fn issue_13_a_flood_of_refusals_is_counted_but_logged_on_a_budget() {
    let logs = log_capture();
    let config = format!(
        "{}[[route]]\npath = \"/flood\"\nchain = [{{ plugin = \"echo\" }}]\nallow_ips = [\"{ALLOWED}\"]\n",
        plugin_toml("echo", &[], "")
    );
    let server = TestServer::start(&config).await;
    let refused = 200;
    for _ in 0..refused {
        let res = send_from(
            OTHER,
            server.addr,
            &post_request(server.addr, "/flood", &[], b"{}"),
        )
        .await;
        assert_eq!(res.status, 403);
    }
    assert_eq!(source_stats(&server).await["/flood"]["notAllowed"], refused);
    let lines: Vec<String> = logs
        .lines_matching("request refused by allow_ips")
        .into_iter()
        .filter(|l| l.contains("route=/flood"))
        .collect();
    assert_eq!(
        lines.len() as u64,
        enrichd::source_ip::LOG_LINES_PER_WINDOW,
        "{lines:#?}"
    );
}

#[tokio::test]
async fn issue_13_ipv4_clients_of_a_dual_stack_listener_match_ipv4_entries() {
    let server = TestServer::start(&config()).await;
    // A second, dual-stack listener for the same app: it sees IPv4 clients
    // as ::ffff:127.0.0.x.
    let Ok(v6) = tokio::net::TcpListener::bind("[::]:0").await else {
        println!("skipped: no IPv6 on this machine");
        return;
    };
    let port = v6.local_addr().unwrap().port();
    tokio::spawn(enrichd::app::run(
        v6,
        None::<tokio::net::TcpListener>,
        server.app.clone(),
        std::future::pending(),
    ));
    let dual = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
    let ok = send_from(ALLOWED, dual, &delivery(dual, "/hook", &[])).await;
    assert_eq!(ok.status, 200, "{:?}", String::from_utf8_lossy(&ok.body));
    let refused = send_from(OTHER, dual, &delivery(dual, "/hook", &[])).await;
    assert_eq!(refused.status, 403);
    assert_eq!(server.app.plugin_calls("echo"), Some(1));
}
