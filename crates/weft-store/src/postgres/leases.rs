//! Ownership leases on PostgreSQL: holders whose expiry is kept on the database's clock (one
//! clock for every sidecar), bucket leases with epochs, and the fence check of owner writes.
//!
//! An owner write locks its bucket's lease row `FOR SHARE` and compares the epoch; a take-over
//! locks the rows `FOR UPDATE` before raising their epochs. So every owner write commits wholly
//! before a take-over of its bucket or sees the new epoch and changes nothing.

use std::collections::HashMap;

use deadpool_postgres::{GenericClient, Transaction};
use weft_core::Micros;

use super::R;
use crate::{BucketLease, Fence, Scope, StoreError};

/// The database's clock in microseconds since the epoch (`clock_timestamp`, not the
/// transaction's start time: a lease is judged at the moment the statement runs).
const NOW_US: &str = "(extract(epoch from clock_timestamp()) * 1000000)::bigint";

/// Ended or expired holders are forgotten this long after (a name is never reused anyway).
const FORGET_AFTER: Micros = 24 * 3600 * 1_000_000;

pub(crate) async fn start_holder(tx: &Transaction<'_>, holder: &str, ttl: Micros) -> R<()> {
    let forget = tx
        .prepare_cached(&format!(
            "DELETE FROM lease_holders WHERE expires_at < {NOW_US} - $1"
        ))
        .await?;
    tx.execute(&forget, &[&FORGET_AFTER]).await?;
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO lease_holders (holder, expires_at) VALUES ($1, {NOW_US} + $2) \
             ON CONFLICT (holder) DO NOTHING"
        ))
        .await?;
    if tx.execute(&insert, &[&holder, &ttl]).await? == 0 {
        return Err(StoreError::AlreadyExists(holder.to_string()).into());
    }
    Ok(())
}

pub(crate) async fn renew_holder(c: &impl GenericClient, holder: &str, ttl: Micros) -> R<bool> {
    let st = c
        .prepare_cached(&format!(
            "UPDATE lease_holders SET expires_at = {NOW_US} + $2 \
             WHERE holder = $1 AND expires_at > {NOW_US}"
        ))
        .await?;
    Ok(c.execute(&st, &[&holder, &ttl]).await? == 1)
}

pub(crate) async fn end_holder(tx: &Transaction<'_>, holder: &str) -> R<()> {
    let end = tx
        .prepare_cached("UPDATE lease_holders SET expires_at = 0 WHERE holder = $1")
        .await?;
    tx.execute(&end, &[&holder]).await?;
    let free = tx
        .prepare_cached("UPDATE bucket_leases SET holder = NULL WHERE holder = $1")
        .await?;
    tx.execute(&free, &[&holder]).await?;
    Ok(())
}

pub(crate) async fn acquire(
    tx: &Transaction<'_>,
    app_id: &str,
    holder: &str,
    buckets: &[i32],
) -> R<Vec<BucketLease>> {
    // The holder's own lease, locked so it cannot be ended while this runs.
    let live = tx
        .prepare_cached(&format!(
            "SELECT 1 FROM lease_holders WHERE holder = $1 AND expires_at > {NOW_US} FOR SHARE"
        ))
        .await?;
    if tx.query_opt(&live, &[&holder]).await?.is_none() {
        return Ok(Vec::new());
    }
    let mut sorted = buckets.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let insert = tx
        .prepare_cached(
            "INSERT INTO bucket_leases (app_id, bucket, holder, epoch) \
             SELECT $1, b, NULL, 0 FROM unnest($2::int[]) AS b ORDER BY b \
             ON CONFLICT (app_id, bucket) DO NOTHING",
        )
        .await?;
    tx.execute(&insert, &[&app_id, &sorted]).await?;
    // In bucket order (as owner writes lock them): two take-overs cannot deadlock.
    let lock = tx
        .prepare_cached(
            "SELECT bucket FROM bucket_leases WHERE app_id = $1 AND bucket = ANY($2::int[]) \
             ORDER BY bucket FOR UPDATE",
        )
        .await?;
    tx.query(&lock, &[&app_id, &sorted]).await?;
    let take = tx
        .prepare_cached(&format!(
            "UPDATE bucket_leases AS l \
             SET epoch = CASE WHEN l.holder IS NOT DISTINCT FROM $2 THEN l.epoch ELSE l.epoch + 1 END, \
                 holder = $2 \
             WHERE l.app_id = $1 AND l.bucket = ANY($3::int[]) \
               AND (l.holder IS NULL OR l.holder = $2 OR NOT EXISTS \
                   (SELECT 1 FROM lease_holders h WHERE h.holder = l.holder \
                    AND h.expires_at > {NOW_US})) \
             RETURNING l.bucket, l.epoch"
        ))
        .await?;
    let rows = tx.query(&take, &[&app_id, &holder, &sorted]).await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(BucketLease {
                bucket: r.try_get(0)?,
                epoch: r.try_get(1)?,
            })
        })
        .collect::<R<Vec<_>>>()?;
    out.sort_unstable();
    Ok(out)
}

pub(crate) async fn release(
    c: &impl GenericClient,
    app_id: &str,
    holder: &str,
    buckets: &[i32],
) -> R<()> {
    let st = c
        .prepare_cached(
            "UPDATE bucket_leases SET holder = NULL \
             WHERE app_id = $1 AND bucket = ANY($2::int[]) AND holder = $3",
        )
        .await?;
    c.execute(&st, &[&app_id, &buckets, &holder]).await?;
    Ok(())
}

/// `Err(Fenced)` unless `fence` (if any) is still its bucket's lease epoch; the lease row stays
/// locked (shared) until the transaction ends.
pub(crate) async fn check(tx: &Transaction<'_>, fence: Option<&Fence>) -> R<()> {
    let Some(f) = fence else { return Ok(()) };
    let st = tx
        .prepare_cached(
            "SELECT epoch FROM bucket_leases WHERE app_id = $1 AND bucket = $2 FOR SHARE",
        )
        .await?;
    let epoch: Option<i64> = match tx.query_opt(&st, &[&f.app_id, &f.bucket]).await? {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    };
    if epoch == Some(f.epoch) {
        Ok(())
    } else {
        Err(StoreError::fenced(f).into())
    }
}

/// The current epochs of the leases `fences` name, locked (shared) in lease order until the
/// transaction ends: what a batch of owner writes checks its members against.
pub(crate) async fn lock_epochs<'f>(
    tx: &Transaction<'_>,
    fences: impl Iterator<Item = &'f Fence>,
) -> R<HashMap<(String, i32), i64>> {
    let mut keys: Vec<(&str, i32)> = fences.map(|f| (f.app_id.as_str(), f.bucket)).collect();
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    keys.sort_unstable();
    keys.dedup();
    let (apps, buckets): (Vec<&str>, Vec<i32>) = keys.into_iter().unzip();
    let st = tx
        .prepare_cached(
            "SELECT l.app_id, l.bucket, l.epoch FROM bucket_leases l \
             JOIN unnest($1::text[], $2::int[]) AS k(app_id, bucket) \
               ON l.app_id = k.app_id AND l.bucket = k.bucket \
             ORDER BY l.app_id, l.bucket FOR SHARE OF l",
        )
        .await?;
    let rows = tx.query(&st, &[&apps, &buckets]).await?;
    rows.iter()
        .map(|r| Ok(((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?)))
        .collect()
}

/// The part of a fenced scope whose leases are still current, locked (shared) until the
/// transaction ends; an unfenced scope as it is.
pub(crate) async fn current(tx: &Transaction<'_>, scope: &Scope) -> R<Scope> {
    let Some(pairs) = scope.fenced_pairs() else {
        return Ok(scope.clone());
    };
    let (buckets, epochs): (Vec<i32>, Vec<i64>) = pairs.into_iter().unzip();
    let st = tx
        .prepare_cached(
            "SELECT l.bucket FROM bucket_leases l \
             JOIN unnest($2::int[], $3::bigint[]) AS s(bucket, epoch) \
               ON l.bucket = s.bucket AND l.epoch = s.epoch \
             WHERE l.app_id = $1 ORDER BY l.bucket FOR SHARE OF l",
        )
        .await?;
    let rows = tx.query(&st, &[&scope.app_id, &buckets, &epochs]).await?;
    Ok(Scope {
        app_id: scope.app_id.clone(),
        buckets: rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?,
        epochs: None,
    })
}
