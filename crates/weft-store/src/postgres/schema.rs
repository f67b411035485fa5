//! The PostgreSQL schema as embedded, ordered migrations, applied at connect under an advisory
//! lock so sidecars starting together do not race; a newer schema than we know is refused.

use tokio_postgres::Client;

use super::{PgErr, R};
use crate::StoreError;

/// Key of the session advisory lock held while migrating ("weftmigr" in ASCII).
const MIGRATION_LOCK: i64 = 0x7765_6674_6d69_6772;

/// Migration `i` (1-based) brings the schema from version `i - 1` to `i`. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema. IDs sort byte-wise (COLLATE "C") so paging order matches SQLite's.
    r#"
CREATE TABLE instances (
    instance_id        TEXT COLLATE "C" PRIMARY KEY,
    name               TEXT COLLATE "C" NOT NULL,
    status             INTEGER NOT NULL,
    execution_id       TEXT NOT NULL,
    generation         BIGINT NOT NULL,
    input              BYTEA,
    output             BYTEA,
    custom_status      BYTEA,
    failure            BYTEA,
    parent_instance_id TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    started_at         BIGINT,
    completed_at       BIGINT,
    scheduled_start_at BIGINT,
    -- fencing value: bumped by every checkpoint, checked against the writer's expectation
    version            BIGINT NOT NULL
);
CREATE INDEX instances_by_status ON instances (status, instance_id);
CREATE INDEX instances_by_name ON instances (name, instance_id);
CREATE INDEX instances_by_created ON instances (created_at);

-- append-only per instance and generation; only the current generation is ever read
CREATE TABLE history (
    instance_id TEXT COLLATE "C" NOT NULL,
    generation  BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    event       BYTEA NOT NULL,
    PRIMARY KEY (instance_id, generation, seq)
);

CREATE TABLE inbox (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id TEXT COLLATE "C" NOT NULL,
    event       BYTEA NOT NULL
);
CREATE INDEX inbox_by_instance ON inbox (instance_id, seq);

-- the activity outbox: written by a checkpoint, deleted by the completion
CREATE TABLE activities (
    instance_id TEXT COLLATE "C" NOT NULL,
    task_id     INTEGER NOT NULL,
    generation  BIGINT NOT NULL,
    request     BYTEA NOT NULL,
    PRIMARY KEY (instance_id, task_id)
);

CREATE TABLE reminders (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id TEXT COLLATE "C" NOT NULL,
    generation  BIGINT NOT NULL,
    due_at      BIGINT NOT NULL,
    lease_until BIGINT,
    event       BYTEA NOT NULL
);
CREATE INDEX reminders_by_due ON reminders (due_at);
CREATE INDEX reminders_by_instance ON reminders (instance_id, generation);

-- Wake-up hints for other sidecars, sent at commit (duplicates within a transaction collapse).
CREATE FUNCTION weft_notify_inbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('weft_inbox', NEW.instance_id); RETURN NULL; END $$;
CREATE TRIGGER inbox_notify AFTER INSERT ON inbox
    FOR EACH ROW EXECUTE FUNCTION weft_notify_inbox();

CREATE FUNCTION weft_notify_reminders() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('weft_reminders', ''); RETURN NULL; END $$;
CREATE TRIGGER reminders_notify AFTER INSERT ON reminders
    FOR EACH ROW EXECUTE FUNCTION weft_notify_reminders();

CREATE FUNCTION weft_notify_instance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('weft_instance', NEW.instance_id); RETURN NULL; END $$;
CREATE TRIGGER instances_notify_insert AFTER INSERT ON instances
    FOR EACH ROW EXECUTE FUNCTION weft_notify_instance();
CREATE TRIGGER instances_notify_status AFTER UPDATE ON instances
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION weft_notify_instance();
"#,
    // Executions kept apart: inbox rows name the generation they are for (NULL: any), and a
    // purged instance's last generation and version survive it, so a re-created one continues
    // both sequences.
    r#"
ALTER TABLE inbox ADD COLUMN generation BIGINT;
CREATE TABLE purged_instances (
    instance_id TEXT COLLATE "C" PRIMARY KEY,
    generation  BIGINT NOT NULL,
    version     BIGINT NOT NULL
);
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
    bucket     TEXT COLLATE "C" NOT NULL,
    slot       INTEGER NOT NULL,
    holder     TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (bucket, slot)
);
CREATE INDEX concurrency_slots_by_holder ON concurrency_slots (holder);
CREATE INDEX instances_by_completed ON instances (status, completed_at);
"#,
    // Cluster ownership: the app an instance belongs to, and the instance's bucket
    // (weft_core::bucket::bucket_of(instance_id)) on every row a background scan reads, so each
    // sidecar scans only the buckets it owns. -1 = written before this migration; the store
    // fills those in at connect (the hash is computed in Rust).
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
    // Hints name their writer: every pooled connection sets `weft.writer` (a per-`PgStore` ID)
    // at connect, and the payload is `writer/instance_id` (reminders: `writer`), so a sidecar
    // drops the hints of its own writes (it wakes itself in-process) and only reacts to others'.
    r#"
CREATE OR REPLACE FUNCTION weft_notify_inbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('weft_inbox',
    COALESCE(current_setting('weft.writer', true), '') || '/' || NEW.instance_id);
RETURN NULL; END $$;
CREATE OR REPLACE FUNCTION weft_notify_reminders() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('weft_reminders', COALESCE(current_setting('weft.writer', true), ''));
RETURN NULL; END $$;
CREATE OR REPLACE FUNCTION weft_notify_instance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('weft_instance',
    COALESCE(current_setting('weft.writer', true), '') || '/' || NEW.instance_id);
RETURN NULL; END $$;
"#,
    // 7: activity task claims. A recovery scan (start-up, take-over of buckets, an ambiguous
    // commit) claims every pending task it will dispatch by bumping `claim`; a result carrying
    // an older claim is refused, so a task whose result the previous dispatcher recorded is never
    // dispatched again, and one claimed anew is never completed by the old dispatch.
    r#"
ALTER TABLE activities ADD COLUMN claim BIGINT NOT NULL DEFAULT 0;
"#,
    // 8: ownership leases (cluster-safety issue). A holder is one incarnation of a sidecar,
    // alive while `expires_at` (the database's clock, micros) lies ahead; a bucket lease names
    // its holder and an epoch raised by every take-over. Owner writes carry the epoch they were
    // granted and commit only while it is current (the fencing token).
    r#"
CREATE TABLE lease_holders (
    holder     TEXT COLLATE "C" PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE TABLE bucket_leases (
    app_id TEXT COLLATE "C" NOT NULL,
    bucket INTEGER NOT NULL,
    holder TEXT COLLATE "C",
    epoch  BIGINT NOT NULL,
    PRIMARY KEY (app_id, bucket)
);
CREATE INDEX bucket_leases_by_holder ON bucket_leases (holder);
"#,
    // 9: cross-app activities (multi-app issue). A task another app's workers run names that
    // app; it is claimed by that app's owner of the instance's bucket, which learns of new ones
    // from `weft_remote` (payload `writer/app_id`) and a slow poll.
    r#"
ALTER TABLE activities ADD COLUMN app_id TEXT COLLATE "C" NOT NULL DEFAULT '';
CREATE INDEX activities_remote ON activities (app_id, bucket, claim) WHERE app_id <> '';
CREATE OR REPLACE FUNCTION weft_notify_remote() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('weft_remote',
    COALESCE(current_setting('weft.writer', true), '') || '/' || NEW.app_id);
RETURN NULL; END $$;
CREATE TRIGGER activities_notify_remote AFTER INSERT OR UPDATE OF generation ON activities
    FOR EACH ROW WHEN (NEW.app_id <> '') EXECUTE FUNCTION weft_notify_remote();
"#,
    // 10: the one-trip checkpoint batch (performance issue) sends BEGIN, its fenced statements
    // and COMMIT together; a fence that no longer holds must abort the transaction, not merely
    // report, so the batch asserts it. SQLSTATE WF001 tells the store to rerun the batch on the
    // path that reports which member was refused.
    r#"
CREATE FUNCTION weft_assert(ok boolean, what text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'weft: % changed since the turn was dispatched', what
            USING ERRCODE = 'WF001';
    END IF;
    RETURN true;
END $$;
"#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Applies missing migrations. `client` must be a dedicated connection: the session advisory
/// lock is released when it closes, even if we fail half-way.
pub(crate) async fn migrate(client: &mut Client) -> R<()> {
    client
        .query("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let res = apply(client).await;
    // Unlock explicitly too, in case the caller keeps the connection.
    let _ = client
        .query("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    res
}

async fn apply(client: &mut Client) -> R<()> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS weft_schema_version (
                 id INTEGER PRIMARY KEY CHECK (id = 1),
                 version BIGINT NOT NULL
             )",
        )
        .await?;
    loop {
        let tx = client.transaction().await?;
        let current: i64 = tx
            .query_opt("SELECT version FROM weft_schema_version WHERE id = 1", &[])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
        if current > SCHEMA_VERSION {
            return Err(PgErr::Store(StoreError::Corrupt(format!(
                "database schema version {current} is newer than this binary supports \
                 ({SCHEMA_VERSION}); upgrade weft"
            ))));
        }
        if current == SCHEMA_VERSION {
            return Ok(());
        }
        let idx = usize::try_from(current)
            .map_err(|_| StoreError::Corrupt(format!("negative schema version {current}")))?;
        tx.batch_execute(MIGRATIONS[idx]).await?;
        tx.execute(
            "INSERT INTO weft_schema_version (id, version) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            &[&(current + 1)],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version = current + 1, "applied PostgreSQL store migration");
    }
}
