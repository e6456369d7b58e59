//! Traffic control over rtnetlink (what `tc qdisc` and `tc class` do), for
//! the one shape Tandem's lab uses: an htb root qdisc, htb classes with a
//! rate and a ceiling, and a bfifo queue under a class; and deleting an
//! interface's root qdisc.
//!
//! netlink-packet-route has no htb or fifo options, so their `TCA_OPTIONS`
//! are built here from typed fields, as the kernel's uapi structs
//! (`include/uapi/linux/pkt_sched.h`) lay them out, in host byte order:
//!
//! - htb qdisc: nested `TCA_HTB_INIT`, a `tc_htb_glob` (version 3, `r2q`
//!   10, the default class's minor number);
//! - htb class: nested `TCA_HTB_PARMS`, a `tc_htb_opt` (rate and ceiling
//!   as `tc_ratespec` in bytes per second, burst and cburst in scheduler
//!   ticks of 64 ns, quantum in bytes), plus `TCA_HTB_RATE64` /
//!   `TCA_HTB_CEIL64` for rates of 2³² bytes/s and more;
//! - bfifo: a bare `tc_fifo_qopt` (the byte limit), not nested.
//!
//! No rate tables (`TCA_HTB_RTAB`/`CTAB`): since Linux 3.8 htb computes
//! transmission times from the rate itself (`psched_ratecfg_precompute`)
//! and reads a rate table only when the rate spec says its link layer is
//! unknown; these say Ethernet, as `tc` does (`net/sched/sch_htb.c`,
//! `htb_change_class`). The unit tests check the bytes against what `tc
//! class add … htb rate 8000kbit ceil 8000kbit quantum 1514` sends (read
//! with strace), and the namespace tests read the class back from the
//! kernel with `tc -d class show`.

use std::fmt;

use netlink_packet_core::{DefaultNla, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use rtnetlink::packet_route::RouteNetlinkMessage;

use super::{RouteError, RouteNetlink, RouteOp};

const TCA_OPTIONS: u16 = 2;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
/// `HTB_VER >> 16`: the version `htb_init` insists on.
const HTB_VERSION: u32 = 3;
/// `tc`'s default `r2q`: a class's quantum, when not given, is its rate
/// divided by this.
const HTB_RATE2QUANTUM: u32 = 10;
/// `TC_LINKLAYER_ETHERNET`.
const LINKLAYER_ETHERNET: u8 = 1;
/// One scheduler tick (`PSCHED_TICKS2NS(1)`, `PSCHED_SHIFT` 6), in ns.
const NS_PER_TICK: u64 = 64;

/// The burst `tc` gives an htb class when none is given: its rate over
/// the scheduler clock's resolution (`/proc/net/psched`: 10⁹ Hz with
/// high-resolution timers, so 0 bytes below 1 GB/s) plus its default MTU,
/// 1600 bytes.
pub const DEFAULT_BURST_BYTES: u32 = 1600;

/// A qdisc or class handle, `MAJOR:MINOR` (hexadecimal, as `tc` writes
/// them: class `1:10` is minor 0x10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Handle {
    /// Major number (the qdisc's).
    pub major: u16,
    /// Minor number (0 for the qdisc itself).
    pub minor: u16,
}

impl Handle {
    /// `major:minor`.
    #[must_use]
    pub const fn new(major: u16, minor: u16) -> Self {
        Self { major, minor }
    }

    const fn tc(self) -> TcHandle {
        TcHandle {
            major: self.major,
            minor: self.minor,
        }
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{:x}", self.major, self.minor)
    }
}

/// Where a qdisc is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Parent {
    /// The interface's root (egress).
    Root,
    /// Under a class.
    Class(Handle),
}

impl Parent {
    const fn tc(self) -> TcHandle {
        match self {
            Self::Root => TcHandle::ROOT,
            Self::Class(h) => h.tc(),
        }
    }
}

impl fmt::Display for Parent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Root => f.write_str("root"),
            Self::Class(h) => write!(f, "parent {h}"),
        }
    }
}

/// A queueing discipline and its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QdiscKind {
    /// Hierarchical token bucket (`htb default MINOR`): unclassified
    /// traffic goes to class `MAJOR:default_class`.
    Htb {
        /// Minor number of the default class.
        default_class: u16,
    },
    /// A FIFO limited in bytes (`bfifo limit BYTES`).
    Bfifo {
        /// The queue's limit, bytes.
        limit_bytes: u32,
    },
}

/// A qdisc on an interface (`tc qdisc add dev #IF PARENT handle H KIND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Qdisc {
    /// Interface index.
    pub ifindex: u32,
    /// Where it is attached.
    pub parent: Parent,
    /// Its handle (minor 0).
    pub handle: Handle,
    /// What it is.
    pub kind: QdiscKind,
}

impl Qdisc {
    fn message(&self) -> TcMessage {
        let mut m = tc_message(self.ifindex, self.handle, self.parent.tc());
        match self.kind {
            QdiscKind::Htb { default_class } => {
                m.attributes.push(TcAttribute::Kind("htb".into()));
                let mut glob = Vec::with_capacity(20);
                for v in [
                    HTB_VERSION,
                    HTB_RATE2QUANTUM,
                    u32::from(default_class),
                    0, // debug
                    0, // direct_pkts (read-only)
                ] {
                    glob.extend_from_slice(&v.to_ne_bytes());
                }
                m.attributes.push(TcAttribute::Options(vec![TcOption::Other(
                    DefaultNla::new(TCA_HTB_INIT, glob),
                )]));
            }
            QdiscKind::Bfifo { limit_bytes } => {
                m.attributes.push(TcAttribute::Kind("bfifo".into()));
                m.attributes.push(TcAttribute::Other(DefaultNla::new(
                    TCA_OPTIONS,
                    limit_bytes.to_ne_bytes().to_vec(),
                )));
            }
        }
        m
    }
}

impl fmt::Display for Qdisc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dev #{} {} handle {} ",
            self.ifindex, self.parent, self.handle
        )?;
        match self.kind {
            QdiscKind::Htb { default_class } => write!(f, "htb default {default_class:x}"),
            QdiscKind::Bfifo { limit_bytes } => write!(f, "bfifo limit {limit_bytes}"),
        }
    }
}

/// An htb class (`tc class add dev #IF parent P classid C htb rate R ceil
/// C [burst B cburst CB] [quantum Q]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HtbClass {
    /// Interface index.
    pub ifindex: u32,
    /// The parent: the htb qdisc (`1:`) or a class.
    pub parent: Handle,
    /// The class's id.
    pub classid: Handle,
    /// Guaranteed rate, bytes per second (not 0).
    pub rate_bytes_per_sec: u64,
    /// Ceiling, bytes per second (not 0).
    pub ceil_bytes_per_sec: u64,
    /// Bytes that may be sent at once at the rate.
    pub burst_bytes: u32,
    /// Bytes that may be sent at once at the ceiling.
    pub cburst_bytes: u32,
    /// Bytes served per round among siblings; 0: the kernel's rate / r2q.
    pub quantum: u32,
}

impl HtbClass {
    /// A class of `rate_kbit` and `ceil_kbit` (1 kbit = 1000 bits, as in
    /// `tc`), `tc`'s default bursts and the kernel's quantum.
    #[must_use]
    pub const fn kbit(
        ifindex: u32,
        parent: Handle,
        classid: Handle,
        rate_kbit: u64,
        ceil_kbit: u64,
    ) -> Self {
        Self {
            ifindex,
            parent,
            classid,
            rate_bytes_per_sec: rate_kbit.saturating_mul(125),
            ceil_bytes_per_sec: ceil_kbit.saturating_mul(125),
            burst_bytes: DEFAULT_BURST_BYTES,
            cburst_bytes: DEFAULT_BURST_BYTES,
            quantum: 0,
        }
    }

    /// The same class with quantum `bytes`.
    #[must_use]
    pub const fn with_quantum(mut self, bytes: u32) -> Self {
        self.quantum = bytes;
        self
    }

    /// The `tc_htb_opt` struct (44 bytes).
    fn parms(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(44);
        rate_spec(&mut out, self.rate_bytes_per_sec);
        rate_spec(&mut out, self.ceil_bytes_per_sec);
        for v in [
            ticks(self.burst_bytes, self.rate_bytes_per_sec),
            ticks(self.cburst_bytes, self.ceil_bytes_per_sec),
            self.quantum,
            0, // level (read-only)
            0, // prio
        ] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out
    }

    fn message(&self) -> TcMessage {
        let mut m = tc_message(self.ifindex, self.classid, self.parent.tc());
        m.attributes.push(TcAttribute::Kind("htb".into()));
        let mut opts = vec![TcOption::Other(DefaultNla::new(
            TCA_HTB_PARMS,
            self.parms(),
        ))];
        for (kind, rate) in [
            (TCA_HTB_RATE64, self.rate_bytes_per_sec),
            (TCA_HTB_CEIL64, self.ceil_bytes_per_sec),
        ] {
            if rate > u64::from(u32::MAX) {
                opts.push(TcOption::Other(DefaultNla::new(
                    kind,
                    rate.to_ne_bytes().to_vec(),
                )));
            }
        }
        m.attributes.push(TcAttribute::Options(opts));
        m
    }
}

impl fmt::Display for HtbClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dev #{} parent {} classid {} htb rate {}B/s ceil {}B/s burst {}b cburst {}b",
            self.ifindex,
            self.parent,
            self.classid,
            self.rate_bytes_per_sec,
            self.ceil_bytes_per_sec,
            self.burst_bytes,
            self.cburst_bytes
        )?;
        if self.quantum != 0 {
            write!(f, " quantum {}", self.quantum)?;
        }
        Ok(())
    }
}

fn tc_message(ifindex: u32, handle: Handle, parent: TcHandle) -> TcMessage {
    // Interface indexes are positive `int`s in the kernel.
    let mut m = TcMessage::with_index(i32::try_from(ifindex).unwrap_or(i32::MAX));
    m.header.handle = handle.tc();
    m.header.parent = parent;
    m
}

/// A `tc_ratespec` (12 bytes) for `rate` bytes per second, Ethernet link
/// layer, no overhead. `cell_log` 3 and `cell_align` -1 describe the rate
/// table `tc` would send for its default MTU; the kernel ignores them
/// without one, and they are sent only so that the request is `tc`'s.
fn rate_spec(out: &mut Vec<u8>, rate: u64) {
    out.push(3); // cell_log
    out.push(LINKLAYER_ETHERNET);
    out.extend_from_slice(&0u16.to_ne_bytes()); // overhead
    out.extend_from_slice(&(-1i16).to_ne_bytes()); // cell_align
    out.extend_from_slice(&0u16.to_ne_bytes()); // mpu
                                                // 2³² bytes/s and more: saturated here, the exact rate in TCA_HTB_*64.
    out.extend_from_slice(&u32::try_from(rate).unwrap_or(u32::MAX).to_ne_bytes());
}

/// The time to send `bytes` at `rate` bytes per second, in scheduler
/// ticks (what `tc_calc_xmittime` computes), saturated.
fn ticks(bytes: u32, rate: u64) -> u32 {
    let ns = u128::from(bytes) * 1_000_000_000 / u128::from(rate.max(1));
    u32::try_from(ns / u128::from(NS_PER_TICK)).unwrap_or(u32::MAX)
}

impl RouteNetlink {
    /// Adds `qdisc` (`EEXIST` if the interface has one there, other than
    /// the kernel's default).
    pub async fn add_qdisc(&self, qdisc: &Qdisc) -> Result<(), RouteError> {
        self.request(
            &RouteOp::AddQdisc(*qdisc),
            RouteNetlinkMessage::NewQueueDiscipline(qdisc.message()),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map(drop)
    }

    /// Deletes interface `ifindex`'s root qdisc, and with it its classes
    /// and child qdiscs (`tc qdisc del dev DEV root`); `ENOENT` when it has
    /// only the kernel's default.
    pub async fn delete_root_qdisc(&self, ifindex: u32) -> Result<(), RouteError> {
        let m = tc_message(ifindex, Handle::new(0, 0), TcHandle::ROOT);
        self.request(
            &RouteOp::DeleteRootQdisc(ifindex),
            RouteNetlinkMessage::DelQueueDiscipline(m),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .await
        .map(drop)
    }

    /// Adds htb class `class` (`EEXIST` if its id is taken).
    pub async fn add_htb_class(&self, class: &HtbClass) -> Result<(), RouteError> {
        self.request(
            &RouteOp::AddClass(*class),
            RouteNetlinkMessage::NewTrafficClass(class.message()),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    /// The `TCA_HTB_PARMS` payload of `tc class add dev X parent 1:
    /// classid 1:10 htb rate 8000kbit ceil 8000kbit quantum 1514`, as
    /// strace showed it (little-endian host).
    const TC_PARMS_8000KBIT: [u8; 44] = [
        0x03, 0x01, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x40, 0x42, 0x0f, 0x00, // rate
        0x03, 0x01, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x40, 0x42, 0x0f, 0x00, // ceil
        0xa8, 0x61, 0x00, 0x00, 0xa8, 0x61, 0x00, 0x00, // buffer, cbuffer: 25000 ticks
        0xea, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // quantum
    ];

    fn class_8000() -> HtbClass {
        HtbClass::kbit(3, Handle::new(1, 0), Handle::new(1, 0x10), 8000, 8000).with_quantum(1514)
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn htb_class_parameters_are_what_tc_sends() {
        assert_eq!(class_8000().parms(), TC_PARMS_8000KBIT);
    }

    #[test]
    fn htb_class_message_has_kind_handles_and_no_64_bit_rates_below_4_gbytes() {
        let m = class_8000().message();
        assert_eq!(m.header.index, 3);
        assert_eq!(u32::from(m.header.handle), 0x0001_0010);
        assert_eq!(u32::from(m.header.parent), 0x0001_0000);
        assert!(m.attributes.contains(&TcAttribute::Kind("htb".into())));
        let Some(TcAttribute::Options(opts)) = m
            .attributes
            .iter()
            .find(|a| matches!(a, TcAttribute::Options(_)))
        else {
            panic!("no options: {m:?}");
        };
        assert_eq!(opts.len(), 1);
        // 10 GB/s needs the 64-bit attributes and saturates the 32-bit field.
        let fast = HtbClass::kbit(
            3,
            Handle::new(1, 0),
            Handle::new(1, 0x10),
            80_000_000,
            80_000_000,
        );
        assert_eq!(&fast.parms()[8..12], &u32::MAX.to_ne_bytes());
        let m = fast.message();
        let Some(TcAttribute::Options(opts)) = m.attributes.last() else {
            panic!("{m:?}");
        };
        assert_eq!(opts.len(), 3);
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
    }

    #[test]
    fn htb_qdisc_and_bfifo_options() {
        let htb = Qdisc {
            ifindex: 4,
            parent: Parent::Root,
            handle: Handle::new(1, 0),
            kind: QdiscKind::Htb {
                default_class: 0x10,
            },
        };
        let m = htb.message();
        assert_eq!(u32::from(m.header.parent), u32::MAX);
        let glob: Vec<u8> = [3u32, 10, 0x10, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        assert!(m
            .attributes
            .contains(&TcAttribute::Options(vec![TcOption::Other(
                DefaultNla::new(TCA_HTB_INIT, glob)
            )])));
        assert_eq!(htb.to_string(), "dev #4 root handle 1:0 htb default 10");
        let fifo = Qdisc {
            ifindex: 4,
            parent: Parent::Class(Handle::new(1, 0x10)),
            handle: Handle::new(0x10, 0),
            kind: QdiscKind::Bfifo {
                limit_bytes: 50_000,
            },
        };
        let m = fifo.message();
        assert_eq!(u32::from(m.header.parent), 0x0001_0010);
        assert!(m.attributes.contains(&TcAttribute::Other(DefaultNla::new(
            TCA_OPTIONS,
            50_000u32.to_ne_bytes().to_vec()
        ))));
        assert_eq!(
            fifo.to_string(),
            "dev #4 parent 1:10 handle 10:0 bfifo limit 50000"
        );
    }

    #[test]
    fn ticks_match_tc_and_saturate() {
        assert_eq!(ticks(1600, 1_000_000), 25_000);
        assert_eq!(ticks(u32::MAX, 1), u32::MAX);
        assert_eq!(ticks(1600, 0), u32::MAX);
    }
}
