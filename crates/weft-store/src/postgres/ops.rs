//! The SQL behind every `PgStore` operation but the scoped scans (`scans.rs`), checkpoints
//! (`checkpoint.rs`, group commit in `batch.rs`) and leases (`leases.rs`), each running
//! inside the caller's transaction (or savepoint) so several compose into one atomic unit.
//! Statements are prepared once per connection (`prepare_cached`); multi-row writes go through
//! `unnest` to stay one round trip.

use deadpool_postgres::Transaction;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use weft_core::bucket::bucket_of;
use weft_core::{InstanceMeta, Micros};
use weft_proto::durabletask::HistoryEvent;

use super::R;
use crate::codec::{decode_event, encode_event, start_due_at, status_from_code, text_from_bytes};
use crate::plan::{Delivery, MetaRow, ReminderRow, rewritten_columns};
use crate::{
    Checkpoint, CreateInstance, CreateOutcome, InboxEntry, InstancePage, ListFilter, Outbound,
    Reminder, ReusePolicy, StoreError,
};

const META_COLS: &str = "instance_id, name, status, execution_id, generation, input, output, \
     custom_status, failure, parent_instance_id, created_at, updated_at, started_at, \
     completed_at, scheduled_start_at, version, app_id";

pub(super) const INSERT_REMINDERS: &str = "INSERT INTO reminders (instance_id, generation, due_at, event, bucket) \
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[], $5::int[])";

/// Rows of one app (or written before instances recorded their app) in the given buckets.
pub(super) const IN_SCOPE: &str = "bucket = ANY($1::int[]) AND instance_id IN \
     (SELECT instance_id FROM instances WHERE bucket = ANY($1::int[]) \
      AND (app_id = $2 OR app_id = ''))";

/// Page size when a `ListFilter` asks for 0.
const DEFAULT_PAGE: usize = 100;

pub(super) fn col<'a, T: tokio_postgres::types::FromSql<'a>>(r: &'a Row, i: usize) -> R<T> {
    r.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")).into())
}

fn meta_from_row(r: &Row) -> R<InstanceMeta> {
    Ok(InstanceMeta {
        instance_id: col(r, 0)?,
        name: col(r, 1)?,
        status: status_from_code(i64::from(col::<i32>(r, 2)?))?,
        execution_id: col(r, 3)?,
        generation: col(r, 4)?,
        input: text_from_bytes(col(r, 5)?, "input")?,
        output: text_from_bytes(col(r, 6)?, "output")?,
        custom_status: text_from_bytes(col(r, 7)?, "custom status")?,
        failure: col(r, 8)?,
        parent_instance_id: col(r, 9)?,
        created_at: col(r, 10)?,
        updated_at: col(r, 11)?,
        started_at: col(r, 12)?,
        completed_at: col(r, 13)?,
        scheduled_start_at: col(r, 14)?,
        version: col(r, 15)?,
        app_id: col(r, 16)?,
    })
}

/// Reads a row; `lock` takes the row lock so the caller's decision cannot race another writer.
pub(crate) async fn get_meta(
    c: &impl deadpool_postgres::GenericClient,
    id: &str,
    lock: bool,
) -> R<Option<InstanceMeta>> {
    let sql = format!(
        "SELECT {META_COLS} FROM instances WHERE instance_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let st = c.prepare_cached(&sql).await?;
    match c.query_opt(&st, &[&id]).await? {
        Some(r) => Ok(Some(meta_from_row(&r)?)),
        None => Ok(None),
    }
}

pub(super) type Arg<'a> = &'a (dyn ToSql + Sync);

/// `$2`–`$15` of the statements that write one instance row (`$1` is its ID): the columns a
/// checkpoint rewrites.
pub(super) fn row_args<'a>(m: &'a MetaRow<'a>) -> [Arg<'a>; 14] {
    rewritten_columns!(m)
}

/// Inserts a row unless one exists (then nothing happens and `false` is returned).
async fn insert_meta(tx: &Transaction<'_>, m: &InstanceMeta, version: i64) -> R<bool> {
    let st = tx
        .prepare_cached(&format!(
            "INSERT INTO instances ({META_COLS}, bucket) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
             ON CONFLICT (instance_id) DO NOTHING"
        ))
        .await?;
    let m = MetaRow::of(m);
    let mut args: Vec<Arg> = vec![&m.instance_id];
    args.extend(row_args(&m));
    args.extend([&version as Arg, &m.app_id, &m.bucket]);
    Ok(tx.execute(&st, &args).await? == 1)
}

/// Deletes an instance for good (see `Store::purge`). The row is locked first (`FOR UPDATE`),
/// and every writer that adds rows for an instance (`deliver`, activity results, timer fires,
/// checkpoints) holds at least a key-share lock on it, so nothing lands after the deletes and
/// survives as an orphan a re-created instance would inherit.
pub(crate) async fn purge(tx: &Transaction<'_>, id: &str, force: bool) -> R<bool> {
    let Some(m) = get_meta(tx, id, true).await? else {
        return Ok(false);
    };
    if !force && !m.status.is_terminal() {
        return Err(StoreError::NotTerminal(id.to_string()).into());
    }
    let st = tx
        .prepare_cached(
            "INSERT INTO purged_instances (instance_id, generation, version) VALUES ($1, $2, $3) \
             ON CONFLICT (instance_id) DO UPDATE \
             SET generation = excluded.generation, version = excluded.version",
        )
        .await?;
    tx.execute(&st, &[&id, &m.generation, &m.version]).await?;
    delete_instance(tx, id).await
}

/// Deletes everything an instance owns; returns whether the row existed. The caller holds the
/// row lock.
async fn delete_instance(tx: &Transaction<'_>, id: &str) -> R<bool> {
    for sql in [
        "DELETE FROM history WHERE instance_id = $1",
        "DELETE FROM inbox WHERE instance_id = $1",
        "DELETE FROM activities WHERE instance_id = $1",
        "DELETE FROM reminders WHERE instance_id = $1",
    ] {
        let st = tx.prepare_cached(sql).await?;
        tx.execute(&st, &[&id]).await?;
    }
    let st = tx
        .prepare_cached("DELETE FROM instances WHERE instance_id = $1")
        .await?;
    Ok(tx.execute(&st, &[&id]).await? > 0)
}

pub(super) async fn insert_inbox(
    tx: &Transaction<'_>,
    id: &str,
    event: &HistoryEvent,
    generation: Option<i64>,
) -> R<()> {
    let st = tx
        .prepare_cached(
            "INSERT INTO inbox (instance_id, event, generation, bucket) VALUES ($1, $2, $3, $4)",
        )
        .await?;
    tx.execute(
        &st,
        &[&id, &encode_event(event), &generation, &bucket_of(id)],
    )
    .await?;
    Ok(())
}

async fn insert_reminder(tx: &Transaction<'_>, r: &ReminderRow) -> R<()> {
    let st = tx.prepare_cached(INSERT_REMINDERS).await?;
    let args: [&(dyn ToSql + Sync); 5] = [
        &vec![r.instance_id.as_str()],
        &vec![r.generation],
        &vec![r.due_at],
        &vec![r.event.as_slice()],
        &vec![r.bucket],
    ];
    tx.execute(&st, &args).await?;
    Ok(())
}

/// Appends to an instance's inbox if the instance exists and, when `execution_id` is given, is
/// still in that execution (the row is then stamped with its generation). The key-share lock
/// on the instance row waits for a concurrent purge (or replacement) and does not block
/// checkpoints.
pub(crate) async fn deliver(tx: &Transaction<'_>, d: &Delivery<'_>) -> R<bool> {
    let st = tx
        .prepare_cached(
            "INSERT INTO inbox (instance_id, event, generation, bucket) \
             SELECT i.instance_id, $2, CASE WHEN $3::text IS NULL THEN NULL ELSE i.generation END, $4 \
             FROM (SELECT instance_id, generation FROM instances \
                   WHERE instance_id = $1 AND ($3::text IS NULL OR execution_id = $3) \
                   FOR KEY SHARE) AS i",
        )
        .await?;
    let args: [&(dyn ToSql + Sync); 4] = [&d.target, &d.event, &d.execution_id, &d.bucket];
    Ok(tx.execute(&st, &args).await? > 0)
}

/// `create_instance` inside the caller's transaction.
pub(crate) async fn create(
    tx: &Transaction<'_>,
    req: &CreateInstance,
    now: Micros,
) -> R<CreateOutcome> {
    let id = req.meta.instance_id.as_str();
    let mut meta = req.meta.clone();
    let outcome = loop {
        match get_meta(tx, id, true).await? {
            None => {
                // A purged instance's sequences continue (see `purge`).
                let st = tx
                    .prepare_cached(
                        "SELECT generation, version FROM purged_instances WHERE instance_id = $1",
                    )
                    .await?;
                let version = match tx.query_opt(&st, &[&id]).await? {
                    Some(row) => {
                        meta.generation = meta.generation.max(col::<i64>(&row, 0)? + 1);
                        col::<i64>(&row, 1)? + 1
                    }
                    None => 1,
                };
                if insert_meta(tx, &meta, version).await? {
                    let st = tx
                        .prepare_cached("DELETE FROM purged_instances WHERE instance_id = $1")
                        .await?;
                    tx.execute(&st, &[&id]).await?;
                    break CreateOutcome::Created;
                }
                // A concurrent creator committed first: look again (now it exists, locked).
            }
            Some(old) => {
                if !old.status.is_terminal() {
                    match req.policy {
                        ReusePolicy::Error => {
                            return Err(StoreError::AlreadyExists(id.to_string()).into());
                        }
                        ReusePolicy::Ignore => return Ok(CreateOutcome::Existing),
                        ReusePolicy::Terminate => {}
                    }
                }
                delete_instance(tx, id).await?;
                // Continue the old generation and version sequences so a stale owner of the old
                // execution stays fenced out and its late results are refused.
                meta.generation = meta.generation.max(old.generation + 1);
                insert_meta(tx, &meta, old.version + 1).await?;
                break CreateOutcome::Replaced;
            }
        }
    };
    match start_due_at(req.meta.scheduled_start_at, now) {
        Some(due_at) => {
            let r = Reminder {
                id: 0,
                instance_id: id.to_string(),
                generation: meta.generation,
                due_at,
                event: req.start_event.clone(),
            };
            insert_reminder(tx, &ReminderRow::of(&r)).await?;
        }
        None => insert_inbox(tx, id, &req.start_event, Some(meta.generation)).await?,
    }
    Ok(outcome)
}

/// The history of the instance's current generation (empty if the instance is unknown); takes
/// the generation from the row itself so it can be pipelined with the row read.
pub(crate) async fn history(
    c: &impl deadpool_postgres::GenericClient,
    id: &str,
) -> R<Vec<HistoryEvent>> {
    let st = c
        .prepare_cached(
            "SELECT event FROM history WHERE instance_id = $1 \
             AND generation = (SELECT generation FROM instances WHERE instance_id = $1) \
             ORDER BY seq",
        )
        .await?;
    let rows = c.query(&st, &[&id]).await?;
    rows.iter()
        .map(|r| Ok(decode_event(&col::<Vec<u8>>(r, 0)?)?))
        .collect()
}

pub(crate) async fn inbox(
    c: &impl deadpool_postgres::GenericClient,
    id: &str,
) -> R<Vec<InboxEntry>> {
    let st = c
        .prepare_cached(
            "SELECT seq, event, generation FROM inbox WHERE instance_id = $1 ORDER BY seq",
        )
        .await?;
    let rows = c.query(&st, &[&id]).await?;
    rows.iter().map(|r| inbox_entry(r, 0)).collect()
}

/// The inbox entry in columns `at` (seq), `at + 1` (event), `at + 2` (generation) of `r`.
fn inbox_entry(r: &tokio_postgres::Row, at: usize) -> R<InboxEntry> {
    Ok(InboxEntry {
        seq: col(r, at)?,
        event: decode_event(&col::<Vec<u8>>(r, at + 1)?)?,
        generation: col(r, at + 2)?,
    })
}

/// The inboxes of `ids` in one query, one list per ID in their order (a repeated ID gets the
/// same list twice).
pub(crate) async fn inboxes(
    c: &impl deadpool_postgres::GenericClient,
    ids: &[String],
) -> R<Vec<Vec<InboxEntry>>> {
    let st = c
        .prepare_cached(
            "SELECT instance_id, seq, event, generation FROM inbox
             WHERE instance_id = ANY($1::text[]) ORDER BY instance_id, seq",
        )
        .await?;
    let rows = c.query(&st, &[&ids]).await?;
    let mut by_id: std::collections::HashMap<String, Vec<InboxEntry>> =
        std::collections::HashMap::new();
    for r in &rows {
        by_id
            .entry(col(r, 0)?)
            .or_default()
            .push(inbox_entry(r, 1)?);
    }
    // Moved out, not cloned: only a repeated ID (which callers do not send) copies a list.
    let mut first: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut out: Vec<Vec<InboxEntry>> = Vec::with_capacity(ids.len());
    for id in ids {
        let list = match first.get(id.as_str()) {
            Some(&at) => out[at].clone(),
            None => {
                first.insert(id, out.len());
                by_id.remove(id).unwrap_or_default()
            }
        };
        out.push(list);
    }
    Ok(out)
}

/// Takes a transaction-scoped advisory lock per child instance the checkpoints create, in key
/// order, before any instance row is locked. Creating a child locks (or inserts, waiting on its
/// key) a row in the order of the members and their outbound lists; two batches creating the
/// same children in different orders would deadlock, so they meet here first, in one order.
/// Taking a lock the transaction holds already does not wait.
pub(crate) async fn lock_children(tx: &Transaction<'_>, cps: &[Checkpoint]) -> R<()> {
    let ids: Vec<&str> = cps
        .iter()
        .flat_map(|cp| cp.outbound.iter())
        .filter_map(|o| match o {
            Outbound::Create { create, .. } => Some(create.meta.instance_id.as_str()),
            Outbound::Deliver { .. } => None,
        })
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    // The two-key form: its key space is apart from the migrations' one-key lock.
    let st = tx
        .prepare_cached(
            "SELECT pg_advisory_xact_lock(2003199604, k) \
             FROM (SELECT DISTINCT hashtext(id) AS k FROM unnest($1::text[]) AS id) AS t ORDER BY k",
        )
        .await?;
    tx.query(&st, &[&ids]).await?;
    Ok(())
}

/// Fills the bucket column of rows written before it existed (it is derived from the ID, which
/// SQL cannot compute here); cheap when there are none (the bucket indexes find them).
pub(crate) async fn backfill_buckets(c: &tokio_postgres::Client) -> R<u64> {
    let mut ids: Vec<String> = Vec::new();
    for table in ["instances", "inbox", "activities", "reminders"] {
        let st = c
            .prepare(&format!(
                "SELECT DISTINCT instance_id FROM {table} WHERE bucket < 0"
            ))
            .await?;
        for r in c.query(&st, &[]).await? {
            ids.push(col(&r, 0)?);
        }
    }
    ids.sort();
    ids.dedup();
    for id in &ids {
        for table in ["instances", "inbox", "activities", "reminders"] {
            let st = c
                .prepare(&format!(
                    "UPDATE {table} SET bucket = $2 WHERE instance_id = $1 AND bucket < 0"
                ))
                .await?;
            c.execute(&st, &[id, &bucket_of(id)]).await?;
        }
    }
    Ok(ids.len() as u64)
}

/// Adds one `?`-parameterised condition, numbering the parameter after those already bound.
fn push<'a>(
    sql: &mut String,
    args: &mut Vec<&'a (dyn ToSql + Sync)>,
    cond: &str,
    arg: &'a (dyn ToSql + Sync),
) {
    args.push(arg);
    sql.push_str(&cond.replace('?', &format!("${}", args.len())));
}

pub(crate) async fn list(
    c: &impl deadpool_postgres::GenericClient,
    f: &ListFilter,
) -> R<InstancePage> {
    let limit = if f.limit == 0 { DEFAULT_PAGE } else { f.limit };
    let statuses: Vec<i32> = f.statuses.iter().map(|s| s.code()).collect();
    let limit_arg = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut sql = format!("SELECT {META_COLS} FROM instances WHERE true");
    let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
    // Each filter shape is its own prepared statement; there are few shapes.
    if !statuses.is_empty() {
        push(
            &mut sql,
            &mut args,
            " AND status = ANY(?::int[])",
            &statuses,
        );
    }
    if let Some(name) = &f.name {
        push(&mut sql, &mut args, " AND name = ?", name);
    }
    if let Some(from) = &f.created_from {
        push(&mut sql, &mut args, " AND created_at >= ?", from);
    }
    if let Some(to) = &f.created_to {
        push(&mut sql, &mut args, " AND created_at <= ?", to);
    }
    if let Some(to) = &f.completed_to {
        push(&mut sql, &mut args, " AND completed_at <= ?", to);
    }
    if let Some(after) = &f.after {
        push(&mut sql, &mut args, " AND instance_id > ?", after);
    }
    push(
        &mut sql,
        &mut args,
        " ORDER BY instance_id LIMIT ?",
        &limit_arg,
    );
    let st = c.prepare_cached(&sql).await?;
    let rows = c.query(&st, &args).await?;
    let items = rows.iter().map(meta_from_row).collect::<R<Vec<_>>>()?;
    let next = if items.len() == limit {
        items.last().map(|m| m.instance_id.clone())
    } else {
        None
    };
    Ok(InstancePage { items, next })
}

/// Leases free slots. Two sidecars may pick the same free slot at once: the row lock makes the
/// second wait, and its conditional update then finds an unexpired lease and returns nothing.
pub(crate) async fn acquire_slots(
    tx: &Transaction<'_>,
    bucket: &str,
    limit: u32,
    holder: &str,
    want: u32,
    now: i64,
    until: i64,
) -> R<Vec<u32>> {
    let st = tx
        .prepare_cached(
            "WITH free AS (
                 SELECT s::int AS slot FROM generate_series(0, $2::int - 1) AS s
                 WHERE NOT EXISTS (SELECT 1 FROM concurrency_slots c
                                   WHERE c.bucket = $1 AND c.slot = s AND c.expires_at > $5)
                 ORDER BY s LIMIT $4)
             INSERT INTO concurrency_slots (bucket, slot, holder, expires_at)
             SELECT $1, slot, $3, $6 FROM free
             ON CONFLICT (bucket, slot) DO UPDATE
                 SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE concurrency_slots.expires_at <= $5
             RETURNING slot",
        )
        .await?;
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    let want = i64::from(want);
    let rows = tx
        .query(&st, &[&bucket, &limit, &holder, &want, &now, &until])
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let slot: i32 = r.try_get(0)?;
        out.push(slot as u32);
    }
    out.sort_unstable();
    Ok(out)
}

pub(crate) async fn renew_slots(
    tx: &Transaction<'_>,
    holder: &str,
    now: i64,
    until: i64,
) -> R<Vec<crate::SlotLease>> {
    let st = tx
        .prepare_cached("DELETE FROM concurrency_slots WHERE holder = $1 AND expires_at <= $2")
        .await?;
    tx.execute(&st, &[&holder, &now]).await?;
    let st = tx
        .prepare_cached(
            "UPDATE concurrency_slots SET expires_at = $2 WHERE holder = $1 RETURNING bucket, slot",
        )
        .await?;
    let mut out = Vec::new();
    for r in tx.query(&st, &[&holder, &until]).await? {
        let slot: i32 = r.try_get(1)?;
        out.push(crate::SlotLease {
            bucket: r.try_get(0)?,
            slot: slot as u32,
        });
    }
    out.sort();
    Ok(out)
}

pub(crate) async fn release_slots(
    tx: &Transaction<'_>,
    bucket: &str,
    holder: &str,
    slots: &[u32],
) -> R<()> {
    let slots: Vec<i32> = slots.iter().map(|s| *s as i32).collect();
    let st = tx
        .prepare_cached(
            "DELETE FROM concurrency_slots WHERE bucket = $1 AND holder = $2 AND slot = ANY($3)",
        )
        .await?;
    tx.execute(&st, &[&bucket, &holder, &slots]).await?;
    Ok(())
}
