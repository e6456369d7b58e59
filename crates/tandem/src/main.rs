//! `tandem`: the one binary. Parses the command line and calls the part's
//! `run(config, shutdown)`.

mod bench_cmd;
mod demo;
mod hag_cmd;
mod ops_cmd;
mod shield_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Tandem: hybrid access (fixed line + mobile) over Multipath TCP and the
/// RFC 8803 Convert protocol.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The Hybrid Access Gateway (operator side).
    Hag {
        #[command(subcommand)]
        cmd: hag_cmd::HagCmd,
    },
    /// The home gateway agent.
    Cpe {
        #[command(subcommand)]
        cmd: CpeCmd,
    },
    /// The protective DNS shield (anti-phishing resolver, warning page).
    Shield {
        #[command(subcommand)]
        cmd: shield_cmd::ShieldCmd,
    },
    /// The operator service: diagnosis replay and benchmark.
    Ops {
        #[command(subcommand)]
        cmd: ops_cmd::OpsCmd,
    },
    /// The virtual network lab (namespaces, emulated links).
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// Builds the lab, measures a download over the fixed line alone, the
    /// mobile link alone and through Tandem, prints the rates, tears down.
    Demo {
        /// Link profile (rural, suburban, fast).
        #[arg(long, default_value = "rural")]
        profile: String,
        /// Lab name (namespace prefix).
        #[arg(long, default_value = "demo")]
        name: String,
        /// Seconds each download should last at the link's nominal rate.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Benchmarks Tandem against the alternatives (fixed line only, mobile
    /// only, end-to-end MPTCP, shadowsocks over MPTCP) on the lab, and the
    /// HAG against HAProxy; writes bench/results/<date>-<profile>.{json,md,svg}.
    Bench(bench_cmd::BenchArgs),
}

#[derive(Subcommand)]
enum CpeCmd {
    /// Runs until SIGINT/SIGTERM; removes its nftables table on exit.
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
    /// Removes the nftables table and policy routes a killed CPE left.
    Cleanup {
        /// TOML configuration file (for the mark and table numbers).
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum FaultCmd {
    /// Injects a fault: `tandem lab fault inject broken-pair --home home-2`.
    Inject {
        /// The kind: missing-microfilter, in-home-wiring, reboot-loop,
        /// power-loss, lan-unplugged, water-ingress, broken-pair, crosstalk,
        /// cabinet-power, line-card, cell-outage, cell-congestion,
        /// hag-unreachable, upstream-loss.
        kind: String,
        /// The home (home-2 or 2), for a home's or a line's fault.
        #[arg(long)]
        home: Option<String>,
        /// The cabinet (cab1 or 1), for a cabinet's fault.
        #[arg(long)]
        cabinet: Option<String>,
        /// One line card of the cabinet (line-card), 0-based.
        #[arg(long)]
        card: Option<u32>,
        /// The cell (cell2, its id or 2), for a mobile fault.
        #[arg(long)]
        cell: Option<String>,
        /// 0 to 1.
        #[arg(long)]
        severity: Option<f64>,
        /// How long it lasts (30s, 5m, 1h); until cleared if not given.
        #[arg(long = "for")]
        for_: Option<String>,
        /// Lab name.
        #[arg(long, default_value = "tdm")]
        name: String,
    },
    /// Clears one fault (by its number) or all of them.
    Clear {
        /// The fault's number (`lab fault list`); all if not given.
        id: Option<u32>,
        /// Lab name.
        #[arg(long, default_value = "tdm")]
        name: String,
    },
    /// Lists the faults.
    List {
        /// Lab name.
        #[arg(long, default_value = "tdm")]
        name: String,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Builds the lab and starts the emulators, the origin server, the HAG
    /// and the CPE.
    Up {
        /// Link profile: rural, suburban or fast.
        #[arg(long, default_value = "rural")]
        profile: String,
        /// Lab name (namespace prefix, up to 8 letters or digits).
        #[arg(long, default_value = "tdm")]
        name: String,
        /// Build the network only; do not start the HAG and the CPE.
        #[arg(long)]
        no_tandem: bool,
        /// Do not start the DNS (NSD authority and `tandem shield`).
        #[arg(long)]
        no_shield: bool,
        /// Homes in the street, each with its own CPE and LAN client.
        #[arg(long, default_value_t = 1)]
        homes: u32,
        /// Street cabinets the homes' lines run through (in turn).
        #[arg(long, default_value_t = 1)]
        cabinets: u32,
        /// Cells the homes' mobile links run through (in blocks).
        #[arg(long, default_value_t = 1)]
        cells: u32,
        /// Give each CPE a monthly mobile data budget of this many bytes.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        mobile_budget: Option<u64>,
    },
    /// Injects, clears or lists faults in the street (the modems' readings
    /// and the real data path change within a second).
    Fault {
        #[command(subcommand)]
        cmd: FaultCmd,
    },
    /// Stops everything the lab started and deletes its namespaces.
    Down {
        /// Lab name.
        #[arg(long, default_value = "tdm")]
        name: String,
    },
    /// Shows links, counters and processes.
    Status {
        /// Lab name.
        #[arg(long, default_value = "tdm")]
        name: String,
    },
    /// Sets the lab CPE's steering mode (priority, aggregate,
    /// active-standby) and reloads it.
    Steering {
        /// priority, aggregate or active-standby.
        mode: String,
        /// Lab name.
        #[arg(long, default_value = "tdm")]
        name: String,
    },
    /// Changes a link: `cut`, `blackhole`, `restore`, or `set rate=8mbit delay=15ms loss=1%`.
    Link {
        /// dsl or lte.
        link: String,
        /// cut (carrier lost), blackhole (link up, everything silently dropped),
        /// restore or set.
        action: String,
        /// For set: key=value pairs (rate, down, up, delay, jitter, loss).
        params: Vec<String>,
        /// Lab name.
        #[arg(long, default_value = "tdm")]
        name: String,
    },
    /// Runs a command inside a lab node (home, cpe, dsl, lte, hag, net).
    Exec {
        /// The node.
        node: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true)]
        cmd: Vec<String>,
        /// Lab name.
        #[arg(long, default_value = "tdm")]
        name: String,
    },
    /// Attacks the HAG from the lab's attacker node (a compromised home
    /// attached to the HAG): bounded in connections and time.
    Attack {
        /// Target address.
        #[arg(long, default_value = "10.66.0.1:5124")]
        target: std::net::SocketAddr,
        /// Connections to open at most.
        #[arg(long, default_value_t = 1000)]
        connections: u64,
        /// New connections per second.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        /// Seconds the attack lasts (everything is closed after).
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// idle, slow (slowloris) or garbage.
        #[arg(long, default_value = "idle")]
        mode: lab::attack::Mode,
        /// Lab name.
        #[arg(long, default_value = "tdm")]
        name: String,
    },
    /// (internal) The link emulator process of one access link.
    #[command(hide = true)]
    Emu {
        /// Control file with the impairments per queue.
        #[arg(long)]
        control: PathBuf,
    },
    /// (internal) The street emulator: every home's modem model, the
    /// faults made real, the LAN clients; every second until the lab is
    /// gone.
    #[command(hide = true)]
    Street {
        /// Lab name.
        #[arg(long)]
        name: String,
    },
    /// (internal) The origin HTTP server.
    #[command(hide = true)]
    Origin {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
}

fn init_logging() {
    let filter = EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Resolves on SIGINT or SIGTERM.
/// For the commands that build a lab in the foreground (`demo`, `bench`):
/// SIGINT (Ctrl-C) and SIGTERM run `clean_up` and exit with 130 instead of
/// leaving namespaces and processes behind. A handler on a thread of its own
/// (not a blocked signal mask, which every child process would inherit and
/// then ignore SIGTERM); returns once the handlers are in place.
pub(crate) fn clean_up_on_signal(clean_up: impl FnOnce() + Send + 'static) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            let _ = ready_tx.send(false);
            return;
        };
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                let _ = ready_tx.send(false);
                return;
            };
            let _ = ready_tx.send(true);
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            eprintln!("\n{name}: cleaning up");
            clean_up();
            std::process::exit(130);
        });
    });
    if ready_rx.recv() != Ok(true) {
        eprintln!(
            "cannot take SIGINT/SIGTERM: an interrupted run leaves its lab up (tandem lab down)"
        );
    }
}

/// On every SIGHUP, re-reads the configuration file and sends it on `tx`; a
/// broken file is logged and the running configuration kept.
pub(crate) async fn reload_on_sighup<C, E: std::fmt::Display>(
    path: PathBuf,
    load: fn(&std::path::Path) -> Result<C, E>,
    tx: tokio::sync::mpsc::Sender<C>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match load(&path) {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!("SIGHUP: {e}; keeping the running configuration"),
        }
    }
}

pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) fn check<T, E: std::fmt::Display>(
    file: &std::path::Path,
    r: Result<T, E>,
) -> Result<()> {
    match r {
        Ok(_) => {
            println!("{}: OK", file.display());
            Ok(())
        }
        Err(e) => bail!("{}: {e}", file.display()),
    }
}

fn fault_cmd(cmd: FaultCmd) -> Result<()> {
    match cmd {
        FaultCmd::Inject {
            kind,
            home,
            cabinet,
            card,
            cell,
            severity,
            for_,
            name,
        } => {
            let kind: street::FaultKind = kind.parse()?;
            let for_s = for_
                .map(|d| {
                    d.parse::<jiff::SignedDuration>()
                        .map_err(|e| anyhow::anyhow!("--for {d:?}: {e} (e.g. 30s, 5m, 1h)"))
                        .map(|d| d.as_secs_f64())
                })
                .transpose()?;
            let f = lab::fault::inject(
                &name,
                kind,
                &lab::fault::Inject {
                    home,
                    cabinet,
                    card,
                    cell,
                    severity,
                    for_s,
                },
            )?;
            println!("{}", f.describe());
        }
        FaultCmd::Clear { id, name } => {
            for f in lab::fault::clear(&name, id)? {
                println!("cleared {}", f.describe());
            }
        }
        FaultCmd::List { name } => print!("{}", lab::fault::list(&name)?),
    }
    Ok(())
}

fn lab_cmd(cmd: LabCmd) -> Result<()> {
    match cmd {
        LabCmd::Up {
            profile,
            name,
            no_tandem,
            no_shield,
            homes,
            cabinets,
            cells,
            mobile_budget,
        } => {
            let street = lab::street::Street {
                homes,
                cabinets,
                cells,
            };
            street.validate()?;
            if street.is_street() && no_tandem {
                bail!("a street (--homes, --cabinets, --cells) needs the HAG and the CPEs: drop --no-tandem");
            }
            let p = lab::profile::by_name(&profile).with_context(|| {
                format!(
                    "unknown profile {profile:?}; known: {}",
                    lab::profile::NAMES.join(", ")
                )
            })?;
            let opts = lab::UpOptions {
                name: name.clone(),
                profile_name: profile,
                profile: p,
                tandem: !no_tandem,
                shield: !no_shield,
                exe: std::env::current_exe().context("locating the tandem executable")?,
                street,
                mobile_budget,
            };
            lab::up(&opts)?;
            print!("{}", lab::status(&name)?);
        }
        LabCmd::Down { name } => lab::down(&name)?,
        LabCmd::Status { name } => print!("{}", lab::status(&name)?),
        LabCmd::Link {
            link,
            action,
            params,
            name,
        } => {
            let l: lab::Link = link.parse()?;
            let a = match action.as_str() {
                "cut" => lab::LinkAction::Cut,
                "blackhole" => lab::LinkAction::Blackhole,
                "restore" => lab::LinkAction::Restore,
                "set" => lab::topology::parse_set(&params)?,
                other => bail!("{other:?}: expected cut, blackhole, restore or set"),
            };
            lab::link(&name, l, &a)?;
        }
        LabCmd::Steering { mode, name } => lab::topology::set_steering(&name, mode.parse()?)?,
        LabCmd::Exec { node, cmd, name } => {
            if !lab::street::is_node(&node) {
                bail!(
                    "{node:?}: expected one of {}",
                    lab::topology::NODES.join(", ")
                );
            }
            // Interactive: the command gets this terminal.
            let status = lab::cmd::in_ns(&lab::topology::ns(&name, &node), &cmd)
                .stdin(std::process::Stdio::inherit())
                .status()
                .context("running ip netns exec")?;
            if !status.success() {
                bail!("command exited with {status}");
            }
        }
        LabCmd::Attack {
            target,
            connections,
            rate,
            seconds,
            mode,
            name,
        } => {
            if seconds > 600 || connections > 1_000_000 {
                bail!("an attack is bounded: at most 600 s and 1,000,000 connections");
            }
            lab::netns::enter(&lab::topology::ns(&name, "atk"))
                .with_context(|| format!("entering the attacker namespace: is lab {name} up?"))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = rt.block_on(lab::attack::run(lab::attack::Attack {
                target,
                connections,
                rate,
                duration: std::time::Duration::from_secs(seconds),
                mode,
            }));
            println!("{report:?}");
        }
        LabCmd::Emu { control } => {
            let entries = lab::emu::read_control(&control)?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let opts = lab::emu::EmuOptions {
                set_rcvbuf: Some(mptcp_sock::set_rcvbuf_force),
                ..Default::default()
            };
            lab::emu::run_blocking_with(&entries, control, stop, opts)?;
        }
        LabCmd::Street { name } => lab::fault::run(&name)?,
        LabCmd::Fault { cmd } => fault_cmd(cmd)?,
        LabCmd::Origin { listen } => {
            runtime()?.block_on(lab::origin::serve(listen))?;
        }
    }
    Ok(())
}

/// Raises the open-files limit to the hard limit: a gateway holds a socket
/// per connection, and the usual soft limit (1024) would cap it there.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    raise_nofile();
    let r: Result<()> = (|| match cli.cmd {
        Cmd::Hag { cmd } => hag_cmd::run(cmd),
        Cmd::Cpe { cmd } => match cmd {
            CpeCmd::Run { config } => {
                let c = cpe::Config::load(&config)?;
                runtime()?.block_on(async move {
                    let (tx, rx) = tokio::sync::mpsc::channel(4);
                    tokio::spawn(reload_on_sighup(config, cpe::Config::load, tx));
                    cpe::run(c, shutdown_signal(), rx).await
                })?;
                Ok(())
            }
            CpeCmd::CheckConfig { file } => check(&file, cpe::Config::load(&file)),
            CpeCmd::Cleanup { config } => {
                let c = cpe::Config::load(&config)?;
                runtime()?.block_on(async {
                    cpe::divert::cleanup(&c).await;
                    cpe::wan::Forwarding::cleanup(&c).await;
                });
                Ok(())
            }
        },
        Cmd::Lab { cmd } => lab_cmd(cmd),
        Cmd::Shield { cmd } => shield_cmd::run(cmd),
        Cmd::Ops { cmd } => ops_cmd::run(cmd),
        Cmd::Demo {
            profile,
            name,
            seconds,
        } => demo::run(&profile, &name, seconds),
        Cmd::Bench(a) => bench_cmd::run(a),
    })();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem: {e:#}");
            ExitCode::FAILURE
        }
    }
}
