//! The database: SQLite (embedded default) or PostgreSQL, one code path through `sqlx::Any`.
//!
//! Queries are written once with `?` placeholders and rewritten to `$n` for PostgreSQL. Each
//! backend has its own migration folder (`migrations/sqlite`, `migrations/postgres`) with the
//! same tables; the store test suite runs against both.
//!
//! Layout: `orders` (payment orders, compare-and-set transitions), `ledger` (journal entries
//! and postings), `notices` (channel notifications seen by the ingress).

pub mod accounts;
pub mod holds;
pub mod ledger;
pub mod notices;
pub mod orders;
pub mod recon;
pub mod refunds;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL scheme {0:?} (use sqlite:// or postgres://)")]
    Scheme(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// A compare-and-set lost: someone else moved the row. Carries what is there now.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid: {0}")]
    Invalid(String),
    /// A posting or hold would break the account's balance flag; nothing was written.
    #[error("insufficient funds in {account}: needed {needed}, available {available}")]
    InsufficientFunds {
        account: String,
        needed: payflow_client::Money,
        /// What the flag still allows; zero or negative when nothing is left.
        available: accounts::SignedMoney,
    },
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool plus the backend it talks to. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Counts committed order transitions and journal entries (disabled by default).
    metrics: crate::metrics::Metrics,
}

impl Store {
    /// Connects and runs migrations. `sqlite://path` creates the file if needed.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            let scheme = url.split(':').next().unwrap_or_default().to_string();
            return Err(StoreError::Scheme(scheme));
        };
        let pool = match backend {
            Backend::Sqlite => {
                let url = if url.contains('?') || url.contains(":memory:") {
                    url.to_string()
                } else {
                    format!("{url}?mode=rwc")
                };
                // One writer at a time is SQLite's model; a single connection avoids
                // SQLITE_BUSY on lock upgrades while keeping every call correct.
                AnyPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await?
            }
        };
        let store = Store {
            pool,
            backend,
            metrics: crate::metrics::Metrics::disabled(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&self.pool)
                    .await?;
                sqlx::migrate!("migrations/sqlite").run(&self.pool).await?
            }
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Records committed order transitions and journal entries through `metrics`.
    pub fn set_metrics(&mut self, metrics: crate::metrics::Metrics) {
        self.metrics = metrics;
    }

    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Rewrites `?` placeholders to `$1, $2, ...` for PostgreSQL. Our queries never contain a
    /// literal `?` inside strings, so a plain scan is exact.
    pub(crate) fn sql(&self, query: &str) -> String {
        match self.backend {
            Backend::Sqlite => query.to_string(),
            Backend::Postgres => {
                let mut out = String::with_capacity(query.len() + 16);
                let mut n = 0;
                for c in query.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                out
            }
        }
    }

    /// Row lock suffix for the rest of the transaction on PostgreSQL; empty on SQLite, whose
    /// single connection already serialises writers. `NO KEY UPDATE`: it still serialises
    /// lockers, but does not block the foreign-key checks (`KEY SHARE`) of inserts that
    /// reference the row, so credits into a locked account keep flowing.
    pub(crate) fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR NO KEY UPDATE",
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Whether an error is a unique-constraint violation (same meaning on both backends).
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation()
                || db
                    .code()
                    .is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
        }
        _ => false,
    }
}
