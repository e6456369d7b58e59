//! The lab's DNS: a real authoritative server (NSD, from Debian) on the
//! "internet" serving `example.test`, and `tandem shield` in the operator's
//! `dns` node as the home's resolver, with a small phishing list. The home's
//! `/etc/resolv.conf` (through `ip netns exec`'s `/etc/netns/<ns>/`) names the
//! shield, as the CPE's DHCP would.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::LabError;

/// The shield's resolver address.
pub const SHIELD: Ipv4Addr = Ipv4Addr::new(10, 67, 0, 53);
/// The shield's warning page address.
pub const WARNING: Ipv4Addr = Ipv4Addr::new(10, 67, 0, 80);
/// The HAG on the DNS segment.
pub const HAG_DNS: Ipv4Addr = Ipv4Addr::new(10, 67, 0, 1);
/// The authoritative server of `example.test` on the "internet".
pub const AUTHORITY: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 53);
/// The zone NSD serves.
pub const ZONE: &str = "example.test";
/// Names on the lab's phishing list (subtrees included).
pub const PHISHING: &[&str] = &["evil.example.test", "phish.example.test"];

/// The zone file: a legitimate name, listed names, and a CNAME chain that
/// leads into a listed one.
pub fn zone_file() -> String {
    format!(
        "$ORIGIN {ZONE}.\n$TTL 300\n\
         @ IN SOA ns1 hostmaster 1 3600 600 86400 60\n\
         @ IN NS ns1\n\
         ns1 IN A {AUTHORITY}\n\
         www IN A 203.0.113.10\n\
         evil IN A 203.0.113.10\n\
         login.evil IN A 203.0.113.10\n\
         phish IN A 203.0.113.10\n\
         innocent-looking IN CNAME hop\n\
         hop IN CNAME evil\n"
    )
}

fn nsd_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "server:\n  ip-address: {AUTHORITY}\n  port: 53\n  username: \"\"\n  chroot: \"\"\n  \
         zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  logfile: \"{d}/nsd.log\"\n  \
         xfrdfile: \"{d}/nsd-xfrd.state\"\n  zonelistfile: \"{d}/nsd-zone.list\"\n  \
         database: \"\"\n  hide-version: yes\n  verbosity: 1\n\
         remote-control:\n  control-enable: no\n\
         zone:\n  name: {ZONE}\n  zonefile: \"{d}/{ZONE}.zone\"\n"
    )
}

fn shield_conf(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "# Written by `tandem lab up`.\n\
         listen = [\"{SHIELD}:53\"]\n\
         subscriber_prefixes = [\"192.168.100.0/24\", \"10.64.0.0/16\"]\n\
         admin_listen = \"127.0.0.1:9153\"\n\
         [upstream]\nservers = [\"{AUTHORITY}:53\"]\n\
         [warning]\nipv4 = \"{WARNING}\"\nhttp_listen = [\"{WARNING}:80\"]\noperator_name = \"Tandem lab\"\n\
         [reports]\ndatabase = \"{d}/shield-reports.sqlite\"\napply_interval_secs = 5\n\
         [[lists]]\nname = \"lab-phishing\"\nkind = \"domains\"\npath = \"{d}/phishing.txt\"\n\
         action = \"redirect\"\ninclude_subdomains = true\n"
    )
}

/// Writes NSD's and the shield's files into the lab's state directory and
/// the home's resolver configuration. Returns (nsd.conf, shield.toml).
pub fn write_files(dir: &Path, home_ns: &str) -> Result<(String, String), LabError> {
    let w = |name: &str, text: String| -> Result<String, LabError> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(LabError::Io)?;
        Ok(p.display().to_string())
    };
    w(&format!("{ZONE}.zone"), zone_file())?;
    w("phishing.txt", PHISHING.join("\n") + "\n")?;
    let nsd = w("nsd.conf", nsd_conf(dir))?;
    let shield = w("shield.toml", shield_conf(dir))?;
    let etc = Path::new("/etc/netns").join(home_ns);
    std::fs::create_dir_all(&etc).map_err(LabError::Io)?;
    std::fs::write(etc.join("resolv.conf"), format!("nameserver {SHIELD}\n"))
        .map_err(LabError::Io)?;
    Ok((nsd, shield))
}

/// Removes the home's resolver configuration.
pub fn remove_files(home_ns: &str) {
    let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(home_ns));
}
