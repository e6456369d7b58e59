//! The ops service on loopback: what it accepts and refuses from CPEs, the
//! operator's API from a ticket to a resolved incident, a cabinet outage as
//! one incident, and a restart that keeps the replay check and the history.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{now_ms, Cpe, PERIOD};
use ops::config::Config;
use ops::service::Server;
use ops::store::{Store, TokenKind};
use ops_client::{Auth, Method, StatusCode};
use serde_json::Value;

const HOMES: usize = 6;

/// A running service in a temporary directory, with a token per CPE and
/// one operator token.
struct Ops {
    dir: tempfile::TempDir,
    api: SocketAddr,
    admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    keys: Vec<telemetry::Key>,
    hag: telemetry::Key,
    operator: String,
}

impl Ops {
    /// Two cabinets of three homes (h0-h2 on cab0, h3-h5 on cab1), one cell.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = String::from("subscriber,cabinet,card,cell\n");
        for i in 0..HOMES {
            inv.push_str(&format!("h{i},cab{},0,c1\n", i / 3));
        }
        // Issued but not in the inventory.
        std::fs::write(dir.path().join("homes.csv"), inv).unwrap();
        let store = Store::open(&dir.path().join("ops.db")).unwrap();
        let mut keys = Vec::new();
        for i in 0..HOMES {
            let t = store
                .issue_token(TokenKind::Cpe, &format!("h{i}"), now_ms())
                .unwrap();
            keys.push(telemetry::key(t.as_bytes()));
        }
        let ghost = store
            .issue_token(TokenKind::Cpe, "ghost", now_ms())
            .unwrap();
        keys.push(telemetry::key(ghost.as_bytes()));
        let operator = store
            .issue_token(TokenKind::Operator, "noc", now_ms())
            .unwrap();
        let hag = telemetry::key(
            store
                .issue_token(TokenKind::Hag, "hag-1", now_ms())
                .unwrap()
                .as_bytes(),
        );
        drop(store);
        let mut ops = Self {
            dir,
            api: "0.0.0.0:0".parse().unwrap(),
            admin: "0.0.0.0:0".parse().unwrap(),
            stop: None,
            task: None,
            keys,
            hag,
            operator,
        };
        ops.run().await;
        ops
    }

    fn config(dir: &Path) -> Config {
        let text = "[api]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.2:0\"\n\
                    [data]\ndb = \"ops.db\"\ninventory = \"homes.csv\"\n\
                    [engine]\nscan_interval_s = 1\n";
        let path = dir.join("ops.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path).unwrap()
    }

    async fn run(&mut self) {
        let server = Server::bind(Self::config(self.dir.path())).await.unwrap();
        self.api = server.api_addr().unwrap();
        self.admin = server.admin_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(server.serve(async move {
            let _ = rx.await;
        })));
    }

    /// Stops the service and waits for it (the writer flushes).
    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("the service stops within 10 s")
                .unwrap();
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let stream = tokio::net::TcpStream::connect(self.api).await.unwrap();
        let a = ops_client::request(
            stream,
            &self.api.to_string(),
            method,
            path,
            auth,
            body.map(|b| Bytes::from(b.to_string())),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let v = if a.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("{path}: {e}: {}", a.text()))
        };
        (a.status, v)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Auth::Bearer(&self.operator), None)
            .await
    }

    async fn post(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.call(Method::POST, path, Auth::Bearer(&self.operator), Some(body))
            .await
    }

    /// Posts `body` signed with `key`.
    async fn report_raw(&self, key: &telemetry::Key, body: &[u8]) -> (StatusCode, String) {
        self.post_signed("/api/v1/reports", key, body).await
    }

    /// Posts `body` to `path` signed with `key`.
    async fn post_signed(
        &self,
        path: &str,
        key: &telemetry::Key,
        body: &[u8],
    ) -> (StatusCode, String) {
        let stream = tokio::net::TcpStream::connect(self.api).await.unwrap();
        let a = ops_client::post_report(
            stream,
            None,
            &self.api.to_string(),
            path,
            key,
            Bytes::copy_from_slice(body),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        (a.status, a.text())
    }

    async fn report(&self, cpe: &mut Cpe, home: usize, t: u64) -> StatusCode {
        let body = cpe.report(t).to_json();
        let (status, text) = self.report_raw(&self.keys[home], body.as_bytes()).await;
        assert!(
            status == StatusCode::OK,
            "report of h{home}: {status} {text}"
        );
        status
    }

    async fn metrics(&self) -> String {
        let stream = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        let a = ops_client::request(
            stream,
            &self.admin.to_string(),
            Method::GET,
            "/metrics",
            Auth::None,
            None,
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        a.text()
    }
}

/// Every home reports every period over the last `minutes` (dated in the
/// past, as a CPE's queue would send them), `change` applied before each.
async fn history(
    ops: &Ops,
    cpes: &mut [Cpe],
    minutes: u64,
    mut change: impl FnMut(&mut [Cpe], u64),
) {
    let now = now_ms();
    let steps = minutes * 60_000 / PERIOD;
    for k in 0..steps {
        let t = now - (steps - 1 - k) * PERIOD;
        change(cpes, k);
        for (i, c) in cpes.iter_mut().enumerate() {
            ops.report(c, i, t).await;
        }
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_stale_and_malformed_reports_are_refused() {
    let mut ops = Ops::start().await;
    let mut cpe = Cpe::new(0);
    let now = now_ms();
    let body = cpe.report(now).to_json();
    let key = ops.keys[0].clone();
    assert_eq!(
        ops.report_raw(&key, body.as_bytes()).await.0,
        StatusCode::OK
    );
    // The same report again.
    let (s, text) = ops.report_raw(&key, body.as_bytes()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{text}");
    // Signed by another CPE's key (a forgery), or tampered after signing.
    let next = cpe.report(now).to_json();
    let (s, _) = ops.report_raw(&ops.keys[1], next.as_bytes()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let tampered = next.replace("\"uptime_s\":", "\"uptime_s\":1");
    assert_ne!(tampered, next);
    let stream = tokio::net::TcpStream::connect(ops.api).await.unwrap();
    let a = ops_client::request(
        stream,
        &ops.api.to_string(),
        Method::POST,
        "/api/v1/reports",
        Auth::None,
        Some(Bytes::from(next.clone())),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "no signature");
    // A tampered body with the genuine body's signature.
    let sig = telemetry::sign(&key, next.as_bytes());
    let stream = tokio::net::TcpStream::connect(ops.api).await.unwrap();
    let a = ops_client::request(
        stream,
        &ops.api.to_string(),
        Method::POST,
        "/api/v1/reports",
        Auth::Signature(&sig),
        Some(Bytes::from(tampered)),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "tampered");
    // The genuine one still goes through (refusals did not consume its seq).
    assert_eq!(
        ops.report_raw(&key, next.as_bytes()).await.0,
        StatusCode::OK
    );
    // A CPE with a token but not in the inventory.
    let mut ghost = Cpe::new(9);
    ghost.name = "ghost".into();
    let (s, text) = ops
        .report_raw(&ops.keys[HOMES], ghost.report(now).to_json().as_bytes())
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(text.contains("inventory"), "{text}");
    // Dated 20 min ahead, and 2 h old.
    let (s, text) = ops
        .report_raw(&key, cpe.report(now + 1_200_000).to_json().as_bytes())
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(text.contains("ahead"), "{text}");
    let (s, text) = ops
        .report_raw(&key, cpe.report(now - 7_200_000).to_json().as_bytes())
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(text.contains("history"), "{text}");
    // Not JSON, an unknown field, too large.
    let (s, _) = ops.report_raw(&key, b"{not json").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let extra = cpe.report(now).to_json().replacen('{', "{\"x\":1,", 1);
    let (s, text) = ops.report_raw(&key, extra.as_bytes()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    let big = vec![b' '; telemetry::MAX_REPORT_BYTES + 1];
    let (s, _) = ops.report_raw(&key, &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let m = ops.metrics().await;
    assert_eq!(
        metric(&m, "tandem_ops_reports_total{result=\"accepted\"}"),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "tandem_ops_reports_total{result=\"replayed\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "tandem_ops_reports_total{result=\"unauthenticated\"}"),
        3.0
    );
    assert_eq!(
        metric(&m, "tandem_ops_reports_total{result=\"stale\"}"),
        2.0
    );
    assert_eq!(
        metric(&m, "tandem_ops_reports_total{result=\"malformed\"}"),
        2.0
    );
    // The operator's API needs the operator's token, not a CPE's.
    let (s, _) = ops
        .call(Method::GET, "/api/v1/incidents", Auth::None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = ops
        .call(
            Method::GET,
            "/api/v1/incidents",
            Auth::Bearer("h0-token?"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(ops.get("/api/v1/incidents").await.0, StatusCode::OK);
    ops.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hags_reports_are_taken_and_forged_replayed_or_unknown_ones_refused() {
    let mut ops = Ops::start().await;
    let now = now_ms();
    let report = |hag: &str, at: u64, errors: u64| {
        serde_json::to_vec(&telemetry::HagReport {
            schema: telemetry::SCHEMA,
            hag: hag.into(),
            sent_at_ms: at,
            upstream_connects: 50,
            upstream_errors: errors,
            subscribers: vec![telemetry::hag::SubscriberView {
                subscriber: "h0".into(),
                subflows_dsl: 1,
                subflows_lte: 1,
                connections: 3,
                retransmits: 2,
                last_seen_ms: at,
            }],
        })
        .unwrap()
    };
    const PATH: &str = "/api/v1/hag-reports";
    let hag = ops.hag.clone();
    let first = report("hag-1", now, 0);
    let (s, text) = ops.post_signed(PATH, &hag, &first).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    // The same again, or one dated before it: a replay.
    let (s, text) = ops.post_signed(PATH, &hag, &first).await;
    assert_eq!(s, StatusCode::CONFLICT, "{text}");
    let (s, _) = ops
        .post_signed(PATH, &hag, &report("hag-1", now - 1, 0))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Signed by a CPE's key, by a HAG ops has no token for, or not at all.
    let next = report("hag-1", now + 1, 0);
    let (s, _) = ops.post_signed(PATH, &ops.keys[0], &next).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = ops
        .post_signed(PATH, &hag, &report("hag-2", now + 1, 0))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let stream = tokio::net::TcpStream::connect(ops.api).await.unwrap();
    let a = ops_client::request(
        stream,
        &ops.api.to_string(),
        Method::POST,
        PATH,
        Auth::None,
        Some(Bytes::from(next.clone())),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // Malformed: more errors than connections, a bad name, not JSON.
    for bad in [
        report("hag-1", now + 2, 51),
        report("hag 1", now + 2, 0),
        b"[1,2".to_vec(),
    ] {
        let (s, text) = ops.post_signed(PATH, &hag, &bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    }
    // The genuine next one is taken (refusals consumed nothing).
    let (s, text) = ops.post_signed(PATH, &hag, &next).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let m = ops.metrics().await;
    for (result, n) in [
        ("accepted", 2.0),
        ("replayed", 2.0),
        ("unauthenticated", 3.0),
        ("malformed", 3.0),
    ] {
        assert_eq!(
            metric(
                &m,
                &format!("tandem_ops_hag_reports_total{{result=\"{result}\"}}")
            ),
            n,
            "{result}\n{m}"
        );
    }
    ops.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_on_a_broken_pair_sends_outside_plant_and_the_finding_counts() {
    let mut ops = Ops::start().await;
    let mut cpes: Vec<Cpe> = (0..HOMES).map(Cpe::new).collect();
    history(&ops, &mut cpes, 10, |c, k| {
        if k == 57 {
            c[1].showtime = false;
            c[1].no_signal = true;
        }
    })
    .await;
    let (s, t) = ops.post("/api/v1/tickets", r#"{"subscriber":"h1"}"#).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(t["diagnosis"]["location"], "line", "{t:#}");
    assert_eq!(t["diagnosis"]["dispatch"], "outside-plant", "{t:#}");
    assert!(
        t["diagnosis"]["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("mobile link")),
        "{t:#}"
    );
    let id = t["incident"]["id"].as_i64().expect("an incident");
    assert_eq!(t["incident"]["state"], "open");
    // The same ticket again: the same incident.
    let (_, again) = ops.post("/api/v1/tickets", r#"{"subscriber":"h1"}"#).await;
    assert_eq!(again["incident"]["id"].as_i64(), Some(id));
    // A healthy home's ticket opens nothing.
    let (s, ok) = ops.post("/api/v1/tickets", r#"{"subscriber":"h4"}"#).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ok["diagnosis"]["location"], "none", "{ok:#}");
    assert!(ok["incident"].is_null());
    let (s, _) = ops
        .post("/api/v1/tickets", r#"{"subscriber":"nobody"}"#)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = ops.post("/api/v1/tickets", r#"{"who":"h1"}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, list) = ops.get("/api/v1/incidents?state=open").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(
        ops.get("/api/v1/incidents?state=bogus").await.0,
        StatusCode::BAD_REQUEST
    );
    // Dispatch, then resolve with the technician's finding.
    let (s, inc) = ops
        .post(
            &format!("/api/v1/incidents/{id}/dispatch"),
            r#"{"note":"team 4"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{inc}");
    assert_eq!(inc["state"], "dispatched");
    let (s, _) = ops
        .post(&format!("/api/v1/incidents/{id}/dispatch"), "{}")
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "dispatched twice");
    let (s, _) = ops
        .post(
            &format!("/api/v1/incidents/{id}/resolve"),
            r#"{"finding":"underground"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, inc) = ops
        .post(
            &format!("/api/v1/incidents/{id}/resolve"),
            r#"{"finding":"line","note":"pair spliced at the drop"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{inc}");
    assert_eq!(inc["state"], "resolved");
    assert_eq!(inc["finding"], "line");
    assert_eq!(
        ops.get("/api/v1/incidents/999").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, stats) = ops.get("/api/v1/stats").await;
    assert_eq!(stats["resolved_with_finding"], 1, "{stats:#}");
    assert_eq!(stats["first_time_fix"], 1.0, "{stats:#}");
    ops.stop().await;
}

impl Ops {
    /// Posts one report of home `i` and returns ops' answer.
    async fn answer(&self, path: &str, key: &telemetry::Key, body: Vec<u8>) -> ops_client::Answer {
        let stream = tokio::net::TcpStream::connect(self.api).await.unwrap();
        ops_client::post_report(
            stream,
            None,
            &self.api.to_string(),
            path,
            key,
            Bytes::from(body),
            Duration::from_secs(10),
        )
        .await
        .unwrap()
    }

    /// The policy ops answers home `i`'s next report with (checked to be
    /// signed with its key, for it).
    async fn policy(&self, cpe: &mut Cpe, i: usize) -> telemetry::Policy {
        let a = self
            .answer(
                "/api/v1/reports",
                &self.keys[i],
                cpe.report(now_ms()).to_json().into_bytes(),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert!(a.signed_by(&self.keys[i]), "signed with h{i}'s key");
        assert!(!a.signed_by(&self.keys[(i + 1) % HOMES]));
        let p = telemetry::Policy::parse(&a.body).unwrap();
        assert_eq!(p.subscriber, format!("h{i}"));
        p
    }

    /// The homes ops answers a HAG report with.
    async fn hag_waived(&self) -> Vec<String> {
        let body = serde_json::to_vec(&telemetry::HagReport {
            schema: telemetry::SCHEMA,
            hag: "hag-1".into(),
            sent_at_ms: now_ms(),
            upstream_connects: 0,
            upstream_errors: 0,
            subscribers: vec![],
        })
        .unwrap();
        let a = self.answer("/api/v1/hag-reports", &self.hag, body).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert!(a.signed_by(&self.hag));
        telemetry::HagPolicy::parse(&a.body).unwrap().waived
    }
}

/// Waits (bounded) for the scan to recompute the policy.
async fn until_policy(
    ops: &Ops,
    cpe: &mut Cpe,
    i: usize,
    ok: impl Fn(&telemetry::Policy) -> bool,
) -> telemetry::Policy {
    for _ in 0..40 {
        let p = ops.policy(cpe, i).await;
        if ok(&p) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "policy of h{i} not as expected: {:?}",
        ops.policy(cpe, i).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_incident_waives_the_budget_and_grants_add_to_it() {
    let mut ops = Ops::start().await;
    let mut cpes: Vec<Cpe> = (0..HOMES).map(Cpe::new).collect();
    history(&ops, &mut cpes, 10, |c, k| {
        if k == 57 {
            c[1].showtime = false;
            c[1].no_signal = true;
        }
    })
    .await;
    // The broken pair opens a line incident: h1's budget is waived, the
    // HAG is told to record its mobile bytes apart; h0 is not waived.
    let p = until_policy(&ops, &mut cpes[1], 1, |p| p.waiver.is_some()).await;
    let w = p.waiver.unwrap();
    assert_eq!(w.location, "line");
    assert!(ops.policy(&mut cpes[0], 0).await.waiver.is_none());
    assert_eq!(ops.hag_waived().await, ["h1"]);
    let (_, home) = ops.get("/api/v1/homes/h1").await;
    assert_eq!(home["policy"]["waiver"]["incident"], w.incident, "{home:#}");
    // Dispatched: still waived. Resolved: no longer.
    let id = w.incident;
    ops.post(&format!("/api/v1/incidents/{id}/dispatch"), "{}")
        .await;
    assert!(ops.policy(&mut cpes[1], 1).await.waiver.is_some());
    // The technician splices the pair: the line trains again.
    cpes[1].showtime = true;
    cpes[1].no_signal = false;
    ops.policy(&mut cpes[1], 1).await;
    let (s, _) = ops
        .post(
            &format!("/api/v1/incidents/{id}/resolve"),
            r#"{"finding":"line"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    until_policy(&ops, &mut cpes[1], 1, |p| p.waiver.is_none()).await;
    assert!(ops.hag_waived().await.is_empty());

    // A grant to cabinet cab1 (h3..h5), then one to a list; they add up.
    let (s, g) = ops
        .post(
            "/api/v1/grants",
            r#"{"cabinet":"cab1","extra_bytes":50000000000,"hours":24,"note":"floods"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g}");
    assert_eq!(g["homes"], serde_json::json!(["h3", "h4", "h5"]));
    let (s, g2) = ops
        .post(
            "/api/v1/grants",
            r#"{"homes":["h4"],"extra_bytes":1000,"hours":1}"#,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{g2}");
    assert_eq!(
        ops.policy(&mut cpes[4], 4).await.extra_bytes,
        50_000_001_000
    );
    assert_eq!(
        ops.policy(&mut cpes[3], 3).await.extra_bytes,
        50_000_000_000
    );
    assert_eq!(ops.policy(&mut cpes[0], 0).await.extra_bytes, 0);
    let (_, list) = ops.get("/api/v1/grants?holding=true").await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list:#}");
    // Revoked: it stops at once.
    let (s, r) = ops
        .post(&format!("/api/v1/grants/{}/revoke", g["id"]), "")
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(ops.policy(&mut cpes[3], 3).await.extra_bytes, 0);
    assert_eq!(ops.policy(&mut cpes[4], 4).await.extra_bytes, 1000);
    let (_, list) = ops.get("/api/v1/grants?holding=true").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    // Bad grants: a clear error, nothing granted.
    for (body, want) in [
        (
            r#"{"cabinet":"cab9","extra_bytes":1,"hours":1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"homes":["h1","ghost"],"extra_bytes":1,"hours":1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"cell":"c1","cabinet":"cab0","extra_bytes":1,"hours":1}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"cell":"c1","extra_bytes":-1,"hours":1}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            r#"{"cell":"c1","extra_bytes":1,"hours":0}"#,
            StatusCode::BAD_REQUEST,
        ),
        ("not json", StatusCode::BAD_REQUEST),
    ] {
        let (s, e) = ops.post("/api/v1/grants", body).await;
        assert_eq!(s, want, "{body}: {e}");
    }
    let (s, _) = ops.post("/api/v1/grants/999/revoke", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = ops
        .call(
            Method::POST,
            "/api/v1/grants",
            Auth::Bearer("not-a-token"),
            Some(r#"{"cell":"c1","extra_bytes":1,"hours":1}"#),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (_, list) = ops.get("/api/v1/grants").await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list:#}");
    ops.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cabinet_outage_is_one_incident_with_every_home() {
    let mut ops = Ops::start().await;
    let mut cpes: Vec<Cpe> = (0..HOMES).map(Cpe::new).collect();
    history(&ops, &mut cpes, 10, |c, k| {
        if k == 56 {
            for cpe in &mut c[0..3] {
                cpe.showtime = false;
                cpe.no_signal = true;
            }
        }
    })
    .await;
    // The scan (every second) files it without anyone asking.
    let started = Instant::now();
    let incidents = loop {
        let (_, list) = ops.get("/api/v1/incidents?state=open").await;
        let v = list.as_array().unwrap().clone();
        if !v.is_empty() || started.elapsed() > Duration::from_secs(10) {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(incidents.len(), 1, "{incidents:#?}");
    let id = incidents[0]["id"].as_i64().unwrap();
    let (_, inc) = ops.get(&format!("/api/v1/incidents/{id}")).await;
    assert_eq!(inc["location"], "cabinet", "{inc:#}");
    assert_eq!(inc["group"], "cabinet:cab0", "{inc:#}");
    let mut homes: Vec<_> = inc["homes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    homes.sort();
    assert_eq!(homes, ["h0", "h1", "h2"], "{inc:#}");
    // A ticket from one of them lands in the same incident.
    let (_, t) = ops.post("/api/v1/tickets", r#"{"subscriber":"h2"}"#).await;
    assert_eq!(t["incident"]["id"].as_i64(), Some(id), "{t:#}");
    // A home that looked like its own pair for a moment (before its
    // neighbours' reports came in) was merged into it, not left open.
    let (_, all) = ops.get("/api/v1/incidents?state=all").await;
    for other in all.as_array().unwrap() {
        if other["id"].as_i64() != Some(id) {
            assert_eq!(other["state"], "merged", "{all:#}");
            assert_eq!(
                other["note"].as_str(),
                Some(format!("merged into incident {id}").as_str())
            );
        }
    }
    ops.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_replay_check_and_the_history() {
    let mut ops = Ops::start().await;
    let mut cpes: Vec<Cpe> = (0..HOMES).map(Cpe::new).collect();
    history(&ops, &mut cpes, 5, |c, k| {
        if k == 27 {
            c[4].showtime = false;
            c[4].no_signal = true;
        }
    })
    .await;
    let last = cpes[4].report(now_ms()).to_json();
    assert_eq!(
        ops.report_raw(&ops.keys[4], last.as_bytes()).await.0,
        StatusCode::OK
    );
    let (_, before) = ops.get("/api/v1/homes/h4/diagnosis").await;
    assert_eq!(before["location"], "line", "{before:#}");
    ops.stop().await;
    ops.run().await;
    // Replayed after the restart: still refused.
    let (s, text) = ops.report_raw(&ops.keys[4], last.as_bytes()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{text}");
    // The engine has its history back: the same diagnosis.
    let (_, after) = ops.get("/api/v1/homes/h4/diagnosis").await;
    assert_eq!(after["location"], "line", "{after:#}");
    assert_eq!(after["fault"], before["fault"]);
    // A token issued while it runs is taken within seconds.
    let store = Store::open(&ops.dir.path().join("ops.db")).unwrap();
    let t = store.issue_token(TokenKind::Cpe, "h5", now_ms()).unwrap();
    drop(store);
    let key = telemetry::key(t.as_bytes());
    let body = cpes[5].report(now_ms()).to_json();
    let started = Instant::now();
    loop {
        let (s, _) = ops.report_raw(&key, body.as_bytes()).await;
        if s == StatusCode::OK {
            break;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "new token never taken"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The old one was replaced.
    let old = cpes[5].report(now_ms()).to_json();
    assert_eq!(
        ops.report_raw(&ops.keys[5], old.as_bytes()).await.0,
        StatusCode::UNAUTHORIZED
    );
    ops.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_ends_the_faults_past_and_survives_a_restart() {
    let mut ops = Ops::start().await;
    let mut cpes: Vec<Cpe> = (0..HOMES).map(Cpe::new).collect();
    // h2's line errs and retrains for three minutes, then is quiet.
    history(&ops, &mut cpes, 10, |c, k| {
        if k == 30 {
            c[2].events.push(telemetry::Event::Retrain);
        }
        if (30..48).contains(&k) {
            c[2].crc += 400;
            c[2].es += 8;
        }
    })
    .await;
    let (_, d) = ops.get("/api/v1/homes/h2/diagnosis").await;
    assert_ne!(d["location"], "none", "the past still counts: {d:#}");
    let (s, t) = ops.post("/api/v1/tickets", r#"{"subscriber":"h2"}"#).await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let id = t["incident"]["id"].as_i64().expect("an incident");
    let (s, inc) = ops
        .post(
            &format!("/api/v1/incidents/{id}/resolve"),
            r#"{"finding":"line","note":"joint replaced"}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{inc}");
    // Judged from the repair on: healthy.
    let (_, d) = ops.get("/api/v1/homes/h2/diagnosis").await;
    assert_eq!(d["location"], "none", "{d:#}");
    // And after a restart (the repair comes back from the incident).
    ops.stop().await;
    ops.run().await;
    let (_, d) = ops.get("/api/v1/homes/h2/diagnosis").await;
    assert_eq!(d["location"], "none", "{d:#}");
    ops.stop().await;
}
