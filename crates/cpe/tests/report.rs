//! The CPE's reports to ops in-process: a real `ops` service on loopback,
//! a CPE (interception off) whose modems are files in the tools' formats.
//! Reports arrive signed and carry the readings; with ops away they wait
//! in the queue and are delivered, oldest first, once it is back.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ops_client::{Auth, Method, StatusCode};
use serde_json::Value;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An ops service with one home, `h0`, and its CPE token.
struct Ops {
    api: SocketAddr,
    operator: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn ops_files(dir: &Path, port: u16) -> (String, String) {
    ops_files_with(dir, port, "")
}

/// As [`ops_files`], with `api` lines added under `[api]`.
fn ops_files_with(dir: &Path, port: u16, api: &str) -> (String, String) {
    std::fs::write(
        dir.join("homes.csv"),
        "subscriber,cabinet,card,cell\nh0,cab0,0,c1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("ops.toml"),
        format!(
            "[api]\nlisten = \"127.0.0.1:{port}\"\n{api}[admin]\nlisten = \"127.0.0.2:0\"\n\
             [data]\ndb = \"ops.db\"\ninventory = \"homes.csv\"\n\
             [engine]\nreport_period_s = 1\nscan_interval_s = 1\n"
        ),
    )
    .unwrap();
    let store = ops::store::Store::open(&dir.join("ops.db")).unwrap();
    let cpe = store
        .issue_token(ops::store::TokenKind::Cpe, "h0", now_ms())
        .unwrap();
    let operator = store
        .issue_token(ops::store::TokenKind::Operator, "noc", now_ms())
        .unwrap();
    (cpe, operator)
}

impl Ops {
    async fn start(dir: &Path, operator: String) -> Self {
        let config = ops::config::Config::load(&dir.join("ops.toml")).unwrap();
        let server = ops::service::Server::bind(config).await.unwrap();
        let api = server.api_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Self {
            api,
            operator,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn home(&self) -> Value {
        let stream = tokio::net::TcpStream::connect(self.api).await.unwrap();
        let a = ops_client::request(
            stream,
            &self.api.to_string(),
            Method::GET,
            "/api/v1/homes/h0",
            Auth::Bearer(&self.operator),
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        serde_json::from_slice(&a.body).unwrap()
    }

    /// An operator's POST.
    async fn post(&self, path: &str, body: &str) -> (StatusCode, String) {
        let stream = tokio::net::TcpStream::connect(self.api).await.unwrap();
        let a = ops_client::request(
            stream,
            &self.api.to_string(),
            Method::POST,
            path,
            Auth::Bearer(&self.operator),
            Some(bytes::Bytes::from(body.to_owned())),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        (a.status, a.text())
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

fn showtime(margin_tenths: i32, showtime_s: u64) -> telemetry::DslLine {
    telemetry::DslLine {
        status: telemetry::LineStatus::Up,
        link_status: telemetry::LinkStatus::Up,
        upstream_max_bit_rate: 12_000,
        downstream_max_bit_rate: 60_000,
        upstream_noise_margin: 90,
        downstream_noise_margin: margin_tenths,
        upstream_attenuation: 80,
        downstream_attenuation: 140,
        upstream_power: 120,
        downstream_power: 130,
        stats: telemetry::LineStats {
            last_showtime_start: showtime_s,
            total: Default::default(),
        },
        channel: telemetry::Channel {
            upstream_curr_rate: 10_000,
            downstream_curr_rate: 50_000,
            stats: Default::default(),
        },
    }
}

/// A running CPE reporting to `ops` every `period_s`; stops on drop.
struct Cpe {
    metrics: Arc<cpe::Metrics>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn cpe(dir: &Path, ops: SocketAddr, token: &str, period_s: u64) -> Cpe {
    cpe_with(dir, ops, token, period_s, "").await
}

/// As [`cpe`], with `telemetry` lines added under `[telemetry]`.
async fn cpe_with(dir: &Path, ops: SocketAddr, token: &str, period_s: u64, telemetry: &str) -> Cpe {
    let dsl = dir.join("dsl.json");
    let lte = dir.join("lte.json");
    std::fs::write(&dsl, modem::ubus::render(&showtime(112, 3_600))).unwrap();
    let radio = telemetry::Radio {
        registered: true,
        rsrp_dbm: Some(-95.0),
        rsrq_db: Some(-10.0),
        sinr_db: Some(14.0),
        cell_id: Some("01A2D30F".into()),
    };
    std::fs::write(&lte, modem::mmcli::render(&radio)).unwrap();
    let text = format!(
        r#"
lan_interface = "lo"
hag = "127.0.0.1:9"
admin_listen = "127.0.0.1:0"
manage_mptcp_endpoints = false
nat = false
congestion_control = "reno"
[dsl]
interface = "dsl0"
address = "192.0.2.1"
down_kbit = 8000
up_kbit = 1000
[lte]
interface = "lte0"
address = "192.0.2.2"
[steering]
probes = false
[telemetry]
ops = "{ops}"
subscriber = "h0"
token = "{token}"
period_s = {period_s}
timeout_ms = 1000
dsl = "file:{}"
mobile = "file:{}"
{telemetry}
"#,
        dsl.display(),
        lte.display()
    );
    let config = cpe::Config::from_toml(&text).unwrap();
    let server = cpe::Server::bind_with(
        config,
        cpe::Options {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            transparent: false,
            intercept: false,
            mptcp: false,
            bind_wan: false,
        },
    )
    .await
    .unwrap();
    let metrics = server.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (_reload, reloads) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let _keep = _reload;
        server
            .serve(
                async move {
                    let _ = stopped.await;
                },
                reloads,
            )
            .await
    });
    Cpe {
        metrics,
        _stop: stop,
    }
}

/// A metric's value (summed over its label sets), 0 when absent.
fn value(m: &cpe::Metrics, name: &str) -> f64 {
    m.render()
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn until(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn reports_arrive_signed_with_the_modems_readings() {
    let dir = tempfile::tempdir().unwrap();
    let (token, operator) = ops_files(dir.path(), free_port());
    let ops = Ops::start(dir.path(), operator).await;
    let cpe = cpe(dir.path(), ops.api, &token, 1).await;
    until(
        "three reports delivered",
        Duration::from_secs(10),
        async || {
            value(
                &cpe.metrics,
                "tandem_cpe_reports_total{result=\"delivered\"}",
            ) >= 3.0
        },
    )
    .await;
    let home = ops.home().await;
    assert!(home["last_report_ms"].as_u64().unwrap() > 0, "{home}");
    assert_eq!(home["via"], "dsl", "{home}");
    let last = &home["last"];
    assert_eq!(last["showtime"], true, "{home}");
    assert_eq!(last["ds_margin"], 11.2, "the ubus file's margin: {home}");
    assert_eq!(last["registered"], true, "{home}");
    assert_eq!(
        value(&cpe.metrics, "tandem_cpe_reports_total{result=\"refused\"}"),
        0.0
    );
    assert_eq!(value(&cpe.metrics, "tandem_cpe_report_queue"), 0.0);
    // The line loses margin: the next reports say so.
    std::fs::write(
        dir.path().join("dsl.json"),
        modem::ubus::render(&showtime(23, 3_700)),
    )
    .unwrap();
    until(
        "the lower margin reaches ops",
        Duration::from_secs(10),
        async || ops.home().await["last"]["ds_margin"] == 2.3,
    )
    .await;
    // A modem whose output breaks: reports go on without the line.
    std::fs::write(dir.path().join("dsl.json"), "{ broken").unwrap();
    let before = value(
        &cpe.metrics,
        "tandem_cpe_reports_total{result=\"delivered\"}",
    );
    until("reports go on", Duration::from_secs(10), async || {
        value(
            &cpe.metrics,
            "tandem_cpe_reports_total{result=\"delivered\"}",
        ) >= before + 2.0
    })
    .await;
    drop(cpe);
    ops.stop().await;
}

#[tokio::test]
async fn the_cpe_takes_the_policy_ops_answers_with() {
    let dir = tempfile::tempdir().unwrap();
    let (token, operator) = ops_files(dir.path(), free_port());
    let ops = Ops::start(dir.path(), operator).await;
    let cpe = cpe(dir.path(), ops.api, &token, 1).await;
    until("a report delivered", Duration::from_secs(10), async || {
        value(
            &cpe.metrics,
            "tandem_cpe_reports_total{result=\"delivered\"}",
        ) >= 1.0
    })
    .await;
    assert_eq!(value(&cpe.metrics, "tandem_cpe_budget_extra_bytes"), 0.0);
    // The operator grants h0 extra mobile budget: its next answer says so.
    let (s, text) = ops
        .post(
            "/api/v1/grants",
            r#"{"homes":["h0"],"extra_bytes":123456789,"hours":2}"#,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    until(
        "the grant reaches the CPE",
        Duration::from_secs(10),
        async || value(&cpe.metrics, "tandem_cpe_budget_extra_bytes") == 123_456_789.0,
    )
    .await;
    assert_eq!(value(&cpe.metrics, "tandem_cpe_budget_waiver"), 0.0);
    drop(cpe);
    ops.stop().await;
}

#[tokio::test]
async fn reports_wait_for_ops_and_arrive_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (token, operator) = ops_files(dir.path(), port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cpe = cpe(dir.path(), addr, &token, 1).await;
    until("four reports queued", Duration::from_secs(10), async || {
        value(&cpe.metrics, "tandem_cpe_report_queue") >= 4.0
    })
    .await;
    assert!(value(&cpe.metrics, "tandem_cpe_report_failures_total") >= 4.0);
    assert_eq!(
        value(
            &cpe.metrics,
            "tandem_cpe_reports_total{result=\"delivered\"}"
        ),
        0.0
    );
    let ops = Ops::start(dir.path(), operator).await;
    until(
        "the backlog delivered",
        Duration::from_secs(10),
        async || {
            value(&cpe.metrics, "tandem_cpe_report_queue") == 0.0
                && value(
                    &cpe.metrics,
                    "tandem_cpe_reports_total{result=\"delivered\"}",
                ) >= 5.0
        },
    )
    .await;
    // Oldest first: every one accepted, none refused as a replay.
    assert_eq!(
        value(&cpe.metrics, "tandem_cpe_reports_total{result=\"refused\"}"),
        0.0
    );
    assert!(ops.home().await["last_report_ms"].as_u64().unwrap() > 0);
    drop(cpe);
    ops.stop().await;
}

#[tokio::test]
async fn a_dying_gasp_goes_out_at_once_on_sigpwr() {
    let dir = tempfile::tempdir().unwrap();
    let (token, operator) = ops_files(dir.path(), free_port());
    let ops = Ops::start(dir.path(), operator).await;
    // One report at start and none after it: the gasp can only come from
    // the signal, and stays ops' last word.
    let cpe = cpe(dir.path(), ops.api, &token, 3600).await;
    // The reporter runs (and so listens for SIGPWR) once it has delivered.
    until("a first report", Duration::from_secs(10), async || {
        value(
            &cpe.metrics,
            "tandem_cpe_reports_total{result=\"delivered\"}",
        ) >= 1.0
    })
    .await;
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGPWR).unwrap();
    let t = Instant::now();
    until("the gasp at ops", Duration::from_secs(5), async || {
        ops.home().await["last"]["gasp"] == true
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(cpe);
    ops.stop().await;
}

#[tokio::test]
async fn reports_go_over_tls_to_the_ops_the_ca_vouches_for() {
    let dir = tempfile::tempdir().unwrap();
    let pki = ops::tls::init(&dir.path().join("tls"), &["127.0.0.1".into()], 30).unwrap();
    let (token, operator) = ops_files_with(
        dir.path(),
        free_port(),
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            pki.cert.display(),
            pki.key.display()
        ),
    );
    let config = ops::config::Config::load(&dir.path().join("ops.toml")).unwrap();
    let server = ops::service::Server::bind(config).await.unwrap();
    let api = server.api_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    let good = cpe_with(
        dir.path(),
        api,
        &token,
        1,
        &format!("tls = true\nca = \"{}\"", pki.ca_cert.display()),
    )
    .await;
    // A CPE trusting another CA never hands its reports over.
    let other = ops::tls::init(&dir.path().join("other"), &["127.0.0.1".into()], 30).unwrap();
    let fooled = cpe_with(
        dir.path(),
        api,
        &token,
        1,
        &format!("tls = true\nca = \"{}\"", other.ca_cert.display()),
    )
    .await;
    until(
        "reports delivered over TLS",
        Duration::from_secs(10),
        async || {
            value(
                &good.metrics,
                "tandem_cpe_reports_total{result=\"delivered\"}",
            ) >= 3.0
        },
    )
    .await;
    assert_eq!(
        value(
            &fooled.metrics,
            "tandem_cpe_reports_total{result=\"delivered\"}"
        ),
        0.0
    );
    assert!(value(&fooled.metrics, "tandem_cpe_report_queue") >= 1.0);
    // The operator reads what arrived, over TLS too.
    let tls = ops_client::Tls::load(&pki.ca_cert, "127.0.0.1").unwrap();
    let stream = tokio::net::TcpStream::connect(api).await.unwrap();
    let a = ops_client::request_over(
        stream,
        Some(&tls),
        &api.to_string(),
        Method::GET,
        "/api/v1/homes/h0",
        Auth::Bearer(&operator),
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let home: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(home["last"]["ds_margin"], 11.2, "{home}");
    drop((good, fooled));
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
