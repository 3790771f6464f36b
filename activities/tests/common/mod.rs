//! The two-backend harness shared by the store and ledger suites: each case is written once as
//! `async fn case_x(store: Store)` and `backend_tests!` turns it into `sqlite_x` (a fresh
//! temp-file database) and `postgres_x` (a fresh database on the server at `DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! The PostgreSQL tests print `skipping postgres: <reason>` and pass when the server cannot be
//! reached, unless `PAYFLOW_REQUIRE_POSTGRES=1` is set, in which case they fail.

// Each test binary uses its own part of the harness.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use payflow_activities::store::Store;
use sqlx::{Connection, PgConnection};

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Runs `case` on its own task so that a failing assertion still lets the caller clean up;
/// the caller re-raises the panic with [`finish`] once its database is gone.
async fn run_case<F>(store: Store, case: fn(Store) -> F) -> Result<(), tokio::task::JoinError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(case(store.clone())).await;
    store.close().await;
    outcome
}

fn finish(outcome: Result<(), tokio::task::JoinError>) {
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test task did not finish: {e}"),
        }
    }
}

pub async fn with_sqlite<F>(case: fn(Store) -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let path = std::env::temp_dir().join(format!(
        "payflow_store_{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    let url = format!("sqlite://{}", path.display());
    let outcome = match Store::connect(&url).await {
        Ok(store) => run_case(store, case).await,
        Err(e) => {
            remove_sqlite_files(&path);
            panic!("connect {url}: {e}");
        }
    };
    remove_sqlite_files(&path);
    finish(outcome);
}

fn remove_sqlite_files(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.to_path_buf().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

fn postgres_required() -> bool {
    std::env::var("PAYFLOW_REQUIRE_POSTGRES").is_ok_and(|v| !v.is_empty() && v != "0")
}

async fn admin_connect(url: &str) -> Result<PgConnection, String> {
    match tokio::time::timeout(Duration::from_secs(10), PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("cannot connect to {url}: {e}")),
        Err(_) => Err(format!("cannot connect to {url}: timed out after 10s")),
    }
}

pub async fn with_postgres<F>(case: fn(Store) -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let base = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string());
    let mut admin = match admin_connect(&base).await {
        Ok(conn) => conn,
        Err(reason) if !postgres_required() => {
            eprintln!("skipping postgres: {reason}");
            return;
        }
        Err(reason) => {
            panic!("PAYFLOW_REQUIRE_POSTGRES is set and postgres is unavailable: {reason}")
        }
    };

    let name = format!("payflow_t_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
    let mut url = url::Url::parse(&base).unwrap_or_else(|e| panic!("DATABASE_URL {base:?}: {e}"));
    url.set_path(&format!("/{name}"));

    let outcome = match Store::connect(url.as_str()).await {
        Ok(store) => run_case(store, case).await,
        Err(e) => {
            drop_database(&mut admin, &name).await;
            panic!("connect {url}: {e}");
        }
    };
    drop_database(&mut admin, &name).await;
    let _ = admin.close().await;
    finish(outcome);
}

/// Best effort: a database left behind only costs disk space on a test server.
async fn drop_database(admin: &mut PgConnection, name: &str) {
    if let Err(e) = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut *admin)
        .await
    {
        eprintln!("warning: could not drop test database {name}: {e}");
    }
}

/// `backend_tests! { case_x => sqlite_x, postgres_x; ... }` turns each case into one test per
/// backend, each on a fresh database.
macro_rules! backend_tests {
    ($($case:ident => $sqlite:ident, $postgres:ident;)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $sqlite() {
                common::with_sqlite($case).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $postgres() {
                common::with_postgres($case).await;
            }
        )*
    };
}
