//! `tandem ops ...`: the operator service's tools: replay recorded
//! telemetry through the diagnosis, and the diagnosis benchmark on
//! simulated fault campaigns.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Commands of the operator service.
#[derive(clap::Subcommand)]
pub(crate) enum OpsCmd {
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
    /// The diagnosis benchmark: Tandem and the DLM-rule baseline on a
    /// simulated fleet's fault campaign; writes a Markdown table and JSON.
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

pub(crate) fn run(cmd: OpsCmd) -> Result<()> {
    match cmd {
        OpsCmd::Replay {
            file,
            inventory,
            period,
            json,
        } => replay(&file, &inventory, period, json),
        OpsCmd::Bench {
            campaign,
            homes,
            faults,
            out,
        } => bench(&campaign, homes, faults, &out),
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
