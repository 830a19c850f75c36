//! Schema migrations for twincert's store, for SQLite and PostgreSQL.
//!
//! The schema is written as plain SQL with two dialect holes (`{blob}` for
//! binary columns, `{serial}` for the audit log's growing id) so one text
//! serves both backends and reads like the database will see it. Invariants
//! that fit in SQL live here: one row per (name, slot), the two CAs of a name
//! differ, a private key's SPKI is unique (invariant 2: fresh keys).

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Every table the migrations create, in an order that satisfies the
/// foreign keys when rows are inserted first to last (a table comes after
/// every table it references). The store's backup export and restore walk
/// this list; a new table must be added here, or backups refuse to run
/// (they compare it with the tables the database actually has).
pub const TABLES: &[&str] = &[
    "names",
    "private_keys",
    "certificates",
    "slots",
    "acme_accounts",
    "orders",
    "http01_tokens",
    "audit_events",
    "dns_records",
    "api_tokens",
    "ca_status",
    "revocations",
    "operations",
    "ca_incidents",
    "alerts",
    "singleton_leases",
    "deployments",
    "endpoints",
    "notifications",
    "readiness",
    "drills",
    "install_packages",
    "preflight",
    "acme_dns_registrations",
    "console_sessions",
    "console_logins",
    "dns_persist_issuers",
    "metric_counts",
    "count_dirty",
    "count_partials",
    "count_buckets",
];

/// Columns whose values come from a sequence on PostgreSQL (`{serial}`):
/// a restore writes their values as they were and then moves the
/// sequence past the largest.
pub const SERIAL_COLUMNS: &[(&str, &str)] = &[("audit_events", "id")];

/// The name of the newest migration: the schema version a backup records
/// and a restore requires.
pub fn schema_version() -> String {
    Migrator::migrations()
        .last()
        .map(|m| m.name().to_string())
        .unwrap_or_default()
}

/// Every migration, oldest first.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Core),
            Box::new(M0002Dns01),
            Box::new(M0003NameDnsProvider),
            Box::new(M0004ApiTokens),
            Box::new(M0005CaStatus),
            Box::new(M0006Revocations),
            Box::new(M0007Operations),
            Box::new(M0008RevocationIntelligence),
            Box::new(M0009LeaseAge),
            Box::new(M0010Deploy),
            Box::new(M0011Redundancy),
            Box::new(M0012Readiness),
            Box::new(M0013Drills),
            Box::new(M0014Preflight),
            Box::new(M0015ManualDestination),
            Box::new(M0016AcmeDnsRegistrations),
            Box::new(M0017PreflightProvider),
            Box::new(M0018MetricCounts),
            Box::new(M0019DeploymentsDue),
            Box::new(M0020SwapHot),
            Box::new(M0022AcmeProfiles),
            Box::new(M0023DnsPersist),
            Box::new(M0024ConsoleSessions),
            Box::new(M0025ConsoleFilters),
            Box::new(M0026NamesByCreation),
            Box::new(M0028CountBuckets),
            Box::new(M0029PlanByIndex),
        ]
    }
}

/// The core tables of issue 2: names, slots, certificates, keys, accounts,
/// orders (the job rows), HTTP-01 tokens and audit events.
pub struct M0001Core;

// Explicit names: `DeriveMigrationName` takes the module's name, which is
// `lib` for every migration in this file.
impl MigrationName for M0001Core {
    fn name(&self) -> &str {
        "m0001_core"
    }
}

const CORE: &str = r#"
CREATE TABLE names (
    id              TEXT PRIMARY KEY,
    domains         TEXT NOT NULL,
    challenge       TEXT NOT NULL,
    key_type        TEXT NOT NULL,
    primary_ca      TEXT NOT NULL,
    backup_ca       TEXT NOT NULL,
    active_slot     TEXT NOT NULL DEFAULT 'primary',
    diversity_error TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    CONSTRAINT names_distinct_cas CHECK (primary_ca <> backup_ca),
    CONSTRAINT names_active_slot CHECK (active_slot IN ('primary', 'backup'))
);

CREATE TABLE private_keys (
    id             TEXT PRIMARY KEY,
    spki_sha256    TEXT NOT NULL UNIQUE,
    key_type       TEXT NOT NULL,
    master_key_id  TEXT NOT NULL,
    nonce          {blob} NOT NULL,
    ciphertext     {blob} NOT NULL,
    compromised    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT NOT NULL
);

CREATE TABLE certificates (
    id              TEXT PRIMARY KEY,
    name_id         TEXT NOT NULL REFERENCES names(id) ON DELETE CASCADE,
    slot            TEXT NOT NULL CHECK (slot IN ('primary', 'backup')),
    ca_id           TEXT NOT NULL,
    private_key_id  TEXT NOT NULL REFERENCES private_keys(id),
    order_id        TEXT NOT NULL,
    serial          TEXT NOT NULL,
    issuer          TEXT NOT NULL,
    root_id         TEXT NOT NULL,
    not_before      BIGINT NOT NULL,
    not_after       BIGINT NOT NULL,
    renew_after     BIGINT NOT NULL,
    spki_sha256     TEXT NOT NULL,
    chain_pem       TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    CONSTRAINT certificates_one_per_key UNIQUE (private_key_id)
);
CREATE INDEX certificates_by_name ON certificates (name_id, slot);

CREATE TABLE slots (
    name_id          TEXT NOT NULL REFERENCES names(id) ON DELETE CASCADE,
    slot             TEXT NOT NULL CHECK (slot IN ('primary', 'backup')),
    ca_id            TEXT NOT NULL,
    current_cert_id  TEXT REFERENCES certificates(id),
    last_error       TEXT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (name_id, slot)
);

CREATE TABLE acme_accounts (
    ca_id          TEXT PRIMARY KEY,
    directory_url  TEXT NOT NULL,
    account_url    TEXT NOT NULL,
    master_key_id  TEXT NOT NULL,
    nonce          {blob} NOT NULL,
    ciphertext     {blob} NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE orders (
    id                TEXT PRIMARY KEY,
    name_id           TEXT NOT NULL REFERENCES names(id) ON DELETE CASCADE,
    slot              TEXT NOT NULL CHECK (slot IN ('primary', 'backup')),
    ca_id             TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('pending', 'processing', 'valid', 'abandoned')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   BIGINT NOT NULL,
    last_error        TEXT,
    lease_owner       TEXT,
    lease_expires_at  BIGINT,
    acme_order_url    TEXT,
    acme_orders       INTEGER NOT NULL DEFAULT 0,
    private_key_id    TEXT REFERENCES private_keys(id),
    certificate_id    TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX orders_due ON orders (state, next_attempt_at);
CREATE UNIQUE INDEX orders_one_open ON orders (name_id, slot) WHERE state IN ('pending', 'processing');
CREATE INDEX orders_by_name ON orders (name_id, slot);

CREATE TABLE http01_tokens (
    token              TEXT PRIMARY KEY,
    key_authorization  TEXT NOT NULL,
    order_id           TEXT NOT NULL,
    created_at         BIGINT NOT NULL
);
CREATE INDEX http01_tokens_by_order ON http01_tokens (order_id);

CREATE TABLE audit_events (
    id       {serial},
    at       BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    reason   TEXT,
    result   TEXT NOT NULL,
    details  TEXT
);
"#;

const DROP_CORE: &str = "DROP TABLE audit_events; DROP TABLE http01_tokens; DROP TABLE orders; \
     DROP TABLE acme_accounts; DROP TABLE slots; DROP TABLE certificates; \
     DROP TABLE private_keys; DROP TABLE names;";

/// Fills the dialect holes of a schema text for one backend.
fn dialect(sql: &str, backend: DbBackend) -> String {
    let (blob, serial) = match backend {
        DbBackend::Postgres => ("BYTEA", "BIGSERIAL PRIMARY KEY"),
        _ => ("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    };
    sql.replace("{blob}", blob).replace("{serial}", serial)
}

async fn run_script(manager: &SchemaManager<'_>, sql: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let sql = dialect(sql, db.get_database_backend());
    // One statement at a time: SQLite's driver runs only the first of a batch.
    for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        db.execute_unprepared(stmt).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Core {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, CORE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, DROP_CORE).await
    }
}

/// DNS-01 (issue 3): the TXT records an order published, written before
/// they are published so a crash never leaves one behind unrecorded, and
/// the time the propagation check took.
pub struct M0002Dns01;

impl MigrationName for M0002Dns01 {
    fn name(&self) -> &str {
        "m0002_dns01"
    }
}

const DNS01: &str = r#"
CREATE TABLE dns_records (
    id           TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL,
    provider_id  TEXT NOT NULL,
    fqdn         TEXT NOT NULL,
    value        TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX dns_records_by_order ON dns_records (order_id);
ALTER TABLE orders ADD COLUMN propagation_ms BIGINT
"#;

#[async_trait::async_trait]
impl MigrationTrait for M0002Dns01 {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, DNS01).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "DROP TABLE dns_records; ALTER TABLE orders DROP COLUMN propagation_ms",
        )
        .await
    }
}

/// A name may pin the DNS provider its DNS-01 records go through.
pub struct M0003NameDnsProvider;

impl MigrationName for M0003NameDnsProvider {
    fn name(&self) -> &str {
        "m0003_name_dns_provider"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003NameDnsProvider {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "ALTER TABLE names ADD COLUMN dns_provider TEXT").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "ALTER TABLE names DROP COLUMN dns_provider").await
    }
}

/// API tokens (issue 4): only a SHA-256 of each secret is stored.
pub struct M0004ApiTokens;

impl MigrationName for M0004ApiTokens {
    fn name(&self) -> &str {
        "m0004_api_tokens"
    }
}

const API_TOKENS: &str = r#"
CREATE TABLE api_tokens (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    role           TEXT NOT NULL CHECK (role IN ('viewer', 'deployer', 'operator', 'admin')),
    secret_sha256  TEXT NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    last_used_at   BIGINT,
    expires_at     BIGINT
)
"#;

#[async_trait::async_trait]
impl MigrationTrait for M0004ApiTokens {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, API_TOKENS).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP TABLE api_tokens").await
    }
}

/// Operator decisions about CAs (distrust), which outlive restarts.
pub struct M0005CaStatus;

impl MigrationName for M0005CaStatus {
    fn name(&self) -> &str {
        "m0005_ca_status"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0005CaStatus {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE ca_status (ca_id TEXT PRIMARY KEY, distrusted BOOLEAN NOT NULL, \
             reason TEXT, updated_at BIGINT NOT NULL)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP TABLE ca_status").await
    }
}

/// Revocation jobs (key compromise): written in the transaction that
/// records the compromise, carried out by the worker.
pub struct M0006Revocations;

impl MigrationName for M0006Revocations {
    fn name(&self) -> &str {
        "m0006_revocations"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0006Revocations {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE revocations (id TEXT PRIMARY KEY, certificate_id TEXT NOT NULL UNIQUE, \
             ca_id TEXT NOT NULL, chain_pem TEXT NOT NULL, reason_code INTEGER NOT NULL, \
             state TEXT NOT NULL \
             CHECK (state IN ('pending', 'done')), attempts INTEGER NOT NULL DEFAULT 0, \
             last_error TEXT, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP TABLE revocations").await
    }
}

/// Emergency operations (issue 5): one record per swap, distrust, re-key or
/// bulk compromise; the markers that tell the worker which slots to
/// re-provision or re-key; order priority, the operation an order serves,
/// and when its ACME order was opened (pacing by orders per hour); when a
/// certificate is known to be revoked. And each name's *swap facts*: per
/// slot, the current certificate's CA, SPKI and the time until which it is
/// usable as a swap target (its `not_after`; 0 once revoked or its key is
/// compromised), copied onto the name so a swap of a million names reads
/// one table instead of five (existing rows are filled in here). Indexes
/// on the foreign keys that had none, so deleting a certificate or key
/// does not scan every slot or order on PostgreSQL.
pub struct M0007Operations;

impl MigrationName for M0007Operations {
    fn name(&self) -> &str {
        "m0007_operations"
    }
}

const OPERATIONS: &str = r#"
CREATE TABLE operations (
    id           TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    actor        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    scope        TEXT NOT NULL,
    avoid_ca     TEXT,
    counts       TEXT NOT NULL,
    affected     BIGINT NOT NULL,
    blocked      BIGINT NOT NULL DEFAULT 0,
    reprovision_open BOOLEAN NOT NULL DEFAULT FALSE,
    duration_ms  BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    seq          BIGINT NOT NULL
);
CREATE INDEX operations_by_seq ON operations (seq);
ALTER TABLE names ADD COLUMN primary_reprovision_op TEXT;
ALTER TABLE names ADD COLUMN backup_reprovision_op TEXT;
ALTER TABLE names ADD COLUMN rekey_op TEXT;
ALTER TABLE names ADD COLUMN rekey_since BIGINT;
CREATE INDEX names_rekey ON names (rekey_op) WHERE rekey_op IS NOT NULL;
ALTER TABLE orders ADD COLUMN operation_id TEXT;
ALTER TABLE orders ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
ALTER TABLE orders ADD COLUMN acme_ordered_at BIGINT;
CREATE INDEX orders_by_operation ON orders (operation_id) WHERE operation_id IS NOT NULL;
CREATE INDEX orders_paced ON orders (ca_id, acme_ordered_at);
CREATE INDEX slots_by_cert ON slots (current_cert_id);
CREATE INDEX certificates_by_key ON certificates (private_key_id);
CREATE INDEX orders_by_key ON orders (private_key_id);
ALTER TABLE certificates ADD COLUMN revoked_at BIGINT;
ALTER TABLE names ADD COLUMN primary_cert_ca TEXT;
ALTER TABLE names ADD COLUMN backup_cert_ca TEXT;
ALTER TABLE names ADD COLUMN primary_spki TEXT;
ALTER TABLE names ADD COLUMN backup_spki TEXT;
ALTER TABLE names ADD COLUMN primary_usable_until BIGINT;
ALTER TABLE names ADD COLUMN backup_usable_until BIGINT;
UPDATE names SET
    primary_cert_ca = (SELECT c.ca_id FROM slots s JOIN certificates c ON c.id = s.current_cert_id
        WHERE s.name_id = names.id AND s.slot = 'primary'),
    backup_cert_ca = (SELECT c.ca_id FROM slots s JOIN certificates c ON c.id = s.current_cert_id
        WHERE s.name_id = names.id AND s.slot = 'backup'),
    primary_spki = (SELECT c.spki_sha256 FROM slots s JOIN certificates c ON c.id = s.current_cert_id
        WHERE s.name_id = names.id AND s.slot = 'primary'),
    backup_spki = (SELECT c.spki_sha256 FROM slots s JOIN certificates c ON c.id = s.current_cert_id
        WHERE s.name_id = names.id AND s.slot = 'backup'),
    primary_usable_until = (SELECT CASE WHEN k.compromised THEN 0 ELSE c.not_after END
        FROM slots s JOIN certificates c ON c.id = s.current_cert_id
        JOIN private_keys k ON k.id = c.private_key_id
        WHERE s.name_id = names.id AND s.slot = 'primary'),
    backup_usable_until = (SELECT CASE WHEN k.compromised THEN 0 ELSE c.not_after END
        FROM slots s JOIN certificates c ON c.id = s.current_cert_id
        JOIN private_keys k ON k.id = c.private_key_id
        WHERE s.name_id = names.id AND s.slot = 'backup')
"#;

#[async_trait::async_trait]
impl MigrationTrait for M0007Operations {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            // Room in every page for a second version of each row, so a
            // mass swap's UPDATE is HOT (no index entries rewritten): it
            // touches no indexed column. Set before the backfill below
            // rewrites every row, so existing rows get the room too.
            db.execute_unprepared("ALTER TABLE names SET (fillfactor = 50)")
                .await?;
        }
        run_script(manager, OPERATIONS).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "DROP INDEX orders_by_key; DROP INDEX certificates_by_key; DROP INDEX slots_by_cert; \
             DROP INDEX orders_paced; DROP INDEX orders_by_operation; DROP INDEX names_rekey; \
             DROP TABLE operations; \
             ALTER TABLE names DROP COLUMN primary_cert_ca; ALTER TABLE names DROP COLUMN backup_cert_ca; \
             ALTER TABLE names DROP COLUMN primary_spki; ALTER TABLE names DROP COLUMN backup_spki; \
             ALTER TABLE names DROP COLUMN primary_usable_until; \
             ALTER TABLE names DROP COLUMN backup_usable_until; \
             ALTER TABLE certificates DROP COLUMN revoked_at; \
             ALTER TABLE orders DROP COLUMN acme_ordered_at; ALTER TABLE orders DROP COLUMN priority; \
             ALTER TABLE orders DROP COLUMN operation_id; ALTER TABLE names DROP COLUMN rekey_since; \
             ALTER TABLE names DROP COLUMN rekey_op; \
             ALTER TABLE names DROP COLUMN backup_reprovision_op; \
             ALTER TABLE names DROP COLUMN primary_reprovision_op",
        )
        .await
    }
}

/// Revocation and renewal intelligence (issue 6): per certificate, where
/// its status comes from (CRL distribution points, OCSP responder, ARI
/// certificate id — read from the certificate once, NULL until then), the
/// last status check and, once found revoked, the reason, the source, the
/// evidence and whether the reaction to it has run (a revocation recorded
/// but not yet reacted to — after a crash, or while a CA incident waits for
/// an operator — is picked up by a later pass); its ARI window. The `replaces` an order sent; when each
/// name last had a usable standby; CA-level incidents; alerts (open ones
/// are unique per kind and subject, so a condition seen every pass is one
/// alert with a count, not a flood); singleton leases so only one replica
/// runs the periodic checks.
pub struct M0008RevocationIntelligence;

impl MigrationName for M0008RevocationIntelligence {
    fn name(&self) -> &str {
        "m0008_revocation_intelligence"
    }
}

const REVOCATION_INTELLIGENCE: &str = r#"
ALTER TABLE certificates ADD COLUMN crl_urls TEXT;
ALTER TABLE certificates ADD COLUMN ocsp_url TEXT;
ALTER TABLE certificates ADD COLUMN ari_cert_id TEXT;
ALTER TABLE certificates ADD COLUMN status_checked_at BIGINT;
ALTER TABLE certificates ADD COLUMN status_source TEXT;
ALTER TABLE certificates ADD COLUMN status_error TEXT;
ALTER TABLE certificates ADD COLUMN revocation_reason INTEGER;
ALTER TABLE certificates ADD COLUMN revocation_source TEXT;
ALTER TABLE certificates ADD COLUMN revocation_evidence TEXT;
ALTER TABLE certificates ADD COLUMN revocation_detected_at BIGINT;
ALTER TABLE certificates ADD COLUMN revocation_reacted_at BIGINT;
CREATE INDEX certificates_revocation_detected ON certificates (ca_id, revocation_detected_at)
    WHERE revocation_detected_at IS NOT NULL;
ALTER TABLE certificates ADD COLUMN ari_window_start BIGINT;
ALTER TABLE certificates ADD COLUMN ari_window_end BIGINT;
ALTER TABLE certificates ADD COLUMN ari_explanation_url TEXT;
ALTER TABLE certificates ADD COLUMN ari_checked_at BIGINT;
ALTER TABLE certificates ADD COLUMN ari_next_poll BIGINT;
ALTER TABLE certificates ADD COLUMN ari_past_at BIGINT;
ALTER TABLE orders ADD COLUMN replaces TEXT;
ALTER TABLE names ADD COLUMN standby_missing_since BIGINT;
CREATE TABLE ca_incidents (
    id             TEXT PRIMARY KEY,
    ca_id          TEXT NOT NULL,
    state          TEXT NOT NULL CHECK (state IN ('open', 'closed')),
    policy         TEXT NOT NULL,
    revoked        BIGINT NOT NULL,
    ari_past       BIGINT NOT NULL,
    total          BIGINT NOT NULL,
    window_seconds BIGINT NOT NULL,
    summary        TEXT NOT NULL,
    operation_id   TEXT,
    dry_run        TEXT,
    opened_at      BIGINT NOT NULL,
    closed_at      BIGINT,
    closed_by      TEXT,
    close_reason   TEXT
);
CREATE UNIQUE INDEX ca_incidents_one_open ON ca_incidents (ca_id) WHERE state = 'open';
CREATE TABLE alerts (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    severity   TEXT NOT NULL,
    message    TEXT NOT NULL,
    details    TEXT,
    first_at   BIGINT NOT NULL,
    last_at    BIGINT NOT NULL,
    count      BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE UNIQUE INDEX alerts_one_open ON alerts (kind, subject) WHERE resolved_at IS NULL;
CREATE INDEX alerts_by_last ON alerts (last_at);
CREATE TABLE singleton_leases (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
)
"#;

#[async_trait::async_trait]
impl MigrationTrait for M0008RevocationIntelligence {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, REVOCATION_INTELLIGENCE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut script = String::from(
            "DROP INDEX certificates_revocation_detected; \
             DROP TABLE singleton_leases; DROP TABLE alerts; DROP TABLE ca_incidents; \
             ALTER TABLE names DROP COLUMN standby_missing_since; \
             ALTER TABLE orders DROP COLUMN replaces",
        );
        for col in [
            "crl_urls",
            "ocsp_url",
            "ari_cert_id",
            "status_checked_at",
            "status_source",
            "status_error",
            "revocation_reason",
            "revocation_source",
            "revocation_evidence",
            "revocation_detected_at",
            "ari_window_start",
            "ari_window_end",
            "ari_explanation_url",
            "ari_checked_at",
            "ari_next_poll",
            "ari_past_at",
        ] {
            script.push_str(&format!("; ALTER TABLE certificates DROP COLUMN {col}"));
        }
        run_script(manager, &script).await
    }
}

/// Scale-out (issue 8): when an order's current lease was taken, so
/// `/metrics` can show how long the oldest job has been held (a worker
/// stuck on one order shows as a growing age while its heartbeat keeps the
/// lease alive); and whether a pending order waits only for its CA's pace,
/// so a worker started with a higher `orders_per_hour` wakes those at once
/// instead of leaving them to the hour computed under the old limit.
pub struct M0009LeaseAge;

impl MigrationName for M0009LeaseAge {
    fn name(&self) -> &str {
        "m0009_lease_age"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0009LeaseAge {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE orders ADD COLUMN leased_at BIGINT; \
             ALTER TABLE orders ADD COLUMN paced BOOLEAN NOT NULL DEFAULT FALSE",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE orders DROP COLUMN leased_at; ALTER TABLE orders DROP COLUMN paced",
        )
        .await
    }
}

/// Deployment and alert delivery (issue 7): where each name's active
/// certificate is written (`deployments`, one row per name and configured
/// destination, with the certificate last written and whether an endpoint
/// check has seen it), the TLS endpoints that serve it and their last
/// check step by step (`endpoints`), and every alert delivery attempt
/// (`notifications`); `alerts.notified_at` rate-limits reminders.
pub struct M0010Deploy;

impl MigrationName for M0010Deploy {
    fn name(&self) -> &str {
        "m0010_deploy"
    }
}

const DEPLOY: &str = r#"
CREATE TABLE deployments (
    name_id          TEXT NOT NULL REFERENCES names(id) ON DELETE CASCADE,
    destination      TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('requested', 'confirmed', 'failed')),
    cert_id          TEXT,
    requested_at     BIGINT NOT NULL,
    deployed_at      BIGINT,
    confirmed_at     BIGINT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_error       TEXT,
    detail           TEXT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (name_id, destination)
);
CREATE INDEX deployments_due ON deployments (next_attempt_at);
CREATE TABLE endpoints (
    id             TEXT PRIMARY KEY,
    name_id        TEXT NOT NULL REFERENCES names(id) ON DELETE CASCADE,
    host           TEXT NOT NULL,
    port           INTEGER NOT NULL,
    sni            TEXT,
    ip             TEXT,
    admin_contact  TEXT,
    outcome        TEXT,
    summary        TEXT,
    steps          TEXT,
    served_serial  TEXT,
    cert_id        TEXT,
    checked_at     BIGINT,
    next_check_at  BIGINT NOT NULL
);
CREATE INDEX endpoints_due ON endpoints (next_check_at);
CREATE INDEX endpoints_by_name ON endpoints (name_id);
CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,
    alert_id   TEXT NOT NULL,
    channel    TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    at         BIGINT NOT NULL,
    ok         BOOLEAN NOT NULL,
    error      TEXT
);
CREATE INDEX notifications_by_alert ON notifications (alert_id);
ALTER TABLE alerts ADD COLUMN notified_at BIGINT;
ALTER TABLE alerts ADD COLUMN notify_after BIGINT;
ALTER TABLE orders ADD COLUMN failing_since BIGINT
"#;

#[async_trait::async_trait]
impl MigrationTrait for M0010Deploy {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, DEPLOY).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE orders DROP COLUMN failing_since; \
             ALTER TABLE alerts DROP COLUMN notify_after; ALTER TABLE alerts DROP COLUMN notified_at; \
             DROP TABLE notifications; \
             DROP TABLE endpoints; DROP TABLE deployments",
        )
        .await
    }
}

/// Redundancy after emergencies (issue 20): per slot, the operation that
/// superseded its certificate (a swap away from its CA, a distrust, a
/// compromise), kept until a new certificate replaces it — the name has no
/// real standby meanwhile, however valid the old certificate still is; and
/// per order, why it holds back before its first attempt (re-issuing from
/// the CA swapped away from waits out `reprovision_same_ca_after_seconds`).
pub struct M0011Redundancy;

impl MigrationName for M0011Redundancy {
    fn name(&self) -> &str {
        "m0011_redundancy"
    }
}

const REDUNDANCY: &str = r#"
ALTER TABLE names ADD COLUMN primary_superseded_by TEXT;
ALTER TABLE names ADD COLUMN backup_superseded_by TEXT;
CREATE INDEX names_primary_superseded ON names (primary_superseded_by)
    WHERE primary_superseded_by IS NOT NULL;
CREATE INDEX names_backup_superseded ON names (backup_superseded_by)
    WHERE backup_superseded_by IS NOT NULL;
ALTER TABLE orders ADD COLUMN held_reason TEXT
"#;

#[async_trait::async_trait]
impl MigrationTrait for M0011Redundancy {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, REDUNDANCY).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE orders DROP COLUMN held_reason; \
             DROP INDEX names_backup_superseded; DROP INDEX names_primary_superseded; \
             ALTER TABLE names DROP COLUMN backup_superseded_by; \
             ALTER TABLE names DROP COLUMN primary_superseded_by",
        )
        .await
    }
}

/// Emergency readiness (issue 22): the latest report, computed by one
/// replica, read by every API server.
pub struct M0012Readiness;

impl MigrationName for M0012Readiness {
    fn name(&self) -> &str {
        "m0012_readiness"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0012Readiness {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE readiness (id TEXT PRIMARY KEY, computed_at BIGINT NOT NULL, \
             report TEXT NOT NULL)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP TABLE readiness").await
    }
}

/// Drills (issue 22): one row per drill, requested by the API (`running`),
/// run and finished by one worker replica, its report stored as JSON.
pub struct M0013Drills;

impl MigrationName for M0013Drills {
    fn name(&self) -> &str {
        "m0013_drills"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0013Drills {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE drills (id TEXT PRIMARY KEY, ca_id TEXT NOT NULL, mode TEXT NOT NULL, \
             state TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL, \
             request TEXT NOT NULL, report TEXT, created_at BIGINT NOT NULL, \
             started_at BIGINT, finished_at BIGINT); \
             CREATE INDEX drills_state ON drills (state, created_at)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP TABLE drills").await
    }
}

/// Preflight (issue 16): the latest CAA and delegation checks of each
/// name, the report as JSON plus per-kind finding counts that `/metrics`
/// reads through their indexes (never a scan over every name), and the
/// CA pair the checks were made for (a changed pair is re-checked).
pub struct M0014Preflight;

impl MigrationName for M0014Preflight {
    fn name(&self) -> &str {
        "m0014_preflight"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0014Preflight {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE preflight (\
             name_id TEXT PRIMARY KEY REFERENCES names(id) ON DELETE CASCADE, \
             checked_at BIGINT NOT NULL, primary_ca TEXT NOT NULL, backup_ca TEXT NOT NULL, \
             caa_findings INTEGER NOT NULL DEFAULT 0, \
             delegation_findings INTEGER NOT NULL DEFAULT 0, \
             errors INTEGER NOT NULL DEFAULT 0, report TEXT NOT NULL); \
             CREATE INDEX preflight_checked ON preflight (checked_at); \
             CREATE INDEX preflight_caa ON preflight (caa_findings); \
             CREATE INDEX preflight_delegation ON preflight (delegation_findings); \
             CREATE INDEX preflight_errors ON preflight (errors)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP TABLE preflight").await
    }
}

/// Install requests of `manual` destinations (issue 19): one row per
/// package mailed to a server's administrator. The download token is kept
/// only as its SHA-256; the package and a password not yet shown are
/// sealed (AEAD under a master key, as private keys are) and wiped once
/// they can no longer be fetched.
pub struct M0015ManualDestination;

impl MigrationName for M0015ManualDestination {
    fn name(&self) -> &str {
        "m0015_manual_destination"
    }
}

const MANUAL_DESTINATION: &str = r#"
CREATE TABLE install_packages (
    id                  TEXT PRIMARY KEY,
    name_id             TEXT NOT NULL REFERENCES names(id) ON DELETE CASCADE,
    destination         TEXT NOT NULL,
    cert_id             TEXT NOT NULL,
    serial              TEXT NOT NULL,
    token_sha256        TEXT NOT NULL UNIQUE,
    state               TEXT NOT NULL CHECK (state IN ('open', 'downloaded', 'superseded')),
    one_time            BOOLEAN NOT NULL,
    password_delivery   TEXT NOT NULL CHECK (password_delivery IN ('api', 'mail')),
    contacts            TEXT NOT NULL,
    master_key_id       TEXT,
    nonce               {blob},
    ciphertext          {blob},
    password_key_id     TEXT,
    password_nonce      {blob},
    password_ciphertext {blob},
    password_shown_at   BIGINT,
    created_at          BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    downloads           INTEGER NOT NULL DEFAULT 0,
    downloaded_at       BIGINT,
    remind_at           BIGINT,
    reminded_at         BIGINT,
    superseded_at       BIGINT,
    superseded_by       TEXT
);
CREATE INDEX install_packages_by_deployment ON install_packages (name_id, destination, created_at);
CREATE INDEX install_packages_remind ON install_packages (remind_at)
    WHERE remind_at IS NOT NULL
"#;

#[async_trait::async_trait]
impl MigrationTrait for M0015ManualDestination {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, MANUAL_DESTINATION).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP TABLE install_packages").await
    }
}

/// acme-dns registrations (issue 16): one account per (provider, domain) at
/// an acme-dns server, its credentials sealed like ACME account keys
/// (`master_key_id`, `nonce`, `ciphertext`); `fulldomain` is where the
/// domain's `_acme-challenge` CNAME must point, and how a record placed
/// there is traced back to its account.
pub struct M0016AcmeDnsRegistrations;

impl MigrationName for M0016AcmeDnsRegistrations {
    fn name(&self) -> &str {
        "m0016_acme_dns_registrations"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0016AcmeDnsRegistrations {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE acme_dns_registrations (provider_id TEXT NOT NULL, \
             domain TEXT NOT NULL, fulldomain TEXT NOT NULL, subdomain TEXT NOT NULL, \
             master_key_id TEXT NOT NULL, nonce {blob} NOT NULL, ciphertext {blob} NOT NULL, \
             created_at BIGINT NOT NULL, PRIMARY KEY (provider_id, domain)); \
             CREATE INDEX acme_dns_registrations_fulldomain \
             ON acme_dns_registrations (provider_id, fulldomain)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP TABLE acme_dns_registrations").await
    }
}

/// Preflight's provider check (issue 16): names whose DNS provider refused
/// our credentials or does not hold the zone, counted through an index
/// like the CAA and delegation findings of [`M0014Preflight`].
pub struct M0017PreflightProvider;

impl MigrationName for M0017PreflightProvider {
    fn name(&self) -> &str {
        "m0017_preflight_provider"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0017PreflightProvider {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE preflight ADD COLUMN provider_findings INTEGER NOT NULL DEFAULT 0; \
             CREATE INDEX preflight_provider ON preflight (provider_findings)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "DROP INDEX preflight_provider; ALTER TABLE preflight DROP COLUMN provider_findings",
        )
        .await
    }
}

/// Names by creation time (issue 21): the preflight controller looks for
/// never-checked names among those created since its last look, not in an
/// anti-join over every name every half minute.
pub struct M0026NamesByCreation;

impl MigrationName for M0026NamesByCreation {
    fn name(&self) -> &str {
        "m0026_names_by_creation"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0026NamesByCreation {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "CREATE INDEX names_created ON names (created_at)").await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP INDEX names_created").await
    }
}

/// ACME profiles (issue 17, item 1): a name's per-CA profile overrides
/// (JSON object CA id → profile; NULL: none), and per order the profile it
/// asked for and whether the CA's order object confirmed it (NULL: none
/// asked for, or the order predates this migration).
pub struct M0022AcmeProfiles;

impl MigrationName for M0022AcmeProfiles {
    fn name(&self) -> &str {
        "m0022_acme_profiles"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0022AcmeProfiles {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE names ADD COLUMN acme_profiles TEXT; \
             ALTER TABLE orders ADD COLUMN acme_profile TEXT; \
             ALTER TABLE orders ADD COLUMN acme_profile_confirmed BOOLEAN",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE orders DROP COLUMN acme_profile_confirmed; \
             ALTER TABLE orders DROP COLUMN acme_profile; \
             ALTER TABLE names DROP COLUMN acme_profiles",
        )
        .await
    }
}

/// The operator console (issue 18): server-side sessions, found by the
/// SHA-256 of the cookie's secret (the secret itself is never stored), and
/// OpenID Connect sign-ins in progress, found by the SHA-256 of their
/// `state` and deleted when the IdP sends the person back.
pub struct M0024ConsoleSessions;

impl MigrationName for M0024ConsoleSessions {
    fn name(&self) -> &str {
        "m0024_console_sessions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0024ConsoleSessions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE console_sessions (id_sha256 TEXT PRIMARY KEY, actor TEXT NOT NULL, \
             role TEXT NOT NULL, csrf TEXT NOT NULL, created_at BIGINT NOT NULL, \
             last_seen_at BIGINT NOT NULL); \
             CREATE INDEX console_sessions_last_seen ON console_sessions (last_seen_at); \
             CREATE TABLE console_logins (state_sha256 TEXT PRIMARY KEY, nonce TEXT NOT NULL, \
             pkce_verifier TEXT NOT NULL, created_at BIGINT NOT NULL); \
             CREATE INDEX console_logins_created ON console_logins (created_at)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "DROP TABLE console_logins; DROP TABLE console_sessions",
        )
        .await
    }
}

/// dns-persist-01 (issue 17): per CA, the issuer domain name twincert
/// writes into its `_validation-persist` records — chosen from the CA's
/// challenge `issuer-domain-names` the first time one is seen, so the API
/// shows the record the CA will look for.
pub struct M0023DnsPersist;

impl MigrationName for M0023DnsPersist {
    fn name(&self) -> &str {
        "m0023_dns_persist"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0023DnsPersist {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE dns_persist_issuers (ca_id TEXT PRIMARY KEY, \
             issuer_domain_name TEXT NOT NULL, seen_at BIGINT NOT NULL)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP TABLE dns_persist_issuers").await
    }
}

/// A mass swap's UPDATE is HOT again on PostgreSQL (issue 21): the two
/// partial indexes on `names.{primary,backup}_superseded_by` (from
/// [`M0011Redundancy`]) made every flipped row a non-HOT update — a new
/// heap tuple plus an entry in *every* index of `names` (its primary key
/// included) and a WAL record for each — because the swap sets those
/// columns. Nothing reads them through the index in a way that needs it
/// (an operation's progress already counts its unindexed re-provisioning
/// markers with one scan), so they go, as the re-provisioning markers
/// were never indexed for the same reason. On SQLite they cost two index
/// entries per flipped row as well.
pub struct M0020SwapHot;

impl MigrationName for M0020SwapHot {
    fn name(&self) -> &str {
        "m0020_swap_hot"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0020SwapHot {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "DROP INDEX names_primary_superseded; DROP INDEX names_backup_superseded",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE INDEX names_primary_superseded ON names (primary_superseded_by) \
             WHERE primary_superseded_by IS NOT NULL; \
             CREATE INDEX names_backup_superseded ON names (backup_superseded_by) \
             WHERE backup_superseded_by IS NOT NULL",
        )
        .await
    }
}

/// Maintained counts for `/metrics` (issue 21): the aggregates over all
/// names, slots and certificates, recounted by one replica under the
/// `counts` singleton lease and stored here, so a scrape reads these rows
/// instead of joining millions. `part` says which family a row belongs to
/// (`meta`, `total`, `usage_active`, `usage_slots`, `sealed`, `series`);
/// `series` is the series text (or CA / key id), `value` the number as
/// text (exact for f64 both ways, and a type backups carry as it is); the
/// whole set is replaced in one transaction by each pass.
pub struct M0018MetricCounts;

impl MigrationName for M0018MetricCounts {
    fn name(&self) -> &str {
        "m0018_metric_counts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0018MetricCounts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE TABLE metric_counts (part TEXT NOT NULL, series TEXT NOT NULL, \
             value TEXT NOT NULL, PRIMARY KEY (part, series))",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(manager, "DROP TABLE metric_counts").await
    }
}

/// The deployer's queue (issue 21): `deployments.due_at` is set when a
/// deployment must be written (by the transaction that changed the name's
/// active certificate, or by the deployer after a swap) and cleared when
/// it was; the partial index holds only the marked rows, so a poll reads
/// those and not every deployment. At upgrade, every deployment that does
/// not hold its name's active certificate is marked, at its backoff.
pub struct M0019DeploymentsDue;

impl MigrationName for M0019DeploymentsDue {
    fn name(&self) -> &str {
        "m0019_deployments_due"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0019DeploymentsDue {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "ALTER TABLE deployments ADD COLUMN due_at BIGINT; \
             UPDATE deployments SET due_at = next_attempt_at WHERE cert_id IS NULL \
             OR cert_id <> (SELECT s.current_cert_id FROM names n JOIN slots s \
             ON s.name_id = n.id AND s.slot = n.active_slot WHERE n.id = deployments.name_id); \
             CREATE INDEX deployments_due_at ON deployments (due_at) WHERE due_at IS NOT NULL",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "DROP INDEX deployments_due_at; ALTER TABLE deployments DROP COLUMN due_at",
        )
        .await
    }
}

/// Counts maintained by bucket (issue 21): every name belongs to one of
/// 4,096 fixed buckets (`names.count_bucket`, its keys'
/// `private_keys.count_bucket` the same); a transaction that changes what
/// a name counts as marks its bucket in `count_dirty` (a CA-wide change
/// marks bucket -1, "all"); the `counts` pass recounts only marked buckets
/// and those whose `count_buckets.valid_until` came (the next moment one
/// of their time-dependent figures changes), stores each bucket's partial
/// sums in `count_partials`, and adds them up. Existing rows get a bucket
/// from what each backend has at hand (SQLite's rowid, PostgreSQL's
/// `hashtext`): any spread is correct, an even one is cheaper. The extra
/// certificate indexes let a pass read the soonest expiries and each CA's
/// newest check without a scan.
pub struct M0028CountBuckets;

impl MigrationName for M0028CountBuckets {
    fn name(&self) -> &str {
        "m0028_count_buckets"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0028CountBuckets {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let spread = match db.get_database_backend() {
            DbBackend::Postgres => "(hashtext(id) & 4095)",
            _ => "(rowid & 4095)",
        };
        run_script(
            manager,
            &format!(
                "ALTER TABLE names ADD COLUMN count_bucket BIGINT NOT NULL DEFAULT 0; \
                 UPDATE names SET count_bucket = {spread}; \
                 CREATE INDEX names_count_bucket ON names (count_bucket); \
                 ALTER TABLE private_keys ADD COLUMN count_bucket BIGINT NOT NULL DEFAULT 0; \
                 UPDATE private_keys SET count_bucket = COALESCE(\
                   (SELECT n.count_bucket FROM certificates c JOIN names n ON n.id = c.name_id \
                    WHERE c.private_key_id = private_keys.id), \
                   (SELECT MAX(n.count_bucket) FROM orders o JOIN names n ON n.id = o.name_id \
                    WHERE o.private_key_id = private_keys.id), 0); \
                 CREATE INDEX private_keys_count_bucket ON private_keys (count_bucket); \
                 CREATE INDEX certificates_expiry ON certificates (not_after, name_id, slot); \
                 CREATE INDEX certificates_checked ON certificates (ca_id, status_checked_at); \
                 CREATE INDEX certificates_ari_checked ON certificates (ca_id, ari_checked_at); \
                 CREATE TABLE count_dirty (bucket BIGINT PRIMARY KEY, taken INTEGER NOT NULL); \
                 CREATE TABLE count_partials (bucket BIGINT NOT NULL, part TEXT NOT NULL, \
                 series TEXT NOT NULL, value BIGINT NOT NULL, PRIMARY KEY (bucket, part, series)); \
                 CREATE TABLE count_buckets (bucket BIGINT PRIMARY KEY, valid_until BIGINT)"
            ),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "DROP TABLE count_buckets; DROP TABLE count_partials; DROP TABLE count_dirty; \
             DROP INDEX certificates_ari_checked; DROP INDEX certificates_checked; \
             DROP INDEX certificates_expiry; DROP INDEX private_keys_count_bucket; \
             ALTER TABLE private_keys DROP COLUMN count_bucket; DROP INDEX names_count_bucket; \
             ALTER TABLE names DROP COLUMN count_bucket",
        )
        .await
    }
}

/// The console's filters at a million names (issue 18): each filter of
/// the names page and of the audit page has an index in key order
/// (`… , id`), so a page seeks to the filter's value and reads a page of
/// rows, however rare the value. The name-state filter finds the names a
/// non-ready state can hold through the partial indexes of its causes
/// (diversity error, a slot without or past its certificate, a failing
/// slot, an order held for a person); the `*_usable_until` range indexes
/// leave NULL out, so `IS NULL` (no certificate yet) reads the partial
/// index in key order instead of sorting every uncertified name (SQLite
/// has no statistics to tell). None of these columns is written by
/// a swap (`active_slot`, `*_superseded_by`, `*_reprovision_op`), so a
/// mass swap's UPDATE stays HOT ([`M0020SwapHot`]).
pub struct M0025ConsoleFilters;

impl MigrationName for M0025ConsoleFilters {
    fn name(&self) -> &str {
        "m0025_console_filters"
    }
}

/// The index names of [`M0025ConsoleFilters`], for `down`.
const CONSOLE_FILTER_INDEXES: [&str; 14] = [
    "names_primary_ca_id",
    "names_backup_ca_id",
    "names_challenge_id",
    "names_diversity_error",
    "names_primary_uncertified",
    "names_backup_uncertified",
    "names_primary_usable_until",
    "names_backup_usable_until",
    "slots_failing",
    "orders_held",
    "preflight_with_findings",
    "audit_events_by_actor",
    "audit_events_by_target",
    "audit_events_by_action",
];

#[async_trait::async_trait]
impl MigrationTrait for M0025ConsoleFilters {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE INDEX names_primary_ca_id ON names ((COALESCE(primary_cert_ca, primary_ca)), id); \
             CREATE INDEX names_backup_ca_id ON names ((COALESCE(backup_cert_ca, backup_ca)), id); \
             CREATE INDEX names_challenge_id ON names (challenge, id); \
             CREATE INDEX names_diversity_error ON names (id) WHERE diversity_error IS NOT NULL; \
             CREATE INDEX names_primary_uncertified ON names (id) WHERE primary_usable_until IS NULL; \
             CREATE INDEX names_backup_uncertified ON names (id) WHERE backup_usable_until IS NULL; \
             CREATE INDEX names_primary_usable_until ON names (primary_usable_until) \
               WHERE primary_usable_until IS NOT NULL; \
             CREATE INDEX names_backup_usable_until ON names (backup_usable_until) \
               WHERE backup_usable_until IS NOT NULL; \
             CREATE INDEX slots_failing ON slots (name_id) \
               WHERE last_error IS NOT NULL AND current_cert_id IS NULL; \
             CREATE INDEX orders_held ON orders (name_id) \
               WHERE held_reason IS NOT NULL AND state IN ('pending', 'processing'); \
             CREATE INDEX preflight_with_findings ON preflight (name_id) \
               WHERE caa_findings > 0 OR delegation_findings > 0 OR provider_findings > 0; \
             CREATE INDEX audit_events_by_actor ON audit_events (actor, id); \
             CREATE INDEX audit_events_by_target ON audit_events (target, id); \
             CREATE INDEX audit_events_by_action ON audit_events (action, id)",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let drop: Vec<String> = CONSOLE_FILTER_INDEXES
            .iter()
            .map(|i| format!("DROP INDEX {i}"))
            .collect();
        run_script(manager, &drop.join("; ")).await
    }
}

/// Renewal planning by index (issue 21): the planner reads the slots due
/// for an order through three index ranges — slots without a certificate
/// (`slots_by_cert`), certificates past `renew_after`, names with a re-key
/// — instead of joining every slot with its name and certificate each
/// pass (4 s every minute at a million names). The `names` index is
/// partial on a column no swap writes, so flipped rows stay HOT.
pub struct M0029PlanByIndex;

impl MigrationName for M0029PlanByIndex {
    fn name(&self) -> &str {
        "m0029_plan_by_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0029PlanByIndex {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "CREATE INDEX certificates_renew_after ON certificates (renew_after); \
             CREATE INDEX names_rekey_since ON names (rekey_since) WHERE rekey_since IS NOT NULL",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_script(
            manager,
            "DROP INDEX names_rekey_since; DROP INDEX certificates_renew_after",
        )
        .await
    }
}
