//! `tandem hag ...`: run, check-config, keys and the subscriber registry.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hag::cookie::Key;
use registry::{Registry, Subscriber, Usage};

/// Commands of the Hybrid Access Gateway.
#[derive(clap::Subcommand)]
pub(crate) enum HagCmd {
    /// Runs until SIGINT/SIGTERM (drains running connections); SIGHUP
    /// reloads the configuration and the subscriber registry.
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
    /// Prints a new random cookie key, as a `[[auth.keys]]` entry.
    GenerateKey {
        /// The key id to print (0-255; one more than the current one).
        #[arg(long, default_value_t = 1)]
        id: u8,
    },
    /// The subscriber registry.
    Subscriber {
        #[command(subcommand)]
        cmd: SubscriberCmd,
    },
}

/// Registry commands; the registry is the one the HAG configuration names.
#[derive(clap::Subcommand)]
pub(crate) enum SubscriberCmd {
    /// Registers a subscriber and issues its cookie (printed, and written
    /// into the CPE's configuration with --cpe-config).
    Add {
        /// The operator's name for it (line id, contract).
        name: String,
        /// HAG configuration (registry path and keys).
        #[arg(long)]
        config: PathBuf,
        /// Restrict the cookie to these source prefixes (repeatable).
        #[arg(long = "prefix")]
        prefixes: Vec<ipnet::IpNet>,
        /// CPE configuration file to write the cookie into.
        #[arg(long)]
        cpe_config: Option<PathBuf>,
    },
    /// Issues a new cookie with the current key (after a key rotation).
    Reissue {
        /// The subscriber.
        name: String,
        /// HAG configuration.
        #[arg(long)]
        config: PathBuf,
        /// CPE configuration file to write the cookie into.
        #[arg(long)]
        cpe_config: Option<PathBuf>,
    },
    /// Lists subscribers.
    List {
        /// HAG configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Shows one subscriber.
    Show {
        /// The subscriber.
        name: String,
        /// HAG configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Bytes per subscriber, calendar month (UTC) and access link, as the
    /// HAG counted them (the billing count, kept across restarts).
    Usage {
        /// One subscriber (all when omitted).
        name: Option<String>,
        /// HAG configuration (its `usage_db`, or the registry's neighbour).
        #[arg(long)]
        config: PathBuf,
    },
    /// Revokes a subscriber: its next connection is refused.
    Revoke {
        /// The subscriber.
        name: String,
        /// HAG configuration.
        #[arg(long)]
        config: PathBuf,
    },
}

fn load(config: &Path) -> Result<(hag::Config, Registry)> {
    let c = hag::Config::load(config)?;
    let path = c
        .registry
        .clone()
        .with_context(|| format!("{}: no `registry` path configured", config.display()))?;
    let reg = Registry::open(&path)?;
    Ok((c, reg))
}

/// Issues a cookie for `sub`, records its expiry, writes it into the CPE
/// configuration if asked, prints it.
fn issue(c: &hag::Config, reg: &Registry, sub: &Subscriber, cpe: Option<&Path>) -> Result<()> {
    let now = hag::cookie::now_unix();
    let expires = now.saturating_add(c.cookie_validity.as_secs() as u32);
    let cookie = c
        .keys
        .issue(sub.id, now, expires)
        .context("auth.current_key is not among auth.keys")?;
    reg.set_cookie_expiry(sub.id, i64::from(expires))?;
    let hex = hag::cookie::to_hex(&cookie);
    if let Some(path) = cpe {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut doc: toml_edit::DocumentMut = text
            .parse()
            .with_context(|| format!("parsing {}", path.display()))?;
        doc["cookie"] = toml_edit::value(hex.clone());
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, doc.to_string())?;
        std::fs::rename(&tmp, path)?;
        println!("cookie written into {}", path.display());
    }
    println!(
        "subscriber {} (id {}) cookie = \"{hex}\" valid until {expires}",
        sub.name, sub.id
    );
    Ok(())
}

fn show(s: &Subscriber) {
    let prefixes: Vec<String> = s.source_prefixes.iter().map(ToString::to_string).collect();
    println!(
        "{:>6}  {:<24}  {:<8}  created {}  cookie until {}  prefixes {}",
        s.id,
        s.name,
        if s.revoked_unix.is_some() {
            "REVOKED"
        } else {
            "active"
        },
        s.created_unix,
        s.cookie_expires,
        if prefixes.is_empty() {
            "any".to_string()
        } else {
            prefixes.join(",")
        }
    );
}

/// Runs a HAG command.
pub(crate) fn run(cmd: HagCmd) -> Result<()> {
    match cmd {
        HagCmd::Run { config } => {
            let c = hag::Config::load(&config)?;
            let rt = crate::runtime()?;
            rt.block_on(async move {
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                tokio::spawn(crate::reload_on_sighup(config, hag::Config::load, tx));
                hag::run(c, crate::shutdown_signal(), rx).await
            })?;
        }
        HagCmd::CheckConfig { file } => crate::check(&file, hag::Config::load(&file))?,
        HagCmd::GenerateKey { id } => {
            let k = Key::generate().context("drawing a random key from the kernel")?;
            println!("[[auth.keys]]\nid = {id}\nsecret = \"{}\"", k.to_hex());
        }
        HagCmd::Subscriber { cmd } => match cmd {
            SubscriberCmd::Add {
                name,
                config,
                prefixes,
                cpe_config,
            } => {
                let (c, reg) = load(&config)?;
                let sub = reg.add(&name, &prefixes)?;
                issue(&c, &reg, &sub, cpe_config.as_deref())?;
            }
            SubscriberCmd::Reissue {
                name,
                config,
                cpe_config,
            } => {
                let (c, reg) = load(&config)?;
                let sub = reg.get(&name)?;
                if sub.revoked_unix.is_some() {
                    bail!("subscriber {name:?} is revoked");
                }
                issue(&c, &reg, &sub, cpe_config.as_deref())?;
            }
            SubscriberCmd::List { config } => {
                let (_, reg) = load(&config)?;
                for s in reg.list()? {
                    show(&s);
                }
            }
            SubscriberCmd::Show { name, config } => show(&load(&config)?.1.get(&name)?),
            SubscriberCmd::Usage { name, config } => {
                let c = hag::Config::load(&config)?;
                let path = c.usage_db.with_context(|| {
                    format!(
                        "{}: no `usage_db` (or `registry`) configured",
                        config.display()
                    )
                })?;
                let rows = Usage::open(&path)?.read(name.as_deref())?;
                println!(
                    "{:<24} {:<8} {:<6} {:>16} {:>16} {:>16} {:>16}",
                    "subscriber",
                    "month",
                    "link",
                    "up bytes",
                    "down bytes",
                    "waived up",
                    "waived down"
                );
                for r in rows {
                    println!(
                        "{:<24} {:<8} {:<6} {:>16} {:>16} {:>16} {:>16}",
                        r.subscriber,
                        r.period,
                        r.link,
                        r.up_bytes,
                        r.down_bytes,
                        r.waived_up_bytes,
                        r.waived_down_bytes
                    );
                }
            }
            SubscriberCmd::Revoke { name, config } => {
                let s = load(&config)?.1.revoke(&name)?;
                println!("revoked: the HAG refuses {name:?} from its next connection");
                show(&s);
            }
        },
    }
    Ok(())
}
