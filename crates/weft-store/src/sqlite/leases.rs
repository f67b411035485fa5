//! Ownership leases on SQLite: holders with an expiry, bucket leases with epochs, and the fence
//! check every owner write makes (see `Store::acquire_buckets`). The caller's IMMEDIATE
//! transaction serialises every writer, so a checked fence stays current until the commit.

use rusqlite::{Connection, OptionalExtension, params};
use weft_core::Micros;

use super::map_err;
use crate::{BucketLease, Fence, Result, Scope, StoreError};

/// Ended or expired holders are forgotten this long after (a name is never reused anyway).
const FORGET_AFTER: Micros = 24 * 3600 * 1_000_000;

pub(crate) fn start_holder(c: &Connection, holder: &str, now: Micros, ttl: Micros) -> Result<()> {
    c.prepare_cached("DELETE FROM lease_holders WHERE expires_at < ?1")
        .map_err(map_err)?
        .execute([now - FORGET_AFTER])
        .map_err(map_err)?;
    let n = c
        .prepare_cached(
            "INSERT INTO lease_holders (holder, expires_at) VALUES (?1, ?2) \
             ON CONFLICT (holder) DO NOTHING",
        )
        .map_err(map_err)?
        .execute(params![holder, now.saturating_add(ttl)])
        .map_err(map_err)?;
    if n == 0 {
        return Err(StoreError::AlreadyExists(holder.to_string()));
    }
    Ok(())
}

pub(crate) fn renew_holder(c: &Connection, holder: &str, now: Micros, ttl: Micros) -> Result<bool> {
    let n = c
        .prepare_cached(
            "UPDATE lease_holders SET expires_at = ?3 WHERE holder = ?1 AND expires_at > ?2",
        )
        .map_err(map_err)?
        .execute(params![holder, now, now.saturating_add(ttl)])
        .map_err(map_err)?;
    Ok(n == 1)
}

pub(crate) fn end_holder(c: &Connection, holder: &str) -> Result<()> {
    c.prepare_cached("UPDATE lease_holders SET expires_at = 0 WHERE holder = ?1")
        .map_err(map_err)?
        .execute([holder])
        .map_err(map_err)?;
    c.prepare_cached("UPDATE bucket_leases SET holder = NULL WHERE holder = ?1")
        .map_err(map_err)?
        .execute([holder])
        .map_err(map_err)?;
    Ok(())
}

fn holder_live(c: &Connection, holder: &str, now: Micros) -> Result<bool> {
    Ok(
        c.prepare_cached("SELECT 1 FROM lease_holders WHERE holder = ?1 AND expires_at > ?2")
            .map_err(map_err)?
            .query_row(params![holder, now], |_| Ok(()))
            .optional()
            .map_err(map_err)?
            .is_some(),
    )
}

pub(crate) fn acquire(
    c: &Connection,
    app_id: &str,
    holder: &str,
    buckets: &[i32],
    now: Micros,
) -> Result<Vec<BucketLease>> {
    if !holder_live(c, holder, now)? {
        return Ok(Vec::new());
    }
    let mut insert = c
        .prepare_cached(
            "INSERT INTO bucket_leases (app_id, bucket, holder, epoch) VALUES (?1, ?2, NULL, 0) \
             ON CONFLICT (app_id, bucket) DO NOTHING",
        )
        .map_err(map_err)?;
    let mut take = c
        .prepare_cached(
            "UPDATE bucket_leases \
             SET epoch = CASE WHEN holder IS ?3 THEN epoch ELSE epoch + 1 END, holder = ?3 \
             WHERE app_id = ?1 AND bucket = ?2 AND (holder IS NULL OR holder = ?3 OR NOT EXISTS \
                 (SELECT 1 FROM lease_holders h WHERE h.holder = bucket_leases.holder \
                  AND h.expires_at > ?4)) \
             RETURNING epoch",
        )
        .map_err(map_err)?;
    let mut out = Vec::new();
    let mut sorted = buckets.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    for b in sorted {
        insert.execute(params![app_id, b]).map_err(map_err)?;
        let epoch: Option<i64> = take
            .query_row(params![app_id, b, holder, now], |r| r.get(0))
            .optional()
            .map_err(map_err)?;
        if let Some(epoch) = epoch {
            out.push(BucketLease { bucket: b, epoch });
        }
    }
    Ok(out)
}

pub(crate) fn release(c: &Connection, app_id: &str, holder: &str, buckets: &[i32]) -> Result<()> {
    let mut st = c
        .prepare_cached(
            "UPDATE bucket_leases SET holder = NULL WHERE app_id = ?1 AND bucket = ?2 AND holder = ?3",
        )
        .map_err(map_err)?;
    for b in buckets {
        st.execute(params![app_id, b, holder]).map_err(map_err)?;
    }
    Ok(())
}

fn epoch_of(c: &Connection, app_id: &str, bucket: i32) -> Result<Option<i64>> {
    c.prepare_cached("SELECT epoch FROM bucket_leases WHERE app_id = ?1 AND bucket = ?2")
        .map_err(map_err)?
        .query_row(params![app_id, bucket], |r| r.get(0))
        .optional()
        .map_err(map_err)
}

/// `Err(Fenced)` unless `fence` (if any) is still the bucket's lease epoch.
pub(crate) fn check(c: &Connection, fence: Option<&Fence>) -> Result<()> {
    let Some(f) = fence else { return Ok(()) };
    if epoch_of(c, &f.app_id, f.bucket)? == Some(f.epoch) {
        Ok(())
    } else {
        Err(StoreError::fenced(f))
    }
}

/// The part of a fenced scope whose leases are still current (an unfenced scope as it is).
pub(crate) fn current(c: &Connection, scope: &Scope) -> Result<Scope> {
    let Some(pairs) = scope.fenced_pairs() else {
        return Ok(scope.clone());
    };
    let mut buckets = Vec::with_capacity(pairs.len());
    for (b, e) in pairs {
        if epoch_of(c, &scope.app_id, b)? == Some(e) {
            buckets.push(b);
        }
    }
    Ok(Scope {
        app_id: scope.app_id.clone(),
        buckets,
        epochs: None,
    })
}
