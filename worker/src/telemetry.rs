//! Logging: `tracing` with pretty (dev) or JSON output, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "info,temporalio_sdk_core=warn,temporalio_client=warn,h2=warn,hyper=warn,sqlx=warn",
        )
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second init (tests, dev) keeps the first subscriber.
    let _ = match format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
