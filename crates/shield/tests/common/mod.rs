//! Test harness: the shield in process (optionally inside a network
//! namespace), NSD and Knot as real upstream and RPZ primary, dig and curl
//! as real clients. Everything started here is stopped by a Drop guard.
#![allow(dead_code, unreachable_pub)]

pub use lab::wait::wait_until;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A loopback /24 of our own: 127.<pid-derived>.<test>.0/24, so that tests
/// and concurrent runs never share an address.
pub fn net(test: u8) -> String {
    let a = 100 + (std::process::id() % 150) as u8;
    format!("127.{a}.{test}")
}

/// A directory removed on drop.
pub struct TempDir(pub tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        Self(
            tempfile::Builder::new()
                .prefix(&format!("shield-{tag}-"))
                .tempdir()
                .unwrap(),
        )
    }
    pub fn path(&self, f: &str) -> PathBuf {
        self.0.path().join(f)
    }
}

/// A child process killed (by its PID) and reaped on drop.
pub struct Proc(pub Child, pub &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The upstream test zone.
pub const SHIELD_TEST_ZONE: &str = r#"$ORIGIN shield.test.
$TTL 300
@ SOA ns.shield.test. admin.shield.test. 1 3600 600 86400 30
@ NS ns
ns A 127.0.0.1
www A 192.0.2.10
www AAAA 2001:db8::10
alias CNAME www
phish-alias CNAME login.phish.shield.test.
login.phish A 192.0.2.66
deep CNAME alias
good.evil A 192.0.2.20
x.good.evil A 192.0.2.21
mail MX 10 www
"#;

/// A zone with a TXT RRset larger than 1232 bytes (forces TCP).
pub fn big_txt_records() -> String {
    let mut s = String::new();
    for i in 0..12 {
        s.push_str(&format!("big TXT \"{i:02}{}\"\n", "x".repeat(180)));
    }
    s
}

/// Starts NSD on `addr` serving `zones` (name, zone file text).
/// NSD serving the test zone `shield.test` on `<net>.53` (a free port);
/// returns it and its address.
pub fn start_test_nsd(net: &str, dir: &TempDir) -> (Proc, SocketAddr) {
    let nsd_addr = addr(net, 53, free_port(&format!("{net}.53")));
    let nsd = start_nsd(
        dir,
        nsd_addr,
        &[("shield.test", SHIELD_TEST_ZONE.into())],
        None,
    );
    (nsd, nsd_addr)
}

pub fn start_nsd(
    dir: &TempDir,
    addr: SocketAddr,
    zones: &[(&str, String)],
    ns: Option<&str>,
) -> Proc {
    let d = dir.0.path().display();
    let mut conf = format!(
        "server:\n  ip-address: {}@{}\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdir: \"{d}\"\n  logfile: \"{d}/nsd.log\"\n  verbosity: 1\nremote-control:\n  control-enable: no\n",
        addr.ip(),
        addr.port()
    );
    for (name, text) in zones {
        std::fs::write(dir.path(&format!("{name}.zone")), text).unwrap();
        conf.push_str(&format!("zone:\n  name: {name}\n  zonefile: {name}.zone\n"));
    }
    let cf = dir.path("nsd.conf");
    std::fs::write(&cf, conf).unwrap();
    let mut cmd = in_ns(ns, "nsd");
    cmd.args(["-d", "-c"]).arg(&cf);
    let p = Proc(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nsd (apt-get install nsd)"),
        "nsd",
    );
    let probe = zones[0].0.to_string();
    wait_until("nsd", Duration::from_secs(10), || {
        let out = in_ns(ns, "dig")
            .args([
                &format!("@{}", addr.ip()),
                "-p",
                &addr.port().to_string(),
                &probe,
                "SOA",
                "+norec",
                "+time=1",
                "+tries=1",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("status: NOERROR")
    });
    p
}

/// Knot DNS as an RPZ primary with IXFR from zone-file differences and
/// NOTIFY to `notify` sent from `addr`'s address.
pub struct Knot {
    pub proc: Proc,
    pub dir: PathBuf,
    pub zone: String,
}

impl Knot {
    pub fn start(
        dir: &TempDir,
        addr: SocketAddr,
        zone: &str,
        body: &str,
        serial: u32,
        notify: SocketAddr,
    ) -> Self {
        let d = dir.0.path().join("knot");
        std::fs::create_dir_all(d.join("db")).unwrap();
        let conf = format!(
            "server:\n  listen: {ip}@{port}\n  rundir: {d}\n  user: root:root\n  background-workers: 1\n  udp-workers: 1\n  tcp-workers: 1\nlog:\n  - target: stderr\n    any: info\ndatabase:\n  storage: {d}/db\nremote:\n  - id: shield\n    address: {nip}@{nport}\n    via: {ip}\nacl:\n  - id: xfr\n    address: 127.0.0.0/8\n    action: transfer\ntemplate:\n  - id: default\n    storage: {d}\n    zonefile-sync: -1\n    zonefile-load: difference\n    journal-content: changes\n    semantic-checks: off\nzone:\n  - domain: {zone}\n    file: {zone}.zone\n    notify: shield\n    acl: xfr\n",
            ip = addr.ip(),
            port = addr.port(),
            d = d.display(),
            nip = notify.ip(),
            nport = notify.port(),
        );
        std::fs::write(d.join("knot.conf"), conf).unwrap();
        let k = Self {
            proc: Proc(
                Command::new("knotd")
                    .arg("-c")
                    .arg(d.join("knot.conf"))
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(d.join("knot.log")).unwrap())
                    .spawn()
                    .expect("knotd (apt-get install knot)"),
                "knotd",
            ),
            dir: d,
            zone: zone.into(),
        };
        k.write_zone(serial, body);
        // The zone file was written after start: load it.
        wait_until("knotd control socket", Duration::from_secs(10), || {
            k.dir.join("knot.sock").exists()
        });
        k.reload();
        let z = zone.to_string();
        wait_until("knot zone", Duration::from_secs(10), || {
            let out = Command::new("dig")
                .args([
                    &format!("@{}", addr.ip()),
                    "-p",
                    &addr.port().to_string(),
                    &z,
                    "SOA",
                    "+norec",
                    "+time=1",
                    "+tries=1",
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).contains("status: NOERROR")
        });
        k
    }

    pub fn write_zone(&self, serial: u32, body: &str) {
        let text = format!(
            "$ORIGIN {z}.\n$TTL 60\n@ SOA ns.{z}. admin.{z}. {serial} 3600 600 86400 60\n@ NS ns.{z}.\n{body}",
            z = self.zone
        );
        std::fs::write(self.dir.join(format!("{}.zone", self.zone)), text).unwrap();
    }

    pub fn reload(&self) {
        let st = Command::new("knotc")
            .arg("-s")
            .arg(self.dir.join("knot.sock"))
            .args(["zone-reload", &self.zone])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "knotc zone-reload");
    }
}

/// Builds a command, inside a network namespace if `ns` is set.
pub fn in_ns(ns: Option<&str>, prog: &str) -> Command {
    match ns {
        None => Command::new(prog),
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n, prog]);
            c
        }
    }
}

/// What dig printed.
#[derive(Debug)]
pub struct Dig {
    pub raw: String,
    pub status: Option<String>,
    pub answers: Vec<String>,
    pub ede: Option<String>,
    pub flags: String,
    pub timed_out: bool,
}

impl Dig {
    /// The data of the answer records, e.g. "192.0.2.10".
    pub fn data(&self) -> Vec<String> {
        self.answers
            .iter()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect()
    }
}

/// Runs dig against `server` with extra arguments.
pub fn dig(ns: Option<&str>, server: SocketAddr, args: &[&str]) -> Dig {
    let out = in_ns(ns, "dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig (apt-get install bind9-dnsutils)");
    let raw = String::from_utf8_lossy(&out.stdout).to_string();
    let status = raw
        .split("status: ")
        .nth(1)
        .map(|s| s.split(',').next().unwrap_or("").to_string());
    let flags = raw
        .split(";; flags: ")
        .nth(1)
        .map(|s| s.split(';').next().unwrap_or("").to_string())
        .unwrap_or_default();
    let ede = raw
        .lines()
        .find(|l| l.starts_with("; EDE:"))
        .map(|l| l.trim_start_matches("; EDE:").trim().to_string());
    let mut answers = Vec::new();
    let mut in_ans = false;
    for l in raw.lines() {
        if l.starts_with(";; ANSWER SECTION") {
            in_ans = true;
            continue;
        }
        if in_ans {
            if l.trim().is_empty() {
                in_ans = false;
            } else {
                answers.push(l.to_string());
            }
        }
    }
    Dig {
        timed_out: raw.contains("timed out") && status.is_none(),
        raw,
        status,
        answers,
        ede,
        flags,
    }
}

/// A shield running in process on its own runtime thread (optionally in a
/// network namespace); stopped on drop.
pub struct Shield {
    pub dns: SocketAddr,
    pub warning: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: Arc<shield::Metrics>,
    pub policy: Arc<shield::Policy>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shield {
    pub fn start(config_toml: &str) -> Self {
        Self::start_in(None, config_toml)
    }

    pub fn start_in(ns: Option<&str>, config_toml: &str) -> Self {
        let config = shield::Config::from_toml(config_toml).expect("test config");
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let ns = ns.map(str::to_string);
        let thread = std::thread::spawn(move || {
            if let Some(n) = ns {
                lab::netns::enter(&n).unwrap();
            }
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let s = match shield::Server::bind(config).await {
                    Ok(s) => s,
                    Err(e) => {
                        tx.send(Err(e.to_string())).unwrap();
                        return;
                    }
                };
                tx.send(Ok((
                    s.dns_addrs()[0],
                    s.warning_addrs()[0],
                    s.admin_addr().unwrap(),
                    s.metrics(),
                    s.policy(),
                )))
                .unwrap();
                s.serve(async {
                    let _ = stop_rx.await;
                })
                .await
                .unwrap();
            });
        });
        let (dns, warning, admin, metrics, policy) = rx.recv().unwrap().expect("shield start");
        Self {
            dns,
            warning,
            admin,
            metrics,
            policy,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Value of a metric line starting with `prefix` (0 if absent).
    pub fn metric(&self, prefix: &str) -> f64 {
        self.metrics
            .render()
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Shield {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The config common to the tests, with `extra` TOML appended.
pub fn config(net: &str, upstreams: &[SocketAddr], extra: &str) -> String {
    let ups: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        r#"listen = ["{net}.1:0"]
subscriber_prefixes = ["{net}.0/25"]
admin_listen = "{net}.1:0"
udp_workers = 2

[upstream]
servers = [{ups}]
timeout_ms = 800

[warning]
ipv4 = "{net}.80"
ipv6 = "fd00::80"
http_listen = ["{net}.80:0"]
ttl_secs = 30
operator_name = "Example ISP"

{extra}
"#,
        ups = ups.join(", ")
    )
}

/// Writes a file.
pub fn write(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
}

/// An address on our loopback /24.
pub fn addr(net: &str, host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(format!("{net}.{host}").parse::<IpAddr>().unwrap(), port)
}

/// A free port on `ip` (UDP and TCP), probed by binding.
pub fn free_port(ip: &str) -> u16 {
    for _ in 0..100 {
        let u = std::net::UdpSocket::bind(format!("{ip}:0")).unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(format!("{ip}:{port}")).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}
