//! Integration test for `mptcp_sock::pm` against the real kernel.
//!
//! Needs root (creates a network namespace with `ip netns add`) and a kernel
//! with MPTCP: `#[ignore]`d, so `cargo test` lists it as ignored; `make test`
//! runs it (`--include-ignored`). Every check runs inside
//! a fresh namespace `tandem-pmtest-<pid>-<n>` entered by a dedicated thread,
//! and what the library reports is cross-checked against `ip mptcp …` run in
//! the same namespace. The namespace is deleted by a drop guard, also when the
//! test fails. No packets are sent.

use std::net::IpAddr;

use mptcp_sock::pm::{Endpoint, EndpointFlags, Limits, PathManager, PmError};

mod common;
use common::{in_netns, require_root, run, NetnsGuard};

fn mptcp_available() -> bool {
    std::fs::read_to_string("/proc/sys/net/mptcp/enabled").is_ok_and(|s| s.trim() == "1")
}

fn netlink_errno(r: Result<(), PmError>) -> (&'static str, i32, String) {
    match r {
        Err(PmError::Netlink { op, errno, msg }) => (op, errno, msg),
        other => panic!("expected a kernel error, got {other:?}"),
    }
}

#[test]
#[ignore = "needs root and network namespaces: make test, or cargo test -- --include-ignored as root"]
fn path_manager_in_fresh_netns() {
    require_root();
    assert!(
        mptcp_available(),
        "this kernel has no Multipath TCP (net.mptcp.enabled)"
    );
    let ns = NetnsGuard::create("tandem-pmtest");
    // A veth pair (the dummy driver is not always built); both ends stay in
    // the namespace.
    ns.exec(&[
        "ip", "link", "add", "pmt0", "type", "veth", "peer", "name", "pmt1",
    ]);
    ns.exec(&["ip", "addr", "add", "10.123.0.1/24", "dev", "pmt0"]);
    ns.exec(&["ip", "addr", "add", "10.123.0.2/24", "dev", "pmt0"]);
    ns.exec(&[
        "ip",
        "addr",
        "add",
        "2001:db8::1/64",
        "dev",
        "pmt0",
        "nodad",
    ]);
    ns.exec(&["ip", "link", "set", "pmt0", "up"]);
    ns.exec(&["ip", "link", "set", "pmt1", "up"]);
    let link = ns.exec(&["ip", "-o", "link", "show", "pmt0"]);
    let ifindex: u32 = link
        .split(':')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("ifindex from {link:?}"));

    // The host namespace (where this process's main thread lives) must not
    // be touched: compare its endpoint list before and after.
    let host_ns = format!("--net=/proc/{}/ns/net", std::process::id());
    let host_before = run(&["nsenter", &host_ns, "ip", "mptcp", "endpoint", "show"]);

    let ns_name = ns.name.clone();
    let host_ns2 = host_ns.clone();
    in_netns(&ns, move || async move {
        let ns = Shell(ns_name);
        let a1: IpAddr = "10.123.0.1".parse().unwrap();
        let a2: IpAddr = "10.123.0.2".parse().unwrap();
        let a6: IpAddr = "2001:db8::1".parse().unwrap();

        let mut pm = PathManager::connect().await.expect("connect");
        let initial = pm.limits().await.expect("limits");
        println!("fresh netns limits: {initial:?}");
        assert!(
            pm.endpoints().await.unwrap().is_empty(),
            "fresh netns has endpoints"
        );

        // --- limits
        pm.set_limits(Limits {
            subflows: 2,
            add_addr_accepted: 2,
        })
        .await
        .unwrap();
        assert_eq!(
            pm.limits().await.unwrap(),
            Limits {
                subflows: 2,
                add_addr_accepted: 2
            }
        );
        let shown = ns.ip(&["mptcp", "limits", "show"]);
        assert!(
            shown.contains("add_addr_accepted 2") && shown.contains("subflows 2"),
            "{shown}"
        );
        let too_big = pm
            .set_limits(Limits {
                subflows: 1000,
                add_addr_accepted: 1,
            })
            .await;
        let (op, errno, msg) = netlink_errno(too_big);
        println!("set_limits(1000): {op} errno {errno} msg {msg:?}");
        assert_eq!((op, errno), ("set_limits", libc::EINVAL));
        assert_eq!(
            pm.limits().await.unwrap().subflows,
            2,
            "failed set_limits changed state"
        );

        // --- add a subflow endpoint bound to the interface
        let ep = Endpoint {
            ifindex: Some(ifindex),
            ..Endpoint::new(a1, EndpointFlags::SUBFLOW)
        };
        pm.add_endpoint(&ep).await.unwrap();
        let eps = pm.endpoints().await.unwrap();
        assert_eq!(eps.len(), 1, "{eps:?}");
        let id = eps[0].id;
        assert_ne!(id, 0);
        assert_eq!(eps[0], Endpoint { id, ..ep.clone() });
        let shown = ns.ip(&["mptcp", "endpoint", "show"]);
        assert!(
            shown.contains(&format!("10.123.0.1 id {id} subflow dev pmt0")),
            "{shown}"
        );

        // Duplicate address -> EEXIST, with the kernel's message.
        let (op, errno, msg) = netlink_errno(pm.add_endpoint(&ep).await);
        println!("duplicate add: {op} errno {errno} msg {msg:?}");
        assert_eq!((op, errno), ("add_endpoint", libc::EEXIST));
        let shown_err = pm.add_endpoint(&ep).await.unwrap_err().to_string();
        println!("duplicate add display: {shown_err}");
        // Port without signal -> EINVAL.
        let bad = Endpoint {
            port: Some(1234),
            ..Endpoint::new(a2, EndpointFlags::SUBFLOW)
        };
        let (op, errno, msg) = netlink_errno(pm.add_endpoint(&bad).await);
        println!("port without signal: {op} errno {errno} msg {msg:?}");
        assert_eq!(errno, libc::EINVAL);

        // --- backup on / off
        pm.set_endpoint_flags(id, EndpointFlags::SUBFLOW.with_backup(true))
            .await
            .unwrap();
        let eps = pm.endpoints().await.unwrap();
        assert!(eps[0].flags.backup && eps[0].flags.subflow, "{eps:?}");
        let shown = ns.ip(&["mptcp", "endpoint", "show"]);
        assert!(shown.contains("subflow backup"), "{shown}");
        pm.set_endpoint_flags(id, EndpointFlags::SUBFLOW)
            .await
            .unwrap();
        assert!(!pm.endpoints().await.unwrap()[0].flags.backup);
        let (op, errno, msg) =
            netlink_errno(pm.set_endpoint_flags(200, EndpointFlags::SUBFLOW).await);
        println!("set_flags unknown id: {op} errno {errno} msg {msg:?}");
        assert_eq!((op, errno), ("set_endpoint_flags", libc::EINVAL));

        // --- ensure_endpoint: no-op when equal, replace when different
        let same = pm.ensure_endpoint(&ep).await.unwrap();
        assert_eq!(
            same, id,
            "ensure on an identical endpoint must not replace it"
        );
        let backup_ep = Endpoint {
            flags: EndpointFlags::SUBFLOW.with_backup(true),
            ..ep.clone()
        };
        let id2 = pm.ensure_endpoint(&backup_ep).await.unwrap();
        let id3 = pm.ensure_endpoint(&backup_ep).await.unwrap();
        assert_eq!(id2, id3, "ensure_endpoint not idempotent");
        let eps = pm.endpoints().await.unwrap();
        assert_eq!(
            eps,
            vec![Endpoint {
                id: id2,
                ..backup_ep.clone()
            }]
        );
        // Same interface, new address (e.g. the DSL got a new IP): replaced.
        let moved = Endpoint {
            addr: a2,
            ..ep.clone()
        };
        let id4 = pm.ensure_endpoint(&moved).await.unwrap();
        let eps = pm.endpoints().await.unwrap();
        assert_eq!(
            eps,
            vec![Endpoint {
                id: id4,
                ..moved.clone()
            }]
        );
        // Unrelated endpoints are left alone.
        let v6 = Endpoint::new(a6, EndpointFlags::SUBFLOW);
        let id6 = pm.ensure_endpoint(&v6).await.unwrap();
        assert_eq!(pm.endpoints().await.unwrap().len(), 2);
        assert_eq!(pm.ensure_endpoint(&moved).await.unwrap(), id4);
        assert_eq!(pm.ensure_endpoint(&v6).await.unwrap(), id6);
        let shown = ns.ip(&["mptcp", "endpoint", "show"]);
        assert!(
            shown.contains(&format!("2001:db8::1 id {id6} subflow")),
            "{shown}"
        );
        assert!(
            shown.contains(&format!("10.123.0.2 id {id4} subflow dev pmt0")),
            "{shown}"
        );

        // --- del_endpoint
        pm.del_endpoint(id4).await.unwrap();
        let eps = pm.endpoints().await.unwrap();
        assert_eq!(eps.iter().map(|e| e.id).collect::<Vec<_>>(), vec![id6]);
        assert!(!ns.ip(&["mptcp", "endpoint", "show"]).contains("10.123.0.2"));
        let (op, errno, msg) = netlink_errno(pm.del_endpoint(id4).await);
        println!("del unknown id: {op} errno {errno} msg {msg:?}");
        assert_eq!((op, errno), ("del_endpoint", libc::EINVAL));

        // --- signal endpoint with a port: port attribute is host byte order
        let sig = Endpoint {
            port: Some(10080),
            ..Endpoint::new(a1, EndpointFlags::SIGNAL)
        };
        let sid = pm.ensure_endpoint(&sig).await.unwrap();
        let shown = ns.ip(&["mptcp", "endpoint", "show"]);
        assert!(
            shown.contains(&format!("10.123.0.1 port 10080 id {sid} signal")),
            "{shown}"
        );
        assert!(pm.endpoints().await.unwrap().contains(&Endpoint {
            id: sid,
            ..sig.clone()
        }));

        // --- explicit id
        let fixed = Endpoint {
            id: 42,
            ..Endpoint::new(a2, EndpointFlags::SUBFLOW)
        };
        assert_eq!(pm.ensure_endpoint(&fixed).await.unwrap(), 42);
        assert!(ns
            .ip(&["mptcp", "endpoint", "show"])
            .contains("10.123.0.2 id 42 subflow"));

        // The host namespace never sees these endpoints.
        let host_now = run(&["nsenter", &host_ns2, "ip", "mptcp", "endpoint", "show"]);
        assert!(
            !host_now.contains("10.123.0."),
            "endpoint leaked to host: {host_now}"
        );

        // --- flush
        pm.flush_endpoints().await.unwrap();
        assert!(pm.endpoints().await.unwrap().is_empty());
        assert_eq!(ns.ip(&["mptcp", "endpoint", "show"]).trim(), "");
        // Flush keeps the limits.
        assert_eq!(
            pm.limits().await.unwrap(),
            Limits {
                subflows: 2,
                add_addr_accepted: 2
            }
        );
    });

    let host_after = run(&["nsenter", &host_ns, "ip", "mptcp", "endpoint", "show"]);
    assert_eq!(host_before, host_after, "host namespace endpoints changed");
}

/// `ip netns exec NAME ip …` from inside the checks.
struct Shell(String);

impl Shell {
    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.0, "ip"];
        full.extend_from_slice(args);
        run(&full)
    }
}
