//! The operator console's own rows and reads: server-side sessions (found
//! by the SHA-256 of the cookie secret; the secret is never stored),
//! OpenID Connect sign-ins in progress (found by the SHA-256 of their
//! `state`, taken once), the names page (keyset pagination with prefix
//! search and filters, all in the query) and the overview's aggregates.
//!
//! What a session may do is decided by the console (its role, checked
//! against the API's route table); the store only keeps it. Expiry times
//! are the caller's: the store never reads the clock.

use std::collections::BTreeMap;

use sea_orm::{DatabaseConnection, Value};

use super::StoreError;
use super::audit::AuditEvent;
use super::names::{NAME_SELECT, NAME_STATE_JOINS, name_state_case};
use super::rows::NameRecord;
use super::sql::{all, exec, get, one};
use crate::domain::{ChallengeKind, NameState, Role};

/// Console sessions, sign-ins in progress and the console's page reads.
#[derive(Clone)]
pub struct Console {
    pub(super) db: DatabaseConnection,
}

/// A signed-in person's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The audit actor: the token's name or the person's OIDC identity.
    pub actor: String,
    /// What the session may do.
    pub role: Role,
    /// The per-session CSRF secret every form carries.
    pub csrf: String,
    /// Unix seconds: sign-in.
    pub created_at: i64,
    /// Unix seconds: last request.
    pub last_seen_at: i64,
}

/// An OpenID Connect sign-in between the redirect to the IdP and its
/// return.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingLogin {
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier (RFC 7636).
    pub pkce_verifier: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Which names the names page lists.
#[derive(Debug, Clone, Default)]
pub struct NamePageFilter {
    /// Names starting with this (a prefix: served by the primary key).
    pub prefix: Option<String>,
    /// Names in this state at this time (unix seconds).
    pub state: Option<(NameState, i64)>,
    /// Names with a slot at this CA.
    pub ca: Option<String>,
    /// Names validated this way.
    pub challenge: Option<ChallengeKind>,
    /// Names whose last preflight found something.
    pub with_findings: bool,
}

/// The overview's counts, from one pass over the names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverviewCounts {
    /// Names by state (`ready`, `degraded`, `provisioning`, `waiting`).
    pub states: Vec<(String, i64)>,
    /// Names by standby posture: `usable`, or why not (`no_standby`,
    /// `standby_expired`, `standby_revoked_or_compromised`,
    /// `standby_superseded`).
    pub posture: BTreeMap<String, i64>,
    /// (active CA, standby CA) → names.
    pub mix: BTreeMap<(String, String), i64>,
    /// (CA, days from now) → current certificates whose usable time ends
    /// that day, for the coming `days`.
    pub expiry: BTreeMap<(String, i64), i64>,
}

/// The CA a slot's certificate is from (before its first: its order's).
fn slot_ca(s: &str) -> String {
    format!("COALESCE({s}_cert_ca, {s}_ca)")
}

impl Console {
    // ----- sessions ----------------------------------------------------

    /// Stores a new session and drops sessions past `idle_before` (last
    /// seen before it) or `created_before`.
    pub async fn create_session(
        &self,
        id_sha256: &str,
        s: &SessionRecord,
        idle_before: i64,
        created_before: i64,
    ) -> Result<(), StoreError> {
        exec(
            &self.db,
            "DELETE FROM console_sessions WHERE last_seen_at < $1 OR created_at < $2",
            vec![idle_before.into(), created_before.into()],
        )
        .await?;
        exec(
            &self.db,
            "INSERT INTO console_sessions (id_sha256, actor, role, csrf, created_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                id_sha256.into(),
                s.actor.clone().into(),
                s.role.as_str().into(),
                s.csrf.clone().into(),
                s.created_at.into(),
                s.last_seen_at.into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// The session, if it exists.
    pub async fn session(&self, id_sha256: &str) -> Result<Option<SessionRecord>, StoreError> {
        let Some(row) = one(
            &self.db,
            "SELECT actor, role, csrf, created_at, last_seen_at FROM console_sessions \
             WHERE id_sha256 = $1",
            vec![id_sha256.into()],
        )
        .await?
        else {
            return Ok(None);
        };
        let role: String = get(&row, "role")?;
        Ok(Some(SessionRecord {
            actor: get(&row, "actor")?,
            role: role
                .parse()
                .map_err(|e: String| StoreError::Db(format!("console_sessions.role: {e}")))?,
            csrf: get(&row, "csrf")?,
            created_at: get(&row, "created_at")?,
            last_seen_at: get(&row, "last_seen_at")?,
        }))
    }

    /// Records a request of the session.
    pub async fn touch_session(&self, id_sha256: &str, now: i64) -> Result<(), StoreError> {
        exec(
            &self.db,
            "UPDATE console_sessions SET last_seen_at = $2 WHERE id_sha256 = $1",
            vec![id_sha256.into(), now.into()],
        )
        .await?;
        Ok(())
    }

    /// Ends a session (sign-out, expiry). Whether one was there.
    pub async fn delete_session(&self, id_sha256: &str) -> Result<bool, StoreError> {
        Ok(exec(
            &self.db,
            "DELETE FROM console_sessions WHERE id_sha256 = $1",
            vec![id_sha256.into()],
        )
        .await?
            > 0)
    }

    // ----- OpenID Connect sign-ins in progress ----------------------------

    /// Stores a sign-in started now and drops those created before
    /// `stale_before`.
    pub async fn put_login(
        &self,
        state_sha256: &str,
        login: &PendingLogin,
        stale_before: i64,
    ) -> Result<(), StoreError> {
        exec(
            &self.db,
            "DELETE FROM console_logins WHERE created_at < $1",
            vec![stale_before.into()],
        )
        .await?;
        exec(
            &self.db,
            "INSERT INTO console_logins (state_sha256, nonce, pkce_verifier, created_at) \
             VALUES ($1, $2, $3, $4)",
            vec![
                state_sha256.into(),
                login.nonce.clone().into(),
                login.pkce_verifier.clone().into(),
                login.created_at.into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Takes (reads and deletes) the sign-in with this state: a `state`
    /// works once.
    pub async fn take_login(&self, state_sha256: &str) -> Result<Option<PendingLogin>, StoreError> {
        let Some(row) = one(
            &self.db,
            "SELECT nonce, pkce_verifier, created_at FROM console_logins WHERE state_sha256 = $1",
            vec![state_sha256.into()],
        )
        .await?
        else {
            return Ok(None);
        };
        let n = exec(
            &self.db,
            "DELETE FROM console_logins WHERE state_sha256 = $1",
            vec![state_sha256.into()],
        )
        .await?;
        if n == 0 {
            // Another request took it first.
            return Ok(None);
        }
        Ok(Some(PendingLogin {
            nonce: get(&row, "nonce")?,
            pkce_verifier: get(&row, "pkce_verifier")?,
            created_at: get(&row, "created_at")?,
        }))
    }

    // ----- pages ---------------------------------------------------------

    /// Up to `limit` names after `after` (by id) that `f` admits, with
    /// their slots. Every filter is in the query and the order is the
    /// primary key's, so a page costs the same at any position in a
    /// million names (no count, no offset).
    pub async fn names_page(
        &self,
        f: &NamePageFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<NameRecord>, StoreError> {
        let after = after.unwrap_or("");
        let prefix = f.prefix.as_deref().filter(|p| !p.is_empty());
        // One range on the primary key: from the cursor or the prefix,
        // whichever is later (two lower bounds would let the planner start
        // at the earlier one and walk up to the prefix), up to the prefix's
        // end (`p || U+FFFF`).
        let (start, op) = match prefix {
            Some(p) if p > after => (p, ">="),
            _ => (after, ">"),
        };
        let mut values: Vec<Value> = vec![start.into(), (limit as i64).into()];
        let mut cond = vec![format!("n.id {op} $1")];
        let mut joins = "";
        if let Some(p) = prefix {
            values.push(format!("{p}\u{ffff}").into());
            cond.push(format!("n.id < ${}", values.len()));
        }
        if let Some(ca) = &f.ca {
            values.push(ca.clone().into());
            let h = values.len();
            cond.push(format!(
                "({} = ${h} OR {} = ${h})",
                slot_ca("n.primary"),
                slot_ca("n.backup")
            ));
        }
        if let Some(c) = f.challenge {
            values.push(c.as_str().into());
            cond.push(format!("n.challenge = ${}", values.len()));
        }
        if f.with_findings {
            cond.push(
                "EXISTS (SELECT 1 FROM preflight p WHERE p.name_id = n.id AND \
                 (p.caa_findings > 0 OR p.delegation_findings > 0 OR p.provider_findings > 0))"
                    .into(),
            );
        }
        if let Some((state, now)) = f.state {
            values.push(now.into());
            let t = values.len();
            values.push(state.as_str().into());
            let s = values.len();
            joins = NAME_STATE_JOINS;
            cond.push(format!("{} = ${s}", name_state_case(&format!("${t}"))));
        }
        let page = format!(
            "SELECT n.id FROM names n {joins} WHERE {} ORDER BY n.id LIMIT $2",
            cond.join(" AND ")
        );
        let sql = format!("{NAME_SELECT} WHERE n.id IN ({page}) ORDER BY n.id, s.slot DESC");
        let rows = all(&self.db, &sql, values).await?;
        super::rows::names_from_rows(&rows)
    }

    /// The overview's counts at `now`: states by the API's rule, standby
    /// posture and CA mix from the names' swap facts (one pass, no join),
    /// and the expiry timeline of the coming `days` per CA.
    pub async fn overview_counts(&self, now: i64, days: i64) -> Result<OverviewCounts, StoreError> {
        let states = super::Metrics {
            db: self.db.clone(),
        }
        .names_by_state(now)
        .await?;
        let standby = |col: &str| {
            format!("CASE WHEN active_slot = 'primary' THEN backup_{col} ELSE primary_{col} END")
        };
        let active_ca = format!(
            "CASE WHEN active_slot = 'primary' THEN {} ELSE {} END",
            slot_ca("primary"),
            slot_ca("backup")
        );
        let standby_ca = format!(
            "CASE WHEN active_slot = 'primary' THEN {} ELSE {} END",
            slot_ca("backup"),
            slot_ca("primary")
        );
        let until = standby("usable_until");
        let superseded = standby("superseded_by");
        let posture = format!(
            "CASE WHEN {superseded} IS NOT NULL THEN 'standby_superseded' \
             WHEN {until} IS NULL THEN 'no_standby' \
             WHEN {until} = 0 THEN 'standby_revoked_or_compromised' \
             WHEN {until} <= $1 THEN 'standby_expired' ELSE 'usable' END"
        );
        let mut out = OverviewCounts {
            states,
            ..OverviewCounts::default()
        };
        for r in &all(
            &self.db,
            &format!(
                "SELECT {active_ca} AS active_ca, {standby_ca} AS standby_ca, {posture} AS posture, \
                 COUNT(*) AS n FROM names GROUP BY 1, 2, 3"
            ),
            vec![now.into()],
        )
        .await?
        {
            let n: i64 = get(r, "n")?;
            let a: String = get(r, "active_ca")?;
            let b: String = get(r, "standby_ca")?;
            let p: String = get(r, "posture")?;
            *out.mix.entry((a, b)).or_default() += n;
            *out.posture.entry(p).or_default() += n;
        }
        let end = now + days * 86400;
        for s in ["primary", "backup"] {
            for r in &all(
                &self.db,
                &format!(
                    "SELECT {s}_cert_ca AS ca, ({s}_usable_until - $1) / 86400 AS day, \
                     COUNT(*) AS n FROM names WHERE {s}_usable_until > $1 \
                     AND {s}_usable_until <= $2 GROUP BY 1, 2"
                ),
                vec![now.into(), end.into()],
            )
            .await?
            {
                let ca: Option<String> = get(r, "ca")?;
                let day: i64 = get(r, "day")?;
                let n: i64 = get(r, "n")?;
                *out.expiry.entry((ca.unwrap_or_default(), day)).or_default() += n;
            }
        }
        Ok(out)
    }

    /// Up to `limit` audit events before id `before` (newest first) whose
    /// actor, action and target equal the given ones (each optional).
    pub async fn audit_page(
        &self,
        actor: Option<&str>,
        action: Option<&str>,
        target: Option<&str>,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<(i64, AuditEvent)>, StoreError> {
        let rows = all(
            &self.db,
            "SELECT id, at, actor, action, target, reason, result, details FROM audit_events \
             WHERE id < $2 AND ($3 = '' OR actor = $3) AND ($4 = '' OR action = $4) \
             AND ($5 = '' OR target = $5) ORDER BY id DESC LIMIT $1",
            vec![
                (limit as i64).into(),
                before.unwrap_or(i64::MAX).into(),
                actor.unwrap_or("").into(),
                action.unwrap_or("").into(),
                target.unwrap_or("").into(),
            ],
        )
        .await?;
        super::audit::events_from_rows(&rows)
    }
}
