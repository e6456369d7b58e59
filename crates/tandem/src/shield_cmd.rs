//! `tandem shield ...`: run the protective DNS resolver, check its
//! configuration, and let analysts handle citizen reports.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Commands of the protective DNS shield.
#[derive(clap::Subcommand)]
pub(crate) enum ShieldCmd {
    /// Runs the resolver, the warning page and the reports API until
    /// SIGINT/SIGTERM.
    Run {
        /// TOML configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Validates a configuration file and prints what is wrong.
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
    /// Citizen reports: list, confirm, reject.
    Reports {
        #[command(subcommand)]
        cmd: ReportsCmd,
        /// The report database (SQLite); or give --config.
        #[arg(long, global = true)]
        db: Option<PathBuf>,
        /// The shield configuration, to find the report database.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
}

/// What to do with the reports.
#[derive(clap::Subcommand)]
pub(crate) enum ReportsCmd {
    /// Lists reports, newest first.
    List {
        /// Only reports with this status: pending, confirmed or rejected.
        #[arg(long)]
        status: Option<String>,
    },
    /// Confirms a report: its domain is blocked (phishing) or allowed
    /// (false positive) by the running shield within its apply interval.
    Confirm {
        /// Report ID (from `list`).
        id: i64,
    },
    /// Rejects a report.
    Reject {
        /// Report ID (from `list`).
        id: i64,
    },
}

fn db_path(db: Option<PathBuf>, config: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = db {
        return Ok(p);
    }
    let Some(c) = config else {
        bail!("give --db PATH or --config FILE");
    };
    let cfg = shield::Config::load(&c)?;
    match cfg.reports {
        Some(r) => Ok(r.database),
        None => bail!("{}: no [reports] section", c.display()),
    }
}

fn print_report(r: &shield::reports::Report) {
    println!(
        "{:>5}  {:<9}  {:<14}  x{:<3}  {}  ({})",
        r.id,
        r.status.as_str(),
        r.kind.as_str(),
        r.count,
        r.domain,
        r.url
    );
    for c in &r.comments {
        println!("       - {c}");
    }
}

fn reports(cmd: ReportsCmd, db: Option<PathBuf>, config: Option<PathBuf>) -> Result<()> {
    use shield::reports::{Status, Store};
    let path = db_path(db, config)?;
    let mut store = Store::open(&path).with_context(|| format!("opening {}", path.display()))?;
    match cmd {
        ReportsCmd::List { status } => {
            let status = match status.as_deref() {
                None => None,
                Some("pending") => Some(Status::Pending),
                Some("confirmed") => Some(Status::Confirmed),
                Some("rejected") => Some(Status::Rejected),
                Some(s) => bail!("{s:?}: expected pending, confirmed or rejected"),
            };
            for r in store.list(status)? {
                print_report(&r);
            }
        }
        ReportsCmd::Confirm { id } => print_report(&store.decide(id, Status::Confirmed)?),
        ReportsCmd::Reject { id } => print_report(&store.decide(id, Status::Rejected)?),
    }
    Ok(())
}

/// Runs a shield command.
pub(crate) fn run(cmd: ShieldCmd) -> Result<()> {
    match cmd {
        ShieldCmd::Run { config } => {
            let c = shield::Config::load(&config)?;
            crate::runtime()?.block_on(shield::run(c, crate::shutdown_signal()))?;
            Ok(())
        }
        ShieldCmd::CheckConfig { file } => crate::check(&file, shield::Config::load(&file)),
        ShieldCmd::Reports { cmd, db, config } => reports(cmd, db, config),
    }
}
