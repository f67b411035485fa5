//! `checkpoint-ab`: the PostgreSQL checkpoint alone, one-trip batch against the reporting path,
//! interleaved in one process on one throwaway server (fsync on), so the machine's swings hit
//! both sides alike. Each round makes one idle step's checkpoint per side: a fenced batch of one
//! member that appends two events, consumes the result from the inbox and schedules the next
//! activity, as a ten-step chain's turn does; every ten rounds a side moves on to a new
//! instance (created outside the timing), so histories stay as short as a chain's.
//!
//! ```text
//! cargo run --release -p weft-bench --bin checkpoint-ab -- [ROUNDS (default 2000)] [--no-fsync]
//! ```
//!
//! `--no-fsync` runs the server with fsync off, which shows how much of a checkpoint is the WAL
//! flush; `--statements` loads `pg_stat_statements` (with planning tracked) and prints where the
//! server's time went per statement.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use weft_core::bucket::bucket_of;
use weft_store::conformance::{APP, create, empty_cp, raised, row};
use weft_store::{ActivityTask, Fence, Store};
use weft_store::{PgOptions, PgStore};
use weft_testkit::{PgLaunch, PgServer};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().context("ROUNDS must be a number")?,
        None => 2000,
    };
    let fsync = !std::env::args().any(|a| a == "--no-fsync");
    let statements = std::env::args().any(|a| a == "--statements");
    let server = tokio::task::spawn_blocking(move || launch(fsync, statements)).await??;
    let url = server.url("postgres");
    if statements {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        c.batch_execute("CREATE EXTENSION pg_stat_statements")
            .await?;
    }
    let mut sides = Vec::new();
    for (name, one_trip) in [("one-trip", true), ("reporting", false)] {
        let mut o = PgOptions::new(url.clone());
        o.one_trip = one_trip;
        o.listen = false;
        let s = PgStore::connect_with(o).await?;
        if one_trip {
            s.start_holder(HOLDER, 600_000_000).await?;
        }
        sides.push(Side {
            name,
            store: s,
            id: String::new(),
            fence: None,
            times: Vec::with_capacity(rounds),
        });
    }
    for round in 0..rounds + 50 {
        // Alternate which side goes first, so neither always follows the other's fsync.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            if round % 10 == 0 {
                sides[k].next_instance(round).await?;
            }
            let t = sides[k].step(round).await?;
            if round >= 50 {
                sides[k].times.push(t);
            }
        }
    }
    println!(
        "checkpoint-ab: {rounds} fenced one-member checkpoints per side, interleaved; PostgreSQL fsync {}; load {}",
        if fsync { "on" } else { "off" },
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9}",
        "path", "mean ms", "p50 ms", "p99 ms", "commits"
    );
    let mut means = Vec::new();
    for s in &mut sides {
        s.times.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let mean = ms(s.times.iter().sum::<Duration>()) / s.times.len() as f64;
        let pct = |p: f64| ms(s.times[((s.times.len() - 1) as f64 * p) as usize]);
        println!(
            "{:<10} {:>9.3} {:>9.3} {:>9.3} {:>9}",
            s.name,
            mean,
            pct(0.5),
            pct(0.99),
            s.store.commit_count()
        );
        means.push(mean);
    }
    println!("one-trip / reporting mean: {:.2}", means[0] / means[1]);
    let (trips, reruns) = sides[0].store.one_trip_counts();
    println!("one-trip side: {trips} batches in one trip, {reruns} rerun");
    if statements {
        print_statements(&server.url("postgres")).await?;
    }
    drop(sides);
    drop(server);
    Ok(())
}

const HOLDER: &str = "checkpoint-ab";

struct Side {
    name: &'static str,
    store: PgStore,
    id: String,
    fence: Option<Fence>,
    times: Vec<Duration>,
}

impl Side {
    /// Creates the side's next instance and takes its bucket's lease (once per bucket).
    async fn next_instance(&mut self, round: usize) -> anyhow::Result<()> {
        self.id = format!("ab-{}-{}", self.name, round / 10);
        create(&self.store, &self.id).await;
        let b = bucket_of(&self.id);
        // Both sides hold their buckets as one holder, so either may take any bucket.
        let leases = self.store.acquire_buckets(APP, HOLDER, &[b]).await?;
        let epoch = leases.first().context("bucket lease")?.epoch;
        self.fence = Some(Fence {
            app_id: APP.into(),
            bucket: b,
            epoch,
        });
        Ok(())
    }

    /// One idle step's checkpoint: the result arrives in the inbox, the turn appends it with
    /// its WorkflowStarted, consumes it and schedules the next activity.
    async fn step(&self, round: usize) -> anyhow::Result<Duration> {
        let task = i32::try_from(round % 10).unwrap_or(0);
        self.store
            .append_inbox(&self.id, raised("result", task))
            .await?;
        let m = row(&self.store, &self.id).await;
        let inbox = self.store.read_inbox(&self.id).await?;
        let mut cp = empty_cp(&m);
        cp.fence = self.fence.clone();
        cp.append = vec![raised("started", task), raised("result", task)];
        cp.consumed_inbox = inbox.iter().map(|e| e.seq).collect();
        cp.new_activities = vec![ActivityTask {
            app_id: String::new(),
            instance_id: self.id.clone(),
            generation: m.generation,
            task_id: task + 1,
            request: vec![0; 64],
            claim: 0,
        }];
        let t0 = Instant::now();
        let out = self.store.checkpoint_batch(vec![cp]).await;
        let t = t0.elapsed();
        out.into_iter().next().context("one answer")??;
        Ok(t)
    }
}

/// The benchmark's server settings ([`weft_bench::pg::settings`]), plus `pg_stat_statements`.
fn launch(fsync: bool, statements: bool) -> anyhow::Result<PgServer> {
    let mut settings: Vec<(String, String)> = weft_bench::pg::settings(fsync)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if statements {
        settings.push((
            "shared_preload_libraries".into(),
            "pg_stat_statements".into(),
        ));
        settings.push(("pg_stat_statements.track_planning".into(), "on".into()));
    }
    PgServer::launch(PgLaunch {
        fsync,
        settings,
        tls: None,
    })
    .context("throwaway PostgreSQL")
}

/// The statements that took the server's time, most first (planning and execution).
async fn print_statements(url: &str) -> anyhow::Result<()> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let rows = c
        .query(
            "SELECT calls, total_plan_time / calls, total_exec_time / calls, \
                 left(regexp_replace(query, '\\s+', ' ', 'g'), 90) \
             FROM pg_stat_statements WHERE calls > 100 \
             ORDER BY total_plan_time + total_exec_time DESC LIMIT 14",
            &[],
        )
        .await?;
    println!(
        "{:>7} {:>9} {:>9}  statement",
        "calls", "plan ms", "exec ms"
    );
    for r in rows {
        let (calls, plan, exec, q): (i64, f64, f64, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        println!("{calls:>7} {plan:>9.3} {exec:>9.3}  {q}");
    }
    Ok(())
}
