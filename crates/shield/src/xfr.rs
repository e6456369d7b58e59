//! Zone transfers of RPZ feeds: AXFR first, then IXFR (RFC 1995) with the
//! serial we hold, over TCP. The reply stream is read into a [`Transfer`];
//! [`apply`] turns it into a new [`NameSet`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::feeds::{rpz_change, rpz_from_records, LoadStats};
use crate::names::{Change, NameSet};
use crate::upstream::read_tcp_message;

/// Records in one transfer at most (a bound on memory).
const MAX_RECORDS: usize = 20_000_000;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum XfrError {
    /// Network failure or timeout.
    #[error("transfer from {primary}: {source}")]
    Io {
        /// The primary.
        primary: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The primary refused or sent something that is not a transfer.
    #[error("transfer from {primary}: {message}")]
    Protocol {
        /// The primary.
        primary: SocketAddr,
        /// What was wrong.
        message: String,
    },
}

/// What a transfer brought.
#[derive(Debug)]
pub enum Transfer {
    /// Our serial is current.
    UpToDate,
    /// The whole zone (AXFR, or IXFR answered with a full zone).
    Full {
        /// The zone's serial.
        soa: SOA,
        /// Every record but the SOAs.
        records: Vec<Record>,
    },
    /// Differences (IXFR): for each, the records removed then added.
    Incremental {
        /// The new serial.
        soa: SOA,
        /// (deleted, added) per difference sequence, oldest first.
        diffs: Vec<(Vec<Record>, Vec<Record>)>,
    },
}

fn soa_of(r: &Record) -> Option<&SOA> {
    match &r.data {
        RData::SOA(s) => Some(s),
        _ => None,
    }
}

/// Transfers `zone` from `primary`: IXFR from `serial` if we hold one,
/// AXFR otherwise.
pub async fn transfer(
    primary: SocketAddr,
    zone: &str,
    serial: Option<u32>,
    timeout: Duration,
) -> Result<Transfer, XfrError> {
    let io = |source| XfrError::Io { primary, source };
    let proto = |message: String| XfrError::Protocol { primary, message };
    let origin = Name::from_ascii(format!("{zone}.")).map_err(|e| proto(e.to_string()))?;
    let mut m = Message::query();
    let id = m.metadata.id;
    m.metadata.op_code = OpCode::Query;
    let qtype = if serial.is_some() {
        RecordType::IXFR
    } else {
        RecordType::AXFR
    };
    m.add_query(Query::query(origin.clone(), qtype));
    if let Some(s) = serial {
        m.add_authority(Record::from_rdata(
            origin.clone(),
            0,
            RData::SOA(SOA::new(Name::root(), Name::root(), s, 0, 0, 0, 0)),
        ));
    }
    let bytes = m.to_vec().map_err(|e| proto(e.to_string()))?;
    let run = async {
        let mut s = TcpStream::connect(primary).await.map_err(io)?;
        let mut out = Vec::with_capacity(bytes.len() + 2);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(&bytes);
        s.write_all(&out).await.map_err(io)?;
        let mut reader = StreamReader::new(qtype == RecordType::IXFR);
        loop {
            let msg = read_tcp_message(&mut s).await.map_err(io)?;
            if msg.metadata.id != id {
                return Err(proto("answer with another ID".into()));
            }
            if msg.metadata.response_code != ResponseCode::NoError {
                return Err(proto(format!(
                    "primary answered {}",
                    msg.metadata.response_code
                )));
            }
            for r in msg.answers {
                if reader.push(r).map_err(&proto)? {
                    return reader.finish(serial).map_err(&proto);
                }
            }
            if reader.count == 1 && reader.ixfr {
                // A single SOA in its own message: up to date (RFC 1995 §4).
                if let Some(t) = reader.single_soa(serial) {
                    return Ok(t);
                }
            }
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| io(std::io::Error::new(std::io::ErrorKind::TimedOut, "timeout")))?
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    First,
    Decide,
    Axfr,
    Deleting,
    Adding,
}

/// Reads the record stream of an AXFR or IXFR reply.
#[derive(Debug)]
struct StreamReader {
    ixfr: bool,
    phase: Phase,
    count: usize,
    soa: Option<SOA>,
    records: Vec<Record>,
    diffs: Vec<(Vec<Record>, Vec<Record>)>,
}

impl StreamReader {
    fn new(ixfr: bool) -> Self {
        Self {
            ixfr,
            phase: Phase::First,
            count: 0,
            soa: None,
            records: Vec::new(),
            diffs: Vec::new(),
        }
    }

    fn single_soa(&self, serial: Option<u32>) -> Option<Transfer> {
        let s = self.soa.as_ref()?;
        (Some(s.serial) == serial).then_some(Transfer::UpToDate)
    }

    /// Takes one record; true when the stream is complete.
    fn push(&mut self, r: Record) -> Result<bool, String> {
        self.count += 1;
        if self.count > MAX_RECORDS {
            return Err("transfer too large".into());
        }
        let new_serial = self.soa.as_ref().map(|s| s.serial);
        match self.phase {
            Phase::First => {
                let Some(s) = soa_of(&r) else {
                    return Err("transfer does not start with an SOA".into());
                };
                self.soa = Some(s.clone());
                self.phase = Phase::Decide;
                Ok(false)
            }
            Phase::Decide => match soa_of(&r) {
                Some(s) if self.ixfr && Some(s.serial) != new_serial => {
                    self.phase = Phase::Deleting;
                    self.diffs.push((Vec::new(), Vec::new()));
                    Ok(false)
                }
                // The second SOA of an AXFR-style reply: an empty zone.
                Some(_) => Ok(true),
                None => {
                    self.phase = Phase::Axfr;
                    self.records.push(r);
                    Ok(false)
                }
            },
            Phase::Axfr => {
                if soa_of(&r).is_some() {
                    return Ok(true);
                }
                self.records.push(r);
                Ok(false)
            }
            Phase::Deleting => {
                if soa_of(&r).is_some() {
                    self.phase = Phase::Adding;
                } else if let Some(d) = self.diffs.last_mut() {
                    d.0.push(r);
                }
                Ok(false)
            }
            Phase::Adding => match soa_of(&r) {
                Some(s) if Some(s.serial) == new_serial => Ok(true),
                Some(_) => {
                    self.phase = Phase::Deleting;
                    self.diffs.push((Vec::new(), Vec::new()));
                    Ok(false)
                }
                None => {
                    if let Some(d) = self.diffs.last_mut() {
                        d.1.push(r);
                    }
                    Ok(false)
                }
            },
        }
    }

    fn finish(self, serial: Option<u32>) -> Result<Transfer, String> {
        let soa = self.soa.ok_or("no SOA")?;
        match self.phase {
            Phase::Decide if Some(soa.serial) == serial => Ok(Transfer::UpToDate),
            Phase::Adding | Phase::Deleting => Ok(Transfer::Incremental {
                soa,
                diffs: self.diffs,
            }),
            _ => Ok(Transfer::Full {
                soa,
                records: self.records,
            }),
        }
    }
}

/// The set after a transfer; `None` when up to date.
pub fn apply(current: &NameSet, t: &Transfer, zone: &str) -> Option<(NameSet, LoadStats)> {
    match t {
        Transfer::UpToDate => None,
        Transfer::Full { records, .. } => Some(rpz_from_records(records, zone)),
        Transfer::Incremental { diffs, .. } => {
            let mut changes: BTreeMap<String, Change> = BTreeMap::new();
            let mut stats = LoadStats::default();
            for (del, add) in diffs {
                for r in del {
                    if !rpz_change(&mut changes, r, zone, false) {
                        stats.skipped += 1;
                    }
                }
                for r in add {
                    if rpz_change(&mut changes, r, zone, true) {
                        stats.entries += 1;
                    } else {
                        stats.skipped += 1;
                    }
                }
            }
            Some((current.apply(&changes), stats))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::CNAME;

    fn soa(serial: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii("rpz.test.").unwrap(),
            60,
            RData::SOA(SOA::new(Name::root(), Name::root(), serial, 1, 1, 1, 1)),
        )
    }
    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(
            Name::from_ascii(owner).unwrap(),
            60,
            RData::CNAME(CNAME(Name::from_ascii(target).unwrap())),
        )
    }

    fn read(ixfr: bool, serial: Option<u32>, rs: Vec<Record>) -> Transfer {
        let mut r = StreamReader::new(ixfr);
        for x in rs {
            if r.push(x).unwrap() {
                return r.finish(serial).unwrap();
            }
        }
        panic!("stream not complete");
    }

    #[test]
    fn axfr_and_ixfr_streams() {
        let t = read(false, None, vec![soa(5), cname("a.rpz.test.", "."), soa(5)]);
        let (set, _) = apply(&NameSet::default(), &t, "rpz.test").unwrap();
        assert!(set.lookup("a").is_some());

        let t = read(
            true,
            Some(5),
            vec![
                soa(7),
                soa(5),
                cname("a.rpz.test.", "."),
                soa(6),
                cname("b.rpz.test.", "*."),
                soa(6),
                soa(7),
                cname("c.rpz.test.", "rpz-drop."),
                soa(7),
            ],
        );
        assert!(matches!(&t, Transfer::Incremental { diffs, .. } if diffs.len() == 2));
        let (set2, st) = apply(&set, &t, "rpz.test").unwrap();
        assert_eq!(st.entries, 2);
        let names: Vec<_> = set2.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, vec!["b", "c"]);

        let mut r = StreamReader::new(true);
        assert!(!r.push(soa(7)).unwrap());
        assert!(matches!(r.single_soa(Some(7)), Some(Transfer::UpToDate)));
    }
}
