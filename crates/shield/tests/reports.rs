//! The warning page (curl, four languages) and the citizen reports:
//! submitted over HTTP, merged, kept across a restart, confirmed by an
//! analyst, applied to the running resolver.

mod common;
use common::*;

use std::process::Command;
use std::time::Duration;

use shield::reports::{Kind, Status, Store};

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "5", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn warning_page_and_reports_lifecycle_across_restart() {
    let net = net(5);
    let dir = TempDir::new("reports");
    let (_nsd, nsd_addr) = start_test_nsd(&net, &dir);
    write(&dir.path("feed.txt"), "login.phish.shield.test\n");
    let db = dir.path("reports.sqlite");
    let extra = format!(
        "[reports]\ndatabase = \"{}\"\napply_interval_secs = 1\n\n\
         [[lists]]\nname = \"feed\"\nkind = \"domains\"\npath = \"{}\"\n",
        db.display(),
        dir.path("feed.txt").display()
    );
    let cfg = config(&net, &[nsd_addr], &extra);
    let src = format!("{net}.10");

    {
        let s = Shield::start(&cfg);
        // The subscriber's resolver sends the browser to the warning page...
        let d = dig(None, s.dns, &["-b", &src, "login.phish.shield.test"]);
        assert_eq!(d.data(), vec![s.warning.ip().to_string()]);
        // ...which names the domain, in the browser's language.
        let resolve = format!(
            "login.phish.shield.test:{}:{}",
            s.warning.port(),
            s.warning.ip()
        );
        let url = format!(
            "http://login.phish.shield.test:{}/account/verify",
            s.warning.port()
        );
        let (code, page) = curl(&[
            "--resolve",
            &resolve,
            "-H",
            "Accept-Language: fr-BE,fr;q=0.9",
            &url,
        ]);
        assert_eq!(code, 403);
        assert!(page.contains("login.phish.shield.test"), "{page}");
        assert!(
            page.contains("a été bloqué") && page.contains("lang=\"fr\""),
            "{page}"
        );
        assert!(page.contains("Signaler un faux positif") && page.contains("Example ISP"));
        assert!(page.contains("/.shield/report?domain=login.phish.shield.test"));
        let (_, page) = curl(&["--resolve", &resolve, "-H", "Accept-Language: nl", &url]);
        assert!(page.contains("is geblokkeerd"), "{page}");
        let (_, page) = curl(&[
            "--resolve",
            &resolve,
            "-H",
            "Accept-Language: de-AT, en;q=0.5",
            &url,
        ]);
        assert!(page.contains("wurde blockiert"), "{page}");
        let (_, page) = curl(&["--resolve", &resolve, &url]);
        assert!(
            page.contains("was blocked") && page.contains("false positive"),
            "{page}"
        );
        // Markup in the Host header is not echoed.
        let (_, page) = curl(&["-H", "Host: <script>x", &format!("http://{}/", s.warning)]);
        assert!(!page.contains("<script>"), "{page}");
        // The false-positive form.
        let (code, form) = curl(&[
            "--resolve",
            &resolve,
            &format!(
                "http://login.phish.shield.test:{}/.shield/report?domain=login.phish.shield.test",
                s.warning.port()
            ),
        ]);
        assert_eq!(code, 200);
        assert!(form.contains("false_positive") && form.contains("action=\"/api/reports\""));

        // Citizen reports: JSON, merged on repeat, and a form post.
        let api = format!("http://{}/api/reports", s.warning);
        let json =
            |body: &str| curl(&["-H", "Content-Type: application/json", "--data", body, &api]);
        let (code, body) =
            json(r#"{"url":"https://new-phish.shield.test/bank/login","comment":"fake bank"}"#);
        assert_eq!(code, 201, "{body}");
        assert!(body.contains("\"merged\":false"), "{body}");
        let (code, body) = json(r#"{"url":"http://NEW-PHISH.shield.test/other"}"#);
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"merged\":true"), "{body}");
        let (code, _) = json(r#"{"url":"http://192.0.2.1/"}"#);
        assert_eq!(code, 400);
        let (code, _) = json(r#"{"nope":1}"#);
        assert!(code == 400 || code == 422, "{code}");
        let (code, body) = curl(&[
            "--data",
            "kind=false_positive&url=login.phish.shield.test&comment=my+bank",
            &api,
        ]);
        assert_eq!(code, 200);
        assert!(body.contains("Thank you"), "{body}");
        assert_eq!(
            s.metric("tandem_shield_reports_total{kind=\"phishing\"}"),
            2.0
        );
    }

    // The shield is stopped: the reports are on disk. An analyst confirms
    // both (what `tandem shield reports confirm ID` does).
    {
        let mut store = Store::open(&db).unwrap();
        let all = store.list(Some(Status::Pending)).unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        let phish = all.iter().find(|r| r.kind == Kind::Phishing).unwrap();
        assert_eq!(phish.domain, "new-phish.shield.test");
        assert_eq!(phish.count, 2);
        assert_eq!(phish.comments, vec!["fake bank"]);
        store.decide(phish.id, Status::Confirmed).unwrap();
    }

    // Restarted: the confirmed report is in force at once.
    let s = Shield::start(&cfg);
    let d = dig(None, s.dns, &["-b", &src, "new-phish.shield.test"]);
    assert_eq!(d.data(), vec![s.warning.ip().to_string()], "{}", d.raw);
    assert!(d.ede.unwrap_or_default().contains("citizen-reports"));
    assert_eq!(
        dig(None, s.dns, &["-b", &src, "www.new-phish.shield.test"]).data(),
        vec![s.warning.ip().to_string()]
    );

    // Confirming the false positive while it runs: allowed within the
    // apply interval (1 s here; 60 s at most by configuration).
    {
        let mut store = Store::open(&db).unwrap();
        let fp = store
            .list(Some(Status::Pending))
            .unwrap()
            .into_iter()
            .find(|r| r.kind == Kind::FalsePositive)
            .unwrap();
        assert_eq!(fp.domain, "login.phish.shield.test");
        store.decide(fp.id, Status::Confirmed).unwrap();
    }
    wait_until("false positive applied", Duration::from_secs(10), || {
        dig(None, s.dns, &["-b", &src, "login.phish.shield.test"]).data() == vec!["192.0.2.66"]
    });
    // A rejected report changes nothing.
    {
        let mut store = Store::open(&db).unwrap();
        let id = store
            .submit("http://www.shield.test/", None, Kind::Phishing)
            .unwrap()
            .id;
        store.decide(id, Status::Rejected).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        dig(None, s.dns, &["-b", &src, "www.shield.test"]).data(),
        vec!["192.0.2.10"]
    );
}
