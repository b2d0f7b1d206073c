//! Issue 5: the CRM data layer end to end: a real loopback REST CRM that
//! can be made slow, failing or down; caching with TTLs on tokio's clock;
//! fallbacks that keep the deadline; provenance reaching `crm-enrich`.

use std::time::Duration;

use tokio::time::Instant;

use enrichd_tests::crm_server::{FakeCrm, Mode};
use enrichd_tests::{plugin_toml, seed_payload, TestServer};
use serde_json::{json, Value};

const SENDER: &str = "rstorrie@pinnilly.com";

fn customer() -> Value {
    json!({"claimNumber": "CLM-9", "policyNumber": "POL-9", "region": "EMEA", "tier": "gold"})
}

/// crm-enrich alone on `/hook`, over the loopback CRM.
fn config(crm: &FakeCrm, top: &str, source: &str, cache: &str) -> String {
    format!(
        "{top}\n{}{}[[route]]\npath = \"/hook\"\nchain = [{{ plugin = \"crm-enrich\" }}]\n",
        crm.source_toml(source, cache),
        plugin_toml("crm-enrich", &["crm", "log"], ""),
    )
}

fn delivery(id: &str, from: &str) -> Value {
    let mut p = seed_payload();
    p["id"] = json!(id);
    p["from"]["emailAddress"]["address"] = json!(from);
    p["sender"]["emailAddress"]["address"] = json!(from);
    p
}

fn names(body: &Value) -> Vec<&str> {
    body["actions"]
        .as_array()
        .map(|a| a.iter().map(|x| x["name"].as_str().unwrap_or("")).collect())
        .unwrap_or_default()
}

/// Move tokio's clock (which the CRM cache's freshness follows) forward.
async fn jump(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// The plugin's own message for a delivery, from the delivery log.
async fn plugin_message(server: &TestServer, id: &str) -> String {
    let d = server.admin_get(&format!("/deliveries/{id}")).await.json();
    d["record"]["plugins"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_backend_slower_than_the_budget_gets_the_stale_value_within_the_deadline() {
    let crm = FakeCrm::start().await;
    crm.add_customer(SENDER, customer());
    let server = TestServer::start(&config(
        &crm,
        "delivery_budget_ms = 1500",
        "timeout_ms = 10000",
        "ttl_secs = 60",
    ))
    .await;

    let fresh = server
        .deliver("/hook", &delivery("d1", SENDER))
        .await
        .json();
    assert_eq!(names(&fresh), ["Apply CRM context", "Tag VIP customers"]);

    jump(Duration::from_secs(61)).await; // the cached answer is no longer fresh
    crm.set_mode(Mode::Slow(Duration::from_secs(10)));
    let started = Instant::now();
    let res = server.deliver("/hook", &delivery("d2", SENDER)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "answered after the budget: {took:?}"
    );
    let body = res.json();
    assert_eq!(body["status"], "success");
    assert_eq!(
        names(&body),
        [
            "Apply CRM context",
            "Tag VIP customers",
            "Tag stale CRM data"
        ]
    );
    assert_eq!(body["actions"][2]["value"]["tags"], json!(["CRM-stale"]));
    assert_eq!(body["actions"][0]["value"]["claimNumber"], "CLM-9");
    // 61 s on the jumped clock, plus the second or so spent waiting.
    let message = plugin_message(&server, "d2").await;
    assert!(
        [61, 62]
            .iter()
            .any(|age| message
                == format!("enriched from a stale CRM record for {SENDER} ({age} s old)")),
        "{message}"
    );
}

#[tokio::test]
async fn a_backend_that_is_down_or_failing_gets_the_stale_value() {
    let crm = FakeCrm::start().await;
    crm.add_customer(SENDER, customer());
    let server = TestServer::start(&config(&crm, "", "", "ttl_secs = 60")).await;
    server.deliver("/hook", &delivery("d1", SENDER)).await;
    for (i, mode) in [Mode::Down, Mode::Failing].into_iter().enumerate() {
        jump(Duration::from_secs(61)).await;
        crm.set_mode(mode);
        let body = server
            .deliver("/hook", &delivery(&format!("d{}", i + 2), SENDER))
            .await
            .json();
        assert_eq!(
            names(&body).last(),
            Some(&"Tag stale CRM data"),
            "{mode:?}: {body}"
        );
    }
    let stats = server.admin_get("/stats").await.json();
    assert_eq!(stats["crm"]["remote"]["staleServed"], 2);
    assert_eq!(stats["crm"]["remote"]["backendErrors"], 2);
}

#[tokio::test]
async fn with_no_record_and_no_stale_value_the_domain_answers() {
    let crm = FakeCrm::start().await;
    crm.add_company(
        "pinnilly.com",
        json!({"region": "EMEA", "tier": "corporate"}),
    );
    let server = TestServer::start(&config(&crm, "", "", "")).await;
    let body = server
        .deliver("/hook", &delivery("d1", "newcomer@pinnilly.com"))
        .await
        .json();
    assert_eq!(names(&body), ["Apply CRM context from the sender's domain"]);
    assert_eq!(body["actions"][0]["value"], json!({"region": "EMEA"}));
    assert_eq!(
        plugin_message(&server, "d1").await,
        "no CRM record for newcomer@pinnilly.com; used its domain's record"
    );
    let stats = server.admin_get("/stats").await.json();
    assert_eq!(stats["crm"]["remote"]["domainFallbacks"], 1);
}

#[tokio::test]
async fn with_nothing_to_go_on_there_is_no_enrichment_and_a_clear_message() {
    let crm = FakeCrm::start().await;
    let server = TestServer::start(&config(&crm, "", "", "")).await;
    let body = server
        .deliver("/hook", &delivery("d1", "stranger@nowhere.example"))
        .await
        .json();
    assert_eq!(body["status"], "success");
    assert_eq!(body["message"], "no actions");
    assert!(body.get("actions").is_none());
    assert_eq!(
        plugin_message(&server, "d1").await,
        "no CRM record for stranger@nowhere.example"
    );

    // The same with the backend down and nothing cached: still an answer.
    crm.set_mode(Mode::Down);
    let body = server
        .deliver("/hook", &delivery("d2", "other@elsewhere.example"))
        .await
        .json();
    assert_eq!(body["message"], "no actions");
}

#[tokio::test]
async fn found_and_not_found_answers_are_cached_for_their_ttls() {
    let crm = FakeCrm::start().await;
    crm.add_customer(SENDER, customer());
    let server = TestServer::start(&config(
        &crm,
        "",
        "",
        "ttl_secs = 60\nnegative_ttl_secs = 5",
    ))
    .await;

    server.deliver("/hook", &delivery("a1", SENDER)).await;
    server.deliver("/hook", &delivery("a2", SENDER)).await;
    assert_eq!(crm.email_calls(), 1, "the second lookup is a cache hit");
    jump(Duration::from_secs(59)).await;
    server.deliver("/hook", &delivery("a3", SENDER)).await;
    assert_eq!(crm.email_calls(), 1, "still fresh at 59 s");
    jump(Duration::from_secs(2)).await;
    server.deliver("/hook", &delivery("a4", SENDER)).await;
    assert_eq!(crm.email_calls(), 2, "refetched after 60 s");

    let unknown = "nobody@nowhere.example";
    server.deliver("/hook", &delivery("n1", unknown)).await;
    server.deliver("/hook", &delivery("n2", unknown)).await;
    assert_eq!(
        (crm.email_calls(), crm.domain_calls()),
        (3, 1),
        "a not-found is cached too"
    );
    jump(Duration::from_secs(6)).await;
    server.deliver("/hook", &delivery("n3", unknown)).await;
    assert_eq!(
        (crm.email_calls(), crm.domain_calls()),
        (4, 2),
        "for 5 s only"
    );
    // The found record (ttl 60 s) is still fresh after those 6 s.
    server.deliver("/hook", &delivery("a5", SENDER)).await;
    assert_eq!(crm.email_calls(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_misses_make_one_backend_call() {
    let crm = FakeCrm::start().await;
    crm.add_customer(SENDER, customer());
    crm.set_mode(Mode::Slow(Duration::from_millis(300)));
    let server = TestServer::start(&config(&crm, "", "", "")).await;
    let source = server.app.services().crm[0].clone();
    let mut lookups = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let source = source.clone();
        lookups.spawn(async move {
            source
                .lookup_email(SENDER, Instant::now() + Duration::from_secs(5))
                .await
        });
    }
    let answers = lookups.join_all().await;
    assert!(answers
        .iter()
        .all(|a| a.as_ref().map(|a| a.fields["claimNumber"].as_str()) == Some("CLM-9")));
    assert_eq!(crm.email_calls(), 1);
}

#[tokio::test]
async fn the_cli_imports_a_csv_reports_bad_rows_and_the_rows_serve_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("customers.csv");
    let mut text = String::from("email,claimNumber,region,tier\n");
    for i in 0..2000 {
        if i % 250 == 7 {
            text.push_str(&format!("not-an-email-{i},CLM-{i},NA,gold\n"));
        } else {
            text.push_str(&format!("user{i}@import.example,CLM-{i},NA,standard\n"));
        }
    }
    std::fs::write(&csv, text).unwrap();
    let cfg = dir.path().join("enrichd.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\n[[crm]]\nname = \"main\"\nkind = \"embedded\"\n{}[[route]]\npath = \"/hook\"\nchain = [{{ plugin = \"crm-enrich\" }}]\n",
            plugin_toml("crm-enrich", &["crm"], "")
        ),
    )
    .unwrap();
    let args = [
        "enrichd",
        "crm",
        "import",
        "--config",
        cfg.to_str().unwrap(),
        csv.to_str().unwrap(),
    ];
    let cli = <enrichd::cli::Cli as clap::Parser>::try_parse_from(args).unwrap();
    let err = enrichd::cli::run(cli).unwrap_err().to_string();
    assert_eq!(
        err, "8 rows could not be imported",
        "bad rows make the command fail"
    );

    // The good rows were imported and serve lookups.
    let config = std::fs::read_to_string(&cfg).unwrap();
    let server =
        TestServer::start_in(dir, config.trim_start_matches("listen = \"127.0.0.1:0\"\n")).await;
    let body = server
        .deliver("/hook", &delivery("i1", "user1999@import.example"))
        .await
        .json();
    assert_eq!(
        body["actions"][0]["value"],
        json!({"claimNumber": "CLM-1999", "region": "NA"})
    );
}

#[tokio::test]
async fn recently_used_keys_are_refreshed_before_they_expire() {
    let crm = FakeCrm::start().await;
    crm.add_customer(SENDER, customer());
    let server = TestServer::start(&config(
        &crm,
        "",
        "",
        "ttl_secs = 15\nrefresh_every_secs = 10",
    ))
    .await;
    server.deliver("/hook", &delivery("r1", SENDER)).await;
    assert_eq!(crm.email_calls(), 1);

    // At 6 s the answer would expire before the next refresh (at 16 s):
    // the refresh (run here by hand, as the schedule would) fetches it anew.
    jump(Duration::from_secs(6)).await;
    let source = server.app.services().crm[0].clone();
    assert_eq!(source.refresh_recent().await, 1);
    for _ in 0..100 {
        if crm.email_calls() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(crm.email_calls(), 2, "refreshed in the background");

    // At 16 s the original answer would be stale; the refreshed one is fresh,
    // so the delivery does not wait on the backend.
    jump(Duration::from_secs(10)).await;
    let body = server
        .deliver("/hook", &delivery("r2", SENDER))
        .await
        .json();
    assert_eq!(names(&body), ["Apply CRM context", "Tag VIP customers"]);
    assert_eq!(crm.email_calls(), 2);
    let stats = server.admin_get("/stats").await.json();
    assert_eq!(stats["crm"]["remote"]["refreshed"], 1);
}
