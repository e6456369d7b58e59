//! `tandem demo`: one download over the fixed line alone, the mobile link
//! alone and through Tandem, on the lab, with progress bars.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lab::topology::{addr, link_bytes, ns, ORIGIN_PORT};
use lab::Link;

/// One download through Tandem must reach this share of the fixed line alone
/// plus the mobile link alone, measured in the same run.
const TARGET: f64 = 0.90;

/// Tears the lab down when dropped (also on error or panic).
struct LabGuard(String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = lab::down(&self.0) {
            eprintln!("tearing the lab down: {e}");
        }
    }
}

/// One finished download.
pub(crate) struct Fetch {
    /// Bytes received.
    pub(crate) bytes: u64,
    /// Goodput, Mbit/s.
    pub(crate) mbit: f64,
    /// Bytes that crossed each link downwards during it: (dsl, lte).
    pub(crate) per_link: (u64, u64),
}

fn down_bytes(name: &str) -> (u64, u64) {
    let d = link_bytes(name, Link::Dsl).map(|x| x.0).unwrap_or(0);
    let l = link_bytes(name, Link::Lte).map(|x| x.0).unwrap_or(0);
    (d, l)
}

fn bar(label: &str, frac: f64, mbit: f64) {
    let width = 30;
    let filled = ((frac.clamp(0.0, 1.0)) * width as f64).round() as usize;
    print!(
        "\r  {label:<18} [{}{}] {:>3.0}% {:>6.1} Mbit/s",
        "#".repeat(filled),
        " ".repeat(width - filled),
        frac.clamp(0.0, 1.0) * 100.0,
        mbit
    );
    let _ = std::io::stdout().flush();
}

/// Downloads `size` bytes from the origin with curl inside `node`, optionally
/// from a source address, drawing a progress bar from the link counters.
pub(crate) fn fetch(
    name: &str,
    node: &str,
    source: Option<&str>,
    size: u64,
    label: &str,
) -> Result<Fetch> {
    let url = format!("http://{}:{ORIGIN_PORT}/bytes/{size}", addr::ORIGIN);
    let mut args = vec![
        "curl".to_string(),
        "-sS".into(),
        "--fail".into(),
        "--max-time".into(),
        "300".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{size_download} %{time_total}".into(),
    ];
    if let Some(src) = source {
        args.push("--interface".into());
        args.push(src.into());
    }
    args.push(url);
    let before = down_bytes(name);
    let start = Instant::now();
    let mut child = lab::cmd::in_ns(&ns(name, node), &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting curl")?;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        let now = down_bytes(name);
        let got = (now.0 - before.0) + (now.1 - before.1);
        let secs = start.elapsed().as_secs_f64().max(0.001);
        bar(
            label,
            got as f64 / size as f64,
            got as f64 * 8.0 / secs / 1e6,
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output()?;
    let after = down_bytes(name);
    if !out.status.success() {
        println!();
        bail!(
            "curl in {node} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let bytes: u64 = it
        .next()
        .and_then(|v| v.parse().ok())
        .context("curl size")?;
    let secs: f64 = it
        .next()
        .and_then(|v| v.parse().ok())
        .context("curl time")?;
    if bytes != size {
        println!();
        bail!("curl in {node} received {bytes} bytes of {size}");
    }
    let mbit = bytes as f64 * 8.0 / secs.max(0.001) / 1e6;
    bar(label, 1.0, mbit);
    println!();
    Ok(Fetch {
        bytes,
        mbit,
        per_link: (after.0 - before.0, after.1 - before.1),
    })
}

fn share_bar(frac: f64) -> String {
    "█".repeat((frac * 20.0).round() as usize)
}

/// Runs the demo.
pub(crate) fn run(profile: &str, name: &str, seconds: u64) -> Result<()> {
    let p = lab::profile::by_name(profile).with_context(|| {
        format!(
            "unknown profile {profile:?}; known: {}",
            lab::profile::NAMES.join(", ")
        )
    })?;
    println!(
        "Tandem demo, profile {profile}: fixed line (DSL) {}/{} Mbit/s {} ms, mobile (LTE) {}/{} Mbit/s {} ms",
        p.dsl.down_kbit / 1000,
        p.dsl.up_kbit / 1000,
        p.dsl.rtt_ms,
        p.lte.down_kbit / 1000,
        p.lte.up_kbit / 1000,
        p.lte.rtt_ms
    );
    let lab_name = name.to_string();
    crate::clean_up_on_signal(move || {
        if let Err(e) = lab::down(&lab_name) {
            eprintln!("tearing the lab down: {e}");
        }
    });
    println!("Building the lab (namespaces, shaped links, emulators, HAG, CPE)...");
    let _ = lab::down(name);
    lab::up(&lab::UpOptions {
        name: name.to_string(),
        profile_name: profile.to_string(),
        profile: p,
        tandem: true,
        shield: false,
        exe: std::env::current_exe()?,
        street: lab::street::Street::default(),
        mobile_budget: None,
    })?;
    let _guard = LabGuard(name.to_string());
    let size = |kbit: u64| kbit * 1000 / 8 * seconds;
    println!("Downloading from the \"internet\" server:");
    let dsl = fetch(
        name,
        "cpe",
        Some(&addr::CPE_DSL.to_string()),
        size(p.dsl.down_kbit),
        "fixed line alone",
    )?;
    let lte = fetch(
        name,
        "cpe",
        Some(&addr::CPE_LTE.to_string()),
        size(p.lte.down_kbit),
        "mobile alone",
    )?;
    let both = fetch(
        name,
        "home",
        None,
        size(p.dsl.down_kbit + p.lte.down_kbit),
        "through Tandem",
    )?;
    let total = (both.per_link.0 + both.per_link.1).max(1) as f64;
    let (fd, fl) = (
        both.per_link.0 as f64 / total,
        both.per_link.1 as f64 / total,
    );
    println!(
        "  link share through Tandem: fixed {:>3.0}% {}\n                             mobile {:>3.0}% {}",
        fd * 100.0,
        share_bar(fd),
        fl * 100.0,
        share_bar(fl)
    );
    let sum = dsl.mbit + lte.mbit;
    let ratio = both.mbit / sum;
    let met = ratio >= TARGET;
    println!(
        "Tandem: {:.1} Mbit/s = {:.0}% of fixed alone + mobile alone ({:.1} + {:.1} = {:.1} Mbit/s), {} bytes, one connection. Target: at least {:.0}%: {}.",
        both.mbit,
        ratio * 100.0,
        dsl.mbit,
        lte.mbit,
        sum,
        both.bytes,
        TARGET * 100.0,
        if met { "met" } else { "MISSED" }
    );
    println!("Tearing the lab down.");
    if !met {
        bail!(
            "one download through Tandem reached {:.0}% of the two links alone, under the {:.0}% target",
            ratio * 100.0,
            TARGET * 100.0
        );
    }
    Ok(())
}
