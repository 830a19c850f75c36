//! Backup export and restore import: every table of the store as JSON
//! lines, the same on both backends, so a SQLite backup restores into
//! PostgreSQL and back. Encrypting the lines (and files) is the caller's
//! job; sealed keys stay sealed in here, as they are in the tables.
//!
//! The text, one JSON value per line:
//! 1. the [`Manifest`]: format and its version, time, twincert version,
//!    schema version (the newest migration), source backend, and per table
//!    its columns and row count;
//! 2. one `{"table": …, "row": […]}` line per row, tables in the order of
//!    `twincert_migrations::TABLES` (foreign keys first), values in the
//!    manifest's column order (text and numbers as JSON, booleans as JSON
//!    booleans, binary as base64, NULL as null);
//! 3. `{"end": {"rows": N, "sha256": …}}`: the row count and the SHA-256 of
//!    every byte before this line.
//!
//! Consistency: the export reads every table inside one read transaction —
//! on PostgreSQL `REPEATABLE READ, READ ONLY` (one snapshot for all
//! statements), on SQLite a deferred transaction, whose first read fixes a
//! WAL snapshot that the serving process's later commits do not change. A
//! running twincert is neither stopped nor blocked.
//!
//! The import runs in one transaction: into an empty store (or, forced,
//! after deleting every row), checked line by line against the manifest,
//! and committed only when the row counts and the checksum match, so a
//! truncated or altered file leaves the store as it was. It writes one
//! audit event (`store.restore`) in the same transaction.

use std::io::{BufRead, Write};

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend,
    IsolationLevel, StreamTrait, TransactionTrait, Value,
};
use serde::{Deserialize, Serialize};
use twincert_migrations::{SERIAL_COLUMNS, TABLES, schema_version};

use super::StoreError;
use super::audit::{AuditEvent, insert_audit};
use super::sql::{all, exec, get, int, one, stmt};

/// The `format` of a backup's manifest.
pub const FORMAT: &str = "twincert-backup";
/// The version of the line format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Backups: the snapshot export and the restore import.
#[derive(Clone)]
pub struct Backups {
    pub(super) db: DatabaseConnection,
}

/// Why an export or an import failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The backup text could not be read (decryption, truncation, I/O).
    #[error("the backup cannot be read: {0}")]
    Unreadable(String),
    /// The backup is readable but not acceptable (format, schema version,
    /// row counts, checksum).
    #[error("the backup is refused: {0}")]
    Invalid(String),
    /// The target store already holds data.
    #[error(
        "the store is not empty ({0}); restore into an empty store (a fresh database), \
         or pass --force to replace everything in it"
    )]
    NotEmpty(String),
    /// The output could not be written.
    #[error("writing the backup: {0}")]
    Write(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The first line of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// When the snapshot was taken (unix seconds, from the caller's clock).
    pub created_at: i64,
    /// The twincert version that wrote it.
    pub twincert_version: String,
    /// The newest migration applied to the source store.
    pub schema_version: String,
    /// `sqlite` or `postgres`.
    pub source_backend: String,
    /// Every table, in insert order.
    pub tables: Vec<TableManifest>,
}

/// One table in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableManifest {
    /// Table name.
    pub name: String,
    /// Column names, in the order of each row's values.
    pub columns: Vec<String>,
    /// Rows in the snapshot.
    pub rows: u64,
}

#[derive(Serialize, Deserialize)]
struct RowLine {
    table: String,
    row: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct EndLine {
    end: End,
}

#[derive(Serialize, Deserialize)]
struct End {
    rows: u64,
    sha256: String,
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The backup's manifest.
    pub manifest: Manifest,
    /// Rows written, all tables.
    pub rows: u64,
}

/// The storage class of a column, as far as a backup cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColType {
    Text,
    /// A 32-bit integer on PostgreSQL (`INTEGER`).
    Int,
    /// A 64-bit integer.
    BigInt,
    Bool,
    Blob,
}

fn col_type(backend: DbBackend, declared: &str) -> Option<ColType> {
    let d = declared.to_ascii_lowercase();
    Some(match (backend, d.as_str()) {
        (_, "text") | (_, "character varying") => ColType::Text,
        // Every SQLite integer is 64-bit.
        (DbBackend::Sqlite, "integer" | "bigint") => ColType::BigInt,
        (_, "bigint") => ColType::BigInt,
        (_, "integer" | "smallint") => ColType::Int,
        (_, "boolean") => ColType::Bool,
        (_, "blob" | "bytea") => ColType::Blob,
        _ => return None,
    })
}

struct Column {
    name: String,
    ty: ColType,
}

/// A writer that hashes what passes through it.
struct Hashing<'a> {
    out: &'a mut dyn Write,
    sha: digest::Context,
}

impl Hashing<'_> {
    fn line<T: Serialize>(&mut self, v: &T) -> Result<(), BackupError> {
        let mut text =
            serde_json::to_vec(v).map_err(|e| BackupError::Write(format!("encoding: {e}")))?;
        text.push(b'\n');
        self.sha.update(&text);
        self.out
            .write_all(&text)
            .map_err(|e| BackupError::Write(e.to_string()))
    }
}

async fn columns<C: ConnectionTrait>(c: &C, table: &str) -> Result<Vec<Column>, BackupError> {
    let backend = ConnectionTrait::get_database_backend(c);
    let rows = match backend {
        DbBackend::Postgres => {
            all(
                c,
                "SELECT column_name AS name, data_type AS ty FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                 ORDER BY ordinal_position",
                vec![table.into()],
            )
            .await?
        }
        _ => {
            all(
                c,
                "SELECT name, type AS ty FROM pragma_table_info($1) ORDER BY cid",
                vec![table.into()],
            )
            .await?
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let name: String = get(r, "name")?;
        let declared: String = get(r, "ty")?;
        // Column names go into SQL text below: only plain identifiers.
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(BackupError::Invalid(format!(
                "column {table}.{name} is not a plain identifier"
            )));
        }
        let ty = col_type(backend, &declared).ok_or_else(|| {
            BackupError::Invalid(format!(
                "column {table}.{name} has type {declared}, which backups do not handle \
                 yet (teach store::backup::col_type about it)"
            ))
        })?;
        out.push(Column { name, ty });
    }
    if out.is_empty() {
        return Err(BackupError::Invalid(format!(
            "table {table} does not exist in the store (is it migrated?)"
        )));
    }
    Ok(out)
}

/// The tables the database has, besides the migrations' own bookkeeping.
async fn actual_tables<C: ConnectionTrait>(c: &C) -> Result<Vec<String>, StoreError> {
    let rows =
        match ConnectionTrait::get_database_backend(c) {
            DbBackend::Postgres => {
                all(
                    c,
                    "SELECT table_name AS name FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                    vec![],
                )
                .await?
            }
            _ => all(
                c,
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                vec![],
            )
            .await?,
        };
    let mut names = rows
        .iter()
        .map(|r| get::<String>(r, "name"))
        .collect::<Result<Vec<_>, _>>()?;
    names.retain(|n| n != "seaql_migrations");
    names.sort();
    Ok(names)
}

/// Checks that `TABLES` names exactly the tables the database has, so a
/// table added by a migration but not to `TABLES` is never left out.
async fn check_tables<C: ConnectionTrait>(c: &C) -> Result<(), BackupError> {
    let actual = actual_tables(c).await?;
    let mut listed: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    listed.sort();
    if actual != listed {
        let missing: Vec<&String> = actual.iter().filter(|t| !listed.contains(t)).collect();
        let absent: Vec<&String> = listed.iter().filter(|t| !actual.contains(t)).collect();
        return Err(BackupError::Invalid(format!(
            "the store's tables differ from twincert_migrations::TABLES (not listed: \
             {missing:?}; not in the store: {absent:?}); run `twincert migrate` with this \
             version, or list the new table in TABLES"
        )));
    }
    Ok(())
}

async fn applied_schema<C: ConnectionTrait>(c: &C) -> Result<String, StoreError> {
    let row = one(
        c,
        "SELECT version FROM seaql_migrations ORDER BY version DESC LIMIT 1",
        vec![],
    )
    .await?;
    match row {
        Some(r) => get(&r, "version"),
        None => Ok(String::new()),
    }
}

fn cell(
    r: &sea_orm::QueryResult,
    c: &Column,
    backend: DbBackend,
) -> Result<serde_json::Value, StoreError> {
    use serde_json::Value as J;
    let col = c.name.as_str();
    Ok(match c.ty {
        ColType::Text => get::<Option<String>>(r, col)?.map_or(J::Null, J::String),
        ColType::Int if backend == DbBackend::Postgres => {
            get::<Option<i32>>(r, col)?.map_or(J::Null, J::from)
        }
        ColType::Int | ColType::BigInt => get::<Option<i64>>(r, col)?.map_or(J::Null, J::from),
        ColType::Bool => get::<Option<bool>>(r, col)?.map_or(J::Null, J::Bool),
        ColType::Blob => {
            get::<Option<Vec<u8>>>(r, col)?.map_or(J::Null, |b| J::String(STANDARD.encode(b)))
        }
    })
}

fn value(table: &str, c: &Column, v: &serde_json::Value) -> Result<Value, BackupError> {
    use serde_json::Value as J;
    let bad = || {
        BackupError::Invalid(format!(
            "{table}.{}: value {v} does not fit the column",
            c.name
        ))
    };
    Ok(match (c.ty, v) {
        (ColType::Text, J::Null) => Option::<String>::None.into(),
        (ColType::Text, J::String(s)) => Some(s.clone()).into(),
        (ColType::Int, J::Null) => Option::<i32>::None.into(),
        (ColType::Int, J::Number(n)) => {
            let n = n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(bad)?;
            Some(n).into()
        }
        (ColType::BigInt, J::Null) => Option::<i64>::None.into(),
        (ColType::BigInt, J::Number(n)) => Some(n.as_i64().ok_or_else(bad)?).into(),
        (ColType::Bool, J::Null) => Option::<bool>::None.into(),
        (ColType::Bool, J::Bool(b)) => Some(*b).into(),
        (ColType::Blob, J::Null) => Option::<Vec<u8>>::None.into(),
        (ColType::Blob, J::String(s)) => Some(STANDARD.decode(s).map_err(|_| bad())?).into(),
        _ => return Err(bad()),
    })
}

/// Rows per INSERT. PostgreSQL: up to 30,000 parameters (its limit is
/// 65,535). SQLite: up to 500, though it allows 32,766 — its driver looks
/// parameters up by name one by one, which grows with the square of their
/// number (30,000 per statement restored 100,000 names in minutes; 500 in
/// seconds).
fn batch_rows(backend: DbBackend, columns: usize) -> usize {
    let params = match backend {
        DbBackend::Postgres => 30_000,
        _ => 500,
    };
    (params / columns.max(1)).clamp(1, 1_000)
}

async fn insert_batch(
    tx: &DatabaseTransaction,
    table: &str,
    cols: &[&Column],
    rows: &mut Vec<Vec<serde_json::Value>>,
) -> Result<(), BackupError> {
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", names.join(", "));
    let mut values = Vec::with_capacity(rows.len() * cols.len());
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&super::sql::holes(values.len() + 1, cols.len()));
        sql.push(')');
        for (c, v) in cols.iter().zip(row) {
            values.push(value(table, c, v)?);
        }
    }
    tx.execute_raw(stmt(&sql, values))
        .await
        .map_err(|e| BackupError::Invalid(format!("inserting into {table}: {e}")))?;
    rows.clear();
    Ok(())
}

fn read_line(input: &mut dyn BufRead, buf: &mut Vec<u8>) -> Result<bool, BackupError> {
    buf.clear();
    let n = input
        .read_until(b'\n', buf)
        .map_err(|e| BackupError::Unreadable(e.to_string()))?;
    Ok(n > 0)
}

impl Backups {
    /// Writes a consistent snapshot of every table to `out` (see the
    /// module doc for the text and the snapshot); returns the manifest.
    pub async fn export(
        &self,
        out: &mut dyn Write,
        now: i64,
        twincert_version: &str,
    ) -> Result<Manifest, BackupError> {
        use futures_util::StreamExt;
        let backend = self.db.get_database_backend();
        let tx = match backend {
            DbBackend::Postgres => {
                self.db
                    .begin_with_config(
                        Some(IsolationLevel::RepeatableRead),
                        Some(AccessMode::ReadOnly),
                    )
                    .await
            }
            _ => self.db.begin().await,
        }
        .map_err(StoreError::from)?;
        check_tables(&tx).await?;
        let schema = applied_schema(&tx).await?;
        let mut tables = Vec::with_capacity(TABLES.len());
        let mut cols = Vec::with_capacity(TABLES.len());
        for t in TABLES {
            let c = columns(&tx, t).await?;
            let n = one(&tx, &format!("SELECT COUNT(*) AS n FROM {t}"), vec![])
                .await?
                .map(|r| int(&r, "n"))
                .transpose()?
                .unwrap_or_default();
            tables.push(TableManifest {
                name: t.to_string(),
                columns: c.iter().map(|c| c.name.clone()).collect(),
                rows: n.max(0) as u64,
            });
            cols.push(c);
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            created_at: now,
            twincert_version: twincert_version.into(),
            schema_version: schema,
            source_backend: match backend {
                DbBackend::Postgres => "postgres".into(),
                _ => "sqlite".into(),
            },
            tables,
        };
        let mut w = Hashing {
            out,
            sha: digest::Context::new(&digest::SHA256),
        };
        w.line(&manifest)?;
        let mut total = 0u64;
        for (t, c) in manifest.tables.iter().zip(&cols) {
            let sql = format!("SELECT {} FROM {}", t.columns.join(", "), t.name);
            let mut rows = tx
                .stream_raw(stmt(&sql, vec![]))
                .await
                .map_err(StoreError::from)?;
            let mut n = 0u64;
            while let Some(r) = rows.next().await {
                let r = r.map_err(StoreError::from)?;
                let row = c
                    .iter()
                    .map(|col| cell(&r, col, backend))
                    .collect::<Result<Vec<_>, _>>()?;
                w.line(&RowLine {
                    table: t.name.clone(),
                    row,
                })?;
                n += 1;
            }
            if n != t.rows {
                // Cannot happen inside one snapshot; if it does, the
                // snapshot was not one and the backup must not pretend.
                return Err(BackupError::Invalid(format!(
                    "{}: counted {} rows but read {n}; the read was not one snapshot",
                    t.name, t.rows
                )));
            }
            total += n;
        }
        let sha = crate::keys::hex(w.sha.clone().finish().as_ref());
        w.line(&EndLine {
            end: End {
                rows: total,
                sha256: sha,
            },
        })?;
        // A read-only transaction: ending it changes nothing.
        tx.rollback().await.map_err(StoreError::from)?;
        Ok(manifest)
    }

    /// Reads a backup from `input` into this store in one transaction (see
    /// the module doc); `force` deletes every row first, else the store
    /// must be empty. `audit` is recorded in the same transaction, with
    /// the row count appended to its details by the caller's choice.
    pub async fn import(
        &self,
        input: &mut dyn BufRead,
        force: bool,
        audit: impl FnOnce(&Manifest, u64) -> AuditEvent,
    ) -> Result<ImportReport, BackupError> {
        let mut sha = digest::Context::new(&digest::SHA256);
        let mut buf = Vec::new();
        if !read_line(input, &mut buf)? {
            return Err(BackupError::Unreadable("the backup is empty".into()));
        }
        sha.update(&buf);
        let manifest: Manifest = serde_json::from_slice(&buf).map_err(|e| {
            BackupError::Invalid(format!("the first line is not a backup manifest: {e}"))
        })?;
        if manifest.format != FORMAT || manifest.format_version != FORMAT_VERSION {
            return Err(BackupError::Invalid(format!(
                "format {} version {}; this twincert reads {FORMAT} version {FORMAT_VERSION}",
                manifest.format, manifest.format_version
            )));
        }
        let ours = schema_version();
        if manifest.schema_version != ours {
            return Err(BackupError::Invalid(format!(
                "it holds schema {} (twincert {}) and this twincert's schema is {ours}; \
                 restore it with twincert {} and upgrade after",
                manifest.schema_version, manifest.twincert_version, manifest.twincert_version
            )));
        }
        let listed: Vec<&str> = manifest.tables.iter().map(|t| t.name.as_str()).collect();
        if listed != TABLES {
            return Err(BackupError::Invalid(format!(
                "its tables {listed:?} are not this schema's {TABLES:?}"
            )));
        }

        let backend = self.db.get_database_backend();
        let tx = self.db.begin().await.map_err(StoreError::from)?;
        check_tables(&tx).await?;
        if force {
            for t in TABLES.iter().rev() {
                exec(&tx, &format!("DELETE FROM {t}"), vec![]).await?;
            }
        } else {
            let mut held = Vec::new();
            for t in TABLES {
                let n = one(&tx, &format!("SELECT COUNT(*) AS n FROM {t}"), vec![])
                    .await?
                    .map(|r| int(&r, "n"))
                    .transpose()?
                    .unwrap_or_default();
                if n > 0 {
                    held.push(format!("{t}: {n} rows"));
                }
            }
            if !held.is_empty() {
                return Err(BackupError::NotEmpty(held.join(", ")));
            }
        }
        // Each table's columns in the backup's order, as the target types them.
        let mut targets = Vec::with_capacity(TABLES.len());
        for t in &manifest.tables {
            let have = columns(&tx, &t.name).await?;
            let mut mapped = Vec::with_capacity(t.columns.len());
            for name in &t.columns {
                let idx = have.iter().position(|c| &c.name == name).ok_or_else(|| {
                    BackupError::Invalid(format!("column {}.{name} is not in this store", t.name))
                })?;
                mapped.push(idx);
            }
            if mapped.len() != have.len() {
                return Err(BackupError::Invalid(format!(
                    "table {} has {} columns here and {} in the backup",
                    t.name,
                    have.len(),
                    mapped.len()
                )));
            }
            targets.push((have, mapped));
        }

        let mut table_idx = 0usize;
        let mut counts = vec![0u64; TABLES.len()];
        let mut pending: Vec<Vec<serde_json::Value>> = Vec::new();
        let mut end: Option<End> = None;
        while read_line(input, &mut buf)? {
            if buf.last() != Some(&b'\n') {
                return Err(BackupError::Unreadable(
                    "the backup ends in the middle of a line (truncated)".into(),
                ));
            }
            if buf.starts_with(b"{\"end\"") {
                let e: EndLine = serde_json::from_slice(&buf)
                    .map_err(|e| BackupError::Invalid(format!("the end line: {e}")))?;
                end = Some(e.end);
                break;
            }
            sha.update(&buf);
            let line: RowLine = serde_json::from_slice(&buf)
                .map_err(|e| BackupError::Invalid(format!("a row line does not parse: {e}")))?;
            if line.table != manifest.tables[table_idx].name {
                let next = manifest.tables[table_idx..]
                    .iter()
                    .position(|t| t.name == line.table)
                    .ok_or_else(|| {
                        BackupError::Invalid(format!(
                            "a row of table {} is out of order",
                            line.table
                        ))
                    })?;
                let (have, mapped) = &targets[table_idx];
                let cols: Vec<&Column> = mapped.iter().map(|i| &have[*i]).collect();
                insert_batch(&tx, TABLES[table_idx], &cols, &mut pending).await?;
                table_idx += next;
            }
            let (have, mapped) = &targets[table_idx];
            if line.row.len() != mapped.len() {
                return Err(BackupError::Invalid(format!(
                    "a row of {} has {} values for {} columns",
                    line.table,
                    line.row.len(),
                    mapped.len()
                )));
            }
            pending.push(line.row);
            counts[table_idx] += 1;
            if pending.len() >= batch_rows(backend, mapped.len()) {
                let cols: Vec<&Column> = mapped.iter().map(|i| &have[*i]).collect();
                insert_batch(&tx, TABLES[table_idx], &cols, &mut pending).await?;
            }
        }
        let Some(end) = end else {
            return Err(BackupError::Unreadable(
                "the backup has no end line (truncated)".into(),
            ));
        };
        let (have, mapped) = &targets[table_idx];
        let cols: Vec<&Column> = mapped.iter().map(|i| &have[*i]).collect();
        insert_batch(&tx, TABLES[table_idx], &cols, &mut pending).await?;
        // The restored partials are as consistent as the snapshot; the
        // next counts pass recounts everything anyway.
        super::counts::mark_all(&tx).await?;

        let digest = crate::keys::hex(sha.finish().as_ref());
        if digest != end.sha256 {
            return Err(BackupError::Invalid(
                "its SHA-256 checksum does not match its contents (altered)".into(),
            ));
        }
        let total: u64 = counts.iter().sum();
        for (t, n) in manifest.tables.iter().zip(&counts) {
            if t.rows != *n {
                return Err(BackupError::Invalid(format!(
                    "table {} has {n} rows, the manifest says {}",
                    t.name, t.rows
                )));
            }
        }
        if total != end.rows {
            return Err(BackupError::Invalid(format!(
                "{total} rows read, the end line says {}",
                end.rows
            )));
        }
        if ConnectionTrait::get_database_backend(&tx) == DbBackend::Postgres {
            for (t, c) in SERIAL_COLUMNS {
                // The next id follows the largest restored one.
                exec(
                    &tx,
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{t}', '{c}'), \
                         COALESCE(MAX({c}), 0) + 1, false) FROM {t}"
                    ),
                    vec![],
                )
                .await?;
            }
        }
        insert_audit(&tx, &audit(&manifest, total)).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(ImportReport {
            manifest,
            rows: total,
        })
    }

    /// Rows in all of twincert's tables (0: an empty store).
    pub async fn row_count(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for t in TABLES {
            if let Some(r) =
                one(&self.db, &format!("SELECT COUNT(*) AS n FROM {t}"), vec![]).await?
            {
                total += int(&r, "n")?.max(0) as u64;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_types_of_both_backends_are_known() {
        let cases = [
            (DbBackend::Sqlite, "TEXT", Some(ColType::Text)),
            (DbBackend::Sqlite, "BIGINT", Some(ColType::BigInt)),
            (DbBackend::Sqlite, "INTEGER", Some(ColType::BigInt)),
            (DbBackend::Sqlite, "BOOLEAN", Some(ColType::Bool)),
            (DbBackend::Sqlite, "BLOB", Some(ColType::Blob)),
            (DbBackend::Postgres, "text", Some(ColType::Text)),
            (DbBackend::Postgres, "bigint", Some(ColType::BigInt)),
            (DbBackend::Postgres, "integer", Some(ColType::Int)),
            (DbBackend::Postgres, "boolean", Some(ColType::Bool)),
            (DbBackend::Postgres, "bytea", Some(ColType::Blob)),
            (DbBackend::Postgres, "double precision", None),
        ];
        for (backend, declared, want) in cases {
            assert_eq!(col_type(backend, declared), want, "{backend:?} {declared}");
        }
    }

    #[test]
    fn json_values_bind_by_column_type_and_misfits_are_named() {
        let col = |ty| Column {
            name: "c".into(),
            ty,
        };
        assert!(value("t", &col(ColType::Int), &serde_json::json!(5)).is_ok());
        assert!(value("t", &col(ColType::Blob), &serde_json::json!("AAEC")).is_ok());
        assert!(value("t", &col(ColType::Bool), &serde_json::json!(null)).is_ok());
        let e = value("t", &col(ColType::Int), &serde_json::json!(1_i64 << 40))
            .expect_err("too big for INTEGER")
            .to_string();
        assert!(e.contains("t.c"), "{e}");
        assert!(value("t", &col(ColType::Bool), &serde_json::json!("yes")).is_err());
        assert!(value("t", &col(ColType::Blob), &serde_json::json!("!!")).is_err());
    }
}
