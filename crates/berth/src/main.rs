//! The `berth` binary: command line, configuration, composition of storage,
//! metadata, registry and HTTP server, background maintenance, and signal
//! handling with one shutdown token.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod app;
mod config;
mod logging;

#[derive(Parser)]
#[command(name = "berth", version, about = "A container image registry (OCI Distribution 1.1, Docker Registry V2)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry. Without a configuration it listens on :5000 and keeps
    /// its data in $BERTH_DATA_DIR (default ~/.local/share/berth).
    Serve {
        /// Configuration file (distribution's config.yml format).
        #[arg(value_name = "CONFIG")]
        config_file: Option<PathBuf>,
        #[arg(long, short = 'c', value_name = "FILE", conflicts_with = "config_file")]
        config: Option<PathBuf>,
    },
    /// Build (or refresh) the metadata database from the storage, e.g. a store
    /// written by the distribution registry.
    Import {
        #[arg(value_name = "CONFIG")]
        config_file: Option<PathBuf>,
        #[arg(long, short = 'c', value_name = "FILE", conflicts_with = "config_file")]
        config: Option<PathBuf>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file (with REGISTRY_* overrides applied) and print the result.
    Check {
        #[arg(value_name = "CONFIG")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => {
            println!("berth {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Config { command: ConfigCommand::Check { file } } => app::check_config(&file),
        Command::Serve { config_file, config } => app::run(app::Mode::Serve, config.or(config_file)),
        Command::Import { config_file, config } => app::run(app::Mode::Import, config.or(config_file)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}
