//! What the contenders need besides the lab: the second origin under
//! `mptcpize`, shadowsocks-libev's server and local proxy, and the same
//! receive-buffer tuning for everyone.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use lab::topology::{addr, ns, wait_port};

use crate::contender::{Contender, Kind, MPTCP_ORIGIN_PORT, SOCKS_PORT, SS_METHOD, SS_SERVER_PORT};
use crate::exec::Proc;
use crate::BenchError;

/// The receive-buffer sysctl applied in every end host's namespace (home,
/// cpe, hag, net): MPTCP over links with very different RTTs needs a large
/// receive buffer from the start or the receiver drops in-window data
/// (MPTcpExtNoDSSInWindow). Tandem sets SO_RCVBUF itself; contenders 3 and
/// 4 get the same head start from this, and the plain-TCP contenders the
/// same setting.
pub(crate) const TCP_RMEM: &str = "4096 1048576 16777216";

/// Processes started for the contenders; stopped when dropped.
#[derive(Debug, Default)]
pub(crate) struct Servers {
    procs: Vec<Proc>,
}

impl Servers {
    /// Tunes the namespaces and starts what the selected contenders need.
    pub(crate) fn start(
        lab: &str,
        contenders: &[Contender],
        dir: &Path,
        exe: &Path,
    ) -> Result<Self, BenchError> {
        for node in ["home", "cpe", "hag", "net"] {
            lab::netns::sysctl(&ns(lab, node), "net.ipv4.tcp_rmem", TCP_RMEM)?;
        }
        let mut s = Self::default();
        let has = |k: fn(&Kind) -> bool| contenders.iter().any(|c| k(&c.kind));
        if has(|k| matches!(k, Kind::MptcpEndToEnd)) {
            // The server side accepts the CPE's second subflow (MP_JOIN).
            lab::net::mptcp_subflows(&ns(lab, "net"), 2)?;
            let listen = format!("{}:{MPTCP_ORIGIN_PORT}", addr::ORIGIN);
            let argv = [
                "mptcpize".to_string(),
                "run".into(),
                exe.display().to_string(),
                "lab".into(),
                "origin".into(),
                "--listen".into(),
                listen,
            ];
            s.add(
                Proc::spawn(
                    "origin under mptcpize",
                    &ns(lab, "net"),
                    &argv,
                    &dir.join("mptcp-origin.log"),
                )?,
                lab,
                "net",
                addr::ORIGIN,
                MPTCP_ORIGIN_PORT,
            )?;
        }
        if has(|k| matches!(k, Kind::Shadowsocks)) {
            lab::net::mptcp_subflows(&ns(lab, "hag"), 2)?;
            let password = random_hex(16)?;
            let common = |server_args: Vec<String>| {
                let mut v = server_args;
                v.extend([
                    "-k".to_string(),
                    password.clone(),
                    "-m".into(),
                    SS_METHOD.into(),
                    "--mptcp".into(),
                    "--no-delay".into(),
                    "-t".into(),
                    "600".into(),
                ]);
                v
            };
            let server = common(vec![
                "ss-server".into(),
                "-s".into(),
                addr::HAG_SERVICE.to_string(),
                "-p".into(),
                SS_SERVER_PORT.to_string(),
            ]);
            s.add(
                Proc::spawn(
                    "ss-server",
                    &ns(lab, "hag"),
                    &server,
                    &dir.join("ss-server.log"),
                )?,
                lab,
                "hag",
                addr::HAG_SERVICE,
                SS_SERVER_PORT,
            )?;
            let local = common(vec![
                "ss-local".into(),
                "-s".into(),
                addr::HAG_SERVICE.to_string(),
                "-p".into(),
                SS_SERVER_PORT.to_string(),
                "-b".into(),
                "127.0.0.1".into(),
                "-l".into(),
                SOCKS_PORT.to_string(),
            ]);
            s.add(
                Proc::spawn(
                    "ss-local",
                    &ns(lab, "cpe"),
                    &local,
                    &dir.join("ss-local.log"),
                )?,
                lab,
                "cpe",
                Ipv4Addr::LOCALHOST,
                SOCKS_PORT,
            )?;
        }
        Ok(s)
    }

    fn add(
        &mut self,
        mut p: Proc,
        lab: &str,
        node: &str,
        ip: Ipv4Addr,
        port: u16,
    ) -> Result<(), BenchError> {
        std::thread::sleep(Duration::from_millis(50));
        p.check_running()?;
        self.procs.push(p);
        wait_port(&ns(lab, node), ip, port, Duration::from_secs(10))?;
        Ok(())
    }
}

fn random_hex(n: usize) -> Result<String, BenchError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| BenchError::Setup(format!("random bytes: {e}")))?;
    Ok(hex::encode(b))
}
