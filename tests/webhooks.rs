//! Webhooks against a real HTTP receiver started by the test: signatures that verify with the
//! README's own Python recipe, a receiver failing for 30 s that then gets everything in order,
//! kill -9 at five random points of a 1,000-event burst with nothing lost, 410 removing an
//! endpoint, a dead endpoint that does not delay a live one, and a full outbox that
//! dead-letters and alerts.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use roundtable_api::WebhookSecret;
use serde_json::Value;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// How the receiver answers.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// 200 after this many milliseconds (a receiver slower than the events).
    SlowOk(u64),
    /// Accepts the request and never answers.
    Hang,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
    at: Instant,
    answered: Option<u16>,
}

impl Got {
    fn event(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Book {
    /// By path: how to answer (default 200).
    answers: HashMap<String, Answer>,
    got: Vec<Got>,
}

/// A real HTTP server on loopback (axum on its own runtime thread) that records every request.
struct Receiver {
    addr: SocketAddr,
    book: Arc<Mutex<Book>>,
}

impl Receiver {
    fn start() -> Receiver {
        let book = Arc::new(Mutex::new(Book::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = book.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
                    let book = shared.clone();
                    async move { receive(book, request).await }
                });
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Receiver { addr, book }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn answer(&self, path: &str, answer: Answer) {
        self.book
            .lock()
            .unwrap()
            .answers
            .insert(path.to_string(), answer);
    }

    /// Requests to `path` answered 2xx, in arrival order.
    fn delivered(&self, path: &str) -> Vec<Got> {
        self.all(path)
            .into_iter()
            .filter(|g| g.answered.is_some_and(|s| (200..300).contains(&s)))
            .collect()
    }

    fn all(&self, path: &str) -> Vec<Got> {
        self.book
            .lock()
            .unwrap()
            .got
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }

    /// Event ids delivered to `path`.
    fn delivered_ids(&self, path: &str) -> Vec<u64> {
        self.delivered(path)
            .iter()
            .map(|g| g.event()["id"].as_u64().unwrap())
            .collect()
    }
}

async fn receive(
    book: Arc<Mutex<Book>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = request.uri().path().to_string();
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap()
        .to_vec();
    let answer = book
        .lock()
        .unwrap()
        .answers
        .get(&path)
        .copied()
        .unwrap_or(Answer::Status(200));
    let status = match answer {
        Answer::Status(status) => Some(status),
        Answer::SlowOk(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Some(200)
        }
        Answer::Hang => None,
    };
    book.lock().unwrap().got.push(Got {
        path,
        headers,
        body,
        at: Instant::now(),
        answered: status,
    });
    match status {
        Some(status) => axum::http::StatusCode::from_u16(status)
            .unwrap()
            .into_response(),
        None => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            axum::http::StatusCode::OK.into_response()
        }
    }
}

/// Waits (bounded) until `done` holds; panics with `what` and the service's log otherwise.
fn wait_until(service: &Service, within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} within {within:?}\n{}",
            service.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An `api_action` event: a DELETE of a room nobody defined (404), audited like any request.
fn emit(service: &Service, i: usize) {
    let (status, _) = service.http("DELETE", &format!("/v1/rooms/r{i}"), "");
    assert_eq!(status, 404);
}

fn endpoint(name: &str, url: &str, extra: &str) -> String {
    format!(
        "[[webhooks.endpoints]]\nname = \"{name}\"\nurl = \"{url}\"\nsecret = \"{SECRET}\"\n{extra}\n"
    )
}

fn webhook(service: &Service, name: &str) -> Value {
    let (status, view) = service.http("GET", &format!("/v1/webhooks/{name}"), "");
    assert_eq!(status, 200, "{view}");
    view
}

/// Every `api_action` event the journal holds, oldest first.
fn journal_actions(service: &Service) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut after = String::new();
    for _ in 0..100 {
        let (status, page) = service.http(
            "GET",
            &format!("/v1/events?types=api_action&after={after}"),
            "",
        );
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        ids.extend(events.iter().map(|e| e["id"].as_u64().unwrap()));
        after = page["next"].as_str().unwrap().to_string();
        if page["behind"] == 0 {
            return ids;
        }
    }
    panic!("the journal never ended");
}

/// Runs the README's verification recipe (its Python block, as printed) on `deliveries`:
/// how many verify.
fn readme_recipe_verifies(deliveries: &[(String, Got)]) -> usize {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```python\nimport base64, hashlib, hmac, time")
        .expect("the README's receiver recipe");
    let block = &readme[start + "```python\n".len()..];
    let recipe = &block[..block.find("```").unwrap()];
    let cases: Vec<Value> = deliveries
        .iter()
        .map(|(secret, got)| {
            serde_json::json!({
                "secret": secret,
                "headers": got.headers,
                "body": String::from_utf8(got.body.clone()).unwrap(),
            })
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let cases_path = dir.path().join("cases.json");
    std::fs::write(&cases_path, serde_json::to_vec(&cases).unwrap()).unwrap();
    let script = format!(
        "{recipe}\nimport json, sys\ncases = json.load(open(sys.argv[1]))\n\
         print(sum(verify(c['secret'], c['headers'], c['body'].encode()) for c in cases))\n"
    );
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&cases_path)
        .output()
        .expect("python3 runs the README's recipe");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn deliveries_are_signed_filtered_and_verify_with_the_readme_recipe() {
    let receiver = Receiver::start();
    let service = Service::start(Options {
        toml: endpoint("crm", &receiver.url("/crm"), "events = \"api_action\""),
        ..Options::default()
    });
    let (status, created) = service.http(
        "POST",
        "/v1/webhooks",
        &serde_json::json!({
            "name": "calls",
            "url": receiver.url("/calls"),
            "events": "participant_joined,participant_left",
            "rooms": "1000",
        })
        .to_string(),
    );
    assert_eq!(status, 201, "{created}");
    let made_secret = created["secret"].as_str().unwrap().to_string();
    let mut caller = Uac::new(service.sip, "1000");
    assert_eq!(caller.call(), 200);
    let mut other = Uac::new(service.sip, "2000");
    assert_eq!(other.call(), 200);
    assert_eq!(caller.hangup(), 200);
    assert_eq!(other.hangup(), 200);
    for i in 0..3 {
        emit(&service, i);
    }
    wait_until(
        &service,
        Duration::from_secs(10),
        "4 api_action deliveries",
        || receiver.delivered("/crm").len() >= 4,
    );
    wait_until(
        &service,
        Duration::from_secs(10),
        "the call's join and leave",
        || receiver.delivered("/calls").len() >= 2,
    );
    std::thread::sleep(Duration::from_millis(300));
    let crm = receiver.delivered("/crm");
    assert!(
        crm.iter().all(|g| g.event()["type"] == "api_action"),
        "crm asked for api_action only"
    );
    let actions: Vec<String> = crm
        .iter()
        .map(|g| g.event()["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions[0], "POST /v1/webhooks", "{actions:?}");
    let calls: Vec<Value> = receiver
        .delivered("/calls")
        .iter()
        .map(Got::event)
        .collect();
    let kinds: Vec<&str> = calls.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["participant_joined", "participant_left"],
        "{calls:?}"
    );
    assert!(
        calls.iter().all(|e| e["room"] == "1000"),
        "room 2000 filtered out"
    );

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut signed = Vec::new();
    for (secret, got) in crm.iter().map(|g| (SECRET.to_string(), g.clone())).chain(
        receiver
            .delivered("/calls")
            .into_iter()
            .map(|g| (made_secret.clone(), g)),
    ) {
        let event = got.event();
        let id = &got.headers["webhook-id"];
        assert_eq!(
            id,
            event["cursor"].as_str().unwrap(),
            "webhook-id is the cursor"
        );
        let timestamp: u64 = got.headers["webhook-timestamp"].parse().unwrap();
        assert!(timestamp.abs_diff(now) < 60, "a fresh timestamp");
        assert_eq!(got.headers["content-type"], "application/json");
        assert!(
            WebhookSecret::parse(&secret).unwrap().verify(
                id,
                timestamp,
                &got.body,
                &got.headers["webhook-signature"]
            ),
            "{got:?}"
        );
        signed.push((secret, got));
    }
    let n = signed.len();
    assert_eq!(
        readme_recipe_verifies(&signed),
        n,
        "the README's recipe verifies them all"
    );
    let mut tampered = signed.clone();
    for (_, got) in &mut tampered {
        got.body.push(b' ');
    }
    assert_eq!(
        readme_recipe_verifies(&tampered),
        0,
        "and refuses a changed body"
    );
    let metrics = service.metrics();
    assert!(
        metrics
            .contains("roundtable_webhook_deliveries_total{endpoint=\"crm\",result=\"delivered\"}"),
        "{metrics}"
    );
}

#[test]
fn a_receiver_failing_for_30_s_gets_everything_afterwards_in_order() {
    let receiver = Receiver::start();
    receiver.answer("/crm", Answer::Status(500));
    let service = Service::start(Options {
        toml: format!(
            "[webhooks]\nbackoff_max_s = 2\n{}",
            endpoint("crm", &receiver.url("/crm"), "events = \"api_action\"")
        ),
        ..Options::default()
    });
    let failing = Instant::now();
    let mut i = 0;
    let mut saw_open = false;
    while failing.elapsed() < Duration::from_secs(30) {
        for _ in 0..3 {
            emit(&service, i);
            i += 1;
        }
        std::thread::sleep(Duration::from_secs(2));
        let view = webhook(&service, "crm");
        if view["state"] == "open" {
            saw_open = true;
            let (_, health) = service.http("GET", "/health/detailed", "");
            let component = health["components"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == "webhooks")
                .unwrap()
                .clone();
            assert_eq!(component["status"], "degraded", "{component}");
        }
        assert!(
            view["last_error"].as_str().unwrap_or("").contains("500") || view["delivered"] == 0
        );
    }
    assert!(saw_open, "five failures in a row open the breaker");
    assert!(receiver.delivered("/crm").is_empty());
    assert!(receiver.all("/crm").len() >= 5, "it kept trying");
    receiver.answer("/crm", Answer::Status(200));
    let emitted = journal_actions(&service);
    assert_eq!(emitted.len(), i);
    wait_until(
        &service,
        Duration::from_secs(20),
        "every event delivered",
        || receiver.delivered("/crm").len() >= emitted.len(),
    );
    let delivered = receiver.delivered_ids("/crm");
    assert_eq!(delivered, emitted, "all of them, once each, in order");
    let view = webhook(&service, "crm");
    assert_eq!(
        (view["state"].as_str(), view["backlog"].as_u64()),
        (Some("delivering"), Some(0)),
        "{view}"
    );
}

#[test]
fn kill_9_at_five_random_points_of_a_1000_event_burst_loses_nothing() {
    let receiver = Receiver::start();
    // Slower than the burst: deliveries are in flight and behind at every kill.
    receiver.answer("/crm", Answer::SlowOk(4));
    let mut service = Service::start(Options {
        toml: endpoint("crm", &receiver.url("/crm"), "events = \"api_action\""),
        ..Options::default()
    });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    // splitmix64 of the seed and k: five independent points in 1..=999.
    let mix = |k: u64| {
        let mut z = seed.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut points: Vec<usize> = (1..=5u64).map(|k| (mix(k) % 999 + 1) as usize).collect();
    points.sort_unstable();
    points.dedup();
    eprintln!("kill -9 after events {points:?}");
    for i in 0..1000 {
        emit(&service, i);
        if points.contains(&i) {
            service.kill9();
            service.start_again();
        }
    }
    let emitted: BTreeSet<u64> = journal_actions(&service).into_iter().collect();
    assert!(emitted.len() >= 1000 - points.len(), "{}", emitted.len());
    wait_until(
        &service,
        Duration::from_secs(60),
        "every journaled event delivered",
        || {
            let got: BTreeSet<u64> = receiver.delivered_ids("/crm").into_iter().collect();
            emitted.is_subset(&got)
        },
    );
    let delivered = receiver.delivered_ids("/crm");
    let repeats = delivered.len() - delivered.iter().collect::<BTreeSet<_>>().len();
    eprintln!(
        "{} events journaled, {} deliveries, {repeats} repeats after the kills",
        emitted.len(),
        delivered.len()
    );
}

#[test]
fn gone_endpoints_go_and_a_dead_one_does_not_delay_a_live_one() {
    let receiver = Receiver::start();
    receiver.answer("/dead", Answer::Hang);
    receiver.answer("/old", Answer::Status(410));
    let mut service = Service::start(Options {
        toml: endpoint("old", &receiver.url("/old"), ""),
        ..Options::default()
    });
    for (name, path, timeout) in [
        ("live", "/live", 10),
        ("dead", "/dead", 1),
        ("leaving", "/leaving", 10),
    ] {
        let (status, body) = service.http(
            "POST",
            "/v1/webhooks",
            &serde_json::json!({"name": name, "url": receiver.url(path), "events": "api_action", "timeout_s": timeout})
                .to_string(),
        );
        assert_eq!(status, 201, "{body}");
    }
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(Instant::now());
        emit(&service, i);
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until(
        &service,
        Duration::from_secs(10),
        "live gets all 20",
        || receiver.delivered("/live").len() >= 20,
    );
    let live = receiver.delivered("/live");
    let emitted = journal_actions(&service);
    let last_20 = &emitted[emitted.len() - 20..];
    for (k, seq) in last_20.iter().enumerate() {
        let got = live.iter().find(|g| g.event()["id"] == *seq).unwrap();
        let delay = got.at.duration_since(sent[k]);
        assert!(
            delay < Duration::from_millis(1500),
            "event {seq} reached the live endpoint {delay:?} after it happened, while the dead one timed out"
        );
    }
    let dead = webhook(&service, "dead");
    assert!(
        dead["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("timeout"),
        "{dead}"
    );
    assert_eq!(dead["delivered"], 0);

    receiver.answer("/leaving", Answer::Status(410));
    emit(&service, 100);
    wait_until(
        &service,
        Duration::from_secs(10),
        "the gone endpoint removed",
        || service.http("GET", "/v1/webhooks/leaving", "").0 == 404,
    );
    let book = std::fs::read_to_string(service.storage().join("webhooks.json")).unwrap();
    assert!(
        !book.contains("leaving") && book.contains("\"live\""),
        "{book}"
    );
    assert!(!service.storage().join("webhooks/leaving.cursor").exists());
    assert_eq!(
        webhook(&service, "old")["state"],
        "gone",
        "a configured one turns off"
    );
    let old_attempts = receiver.all("/old").len();
    assert_eq!(old_attempts, 1, "one 410 is enough");
    service.restart();
    emit(&service, 101);
    wait_until(
        &service,
        Duration::from_secs(10),
        "live gets the next event",
        || receiver.delivered("/live").len() >= 22,
    );
    assert_eq!(
        webhook(&service, "old")["state"],
        "gone",
        "and stays off across a restart"
    );
    assert_eq!(receiver.all("/old").len(), old_attempts);
    assert_eq!(
        webhook(&service, "dead")["source"],
        "api",
        "API endpoints survive restarts"
    );
}

#[test]
fn a_full_outbox_dead_letters_and_alerts() {
    let receiver = Receiver::start();
    receiver.answer("/slow", Answer::Status(503));
    let service = Service::start(Options {
        toml: format!(
            "[webhooks]\nbackoff_max_s = 1\n[testing]\noutbox_max_kib = 64\n{}{}",
            endpoint("slow", &receiver.url("/slow"), "events = \"api_action\""),
            endpoint("live", &receiver.url("/live"), "events = \"api_action\""),
        ),
        ..Options::default()
    });
    for i in 0..800 {
        emit(&service, i);
    }
    wait_until(
        &service,
        Duration::from_secs(20),
        "live gets all 800",
        || receiver.delivered("/live").len() >= 800,
    );
    let letters_path = service.storage().join("webhooks/dead-letters.jsonl");
    wait_until(&service, Duration::from_secs(10), "dead letters", || {
        letters_path.exists()
    });
    let metrics = service.metrics();
    assert!(
        metrics.contains(
            "roundtable_webhook_dead_letters_total{endpoint=\"slow\",reason=\"outbox_full\"}"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains("roundtable_webhook_dead_letters_total{endpoint=\"live\""),
        "the live endpoint kept up: none of its events were dropped"
    );
    let webhooks_component = || {
        let (status, health) = service.http("GET", "/health/detailed", "");
        assert_eq!(status, 200);
        health["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "webhooks")
            .unwrap()
            .clone()
    };
    wait_until(
        &service,
        Duration::from_secs(5),
        "the webhooks component degraded",
        || webhooks_component()["status"] == "degraded",
    );
    let component = webhooks_component();
    assert!(
        component["reason"]
            .as_str()
            .unwrap()
            .contains("outbox was full"),
        "{component}"
    );
    receiver.answer("/slow", Answer::Status(200));
    wait_until(&service, Duration::from_secs(20), "slow catches up", || {
        webhook(&service, "slow")["backlog"] == 0
    });
    let dead: BTreeSet<u64> = std::fs::read_to_string(&letters_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["endpoint"] == "slow")
        .map(|l| {
            assert_eq!(l["reason"], "outbox_full");
            l["event"]["id"].as_u64().unwrap()
        })
        .collect();
    let slow: BTreeSet<u64> = receiver.delivered_ids("/slow").into_iter().collect();
    let live: BTreeSet<u64> = receiver.delivered_ids("/live").into_iter().collect();
    assert!(!dead.is_empty() && !slow.is_empty());
    let accounted: BTreeSet<u64> = dead.union(&slow).copied().collect();
    assert_eq!(
        live.difference(&accounted).count(),
        0,
        "every event is delivered or a dead letter, none dropped"
    );
    let view = webhook(&service, "slow");
    assert_eq!(
        view["dead_letters"].as_u64().unwrap(),
        dead.len() as u64,
        "{view}"
    );
}
