//! A CPE as a test drives it: its state, turned into the report it would
//! send (shared by the rules' tests and the service's).

use hybrid::Link;
use telemetry::{
    Channel, ChannelStats, ChannelStatsTotal, DslLine, Event, Lan, LineStats, LineStatsTotal,
    LineStatus, LinkReport, LinkStatus, Radio, Report, SCHEMA,
};

/// Wall clock, Unix ms.
#[allow(dead_code)] // not every test file uses it
pub(crate) fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The reporting period, ms.
pub(crate) const PERIOD: u64 = 10_000;

/// One home's state, as its CPE would report it.
#[derive(Clone)]
pub(crate) struct Cpe {
    pub(crate) name: String,
    pub(crate) seq: u64,
    pub(crate) boot: String,
    pub(crate) uptime: u64,
    pub(crate) ds_margin: f64,
    pub(crate) us_margin: f64,
    pub(crate) atn: f64,
    pub(crate) rate: u32,
    pub(crate) showtime: bool,
    pub(crate) no_signal: bool,
    pub(crate) crc: u64,
    pub(crate) es: u64,
    pub(crate) lte_up: bool,
    pub(crate) registered: bool,
    pub(crate) lte_rtt: f64,
    pub(crate) lte_loss: f64,
    /// Probe loss on the fixed line while it is up, percent.
    pub(crate) dsl_loss: f64,
    pub(crate) dsl_probe: bool,
    pub(crate) lan: bool,
    pub(crate) events: Vec<Event>,
    /// The uptime at which the line entered showtime.
    pub(crate) showtime_began: u64,
}

impl Cpe {
    pub(crate) fn new(i: usize) -> Self {
        Self {
            name: format!("h{i}"),
            seq: 0,
            boot: format!("boot{i}"),
            uptime: 100_000,
            ds_margin: 6.5,
            us_margin: 7.0,
            atn: 30.0 + i as f64,
            rate: 12_000,
            showtime: true,
            no_signal: false,
            crc: 0,
            es: 0,
            lte_up: true,
            registered: true,
            lte_rtt: 45.0,
            lte_loss: 0.0,
            dsl_loss: 0.0,
            dsl_probe: true,
            lan: true,
            events: Vec::new(),
            showtime_began: 1000,
        }
    }

    pub(crate) fn report(&mut self, t: u64) -> Report {
        self.seq += 1;
        self.uptime += PERIOD / 1000;
        let via = if self.showtime && self.dsl_probe {
            Link::Dsl
        } else {
            Link::Lte
        };
        Report {
            schema: SCHEMA,
            subscriber: self.name.clone(),
            boot_id: self.boot.clone(),
            seq: self.seq,
            sent_at_ms: t,
            uptime_s: self.uptime,
            via,
            events: std::mem::take(&mut self.events),
            links: vec![
                LinkReport {
                    link: Link::Dsl,
                    up: self.showtime && self.dsl_probe,
                    rtt_ms: Some(15.0),
                    jitter_ms: Some(1.0),
                    loss_pct: if self.showtime && self.dsl_probe {
                        self.dsl_loss
                    } else {
                        100.0
                    },
                    tx_bytes: 0,
                    rx_bytes: 0,
                },
                LinkReport {
                    link: Link::Lte,
                    up: self.lte_up,
                    rtt_ms: self.lte_up.then_some(self.lte_rtt),
                    jitter_ms: Some(5.0),
                    loss_pct: if self.lte_up { self.lte_loss } else { 100.0 },
                    tx_bytes: 0,
                    rx_bytes: 0,
                },
            ],
            lan: Lan {
                carrier: self.lan,
                devices: if self.lan { 3 } else { 0 },
                flows: 4,
            },
            dsl: Some(DslLine {
                status: if self.showtime {
                    LineStatus::Up
                } else {
                    LineStatus::Down
                },
                link_status: if self.showtime {
                    LinkStatus::Up
                } else if self.no_signal {
                    LinkStatus::NoSignal
                } else {
                    LinkStatus::Initializing
                },
                upstream_max_bit_rate: 1000,
                downstream_max_bit_rate: self.rate + 500,
                upstream_noise_margin: (self.us_margin * 10.0) as i32,
                downstream_noise_margin: (self.ds_margin * 10.0) as i32,
                upstream_attenuation: 150,
                downstream_attenuation: (self.atn * 10.0) as i32,
                upstream_power: 120,
                downstream_power: 190,
                stats: LineStats {
                    last_showtime_start: if self.showtime {
                        self.uptime.saturating_sub(self.showtime_began)
                    } else {
                        0
                    },
                    total: LineStatsTotal {
                        errored_secs: self.es,
                        severely_errored_secs: 0,
                    },
                },
                channel: Channel {
                    upstream_curr_rate: 900,
                    downstream_curr_rate: self.rate,
                    stats: ChannelStats {
                        total: ChannelStatsTotal {
                            xtur_crc_errors: self.crc,
                            ..Default::default()
                        },
                    },
                },
            }),
            mobile: Some(Radio {
                registered: self.registered,
                rsrp_dbm: Some(-95.0),
                rsrq_db: Some(-10.0),
                sinr_db: Some(12.0),
                cell_id: Some("c1".into()),
            }),
        }
    }
}
