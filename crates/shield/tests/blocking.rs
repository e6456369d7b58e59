//! Blocking with dig as the client and NSD upstream: every action, the EDE
//! with the list's name, subtrees, the allowlist, CNAME chains, hosts
//! files, RPZ zone files, a file list reloaded while running, and the
//! counters.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn every_action_wildcard_allowlist_and_cname_chains() {
    let net = net(3);
    let dir = TempDir::new("blocking");
    let (_nsd, nsd_addr) = start_test_nsd(&net, &dir);
    write(
        &dir.path("feed.txt"),
        "# confirmed phishing\nlogin.phish.shield.test\n*.evil.shield.test\n",
    );
    write(&dir.path("allow.txt"), "good.evil.shield.test\n");
    write(
        &dir.path("hosts"),
        "127.0.0.1 localhost\n0.0.0.0 tracker.hosts.test\n",
    );
    write(
        &dir.path("local.rpz"),
        "$ORIGIN local.rpz.\n$TTL 60\n@ SOA ns. admin. 1 3600 600 86400 60\n@ NS ns.\n\
         nx.rpz.test CNAME .\nnodata.rpz.test CNAME *.\ndrop.rpz.test CNAME rpz-drop.\n\
         redir.rpz.test A 192.0.2.99\n*.sub.rpz.test CNAME .\nok.sub.rpz.test CNAME rpz-passthru.\n",
    );
    let extra = format!(
        r#"[[lists]]
name = "feed"
kind = "domains"
path = "{feed}"
refresh_secs = 1

[[lists]]
name = "allow"
kind = "domains"
path = "{allow}"
allow = true
include_subdomains = true

[[lists]]
name = "hosts"
kind = "hosts"
path = "{hosts}"
action = "nxdomain"
ede = "filtered"

[[lists]]
name = "local-rpz"
kind = "rpz"
path = "{rpz}"
"#,
        feed = dir.path("feed.txt").display(),
        allow = dir.path("allow.txt").display(),
        hosts = dir.path("hosts").display(),
        rpz = dir.path("local.rpz").display(),
    );
    let s = Shield::start(&config(&net, &[nsd_addr], &extra));
    let src = format!("{net}.10");
    let q = |args: &[&str]| {
        let mut a = vec!["-b", &src];
        a.extend_from_slice(args);
        dig(None, s.dns, &a)
    };
    let warning = format!("{net}.80");

    // Redirect: A and AAAA to the warning page, with EDE 15 naming the list.
    let d = q(&["login.phish.shield.test", "A"]);
    assert_eq!(d.status.as_deref(), Some("NOERROR"), "{}", d.raw);
    assert_eq!(d.data(), vec![warning.clone()]);
    let ede = d.ede.clone().unwrap_or_default();
    assert!(
        ede.starts_with("15 (Blocked)") && ede.contains("feed"),
        "{}",
        d.raw
    );
    let d = q(&["login.phish.shield.test", "AAAA"]);
    assert_eq!(d.data(), vec!["fd00::80"]);
    let d = q(&["login.phish.shield.test", "MX"]);
    assert_eq!(d.status.as_deref(), Some("NOERROR"));
    assert!(d.answers.is_empty() && d.ede.is_some(), "{}", d.raw);
    // Case does not matter.
    assert_eq!(
        q(&["LOGIN.Phish.shield.TEST"]).data(),
        vec![warning.clone()]
    );

    // Subtree: *.evil.shield.test blocks its subdomains, not itself.
    assert_eq!(q(&["a.b.evil.shield.test"]).data(), vec![warning.clone()]);
    let d = q(&["evil.shield.test"]);
    assert!(d.ede.is_none(), "{}", d.raw);

    // The allowlist wins, for the name and (include_subdomains) below it.
    let d = q(&["good.evil.shield.test"]);
    assert_eq!(d.data(), vec!["192.0.2.20"], "{}", d.raw);
    assert!(d.ede.is_none());
    assert_eq!(q(&["x.good.evil.shield.test"]).data(), vec!["192.0.2.21"]);

    // A CNAME chain that leads into a blocked name is blocked.
    let d = q(&["phish-alias.shield.test"]);
    assert_eq!(d.data(), vec![warning.clone()], "{}", d.raw);
    assert!(d.ede.unwrap_or_default().contains("feed"));
    // A second time, from the cache: still blocked.
    assert_eq!(
        q(&["phish-alias.shield.test"]).data(),
        vec![warning.clone()]
    );
    // A chain that does not is not.
    assert_eq!(
        q(&["deep.shield.test"]).data().last().unwrap(),
        "192.0.2.10"
    );

    // Hosts file with action nxdomain and EDE 17 (Filtered).
    let d = q(&["tracker.hosts.test"]);
    assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "{}", d.raw);
    let ede = d.ede.unwrap_or_default();
    assert!(
        ede.starts_with("17 (Filtered)") && ede.contains("hosts"),
        "{ede}"
    );

    // RPZ per-entry actions.
    let d = q(&["nx.rpz.test"]);
    assert_eq!(d.status.as_deref(), Some("NXDOMAIN"), "{}", d.raw);
    assert!(d.ede.unwrap_or_default().contains("local-rpz"));
    let d = q(&["nodata.rpz.test"]);
    assert_eq!(d.status.as_deref(), Some("NOERROR"), "{}", d.raw);
    assert!(d.answers.is_empty() && d.ede.is_some());
    let d = q(&["drop.rpz.test"]);
    assert!(d.timed_out && d.status.is_none(), "{}", d.raw);
    assert_eq!(q(&["redir.rpz.test"]).data(), vec![warning.clone()]);
    assert_eq!(q(&["x.sub.rpz.test"]).status.as_deref(), Some("NXDOMAIN"));
    // rpz-passthru: forwarded (the upstream has no such zone: REFUSED or
    // SERVFAIL, but no EDE of ours).
    let d = q(&["ok.sub.rpz.test"]);
    assert!(!d.timed_out, "passthru must be answered: {}", d.raw);
    assert!(
        !d.ede.unwrap_or_default().contains("local-rpz"),
        "{}",
        d.raw
    );

    // Counters: blocked per list and action, distinct protected subscribers.
    assert!(
        s.metric("tandem_shield_blocked_queries_total{list=\"feed\",action=\"redirect\"}") >= 7.0
    );
    assert_eq!(
        s.metric("tandem_shield_blocked_queries_total{list=\"local-rpz\",action=\"drop\"}"),
        1.0
    );
    let other = format!("{net}.11");
    dig(None, s.dns, &["-b", &other, "login.phish.shield.test"]);
    assert_eq!(s.metric("tandem_shield_protected_subscribers_today"), 2.0);

    // The feed file changes: the new list is in force once the file has
    // stayed unchanged for one refresh interval (two at most).
    write(
        &dir.path("feed.txt"),
        "login.phish.shield.test\n*.evil.shield.test\nwww.shield.test\n",
    );
    wait_until("reloaded feed", Duration::from_secs(10), || {
        q(&["www.shield.test"]).data() == vec![warning.clone()]
    });
    assert_eq!(
        s.metric("tandem_shield_list_entries{list=\"feed\"}"),
        3.0,
        "{}",
        s.metrics.render()
    );
}
