//! # payflow (the binary's library)
//!
//! - `config`: the TOML configuration with environment overrides;
//! - `startup`: builds the services, Temporal workers and ingress from config, and runs them;
//! - `ingress`: `POST /channels/{channel}/notify`;
//! - `sandbox`: a local channel speaking the Alipay protocol;
//! - `merchant_receiver`: a merchant endpoint that verifies callbacks (dev and tests);
//! - `devserver`, `devkeys`, `stack`, `dev`: the all-in-one `payflow dev`;
//! - `telemetry`, `tracing_interceptor`: logging, with activity spans naming whose payment it is;
//! - `cli_ledger`, `bench_ledger`: `payflow ledger ...` queries and `payflow bench ledger`;
//! - `cli_admin`: `payflow admin setup` (search attributes, namespace) on a real cluster;
//! - `cli_recon`, `recon_setup`: `payflow recon run/report`, the reconciliation settings and
//!   the daily schedules;
//! - `codec_server`: `payflow codec-server`, the Temporal UI's and CLI's remote payload decoder.

pub mod bench_e2e;
pub mod bench_ledger;
pub mod bench_notify;
pub mod bench_recon;
pub mod cli_admin;
pub mod cli_ledger;
pub mod cli_notify;
pub mod cli_payment;
pub mod cli_recon;
pub mod codec_server;
pub mod config;
pub mod dev;
pub mod devkeys;
pub mod devserver;
pub mod ingress;
pub mod merchant_receiver;
pub mod notify_wakes;
pub mod recon_setup;
pub mod sandbox;
pub mod stack;
pub mod startup;
pub mod telemetry;
pub mod tracing_interceptor;
pub mod tuning;
