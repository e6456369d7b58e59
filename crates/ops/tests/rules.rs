//! Each rule of the diagnosis (and of the baseline) on hand-made telemetry:
//! a small street of homes reports for an hour, then one thing goes wrong.

mod common;

use common::{Cpe, PERIOD};
use hybrid::Location;
use ops::inventory::{Inventory, Row};
use ops::{baseline, Engine, Settings};
use telemetry::{Event, HagReport, Report, SCHEMA};

const T0: u64 = 1_764_547_200_000;

/// Two cabinets of 8 homes (cards of 4), all in one cell; a HAG.
struct Street {
    engine: Engine,
    cpes: Vec<Cpe>,
    t: u64,
    silent: Vec<bool>,
    hag_up: bool,
    upstream_errors: u64,
    /// Homes the HAG carries traffic for though their reports are lost.
    hag_hears: Vec<bool>,
}

impl Street {
    fn new() -> Self {
        let rows = (0..16)
            .map(|i| Row {
                subscriber: format!("h{i}"),
                cabinet: format!("cab{}", i / 8),
                card: (i % 8 / 4) as u32,
                cell: if i < 12 { "c1".into() } else { "c2".into() },
            })
            .collect();
        let engine = Engine::new(
            Inventory::from_rows(rows).unwrap(),
            Settings {
                report_period_s: 10.0,
                hag_period_s: 10.0,
            },
        );
        let mut s = Self {
            engine,
            cpes: (0..16).map(Cpe::new).collect(),
            t: T0,
            silent: vec![false; 16],
            hag_up: true,
            upstream_errors: 0,
            hag_hears: vec![false; 16],
        };
        s.run(60 * 60);
        s
    }

    /// Everyone reports for `secs`, calling `f` before each period.
    fn run_with(&mut self, secs: u64, mut f: impl FnMut(&mut [Cpe], u64)) {
        for _ in 0..secs * 1000 / PERIOD {
            self.t += PERIOD;
            f(&mut self.cpes, self.t);
            for i in 0..self.cpes.len() {
                if self.silent[i] {
                    continue;
                }
                let r = self.cpes[i].report(self.t);
                // Every report passes the schema's own check.
                Report::parse(r.to_json().as_bytes()).unwrap();
                self.engine.ingest(&r, self.t).unwrap();
            }
            if self.hag_up {
                self.engine.ingest_hag(&HagReport {
                    schema: SCHEMA,
                    hag: "hag1".into(),
                    sent_at_ms: self.t,
                    upstream_connects: 100,
                    upstream_errors: self.upstream_errors,
                    subscribers: (0..self.cpes.len())
                        .filter(|&i| !self.silent[i] || self.hag_hears[i])
                        .map(|i| telemetry::hag::SubscriberView {
                            subscriber: format!("h{i}"),
                            subflows_dsl: 1,
                            subflows_lte: 1,
                            connections: 2,
                            retransmits: 0,
                            last_seen_ms: self.t - 500,
                        })
                        .collect(),
                });
            }
        }
    }

    fn run(&mut self, secs: u64) {
        self.run_with(secs, |_, _| {});
    }

    fn diagnose(&self, i: usize) -> ops::Diagnosis {
        self.engine.diagnose(i, self.t + 1000)
    }

    fn baseline(&self, i: usize) -> Location {
        baseline::diagnose(self.engine.home(i), self.t + 1000, 10.0).location
    }
}

#[test]
fn a_healthy_street_has_no_fault() {
    let s = Street::new();
    for i in 0..16 {
        let d = s.diagnose(i);
        assert_eq!(d.location, Location::None, "{d:?}");
    }
}

#[test]
fn a_dying_gasp_then_silence_is_the_customers_power() {
    let mut s = Street::new();
    s.cpes[3].events.push(Event::DyingGasp);
    s.run(10);
    s.silent[3] = true;
    s.run(60);
    let d = s.diagnose(3);
    assert_eq!(d.location, Location::Customer, "{d:?}");
    assert_eq!(d.rule, "dying-gasp");
    assert!(d.evidence.iter().any(|e| e.contains("dying gasp")), "{d:?}");
    assert_eq!(s.baseline(3), Location::Customer);
}

#[test]
fn restarts_are_the_cpe() {
    let mut s = Street::new();
    for k in 0..3 {
        s.cpes[5].boot = format!("again{k}");
        s.cpes[5].seq = 0;
        s.cpes[5].uptime = 0;
        s.cpes[5].events.push(Event::Boot);
        s.run(240);
    }
    let d = s.diagnose(5);
    assert_eq!(d.location, Location::Home, "{d:?}");
    assert_eq!(d.fault, "reboot-loop");
}

#[test]
fn a_cpe_seen_for_the_first_time_has_started_not_restarted() {
    // A new installation (or ops' first report of a CPE): its first report
    // carries the boot event and a small uptime.
    let rows = vec![Row {
        subscriber: "new".into(),
        cabinet: "cab9".into(),
        card: 0,
        cell: "c9".into(),
    }];
    let mut engine = Engine::new(
        Inventory::from_rows(rows).unwrap(),
        Settings {
            report_period_s: 10.0,
            hag_period_s: 10.0,
        },
    );
    let mut cpe = Cpe::new(0);
    cpe.name = "new".into();
    cpe.uptime = 0;
    cpe.showtime_began = 0;
    cpe.events.push(Event::Boot);
    let mut t = T0;
    for _ in 0..6 {
        t += PERIOD;
        engine.ingest(&cpe.report(t), t).unwrap();
    }
    let d = engine.diagnose(0, t + 1000);
    assert_eq!(d.location, Location::None, "{d:?}");
    // Its next start is a restart.
    cpe.boot = "second".into();
    cpe.seq = 0;
    cpe.uptime = 0;
    cpe.showtime_began = 0;
    cpe.events.push(Event::Boot);
    t += PERIOD;
    engine.ingest(&cpe.report(t), t).unwrap();
    let d = engine.diagnose(0, t + 1000);
    assert_eq!(d.rule, "restarts", "{d:?}");
}

#[test]
fn one_line_without_signal_is_the_pair_and_a_whole_cabinet_is_one_cabinet_job() {
    let mut s = Street::new();
    s.cpes[2].showtime = false;
    s.cpes[2].no_signal = true;
    s.run(60);
    let d = s.diagnose(2);
    assert_eq!(
        (d.location, d.fault),
        (Location::Line, "broken-pair"),
        "{d:?}"
    );
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("over the mobile link")),
        "{d:?}"
    );

    let mut s = Street::new();
    for i in 8..16 {
        s.cpes[i].showtime = false;
        s.cpes[i].no_signal = true;
    }
    s.run(60);
    let groups: std::collections::BTreeSet<_> = (8..16).map(|i| s.diagnose(i).group).collect();
    assert_eq!(groups.len(), 1, "{groups:?}");
    let d = s.diagnose(9);
    assert_eq!(
        (d.location, d.fault),
        (Location::Cabinet, "cabinet-power"),
        "{d:?}"
    );
    // The baseline sends a truck per line.
    assert_eq!(s.baseline(9), Location::Line);
    // The other cabinet is fine.
    assert_eq!(s.diagnose(1).location, Location::None);
}

#[test]
fn a_failing_line_card_is_its_lines_only() {
    let mut s = Street::new();
    s.run_with(600, |c, _| {
        for cpe in &mut c[4..8] {
            cpe.crc += 400;
            cpe.es += 8;
            cpe.ds_margin = 2.0;
        }
    });
    let d = s.diagnose(5);
    assert_eq!(
        (d.location, d.fault),
        (Location::Cabinet, "line-card"),
        "{d:?}"
    );
    assert_eq!(d.group, ops::Group::Card("cab0".into(), 1));
    assert_eq!(s.diagnose(1).location, Location::None);
}

#[test]
fn rising_attenuation_is_water_and_a_step_is_the_house() {
    let mut s = Street::new();
    s.run_with(1200, |c, _| {
        c[6].atn += 0.08;
        c[6].ds_margin -= 0.05;
    });
    let d = s.diagnose(6);
    assert_eq!(
        (d.location, d.fault),
        (Location::Line, "water-ingress"),
        "{d:?}"
    );

    let mut s = Street::new();
    s.cpes[6].atn += 4.0;
    s.cpes[6].ds_margin -= 2.0;
    s.run_with(600, |c, _| c[6].crc += 60);
    let d = s.diagnose(6);
    assert_eq!(
        (d.location, d.fault),
        (Location::Home, "in-home-wiring"),
        "{d:?}"
    );
}

#[test]
fn a_lost_margin_with_the_same_attenuation_is_crosstalk() {
    let mut s = Street::new();
    s.cpes[10].ds_margin -= 3.0;
    s.cpes[10].us_margin -= 2.5;
    s.run(900);
    let d = s.diagnose(10);
    assert_eq!(
        (d.location, d.fault),
        (Location::Line, "crosstalk"),
        "{d:?}"
    );
}

#[test]
fn a_phone_that_comes_and_goes_is_a_missing_microfilter() {
    let mut s = Street::new();
    for _ in 0..3 {
        s.cpes[7].us_margin -= 9.0;
        s.cpes[7].ds_margin -= 6.0;
        s.run_with(180, |c, _| c[7].crc += 200);
        s.cpes[7].us_margin += 9.0;
        s.cpes[7].ds_margin += 6.0;
        s.run(420);
    }
    let d = s.diagnose(7);
    assert_eq!(
        (d.location, d.fault),
        (Location::Home, "missing-microfilter"),
        "{d:?}"
    );
}

#[test]
fn lan_unplugged_is_the_customer() {
    let mut s = Street::new();
    s.cpes[1].lan = false;
    s.run(30);
    let d = s.diagnose(1);
    assert_eq!(
        (d.location, d.fault),
        (Location::Customer, "lan-unplugged"),
        "{d:?}"
    );
}

#[test]
fn a_cell_down_for_everyone_is_mobile_and_one_home_alone_is_its_own() {
    let mut s = Street::new();
    s.run_with(120, |c, _| {
        for cpe in &mut c[..12] {
            cpe.registered = false;
            cpe.lte_up = false;
        }
    });
    let d = s.diagnose(4);
    assert_eq!(
        (d.location, d.fault),
        (Location::Mobile, "cell-outage"),
        "{d:?}"
    );
    assert_eq!(s.diagnose(13).location, Location::None);

    let mut s = Street::new();
    s.run_with(300, |c, _| {
        for cpe in &mut c[..12] {
            cpe.lte_rtt = 350.0;
            cpe.lte_loss = 6.0;
        }
    });
    let d = s.diagnose(4);
    assert_eq!(
        (d.location, d.fault),
        (Location::Mobile, "cell-congestion"),
        "{d:?}"
    );
}

#[test]
fn the_hag_gone_is_the_core_and_upstream_errors_too() {
    let mut s = Street::new();
    s.hag_up = false;
    s.run_with(120, |c, _| {
        for cpe in c.iter_mut() {
            cpe.dsl_probe = false;
            cpe.lte_up = false;
        }
    });
    let d = s.diagnose(3);
    assert_eq!(
        (d.location, d.fault),
        (Location::Core, "hag-unreachable"),
        "{d:?}"
    );
    assert_eq!(d.group, ops::Group::Core);

    let mut s = Street::new();
    s.upstream_errors = 40;
    s.run(300);
    let d = s.diagnose(3);
    assert_eq!(
        (d.location, d.fault),
        (Location::Core, "upstream-loss"),
        "{d:?}"
    );
    // Judged on the last minute's connections: a minute after the
    // upstream is mended, it is healthy again (not five minutes later).
    s.upstream_errors = 0;
    s.run(70);
    let d = s.diagnose(3);
    assert_eq!(d.location, Location::None, "{d:?}");
}

#[test]
fn a_silent_home_the_hag_still_hears_is_its_reporting_not_its_power() {
    // Its reports stop but the HAG still carries its traffic: the CPE is
    // on; its reporting is what fails.
    let mut s = Street::new();
    s.silent[6] = true;
    s.hag_hears[6] = true;
    s.run(60);
    let d = s.diagnose(6);
    assert_eq!(
        (d.location, d.fault, d.rule),
        (Location::Home, "cpe-software", "silent-but-seen"),
        "{d:?}"
    );
    assert!(
        d.evidence.iter().any(|e| e.contains("HAG heard from it")),
        "{d:?}"
    );
    // Silent to the HAG too: off.
    let mut s = Street::new();
    s.silent[6] = true;
    s.run(60);
    let d = s.diagnose(6);
    assert_eq!(
        (d.location, d.rule),
        (Location::Customer, "silent"),
        "{d:?}"
    );
    assert!(
        d.evidence
            .iter()
            .any(|e| e.contains("HAG has not heard from it either")),
        "{d:?}"
    );
    // Without the HAG's reports it cannot be told: the silence rule as before.
    let mut s = Street::new();
    s.hag_up = false;
    s.silent[6] = true;
    s.hag_hears[6] = true;
    s.run(60);
    assert_eq!(s.diagnose(6).location, Location::Customer);
}

#[test]
fn with_the_line_and_the_mobile_link_dead_the_last_word_decides() {
    // The cell went down first (the home reported over DSL), then the
    // pair broke: silence, but not the customer's power.
    let mut s = Street::new();
    s.run_with(120, |c, _| {
        c[2].registered = false;
        c[2].lte_up = false;
    });
    s.silent[2] = true;
    s.run(60);
    let d = s.diagnose(2);
    assert_eq!(d.location, Location::Line, "{d:?}");
}

#[test]
fn unknown_subscribers_are_refused_and_late_reports_do_not_break_the_history() {
    let mut s = Street::new();
    let mut stranger = Cpe::new(99);
    let r = stranger.report(s.t);
    assert!(s.engine.ingest(&r, s.t).is_err());
    assert_eq!(s.engine.unknown_reports(), 1);
    // A report from a CPE's queue, ten minutes late, lands in its minute.
    let mut late = s.cpes[0].clone();
    let r = late.report(s.t - 600_000);
    s.engine.ingest(&r, s.t).unwrap();
    assert_eq!(s.diagnose(0).location, Location::None);
}

#[test]
fn replay_reads_json_lines_and_prints_the_changes() {
    // The same street, written out as telemetry and replayed.
    let mut cpes: Vec<Cpe> = (0..16).map(Cpe::new).collect();
    let mut lines = String::from("# hand-made street\n\n");
    let mut t = T0;
    for step in 0..400 {
        t += PERIOD;
        if step == 360 {
            cpes[2].showtime = false;
            cpes[2].no_signal = true;
        }
        for c in &mut cpes {
            lines.push_str(&c.report(t).to_json());
            lines.push('\n');
        }
    }
    let rows = (0..16)
        .map(|i| Row {
            subscriber: format!("h{i}"),
            cabinet: format!("cab{}", i / 8),
            card: (i % 8 / 4) as u32,
            cell: "c1".into(),
        })
        .collect();
    let mut engine = Engine::new(Inventory::from_rows(rows).unwrap(), Settings::default());
    let mut changes = Vec::new();
    let n =
        ops::replay::replay(&mut engine, lines.as_bytes(), |c| changes.push(c.clone())).unwrap();
    assert_eq!(n, 400 * 16);
    let last = changes
        .iter()
        .rev()
        .find(|c| c.diagnosis.subscriber == "h2")
        .unwrap();
    assert_eq!(last.diagnosis.location, Location::Line, "{changes:?}");
    let others: Vec<_> = changes
        .iter()
        .filter(|c| c.diagnosis.subscriber != "h2" && c.diagnosis.location != Location::None)
        .collect();
    assert!(others.is_empty(), "{others:?}");

    // A bad line is an error with its number, not a crash.
    let mut engine = Engine::new(Inventory::default(), Settings::default());
    let e = ops::replay::replay(&mut engine, &b"{\"schema\":1}\n"[..], |_| {}).unwrap_err();
    assert_eq!(e.to_string(), "line 1");
    let cause = std::error::Error::source(&e).unwrap().to_string();
    assert!(cause.starts_with("malformed report:"), "{cause}");
    let e = ops::replay::replay(&mut engine, &b"\n\nnot json\n"[..], |_| {}).unwrap_err();
    assert_eq!(e.to_string(), "line 3");
    let cause = std::error::Error::source(&e).unwrap().to_string();
    assert!(cause.starts_with("malformed report:"), "{cause}");
}

#[test]
fn a_dying_gasp_is_the_customers_power_at_once() {
    let mut s = Street::new();
    s.cpes[3].events.push(Event::DyingGasp);
    s.run(10);
    s.silent[3] = true;
    // Within a period, long before the silence would tell.
    let d = s.engine.diagnose(3, s.t + 2000);
    assert_eq!(d.location, Location::Customer, "{d:?}");
    assert_eq!((d.fault, d.rule), ("power-loss", "dying-gasp"));
    // Power back: one start after a gasp is not a reboot loop.
    s.run(120);
    s.silent[3] = false;
    s.cpes[3].boot = "after-power".into();
    s.cpes[3].seq = 0;
    s.cpes[3].uptime = 0;
    s.cpes[3].showtime_began = 0;
    s.cpes[3].events.push(Event::Boot);
    s.run(120);
    let d = s.diagnose(3);
    assert_eq!(d.location, Location::None, "{d:?}");
}

#[test]
fn a_line_that_trains_and_never_syncs_is_the_line() {
    let mut s = Street::new();
    s.cpes[2].showtime = false;
    s.cpes[2].no_signal = false;
    s.run(60);
    // A minute of training is a retrain, not yet a fault.
    assert_ne!(s.diagnose(2).rule, "fails-to-train");
    s.run(240);
    let d = s.diagnose(2);
    assert_eq!(d.location, Location::Line, "{d:?}");
    assert_eq!(d.rule, "fails-to-train");
    assert!(d.evidence[0].contains("training"), "{d:?}");
}

#[test]
fn a_cabinet_coming_back_is_no_line_card() {
    let mut s = Street::new();
    for c in &mut s.cpes[..8] {
        c.showtime = false;
        c.no_signal = true;
    }
    s.run(180);
    assert_eq!(s.diagnose(0).location, Location::Cabinet);
    // Power back: every line trains once, and that is all.
    s.run_with(10, |cpes, _| {
        for c in &mut cpes[..8] {
            c.showtime = true;
            c.no_signal = false;
            c.showtime_began = c.uptime;
            c.events.push(Event::Retrain);
        }
    });
    s.run(180);
    for i in 0..8 {
        let d = s.diagnose(i);
        assert_eq!(d.location, Location::None, "home {i}: {d:?}");
    }
}

#[test]
fn loss_both_links_see_is_not_the_lines() {
    let mut s = Street::new();
    s.cpes[6].dsl_loss = 10.0;
    s.cpes[6].lte_loss = 10.0;
    s.run(300);
    let d = s.diagnose(6);
    assert_eq!(d.location, Location::None, "{d:?}");
    // The fixed line's alone is past its modem.
    s.cpes[6].lte_loss = 0.0;
    s.run(300);
    let d = s.diagnose(6);
    assert_ne!(d.location, Location::None, "{d:?}");
    assert!(d.evidence.iter().any(|e| e.contains("probes")), "{d:?}");
}

/// Two lines of card 1 in trouble (errors, a retrain each) and, if
/// `repair`, mended; then a third line of the card errs.
fn aftermath(repair: bool) -> (Street, ops::Diagnosis) {
    let mut s = Street::new();
    s.cpes[4].events.push(Event::Retrain);
    s.cpes[5].events.push(Event::Retrain);
    s.run_with(300, |c, _| {
        for cpe in &mut c[4..6] {
            cpe.crc += 400;
            cpe.es += 8;
        }
    });
    assert_ne!(s.diagnose(4).location, Location::None);
    if repair {
        s.engine.repaired("h4", s.t);
        s.engine.repaired("h5", s.t);
    }
    s.run(120);
    s.run_with(300, |c, _| c[6].crc += 400);
    let d = s.diagnose(6);
    (s, d)
}

#[test]
fn a_repaired_line_is_judged_from_its_repair_not_its_past() {
    // Unrepaired, the old errors and retrains still count: with them the
    // third line's errors look like the card failing.
    let (_, d) = aftermath(false);
    assert_eq!(
        (d.location, d.fault),
        (Location::Cabinet, "line-card"),
        "{d:?}"
    );
    let (s, d) = aftermath(true);
    assert_eq!(
        s.diagnose(4).location,
        Location::None,
        "{:?}",
        s.diagnose(4)
    );
    assert_eq!(s.diagnose(5).location, Location::None);
    assert_ne!(d.location, Location::Cabinet, "{d:?}");
    assert_ne!(d.location, Location::None, "{d:?}");
    // An unknown subscriber's repair is ignored.
    let mut s = s;
    s.engine.repaired("nobody", s.t);
}

#[test]
fn lines_of_a_card_retraining_as_another_errs_is_the_card() {
    let mut s = Street::new();
    // Card 1 of cab0 (h4..h7) fails: h4 and h5 drop out of showtime and
    // train again, h6 errs; within the first minute.
    s.cpes[4].showtime = false;
    s.cpes[5].showtime = false;
    s.cpes[6].ds_margin -= 4.0;
    s.run_with(40, |c, _| c[6].crc += 300);
    let d = s.diagnose(6);
    assert_eq!(
        (d.location, d.fault),
        (Location::Cabinet, "line-card"),
        "{d:?}"
    );
    // One line retraining alone is not a card: h6's errors are its own.
    let mut s = Street::new();
    s.cpes[4].showtime = false;
    s.cpes[6].ds_margin -= 4.0;
    s.run_with(40, |c, _| c[6].crc += 300);
    assert_ne!(s.diagnose(6).location, Location::Cabinet);
}
