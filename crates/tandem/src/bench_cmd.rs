//! `tandem bench`: runs the benchmark matrix on the lab (see the `bench`
//! crate) and says where the results went.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Options of `tandem bench`.
#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// Link profile (rural, suburban, fast).
    #[arg(long, default_value = "rural")]
    profile: String,
    /// The 2-minute subset (one run, short transfers, one flow, 1,000 idle
    /// connections); written to target/bench-quick/, the README is left
    /// alone.
    #[arg(long)]
    quick: bool,
    /// Runs per figure (default 3, or 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Only these contenders (dsl, lte, mptcp, shadowsocks, tandem,
    /// tandem-aggregate, tandem-active-standby); repeat or separate with
    /// commas.
    #[arg(long, value_delimiter = ',')]
    contender: Vec<String>,
    /// Skip the HAG-versus-HAProxy loopback measurement.
    #[arg(long)]
    no_relay: bool,
    /// Idle connections for the HAG's memory figure (default 10,000, or
    /// 1,000 with --quick; capped by the open-files limit).
    #[arg(long)]
    idle_connections: Option<usize>,
    /// Lab name (namespace prefix, up to 8 letters or digits).
    #[arg(long, default_value = "bench")]
    name: String,
    /// Directory for the JSON, Markdown and SVG files (default:
    /// bench/results, or target/bench-quick with --quick).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Do not rewrite the README's benchmark section.
    #[arg(long)]
    no_readme: bool,
}

/// The repository root: the nearest directory upwards with `bench/` and a
/// workspace `Cargo.toml` (or the current directory).
fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .find(|d| d.join("Cargo.toml").is_file() && d.join("bench").is_dir())
        .map_or(cwd.clone(), Path::to_path_buf)
}

pub(crate) fn run(args: BenchArgs) -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("tandem bench builds network namespaces: run it as root");
    }
    for tool in ["curl", "mptcpize", "ss-server", "ss-local", "haproxy"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            bail!("{tool} is not installed (make deps installs it: Debian packages curl, mptcpize, shadowsocks-libev, haproxy)");
        }
    }
    let lab_name = args.name.clone();
    crate::clean_up_on_signal(move || bench::clean_up(&lab_name));
    let root = repo_root();
    let out_dir = args.out_dir.unwrap_or_else(|| {
        if args.quick {
            root.join("target/bench-quick")
        } else {
            root.join("bench/results")
        }
    });
    let readme = root.join("README.md");
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let outcome = bench::run(bench::BenchOptions {
        profile: args.profile,
        quick: args.quick,
        runs: args.runs,
        contenders: args.contender,
        lab_name: args.name,
        exe: std::env::current_exe().context("locating the tandem executable")?,
        out_dir,
        readme: (!args.no_readme && readme.is_file()).then_some(readme),
        skip_relay: args.no_relay,
        idle_connections: args.idle_connections,
        command,
    })?;
    let r = &outcome.results;
    println!("\nTargets (profile {}):", r.profile);
    for t in &r.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        println!(
            "  {:<14} {} — {}: {verdict}",
            t.contender, t.target, t.measured
        );
    }
    println!("\nWritten:");
    for f in &outcome.files {
        println!("  {}", f.display());
    }
    if !r.errors.is_empty() {
        eprintln!("\nWhat failed:");
        for e in &r.errors {
            eprintln!("  {e}");
        }
        bail!(
            "{} measurement(s) failed (the figures leave them out)",
            r.errors.len()
        );
    }
    Ok(())
}
