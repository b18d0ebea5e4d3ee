//! Logging from `log.level` / `log.formatter`; `RUST_LOG` refines it.

use tracing_subscriber::EnvFilter;

use crate::config::Config;

pub fn init(cfg: &Config) {
    let level = cfg.log_level().unwrap_or_else(|| "info".to_owned());
    // Our crates log at the configured level; dependencies only warnings and up.
    let default = format!(
        "warn,berth={level},berth_server={level},berth_registry={level},berth_storage={level},berth_metadata={level}"
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let json = matches!(cfg.log.formatter.as_deref(), Some("json") | Some("logstash"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}
