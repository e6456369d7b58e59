//! Feed formats: domain lists, hosts files and RPZ zones, read into a
//! [`NameSet`](crate::names::NameSet).
//!
//! RPZ (draft-vixie-dnsop-dns-rpz): only QNAME triggers are supported. The
//! owner name relative to the zone origin is the trigger (`*.name` for its
//! subdomains); the action comes from the record: `CNAME .` NXDOMAIN,
//! `CNAME *.` NODATA, `CNAME rpz-passthru.` PASSTHRU, `CNAME rpz-drop.` DROP;
//! any other record (local data: A, AAAA, a CNAME elsewhere) redirects to
//! the warning page. Response-IP, NSDNAME, NSIP and client-IP triggers and
//! `rpz-tcp-only.` are skipped and counted.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::config::{normalize_domain, ListConfig, ListKind};
use crate::names::{Builder, Change, Meta, NameSet};
use crate::policy::Action;

/// A feed that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The zone file is not valid.
    #[error("parsing RPZ zone {path}: {message}")]
    Zone {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

/// What a load produced besides the set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Entries accepted.
    pub entries: usize,
    /// Lines or records skipped (invalid names, unsupported triggers).
    pub skipped: usize,
}

fn meta_for(action: Action, subtree: bool) -> Meta {
    if subtree {
        Meta {
            exact: None,
            subtree: Some(action),
        }
    } else {
        Meta {
            exact: Some(action),
            subtree: None,
        }
    }
}

/// Adds one domain-list token (`name` or `*.name`).
fn push_domain(b: &mut Builder, token: &str, action: Action, subdomains: bool) -> bool {
    let (subtree, name) = match token.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, token),
    };
    let Some(n) = normalize_domain(name) else {
        return false;
    };
    if subtree {
        b.push(n.as_bytes(), meta_for(action, true));
    } else if subdomains {
        b.push(
            n.as_bytes(),
            Meta {
                exact: Some(action),
                subtree: Some(action),
            },
        );
    } else {
        b.push(n.as_bytes(), meta_for(action, false));
    }
    true
}

/// Reads a domain list or a hosts file, line by line (no whole-file copy).
pub fn read_lines(
    r: impl BufRead,
    kind: ListKind,
    action: Action,
    subdomains: bool,
) -> std::io::Result<(NameSet, LoadStats)> {
    let mut b = Builder::default();
    let mut stats = LoadStats::default();
    let mut r = r;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        match kind {
            ListKind::Hosts => {
                let mut it = content.split_whitespace();
                let Some(addr) = it.next() else { continue };
                if addr.parse::<std::net::IpAddr>().is_err() {
                    stats.skipped += 1;
                    continue;
                }
                for host in it {
                    if matches!(
                        host,
                        "localhost"
                            | "localhost.localdomain"
                            | "local"
                            | "broadcasthost"
                            | "ip6-localhost"
                            | "ip6-loopback"
                            | "ip6-localnet"
                            | "ip6-mcastprefix"
                            | "ip6-allnodes"
                            | "ip6-allrouters"
                            | "ip6-allhosts"
                            | "0.0.0.0"
                    ) {
                        continue;
                    }
                    if push_domain(&mut b, host, action, subdomains) {
                        stats.entries += 1;
                    } else {
                        stats.skipped += 1;
                    }
                }
            }
            _ => {
                let token = content.split_whitespace().next().unwrap_or("");
                if push_domain(&mut b, token, action, subdomains) {
                    stats.entries += 1;
                } else {
                    stats.skipped += 1;
                }
            }
        }
    }
    Ok((b.finish(), stats))
}

/// The RPZ meaning of one record of zone `origin` (lowercase, no final
/// dot): the trigger name, whether it is a subtree trigger, and the action.
/// `None` for the apex, unsupported triggers and `rpz-tcp-only.`.
pub fn rpz_trigger(record: &Record, origin: &str) -> Option<(String, bool, Action)> {
    let owner = record.name.to_lowercase().to_ascii();
    let owner = owner.trim_end_matches('.');
    let rel = owner.strip_suffix(origin)?.strip_suffix('.')?;
    if rel.is_empty() {
        return None;
    }
    let last = rel.rsplit('.').next().unwrap_or("");
    if matches!(
        last,
        "rpz-ip" | "rpz-nsdname" | "rpz-nsip" | "rpz-client-ip"
    ) {
        return None;
    }
    let (subtree, name) = match rel.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None if rel == "*" => return None,
        None => (false, rel),
    };
    let action = match (&record.data, record.record_type()) {
        (_, RecordType::SOA | RecordType::NS) => return None,
        (RData::CNAME(c), _) => {
            let t = c.0.to_lowercase().to_ascii();
            match t.as_str() {
                "." => Action::Nxdomain,
                "*." => Action::Nodata,
                "rpz-passthru." => Action::Passthru,
                "rpz-drop." => Action::Drop,
                "rpz-tcp-only." => return None,
                _ => Action::Redirect,
            }
        }
        _ => Action::Redirect,
    };
    Some((name.to_string(), subtree, action))
}

/// Builds a set from the records of a whole RPZ zone.
pub fn rpz_from_records<'r>(
    records: impl IntoIterator<Item = &'r Record>,
    origin: &str,
) -> (NameSet, LoadStats) {
    let mut b = Builder::default();
    let mut stats = LoadStats::default();
    for r in records {
        if matches!(r.record_type(), RecordType::SOA | RecordType::NS) {
            continue;
        }
        match rpz_trigger(r, origin) {
            Some((name, subtree, action)) => {
                b.push(name.as_bytes(), meta_for(action, subtree));
                stats.entries += 1;
            }
            None => stats.skipped += 1,
        }
    }
    (b.finish(), stats)
}

/// Adds the change one IXFR record makes to `changes`.
pub fn rpz_change(
    changes: &mut BTreeMap<String, Change>,
    record: &Record,
    origin: &str,
    added: bool,
) -> bool {
    let Some((name, subtree, action)) = rpz_trigger(record, origin) else {
        return false;
    };
    let v = if added { Some(action) } else { None };
    let c = if subtree {
        Change {
            exact: None,
            subtree: Some(v),
        }
    } else {
        Change {
            exact: Some(v),
            subtree: None,
        }
    };
    let e = changes.entry(name).or_default();
    *e = e.then(c);
    true
}

/// Reads an RPZ zone file. `origin` is used when the file sets none.
pub fn read_rpz_file(path: &Path, origin: Option<&str>) -> Result<(NameSet, LoadStats), FeedError> {
    let text = std::fs::read_to_string(path).map_err(|source| FeedError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let origin_name = match origin {
        Some(o) => Some(Name::from_ascii(o).map_err(|e| FeedError::Zone {
            path: path.display().to_string(),
            message: e.to_string(),
        })?),
        None => None,
    };
    let parser =
        hickory_proto::serialize::txt::Parser::new(text, Some(path.to_path_buf()), origin_name);
    let (origin, sets) = parser.parse().map_err(|e| FeedError::Zone {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let o = origin.to_lowercase().to_ascii();
    let o = o.trim_end_matches('.');
    Ok(rpz_from_records(
        sets.values().flat_map(|s| s.records_without_rrsigs()),
        o,
    ))
}

/// Loads a file list of any kind.
pub fn load_file(cfg: &ListConfig, path: &Path) -> Result<(NameSet, LoadStats), FeedError> {
    match cfg.kind {
        ListKind::Rpz => read_rpz_file(path, cfg.rpz_origin.as_deref()),
        kind => {
            let f = std::fs::File::open(path).map_err(|source| FeedError::Read {
                path: path.display().to_string(),
                source,
            })?;
            read_lines(
                std::io::BufReader::with_capacity(64 * 1024, f),
                kind,
                cfg.action,
                cfg.include_subdomains,
            )
            .map_err(|source| FeedError::Read {
                path: path.display().to_string(),
                source,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_list_and_hosts() {
        let text = "# feed\nEvil.Example.\n*.bad.test  # subtree\nbad..name\n\n";
        let (s, st) =
            read_lines(text.as_bytes(), ListKind::Domains, Action::Nxdomain, false).unwrap();
        assert_eq!(
            st,
            LoadStats {
                entries: 2,
                skipped: 1
            }
        );
        assert_eq!(
            s.lookup("evil.example").map(|x| x.0),
            Some(Action::Nxdomain)
        );
        assert_eq!(s.lookup("www.evil.example"), None);
        assert_eq!(s.lookup("x.bad.test").map(|x| x.0), Some(Action::Nxdomain));
        assert_eq!(s.lookup("bad.test"), None);

        let hosts = "127.0.0.1 localhost\n0.0.0.0 a.test b.test\n::1 ip6-localhost\nbogus line\n";
        let (s, st) =
            read_lines(hosts.as_bytes(), ListKind::Hosts, Action::Redirect, true).unwrap();
        assert_eq!(
            st,
            LoadStats {
                entries: 2,
                skipped: 1
            }
        );
        assert!(s.lookup("www.a.test").is_some());
        assert!(s.lookup("localhost").is_none());
    }

    #[test]
    fn rpz_zone_file_actions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let p = dir.join("rpz.zone");
        std::fs::write(
            &p,
            "$ORIGIN rpz.test.\n$TTL 60\n@ SOA ns. admin. 1 3600 600 86400 60\n@ NS ns.\n\
             nx.example CNAME .\nnodata.example CNAME *.\n*.wild.example CNAME .\n\
             ok.wild.example CNAME rpz-passthru.\ndrop.example CNAME rpz-drop.\n\
             local.example A 192.0.2.1\n32.1.2.0.192.rpz-ip CNAME .\n",
        )
        .unwrap();
        let (s, st) = read_rpz_file(&p, None).unwrap();
        assert_eq!(
            st,
            LoadStats {
                entries: 6,
                skipped: 1
            }
        );
        let a = |n: &str| s.lookup(n).map(|x| x.0);
        assert_eq!(a("nx.example"), Some(Action::Nxdomain));
        assert_eq!(a("nodata.example"), Some(Action::Nodata));
        assert_eq!(a("x.wild.example"), Some(Action::Nxdomain));
        assert_eq!(a("wild.example"), None);
        assert_eq!(a("ok.wild.example"), Some(Action::Passthru));
        assert_eq!(a("drop.example"), Some(Action::Drop));
        assert_eq!(a("local.example"), Some(Action::Redirect));
    }
}
