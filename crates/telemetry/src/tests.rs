use super::*;

pub(crate) fn sample() -> Report {
    Report {
        schema: SCHEMA,
        subscriber: "home-1".into(),
        boot_id: "9f2c4e1a0b7d3c55".into(),
        seq: 1,
        sent_at_ms: 1_764_700_000_000,
        uptime_s: 12,
        via: Link::Dsl,
        events: vec![Event::Boot, Event::LinkDown { link: Link::Lte }],
        links: vec![
            LinkReport {
                link: Link::Dsl,
                up: true,
                rtt_ms: Some(15.2),
                jitter_ms: Some(0.4),
                loss_pct: 0.0,
                tx_bytes: 1000,
                rx_bytes: 20_000,
            },
            LinkReport {
                link: Link::Lte,
                up: false,
                rtt_ms: None,
                jitter_ms: None,
                loss_pct: 100.0,
                tx_bytes: 0,
                rx_bytes: 0,
            },
        ],
        lan: Lan {
            carrier: true,
            devices: 3,
            flows: 7,
        },
        dsl: Some(DslLine {
            status: LineStatus::Up,
            link_status: LinkStatus::Up,
            upstream_max_bit_rate: 1_200,
            downstream_max_bit_rate: 16_000,
            upstream_noise_margin: 61,
            downstream_noise_margin: 64,
            upstream_attenuation: 180,
            downstream_attenuation: 310,
            upstream_power: 125,
            downstream_power: 190,
            stats: LineStats {
                last_showtime_start: 3600,
                total: LineStatsTotal {
                    errored_secs: 3,
                    severely_errored_secs: 0,
                },
            },
            channel: Channel {
                upstream_curr_rate: 1_000,
                downstream_curr_rate: 14_000,
                stats: ChannelStats {
                    total: ChannelStatsTotal {
                        xtur_crc_errors: 12,
                        ..Default::default()
                    },
                },
            },
        }),
        mobile: Some(Radio {
            registered: true,
            rsrp_dbm: Some(-97.0),
            rsrq_db: Some(-11.0),
            sinr_db: Some(9.5),
            cell_id: Some("cell-3".into()),
        }),
    }
}

#[test]
fn a_report_round_trips_with_tr181_names() {
    let r = sample();
    let json = r.to_json();
    for name in [
        "\"DownstreamNoiseMargin\":64",
        "\"UpstreamAttenuation\":180",
        "\"LastShowtimeStart\":3600",
        "\"ErroredSecs\":3",
        "\"XTURCRCErrors\":12",
        "\"DownstreamCurrRate\":14000",
        "\"kind\":\"link_down\"",
    ] {
        assert!(json.contains(name), "{name} missing in {json}");
    }
    assert_eq!(Report::parse(json.as_bytes()).unwrap(), r);
}

#[test]
fn bad_reports_are_refused_with_the_field() {
    let mut r = sample();
    r.schema = 2;
    assert!(matches!(
        Report::parse(r.to_json().as_bytes()),
        Err(Error::Schema(2))
    ));
    let mut r = sample();
    r.subscriber = "a b".into();
    let e = Report::parse(r.to_json().as_bytes()).unwrap_err();
    assert!(e.to_string().contains("subscriber"), "{e}");
    let mut r = sample();
    r.links[0].loss_pct = 101.0;
    assert!(Report::parse(r.to_json().as_bytes()).is_err());
    let mut r = sample();
    r.links[1].link = Link::Dsl;
    assert!(Report::parse(r.to_json().as_bytes()).is_err());
    let mut r = sample();
    r.seq = 0;
    assert!(Report::parse(r.to_json().as_bytes()).is_err());
    let big = vec![b' '; MAX_REPORT_BYTES + 1];
    assert!(matches!(Report::parse(&big), Err(Error::TooLarge(_))));
    let unknown = sample().to_json().replacen('{', "{\"extra\":1,", 1);
    assert!(Report::parse(unknown.as_bytes()).is_err());
}

#[test]
fn signatures_bind_the_body_to_the_credential() {
    let k = key(b"cookie-of-home-1");
    let body = sample().to_json();
    let sig = sign(&k, body.as_bytes());
    verify(&k, body.as_bytes(), &sig).unwrap();
    assert!(verify(&key(b"another"), body.as_bytes(), &sig).is_err());
    let tampered = body.replace("home-1", "home-2");
    assert!(verify(&k, tampered.as_bytes(), &sig).is_err());
    assert!(verify(&k, body.as_bytes(), "zz").is_err());
    assert!(verify(&k, body.as_bytes(), "").is_err());
}

#[test]
fn hag_reports_are_checked() {
    let r = HagReport {
        schema: SCHEMA,
        hag: "hag-1".into(),
        sent_at_ms: 1,
        upstream_connects: 10,
        upstream_errors: 4,
        subscribers: vec![hag::SubscriberView {
            subscriber: "home-1".into(),
            subflows_dsl: 2,
            subflows_lte: 1,
            connections: 2,
            retransmits: 0,
            last_seen_ms: 1,
        }],
    };
    let json = serde_json::to_vec(&r).unwrap();
    let back = HagReport::parse(&json).unwrap();
    assert_eq!(back.upstream_error_ratio(), Some(0.4));
    let mut bad = r.clone();
    bad.upstream_errors = 11;
    assert!(HagReport::parse(&serde_json::to_vec(&bad).unwrap()).is_err());
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
        let _ = Report::parse(&body);
        let _ = HagReport::parse(&body);
    }

    #[test]
    fn mutated_reports_never_panic(pos in 0usize..1500, byte in proptest::prelude::any::<u8>()) {
        let mut body = sample().to_json().into_bytes();
        let i = pos % body.len();
        body[i] = byte;
        let _ = Report::parse(&body);
    }
}
