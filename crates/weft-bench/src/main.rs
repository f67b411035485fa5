//! `weft-bench`: runs the end-to-end workloads on one backend and prints a table of figures.
//!
//! ```text
//! cargo run --release -p weft-bench -- [--backend sqlite|postgres] [--postgres]
//!     [--database-url URL] [--workflows 200] [--steps 10] [--concurrency 64]
//!     [--latency-runs 100] [--workload all|throughput|latency] [--deadline-secs 120]
//! ```
//!
//! The whole run is bounded by `--deadline-secs`; past it the benchmark aborts with an error
//! (exit status 1) and still stops the throwaway PostgreSQL server it started.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use weft_bench::{BenchStore, Plan, pg};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    All,
    Throughput,
    Latency,
}

/// End-to-end benchmark of the Weft engine (see docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "weft-bench")]
struct Args {
    /// Workflows started at once by the throughput workload.
    #[arg(long, default_value_t = 200)]
    workflows: usize,
    /// Activities per workflow (one after another).
    #[arg(long, default_value_t = 10)]
    steps: u32,
    /// Concurrent completion RPCs in the worker (and concurrent StartInstance calls).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Sequential workflows measured by the latency workload.
    #[arg(long, default_value_t = 100)]
    latency_runs: usize,
    /// Unmeasured workflows run first.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    #[arg(long, value_enum, default_value_t = Workload::All)]
    workload: Workload,
    #[arg(long, value_enum, default_value_t = Backend::Sqlite)]
    backend: Backend,
    /// Same as `--backend postgres`.
    #[arg(long)]
    postgres: bool,
    /// Use this PostgreSQL database instead of starting a throwaway server (implies postgres).
    #[arg(long)]
    database_url: Option<String>,
    /// Start the throwaway PostgreSQL with fsync=off and synchronous_commit=off (not durable;
    /// for comparison only).
    #[arg(long)]
    pg_no_fsync: bool,
    /// Directory for the SQLite database file (default: a fresh temp directory, deleted after).
    #[arg(long)]
    sqlite_dir: Option<PathBuf>,
    /// Abort with an error if the whole run takes longer than this.
    #[arg(long, default_value_t = 120)]
    deadline_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    anyhow::ensure!(args.steps >= 1, "--steps must be at least 1");
    anyhow::ensure!(args.workflows >= 1, "--workflows must be at least 1");
    let deadline = Duration::from_secs(args.deadline_secs);
    let started = std::time::Instant::now();

    let postgres =
        args.postgres || args.database_url.is_some() || args.backend == Backend::Postgres;
    // Declared before the runtime so it is dropped (server stopped) after the runtime is gone.
    let mut server = None;
    let mut setup = String::new();
    let url = match (&args.database_url, postgres) {
        (Some(u), _) => {
            setup = format!("PostgreSQL at {}", weft_store::redact_url(u));
            Some(u.clone())
        }
        (None, true) => {
            let s = pg::PgServer::start(!args.pg_no_fsync).context("starting PostgreSQL")?;
            let settings: Vec<String> = pg::settings(!args.pg_no_fsync)
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            setup = format!("throwaway PostgreSQL ({})", settings.join(", "));
            let url = s.url();
            server = Some(s);
            Some(url)
        }
        (None, false) => None,
    };
    let tmp = tempfile::Builder::new().prefix("weft-bench-").tempdir()?;
    let sqlite_path = args
        .sqlite_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf())
        .join(format!("bench-{}.db", weft_bench::workload::run_tag()));
    if url.is_none() {
        setup = format!("SQLite {} (WAL, synchronous=FULL)", sqlite_path.display());
    }
    let plan = Plan {
        workflows: args.workflows,
        steps: args.steps,
        concurrency: args.concurrency.max(1),
        latency_runs: if args.workload == Workload::Throughput {
            0
        } else {
            args.latency_runs
        },
        throughput: args.workload != Workload::Latency,
        warmup: args.warmup,
    };
    println!(
        "weft-bench: {setup}; {} cores; {} workflows x {} steps, concurrency {}, {} latency runs",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        plan.workflows,
        plan.steps,
        plan.concurrency,
        plan.latency_runs
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = rt.block_on(async {
        let remaining = deadline.saturating_sub(started.elapsed());
        tokio::time::timeout(remaining, async {
            let store = match &url {
                Some(u) => BenchStore::postgres(u).await?,
                None => BenchStore::sqlite(&sqlite_path)?,
            };
            weft_bench::run(store, &plan).await
        })
        .await
    });
    // Bounded: a blocking store call still running must not hold the process.
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(server);
    drop(tmp);

    let rows = match outcome {
        Ok(r) => r?,
        Err(_) => anyhow::bail!(
            "deadline of {} s exceeded; aborted (raise --deadline-secs or shrink the workload)",
            args.deadline_secs
        ),
    };
    print!("{}", weft_bench::table(&rows));
    for r in &rows {
        println!(
            "\nstore calls during {} ({} activity steps):",
            r.workload,
            r.workflows as u64 * u64::from(r.steps)
        );
        print!(
            "{}",
            weft_bench::probe::table(&r.store_calls, r.workflows as u64 * u64::from(r.steps))
        );
    }
    for r in &rows {
        anyhow::ensure!(
            r.completed == r.workflows,
            "{}: only {} of {} workflows completed",
            r.workload,
            r.completed,
            r.workflows
        );
    }
    Ok(())
}
