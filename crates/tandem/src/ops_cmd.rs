//! `tandem ops ...`: the operator service (run, check its configuration,
//! issue tokens), replay recorded telemetry through the diagnosis, and the
//! diagnosis benchmark on simulated fault campaigns.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Commands of the operator service.
#[derive(clap::Subcommand)]
pub(crate) enum OpsCmd {
    /// Runs the service (telemetry ingest, diagnosis, incidents, the API)
    /// until SIGINT/SIGTERM.
    Run {
        /// TOML configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Validates a configuration file and the inventory it names.
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
    /// Tokens of CPEs, HAGs and operators: issue (prints it once), revoke,
    /// list. A running service takes changes within seconds.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
        /// The service's configuration (to find its database).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
    /// Makes the fleet's private CA (`ca.pem`, `ca.key`) in DIR, or reuses
    /// the one there, and a certificate for ops signed by it (`ops.pem`,
    /// `ops.key`): ops serves these (`api.tls_cert`, `api.tls_key`), CPEs
    /// and HAGs trust `ca.pem` (`tls = true`, `ca` under `[telemetry]`).
    TlsInit {
        /// Where the files go (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// A name ops' certificate is for: the senders' `host`, or ops'
        /// IP address (repeat for more).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// Days ops' certificate is valid.
        #[arg(long, default_value_t = 397)]
        days: u32,
    },
    /// Runs the diagnosis on a JSON-lines file of telemetry (CPE and HAG
    /// reports, schema 1) and prints every change of a home's diagnosis.
    Replay {
        /// The telemetry (JSON lines; `-` for standard input).
        file: PathBuf,
        /// The inventory (CSV: subscriber,cabinet,card,cell).
        #[arg(long)]
        inventory: PathBuf,
        /// How often the CPEs reported, seconds.
        #[arg(long, default_value_t = 10.0)]
        period: f64,
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The ingest benchmark: reports per second ops takes from a fleet of
    /// CPEs (each its own token, a new connection per report), side by
    /// side with a server that discards them; writes ingest.md and .json.
    BenchIngest {
        /// CPEs in the fleet.
        #[arg(long, default_value_t = 50_000)]
        homes: u32,
        /// Seconds of load per server.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Concurrent client tasks.
        #[arg(long, default_value_t = 64)]
        workers: usize,
        /// Where to write ingest.md and ingest.json.
        #[arg(long, default_value = "bench/ops")]
        out: PathBuf,
    },
    /// The diagnosis benchmark: Tandem and the DLM-rule baseline on a
    /// simulated fleet's fault campaign; writes a Markdown table and JSON.
    /// The real-lab campaign (root): a street of six homes, two cabinets,
    /// two cells; faults of every class injected in rounds; ops' answers
    /// judged at the ticket time. Writes results-lab.md and
    /// results-lab.json.
    BenchLab {
        /// The campaign's seed.
        #[arg(long, default_value_t = 11)]
        seed: u64,
        /// Faults of each of the 12 fast kinds.
        #[arg(long, default_value_t = 3)]
        per_kind: u32,
        /// Seconds from a fault's onset to its ticket.
        #[arg(long, default_value_t = 45.0)]
        ticket_s: f64,
        /// Also water ingress and reboot loops (tickets 10 min after onset;
        /// a much longer run).
        #[arg(long)]
        slow: bool,
        /// The lab's name.
        #[arg(long, default_value = "opslab")]
        name: String,
        /// Where to write the results.
        #[arg(long, default_value = "bench/ops")]
        out: PathBuf,
    },
    Bench {
        /// development, held-out, or both.
        #[arg(long, default_value = "both")]
        campaign: String,
        /// Homes in the fleet (default: the campaign's, 2,000).
        #[arg(long)]
        homes: Option<u32>,
        /// Faults in the campaign (default: the campaign's, 1,050).
        #[arg(long)]
        faults: Option<u32>,
        /// Where to write results.md and results.json.
        #[arg(long, default_value = "bench/ops")]
        out: PathBuf,
    },
}

/// What to do with tokens.
#[derive(clap::Subcommand)]
pub(crate) enum TokenCmd {
    /// Issues a token (replacing the one NAME had) and prints it; ops keeps
    /// only the key derived from it.
    Issue {
        /// cpe (NAME is the subscriber), hag or operator.
        #[arg(long)]
        kind: String,
        /// Who it is for.
        name: String,
    },
    /// Revokes NAME's token.
    Revoke {
        /// cpe, hag or operator.
        #[arg(long)]
        kind: String,
        /// Whose.
        name: String,
    },
    /// Lists who has a token.
    List,
}

fn token_kind(s: &str) -> Result<ops::store::TokenKind> {
    use ops::store::TokenKind;
    Ok(match s {
        "cpe" => TokenKind::Cpe,
        "hag" => TokenKind::Hag,
        "operator" => TokenKind::Operator,
        _ => bail!("--kind must be cpe, hag or operator, not {s:?}"),
    })
}

fn load(config: &std::path::Path) -> Result<ops::config::Config> {
    ops::config::Config::load(config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))
}

fn tokens(cmd: TokenCmd, config: Option<PathBuf>) -> Result<()> {
    use ops::store::TokenKind;
    let Some(config) = config else {
        bail!("give --config ops.toml (the service's configuration names its database)");
    };
    let c = load(&config)?;
    let store = ops::store::Store::open(&c.db)?;
    match cmd {
        TokenCmd::Issue { kind, name } => {
            let t = store.issue_token(token_kind(&kind)?, &name, ops::service::now_ms())?;
            println!("{t}");
        }
        TokenCmd::Revoke { kind, name } => {
            if !store.revoke_token(token_kind(&kind)?, &name)? {
                bail!("{name} has no {kind} token");
            }
            println!("revoked the {kind} token of {name}");
        }
        TokenCmd::List => {
            for kind in [TokenKind::Cpe, TokenKind::Hag, TokenKind::Operator] {
                let mut names: Vec<_> = store.keys(kind)?.into_keys().collect();
                names.sort();
                for n in names {
                    println!("{}\t{n}", kind.name());
                }
            }
        }
    }
    Ok(())
}

fn check_config(file: &std::path::Path) -> Result<()> {
    let c = load(file)?;
    let text = std::fs::read_to_string(&c.inventory).with_context(|| {
        format!(
            "{}: reading the inventory {}",
            file.display(),
            c.inventory.display()
        )
    })?;
    let inv = ops::Inventory::from_csv(&text).with_context(|| {
        format!(
            "{}: the inventory {}",
            file.display(),
            c.inventory.display()
        )
    })?;
    if let Some(t) = &c.tls {
        t.acceptor()
            .map_err(|e| anyhow::anyhow!("{}: api TLS: {e}", file.display()))?;
    }
    println!(
        "{}: OK ({} homes in the inventory{})",
        file.display(),
        inv.len(),
        if c.tls.is_some() { ", TLS" } else { "" }
    );
    Ok(())
}

pub(crate) fn run(cmd: OpsCmd) -> Result<()> {
    match cmd {
        OpsCmd::Run { config } => {
            let c = load(&config)?;
            crate::runtime()?.block_on(ops::service::run(c, crate::shutdown_signal()))?;
            Ok(())
        }
        OpsCmd::CheckConfig { file } => check_config(&file),
        OpsCmd::TlsInit { dir, names, days } => {
            let f = ops::tls::init(&dir, &names, days).map_err(|e| anyhow::anyhow!("{e}"))?;
            if f.new_ca {
                println!(
                    "new CA: {} (its key {})",
                    f.ca_cert.display(),
                    f.ca_key.display()
                );
            } else {
                println!("CA kept: {}", f.ca_cert.display());
            }
            println!(
                "ops' certificate for {} ({days} days): {} and {}",
                names.join(", "),
                f.cert.display(),
                f.key.display()
            );
            Ok(())
        }
        OpsCmd::Token { cmd, config } => tokens(cmd, config),
        OpsCmd::Replay {
            file,
            inventory,
            period,
            json,
        } => replay(&file, &inventory, period, json),
        OpsCmd::BenchIngest {
            homes,
            seconds,
            workers,
            out,
        } => bench_ingest(homes, seconds, workers, &out),
        OpsCmd::Bench {
            campaign,
            homes,
            faults,
            out,
        } => bench(&campaign, homes, faults, &out),
        OpsCmd::BenchLab {
            seed,
            per_kind,
            ticket_s,
            slow,
            name,
            out,
        } => bench_lab(seed, per_kind, ticket_s, slow, name, &out),
    }
}

fn replay(file: &PathBuf, inventory: &PathBuf, period: f64, json: bool) -> Result<()> {
    if !(period.is_finite() && period > 0.0) {
        bail!("--period must be a positive number of seconds");
    }
    let text = std::fs::read_to_string(inventory)
        .with_context(|| format!("reading {}", inventory.display()))?;
    let inv = ops::Inventory::from_csv(&text).with_context(|| inventory.display().to_string())?;
    let mut engine = ops::Engine::new(
        inv,
        ops::Settings {
            report_period_s: period,
            hag_period_s: period,
        },
    );
    let input: Box<dyn std::io::BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
        ))
    };
    let mut stdout = std::io::stdout().lock();
    let mut failed = None;
    let n = ops::replay::replay(&mut engine, input, |c| {
        let r = if json {
            writeln!(stdout, "{}", serde_json::to_string(c).unwrap_or_default())
        } else {
            let d = &c.diagnosis;
            writeln!(
                stdout,
                "{} {} {} → {} ({}, confidence {:.2}): {}\n    {}",
                jiff::Timestamp::from_millisecond(c.at_ms as i64)
                    .map_or_else(|_| c.at_ms.to_string(), |t| t.to_string()),
                d.subscriber,
                d.location,
                d.dispatch,
                d.fault,
                d.confidence,
                d.action,
                d.evidence.join("\n    ")
            )
        };
        if let Err(e) = r {
            failed.get_or_insert(e);
        }
    })
    .with_context(|| file.display().to_string())?;
    if let Some(e) = failed {
        return Err(e).context("writing the output");
    }
    eprintln!("{n} reports replayed");
    Ok(())
}

fn bench(campaign: &str, homes: Option<u32>, faults: Option<u32>, out: &PathBuf) -> Result<()> {
    let specs = match campaign {
        "development" => vec![street::CampaignSpec::development()],
        "held-out" => vec![street::CampaignSpec::held_out()],
        "both" => vec![
            street::CampaignSpec::development(),
            street::CampaignSpec::held_out(),
        ],
        other => bail!("unknown campaign {other:?} (expected development, held-out or both)"),
    };
    let mut evals = Vec::new();
    for mut spec in specs {
        if let Some(h) = homes {
            if h == 0 {
                bail!("--homes must be at least 1");
            }
            spec.fleet.homes = h;
            spec.fleet.cabinets = (h / 20).max(1);
            spec.fleet.cells = (h / 100).max(1);
        }
        if let Some(f) = faults {
            spec.faults = f;
        }
        eprintln!("ops bench: campaign {} ...", spec.name);
        let e = bench::opscampaign::run(spec, &mut |m| eprintln!("  {m}"));
        eprintln!(
            "  {}: macro-F1 Tandem {:.3}, baseline {:.3}; wrong technician {:.1} % vs {:.1} %",
            e.campaign,
            e.tandem.macro_f1(),
            e.baseline.macro_f1(),
            e.tandem_wrong_tech * 100.0,
            e.baseline_wrong_tech * 100.0
        );
        evals.push(e);
    }
    let mut command = format!("tandem ops bench --campaign {campaign}");
    if let Some(h) = homes {
        command.push_str(&format!(" --homes {h}"));
    }
    if let Some(f) = faults {
        command.push_str(&format!(" --faults {f}"));
    }
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let md = out.join(format!("results-{campaign}.md"));
    std::fs::write(&md, bench::opscampaign::markdown(&evals, &command))
        .with_context(|| md.display().to_string())?;
    let js = out.join(format!("results-{campaign}.json"));
    std::fs::write(&js, serde_json::to_vec_pretty(&evals)?)
        .with_context(|| js.display().to_string())?;
    println!("{}", md.display());
    Ok(())
}

fn bench_lab(
    seed: u64,
    per_kind: u32,
    ticket_s: f64,
    slow: bool,
    name: String,
    out: &PathBuf,
) -> Result<()> {
    if !(1..=20).contains(&per_kind) {
        bail!("--per-kind must be 1 to 20");
    }
    if !(ticket_s.is_finite() && (10.0..=600.0).contains(&ticket_s)) {
        bail!("--ticket-s must be 10 to 600");
    }
    if name.is_empty() || name.len() > 8 || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("--name: 1 to 8 letters or digits");
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let lab_name = name.clone();
    crate::clean_up_on_signal(move || {
        let _ = lab::fault::clear(&lab_name, None);
        if let Err(e) = lab::down(&lab_name) {
            eprintln!("tearing the lab down: {e}");
        }
    });
    let spec = bench::opslab::LabSpec {
        name,
        exe: std::env::current_exe().context("locating the tandem executable")?,
        seed,
        per_kind,
        ticket_s,
        slow,
    };
    let ev =
        bench::opslab::run(&spec, &mut |m| eprintln!("{m}")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut command =
        format!("tandem ops bench-lab --seed {seed} --per-kind {per_kind} --ticket-s {ticket_s}");
    if slow {
        command.push_str(" --slow");
    }
    let md = bench::opslab::markdown(&ev, &command);
    std::fs::write(out.join("results-lab.md"), &md)?;
    std::fs::write(
        out.join("results-lab.json"),
        serde_json::to_string_pretty(&ev)?,
    )?;
    print!("{md}");
    Ok(())
}

fn bench_ingest(homes: u32, seconds: f64, workers: usize, out: &PathBuf) -> Result<()> {
    if !(1..=1_000_000).contains(&homes) {
        bail!("--homes must be 1 to 1000000");
    }
    if !(seconds.is_finite() && (1.0..=3600.0).contains(&seconds)) {
        bail!("--seconds must be 1 to 3600");
    }
    if !(1..=4096).contains(&workers) {
        bail!("--workers must be 1 to 4096");
    }
    let spec = bench::opsingest::IngestSpec {
        homes,
        seconds,
        workers,
    };
    let r = bench::opsingest::run(spec, &mut |m| eprintln!("ops bench-ingest: {m}"))?;
    let command =
        format!("tandem ops bench-ingest --homes {homes} --seconds {seconds} --workers {workers}");
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let md = out.join("ingest.md");
    std::fs::write(&md, bench::opsingest::markdown(&r, &command))
        .with_context(|| md.display().to_string())?;
    let js = out.join("ingest.json");
    std::fs::write(&js, serde_json::to_vec_pretty(&r)?)
        .with_context(|| js.display().to_string())?;
    println!("{}", md.display());
    Ok(())
}
