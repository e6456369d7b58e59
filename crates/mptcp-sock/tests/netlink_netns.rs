//! Integration tests for `mptcp_sock::route` and `mptcp_sock::conntrack`
//! against the real kernel.
//!
//! Need root (they create network namespaces with `ip netns add`) and
//! `nft`: `#[ignore]`d, so `cargo test` lists them as ignored; `make test`
//! runs them (`--include-ignored`). Each runs in a fresh
//! namespace `tandem-nltest-<pid>-<n>` entered by a dedicated thread; what
//! the library reports is cross-checked with `ip rule` / `ip route` in the
//! same namespace. The namespace is deleted by a drop guard, also when the
//! test fails.

use std::net::UdpSocket;
use std::time::Duration;

use mptcp_sock::conntrack::{Conntrack, Flow, MarkFilter};
use mptcp_sock::route::{Family, Route, RouteNetlink, Rule, RuleTarget};

mod common;
use common::{block_on, in_netns, on_netns_thread, require_root, run, NetnsGuard};

fn nft_available() -> bool {
    std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The CPE's layout: link in bits 24..27, UDP in bit 28.
const MASK: u32 = 0x1f00_0000;
const FIXED_UDP: u32 = 0x1100_0000;
const MOBILE_UDP: u32 = 0x1200_0000;

/// One UDP exchange on loopback from a fresh socket to `server`; returns
/// the client's port.
fn exchange(server: &UdpSocket) -> u16 {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .send_to(b"ping", server.local_addr().unwrap())
        .unwrap();
    let mut buf = [0; 16];
    let (n, from) = server.recv_from(&mut buf).unwrap();
    server.send_to(&buf[..n], from).unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping");
    client.local_addr().unwrap().port()
}

fn ours(flows: &[Flow], src_port: u16) -> Vec<&Flow> {
    flows
        .iter()
        .filter(|f| f.protocol == 17 && f.src_port == Some(src_port))
        .collect()
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn conntrack_entries_are_listed_and_deleted_by_mark() {
    require_root();
    assert!(
        nft_available(),
        "nft is not installed (make deps installs nftables)"
    );
    let ns = NetnsGuard::create("tandem-nltest");
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    // Conntrack state in the namespace: new UDP flows get a mark by
    // destination port, as the CPE's table marks them by link.
    let rules = format!(
        "table inet nltest {{\n\
         \tchain out {{\n\
         \t\ttype filter hook output priority mangle; policy accept;\n\
         \t\tudp dport 40001 ct state new ct mark set {FIXED_UDP:#x}\n\
         \t\tudp dport 40002 ct state new ct mark set {MOBILE_UDP:#x}\n\
         \t}}\n\
         }}\n"
    );
    let path = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&path, rules).unwrap();
    ns.exec(&["nft", "-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);

    in_netns(&ns, || async {
        let fixed_server = UdpSocket::bind("127.0.0.1:40001").unwrap();
        let mobile_server = UdpSocket::bind("127.0.0.1:40002").unwrap();
        fixed_server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        mobile_server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let fixed_port = exchange(&fixed_server);
        let mobile_port = exchange(&mobile_server);

        let ct = Conntrack::connect().unwrap();
        let fixed = MarkFilter {
            mark: FIXED_UDP,
            mask: MASK,
        };
        let mobile = MarkFilter {
            mark: MOBILE_UDP,
            mask: MASK,
        };
        // Listed by mark: each filter sees its own flow only.
        let listed = ct.flows(fixed).await.unwrap();
        let mine = ours(&listed, fixed_port);
        assert_eq!(mine.len(), 1, "{listed:?}");
        assert_eq!(mine[0].dst_port, Some(40001));
        assert_eq!(mine[0].mark, FIXED_UDP);
        assert!(ours(&listed, mobile_port).is_empty(), "{listed:?}");
        assert_eq!(ours(&ct.flows(mobile).await.unwrap(), mobile_port).len(), 1);

        // Deleted by mark: the fixed line's flow goes, the other stays.
        ct.delete(fixed).await.unwrap();
        assert!(
            ours(&ct.flows(fixed).await.unwrap(), fixed_port).is_empty(),
            "the entry survived its deletion"
        );
        assert_eq!(
            ours(&ct.flows(mobile).await.unwrap(), mobile_port).len(),
            1,
            "an entry with another mark was deleted"
        );
        // Deleting what is not there is fine.
        ct.delete(fixed).await.unwrap();

        // The next packet of the flow creates a new entry.
        let again = exchange(&fixed_server);
        assert_eq!(ours(&ct.flows(fixed).await.unwrap(), again).len(), 1);
    });
}

fn has_line(out: &str, needle: &str) -> bool {
    out.lines().any(|l| l.contains(needle))
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn rules_and_routes_are_added_listed_and_deleted() {
    require_root();
    let ns = NetnsGuard::create("tandem-nltest");
    ns.exec(&["ip", "link", "set", "lo", "up"]);
    ns.exec(&[
        "ip", "link", "add", "nlt0", "type", "veth", "peer", "name", "nlt1",
    ]);
    ns.exec(&["ip", "addr", "add", "10.124.0.1/24", "dev", "nlt0"]);
    ns.exec(&["ip", "link", "set", "nlt0", "up"]);
    ns.exec(&["ip", "link", "set", "nlt1", "up"]);
    let name = ns.name.clone();
    let ip = move |args: &[&str]| {
        let mut full = vec!["ip", "netns", "exec", &name, "ip"];
        full.extend_from_slice(args);
        run(&full)
    };

    on_netns_thread(&ns, move || {
        let oif = ifindex("nlt0");
        let lo = ifindex("lo");
        let fwmark = Rule::fwmark(Family::V4, 91, 0x0100_0000, Some(0x0f00_0000), 101);
        let iif = Rule::iif(Family::V4, 93, "nlt1", 300);
        let local6 = Route::local_default(Family::V6, 100, lo);
        let via = Route::default_via(Family::V4, 101, oif, Some("10.124.0.2".parse().unwrap()));

        // First runtime: the process's connection is opened on it.
        let ip1 = ip.clone();
        let (fwmark1, iif1, via1, local61) =
            (fwmark.clone(), iif.clone(), via.clone(), local6.clone());
        block_on(async move {
            let nl = RouteNetlink::shared().unwrap();
            nl.add_rule(&fwmark1).await.unwrap();
            nl.add_rule(&iif1).await.unwrap();
            nl.replace_route(&via1).await.unwrap();
            nl.replace_route(&via1).await.unwrap(); // replace is idempotent
            nl.add_route(&local61).await.unwrap();
            let e = nl.add_rule(&fwmark1).await.unwrap_err();
            assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
            assert!(e.to_string().contains("add rule ipv4 priority 91"), "{e}");

            let rules = nl.rules(Family::V4).await.unwrap();
            assert!(rules.contains(&fwmark1), "{rules:?}");
            assert!(rules.contains(&iif1), "{rules:?}");
            // The kernel's own rules are listed too.
            assert!(rules
                .iter()
                .any(|r| r.priority == 32766 && r.target == RuleTarget::Lookup(254)));
            let shown = ip1(&["rule", "show"]);
            assert!(
                has_line(
                    &shown,
                    "91:\tfrom all fwmark 0x1000000/0xf000000 lookup 101"
                ),
                "{shown}"
            );
            assert!(
                has_line(&shown, "93:\tfrom all iif nlt1 lookup 300"),
                "{shown}"
            );
            let routes = ip1(&["route", "show", "table", "101"]);
            assert!(
                has_line(&routes, "default via 10.124.0.2 dev nlt0"),
                "{routes}"
            );
            let local = ip1(&["-6", "route", "show", "table", "100"]);
            assert!(has_line(&local, "local default dev lo"), "{local}");
        });

        // Second runtime: the first one (and the connection task on it) is
        // gone; the next call opens a new connection.
        let ip2 = ip.clone();
        block_on(async move {
            let nl = RouteNetlink::shared().unwrap();
            nl.delete_rule(&fwmark).await.unwrap();
            nl.delete_rule(&iif).await.unwrap();
            nl.delete_route(&via).await.unwrap();
            nl.delete_route(&local6).await.unwrap();
            let e = nl.delete_rule(&fwmark).await.unwrap_err();
            assert!(e.is_not_found(), "{e}");
            let e = nl.delete_route(&via).await.unwrap_err();
            assert!(e.is_not_found(), "{e}");
            let rules = nl.rules(Family::V4).await.unwrap();
            assert!(!rules.iter().any(|r| r.priority == 91 || r.priority == 93));
            let shown = ip2(&["rule", "show"]);
            assert!(
                !shown.contains("lookup 101") && !shown.contains("lookup 300"),
                "{shown}"
            );
            assert_eq!(ip2(&["route", "show", "table", "101"]).trim(), "");
        });
    });
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i
}
