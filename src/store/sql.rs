//! The SQL helpers every aggregate uses: one statement text for both
//! backends (`$n` placeholders), row getters with the column named in the
//! error, ids made here (not by the database), and [`with_tx`], the one way
//! a multi-row write opens, commits or (on any error) rolls back.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, QueryResult, Statement,
    TransactionTrait, Value,
};

use super::StoreError;

/// A fresh random id (128 bits, hex): ids are made here, not by the
/// database, so one SQL text fits both backends and an id can be written
/// down before the row exists.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    // aws-lc's system RNG does not fail on supported platforms; if it ever
    // did, a time-based id is still unique enough for a row key.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        b.copy_from_slice(&t.to_le_bytes());
    }
    crate::keys::hex(&b)
}

pub(super) fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    // `$n` placeholders are understood by both sqlx drivers; the backend tag
    // only matters for sea-orm's own logging.
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

pub(super) async fn exec<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<u64, StoreError> {
    Ok(c.execute_raw(stmt(sql, values)).await?.rows_affected())
}

pub(super) async fn one<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<Option<QueryResult>, StoreError> {
    Ok(c.query_one_raw(stmt(sql, values)).await?)
}

pub(super) async fn all<C: ConnectionTrait>(
    c: &C,
    sql: &str,
    values: Vec<Value>,
) -> Result<Vec<QueryResult>, StoreError> {
    Ok(c.query_all_raw(stmt(sql, values)).await?)
}

pub(super) fn get<T: sea_orm::TryGetable>(row: &QueryResult, col: &str) -> Result<T, StoreError> {
    row.try_get::<T>("", col)
        .map_err(|e| StoreError::Db(format!("column {col}: {e}")))
}

pub(super) fn is_unique_violation(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(m) if m.contains("UNIQUE") || m.contains("unique") || m.contains("duplicate key"))
}

pub(super) fn holes(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn int(row: &sea_orm::QueryResult, col: &str) -> Result<i64, StoreError> {
    get::<i32>(row, col)
        .map(i64::from)
        .or_else(|_| get::<i64>(row, col))
}

pub(super) fn json_col(
    row: &sea_orm::QueryResult,
    col: &str,
) -> Result<Option<serde_json::Value>, StoreError> {
    let s: Option<String> = get(row, col)?;
    Ok(s.and_then(|s| serde_json::from_str(&s).ok()))
}

/// Runs `f` in one transaction: committed when `f` returns `Ok`, rolled
/// back when `f` or the commit fails (a dropped transaction rolls back).
/// Every multi-row write goes through here.
pub(super) async fn with_tx<T>(
    db: &DatabaseConnection,
    f: impl AsyncFnOnce(&DatabaseTransaction) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let tx = db.begin().await?;
    let out = f(&tx).await?;
    tx.commit().await?;
    Ok(out)
}
