//! The drivers on outputs in the tools' real formats, on hostile input,
//! and through each kind of source.

use std::time::{Duration, Instant};

use modem::{mmcli, ubus, Error, Modems, Source};
use proptest::prelude::*;
use telemetry::{LineStatus, LinkStatus};

const SHOWTIME: &[u8] = include_bytes!("data/ubus-showtime.json");
const IDLE: &[u8] = include_bytes!("data/ubus-idle.json");
const MODEM: &[u8] = include_bytes!("data/mmcli-modem.json");
const SIGNAL: &[u8] = include_bytes!("data/mmcli-signal.json");
const LOCATION: &[u8] = include_bytes!("data/mmcli-location.json");

#[test]
fn ubus_showtime_maps_to_tr181() {
    let l = ubus::parse(SHOWTIME).unwrap();
    assert_eq!(l.status, LineStatus::Up);
    assert_eq!(l.link_status, LinkStatus::Up);
    assert!(l.in_showtime());
    assert_eq!(l.downstream_noise_margin, 112);
    assert_eq!(l.upstream_noise_margin, 94);
    assert_eq!(l.downstream_attenuation, 126);
    assert_eq!(l.upstream_attenuation, 83);
    assert_eq!(l.downstream_power, 135);
    assert_eq!(l.downstream_max_bit_rate, 135_240);
    assert_eq!(l.upstream_max_bit_rate, 41_234);
    assert_eq!(l.channel.downstream_curr_rate, 108_993);
    assert_eq!(l.channel.upstream_curr_rate, 31_999);
    assert_eq!(l.stats.last_showtime_start, 86_123);
    assert_eq!(l.stats.total.errored_secs, 12);
    assert_eq!(l.stats.total.severely_errored_secs, 1);
    let t = l.channel.stats.total;
    assert_eq!(t.xtur_crc_errors, 90, "crc_p + crcp_p at the near end");
    assert_eq!(t.xtuc_crc_errors, 5);
    assert_eq!(t.xtur_fec_errors, 4567);
    assert_eq!(t.xtuc_fec_errors, 17);
}

#[test]
fn ubus_idle_line_has_no_signal_and_keeps_its_counters() {
    let l = ubus::parse(IDLE).unwrap();
    assert_eq!(l.status, LineStatus::Down);
    assert_eq!(l.link_status, LinkStatus::NoSignal);
    assert_eq!(l.downstream_noise_margin, 0);
    assert_eq!(l.channel.downstream_curr_rate, 0);
    assert_eq!(l.stats.last_showtime_start, 0);
    assert_eq!(l.channel.stats.total.xtur_crc_errors, 90);
}

#[test]
fn ubus_training_states_are_told_apart() {
    for (state, want) in [
        ("Handshake", LinkStatus::EstablishingLink),
        ("Full init", LinkStatus::Initializing),
        ("Training", LinkStatus::Initializing),
        ("Discovery", LinkStatus::Initializing),
        ("Not initialized", LinkStatus::Disabled),
        ("Exception", LinkStatus::Error),
        ("Silent", LinkStatus::NoSignal),
    ] {
        let j = format!(r#"{{"state": "{state}", "up": false}}"#);
        assert_eq!(
            ubus::parse(j.as_bytes()).unwrap().link_status,
            want,
            "{state}"
        );
    }
}

#[test]
fn ubus_refuses_what_it_cannot_use() {
    // Showtime without a margin: the field is named.
    let j = br#"{"state": "Showtime with TC-Layer sync", "up": true, "downstream": {"latn": 10}, "upstream": {}}"#;
    let e = ubus::parse(j).unwrap_err();
    assert!(matches!(e, Error::Missing("downstream.snr")), "{e}");
    // A margin no line has.
    let bad = String::from_utf8(SHOWTIME.to_vec())
        .unwrap()
        .replace("\"snr\": 11.2", "\"snr\": 900.0");
    let e = ubus::parse(bad.as_bytes()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Range {
                field: "downstream.snr",
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(ubus::parse(b"not json"), Err(Error::Json(_))));
    assert!(matches!(ubus::parse(b"[1,2]"), Err(Error::Json(_))));
}

#[test]
fn mmcli_three_outputs_make_one_radio() {
    let r = mmcli::parse(&[MODEM, SIGNAL, LOCATION]).unwrap();
    assert!(r.registered);
    assert_eq!(r.rsrp_dbm, Some(-97.0));
    assert_eq!(r.rsrq_db, Some(-11.0));
    assert_eq!(r.sinr_db, Some(12.4));
    assert_eq!(r.cell_id.as_deref(), Some("01A2D30F"));
}

#[test]
fn mmcli_searching_modem_is_not_registered_and_odd_figures_are_dropped() {
    let modem = String::from_utf8(MODEM.to_vec())
        .unwrap()
        .replace("\"state\":\"connected\"", "\"state\":\"searching\"")
        .replace(
            "\"registration-state\":\"home\"",
            "\"registration-state\":\"searching\"",
        );
    let signal = String::from_utf8(SIGNAL.to_vec())
        .unwrap()
        .replace("-97.00", "12.00")
        .replace("12.40", "nan");
    let r = mmcli::parse(&[modem.as_bytes(), signal.as_bytes(), LOCATION]).unwrap();
    assert!(!r.registered);
    assert_eq!(r.rsrp_dbm, None, "positive RSRP is not a figure");
    assert_eq!(r.sinr_db, None);
    assert_eq!(r.rsrq_db, Some(-11.0));
    assert_eq!(r.cell_id, None, "no serving cell while searching");
    assert!(matches!(
        mmcli::parse(&[b"{\"nomodem\": 1}"]),
        Err(Error::Missing("modem"))
    ));
}

#[test]
fn mmcli_roaming_counts_as_registered() {
    let modem = String::from_utf8(MODEM.to_vec()).unwrap().replace(
        "\"registration-state\":\"home\"",
        "\"registration-state\":\"roaming\"",
    );
    assert!(mmcli::parse(&[modem.as_bytes()]).unwrap().registered);
}

fn line() -> impl Strategy<Value = telemetry::DslLine> {
    (
        any::<bool>(),
        -640i32..=640,
        -640i32..=640,
        0i32..=1280,
        0i32..=1280,
        0u32..=300_000,
        0u32..=300_000,
        0u64..=1 << 40,
        0u64..=1 << 40,
        0u64..=1 << 30,
    )
        .prop_map(
            |(up, dm, um, da, ua, rate, max, crc, fec, es)| telemetry::DslLine {
                status: if up { LineStatus::Up } else { LineStatus::Down },
                link_status: if up {
                    LinkStatus::Up
                } else {
                    LinkStatus::NoSignal
                },
                upstream_max_bit_rate: max / 4,
                downstream_max_bit_rate: max,
                upstream_noise_margin: if up { um } else { 0 },
                downstream_noise_margin: if up { dm } else { 0 },
                upstream_attenuation: ua,
                downstream_attenuation: da,
                upstream_power: if up { 142 } else { 0 },
                downstream_power: if up { 135 } else { 0 },
                stats: telemetry::LineStats {
                    last_showtime_start: if up { es } else { 0 },
                    total: telemetry::LineStatsTotal {
                        errored_secs: es,
                        severely_errored_secs: es / 2,
                    },
                },
                channel: telemetry::Channel {
                    upstream_curr_rate: if up { rate / 4 } else { 0 },
                    downstream_curr_rate: if up { rate } else { 0 },
                    stats: telemetry::ChannelStats {
                        total: telemetry::ChannelStatsTotal {
                            xtur_crc_errors: crc,
                            xtuc_crc_errors: crc / 3,
                            xtur_fec_errors: fec,
                            xtuc_fec_errors: fec / 5,
                        },
                    },
                },
            },
        )
}

proptest! {
    #[test]
    fn ubus_render_parse_round_trip(l in line()) {
        prop_assert_eq!(ubus::parse(ubus::render(&l).as_bytes()).unwrap(), l);
    }

    #[test]
    fn mmcli_render_parse_round_trip(
        reg in any::<bool>(),
        rsrp in -140i32..-44,
        rsrq in -20i32..-3,
        snr in -10i32..30,
        cell in "[0-9A-F]{8}",
    ) {
        let r = telemetry::Radio {
            registered: reg,
            rsrp_dbm: Some(f64::from(rsrp)),
            rsrq_db: Some(f64::from(rsrq)),
            sinr_db: Some(f64::from(snr)),
            cell_id: reg.then_some(cell),
        };
        prop_assert_eq!(mmcli::parse(&[mmcli::render(&r).as_bytes()]).unwrap(), r);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ubus::parse(&bytes);
        let _ = mmcli::parse(&[&bytes]);
    }

    #[test]
    fn mutated_outputs_never_panic(i in 0usize..2000, b in any::<u8>()) {
        let mut s = SHOWTIME.to_vec();
        let n = s.len();
        s[i % n] = b;
        let _ = ubus::parse(&s);
        let mut m = SIGNAL.to_vec();
        let n = m.len();
        m[i % n] = b;
        let _ = mmcli::parse(&[&m]);
    }
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

#[tokio::test]
async fn sources_read_commands_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let dsl = dir.path().join("dsl.json");
    std::fs::write(&dsl, SHOWTIME).unwrap();
    let sig = dir.path().join("signal.json");
    std::fs::write(&sig, SIGNAL).unwrap();
    let m = Modems {
        dsl: Source::File(dsl.clone()),
        mobile: Source::Command(vec![sh(&format!(
            "cat {}",
            dir.path().join("nothing").display()
        ))]),
    };
    assert!(m.dsl().await.unwrap().unwrap().in_showtime());
    let e = m.radio().await.unwrap_err();
    assert!(matches!(e, Error::Command { .. }), "a failing tool: {e}");
    let m = Modems {
        dsl: Source::None,
        mobile: Source::Command(vec![sh(&format!("cat {}", sig.display()))]),
    };
    assert_eq!(m.dsl().await.unwrap(), None);
    assert_eq!(m.radio().await.unwrap().unwrap().rsrp_dbm, Some(-97.0));
    let e = Modems {
        dsl: Source::File(dir.path().join("missing")),
        mobile: Source::None,
    }
    .dsl()
    .await
    .unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[tokio::test]
async fn a_hung_or_flooding_tool_is_bounded() {
    let m = Modems {
        dsl: Source::Command(vec![sh("sleep 30")]),
        mobile: Source::Command(vec![sh("head -c 10000000 /dev/zero")]),
    };
    let t = Instant::now();
    let e = m.dsl().await.unwrap_err();
    assert!(e.to_string().contains("no answer"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(6));
    assert!(matches!(m.radio().await, Err(Error::TooLarge)));
    let e = Modems {
        dsl: Source::Command(vec![vec!["/nonexistent/ubus".into()]]),
        mobile: Source::None,
    }
    .dsl()
    .await
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ubus"), "{e}");
}

#[test]
fn source_names_parse() {
    assert_eq!(Source::parse("none"), Some(Source::None));
    assert_eq!(Source::parse("ubus"), Some(Source::ubus()));
    assert_eq!(Source::parse("mmcli"), Some(Source::mmcli()));
    assert_eq!(
        Source::parse("file:/run/dsl.json"),
        Some(Source::File("/run/dsl.json".into()))
    );
    assert_eq!(Source::parse("file:"), None);
    assert_eq!(Source::parse("usb"), None);
}
