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
    Spawn {
        exe: String,
        source: std::io::Error,
    },
    #[error("Temporal dev server on port {port} did not answer within {secs} s (is the port taken?)")]
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
    Err(DevServerError::NotFound("not in $TEMPORAL_CLI, .tools or PATH".into()))
}

impl DevServer {
    pub async fn start(opts: DevServerOptions) -> Result<DevServer, DevServerError> {
        let exe = find_temporal_cli()?;
        let mut cmd = Command::new(&exe);
        cmd.args(["server", "start-dev", "--ip", &opts.ip])
            .args(["--port", &opts.port.to_string()])
            .args(["--namespace", "default"])
            .args(["--log-level", &opts.log_level])
            .args(["--log-format", "pretty"])
            // Updates (used for the early return of `pay`) are on by default in recent
            // servers; stated explicitly so an older CLI behaves the same.
            .args(["--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"])
            .args([
                "--dynamic-config-value",
                "frontend.enableUpdateWorkflowExecutionAsyncAccepted=true",
            ]);
        for (name, kind) in search_attributes::ALL {
            cmd.args(["--search-attribute", &format!("{name}={kind}")]);
        }
        match opts.ui_port {
            Some(p) => {
                cmd.args(["--ui-port", &p.to_string()]);
            }
            None => {
                cmd.arg("--headless");
            }
        }
        if let Some(db) = &opts.db_file {
            cmd.arg("--db-filename").arg(db);
        }
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
                if payflow_client::Payflow::connect(&address, "default").await.is_ok() {
                    return Ok(());
                }
                // Poll interval of the readiness probe (not a synchronisation sleep).
                tokio::time::sleep(Duration::from_millis(100)).await;
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
