//! Logging: `tracing` with pretty (dev) or JSON output, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    init_to(format, std::io::stdout);
}

/// As [`init`], to stderr: for commands whose stdout is their result (the benches).
pub fn init_stderr(format: LogFormat) {
    init_to(format, std::io::stderr);
}

fn init_to<W>(format: LogFormat, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "info,temporalio_sdk_core=warn,temporalio_client=warn,h2=warn,hyper=warn,sqlx=warn",
        )
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // A second init (tests, dev) keeps the first subscriber.
    let _ = match format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
