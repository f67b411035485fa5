//! The SQLite schema as embedded, ordered migrations, applied at open; a database written by a
//! newer binary (a schema version we do not know) is refused.

use rusqlite::{Connection, OptionalExtension};

use crate::{Result, StoreError};

use super::map_err;

/// Migration `i` (1-based) brings the schema from version `i - 1` to `i`. Append only: never edit a
/// migration that has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
CREATE TABLE instances (
    instance_id        TEXT PRIMARY KEY NOT NULL,
    name               TEXT NOT NULL,
    status             INTEGER NOT NULL,
    execution_id       TEXT NOT NULL,
    generation         INTEGER NOT NULL,
    input              BLOB,
    output             BLOB,
    custom_status      BLOB,
    failure            BLOB,
    parent_instance_id TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    started_at         INTEGER,
    completed_at       INTEGER,
    scheduled_start_at INTEGER,
    -- fencing value: bumped by every checkpoint, checked against the writer's expectation
    version            INTEGER NOT NULL
);
CREATE INDEX instances_by_status ON instances (status, instance_id);
CREATE INDEX instances_by_name ON instances (name, instance_id);
CREATE INDEX instances_by_created ON instances (created_at);

-- append-only per instance and generation; only the current generation is ever read
CREATE TABLE history (
    instance_id TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    event       BLOB NOT NULL,
    PRIMARY KEY (instance_id, generation, seq)
) WITHOUT ROWID;

-- AUTOINCREMENT so a sequence number is never reused, even after the newest row is consumed
CREATE TABLE inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    event       BLOB NOT NULL
);
CREATE INDEX inbox_by_instance ON inbox (instance_id, seq);

-- the activity outbox: scheduled by a checkpoint, deleted by the completion
CREATE TABLE activities (
    instance_id TEXT NOT NULL,
    task_id     INTEGER NOT NULL,
    generation  INTEGER NOT NULL,
    request     BLOB NOT NULL,
    PRIMARY KEY (instance_id, task_id)
) WITHOUT ROWID;

CREATE TABLE reminders (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    due_at      INTEGER NOT NULL,
    lease_until INTEGER,
    event       BLOB NOT NULL
);
CREATE INDEX reminders_by_due ON reminders (due_at);
CREATE INDEX reminders_by_instance ON reminders (instance_id, generation);
"#,
    // Executions kept apart: inbox rows name the generation they are for (NULL: any), and a
    // purged instance's last generation and version survive it, so a re-created one continues
    // both sequences.
    r#"
ALTER TABLE inbox ADD COLUMN generation INTEGER;
CREATE TABLE purged_instances (
    instance_id TEXT PRIMARY KEY NOT NULL,
    generation  INTEGER NOT NULL,
    version     INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    // Leased reminders, for the timer loop's "next claimable" query (it must not scan every
    // reminder to learn when a lease runs out).
    r#"
CREATE INDEX reminders_leased ON reminders (lease_until) WHERE lease_until IS NOT NULL;
"#,
    // 4: concurrency limits across sidecars and retention (configuration issue): leased slots
    // `0..limit` per bucket, and finished instances found by completion time.
    r#"
CREATE TABLE concurrency_slots (
    bucket     TEXT NOT NULL,
    slot       INTEGER NOT NULL,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (bucket, slot)
);
CREATE INDEX concurrency_slots_by_holder ON concurrency_slots (holder);
CREATE INDEX instances_by_completed ON instances (status, completed_at);
"#,
    // Cluster ownership: the app an instance belongs to, and the instance's bucket
    // (weft_core::bucket::bucket_of(instance_id)) on every row a background scan reads.
    // -1 = written before this migration; filled in at open (the hash is computed in Rust).
    r#"
ALTER TABLE instances ADD COLUMN app_id TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN bucket INTEGER NOT NULL DEFAULT -1;
ALTER TABLE inbox ADD COLUMN bucket INTEGER NOT NULL DEFAULT -1;
ALTER TABLE activities ADD COLUMN bucket INTEGER NOT NULL DEFAULT -1;
ALTER TABLE reminders ADD COLUMN bucket INTEGER NOT NULL DEFAULT -1;
CREATE INDEX instances_by_bucket ON instances (bucket, status);
CREATE INDEX inbox_by_bucket ON inbox (bucket);
CREATE INDEX activities_by_bucket ON activities (bucket);
CREATE INDEX reminders_by_bucket ON reminders (bucket, due_at);
"#,
    // 6: nothing for SQLite (PostgreSQL's hints name their writer); kept so both backends'
    // schema versions count the same migrations.
    r#"
SELECT 1;
"#,
    // 7: activity task claims (see PostgreSQL's migration 7).
    r#"
ALTER TABLE activities ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;
"#,
    // 8: ownership leases (see PostgreSQL's migration 8).
    r#"
CREATE TABLE lease_holders (
    holder     TEXT PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE bucket_leases (
    app_id TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    holder TEXT,
    epoch  INTEGER NOT NULL,
    PRIMARY KEY (app_id, bucket)
);
CREATE INDEX bucket_leases_by_holder ON bucket_leases (holder);
"#,
    // 9: cross-app activities (see PostgreSQL's migration 9; no notifications here).
    r#"
ALTER TABLE activities ADD COLUMN app_id TEXT NOT NULL DEFAULT '';
CREATE INDEX activities_remote ON activities (app_id, bucket, claim) WHERE app_id <> '';
"#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`SCHEMA_VERSION`], each migration in its own IMMEDIATE transaction so
/// two processes opening the same file at once cannot both apply it.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS weft_schema_version (
             id INTEGER PRIMARY KEY CHECK (id = 1),
             version INTEGER NOT NULL
         )",
    )
    .map_err(map_err)?;
    loop {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(map_err)?;
        let current: i64 = tx
            .query_row(
                "SELECT version FROM weft_schema_version WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(map_err)?
            .unwrap_or(0);
        if current > SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "database schema version {current} is newer than this binary supports \
                 ({SCHEMA_VERSION}); upgrade weft"
            )));
        }
        if current == SCHEMA_VERSION {
            return Ok(());
        }
        let idx = usize::try_from(current)
            .map_err(|_| StoreError::Corrupt(format!("negative schema version {current}")))?;
        tx.execute_batch(MIGRATIONS[idx]).map_err(map_err)?;
        tx.execute(
            "INSERT INTO weft_schema_version (id, version) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            [current + 1],
        )
        .map_err(map_err)?;
        tx.commit().map_err(map_err)?;
        tracing::info!(version = current + 1, "applied SQLite store migration");
    }
}
