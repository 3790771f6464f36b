//! Starts the Temporal CLI dev server (`temporal server start-dev`) as a child process, with
//! payflow's search attributes registered, and waits until its frontend answers.
//!
//! Written here rather than through `temporalio-sdk-core`'s ephemeral server because that one
//! gives a file-backed server only five seconds to come up, which a cold start on a 2-core
//! machine can exceed; the readiness wait here is a deadline on a real connection.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use payflow_client::definitions::search_attributes;
use tokio::process::{Child, Command};

#[derive(Debug, thiserror::Error)]
pub enum DevServerError {
    #[error(
        "cannot find the Temporal CLI ({0}); run scripts/tools.sh or set TEMPORAL_CLI to its path"
    )]
    NotFound(String),
    #[error("cannot start {exe}: {source}")]
    Spawn { exe: String, source: std::io::Error },
    #[error(
        "Temporal dev server on port {port} did not answer within {secs} s (is the port taken?)"
    )]
    NotReady { port: u16, secs: u64 },
    #[error("Temporal dev server exited early with {0}")]
    Exited(std::process::ExitStatus),
}

pub struct DevServerOptions {
    pub ip: String,
    pub port: u16,
    /// `None`: headless (no UI).
    pub ui_port: Option<u16>,
    /// SQLite file; `None`: in memory.
    pub db_file: Option<PathBuf>,
    pub log_level: String,
    /// Namespaces to create besides `default` (tests give each case its own).
    pub extra_namespaces: Vec<String>,
    /// The codec server the UI's pages call from the browser to show decoded payloads.
    pub ui_codec_endpoint: Option<String>,
}

impl DevServerOptions {
    /// The `temporal` command-line arguments for these options.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        for s in [
            "server",
            "start-dev",
            "--ip",
            &self.ip,
            "--port",
            &self.port.to_string(),
        ] {
            push(s);
        }
        push("--namespace");
        push("default");
        for ns in &self.extra_namespaces {
            push("--namespace");
            push(ns);
        }
        for s in ["--log-level", &self.log_level, "--log-format", "pretty"] {
            push(s);
        }
        // Updates (used for the early return of `pay`) and eager workflow start (callbacks
        // started by the worker get their first task in the start's answer) are on by default
        // in recent servers; stated explicitly so an older CLI behaves the same.
        //
        // The history service reads each shard's transfer, timer and visibility queues at most
        // 20 (visibility: 10) times a second by default, a per-shard limit sized for clusters of
        // hundreds of shards. The dev server has one shard, so past ~20 new tasks a second every
        // task waits for the next read: a callback started by a service at 20/s reached its
        // merchant after 45 ms instead of 9 ms (`payflow bench notify`). Read as often as needed.
        for v in [
            "frontend.enableUpdateWorkflowExecution=true",
            "frontend.enableUpdateWorkflowExecutionAsyncAccepted=true",
            "system.enableEagerWorkflowStart=true",
            "history.transferProcessorMaxPollRPS=1000",
            "history.timerProcessorMaxPollRPS=1000",
            "history.visibilityProcessorMaxPollRPS=1000",
        ] {
            push("--dynamic-config-value");
            push(v);
        }
        for (name, kind) in search_attributes::ALL {
            push("--search-attribute");
            push(&format!("{name}={kind}"));
        }
        match self.ui_port {
            Some(p) => {
                push("--ui-port");
                push(&p.to_string());
            }
            None => push("--headless"),
        }
        if let (Some(_), Some(endpoint)) = (self.ui_port, &self.ui_codec_endpoint) {
            push("--ui-codec-endpoint");
            push(endpoint);
        }
        if let Some(db) = &self.db_file {
            a.push("--db-filename".into());
            a.push(db.as_os_str().to_owned());
        }
        a
    }
}

/// A running dev server; killed when dropped.
pub struct DevServer {
    child: Child,
    pub address: String,
    pub ui_url: Option<String>,
}

/// The Temporal CLI: `$TEMPORAL_CLI`, else the project's `.tools`, else `temporal` on PATH.
pub fn find_temporal_cli() -> Result<PathBuf, DevServerError> {
    if let Ok(p) = std::env::var("TEMPORAL_CLI") {
        return Ok(PathBuf::from(p));
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for base in [Path::new("."), manifest.parent().unwrap_or(manifest)] {
        let candidate = base.join(".tools/venv/bin/temporal");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("temporal");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(DevServerError::NotFound(
        "not in $TEMPORAL_CLI, .tools or PATH".into(),
    ))
}

impl DevServer {
    pub async fn start(opts: DevServerOptions) -> Result<DevServer, DevServerError> {
        let exe = find_temporal_cli()?;
        let mut cmd = Command::new(&exe);
        cmd.args(opts.args());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| DevServerError::Spawn {
            exe: exe.display().to_string(),
            source,
        })?;
        let address = format!("http://{}:{}", opts.ip, opts.port);
        let deadline = Duration::from_secs(60);
        let ready = tokio::time::timeout(deadline, async {
            loop {
                if let Some(status) = child.try_wait().ok().flatten() {
                    return Err(DevServerError::Exited(status));
                }
                if wait_ready(&address, Duration::from_millis(500)).await {
                    return Ok(());
                }
            }
        })
        .await;
        match ready {
            Ok(Ok(())) => Ok(DevServer {
                child,
                address,
                ui_url: opts.ui_port.map(|p| format!("http://{}:{p}", opts.ip)),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let _ = child.kill().await;
                Err(DevServerError::NotReady {
                    port: opts.port,
                    secs: deadline.as_secs(),
                })
            }
        }
    }

    /// The server process's id (for CPU accounting in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

/// A free TCP port on loopback (bind port 0, read it, release it).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Whether the frontend at `address` answers within `within` (one probe; callers loop with a
/// deadline). The pause between failed probes is the probe interval, not a synchronisation.
pub async fn wait_ready(address: &str, within: Duration) -> bool {
    let probe =
        tokio::time::timeout(within, payflow_client::Payflow::connect(address, "default")).await;
    if matches!(probe, Ok(Ok(_))) {
        return true;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    false
}
