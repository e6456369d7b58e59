//! `tandem shield ...` (being written).

/// Commands of the protective DNS shield.
#[derive(clap::Subcommand)]
pub(crate) enum ShieldCmd {
    /// Validates a configuration file and prints what is wrong.
    CheckConfig {
        /// TOML configuration file.
        file: std::path::PathBuf,
    },
}

/// Runs a shield command.
pub(crate) fn run(cmd: ShieldCmd) -> anyhow::Result<()> {
    match cmd {
        ShieldCmd::CheckConfig { file } => {
            anyhow::bail!("{}: the shield is not built yet", file.display())
        }
    }
}
