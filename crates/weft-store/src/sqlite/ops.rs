//! The synchronous SQL behind every `SqliteStore` operation but checkpoints (`checkpoint.rs`).
//! Each function runs inside a
//! transaction (or savepoint) the caller opened, so several compose into one atomic unit.

use rusqlite::{Connection, OptionalExtension, Row, ToSql, params, params_from_iter, types::Value};
use weft_core::bucket::bucket_of;
use weft_core::{InstanceMeta, Micros};
use weft_proto::durabletask::HistoryEvent;

use super::map_err;
use crate::codec::{decode_event, encode_event, start_due_at, status_from_code, text_from_bytes};
use crate::plan::{Delivery, MetaRow, ReminderRow, rewritten_columns};
use crate::{
    ActivityTask, CreateInstance, CreateOutcome, InboxEntry, InstancePage, ListFilter, Reminder,
    Result, ReusePolicy, Scope, StoreError,
};

const META_COLS: &str = "instance_id, name, status, execution_id, generation, input, output, \
     custom_status, failure, parent_instance_id, created_at, updated_at, started_at, \
     completed_at, scheduled_start_at, version, app_id";

/// Rows of one app (or written before instances recorded their app) in the given buckets:
/// `?1` is the bucket list as a JSON array, `?2` the app ID.
const IN_SCOPE: &str = "bucket IN (SELECT value FROM json_each(?1)) AND instance_id IN \
     (SELECT instance_id FROM instances WHERE bucket IN (SELECT value FROM json_each(?1)) \
      AND (app_id = ?2 OR app_id = ''))";

fn scope_json(scope: &Scope) -> String {
    let items: Vec<String> = scope.buckets.iter().map(i32::to_string).collect();
    format!("[{}]", items.join(","))
}

/// Page size when a `ListFilter` asks for 0.
pub(crate) const DEFAULT_PAGE: usize = 100;

fn meta_from_row(r: &Row<'_>) -> Result<InstanceMeta> {
    let g = |e: rusqlite::Error| StoreError::Corrupt(format!("instance row: {e}"));
    Ok(InstanceMeta {
        instance_id: r.get(0).map_err(g)?,
        name: r.get(1).map_err(g)?,
        status: status_from_code(r.get(2).map_err(g)?)?,
        execution_id: r.get(3).map_err(g)?,
        generation: r.get(4).map_err(g)?,
        input: text_from_bytes(r.get(5).map_err(g)?, "input")?,
        output: text_from_bytes(r.get(6).map_err(g)?, "output")?,
        custom_status: text_from_bytes(r.get(7).map_err(g)?, "custom status")?,
        failure: r.get(8).map_err(g)?,
        parent_instance_id: r.get(9).map_err(g)?,
        created_at: r.get(10).map_err(g)?,
        updated_at: r.get(11).map_err(g)?,
        started_at: r.get(12).map_err(g)?,
        completed_at: r.get(13).map_err(g)?,
        scheduled_start_at: r.get(14).map_err(g)?,
        version: r.get(15).map_err(g)?,
        app_id: r.get(16).map_err(g)?,
    })
}

pub(crate) fn get_meta(c: &Connection, id: &str) -> Result<Option<InstanceMeta>> {
    let mut st = c
        .prepare_cached(&format!(
            "SELECT {META_COLS} FROM instances WHERE instance_id = ?1"
        ))
        .map_err(map_err)?;
    let mut rows = st.query([id]).map_err(map_err)?;
    match rows.next().map_err(map_err)? {
        Some(r) => Ok(Some(meta_from_row(r)?)),
        None => Ok(None),
    }
}

/// `?2`–`?15` of the statements that write one instance row (`?1` is its ID): the columns a
/// checkpoint rewrites.
pub(super) fn row_params<'a>(m: &'a MetaRow<'a>) -> [&'a dyn ToSql; 14] {
    rewritten_columns!(m)
}

fn insert_meta(c: &Connection, m: &MetaRow<'_>, version: i64) -> Result<()> {
    let mut p: Vec<&dyn ToSql> = vec![&m.instance_id];
    p.extend(row_params(m));
    p.extend([&version as &dyn ToSql, &m.app_id, &m.bucket]);
    c.prepare_cached(&format!(
        "INSERT INTO instances ({META_COLS}, bucket) VALUES \
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
    ))
    .map_err(map_err)?
    .execute(params_from_iter(p))
    .map_err(map_err)?;
    Ok(())
}

/// Deletes an instance for good (see `Store::purge`); the caller's IMMEDIATE transaction
/// already serialises it with every other writer.
pub(crate) fn purge(c: &Connection, id: &str, force: bool) -> Result<bool> {
    let Some(m) = get_meta(c, id)? else {
        return Ok(false);
    };
    if !force && !m.status.is_terminal() {
        return Err(StoreError::NotTerminal(id.to_string()));
    }
    c.prepare_cached(
        "INSERT INTO purged_instances (instance_id, generation, version) VALUES (?1, ?2, ?3) \
         ON CONFLICT (instance_id) DO UPDATE \
         SET generation = excluded.generation, version = excluded.version",
    )
    .map_err(map_err)?
    .execute(params![id, m.generation, m.version])
    .map_err(map_err)?;
    delete_instance(c, id)
}

/// Deletes everything an instance owns; returns whether the row existed.
fn delete_instance(c: &Connection, id: &str) -> Result<bool> {
    for sql in [
        "DELETE FROM history WHERE instance_id = ?1",
        "DELETE FROM inbox WHERE instance_id = ?1",
        "DELETE FROM activities WHERE instance_id = ?1",
        "DELETE FROM reminders WHERE instance_id = ?1",
    ] {
        c.prepare_cached(sql)
            .map_err(map_err)?
            .execute([id])
            .map_err(map_err)?;
    }
    let n = c
        .prepare_cached("DELETE FROM instances WHERE instance_id = ?1")
        .map_err(map_err)?
        .execute([id])
        .map_err(map_err)?;
    Ok(n > 0)
}

fn insert_inbox(
    c: &Connection,
    id: &str,
    event: &HistoryEvent,
    generation: Option<i64>,
) -> Result<i64> {
    c.prepare_cached(
        "INSERT INTO inbox (instance_id, event, generation, bucket) VALUES (?1, ?2, ?3, ?4)",
    )
    .map_err(map_err)?
    .execute(params![id, encode_event(event), generation, bucket_of(id)])
    .map_err(map_err)?;
    Ok(c.last_insert_rowid())
}

pub(super) fn insert_reminder(c: &Connection, r: &ReminderRow) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO reminders (instance_id, generation, due_at, event, bucket) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .map_err(map_err)?
    .execute(params![
        r.instance_id,
        r.generation,
        r.due_at,
        r.event,
        r.bucket
    ])
    .map_err(map_err)?;
    Ok(())
}

/// Appends to an instance's inbox if the instance exists and, when `execution_id` is given, is
/// still in that execution (the row is then stamped with its generation).
pub(crate) fn deliver(c: &Connection, d: &Delivery<'_>) -> Result<bool> {
    let n = c
        .prepare_cached(
            "INSERT INTO inbox (instance_id, event, generation, bucket) \
             SELECT instance_id, ?2, CASE WHEN ?3 IS NULL THEN NULL ELSE generation END, ?4 \
             FROM instances WHERE instance_id = ?1 AND (?3 IS NULL OR execution_id = ?3)",
        )
        .map_err(map_err)?
        .execute(params![d.target, d.event, d.execution_id, d.bucket])
        .map_err(map_err)?;
    Ok(n > 0)
}

/// `create_instance` inside the caller's transaction.
pub(crate) fn create(c: &Connection, req: &CreateInstance, now: Micros) -> Result<CreateOutcome> {
    let id = req.meta.instance_id.as_str();
    let existing = get_meta(c, id)?;
    if let Some(old) = &existing
        && !old.status.is_terminal()
    {
        match req.policy {
            ReusePolicy::Error => return Err(StoreError::AlreadyExists(id.to_string())),
            ReusePolicy::Ignore => return Ok(CreateOutcome::Existing),
            ReusePolicy::Terminate => {}
        }
    }
    // Continue the old generation and version sequences (of the replaced row, or of a purged
    // one), so a stale owner stays fenced out and a late result of the old execution is refused.
    let previous = match &existing {
        Some(old) => Some((old.generation, old.version)),
        None => c
            .prepare_cached(
                "DELETE FROM purged_instances WHERE instance_id = ?1 RETURNING generation, version",
            )
            .map_err(map_err)?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(map_err)?,
    };
    let mut meta = req.meta.clone();
    let (outcome, version) = match previous {
        None => (CreateOutcome::Created, 1),
        Some((generation, version)) => {
            meta.generation = meta.generation.max(generation + 1);
            let outcome = if existing.is_some() {
                CreateOutcome::Replaced
            } else {
                CreateOutcome::Created
            };
            (outcome, version + 1)
        }
    };
    if existing.is_some() {
        delete_instance(c, id)?;
    }
    insert_meta(c, &MetaRow::of(&meta), version)?;
    match start_due_at(req.meta.scheduled_start_at, now) {
        Some(due_at) => insert_reminder(
            c,
            &ReminderRow::of(&Reminder {
                id: 0,
                instance_id: id.to_string(),
                generation: meta.generation,
                due_at,
                event: req.start_event.clone(),
            }),
        )?,
        None => {
            insert_inbox(c, id, &req.start_event, Some(meta.generation))?;
        }
    }
    Ok(outcome)
}

pub(crate) fn history(c: &Connection, id: &str, generation: i64) -> Result<Vec<HistoryEvent>> {
    let mut st = c
        .prepare_cached(
            "SELECT event FROM history WHERE instance_id = ?1 AND generation = ?2 ORDER BY seq",
        )
        .map_err(map_err)?;
    let mut rows = st.query(params![id, generation]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        let bytes: Vec<u8> = r.get(0).map_err(map_err)?;
        out.push(decode_event(&bytes)?);
    }
    Ok(out)
}

pub(crate) fn inbox(c: &Connection, id: &str) -> Result<Vec<InboxEntry>> {
    let mut st = c
        .prepare_cached(
            "SELECT seq, event, generation FROM inbox WHERE instance_id = ?1 ORDER BY seq",
        )
        .map_err(map_err)?;
    let mut rows = st.query([id]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        let bytes: Vec<u8> = r.get(1).map_err(map_err)?;
        out.push(InboxEntry {
            seq: r.get(0).map_err(map_err)?,
            event: decode_event(&bytes)?,
            generation: r.get(2).map_err(map_err)?,
        });
    }
    Ok(out)
}

pub(crate) fn cross_app_backlog(c: &Connection) -> Result<Vec<(String, i64)>> {
    let mut st = c
        .prepare_cached(
            "SELECT app_id, count(*) FROM activities WHERE app_id <> '' AND claim = 0 \
             GROUP BY app_id ORDER BY app_id",
        )
        .map_err(map_err)?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
}

/// The instances' own tasks, and the tasks other apps' instances address to this app.
pub(crate) fn claim_activities(c: &Connection, scope: &Scope) -> Result<Vec<ActivityTask>> {
    claim(
        c,
        &format!(
            "(app_id = '' AND {IN_SCOPE}) OR \
             (app_id = ?2 AND bucket IN (SELECT value FROM json_each(?1)))"
        ),
        scope,
    )
}

/// The cross-app tasks addressed to `scope`'s app in its buckets that nobody has claimed yet.
pub(crate) fn claim_new_remote(c: &Connection, scope: &Scope) -> Result<Vec<ActivityTask>> {
    claim(
        c,
        "app_id = ?2 AND bucket IN (SELECT value FROM json_each(?1)) AND claim = 0",
        scope,
    )
}

fn claim(c: &Connection, filter: &str, scope: &Scope) -> Result<Vec<ActivityTask>> {
    let mut st = c
        .prepare_cached(&format!(
            "UPDATE activities SET claim = claim + 1 WHERE {filter} \
             RETURNING instance_id, generation, task_id, request, claim, app_id"
        ))
        .map_err(map_err)?;
    let rows = st
        .query_map(params![scope_json(scope), scope.app_id], |r| {
            Ok(ActivityTask {
                instance_id: r.get(0)?,
                generation: r.get(1)?,
                task_id: r.get(2)?,
                request: r.get(3)?,
                claim: r.get(4)?,
                app_id: r.get(5)?,
            })
        })
        .map_err(map_err)?;
    let mut tasks = rows
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(map_err)?;
    // RETURNING follows no ORDER BY.
    tasks.sort_by(|a, b| (&a.instance_id, a.task_id).cmp(&(&b.instance_id, b.task_id)));
    Ok(tasks)
}

/// Deletes the task row (if `claim` is `None` or still the task's) and queues the result.
pub(crate) fn complete_activity(
    c: &Connection,
    id: &str,
    task_id: i32,
    generation: i64,
    claim: Option<i64>,
    event: &HistoryEvent,
) -> Result<bool> {
    let n = c
        .prepare_cached(
            "DELETE FROM activities WHERE instance_id = ?1 AND task_id = ?2 AND generation = ?3 \
             AND (?4 IS NULL OR claim = ?4)",
        )
        .map_err(map_err)?
        .execute(params![id, task_id, generation, claim])
        .map_err(map_err)?;
    if n == 0 {
        if claim.is_some() && task_pending(c, id, task_id, generation)? {
            return Err(StoreError::Reclaimed {
                instance_id: id.to_string(),
                task_id,
            });
        }
        return Ok(false);
    }
    insert_inbox(c, id, event, Some(generation))?;
    Ok(true)
}

fn task_pending(c: &Connection, id: &str, task_id: i32, generation: i64) -> Result<bool> {
    c.prepare_cached(
        "SELECT 1 FROM activities WHERE instance_id = ?1 AND task_id = ?2 AND generation = ?3",
    )
    .map_err(map_err)?
    .exists(params![id, task_id, generation])
    .map_err(map_err)
}

pub(crate) fn instances_with_inbox(c: &Connection, scope: &Scope) -> Result<Vec<String>> {
    let mut st = c
        .prepare_cached(&format!(
            "SELECT DISTINCT instance_id FROM inbox WHERE {IN_SCOPE} ORDER BY instance_id"
        ))
        .map_err(map_err)?;
    let rows = st
        .query_map(params![scope_json(scope), scope.app_id], |r| r.get(0))
        .map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<String>>>()
        .map_err(map_err)
}

pub(crate) fn claim_reminders(
    c: &Connection,
    scope: &Scope,
    now: Micros,
    lease_until: Micros,
    limit: usize,
) -> Result<Vec<Reminder>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut st = c
        .prepare_cached(&format!(
            "UPDATE reminders SET lease_until = ?4 WHERE id IN ( \
                 SELECT id FROM reminders \
                 WHERE {IN_SCOPE} AND due_at <= ?3 AND (lease_until IS NULL OR lease_until < ?3) \
                 ORDER BY due_at, id LIMIT ?5) \
             RETURNING id, instance_id, generation, due_at, event"
        ))
        .map_err(map_err)?;
    let mut rows = st
        .query(params![
            scope_json(scope),
            scope.app_id,
            now,
            lease_until,
            limit
        ])
        .map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        let bytes: Vec<u8> = r.get(4).map_err(map_err)?;
        out.push(Reminder {
            id: r.get(0).map_err(map_err)?,
            instance_id: r.get(1).map_err(map_err)?,
            generation: r.get(2).map_err(map_err)?,
            due_at: r.get(3).map_err(map_err)?,
            event: decode_event(&bytes)?,
        });
    }
    out.sort_by_key(|r| (r.due_at, r.id));
    Ok(out)
}

pub(crate) fn fire_reminder(c: &Connection, reminder_id: i64) -> Result<bool> {
    let row: Option<(String, Vec<u8>, i64)> = c
        .prepare_cached(
            "DELETE FROM reminders WHERE id = ?1 RETURNING instance_id, event, generation",
        )
        .map_err(map_err)?
        .query_row([reminder_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()
        .map_err(map_err)?;
    let Some((id, bytes, generation)) = row else {
        return Ok(false);
    };
    // Copy the stored bytes as they are, for the generation that set the timer; dropped if the
    // instance is gone.
    c.prepare_cached(
        "INSERT INTO inbox (instance_id, event, generation, bucket) \
         SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM instances WHERE instance_id = ?1)",
    )
    .map_err(map_err)?
    .execute(params![id, bytes, generation, bucket_of(&id)])
    .map_err(map_err)?;
    Ok(true)
}

pub(crate) fn next_reminder_due(c: &Connection, scope: &Scope) -> Result<Option<Micros>> {
    // When the next reminder becomes claimable: its due time, or, while it is leased, the later
    // of that and the end of its lease.
    c.prepare_cached(&format!(
        "SELECT MIN(t) FROM ( \
         SELECT MIN(due_at) AS t FROM reminders WHERE lease_until IS NULL AND {IN_SCOPE} \
         UNION ALL \
         SELECT MIN(CASE WHEN lease_until > due_at THEN lease_until ELSE due_at END) \
         FROM reminders WHERE lease_until IS NOT NULL AND {IN_SCOPE}) AS next"
    ))
    .map_err(map_err)?
    .query_row(params![scope_json(scope), scope.app_id], |r| r.get(0))
    .map_err(map_err)
}

pub(crate) fn stalled_instances(
    c: &Connection,
    scope: &Scope,
    limit: usize,
) -> Result<Vec<String>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut st = c
        .prepare_cached(
            "SELECT instance_id FROM instances WHERE bucket IN (SELECT value FROM json_each(?1)) \
             AND (app_id = ?2 OR app_id = '') AND status = ?3 ORDER BY instance_id LIMIT ?4",
        )
        .map_err(map_err)?;
    let stalled = weft_core::RuntimeStatus::Stalled.code();
    let rows = st
        .query_map(
            params![scope_json(scope), scope.app_id, stalled, limit],
            |r| r.get(0),
        )
        .map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<String>>>()
        .map_err(map_err)
}

/// Fills the bucket column of rows written before it existed (the hash is computed in Rust).
pub(crate) fn backfill_buckets(c: &Connection) -> Result<u64> {
    let mut ids: Vec<String> = Vec::new();
    for table in ["instances", "inbox", "activities", "reminders"] {
        let mut st = c
            .prepare(&format!(
                "SELECT DISTINCT instance_id FROM {table} WHERE bucket < 0"
            ))
            .map_err(map_err)?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(map_err)?;
        for r in rows {
            ids.push(r.map_err(map_err)?);
        }
    }
    ids.sort();
    ids.dedup();
    for id in &ids {
        for table in ["instances", "inbox", "activities", "reminders"] {
            c.execute(
                &format!("UPDATE {table} SET bucket = ?2 WHERE instance_id = ?1 AND bucket < 0"),
                params![id, bucket_of(id)],
            )
            .map_err(map_err)?;
        }
    }
    Ok(ids.len() as u64)
}

pub(crate) fn list(c: &Connection, f: &ListFilter) -> Result<InstancePage> {
    let limit = if f.limit == 0 { DEFAULT_PAGE } else { f.limit };
    let mut sql = format!("SELECT {META_COLS} FROM instances WHERE 1 = 1");
    let mut args: Vec<Value> = Vec::new();
    if !f.statuses.is_empty() {
        let marks = vec!["?"; f.statuses.len()].join(", ");
        sql.push_str(&format!(" AND status IN ({marks})"));
        args.extend(f.statuses.iter().map(|s| Value::Integer(s.code().into())));
    }
    if let Some(name) = &f.name {
        sql.push_str(" AND name = ?");
        args.push(Value::Text(name.clone()));
    }
    if let Some(from) = f.created_from {
        sql.push_str(" AND created_at >= ?");
        args.push(Value::Integer(from));
    }
    if let Some(to) = f.created_to {
        sql.push_str(" AND created_at <= ?");
        args.push(Value::Integer(to));
    }
    if let Some(to) = f.completed_to {
        sql.push_str(" AND completed_at <= ?");
        args.push(Value::Integer(to));
    }
    if let Some(after) = &f.after {
        sql.push_str(" AND instance_id > ?");
        args.push(Value::Text(after.clone()));
    }
    sql.push_str(" ORDER BY instance_id LIMIT ?");
    args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
    let mut st = c.prepare_cached(&sql).map_err(map_err)?;
    let mut rows = st.query(params_from_iter(args)).map_err(map_err)?;
    let mut items = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        items.push(meta_from_row(r)?);
    }
    let next = if items.len() == limit {
        items.last().map(|m| m.instance_id.clone())
    } else {
        None
    };
    Ok(InstancePage { items, next })
}
