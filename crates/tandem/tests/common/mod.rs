//! Shared harness of the end-to-end tests: a lab that is torn down even when
//! the test fails, commands inside its namespaces, metrics scraping.
#![allow(dead_code, unreachable_pub)]

use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub const TANDEM: &str = env!("CARGO_BIN_EXE_tandem");

/// One lab at a time: they share the machine's two cores, and a shaped-link
/// measurement next to another lab's traffic means nothing.
static SERIAL: Mutex<()> = Mutex::new(());

/// A running lab; `Drop` runs `tandem lab down` (also on panic) and checks
/// that nothing was left behind.
pub struct Lab {
    pub name: String,
    _serial: MutexGuard<'static, ()>,
}

impl Lab {
    pub fn up(tag: &str, profile: &str) -> Self {
        Self::up_with(tag, profile, &[])
    }

    /// A lab with more `lab up` arguments (`--homes 5`, ...).
    pub fn up_with(tag: &str, profile: &str, more: &[&str]) -> Self {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let name = format!("{tag}{}", std::process::id() % 1000);
        let _ = Command::new(TANDEM)
            .args(["lab", "down", "--name", &name])
            .output();
        let lab = Self {
            name,
            _serial: serial,
        };
        let out = Command::new(TANDEM)
            .args(["lab", "up", "--name", &lab.name, "--profile", profile])
            .args(more)
            .output()
            .expect("run tandem lab up");
        assert!(
            out.status.success(),
            "lab up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    /// `GET path` on ops' API (in the `net` node) as the lab's operator,
    /// answered 200 with JSON.
    pub fn ops_api(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.ops_call("GET", path, None);
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// `method path` with `body` on ops' API as the lab's operator: the
    /// status and the body.
    pub fn ops_call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        lab::topology::ops_call(&self.name, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.name)
    }

    /// Runs a command in a node; returns its output (does not assert).
    pub fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        lab::cmd::in_ns(&self.ns(node), cmd)
            .output()
            .expect("ip netns exec")
    }

    /// Runs a command in a node and returns stdout; panics on failure.
    pub fn ok(&self, node: &str, cmd: &[&str]) -> String {
        let out = self.exec(node, cmd);
        assert!(
            out.status.success(),
            "{cmd:?} in {node} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The admin metrics of the HAG (`hag`) or the CPE (`cpe`).
    pub fn metrics(&self, node: &str) -> String {
        let (code, body) = lab::netns::http_get(
            &self.ns(node),
            admin_addr(node),
            "/metrics",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("metrics of {node}: {e}"));
        assert_eq!(code, 200, "metrics of {node}: {body}");
        body
    }

    /// What the admin `/status` of the HAG (`hag`) or the CPE (`cpe`) says.
    pub fn admin_status(&self, node: &str) -> lab::netns::AdminStatus {
        lab::netns::admin_status(&self.ns(node), admin_addr(node))
            .unwrap_or_else(|e| panic!("status of {node}: {e}"))
    }

    /// A kernel counter of a node from /proc/net/netstat (e.g. "TCPFastOpenPassive").
    pub fn netstat(&self, node: &str, name: &str) -> u64 {
        let text = self.ok(node, &["cat", "/proc/net/netstat"]);
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks(2) {
            if pair.len() < 2 {
                continue;
            }
            let keys: Vec<&str> = pair[0].split_whitespace().collect();
            let vals: Vec<&str> = pair[1].split_whitespace().collect();
            if let Some(i) = keys.iter().position(|k| *k == name) {
                return vals[i].parse().unwrap();
            }
        }
        panic!("no counter {name} in {node}");
    }

    pub fn log(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/run/tandem-lab/{}/{file}", self.name)).unwrap_or_default()
    }

    pub fn pid(&self, role: &str) -> u32 {
        let state =
            std::fs::read_to_string(format!("/run/tandem-lab/{}/state.toml", self.name)).unwrap();
        let v: toml::Value = toml::from_str(&state).unwrap();
        for p in v["pids"].as_array().unwrap() {
            let a = p.as_array().unwrap();
            if a[0].as_str() == Some(role) {
                return a[1].as_integer().unwrap() as u32;
            }
        }
        panic!("no pid for {role}");
    }

    /// Runs `f` on a thread inside a node's network namespace.
    pub fn in_ns<T: Send + 'static>(
        &self,
        node: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        lab::netns::run_in(&self.ns(node), f).unwrap_or_else(|e| panic!("in {node}: {e}"))
    }

    /// Starts `f` on a thread inside a node's network namespace.
    pub fn spawn_in_ns<T: Send + 'static>(
        &self,
        node: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = self.ns(node);
        std::thread::spawn(move || {
            lab::netns::enter(&ns).unwrap_or_else(|e| panic!("{e}"));
            f()
        })
    }
}

impl Lab {
    /// The subscriber cookie `lab up` wrote into the CPE's configuration.
    pub fn cookie(&self) -> Vec<u8> {
        let text =
            std::fs::read_to_string(format!("/run/tandem-lab/{}/cpe.toml", self.name)).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        hex::decode(v["cookie"].as_str().expect("cookie in cpe.toml")).unwrap()
    }

    /// Sends one Convert Connect (with an optional cookie) from a node,
    /// optionally from a source address, to the HAG; returns its reply.
    pub fn convert_request(
        &self,
        node: &str,
        bind: Option<&str>,
        cookie: Option<Vec<u8>>,
        dest: &str,
    ) -> convert_proto::Message {
        use convert_proto::{Connect, Message, Tlv};
        use std::io::{Read, Write};
        let dest: std::net::SocketAddr = dest.parse().unwrap();
        let bind = bind.map(|b| b.parse::<std::net::IpAddr>().unwrap());
        self.in_ns(node, move || {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            if let Some(ip) = bind {
                sock.bind(&std::net::SocketAddr::new(ip, 0).into()).unwrap();
            }
            let hag: std::net::SocketAddr = "10.66.0.1:5124".parse().unwrap();
            sock.connect_timeout(&hag.into(), Duration::from_secs(5))
                .expect("connect to the HAG");
            let mut s: std::net::TcpStream = sock.into();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut tlvs = vec![Tlv::Connect(Connect {
                remote: dest,
                tcp_options: vec![],
            })];
            if let Some(c) = cookie {
                tlvs.push(Tlv::Cookie(c));
            }
            s.write_all(&Message { tlvs }.to_bytes()).unwrap();
            // Half-close: a relayed connection then ends as soon as the
            // destination answers the FIN.
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            Message::decode(&buf)
                .unwrap_or_else(|e| panic!("no Convert reply ({e}): {buf:?}"))
                .0
        })
    }
}

impl Lab {
    /// A file in the lab's state directory.
    pub fn file(&self, name: &str) -> String {
        format!("/run/tandem-lab/{}/{name}", self.name)
    }

    /// Sends a signal to a process the lab started.
    pub fn signal(&self, role: &str, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid(role) as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Runs `tandem ARGS` and returns (success, stdout + stderr).
    pub fn tandem(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(TANDEM).args(args).output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Starts `tandem ARGS` inside a node (stderr discarded); the caller ends it.
    pub fn spawn_tandem(&self, node: &str, args: &[&str]) -> std::process::Child {
        lab::cmd::in_ns(&self.ns(node), [TANDEM])
            .args(args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn tandem in the lab")
    }

    /// Waits until the HAG (`hag`) or the CPE (`cpe`) says it is ready on
    /// its admin `/status` (the CPE: once its path manager runs).
    pub fn wait_ready(&self, node: &str) {
        lab::netns::wait_ready(&self.ns(node), admin_addr(node), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{node} did not become ready: {e}"));
    }

    /// Waits until an admin listener in a node answers `/live`.
    pub fn wait_live(&self, node: &str, port: u16) {
        let url = format!("http://127.0.0.1:{port}/live");
        assert!(
            lab::wait::until(Duration::from_secs(10), || self
                .exec(node, &["curl", "-s", "-o", "/dev/null", &url])
                .status
                .success()),
            "{url} in {node} did not come up"
        );
    }

    /// Edits the HAG configuration and sends SIGHUP; waits until the HAG's
    /// admin `/status` shows the next configuration generation.
    pub fn reconfigure_hag(&self, edit: impl FnOnce(String) -> String) {
        self.reconfigure("hag", edit);
    }

    /// Edits the CPE configuration and sends SIGHUP; waits until the CPE's
    /// admin `/status` shows the next configuration generation.
    pub fn reconfigure_cpe(&self, edit: impl FnOnce(String) -> String) {
        self.reconfigure("cpe", edit);
    }

    fn reconfigure(&self, role: &str, edit: impl FnOnce(String) -> String) {
        let path = self.file(&format!("{role}.toml"));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
        let (ok, out) = self.tandem(&[role, "check-config", &path]);
        assert!(ok, "{out}");
        let before = self.admin_status(role).config_generation;
        self.signal(role, nix::sys::signal::Signal::SIGHUP);
        lab::netns::wait_reloaded(
            &self.ns(role),
            admin_addr(role),
            before,
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("{role} did not reload: {e}"));
    }

    /// The sum of a metric family's series whose line starts with `prefix`.
    pub fn metric_sum(&self, node: &str, prefix: &str) -> f64 {
        self.metrics(node)
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = Command::new(TANDEM)
            .args(["lab", "down", "--name", &self.name])
            .output();
        let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let left = String::from_utf8_lossy(&left.stdout);
        let prefix = format!("{}-", self.name);
        let leaked: Vec<&str> = left.lines().filter(|l| l.starts_with(&prefix)).collect();
        if !std::thread::panicking() {
            assert!(out.is_ok_and(|o| o.status.success()), "lab down failed");
            assert!(leaked.is_empty(), "namespaces leaked: {leaked:?}");
        }
    }
}

/// The value of one metric line (exact name with labels), 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == series).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// SHA-256 of what `GET /bytes/len` returns.
pub fn expected(len: u64) -> String {
    lab::origin::expected_sha256(len)
}

/// The admin listener of the HAG (`hag`) or the CPE (any other node).
pub fn admin_addr(node: &str) -> std::net::SocketAddr {
    match node {
        "hag" => lab::topology::HAG_ADMIN,
        // Ops runs there.
        "net" => lab::topology::OPS_ADMIN,
        _ => lab::topology::CPE_ADMIN,
    }
}
