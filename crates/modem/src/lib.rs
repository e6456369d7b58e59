//! The CPE's modem drivers: where the DSL line's and the mobile radio's
//! figures in a telemetry report come from.
//!
//! A [`Source`] is one of: the real tool's output read by running it
//! ([`Source::Command`]: OpenWrt's `ubus call dsl metrics`, ModemManager's
//! `mmcli`), the same output read from a file ([`Source::File`]: what the
//! lab's line model writes, or a modem daemon that dumps its state), or
//! nothing ([`Source::None`]: a CPE without that modem). Both kinds parse
//! the tool's real format ([`ubus`], [`mmcli`]), so the lab exercises the
//! same parser a gateway in the field does.
//!
//! Commands run with a timeout, their output bounded; a missing tool, a
//! hung one, unparsable output or a figure out of range is an [`Error`]
//! the caller logs, and the report goes without that part.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use telemetry::{DslLine, Radio};
use tokio::io::AsyncReadExt;

pub mod mmcli;
pub mod ubus;

/// Longest output read from a tool or file.
pub const MAX_OUTPUT: usize = 256 * 1024;

/// How long a tool may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a reading failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The output is not JSON.
    #[error("not JSON: {0}")]
    Json(serde_json::Error),
    /// A field the reading needs is missing.
    #[error("field {0} is missing")]
    Missing(&'static str),
    /// A figure is outside its physical range.
    #[error("field {field} = {value} is out of range")]
    Range {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// The command could not be run or failed.
    #[error("{command}: {problem}")]
    Command {
        /// The command line.
        command: String,
        /// What happened.
        problem: String,
    },
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// More output than [`MAX_OUTPUT`].
    #[error("output larger than {MAX_OUTPUT} bytes")]
    TooLarge,
}

/// Where one modem's figures come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// No such modem: the report goes without it.
    None,
    /// Run these commands (each a program and its arguments) and parse
    /// their outputs together.
    Command(Vec<Vec<String>>),
    /// Read this file (the tool's output, saved).
    File(PathBuf),
}

impl Source {
    /// `ubus call dsl metrics`.
    pub fn ubus() -> Self {
        Self::Command(vec![argv(&["ubus", "call", "dsl", "metrics"])])
    }

    /// `mmcli -m any` with `--output-json`, `--signal-get` and
    /// `--location-get`.
    pub fn mmcli() -> Self {
        Self::Command(vec![
            argv(&["mmcli", "-m", "any", "--output-json"]),
            argv(&["mmcli", "-m", "any", "--signal-get", "--output-json"]),
            argv(&["mmcli", "-m", "any", "--location-get", "--output-json"]),
        ])
    }

    /// Parses a configuration value: `none`, `ubus`, `mmcli` or
    /// `file:PATH`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "ubus" => Some(Self::ubus()),
            "mmcli" => Some(Self::mmcli()),
            _ => {
                let p = s.strip_prefix("file:")?;
                (!p.is_empty()).then(|| Self::File(PathBuf::from(p)))
            }
        }
    }

    /// Reads the outputs: one per command, or the file's.
    async fn read(&self) -> Result<Option<Vec<Vec<u8>>>, Error> {
        match self {
            Self::None => Ok(None),
            Self::File(path) => {
                let f = tokio::fs::File::open(path)
                    .await
                    .map_err(|source| Error::File {
                        path: path.clone(),
                        source,
                    })?;
                let mut buf = Vec::new();
                f.take(MAX_OUTPUT as u64 + 1)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|source| Error::File {
                        path: path.clone(),
                        source,
                    })?;
                if buf.len() > MAX_OUTPUT {
                    return Err(Error::TooLarge);
                }
                Ok(Some(vec![buf]))
            }
            Self::Command(cmds) => {
                let mut out = Vec::with_capacity(cmds.len());
                for c in cmds {
                    out.push(run(c).await?);
                }
                Ok(Some(out))
            }
        }
    }
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Runs one command with [`COMMAND_TIMEOUT`], its output bounded.
async fn run(argv: &[String]) -> Result<Vec<u8>, Error> {
    let command = argv.join(" ");
    let err = |problem: String| Error::Command {
        command: command.clone(),
        problem,
    };
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| err("empty command".into()))?;
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    let mut stdout = child.stdout.take().ok_or_else(|| err("no stdout".into()))?;
    let work = async {
        let mut buf = Vec::new();
        (&mut stdout)
            .take(MAX_OUTPUT as u64 + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| err(e.to_string()))?;
        if buf.len() > MAX_OUTPUT {
            return Err(Error::TooLarge);
        }
        let status = child.wait().await.map_err(|e| err(e.to_string()))?;
        if !status.success() {
            return Err(err(format!("exited with {status}")));
        }
        Ok(buf)
    };
    tokio::time::timeout(COMMAND_TIMEOUT, work)
        .await
        .map_err(|_| err(format!("no answer in {} s", COMMAND_TIMEOUT.as_secs())))?
}

/// A CPE's two modems.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Modems {
    /// The DSL modem (`ubus` format).
    pub dsl: Source,
    /// The mobile modem (`mmcli` format).
    pub mobile: Source,
}

impl Modems {
    /// Once at start: asks ModemManager to refresh the signal figures every
    /// `period` (mmcli's `--signal-get` is empty until then). A failure is
    /// returned for the log; readings go on regardless.
    pub async fn setup(&self, period: Duration) -> Result<(), Error> {
        if let Source::Command(cmds) = &self.mobile {
            if cmds
                .first()
                .and_then(|c| c.first())
                .is_some_and(|p| p.ends_with("mmcli"))
            {
                let secs = period.as_secs().max(1);
                run(&argv(&[
                    "mmcli",
                    "-m",
                    "any",
                    &format!("--signal-setup={secs}"),
                ]))
                .await?;
            }
        }
        Ok(())
    }

    /// The DSL line now (`None`: no DSL source configured).
    pub async fn dsl(&self) -> Result<Option<DslLine>, Error> {
        match self.dsl.read().await? {
            None => Ok(None),
            Some(outs) => {
                let first = outs.first().ok_or(Error::Missing("output"))?;
                ubus::parse(first).map(Some)
            }
        }
    }

    /// The radio now (`None`: no mobile source configured).
    pub async fn radio(&self) -> Result<Option<Radio>, Error> {
        match self.mobile.read().await? {
            None => Ok(None),
            Some(outs) => {
                let docs: Vec<&[u8]> = outs.iter().map(Vec::as_slice).collect();
                mmcli::parse(&docs).map(Some)
            }
        }
    }
}
