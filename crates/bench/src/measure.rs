//! The scenarios on the lab: bulk goodput, time to first byte and to fetch
//! a small object, a web-like page load, latency under load, and failover.
//! Every client is a real `curl` (under `mptcpize`, through SOCKS5, or
//! diverted by the CPE, depending on the contender).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hybrid::{Link, SteeringMode};
use lab::profile::Profile;
use lab::topology::ns;
use lab::LinkAction;

use hybrid::Direction;

use crate::contender::{ClientPath, Contender};
use crate::exec::kill_all;
use crate::meter::{Counters, Meter, Progress, Sample};
use crate::stats::{median, percentile};
use crate::Plan;

/// curl's `-w` line, parsed by [`parse_bench`].
const WFMT: &str = "\\nBENCH %{http_code} %{size_download} %{size_upload} %{time_pretransfer} %{time_starttransfer} %{time_total}\\n";

/// Size of the "small object" of the time-to-fetch measure.
pub(crate) const SMALL_OBJECT: u64 = 10_000;

/// What curl reported for one transfer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct CurlTimes {
    pub(crate) code: u32,
    pub(crate) down: u64,
    pub(crate) up: u64,
    pub(crate) pretransfer: f64,
    pub(crate) starttransfer: f64,
    pub(crate) total: f64,
}

/// The `BENCH` lines of curl's output, in order.
pub(crate) fn parse_bench(stdout: &str) -> Vec<CurlTimes> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("BENCH "))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(CurlTimes {
                code: f.first()?.parse().ok()?,
                down: f.get(1)?.parse().ok()?,
                up: f.get(2)?.parse().ok()?,
                pretransfer: f.get(3)?.parse().ok()?,
                starttransfer: f.get(4)?.parse().ok()?,
                total: f.get(5)?.parse().ok()?,
            })
        })
        .collect()
}

/// State shared by the scenarios of one profile.
pub(crate) struct Ctx<'a> {
    pub(crate) lab: String,
    pub(crate) profile: Profile,
    pub(crate) plan: &'a Plan,
    pub(crate) meter: Meter,
    pub(crate) progress: Progress,
    pub(crate) tmp: PathBuf,
    upload_files: HashMap<u64, (PathBuf, String)>,
    /// What failed, in words (a failed run is left out of the figures).
    pub(crate) errors: Vec<String>,
    /// The lab CPE's steering mode now (`None`: as the lab started it).
    steering: Option<SteeringMode>,
}

impl Ctx<'_> {
    /// Puts the lab CPE in `c`'s steering mode when `c` is a Tandem
    /// contender and the CPE runs another mode.
    pub(crate) fn prepare(&mut self, c: &Contender) -> Result<(), String> {
        use crate::contender::Kind;
        let wanted = match &c.kind {
            Kind::Tandem(m) => m.mode,
            // Contenders 3 and 4 run in the CPE node and share its MPTCP
            // endpoints: they are measured with both links at regular
            // priority (no backup flag), as the kernel's default has them.
            Kind::MptcpEndToEnd | Kind::Shadowsocks => SteeringMode::Aggregate,
            _ => return Ok(()),
        };
        if self.steering == Some(wanted) {
            return Ok(());
        }
        lab::topology::set_steering(&self.lab, wanted)
            .map_err(|e| format!("steering {wanted}: {e}"))?;
        self.steering = Some(wanted);
        // Let the mode's endpoint priorities reach the HAG (MP_PRIO).
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        lab: &str,
        profile: Profile,
        plan: &'a Plan,
        progress: Progress,
        tmp: PathBuf,
    ) -> Self {
        Self {
            lab: lab.to_string(),
            profile,
            plan,
            meter: Meter::new(lab),
            progress,
            tmp,
            upload_files: HashMap::new(),
            errors: Vec::new(),
            steering: None,
        }
    }

    fn curl(&self, path: &ClientPath, max_secs: f64, args: &[String]) -> Command {
        let mut argv: Vec<String> = path.prefix.clone();
        argv.push("curl".into());
        argv.extend(
            [
                "-sS",
                "--fail",
                "-H",
                "Expect:",
                "--max-time",
                &format!("{:.0}", max_secs.ceil().max(1.0)),
            ]
            .map(String::from),
        );
        argv.extend(path.curl.iter().cloned());
        argv.extend(args.iter().cloned());
        lab::cmd::in_ns(&ns(&self.lab, path.node), &argv)
    }

    /// A file of `len` pattern bytes to upload, and the SHA-256 the origin
    /// must answer for it.
    fn upload_file(&mut self, len: u64) -> Result<(PathBuf, String), String> {
        if let Some(f) = self.upload_files.get(&len) {
            return Ok(f.clone());
        }
        let path = self.tmp.join(format!("upload-{len}"));
        let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        while off < len {
            let n = ((len - off) as usize).min(buf.len());
            lab::origin::fill(off, &mut buf[..n]);
            f.write_all(&buf[..n])
                .map_err(|e| format!("{}: {e}", path.display()))?;
            off += n as u64;
        }
        let entry = (path, lab::origin::expected_sha256(len));
        self.upload_files.insert(len, entry.clone());
        Ok(entry)
    }

    pub(crate) fn fail(&mut self, what: String) {
        self.progress.finish(&format!("FAILED: {what}"));
        self.errors.push(what);
    }
}

fn spawn_piped(mut cmd: Command) -> Result<Child, String> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting curl: {e}"))
}

fn finish_child(c: Child) -> Result<String, String> {
    let out = c.wait_with_output().map_err(|e| format!("curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_curl(cmd: Command) -> Result<Vec<CurlTimes>, String> {
    let c = spawn_piped(cmd)?;
    Ok(parse_bench(&finish_child(c)?))
}

/// One 100 kB fetch: the contender works (and its path is warm).
pub(crate) fn warmup(ctx: &mut Ctx<'_>, c: &Contender) -> Result<(), String> {
    ctx.prepare(c)?;
    let path = c.client();
    let len = 100_000;
    let args = vec![
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        WFMT.into(),
        path.url(&format!("/bytes/{len}")),
    ];
    match run_curl(ctx.curl(&path, 15.0, &args))?.first() {
        Some(t) if t.down == len => Ok(()),
        Some(t) => Err(format!("received {} of {len} bytes", t.down)),
        None => Err("no timing from curl".into()),
    }
}

/// One bulk transfer (one or more parallel flows).
#[derive(Clone, Debug)]
pub(crate) struct Transfer {
    /// Goodput of all flows together, Mbit/s.
    pub(crate) mbit: f64,
    /// Bytes on each link in the transfer's direction (retransmissions and
    /// headers included).
    pub(crate) link: Counters,
    /// Link counters every 100 ms (when asked for).
    pub(crate) series: Vec<Sample>,
}

fn mbit(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs.max(1e-6) / 1e6
}

/// Moves `seconds` worth of the contender's nominal capacity in `flows`
/// parallel curl transfers, and checks every byte count (and for uploads
/// the origin's SHA-256 of what it received).
pub(crate) fn transfer(
    ctx: &mut Ctx<'_>,
    c: &Contender,
    dir: Direction,
    flows: usize,
    seconds: f64,
    keep_series: bool,
) -> Result<Transfer, String> {
    ctx.prepare(c)?;
    let cap = c.steady_kbit(&ctx.profile, dir);
    let total = (cap as f64 * 1000.0 / 8.0 * seconds) as u64;
    let per_flow = (total / flows as u64).max(64 * 1024);
    let path = c.client();
    let max_secs = seconds * 6.0 + 30.0;
    let upload = match dir {
        Direction::Upstream => Some(ctx.upload_file(per_flow)?),
        Direction::Downstream => None,
    };
    let mut children = Vec::new();
    let before = ctx.meter.read();
    let start = Instant::now();
    for _ in 0..flows {
        let args: Vec<String> = match &upload {
            None => vec![
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                WFMT.into(),
                path.url(&format!("/bytes/{per_flow}")),
            ],
            Some((file, _)) => vec![
                "-T".into(),
                file.display().to_string(),
                "-w".into(),
                WFMT.into(),
                path.url("/upload"),
            ],
        };
        match spawn_piped(ctx.curl(&path, max_secs, &args)) {
            Ok(ch) => children.push(ch),
            Err(e) => {
                kill_all(&mut children);
                return Err(e);
            }
        }
    }
    let mut series = Vec::new();
    loop {
        let mut running = 0;
        for ch in &mut children {
            if matches!(ch.try_wait(), Ok(None)) {
                running += 1;
            }
        }
        let now = ctx.meter.read().since(&before);
        let t = start.elapsed().as_secs_f64();
        if keep_series {
            series.push(Sample { t, c: now });
        }
        let (d, l) = now.dir(dir);
        ctx.progress.update(
            (d + l) as f64 / (per_flow * flows as u64) as f64,
            &format!("{:>6.1} Mbit/s", mbit(d + l, t)),
        );
        if running == 0 {
            break;
        }
        if t > max_secs + 10.0 {
            kill_all(&mut children);
            return Err(format!("{} {} did not end", c.id, dir.transfer_name()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let link = ctx.meter.read().since(&before);
    let mut bytes = 0u64;
    let mut secs = 0f64;
    let mut first_err = None;
    for ch in children {
        let r = finish_child(ch).and_then(|out| {
            let t = parse_bench(&out)
                .into_iter()
                .next()
                .ok_or_else(|| format!("no timing from curl: {out:?}"))?;
            match &upload {
                None if t.down != per_flow => {
                    return Err(format!("received {} of {per_flow} bytes", t.down))
                }
                Some((_, sha)) => {
                    let expect = format!("{sha} {per_flow}");
                    if t.up != per_flow || !out.contains(&expect) {
                        return Err(format!(
                            "upload of {per_flow} bytes: origin answered {:?}",
                            out.lines().next().unwrap_or("")
                        ));
                    }
                }
                None => {}
            }
            Ok(t)
        });
        match r {
            Ok(t) => {
                bytes += per_flow;
                secs = secs.max(t.total);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(format!(
            "{} {} {flows} flow(s): {e}",
            c.id,
            dir.transfer_name()
        ));
    }
    Ok(Transfer {
        mbit: mbit(bytes, secs),
        link,
        series,
    })
}

/// One run's time to first byte and time to fetch the small object, ms
/// (medians of the plan's samples, each on a new connection).
pub(crate) fn ttfb(ctx: &mut Ctx<'_>, c: &Contender) -> Result<(f64, f64), String> {
    ctx.prepare(c)?;
    let path = c.client();
    let n = ctx.plan.ttfb_samples;
    let mut first = Vec::new();
    let mut small = Vec::new();
    for i in 0..n {
        for object in [None, Some(SMALL_OBJECT)] {
            let url = match object {
                None => path.url("/"),
                Some(len) => path.url(&format!("/bytes/{len}")),
            };
            let args = vec![
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                WFMT.into(),
                url,
            ];
            let t = run_curl(ctx.curl(&path, 10.0, &args))
                .map_err(|e| format!("{} time to first byte: {e}", c.id))?;
            let t = t
                .first()
                .ok_or_else(|| format!("{}: no timing from curl", c.id))?;
            match object {
                None => first.push(t.starttransfer * 1000.0),
                Some(len) if t.down == len => small.push(t.total * 1000.0),
                Some(len) => return Err(format!("{}: {} of {len} bytes", c.id, t.down)),
            }
        }
        ctx.progress.update((i + 1) as f64 / n as f64, "");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((median(&first), median(&small)))
}

/// The web-like page: 50 objects of mixed sizes (1 × 600 kB, 4 × 200 kB,
/// 10 × 50 kB, 15 × 15 kB, 20 × 3 kB; 2.19 MB), interleaved.
pub(crate) fn web_objects() -> Vec<u64> {
    let mut base = vec![600_000];
    for (count, size) in [(4, 200_000), (10, 50_000), (15, 15_000), (20, 3_000)] {
        base.extend(std::iter::repeat_n(size, count));
    }
    // A fixed interleaving (17 and 50 are coprime): the 600 kB "document"
    // first, then sizes mixed as a page's resources are.
    (0..base.len()).map(|j| base[j * 17 % base.len()]).collect()
}

/// One run of the web-like workload: seconds until all 50 objects are in,
/// over at most 6 parallel connections (`curl --parallel-max 6`).
pub(crate) fn web(ctx: &mut Ctx<'_>, c: &Contender) -> Result<f64, String> {
    ctx.prepare(c)?;
    let path = c.client();
    let objects = web_objects();
    let mut args: Vec<String> = [
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        "6",
        "-w",
        WFMT,
    ]
    .map(String::from)
    .to_vec();
    for (i, size) in objects.iter().enumerate() {
        args.extend([
            "-o".into(),
            "/dev/null".into(),
            path.url(&format!("/bytes/{size}?o={i}")),
        ]);
    }
    let start = Instant::now();
    let times =
        run_curl(ctx.curl(&path, 120.0, &args)).map_err(|e| format!("{} web: {e}", c.id))?;
    let secs = start.elapsed().as_secs_f64();
    let got: u64 = times.iter().map(|t| t.down).sum();
    let want: u64 = objects.iter().sum();
    if times.len() != objects.len() || got != want {
        return Err(format!(
            "{} web: {} objects, {got} bytes of {want}",
            c.id,
            times.len()
        ));
    }
    Ok(secs)
}

/// Request→response times (ms) of `n` small requests on one kept-alive
/// connection at `rate` per second; the first (connection set-up) is left
/// out.
fn probe(ctx: &Ctx<'_>, c: &Contender, n: usize) -> Result<Vec<f64>, String> {
    let path = c.client();
    let rate = ctx.plan.probe_rate;
    let args = vec![
        "--rate".into(),
        format!("{rate}/s"),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        WFMT.into(),
        path.url(&format!("/?p=[1-{}]", n + 1)),
    ];
    let max = (n as f64 + 1.0) / rate as f64 * 3.0 + 10.0;
    let t = run_curl(ctx.curl(&path, max, &args)).map_err(|e| format!("{} probe: {e}", c.id))?;
    if t.len() != n + 1 {
        return Err(format!("{} probe: {} of {} answers", c.id, t.len(), n + 1));
    }
    Ok(t[1..]
        .iter()
        .map(|x| (x.starttransfer - x.pretransfer) * 1000.0)
        .collect())
}

/// One run of latency under load.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Loaded {
    pub(crate) idle_median_ms: f64,
    pub(crate) loaded_median_ms: f64,
    pub(crate) loaded_p99_ms: f64,
}

/// Probes the contender's path idle, then while one bulk download of the
/// same contender runs.
pub(crate) fn loaded_latency(ctx: &mut Ctx<'_>, c: &Contender) -> Result<Loaded, String> {
    ctx.prepare(c)?;
    let plan = ctx.plan;
    let idle = probe(ctx, c, plan.probe_idle)?;
    ctx.progress.update(0.2, "idle probed; loading");
    let path = c.client();
    let load_secs = plan.load_fill_secs + plan.probe_load as f64 / plan.probe_rate as f64 + 5.0;
    let size = (c.capacity_kbit(&ctx.profile, Direction::Downstream) as f64 * 1000.0 / 8.0
        * load_secs) as u64;
    let args = vec![
        "-o".into(),
        "/dev/null".into(),
        path.url(&format!("/bytes/{size}")),
    ];
    let mut load = vec![spawn_piped(ctx.curl(&path, load_secs * 4.0 + 20.0, &args))?];
    std::thread::sleep(Duration::from_secs_f64(plan.load_fill_secs));
    ctx.progress.update(0.4, "probing under load");
    let loaded = probe(ctx, c, plan.probe_load);
    let still_loading = matches!(load[0].try_wait(), Ok(None));
    kill_all(&mut load);
    let loaded = loaded?;
    if !still_loading {
        return Err(format!("{}: the load ended before the probes did", c.id));
    }
    Ok(Loaded {
        idle_median_ms: median(&idle),
        loaded_median_ms: median(&loaded),
        loaded_p99_ms: percentile(&loaded, 99.0),
    })
}

/// Restores the fixed line when dropped if it is cut.
struct Restore<'a> {
    lab: &'a str,
    cut: bool,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if self.cut {
            let _ = lab::link(self.lab, Link::Dsl, &LinkAction::Restore);
        }
    }
}

/// One failover run.
#[derive(Clone, Debug)]
pub(crate) struct Failover {
    /// Longest time without a byte reaching the client after the cut, ms.
    pub(crate) stall_ms: f64,
    /// Goodput while the fixed line was cut, Mbit/s.
    pub(crate) during_mbit: f64,
    /// Goodput before the cut, Mbit/s.
    pub(crate) before_mbit: f64,
    /// Whether bytes were flowing again at the end.
    pub(crate) recovered: bool,
    /// Link counters every 100 ms.
    pub(crate) series: Vec<Sample>,
    /// When the line was cut and restored, seconds from the start.
    pub(crate) cut_at: f64,
    pub(crate) restored_at: f64,
}

/// Downloads, cuts the fixed line after `pre` seconds for `cut` seconds,
/// and watches the bytes arrive at the client (curl writes them to us).
pub(crate) fn failover(ctx: &mut Ctx<'_>, c: &Contender) -> Result<Failover, String> {
    ctx.prepare(c)?;
    let (pre, cut, post) = ctx.plan.failover_secs;
    let total = pre + cut + post;
    let path = c.client();
    let size = (c.capacity_kbit(&ctx.profile, Direction::Downstream) as f64 * 1000.0 / 8.0
        * (total + 10.0)) as u64;
    let args = vec!["-o".into(), "-".into(), path.url(&format!("/bytes/{size}"))];
    let mut cmd = ctx.curl(&path, total * 3.0 + 20.0, &args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|e| format!("starting curl: {e}"))?;
    let Some(mut out) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("curl has no stdout".into());
    };
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut arrivals: Vec<(f64, u64)> = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut cum = 0u64;
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            cum += n as u64;
            arrivals.push((start.elapsed().as_secs_f64(), cum));
        }
        arrivals
    });
    let before = ctx.meter.read();
    let mut series = Vec::new();
    let mut guard = Restore {
        lab: &ctx.lab,
        cut: false,
    };
    let (mut cut_at, mut restored_at) = (f64::NAN, f64::NAN);
    let mut err = None;
    loop {
        let t = start.elapsed().as_secs_f64();
        series.push(Sample {
            t,
            c: ctx.meter.read().since(&before),
        });
        if !guard.cut && cut_at.is_nan() && t >= pre {
            cut_at = start.elapsed().as_secs_f64();
            if let Err(e) = lab::link(&ctx.lab, Link::Dsl, &LinkAction::Cut) {
                err = Some(format!("cutting the fixed line: {e}"));
                break;
            }
            guard.cut = true;
        }
        if guard.cut && t >= pre + cut {
            restored_at = start.elapsed().as_secs_f64();
            if let Err(e) = lab::link(&ctx.lab, Link::Dsl, &LinkAction::Restore) {
                err = Some(format!("restoring the fixed line: {e}"));
                break;
            }
            guard.cut = false;
        }
        if t >= total {
            break;
        }
        if let Ok(Some(_)) = child.try_wait() {
            err = Some("the download ended before the failover window did".into());
            break;
        }
        ctx.progress
            .update(t / total, if guard.cut { "fixed line CUT" } else { "" });
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(guard);
    let end = start.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    let arrivals = reader.join().unwrap_or_default();
    if let Some(e) = err {
        return Err(format!("{} failover: {e}", c.id));
    }
    let bytes_at = |t: f64| {
        arrivals
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(0, |(_, b)| *b)
    };
    let mut stall = 0f64;
    let mut prev = arrivals
        .iter()
        .take_while(|(at, _)| *at < cut_at)
        .last()
        .map_or(0.0, |(at, _)| *at);
    for (at, _) in arrivals.iter().filter(|(at, _)| *at >= cut_at) {
        stall = stall.max(at - prev);
        prev = *at;
    }
    stall = stall.max(end - prev);
    let last = arrivals.last().map_or(0.0, |(at, _)| *at);
    Ok(Failover {
        stall_ms: stall * 1000.0,
        during_mbit: mbit(
            bytes_at(restored_at) - bytes_at(cut_at),
            restored_at - cut_at,
        ),
        before_mbit: mbit(bytes_at(cut_at) - bytes_at(0.5), cut_at - 0.5),
        recovered: end - last < 0.5,
        series,
        cut_at,
        restored_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_curl_write_out() {
        let out = "abc 12\n\nBENCH 200 10000 0 0.001 0.031 0.032\n\nBENCH 200 5 6 0.1 0.2 0.3\n";
        let t = parse_bench(out);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].down, 10_000);
        assert_eq!(t[1].up, 6);
        assert!((t[0].starttransfer - 0.031).abs() < 1e-9);
        assert!(parse_bench("BENCH x").is_empty());
    }

    #[test]
    fn web_page_has_50_objects_of_mixed_sizes() {
        let o = web_objects();
        assert_eq!(o.len(), 50);
        assert_eq!(o.iter().filter(|&&s| s == 600_000).count(), 1);
        assert_eq!(o.iter().filter(|&&s| s == 200_000).count(), 4);
        assert_eq!(o.iter().filter(|&&s| s == 50_000).count(), 10);
        assert_eq!(o.iter().filter(|&&s| s == 15_000).count(), 15);
        assert_eq!(o.iter().filter(|&&s| s == 3_000).count(), 20);
    }
}
