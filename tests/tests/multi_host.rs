//! Issue 10: three real enrichd processes on loopback sharing one Redis.
//!
//! Every host runs the same config (its own temp dir, its own ports). Runs
//! are counted from outside the hosts: the `hostile` plugin in `count` mode
//! records each run under a random key in its kv namespace *before* it
//! spins, so the number of keys in the shared kv is the number of runs that
//! started on any host, killed ones included (read with the hosts' own
//! storage settings, [`open_storage`]); its log line says which host ran
//! it; `/stats` gives each live host's plugin calls.
//!
//! The shared Redis comes from `ENRICHD_TEST_REDIS_URL` (`scripts/check`
//! starts one); each test uses its own key prefix. The outage test starts
//! a Redis of its own, to stop it and start it again.

use std::time::Duration;

use enrichd_tests::process::{engagelab_example, eventually, open_storage, Host};
use enrichd_tests::redis_server::{self, RedisServer};
use enrichd_tests::sandwich::seed_with_id;
use enrichd_tests::{enrichd_bin, plugin_toml, plugin_toml_as, Response};
use serde_json::{json, Value};

const REPLAY: &str = "x-enrichd-replay";
/// The route whose chain is the run counter.
const HOOK: &str = "/hook";
/// The route whose chain is `engagement-enrich`.
const ENRICH: &str = "/enrich";
/// The EngageLab route: the event counter, then `engagement-tracker`.
const EVENTS: &str = "/engagelab-webhook";
const APP_KEY: &str = "multi-host-app-key";

/// What differs between the scenarios.
#[derive(Clone, Copy)]
struct Timing {
    /// `delivery_budget_ms` (the answer lease is about this long).
    budget_ms: u64,
    /// How long the delivery counter spins after recording its run.
    spin_ms: u64,
    /// How long the event counter spins after recording its run.
    event_spin_ms: u64,
    /// `[storage] event_lease_ms`: longer than the event chain's timeouts
    /// (the event counter's `event_spin_ms + 2000` and the tracker's 2000).
    event_lease_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            budget_ms: 20_000,
            spin_ms: 0,
            event_spin_ms: 0,
            event_lease_ms: 30_000,
        }
    }
}

/// The config every host of a test runs.
fn config(url: &str, prefix: &str, t: Timing) -> String {
    let counter = |name: &str, spin: u64, timeout: u64| {
        plugin_toml_as(
            name,
            "hostile",
            &["config", "kv", "log"],
            &format!("timeout_ms = {timeout}\n[plugin.config]\nmode = \"count\"\nms = \"{spin}\""),
        )
    };
    format!(
        "delivery_budget_ms = {budget}\n\
         [storage]\nkind = \"redis\"\nurl = {url:?}\nkey_prefix = {prefix:?}\nevent_lease_ms = {lease}\n\
         {}{}{}{}\
         [[route]]\npath = \"{HOOK}\"\nchain = [{{ plugin = \"counter\" }}]\n\
         [[route]]\npath = \"{ENRICH}\"\nchain = [{{ plugin = \"engagement-enrich\" }}]\n\
         [[engagelab]]\npath = \"{EVENTS}\"\napp_keys = [{{ value = \"{APP_KEY}\" }}]\n\
         chain = [{{ plugin = \"event-counter\" }}, {{ plugin = \"engagement-tracker\" }}]\n",
        counter("counter", t.spin_ms, t.budget_ms.min(t.spin_ms + 2000)),
        counter("event-counter", t.event_spin_ms, t.event_spin_ms + 2000),
        plugin_toml("engagement-tracker", &["kv", "log"], "timeout_ms = 2000"),
        plugin_toml(
            "engagement-enrich",
            &["kv", "config"],
            "kv_read = [\"engagement-tracker\"]"
        ),
        budget = t.budget_ms,
        lease = t.event_lease_ms,
    )
}

/// Three hosts, A, B and C, on one config.
async fn three_hosts(config: &str) -> Vec<Host> {
    let mut hosts = Vec::new();
    for name in ["A", "B", "C"] {
        hosts.push(Host::start(enrichd_bin!(), name, config).await);
    }
    hosts
}

/// Runs that started (on any host, killed ones included) of a counter.
async fn runs(hosts: &[Host], counter: &str) -> u64 {
    let storage = open_storage(hosts[0].config_path()).await;
    storage.kv.usage(counter).await.expect("kv usage").keys
}

/// The run key in an answer of the counter route.
fn run_key(answer: &Response) -> String {
    answer.json()["actions"][0]["value"]["run"]
        .as_str()
        .unwrap_or_else(|| panic!("no counter run in {:?}", answer.json()))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_copies_spread_over_three_hosts_run_the_plugins_once_and_get_one_answer() {
    let test = "sixteen_copies";
    let Some(url) = redis_server::shared_url(test) else {
        return;
    };
    // Slow enough that every copy arrives while the leader runs.
    let timing = Timing {
        spin_ms: 1500,
        ..Timing::default()
    };
    let hosts = three_hosts(&config(&url, &redis_server::unique_prefix(test), timing)).await;
    let payload = seed_with_id("sixteen-copies");
    let mut copies = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (addr, payload) = (hosts[i % 3].addr, payload.clone());
        copies.spawn(async move { enrichd_tests::deliver(addr, HOOK, &payload).await });
    }
    let answers = copies.join_all().await;
    for a in &answers {
        assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    }
    assert!(
        answers.iter().all(|a| a.body == answers[0].body),
        "one answer, byte for byte, for all 16 copies"
    );
    let fresh = answers
        .iter()
        .filter(|a| a.header(REPLAY).is_none())
        .count();
    assert_eq!(fresh, 1, "exactly one copy ran the plugins");
    assert_eq!(runs(&hosts, "counter").await, 1, "one run across the hosts");
    let mut calls = 0;
    for h in &hosts {
        calls += h.plugin_calls("counter").await;
    }
    assert_eq!(calls, 1, "one plugin call across the hosts' /stats");
    assert!(run_key(&answers[0]).starts_with("run-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_on_another_host_after_the_answer_replays_it_byte_for_byte() {
    let test = "replay_across_hosts";
    let Some(url) = redis_server::shared_url(test) else {
        return;
    };
    let prefix = redis_server::unique_prefix(test);
    let hosts = three_hosts(&config(&url, &prefix, Timing::default())).await;
    let payload = seed_with_id("answered-on-a");
    let first = hosts[0].deliver(HOOK, &payload).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header(REPLAY), None);
    for host in &hosts[1..] {
        let copy = host.deliver(HOOK, &payload).await;
        assert_eq!(copy.status, 200, "host {}", host.name);
        assert_eq!(copy.header(REPLAY), Some("true"), "host {}", host.name);
        assert_eq!(
            copy.body, first.body,
            "host {}: A's answer, byte for byte",
            host.name
        );
        assert_eq!(host.plugin_calls("counter").await, 0, "host {}", host.name);
    }
    assert_eq!(runs(&hosts, "counter").await, 1);
    // Every host's delivery log shows A's answer.
    for host in &hosts {
        let shown = host.admin_get("/deliveries/answered-on-a").await;
        assert_eq!(shown.status, 200, "host {}", host.name);
        assert_eq!(
            shown.json()["body"].as_str().map(str::as_bytes),
            Some(&first.body[..])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_mid_delivery_then_the_retry_on_another_host_runs_and_answers() {
    let test = "kill_leader";
    let Some(url) = redis_server::shared_url(test) else {
        return;
    };
    // A short budget, so the dead leader's lease (about the budget) ends soon.
    let timing = Timing {
        budget_ms: 6000,
        spin_ms: 3000,
        ..Timing::default()
    };
    let mut hosts = three_hosts(&config(&url, &redis_server::unique_prefix(test), timing)).await;
    let payload = seed_with_id("leader-killed");
    let leader = {
        let (a, payload) = (hosts[0].addr, payload.clone());
        tokio::spawn(async move {
            enrichd_tests::try_raw_request(a, &enrichd_tests::delivery_request(a, HOOK, &payload))
                .await
        })
    };
    let a = &hosts[0];
    let killed: String = eventually(
        "A runs the delivery",
        Duration::from_secs(30),
        move || async move { a.logged_runs("counter", false).pop() },
    )
    .await;
    hosts[0].kill();
    let killed_at = std::time::Instant::now();
    assert!(
        leader.await.expect("leader task").is_err(),
        "the killed leader answered nothing"
    );
    // While the dead leader's lease (the budget plus a margin) lasts, a copy
    // waits for its answer as long as its own budget allows, then gets 503
    // (retry later): it neither runs the plugins nor invents an answer.
    let early = hosts[2].deliver(HOOK, &payload).await;
    assert_eq!(
        early.status, 503,
        "a copy while the dead leader's lease lasts"
    );
    assert_eq!(hosts[2].plugin_calls("counter").await, 0);
    // Once the lease has ended, the sender's retry leads.
    let lease = Duration::from_millis(timing.budget_ms) + enrichd::idempotency::LEASE_MARGIN;
    let rest = (lease + Duration::from_millis(500)).saturating_sub(killed_at.elapsed());
    tokio::time::sleep(rest).await;
    let (b, p) = (&hosts[1], &payload);
    let answer = eventually(
        "B answers the retry",
        Duration::from_secs(60),
        move || async move {
            let res = b.deliver(HOOK, p).await;
            match res.status {
                200 => Some(res),
                503 => None,
                other => panic!(
                    "the retry got {other}: {:?}",
                    String::from_utf8_lossy(&res.body)
                ),
            }
        },
    )
    .await;
    assert_eq!(answer.header(REPLAY), None, "B ran the delivery");
    let run = run_key(&answer);
    assert_ne!(run, killed, "a new run, not the killed one's");
    assert_eq!(hosts[1].logged_runs("counter", false), vec![run.clone()]);
    assert_eq!(runs(&hosts, "counter").await, 2, "the killed run and B's");
    let copy = hosts[2].deliver(HOOK, &payload).await;
    assert_eq!(copy.header(REPLAY), Some("true"));
    assert_eq!(copy.body, answer.body, "C replays B's answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_accepted_by_a_whose_processing_host_is_killed_is_processed_by_another() {
    let test = "callback_host_killed";
    let Some(url) = redis_server::shared_url(test) else {
        return;
    };
    // The event chain can run 7 s (5000 + 2000 ms timeouts); the lease is
    // a little longer, so a dead host's callback is taken over soon.
    let timing = Timing {
        event_spin_ms: 3000,
        event_lease_ms: 8000,
        ..Timing::default()
    };
    let mut hosts = three_hosts(&config(&url, &redis_server::unique_prefix(test), timing)).await;
    let accepted = hosts[0]
        .callback(EVENTS, APP_KEY, &engagelab_example("soft_bounce"))
        .await
        .expect("A answers");
    assert_eq!(accepted.status, 200);
    assert_eq!(accepted.json()["status"], "accepted");
    let all = &hosts;
    let processing = eventually(
        "a host processes the callback",
        Duration::from_secs(30),
        move || async move {
            all.iter()
                .position(|h| !h.logged_runs("event-counter", false).is_empty())
        },
    )
    .await;
    hosts[processing].kill();
    let storage = open_storage(hosts[0].config_path()).await;
    let kv = &storage.kv;
    let state: Value = eventually(
        "another host records the bounce",
        Duration::from_secs(60),
        move || async move {
            let got = kv.get("engagement-tracker", "12345@gmail.com").await;
            got.expect("kv get")
                .map(|s| serde_json::from_str(&s).expect("tracker state"))
        },
    )
    .await;
    assert_eq!(state["softBounces"], 1, "applied once");
    let others: Vec<&Host> = hosts
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != processing)
        .map(|(_, h)| h)
        .collect();
    let reprocessed: usize = others
        .iter()
        .map(|h| h.logged_runs("event-counter", false).len())
        .sum();
    assert_eq!(reprocessed, 1, "processed by exactly one other host");
    assert_eq!(
        runs(&hosts, "event-counter").await,
        2,
        "the killed run and the retry"
    );
    let events = &storage.events;
    eventually(
        "the queue is empty",
        Duration::from_secs(10),
        move || async move { (events.len().await.expect("queue length") == 0).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engagement_recorded_via_a_enriches_a_delivery_answered_by_c() {
    let test = "engagement_a_to_c";
    let Some(url) = redis_server::shared_url(test) else {
        return;
    };
    let hosts = three_hosts(&config(
        &url,
        &redis_server::unique_prefix(test),
        Timing::default(),
    ))
    .await;
    let res = hosts[0]
        .callback(EVENTS, APP_KEY, &engagelab_example("open"))
        .await
        .expect("A answers");
    assert_eq!(res.status, 200);
    let storage = open_storage(hosts[0].config_path()).await;
    let kv = &storage.kv;
    eventually(
        "the open is recorded",
        Duration::from_secs(30),
        move || async move {
            kv.get("engagement-tracker", "12345@hotmail.com")
                .await
                .expect("kv get")
        },
    )
    .await;
    let mut delivery = seed_with_id("from-hotmail");
    delivery["from"]["emailAddress"]["address"] = json!("12345@hotmail.com");
    delivery["sender"]["emailAddress"]["address"] = json!("12345@hotmail.com");
    let enriched = hosts[2].deliver(ENRICH, &delivery).await;
    assert_eq!(enriched.status, 200);
    let body = enriched.json();
    assert_eq!(body["actions"][0]["name"], "Engagement context", "{body}");
    assert_eq!(
        body["actions"][0]["value"],
        json!({"lastEngagement": "2023-02-17T07:52:50Z"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_answers_503_and_redis_back_serves_again_with_nothing_lost() {
    let test = "redis_outage";
    if redis_server::skipped(test) {
        return;
    }
    let mut redis = RedisServer::start();
    // A slow event chain, so the callback queued before the outage is
    // still being processed when Redis stops.
    let timing = Timing {
        event_spin_ms: 2000,
        event_lease_ms: 7000,
        ..Timing::default()
    };
    let hosts = three_hosts(&config(
        &redis.url(),
        &redis_server::unique_prefix(test),
        timing,
    ))
    .await;
    let before = hosts[0].deliver(HOOK, &seed_with_id("before-outage")).await;
    assert_eq!(before.status, 200);
    let queued = hosts[1]
        .callback(EVENTS, APP_KEY, &engagelab_example("soft_bounce"))
        .await
        .expect("B answers");
    assert_eq!(queued.status, 200);

    redis.stop();
    let during = seed_with_id("during-outage");
    for host in &hosts {
        let started = std::time::Instant::now();
        let res = host.deliver(HOOK, &during).await;
        assert_eq!(
            res.status, 503,
            "host {}: a delivery while Redis is down",
            host.name
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "503 at once, not after the budget"
        );
        let replay = host.deliver(HOOK, &seed_with_id("before-outage")).await;
        assert_eq!(
            replay.status, 503,
            "host {}: a replay while Redis is down",
            host.name
        );
        let cb = host
            .callback(EVENTS, APP_KEY, &engagelab_example("open"))
            .await
            .expect("answers");
        assert_eq!(
            cb.status, 503,
            "host {}: a callback while Redis is down",
            host.name
        );
    }

    redis.restart();
    // The hosts reconnect by themselves; the sender retries on 503.
    let (a, p) = (&hosts[0], &during);
    let after = eventually(
        "A answers the retried delivery",
        Duration::from_secs(30),
        move || async move {
            let res = a.deliver(HOOK, p).await;
            match res.status {
                200 => Some(res),
                503 => None,
                other => panic!("the retry got {other}"),
            }
        },
    )
    .await;
    assert_eq!(after.header(REPLAY), None);
    // Every host is back by itself, soon (its admin `/stats` reads the
    // storage too).
    let back = std::time::Instant::now();
    for host in &hosts {
        eventually(
            &format!("host {} reaches Redis again", host.name),
            Duration::from_secs(15),
            move || async move { (host.admin_get("/stats").await.status == 200).then_some(()) },
        )
        .await;
    }
    println!("every host was back {:?} after A", back.elapsed());
    let mut calls = 0;
    for h in &hosts {
        calls += h.plugin_calls("counter").await;
    }
    assert_eq!(
        calls, 2,
        "one run before the outage, one after: none during"
    );
    assert_eq!(runs(&hosts, "counter").await, 2);
    let replay = hosts[2].deliver(HOOK, &seed_with_id("before-outage")).await;
    assert_eq!(
        replay.header(REPLAY),
        Some("true"),
        "the answer from before is kept"
    );
    assert_eq!(replay.body, before.body);
    let b = &hosts[1];
    let resent = eventually(
        "B accepts the resent callback",
        Duration::from_secs(30),
        move || async move {
            let res = b
                .callback(EVENTS, APP_KEY, &engagelab_example("open"))
                .await
                .expect("answers");
            (res.status == 200).then_some(res)
        },
    )
    .await;
    assert_eq!(resent.json()["status"], "accepted");
    // Both callbacks are processed: the one queued before the outage and
    // the one accepted after it.
    let storage = open_storage(hosts[0].config_path()).await;
    let kv = &storage.kv;
    for address in ["12345@gmail.com", "12345@hotmail.com"] {
        eventually(
            &format!("{address} is recorded"),
            Duration::from_secs(60),
            move || async move { kv.get("engagement-tracker", address).await.ok().flatten() },
        )
        .await;
    }
    let bounce: Value = serde_json::from_str(
        &storage
            .kv
            .get("engagement-tracker", "12345@gmail.com")
            .await
            .expect("kv")
            .expect("state"),
    )
    .expect("JSON");
    assert_eq!(bounce["softBounces"], 1, "applied once");
}
