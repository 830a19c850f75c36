//! The store: the single source of truth and the only coordination point
//! between replicas. It is the only module that imports sea-orm or knows SQL.
//!
//! It is cut along its aggregates, one file and one *facet* each (names,
//! keys, orders, leases, challenges, tokens, audit, pacing, emergency
//! operations, operation records, CA revocations, status, incidents,
//! alerts, deployments, metrics, backups). [`Store`] only opens the database and
//! hands out the facets; a consumer keeps the facets it uses.
//!
//! One SQL text serves SQLite and PostgreSQL (`$n` placeholders work on
//! both). Rows are read into private shapes and handed out as the plain
//! records of [`rows`]; multi-row writes run in one transaction
//! ([`sql::with_tx`]). Times are unix seconds supplied by the caller (the
//! clock is injected, never read here).
//!
//! What is stored before what (the issuance cycle, see `worker`):
//! 1. a name and its two slots, each with an open order (one transaction);
//! 2. the order's fresh private key, sealed, before any ACME call;
//! 3. the ACME order URL, before polling it;
//! 4. HTTP-01 tokens, before telling the CA to validate;
//! 5. the certificate, the slot pointer and the order's end, in one
//!    transaction, and only then the tokens are deleted.

mod acme_dns;
mod alerts;
mod audit;
mod backup;
mod ca_revocations;
mod cas;
mod challenges;
mod compromise;
mod console;
mod counts;
mod deploy;
mod drills;
mod incidents;
mod keys;
mod leases;
mod metrics;
mod names;
mod operations;
mod orders;
mod pacing;
mod packages;
mod preflight;
mod readiness;
mod rows;
mod sql;
mod status;
mod swap;
mod swap_scope;
#[cfg(feature = "bench")]
mod synthetic;
mod tokens;

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};
use twincert_migrations::{Migrator, MigratorTrait};

pub use acme_dns::{AcmeDnsRegistration, AcmeDnsRegistrations};
pub use alerts::{Alert, Alerts, PendingAlert};
pub use audit::{Audit, AuditDetails, AuditEvent};
pub use backup::{BackupError, Backups, ImportReport, Manifest, TableManifest};
pub use ca_revocations::{CaRevocations, PendingRevocation};
pub use cas::Cas;
pub use challenges::Challenges;
pub use compromise::{CompromiseReport, Reaction, ReactionReport};
pub use console::{
    Console, NamePageFilter, NamesPage, OVERVIEW_DAYS, OverviewCounts, PendingLogin, SessionRecord,
};
pub use counts::CountPass;
pub use deploy::{
    CheckRecord, Checked, Deployed, DeploymentView, Deployments, DueDeployment, DueEndpoint,
    EndpointSpec, EndpointView,
};
pub use drills::{Drill, DrillFlip, DrillStandby, Drills};
pub use incidents::{Incident, Incidents};
pub use keys::{Keys, SealedSecret, SecretKind};
pub use leases::Leases;
pub(crate) use metrics::label;
pub use metrics::{Counts, EXPIRY_SERIES, Metrics, Series};
pub use names::{NameFilter, Names, NewName};
pub use operations::{CaOrders, Operation, OperationProgress, Operations, ReprovisionJob};
pub use orders::{Completed, FailingOrder, NewCertificate, Orders, OtherCert, StoredSources};
pub use pacing::Pacing;
pub use packages::{DueReminder, NewPackage, PackageRecord, Packages};
pub use preflight::Preflights;
pub use readiness::{Readiness, ReadinessGroup};
pub use rows::{
    CertRecord, CertStatusRecord, DnsRecord, NameRecord, OrderJob, OrderSummary, SlotRecord,
    TokenRecord,
};
pub use sql::new_id;
pub use status::{RevocationFinding, RevokedSlot, Status, StatusTarget};
pub use swap::{Emergency, SwapReport};
pub use swap_scope::SwapScope;
pub use tokens::{NewToken, Tokens};

use audit::redact_url;
use sql::one;

/// Why a store operation failed. `Db` is infrastructure (retry later); the
/// others are answers the caller shows to a user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A row with this key exists already.
    #[error("{0} already exists")]
    Duplicate(String),
    /// No such row.
    #[error("{0} not found")]
    NotFound(String),
    /// The request contradicts the current state.
    #[error("{0}")]
    Conflict(String),
    /// The worker's lease on an order ran out and another worker may own it.
    #[error("lease on order {0} was lost")]
    LeaseLost(String),
    /// The database failed or returned something unreadable.
    #[error("database: {0}")]
    Db(String),
}

/// A handle on the database; cheap to clone. It hands out one narrow
/// facet per aggregate ([`Store::names`], [`Store::orders`], …): a consumer
/// keeps the facets it uses and nothing else.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    facets: Facets,
}

#[derive(Clone)]
struct Facets {
    names: Names,
    keys: Keys,
    orders: Orders,
    leases: Leases,
    challenges: Challenges,
    tokens: Tokens,
    audit: Audit,
    pacing: Pacing,
    emergency: Emergency,
    operations: Operations,
    ca_revocations: CaRevocations,
    cas: Cas,
    status: Status,
    incidents: Incidents,
    alerts: Alerts,
    deployments: Deployments,
    packages: Packages,
    metrics: Metrics,
    readiness: Readiness,
    preflights: Preflights,
    drills: Drills,
    backups: Backups,
    acme_dns: AcmeDnsRegistrations,
    console: Console,
}

impl Facets {
    fn new(db: &DatabaseConnection) -> Facets {
        Facets {
            names: Names { db: db.clone() },
            keys: Keys { db: db.clone() },
            orders: Orders { db: db.clone() },
            leases: Leases { db: db.clone() },
            challenges: Challenges { db: db.clone() },
            tokens: Tokens { db: db.clone() },
            audit: Audit { db: db.clone() },
            pacing: Pacing { db: db.clone() },
            emergency: Emergency { db: db.clone() },
            operations: Operations { db: db.clone() },
            ca_revocations: CaRevocations { db: db.clone() },
            cas: Cas { db: db.clone() },
            status: Status { db: db.clone() },
            incidents: Incidents { db: db.clone() },
            alerts: Alerts { db: db.clone() },
            deployments: Deployments { db: db.clone() },
            packages: Packages { db: db.clone() },
            metrics: Metrics { db: db.clone() },
            readiness: Readiness { db: db.clone() },
            preflights: Preflights { db: db.clone() },
            drills: Drills { db: db.clone() },
            backups: Backups { db: db.clone() },
            acme_dns: AcmeDnsRegistrations { db: db.clone() },
            console: Console { db: db.clone() },
        }
    }
}

impl From<DbErr> for StoreError {
    fn from(e: DbErr) -> Self {
        StoreError::Db(e.to_string())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend_name())
            .finish()
    }
}

/// A statement slower than this is logged as a warning (target
/// `sqlx::query`; `TWINCERT_LOG=sqlx=off` silences it).
const SLOW_STATEMENT: Duration = Duration::from_secs(1);

impl Store {
    /// Opens (and for SQLite creates) the database at `url`.
    ///
    /// SQLite runs in WAL mode with one pooled connection: every statement
    /// is short, and a single writer avoids `database is locked` between
    /// connections of the same process; other processes wait on the busy
    /// timeout.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let mut opts = ConnectOptions::new(url.to_string());
        // Statements are not logged (their text is the store's business),
        // except one that takes longer than `SLOW_STATEMENT`: a warning
        // with its text (parameters are never logged) names what holds
        // the database at scale.
        opts.sqlx_logging(true)
            .sqlx_logging_level(log::LevelFilter::Trace)
            .sqlx_slow_statements_logging_settings(log::LevelFilter::Warn, SLOW_STATEMENT)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30));
        if url.starts_with("sqlite:") {
            opts.max_connections(1).min_connections(1);
            opts.map_sqlx_sqlite_opts(|o: SqliteConnectOptions| {
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        } else {
            opts.max_connections(32);
        }
        let db = Database::connect(opts)
            .await
            .map_err(|e| StoreError::Db(format!("cannot open {}: {e}", redact_url(url))))?;
        let facets = Facets::new(&db);
        Ok(Store { db, facets })
    }

    /// Managed names, their slots and swap facts.
    pub fn names(&self) -> &Names {
        &self.facets.names
    }

    /// Sealed certificate keys and ACME account credentials.
    pub fn keys(&self) -> &Keys {
        &self.facets.keys
    }

    /// The issuance cycle's order rows.
    pub fn orders(&self) -> &Orders {
        &self.facets.orders
    }

    /// Order leases and singleton leases.
    pub fn leases(&self) -> &Leases {
        &self.facets.leases
    }

    /// HTTP-01 answers and DNS-01 records.
    pub fn challenges(&self) -> &Challenges {
        &self.facets.challenges
    }

    /// API tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.facets.tokens
    }

    /// The audit log.
    pub fn audit(&self) -> &Audit {
        &self.facets.audit
    }

    /// Per-CA order pacing.
    pub fn pacing(&self) -> &Pacing {
        &self.facets.pacing
    }

    /// Swaps, distrust, compromise, re-key, revocation reactions.
    pub fn emergency(&self) -> &Emergency {
        &self.facets.emergency
    }

    /// Operation records and re-provisioning.
    pub fn operations(&self) -> &Operations {
        &self.facets.operations
    }

    /// Revocations to perform at the CA.
    pub fn ca_revocations(&self) -> &CaRevocations {
        &self.facets.ca_revocations
    }

    /// CA status: distrust and usage.
    pub fn cas(&self) -> &Cas {
        &self.facets.cas
    }

    /// Certificate standing (CRL/OCSP/ARI) and expiry tracking.
    pub fn status(&self) -> &Status {
        &self.facets.status
    }

    /// CA incidents.
    pub fn incidents(&self) -> &Incidents {
        &self.facets.incidents
    }

    /// Alerts and their delivery records.
    pub fn alerts(&self) -> &Alerts {
        &self.facets.alerts
    }

    /// Deployments and endpoint checks.
    pub fn deployments(&self) -> &Deployments {
        &self.facets.deployments
    }

    /// Install packages of `manual` destinations.
    pub fn packages(&self) -> &Packages {
        &self.facets.packages
    }

    /// Aggregate figures for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.facets.metrics
    }

    /// Emergency readiness facts and the stored report.
    pub fn readiness(&self) -> &Readiness {
        &self.facets.readiness
    }

    /// Preflight reports per name (CAA, delegation).
    pub fn preflights(&self) -> &Preflights {
        &self.facets.preflights
    }

    /// Drills: requests, reports, the standbys they inspect, their flips.
    pub fn drills(&self) -> &Drills {
        &self.facets.drills
    }

    /// Backup export and restore import.
    /// The operator console's sessions, sign-ins and page reads.
    pub fn console(&self) -> &Console {
        &self.facets.console
    }

    pub fn backups(&self) -> &Backups {
        &self.facets.backups
    }

    /// acme-dns registrations (sealed credentials).
    pub fn acme_dns(&self) -> &AcmeDnsRegistrations {
        &self.facets.acme_dns
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// `sqlite` or `postgres`, for logs and health output.
    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::Postgres => "postgres",
            DbBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        one(&self.db, "SELECT 1 AS one", vec![]).await?;
        Ok(())
    }
}
