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

/// Days the overview's expiry timeline covers.
pub const OVERVIEW_DAYS: i64 = 90;

/// The overview's counts, taken by the `counts` controller's pass
/// (`Store::recount`) and stored with the `/metrics` counts in
/// `metric_counts`, so a page reads a few hundred rows instead of
/// classifying a million names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OverviewCounts {
    /// Names by state (`ready`, `degraded`, `provisioning`, `waiting`):
    /// the `twincert_names_by_state` series (empty inside `Counts`, which
    /// holds them as series).
    pub states: Vec<(String, i64)>,
    /// Names by standby posture: `usable`, or why not (`no_standby`,
    /// `standby_expired`, `standby_revoked_or_compromised`,
    /// `standby_superseded`).
    pub posture: BTreeMap<String, i64>,
    /// (active CA, standby CA) → names.
    pub mix: BTreeMap<(String, String), i64>,
    /// (CA, days after the count) → current certificates whose usable time
    /// ends that day, for the coming [`OVERVIEW_DAYS`].
    pub expiry: BTreeMap<(String, i64), i64>,
    /// Names with a slot superseded by an operation (being replaced): the
    /// names page's state filter looks for them only when this is not 0
    /// or an operation is open.
    pub superseded: i64,
    /// When these counts were taken (unix seconds; 0 before the first) and
    /// how long that took: the `counts` controller takes them at its own
    /// slower pace (`worker::counts::overview_due`), so they carry their
    /// own age.
    pub computed_at: i64,
    pub seconds: f64,
}

/// `metric_counts.part` of each overview family. A key holding two values
/// joins them with a space: CA ids (`[a-z0-9-]`) and states have none.
const PART_POSTURE: &str = "overview_posture";
const PART_MIX: &str = "overview_mix";
const PART_EXPIRY: &str = "overview_expiry";
const PART_META: &str = "overview_meta";
/// `overview_meta` key: names with a slot superseded by an operation.
const SUPERSEDED: &str = "superseded";
/// `overview_meta` keys: when the overview was counted, and in how long.
const COMPUTED_AT: &str = "computed_at";
const SECONDS: &str = "seconds";

impl OverviewCounts {
    /// The rows of `metric_counts` that hold these counts (`states` aside).
    pub(super) fn stored_rows(&self) -> Vec<(&'static str, String, f64)> {
        let mut rows = Vec::new();
        for (p, n) in &self.posture {
            rows.push((PART_POSTURE, p.clone(), *n as f64));
        }
        for ((a, b), n) in &self.mix {
            rows.push((PART_MIX, format!("{a} {b}"), *n as f64));
        }
        for ((ca, day), n) in &self.expiry {
            rows.push((PART_EXPIRY, format!("{day} {ca}"), *n as f64));
        }
        rows.push((PART_META, SUPERSEDED.into(), self.superseded as f64));
        if self.computed_at > 0 {
            rows.push((PART_META, COMPUTED_AT.into(), self.computed_at as f64));
            rows.push((PART_META, SECONDS.into(), self.seconds));
        }
        rows
    }

    /// Takes one stored row back; rows of other parts are ignored.
    pub(super) fn read_row(&mut self, part: &str, key: String, value: f64) {
        // Counts are integers well inside f64's exact range (2^53).
        let n = value as i64;
        match part {
            PART_POSTURE => {
                self.posture.insert(key, n);
            }
            PART_META if key == SUPERSEDED => self.superseded = n,
            PART_META if key == COMPUTED_AT => self.computed_at = n,
            PART_META if key == SECONDS => self.seconds = value,
            PART_MIX => {
                if let Some((a, b)) = key.split_once(' ') {
                    self.mix.insert((a.to_string(), b.to_string()), n);
                }
            }
            PART_EXPIRY => {
                if let Some((day, ca)) = key.split_once(' ')
                    && let Ok(day) = day.parse::<i64>()
                {
                    self.expiry.insert((ca.to_string(), day), n);
                }
            }
            _ => {}
        }
    }
}

/// A page of the names list.
#[derive(Debug, Clone, Default)]
pub struct NamesPage {
    /// The names, in key order.
    pub names: Vec<NameRecord>,
    /// The cursor (`after`) of the next page; `None` at the end.
    pub next: Option<String>,
}

/// Rounds of candidates a driven names page reads at most (each reads up
/// to four times more than the one before, from 100 up to 20,000 per
/// branch).
const DRIVEN_ROUNDS: usize = 4;

/// Preflight found something (the partial index `preflight_with_findings`
/// has this predicate, word for word).
const FINDINGS: &str = "caa_findings > 0 OR delegation_findings > 0 OR provider_findings > 0";

/// One index range of candidate name ids: `SELECT {key} FROM {from} WHERE
/// {cond}` (placeholders `$1…` bound to `values`), read in `key` order
/// (the name id, or an expression of it equal to it).
struct Branch {
    from: &'static str,
    key: &'static str,
    cond: String,
    values: Vec<Value>,
}

/// Every condition of `f` but the key range, over `names n`, with the
/// joins the state needs; placeholders continue after `values`.
fn exact_conditions(f: &NamePageFilter, values: &mut Vec<Value>) -> (Vec<String>, &'static str) {
    let mut cond = Vec::new();
    let mut joins = "";
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
        cond.push(format!(
            "EXISTS (SELECT 1 FROM preflight p WHERE p.name_id = n.id AND ({FINDINGS}))"
        ));
    }
    if let Some((state, now)) = f.state {
        values.push(now.into());
        let t = values.len();
        values.push(state.as_str().into());
        let s = values.len();
        joins = NAME_STATE_JOINS;
        cond.push(format!("{} = ${s}", name_state_case(&format!("${t}"))));
    }
    if cond.is_empty() {
        cond.push("1 = 1".into());
    }
    (cond, joins)
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
    /// their slots, in key order, and where the next page starts. No
    /// count, no offset: a page costs the same at any position in a
    /// million names.
    ///
    /// Without a filter but a prefix, the page walks the primary key. A
    /// filter (a state, preflight findings, a challenge, a CA) *drives* the
    /// page instead: each of its index ranges in key order
    /// ([`driver_branches`], migration m0025) yields the next candidate
    /// ids after the cursor, and the exact filter (every condition, the
    /// state by the API's rule) is checked on those candidates only — so
    /// ten failed names among a million cost a few index seeks, not a
    /// walk. Candidates are taken up to the lowest id where a branch was
    /// cut off, so none is skipped; at most [`DRIVEN_ROUNDS`] rounds run
    /// per page, then the page ends early with its cursor (a combination
    /// of a common driver and a rare other condition).
    pub async fn names_page(
        &self,
        f: &NamePageFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<NamesPage, StoreError> {
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
        let end = prefix.map(|p| format!("{p}\u{ffff}"));
        let branches = self.driver_branches(f).await?;
        if branches.is_empty() {
            let mut values: Vec<Value> = vec![start.into()];
            let mut cond = vec![format!("n.id {op} $1")];
            if let Some(e) = &end {
                values.push(e.clone().into());
                cond.push(format!("n.id < ${}", values.len()));
            }
            let (exact, joins) = exact_conditions(f, &mut values);
            cond.extend(exact);
            values.push((limit as i64 + 1).into());
            let page = format!(
                "SELECT n.id FROM names n {joins} WHERE {} ORDER BY n.id LIMIT ${}",
                cond.join(" AND "),
                values.len()
            );
            let mut names = self.names_by_page_query(&page, values).await?;
            let more = names.len() as u64 > limit;
            names.truncate(limit as usize);
            let next = more.then(|| names.last().map(|r| r.id.clone())).flatten();
            return Ok(NamesPage { names, next });
        }
        let mut names: Vec<NameRecord> = Vec::new();
        let mut cursor = (start.to_string(), op);
        let mut take = (limit * 2).clamp(50, 500);
        for _ in 0..DRIVEN_ROUNDS {
            // The next candidates of every branch, up to the lowest id at
            // which a branch was cut off (`None`: every branch reached its
            // end).
            let mut candidates = std::collections::BTreeSet::new();
            let mut cut: Option<String> = None;
            for b in &branches {
                let mut values = b.values.clone();
                values.push(cursor.0.clone().into());
                let mut cond = vec![format!("{} {} ${}", b.key, cursor.1, values.len())];
                if let Some(e) = &end {
                    values.push(e.clone().into());
                    cond.push(format!("{} < ${}", b.key, values.len()));
                }
                values.push((take as i64).into());
                let sql = format!(
                    "SELECT {key} AS id FROM {from} WHERE ({w}) AND {c} ORDER BY {key} LIMIT ${n}",
                    key = b.key,
                    from = b.from,
                    w = b.cond,
                    c = cond.join(" AND "),
                    n = values.len()
                );
                let rows = all(&self.db, &sql, values).await?;
                let ids: Vec<String> = rows
                    .iter()
                    .map(|r| get::<String>(r, "id"))
                    .collect::<Result<_, _>>()?;
                if ids.len() as u64 == take
                    && let Some(last) = ids.last()
                    && cut.as_ref().is_none_or(|c| last < c)
                {
                    cut = Some(last.clone());
                }
                candidates.extend(ids);
            }
            if let Some(c) = &cut {
                candidates.retain(|id| id <= c);
            }
            if !candidates.is_empty() {
                let mut values: Vec<Value> = Vec::new();
                let (mut cond, joins) = exact_conditions(f, &mut values);
                let first = values.len() + 1;
                let n = candidates.len();
                values.extend(candidates.into_iter().map(Value::from));
                cond.push(format!("n.id IN ({})", super::sql::holes(first, n)));
                values.push((limit as i64 + 1 - names.len() as i64).into());
                let page = format!(
                    "SELECT n.id FROM names n {joins} WHERE {} ORDER BY n.id LIMIT ${}",
                    cond.join(" AND "),
                    values.len()
                );
                names.extend(self.names_by_page_query(&page, values).await?);
            }
            if names.len() as u64 > limit {
                names.truncate(limit as usize);
                let next = names.last().map(|r| r.id.clone());
                return Ok(NamesPage { names, next });
            }
            match cut {
                None => return Ok(NamesPage { names, next: None }),
                Some(c) => cursor = (c, ">"),
            }
            take = (take * 4).min(20_000);
        }
        // Out of rounds: the page ends here; the next one starts where the
        // candidates did.
        Ok(NamesPage {
            names,
            next: Some(cursor.0),
        })
    }

    /// The names of a page query (`SELECT n.id … ORDER BY n.id LIMIT …`)
    /// with their slots.
    async fn names_by_page_query(
        &self,
        page: &str,
        values: Vec<Value>,
    ) -> Result<Vec<NameRecord>, StoreError> {
        let sql = format!("{NAME_SELECT} WHERE n.id IN ({page}) ORDER BY n.id, s.slot DESC");
        let rows = all(&self.db, &sql, values).await?;
        super::rows::names_from_rows(&rows)
    }

    /// The index ranges that yield the candidates of `f`'s most selective
    /// filter, in key order (empty: walk the primary key). A state other
    /// than `ready` is one of its causes, each indexed (m0025): a
    /// diversity error, a slot without a certificate or past it (0: revoked
    /// or compromised), a failing slot without a certificate, an order held
    /// for a person; and, only while any name can be superseded (an
    /// operation still re-provisioning, or the last counts saw such a name
    /// or have not been taken), the superseded names, by a walk of the
    /// primary key (those columns stay unindexed so a mass swap stays HOT,
    /// see m0020). `ready` alone: every name, in batches. A superset is
    /// enough: the exact rule is checked after.
    async fn driver_branches(&self, f: &NamePageFilter) -> Result<Vec<Branch>, StoreError> {
        let names = |cond: &str, values: Vec<Value>| Branch {
            from: "names",
            key: "id",
            cond: cond.to_string(),
            values,
        };
        if let Some((state, now)) = f.state
            && state != NameState::Ready
        {
            let mut b = Vec::new();
            match state {
                NameState::Degraded => {
                    b.push(names("diversity_error IS NOT NULL", vec![]));
                    for s in ["primary", "backup"] {
                        // A range on another column than the key: SQLite
                        // (without statistics) would walk the primary key
                        // for its order; through an expression it reads
                        // the range's index and sorts what it found (few:
                        // an expired or revoked certificate in a slot).
                        b.push(Branch {
                            key: "CAST(id AS TEXT)",
                            ..names(&format!("{s}_usable_until <= $1"), vec![now.into()])
                        });
                    }
                    b.push(Branch {
                        from: "slots",
                        key: "name_id",
                        cond: "last_error IS NOT NULL AND current_cert_id IS NULL".into(),
                        values: vec![],
                    });
                    if self.may_be_superseded().await? {
                        for s in ["primary", "backup"] {
                            b.push(names(&format!("{s}_superseded_by IS NOT NULL"), vec![]));
                        }
                    }
                }
                NameState::Waiting => b.push(Branch {
                    from: "orders",
                    key: "name_id",
                    cond: "held_reason IS NOT NULL AND state IN ('pending', 'processing')".into(),
                    values: vec![],
                }),
                NameState::Provisioning | NameState::Ready => {
                    for s in ["primary", "backup"] {
                        b.push(names(&format!("{s}_usable_until IS NULL"), vec![]));
                    }
                }
            }
            return Ok(b);
        }
        if f.with_findings {
            return Ok(vec![Branch {
                from: "preflight",
                key: "name_id",
                cond: FINDINGS.into(),
                values: vec![],
            }]);
        }
        if let Some(c) = f.challenge {
            return Ok(vec![names("challenge = $1", vec![c.as_str().into()])]);
        }
        if let Some(ca) = &f.ca {
            return Ok(["primary", "backup"]
                .iter()
                .map(|s| names(&format!("{} = $1", slot_ca(s)), vec![ca.clone().into()]))
                .collect());
        }
        if f.state.is_some() {
            // `ready`: every name is a candidate, taken in key order a
            // batch at a time, so the state's joins run on a batch of ids
            // (PostgreSQL would otherwise join all slots and certificates
            // to find the first page), and a page of a state few names are
            // in ends after the last round with its cursor instead of
            // walking a million names.
            return Ok(vec![names("1 = 1", vec![])]);
        }
        Ok(Vec::new())
    }

    /// Whether a name's slot can be superseded now: an operation still
    /// re-provisions, or the last stored counts saw a superseded name (or
    /// none are stored). A name is superseded only by an operation, which
    /// is open from that moment until every marked slot has its order, and
    /// the `counts` controller recounts soon after every operation.
    async fn may_be_superseded(&self) -> Result<bool, StoreError> {
        if one(
            &self.db,
            "SELECT id FROM operations WHERE reprovision_open = TRUE LIMIT 1",
            vec![],
        )
        .await?
        .is_some()
        {
            return Ok(true);
        }
        let stored = one(
            &self.db,
            "SELECT value FROM metric_counts WHERE part = $1 AND series = $2",
            vec![PART_META.into(), SUPERSEDED.into()],
        )
        .await?;
        Ok(match stored {
            None => true,
            Some(r) => get::<String>(&r, "value")?.parse::<f64>().unwrap_or(1.0) > 0.0,
        })
    }

    /// The overview's counts at `now` (part of the `counts` controller's
    /// pass, seconds at a million names; pages read the stored set,
    /// [`Console::stored_overview`]): standby posture and CA mix from the
    /// names' swap facts (one pass, no join), and the expiry timeline of
    /// the coming `days` per CA. `states` stays empty: the pass counts
    /// them as the `twincert_names_by_state` series.
    pub async fn overview_counts(&self, now: i64, days: i64) -> Result<OverviewCounts, StoreError> {
        let started = std::time::Instant::now();
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
        let mut out = OverviewCounts::default();
        for r in &all(
            &self.db,
            &format!(
                "SELECT {active_ca} AS active_ca, {standby_ca} AS standby_ca, {posture} AS posture, \
                 COUNT(*) AS n, SUM(CASE WHEN primary_superseded_by IS NOT NULL \
                 OR backup_superseded_by IS NOT NULL THEN 1 ELSE 0 END) AS superseded \
                 FROM names GROUP BY 1, 2, 3"
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
            out.superseded += get::<Option<i64>>(r, "superseded")?.unwrap_or(0);
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
        out.computed_at = now;
        out.seconds = started.elapsed().as_secs_f64();
        Ok(out)
    }

    /// The overview's counts as the last `counts` pass stored them, with
    /// the time it began; `None` before a pass stored a set. Reads only
    /// the overview's rows and the names-by-state series of
    /// `metric_counts` (a few hundred rows, by its primary key).
    pub async fn stored_overview(&self) -> Result<Option<(i64, OverviewCounts)>, StoreError> {
        const STATE_SERIES: &str = "twincert_names_by_state{state=\"";
        let rows = all(
            &self.db,
            "SELECT part, series, value FROM metric_counts \
             WHERE (part = 'meta' AND series = 'computed_at') OR part IN ($1, $2, $3, $6) \
             OR (part = 'series' AND series >= $4 AND series < $5)",
            vec![
                PART_POSTURE.into(),
                PART_MIX.into(),
                PART_EXPIRY.into(),
                STATE_SERIES.into(),
                format!("{STATE_SERIES}\u{ffff}").into(),
                PART_META.into(),
            ],
        )
        .await?;
        let mut at = None;
        let mut out = OverviewCounts::default();
        let mut states: BTreeMap<String, i64> = ["ready", "degraded", "provisioning", "waiting"]
            .iter()
            .map(|s| (s.to_string(), 0))
            .collect();
        for r in &rows {
            let (part, key, value) = super::metrics::count_row(r)?;
            let n = value as i64;
            match part.as_str() {
                "meta" => at = Some(n),
                "series" => {
                    if let Some(state) = key
                        .strip_prefix(STATE_SERIES)
                        .and_then(|k| k.strip_suffix("\"}"))
                    {
                        states.insert(state.to_string(), n);
                    }
                }
                _ => out.read_row(&part, key, value),
            }
        }
        let Some(at) = at else {
            return Ok(None);
        };
        // The overview's own age when it carries one (it is counted at a
        // slower pace than the rest).
        let at = if out.computed_at > 0 {
            out.computed_at
        } else {
            at
        };
        // The order the API lists states in.
        let order = ["ready", "degraded", "provisioning", "waiting"];
        let mut states: Vec<(String, i64)> = states.into_iter().collect();
        states.sort_by_key(|(s, _)| order.iter().position(|o| o == s).unwrap_or(order.len()));
        out.states = states;
        Ok(Some((at, out)))
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
        // Only the given filters are in the query, so each can use its
        // index (`audit_events_by_{actor,action,target}`: value, then id)
        // and a page is one seek however rare the value.
        let mut values: Vec<Value> = vec![(limit as i64).into(), before.unwrap_or(i64::MAX).into()];
        let mut cond = vec!["id < $2".to_string()];
        for (col, v) in [("actor", actor), ("action", action), ("target", target)] {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                values.push(v.into());
                cond.push(format!("{col} = ${}", values.len()));
            }
        }
        let rows = all(
            &self.db,
            &format!(
                "SELECT id, at, actor, action, target, reason, result, details FROM audit_events \
                 WHERE {} ORDER BY id DESC LIMIT $1",
                cond.join(" AND ")
            ),
            values,
        )
        .await?;
        super::audit::events_from_rows(&rows)
    }
}
