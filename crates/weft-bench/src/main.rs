//! `weft-bench`: runs the end-to-end workloads on one backend and prints a table of figures.
//!
//! ```text
//! cargo run --release -p weft-bench -- [--backend sqlite|postgres] [--postgres]
//!     [--database-url URL] [--sidecar in-process|process] [--weft-bin PATH]
//!     [--workload all|throughput|latency|fanout|rss|python,...] [--workflows 200] [--steps 10]
//!     [--concurrency 64] [--latency-runs 100] [--fanout-sizes 1000] [--rss-workflows 100000]
//!     [--python PATH] [--json FILE] [--deadline-secs 600] [--worker-permits split|shared]
//!     [--cluster N [--via-haproxy] [--placement-nodes 3] [--sidecar-arg=FLAG ...]]
//! ```
//!
//! `--cluster N` is the production configuration: `--placement-nodes` (3) `weft placement` nodes
//! and N `weft sidecar`s (the `weft` next to this binary, or `--weft-bin`) on a throwaway
//! PostgreSQL with fsync on (or `--database-url`), one bench worker per sidecar and starts spread
//! round robin over them, or with `--via-haproxy` every worker and client through HAProxy;
//! `--sidecar-arg` then goes to every sidecar. `--worker-permits shared` gives the bench worker
//! its older single pool for turns and activities, taken before the next item is read (the
//! default `split` keeps one pool per kind, as the SDKs do).
//!
//! The whole run is bounded by `--deadline-secs`; past it the benchmark aborts with an error
//! (exit status 1) and still stops the throwaway PostgreSQL server and every process it started
//! (30 s later at the latest, whatever hangs).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use weft_bench::cluster::ClusterOptions;
use weft_bench::python::PyPlan;
use weft_bench::rss::RssPlan;
use weft_bench::worker::Permits;
use weft_bench::{BenchStore, Plan, Report, Target, pg};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// throughput, latency and fanout.
    All,
    Throughput,
    Latency,
    Fanout,
    /// Idle memory (needs --sidecar process).
    Rss,
    /// The Python SDK worker (needs --sidecar process).
    Python,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SidecarKind {
    /// In this process, with the store's own commit counter and the per-call table.
    InProcess,
    /// `weft dev` as a child process on port 0, reached only over gRPC (as SDK apps are).
    Process,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkerPermits {
    /// One pool for workflow turns and one for activities, taken after the item is read.
    Split,
    /// One pool for both, taken before the next item is read (the older worker).
    Shared,
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
    /// Workloads to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    workload: Vec<Workload>,
    /// Where the sidecar runs.
    #[arg(long, value_enum, default_value_t = SidecarKind::InProcess)]
    sidecar: SidecarKind,
    /// The `weft` binary for `--sidecar process` (default: next to this executable).
    #[arg(long)]
    weft_bin: Option<PathBuf>,
    /// Parallel activities per fan-out workflow (comma-separated; e.g. 1000,10000).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    fanout_sizes: Vec<u32>,
    /// Fan-out workflows measured per size, one at a time.
    #[arg(long, default_value_t = 5)]
    fanout_runs: usize,
    /// Workflows waiting for an event in the idle-memory workload (e.g. 1000000).
    #[arg(long, default_value_t = 100_000)]
    rss_workflows: usize,
    /// Longest wait, once every workflow waits, for the sidecar to drop its idle actors (its idle
    /// timeout is 60 s unless `--sidecar-arg=--idle-timeout=…` says otherwise).
    #[arg(long, default_value_t = 75)]
    idle_wait_secs: u64,
    /// Seconds between the idle actors being dropped and the last RSS reading (the allocator
    /// may return freed memory with a delay).
    #[arg(long, default_value_t = 15)]
    settle_secs: u64,
    /// An extra argument for `weft dev` with `--sidecar process`, or for every `weft sidecar`
    /// with `--cluster` (repeatable), e.g. `--sidecar-arg=--idle-timeout=5s`.
    #[arg(long, allow_hyphen_values = true)]
    sidecar_arg: Vec<String>,
    /// Python with dapr-ext-workflow, for the Python workload.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// The Python workload's script.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/python/chain_bench.py"))]
    python_script: PathBuf,
    /// Workflows of the Python workload's throughput phase.
    #[arg(long, default_value_t = 200)]
    py_workflows: usize,
    /// Sequential workflows of the Python workload's latency phase.
    #[arg(long, default_value_t = 50)]
    py_latency_runs: usize,
    /// Client threads of the Python workload's throughput phase.
    #[arg(long, default_value_t = 50)]
    py_clients: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
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
    #[arg(long, default_value_t = 600)]
    deadline_secs: u64,
    /// Run on a cluster of this many `weft sidecar`s (with placement nodes, on PostgreSQL).
    #[arg(long)]
    cluster: Option<usize>,
    /// With `--cluster`: every worker and client through HAProxy instead of one per sidecar.
    #[arg(long, requires = "cluster")]
    via_haproxy: bool,
    /// With `--cluster`: `weft placement` nodes (one raft group).
    #[arg(long, default_value_t = 3)]
    placement_nodes: usize,
    /// How the bench worker limits concurrent answers: a pool per kind (workflow turns,
    /// activities) taken after reading the item, or one shared pool taken before reading the next.
    #[arg(long, value_enum, default_value_t = WorkerPermits::Split)]
    worker_permits: WorkerPermits,
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
    let started = Instant::now();
    if let Some(n) = args.cluster {
        return run_cluster(&args, n, started + deadline);
    }

    // Declared before the runtime so it is dropped (server stopped) after the runtime is gone.
    let db = Database::choose(&args)?;
    let mut setup = db.setup.clone();
    let process = args.sidecar == SidecarKind::Process;
    let plan = args.plan(process)?;
    let weft_bin = match (&args.weft_bin, process) {
        (Some(b), _) => Some(b.clone()),
        (None, true) => Some(
            weft_bench::process::default_weft_bin()
                .context("no `weft` binary next to weft-bench; build it or pass --weft-bin")?,
        ),
        (None, false) => None,
    };
    if let Some(b) = &weft_bin {
        setup.push_str(&format!("; sidecar: {} dev (child process)", b.display()));
    }
    println!(
        "weft-bench: {setup}; {} cores; {} workflows x {} steps, concurrency {}, {} latency runs; load {:.2}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        plan.workflows,
        plan.steps,
        plan.concurrency,
        plan.latency_runs,
        weft_bench::process::load_avg()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let url = db.url.clone();
    let sqlite_path = db.sqlite_path.clone();
    let outcome = rt.block_on(async {
        let remaining = deadline.saturating_sub(started.elapsed());
        tokio::time::timeout(remaining, async {
            let target = match (&weft_bin, &url) {
                (Some(b), u) => Target::Process {
                    weft_bin: b.clone(),
                    database_url: u.clone(),
                    extra_args: args.sidecar_arg.clone(),
                },
                (None, Some(u)) => Target::InProcess(BenchStore::postgres(u).await?),
                (None, None) => Target::InProcess(BenchStore::sqlite(&sqlite_path)?),
            };
            weft_bench::run(target, &plan, url.as_deref()).await
        })
        .await
    });
    // Bounded: a blocking store call still running must not hold the process.
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(db);

    let report = match outcome {
        Ok(r) => r?,
        Err(_) => anyhow::bail!(
            "deadline of {} s exceeded; aborted (raise --deadline-secs or shrink the workload)",
            args.deadline_secs
        ),
    };
    finish(&args, &setup, &report)
}

/// `--cluster N`: placement nodes and N sidecars on PostgreSQL, driven as [`weft_bench::cluster`]
/// says; every process is stopped before this returns.
fn run_cluster(args: &Args, sidecars: usize, deadline: Instant) -> anyhow::Result<()> {
    anyhow::ensure!(sidecars >= 1, "--cluster needs at least 1 sidecar");
    anyhow::ensure!(
        args.sidecar == SidecarKind::InProcess,
        "--cluster starts its own `weft sidecar`s: leave out --sidecar"
    );
    anyhow::ensure!(
        !args.workload.contains(&Workload::Rss) && !args.workload.contains(&Workload::Python),
        "--cluster runs the throughput, latency and fanout workloads only"
    );
    let plan = args.plan(false)?;
    let weft_bin = match &args.weft_bin {
        Some(b) => b.clone(),
        None => weft_bench::process::default_weft_bin()
            .context("no `weft` binary next to weft-bench; build it or pass --weft-bin")?,
    };
    hard_stop(deadline);
    // Dropped (server stopped) after the cluster, which `bench` stops before it returns.
    let db = Database::choose(args)?;
    let database_url = db.url.clone().context("cluster mode runs on PostgreSQL")?;
    let wiring = if args.via_haproxy {
        "every worker and client through HAProxy"
    } else {
        "one worker per sidecar, starts round robin"
    };
    let setup = format!(
        "cluster: {sidecars} x `{} sidecar` + {} placement nodes, {wiring}; {}",
        weft_bin.display(),
        args.placement_nodes,
        db.setup
    );
    println!(
        "weft-bench: {setup}; {} cores; {} workflows x {} steps, concurrency {} per worker, {} latency runs; worker permits {}; load {:.2}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        plan.workflows,
        plan.steps,
        plan.concurrency,
        plan.latency_runs,
        if args.worker_permits == WorkerPermits::Split {
            "split"
        } else {
            "shared"
        },
        weft_bench::process::load_avg()
    );
    let opts = ClusterOptions {
        weft_bin,
        sidecars,
        placement_nodes: args.placement_nodes,
        via_haproxy: args.via_haproxy,
        database_url,
        sidecar_args: args.sidecar_arg.clone(),
    };
    // On this (the main) thread: the cluster's processes die with the thread that started them.
    let outcome = weft_bench::cluster::bench(&opts, &plan, deadline);
    drop(db);
    finish(args, &setup, &outcome?)
}

/// Past the deadline and a grace for stopping, ends the process whatever hangs: the cluster's
/// processes die with it (`PR_SET_PDEATHSIG`) and the throwaway PostgreSQL's watchdog stops the
/// server.
fn hard_stop(deadline: Instant) {
    std::thread::spawn(move || {
        let grace = Duration::from_secs(30);
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()) + grace);
        eprintln!("weft-bench: still running 30 s past --deadline-secs; exiting");
        std::process::exit(1);
    });
}

/// Prints the tables, writes the JSON and fails unless every workflow completed.
fn finish(args: &Args, setup: &str, report: &Report) -> anyhow::Result<()> {
    print_report(report);
    if let Some(path) = &args.json {
        let v = weft_bench::json::report(setup, report);
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    for r in &report.rows {
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

/// The database the run uses: a given PostgreSQL URL, a throwaway PostgreSQL server, or a SQLite
/// file; dropping it stops the server and removes the temporary directory.
struct Database {
    url: Option<String>,
    sqlite_path: PathBuf,
    /// How the run's first line describes it.
    setup: String,
    // Field order is drop order: the server stops before the temp directory goes.
    _server: Option<pg::PgServer>,
    _tmp: tempfile::TempDir,
}

impl Database {
    fn choose(args: &Args) -> anyhow::Result<Database> {
        let postgres = args.postgres
            || args.database_url.is_some()
            || args.backend == Backend::Postgres
            || args.cluster.is_some();
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
            .join(format!("bench-{}.db", weft_bench::harness::run_tag()));
        if url.is_none() {
            setup = format!("SQLite {} (WAL, synchronous=FULL)", sqlite_path.display());
        }
        Ok(Database {
            url,
            sqlite_path,
            setup,
            _server: server,
            _tmp: tmp,
        })
    }
}

impl Args {
    /// What to run, from the flags; the rss and python workloads need `process`.
    fn plan(&self, process: bool) -> anyhow::Result<Plan> {
        let has =
            |w: Workload| self.workload.contains(&w) || self.workload.contains(&Workload::All);
        let only = |w: Workload| self.workload.contains(&w);
        anyhow::ensure!(
            process || !(only(Workload::Rss) || only(Workload::Python)),
            "the rss and python workloads need --sidecar process"
        );
        Ok(Plan {
            workflows: self.workflows,
            steps: self.steps,
            concurrency: self.concurrency.max(1),
            latency_runs: if has(Workload::Latency) {
                self.latency_runs
            } else {
                0
            },
            throughput: has(Workload::Throughput),
            warmup: self.warmup,
            fanout: if has(Workload::Fanout) {
                self.fanout_sizes.clone()
            } else {
                vec![]
            },
            fanout_runs: self.fanout_runs.max(1),
            rss: only(Workload::Rss).then(|| RssPlan {
                workflows: self.rss_workflows.max(1),
                concurrency: self.concurrency.max(1),
                idle_wait: Duration::from_secs(self.idle_wait_secs),
                settle: Duration::from_secs(self.settle_secs),
            }),
            python: only(Workload::Python).then(|| PyPlan {
                python: self.python.clone(),
                script: self.python_script.clone(),
                steps: self.steps,
                workflows: self.py_workflows.max(1),
                latency_runs: self.py_latency_runs,
                clients: self.py_clients.max(1),
                warmup: 10,
            }),
            permits: match self.worker_permits {
                WorkerPermits::Split => Permits::Split,
                WorkerPermits::Shared => Permits::Shared,
            },
            pg_flush_wait: weft_bench::pgstat::FLUSH_WAIT,
        })
    }
}

/// The tables of figures on stdout.
fn print_report(report: &Report) {
    let rows = &report.rows;
    if let Some(k) = report.rss_at_start_kib {
        println!("sidecar RSS at start: {:.1} MB", k as f64 / 1024.0);
    }
    print!("{}", weft_bench::table(rows));
    if let Some(c) = &report.cluster {
        print!("{}", weft_bench::cluster::summary(c, rows));
    }
    if let Some(r) = &report.rss {
        print!("{}", weft_bench::rss::table(r));
    }
    if let Some(p) = &report.python {
        print!("{}", weft_bench::python::table(p));
    }
    for r in rows.iter().filter(|r| !r.store_calls.is_empty()) {
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
}
