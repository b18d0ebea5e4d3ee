//! The `berth` binary: command line, configuration, composition of storage,
//! metadata, registry and HTTP server, background maintenance, and signal
//! handling with one shutdown token.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Writes a line to standard output; a reader that went away (`| head`)
/// ends the output, never the process with a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}
pub(crate) use out;

mod admin;
mod app;
mod config;
mod jobs;
mod logging;

/// `berth --version` and `berth version`: the version, commit and build date.
const LONG_VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("BERTH_COMMIT"), ", built ", env!("BERTH_BUILD_DATE"), ")");

#[derive(Parser)]
#[command(
    name = "berth",
    version = LONG_VERSION,
    about = "A container image registry (OCI Distribution 1.1, Docker Registry V2)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The configuration file: `berth CMD FILE` or `berth CMD -c FILE`.
#[derive(clap::Args)]
struct ConfigPath {
    /// Configuration file (distribution's config.yml format).
    #[arg(value_name = "CONFIG")]
    config_file: Option<PathBuf>,
    /// The configuration file, as a flag (the same as the CONFIG argument).
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with = "config_file")]
    config: Option<PathBuf>,
}

impl ConfigPath {
    fn path(self) -> Option<PathBuf> {
        self.config.or(self.config_file)
    }
}

/// Which registry, when the configuration serves several (`registries:`).
#[derive(clap::Args)]
struct Which {
    /// The registry to work on (a name under `registries`, `yt.hume` for a pattern's).
    #[arg(long, value_name = "NAME")]
    registry: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry. Without a configuration it listens on :5000 and keeps
    /// its data in $BERTH_DATA_DIR (default ~/.local/share/berth).
    Serve {
        #[command(flatten)]
        config: ConfigPath,
    },
    /// Build (or refresh) the metadata database from the storage, e.g. a store
    /// written by the distribution registry.
    Import {
        #[command(flatten)]
        config: ConfigPath,
        #[command(flatten)]
        which: Which,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage an htpasswd file (bcrypt), without Apache tools.
    Htpasswd {
        #[command(subcommand)]
        command: HtpasswdCommand,
    },
    /// Garbage collection now (with a server running, the server does it).
    /// Flags as distribution's `registry garbage-collect`.
    Gc {
        #[command(flatten)]
        config: ConfigPath,
        #[command(flatten)]
        which: Which,
        /// List what would be deleted, delete nothing.
        #[arg(long, short = 'd')]
        dry_run: bool,
        /// Also delete manifests without tags (never children of a tagged
        /// index, nor referrers of a kept manifest unless --delete-referrers).
        #[arg(long, short = 'm')]
        delete_untagged: bool,
        /// With --delete-untagged, also delete referrers (signatures, SBOMs) of kept manifests.
        #[arg(long)]
        delete_referrers: bool,
        /// Leave alone what is younger than this (default: gc.grace).
        #[arg(long, value_parser = parse_grace)]
        grace: Option<std::time::Duration>,
    },
    /// Apply the retention policies now.
    Retention {
        #[command(flatten)]
        config: ConfigPath,
        #[command(flatten)]
        which: Which,
        /// List the tags and manifests that would go, and why the rest stay; delete nothing.
        #[arg(long, short = 'd')]
        dry_run: bool,
    },
    /// Repository commands.
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
    },
    /// Show how much of each namespace quota is used.
    Quotas {
        #[command(flatten)]
        config: ConfigPath,
        #[command(flatten)]
        which: Which,
    },
    /// Print the version, the commit it was built from and the build date.
    Version,
    /// Print shell completions (for example `berth completions bash > /etc/bash_completion.d/berth`).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum RepoCommand {
    /// Delete a repository: its tags, manifests and blob links.
    Delete {
        /// The repository, for example team/app.
        name: String,
        #[command(flatten)]
        config: ConfigPath,
        #[command(flatten)]
        which: Which,
    },
}

fn parse_grace(s: &str) -> Result<std::time::Duration, String> {
    berth_types::duration::parse(s, std::time::Duration::from_secs(1))
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file (with REGISTRY_* overrides applied) and print the result.
    Check {
        /// The configuration file (distribution's config.yml format).
        #[arg(value_name = "CONFIG")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum HtpasswdCommand {
    /// Add a user, or set the password of an existing one. The password is
    /// asked for on the terminal, or read from standard input.
    Add {
        /// The user name (no ':' or control characters).
        user: String,
        /// The htpasswd file (created with mode 0600 if missing).
        #[arg(long, short = 'f', default_value = "htpasswd")]
        file: PathBuf,
        /// Read the password from standard input (one line) instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
}

fn htpasswd_add(user: &str, file: &std::path::Path, from_stdin: bool) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let password = if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        let p = rpassword::prompt_password(format!("password for {user}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        anyhow::ensure!(p == again, "the passwords differ");
        p
    };
    anyhow::ensure!(!password.is_empty(), "the password must not be empty");
    berth_auth::htpasswd::set_password(file, user, &password)?;
    out!("{user} written to {}", file.display());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Version => {
            out!("berth {LONG_VERSION}");
            Ok(())
        }
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "berth", &mut buf);
            use std::io::Write as _;
            let _ = std::io::stdout().lock().write_all(&buf);
            Ok(())
        }
        Command::Config { command: ConfigCommand::Check { file } } => app::check_config(&file),
        Command::Htpasswd { command: HtpasswdCommand::Add { user, file, password_stdin } } => {
            htpasswd_add(&user, &file, password_stdin)
        }
        Command::Serve { config } => app::run(app::Mode::Serve, config.path(), None),
        Command::Import { config, which } => app::run(app::Mode::Import, config.path(), which.registry.as_deref()),
        Command::Gc { config, which, dry_run, delete_untagged, delete_referrers, grace } => admin::run(
            admin::Command::Gc { dry_run, delete_untagged, delete_referrers, grace },
            config.path(),
            which.registry.as_deref(),
        ),
        Command::Retention { config, which, dry_run } => {
            admin::run(admin::Command::Retention { dry_run }, config.path(), which.registry.as_deref())
        }
        Command::Repo { command: RepoCommand::Delete { name, config, which } } => {
            admin::run(admin::Command::DeleteRepository { name }, config.path(), which.registry.as_deref())
        }
        Command::Quotas { config, which } => {
            admin::run(admin::Command::Quotas, config.path(), which.registry.as_deref())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr().lock(), "berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}
