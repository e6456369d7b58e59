//! `tandem ops tls-init`: a private CA for an operator's fleet and ops'
//! certificate signed by it, so TLS between the CPEs, the HAGs and ops
//! needs no outside CA. The CA's certificate is what senders trust (`ca` in
//! their `[telemetry]`); ops serves its own certificate and key
//! (`api.tls_cert`, `api.tls_key`). Run again with the CA present, it
//! issues a fresh certificate for ops from the same CA (a renewal, or new
//! names) and leaves the CA alone, so the fleet's trust does not change.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The files [`init`] writes into its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// The CA's certificate (what CPEs and HAGs trust).
    pub ca_cert: PathBuf,
    /// The CA's key (keep it off ops' host once the fleet is set up).
    pub ca_key: PathBuf,
    /// Ops' certificate, signed by the CA.
    pub cert: PathBuf,
    /// Ops' key.
    pub key: PathBuf,
    /// Whether the CA was created now (not found in the directory).
    pub new_ca: bool,
}

const CA_NAME: &str = "Tandem ops CA";

fn ca_params() -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// The date `days` from today (UTC): year, month, day.
fn day(days: i64) -> Result<(i32, u8, u8), String> {
    let d = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(24 * days))
        .map_err(|e| e.to_string())?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    Ok((
        i32::from(d.year()),
        u8::try_from(d.month()).map_err(|e| e.to_string())?,
        u8::try_from(d.day()).map_err(|e| e.to_string())?,
    ))
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes (or reuses) the CA in `dir` and a certificate for ops valid for
/// `names` (DNS names or IP addresses: what the senders' `host` says, or
/// ops' address) for `days` days.
pub fn init(dir: &Path, names: &[String], days: u32) -> Result<Files, String> {
    if names.is_empty() {
        return Err("ops' certificate needs at least one name (--name)".into());
    }
    if !(1..=3650).contains(&days) {
        return Err("--days must be 1..=3650".into());
    }
    for n in names {
        if rustls::pki_types::ServerName::try_from(n.as_str()).is_err() {
            return Err(format!("{n:?} is not a DNS name or an IP address"));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let files = Files {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        cert: dir.join("ops.pem"),
        key: dir.join("ops.key"),
        new_ca: !dir.join("ca.key").exists(),
    };
    let ca_key = if files.new_ca {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut p = ca_params()?;
        let (y, m, d) = day(-1)?;
        p.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = day(3650)?;
        p.not_after = rcgen::date_time_ymd(y, m, d);
        let cert = p.self_signed(&key).map_err(|e| e.to_string())?;
        write(&files.ca_key, &key.serialize_pem(), true)?;
        write(&files.ca_cert, &cert.pem(), false)?;
        key
    } else {
        let pem = std::fs::read_to_string(&files.ca_key)
            .map_err(|e| format!("{}: {e}", files.ca_key.display()))?;
        KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", files.ca_key.display()))?
    };
    // The CA's name and usages, as its certificate has them: what an
    // issued certificate's issuer must say.
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut p = CertificateParams::new(names.to_vec()).map_err(|e| e.to_string())?;
    p.distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    let (y, m, d) = day(-1)?;
    p.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = day(i64::from(days))?;
    p.not_after = rcgen::date_time_ymd(y, m, d);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = p.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    write(&files.key, &key.serialize_pem(), true)?;
    write(&files.cert, &cert.pem(), false)?;
    Ok(files)
}
