//! Issue 12, outbound HTTP (capability `http`): the `http-fetch` test
//! plugin, built from source, makes real requests from a real server to a
//! loopback HTTP server started here. Allowed, denied (host not listed, a
//! redirect outside the list, no grant), bounded in time (the call's
//! deadline), in bytes (response and request bodies), in count (per call)
//! and in connections (per plugin), and recorded in the delivery record.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use enrichd::plugin::policy::{DEFAULT_HTTP_REQUESTS_PER_CALL, DEFAULT_HTTP_RESPONSE_BYTES};
use enrichd_tests::sandwich::seed_with_id;
use enrichd_tests::{plugin_toml_as, TestServer};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use serde_json::Value;

/// A loopback HTTP service for the plugin to call:
/// - `/score…` answers `{"score":42}`;
/// - `/size/N` answers N bytes of `a`;
/// - `/slow` answers after 5 s;
/// - `/hold` answers after 400 ms (keeps its connection open meanwhile);
/// - `/redirect?to=URL` answers 302 to URL;
/// - a POST answers `received N` (the body's length).
///
/// It remembers every request it received (`METHOD path?query`).
struct Service {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Service {
    async fn start() -> Service {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let log = log.clone();
                        async move { Ok::<_, Infallible>(answer(req, &log).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Service { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    log: &Mutex<Vec<String>>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let line = format!("{} {}", req.method(), req.uri());
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(line);
    let ok = |body: Vec<u8>| Response::new(Full::new(Bytes::from(body)));
    if req.method() == hyper::Method::POST {
        let n = req
            .into_body()
            .collect()
            .await
            .map_or(0, |b| b.to_bytes().len());
        return ok(format!("received {n}").into_bytes());
    }
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            ok(b"late".to_vec())
        }
        "/hold" => {
            tokio::time::sleep(Duration::from_millis(400)).await;
            ok(b"held".to_vec())
        }
        "/redirect" => Response::builder()
            .status(302)
            .header("location", query.get("to").cloned().unwrap_or_default())
            .body(Full::new(Bytes::new()))
            .expect("response"),
        p if p.starts_with("/size/") => ok(vec![b'a'; p[6..].parse().unwrap_or(0)]),
        _ => ok(br#"{"score":42}"#.to_vec()),
    }
}

/// A route `/fetch` running `http-fetch` with `capabilities`, `extra` TOML
/// for its `[[plugin]]` table and `config` for its `[plugin.config]`.
fn config(capabilities: &[&str], extra: &str, config: &str) -> String {
    format!(
        "{}[plugin.config]\n{config}\n[[route]]\npath = \"/fetch\"\nchain = [{{ plugin = \"fetch\" }}]\n",
        plugin_toml_as("fetch", "http-fetch", capabilities, extra)
    )
}

/// `http` and `config` granted, `allowed` the only host.
fn granted(allowed: &str, extra: &str, plugin_config: &str) -> String {
    config(
        &["http", "config"],
        &format!("allowed_hosts = [{allowed:?}]\n{extra}"),
        plugin_config,
    )
}

/// Deliver to `/fetch`; the plugin's fields (`r0`, `r1`, …, `body`) and its
/// entry in the stored record.
async fn fetch(server: &TestServer, id: &str) -> (HashMap<String, String>, Value) {
    let res = server.deliver("/fetch", &seed_with_id(id)).await;
    assert_eq!(res.status, 200);
    let body = res.json();
    assert_eq!(body["status"], "success", "{body}");
    let fields = body["actions"][0]["value"]
        .as_object()
        .unwrap_or_else(|| panic!("one set-custom-fields action in {body}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let record = server.admin_get(&format!("/deliveries/{id}")).await.json();
    (fields, record["record"]["plugins"][0].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_an_allowed_request_gets_its_answer_and_is_recorded_without_its_query() {
    let svc = Service::start().await;
    let server = TestServer::start(&granted(
        &svc.origin(),
        "",
        &format!("url = {:?}", svc.url("/score?key=secret")),
    ))
    .await;
    let (fields, plugin) = fetch(&server, "http-allowed").await;
    assert_eq!(fields["r0"], "status=200 bytes=12", "{fields:?}");
    assert_eq!(fields["body"], r#"{"score":42}"#);
    assert_eq!(svc.seen(), ["GET /score?key=secret"]);
    let http = &plugin["http"];
    assert_eq!(http.as_array().map(Vec::len), Some(1), "{plugin}");
    assert_eq!(http[0]["method"], "GET");
    assert_eq!(http[0]["url"], svc.url("/score"), "no query string");
    assert_eq!(http[0]["status"], 200);
    assert_eq!(http[0]["response_bytes"], 12);
    assert!(http[0]["ms"].is_u64(), "{plugin}");
    assert!(http[0].get("error").is_none(), "{plugin}");
    assert!(plugin.get("limits_hit").is_none(), "{plugin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_request_without_the_grant_is_denied_and_never_sent() {
    let svc = Service::start().await;
    let server = TestServer::start(&config(
        &["config"],
        "",
        &format!("url = {:?}", svc.url("/score")),
    ))
    .await;
    let (fields, plugin) = fetch(&server, "http-no-grant").await;
    assert_eq!(fields["r0"], "error=ErrorCode::HttpRequestDenied");
    assert!(svc.seen().is_empty(), "{:?}", svc.seen());
    let error = plugin["http"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("`http` is not granted"), "{plugin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_hosts_outside_allowed_hosts_are_denied_redirects_included() {
    let (svc, outside) = (Service::start().await, Service::start().await);
    // The same host on another port is another origin.
    let server = TestServer::start(&format!(
        "{}\n{}",
        granted(
            &svc.origin(),
            "",
            &format!("url = {:?}", outside.url("/score"))
        ),
        granted(
            &svc.origin(),
            "",
            &format!(
                "url = {:?}\nfollow = \"yes\"\ncount = \"2\"",
                svc.url(&format!("/redirect?to={}", outside.url("/score")))
            )
        )
        .replace("name = \"fetch\"", "name = \"follow\"")
        .replace("/fetch\"", "/follow\"")
        .replace("plugin = \"fetch\"", "plugin = \"follow\""),
    ))
    .await;
    let (fields, plugin) = fetch(&server, "http-outside").await;
    assert_eq!(fields["r0"], "error=ErrorCode::HttpRequestDenied");
    assert!(plugin["http"][0]["error"]
        .as_str()
        .is_some_and(|e| e.contains("allowed_hosts")));

    let res = server
        .deliver("/follow", &seed_with_id("http-redirect"))
        .await;
    let body = res.json();
    let fields = &body["actions"][0]["value"];
    assert_eq!(fields["r0"], "status=302 bytes=0", "{body}");
    assert_eq!(fields["r1"], "error=ErrorCode::HttpRequestDenied", "{body}");
    assert!(outside.seen().is_empty(), "{:?}", outside.seen());
    assert_eq!(svc.seen().len(), 1, "{:?}", svc.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_slow_service_is_cut_at_the_calls_deadline_and_the_delivery_answers() {
    let svc = Service::start().await;
    let server = TestServer::start(&granted(
        &svc.origin(),
        "timeout_ms = 1500",
        &format!("url = {:?}", svc.url("/slow")),
    ))
    .await;
    let started = Instant::now();
    let (fields, plugin) = fetch(&server, "http-slow").await;
    let took = started.elapsed();
    // The request gets until the deadline less the host-call reserve
    // (a quarter of what is left, at most 250 ms): the guest still answers.
    assert!(
        fields["r0"].starts_with("error=ErrorCode::") && fields["r0"].contains("Timeout"),
        "{fields:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    assert_eq!(plugin["outcome"], "applied", "{plugin}");
    assert!(plugin["http"][0]["error"].is_string(), "{plugin}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_response_bodies_are_cut_at_http_response_bytes() {
    let svc = Service::start().await;
    let routes = [
        ("small", "http_response_bytes = 5000", "/size/5000"),
        ("cut", "http_response_bytes = 1000", "/size/5000"),
        ("default", "", "/size/2000000"),
    ];
    let mut toml = String::new();
    for (name, extra, path) in routes {
        toml.push_str(
            &granted(&svc.origin(), extra, &format!("url = {:?}", svc.url(path)))
                .replace("name = \"fetch\"", &format!("name = {name:?}"))
                .replace("/fetch\"", &format!("/{name}\""))
                .replace("plugin = \"fetch\"", &format!("plugin = {name:?}")),
        );
    }
    let server = TestServer::start(&toml).await;
    let fields = |id: &'static str, route: &'static str| {
        let server = &server;
        async move {
            let res = server.deliver(route, &seed_with_id(id)).await;
            let body = res.json();
            let record = server
                .admin_get(&format!("/deliveries/{id}?route={route}"))
                .await
                .json();
            (
                body["actions"][0]["value"].clone(),
                record["record"]["plugins"][0].clone(),
            )
        }
    };
    let (obeyed, plugin) = fields("http-small", "/small").await;
    assert_eq!(obeyed["r0"], "status=200 bytes=5000", "{obeyed}");
    assert!(plugin.get("limits_hit").is_none(), "{plugin}");

    // wasmtime-wasi-http 48 gives a body stream's error no `error-code`
    // (`http-error-code` answers none): the guest sees its text.
    let (cut, plugin) = fields("http-cut", "/cut").await;
    assert_eq!(
        cut["r0"],
        "status=200 bytes=1000 body-error=HTTP response body size exceeds limit: 1000 bytes",
        "{cut}"
    );
    assert_eq!(
        plugin["limits_hit"],
        serde_json::json!(["http_response_bytes"])
    );
    assert_eq!(plugin["http"][0]["response_bytes"], 1000, "{plugin}");

    let (default, plugin) = fields("http-default", "/default").await;
    assert_eq!(plugin["outcome"], "applied", "{plugin}");
    assert_eq!(
        default["r0"],
        format!(
            "status=200 bytes={DEFAULT_HTTP_RESPONSE_BYTES} body-error=HTTP response body size exceeds limit: {DEFAULT_HTTP_RESPONSE_BYTES} bytes"
        ),
        "{default}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_requests_per_call_request_bytes_and_connections_obeyed_and_violated() {
    let svc = Service::start().await;
    let n = DEFAULT_HTTP_REQUESTS_PER_CALL;
    let routes = [
        (
            "four",
            "",
            format!("count = \"{n}\"\nurl = {:?}", svc.url("/score")),
        ),
        (
            "five",
            "",
            format!("count = \"{}\"\nurl = {:?}", n + 1, svc.url("/score")),
        ),
        (
            "post-ok",
            "http_request_bytes = 1000",
            format!("post = \"1000\"\nurl = {:?}", svc.url("/p")),
        ),
        (
            "post-big",
            "http_request_bytes = 1000",
            format!("post = \"1001\"\nurl = {:?}", svc.url("/p")),
        ),
        (
            "two-conns",
            "http_connections = 2",
            format!(
                "parallel = \"yes\"\ncount = \"2\"\nurl = {:?}",
                svc.url("/hold")
            ),
        ),
        (
            "one-conn",
            "http_connections = 1",
            format!(
                "parallel = \"yes\"\ncount = \"2\"\nurl = {:?}",
                svc.url("/hold")
            ),
        ),
    ];
    let mut toml = String::new();
    for (name, extra, plugin_config) in &routes {
        toml.push_str(
            &granted(&svc.origin(), extra, plugin_config)
                .replace("name = \"fetch\"", &format!("name = {name:?}"))
                .replace("/fetch\"", &format!("/{name}\""))
                .replace("plugin = \"fetch\"", &format!("plugin = {name:?}")),
        );
    }
    let server = TestServer::start(&toml).await;
    let run = |name: &'static str| {
        let server = &server;
        async move {
            let id = format!("http-{name}");
            let route = format!("/{name}");
            let body = server.deliver(&route, &seed_with_id(&id)).await.json();
            let record = server
                .admin_get(&format!("/deliveries/{id}?route={route}"))
                .await
                .json();
            (
                body["actions"][0]["value"].clone(),
                record["record"]["plugins"][0].clone(),
            )
        }
    };

    let (four, plugin) = run("four").await;
    for i in 0..n {
        assert_eq!(four[format!("r{i}")], "status=200 bytes=12", "{four}");
    }
    assert!(plugin.get("limits_hit").is_none(), "{plugin}");
    let before = svc.seen().len();
    let (five, plugin) = run("five").await;
    assert_eq!(
        five[format!("r{n}")],
        "error=ErrorCode::HttpRequestDenied",
        "{five}"
    );
    assert_eq!(
        svc.seen().len() - before,
        n,
        "the one over the budget was not sent"
    );
    assert_eq!(
        plugin["limits_hit"],
        serde_json::json!(["http_requests_per_call"])
    );
    assert_eq!(plugin["http"].as_array().map(Vec::len), Some(n + 1));

    let (ok, _) = run("post-ok").await;
    assert_eq!(ok["r0"], "status=200 bytes=13", "{ok}");
    assert_eq!(ok["body"], "received 1000");
    let (big, plugin) = run("post-big").await;
    assert_eq!(
        big["r0"], "error=ErrorCode::HttpRequestBodySize(Some(1000))",
        "{big}"
    );
    assert_eq!(
        plugin["limits_hit"],
        serde_json::json!(["http_request_bytes"])
    );

    let (two, _) = run("two-conns").await;
    assert_eq!(
        (&two["r0"], &two["r1"]),
        (&"status=200 bytes=4".into(), &"status=200 bytes=4".into()),
        "{two}"
    );
    let (one, plugin) = run("one-conn").await;
    assert_eq!(one["r0"], "status=200 bytes=4", "{one}");
    assert_eq!(
        one["r1"], "error=ErrorCode::ConnectionLimitReached",
        "{one}"
    );
    assert_eq!(
        plugin["limits_hit"],
        serde_json::json!(["http_connections"])
    );
}

#[test]
fn issue_12_plugin_inspect_shows_the_http_capability_of_http_fetch() {
    let out = std::process::Command::new(enrichd_tests::enrichd_bin!())
        .args(["plugin", "inspect", "--json"])
        .arg(enrichd_tests::plugin_path("http-fetch"))
        .output()
        .expect("run enrichd plugin inspect");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["loadable"], true, "{json}");
    assert_eq!(
        json["capabilities"],
        serde_json::json!(["config", "http"]),
        "{json}"
    );
}
