//! Cluster-wide concurrency slots on SQLite: leases of numbered slots per limit bucket (see
//! `Store::acquire_slots`).

use rusqlite::Connection;

use super::map_err;
use crate::Result;

pub(crate) fn acquire_slots(
    c: &Connection,
    bucket: &str,
    limit: u32,
    holder: &str,
    want: u32,
    now: i64,
    until: i64,
) -> Result<Vec<u32>> {
    let mut taken = std::collections::HashSet::new();
    {
        let mut st = c
            .prepare_cached(
                "SELECT slot FROM concurrency_slots WHERE bucket = ?1 AND expires_at > ?2",
            )
            .map_err(map_err)?;
        let mut rows = st.query(rusqlite::params![bucket, now]).map_err(map_err)?;
        while let Some(r) = rows.next().map_err(map_err)? {
            taken.insert(r.get::<_, i64>(0).map_err(map_err)?);
        }
    }
    let mut got = Vec::new();
    let mut st = c
        .prepare_cached(
            "INSERT INTO concurrency_slots (bucket, slot, holder, expires_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (bucket, slot) DO UPDATE SET holder = excluded.holder,
                 expires_at = excluded.expires_at",
        )
        .map_err(map_err)?;
    for slot in 0..limit {
        if got.len() as u32 >= want {
            break;
        }
        if taken.contains(&i64::from(slot)) {
            continue;
        }
        st.execute(rusqlite::params![bucket, slot, holder, until])
            .map_err(map_err)?;
        got.push(slot);
    }
    Ok(got)
}

pub(crate) fn renew_slots(
    c: &Connection,
    holder: &str,
    now: i64,
    until: i64,
) -> Result<Vec<crate::SlotLease>> {
    c.prepare_cached("DELETE FROM concurrency_slots WHERE holder = ?1 AND expires_at <= ?2")
        .map_err(map_err)?
        .execute(rusqlite::params![holder, now])
        .map_err(map_err)?;
    c.prepare_cached("UPDATE concurrency_slots SET expires_at = ?2 WHERE holder = ?1")
        .map_err(map_err)?
        .execute(rusqlite::params![holder, until])
        .map_err(map_err)?;
    let mut st = c
        .prepare_cached(
            "SELECT bucket, slot FROM concurrency_slots WHERE holder = ?1 ORDER BY bucket, slot",
        )
        .map_err(map_err)?;
    let mut rows = st.query([holder]).map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(map_err)? {
        out.push(crate::SlotLease {
            bucket: r.get(0).map_err(map_err)?,
            slot: r.get(1).map_err(map_err)?,
        });
    }
    Ok(out)
}

pub(crate) fn release_slots(
    c: &Connection,
    bucket: &str,
    holder: &str,
    slots: &[u32],
) -> Result<()> {
    let mut st = c
        .prepare_cached(
            "DELETE FROM concurrency_slots WHERE bucket = ?1 AND holder = ?2 AND slot = ?3",
        )
        .map_err(map_err)?;
    for slot in slots {
        st.execute(rusqlite::params![bucket, holder, slot])
            .map_err(map_err)?;
    }
    Ok(())
}
