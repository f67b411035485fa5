//! The fuzzing loop: replays a target's committed corpus and earlier crashes, then mutates corpus
//! entries with a seeded xorshift generator until the time budget is spent, catching panics.

use crate::FuzzError;
use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Inputs longer than this are cut: the decoders' size limits are checked elsewhere, and long
/// inputs only slow the loop down.
pub const MAX_INPUT: usize = 16 * 1024;

/// Default time budget per target (seconds) when `WEFT_FUZZ_SECS` is not set.
pub const DEFAULT_SECS: f64 = 3.0;

/// One fuzz target: a decoder (and what runs behind it) fed one input at a time.
pub trait Target {
    /// Names the corpus directory `corpus/<name>` and the crash files `crashes/<name>-…`.
    fn name(&self) -> &'static str;
    /// Runs one input. `Err` is a broken invariant (a crash); returning `Ok` for input the code
    /// under test rejected with an error is the expected outcome for most inputs.
    fn run(&mut self, data: &[u8]) -> Result<(), String>;
    /// How many inputs got past the decoder into the handler behind it (0: not counted).
    fn reached(&self) -> u64 {
        0
    }
}

/// What one target's run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: &'static str,
    pub corpus: usize,
    pub iterations: u64,
    /// Inputs that decoded and reached the handler behind the decoder (targets that count it).
    pub reached: u64,
    /// CPU time of the fuzzing thread (the target's own code and its current-thread runtime).
    pub thread_cpu: Duration,
    /// CPU time of the whole process over the run: equals the target's total (blocking store
    /// threads included) only when targets run one at a time (`--test-threads=1`).
    pub process_cpu: Duration,
    pub wall: Duration,
    pub crashes: Vec<PathBuf>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "weft-fuzz [{}]: {} corpus inputs, {} iterations ({} reached a handler), cpu {:.1} s (thread) / {:.1} s (process), wall {:.1} s, {} crashes",
            self.target,
            self.corpus,
            self.iterations,
            self.reached,
            self.thread_cpu.as_secs_f64(),
            self.process_cpu.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.crashes.len()
        )
    }
}

/// Where the committed corpus and the crash files live.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The time budget per target from `WEFT_FUZZ_SECS`.
pub fn budget() -> Result<Duration, FuzzError> {
    match std::env::var("WEFT_FUZZ_SECS") {
        Err(_) => Ok(Duration::from_secs_f64(DEFAULT_SECS)),
        Ok(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                FuzzError::Config(format!("WEFT_FUZZ_SECS='{s}' is not a number of seconds"))
            }),
    }
}

/// The generator's seed from `WEFT_FUZZ_SEED` (default: from the clock, printed in the report
/// line so a run can be repeated).
pub fn seed() -> u64 {
    std::env::var("WEFT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

/// xorshift64*: small, fast and good enough to drive mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Byte values that often sit on a decoder's edges (varint continuation, sign, length limits).
const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, 0xfe, 0x40, 0x20, b'"', b'\n', b':', b'{',
];

/// Applies 1–4 random edits to `input`; `other` supplies bytes for splicing.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                out[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                out[i] = rng.next_u64() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                out.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                out.drain(i..i + n);
            }
            5 if len > 0 => {
                // Duplicate a slice: repeated fields, nested messages, YAML lines.
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                let piece = out[i..i + n].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, piece);
            }
            6 if !other.is_empty() => {
                // Splice a piece of another corpus entry in.
                let i = rng.below(other.len());
                let n = 1 + rng.below((other.len() - i).min(64));
                let at = rng.below(len + 1);
                out.splice(at..at, other[i..i + n].iter().copied());
            }
            7 if len > 0 => out.truncate(rng.below(len)),
            _ if len > 0 => {
                // Add to a byte: moves lengths and varints by small amounts.
                let i = rng.below(len);
                out[i] = out[i].wrapping_add(rng.below(7) as u8).wrapping_sub(3);
            }
            _ => out.push(rng.next_u64() as u8),
        }
    }
    out.truncate(MAX_INPUT);
    out
}

/// FNV-1a, for crash file names (stable across runs and Rust versions).
pub fn hash(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

thread_local! {
    /// Set while this thread runs a fuzz input: its panics are recorded, not printed.
    static CAPTURE: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Panics on threads that are not fuzzing (the store's blocking threads): counted so the
/// target that caused them fails too.
static OTHER_PANICS: AtomicU64 = AtomicU64::new(0);

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = CAPTURE.with(|c| {
                if let Some(v) = c.borrow_mut().as_mut() {
                    v.push(info.to_string());
                    true
                } else {
                    false
                }
            });
            if !captured {
                // Runtime threads (the store's blocking pool) run target code; the test
                // harness's own threads report assertion failures as usual.
                let thread = std::thread::current();
                if thread.name().is_none_or(|n| n.starts_with("tokio")) {
                    OTHER_PANICS.fetch_add(1, Ordering::SeqCst);
                }
                default(info);
            }
        }));
    });
}

fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs one input with panics captured; `Err` describes the crash.
pub fn run_one(target: &mut dyn Target, data: &[u8]) -> Result<(), String> {
    install_hook();
    let others = OTHER_PANICS.load(Ordering::SeqCst);
    CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let result = catch_unwind(AssertUnwindSafe(|| target.run(data)));
    let panics = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    let result = match result {
        Ok(r) => r,
        Err(_) => Err(format!("panic: {}", panics.join(" | "))),
    };
    // A panic inside a task the target spawned is caught by the runtime, not by us.
    if result.is_ok() && !panics.is_empty() {
        return Err(format!("panic in a spawned task: {}", panics.join(" | ")));
    }
    if result.is_ok() && OTHER_PANICS.load(Ordering::SeqCst) != others {
        return Err("panic on another thread (see stderr)".into());
    }
    result
}

fn read_dir(dir: &Path, prefix: Option<&str>) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            prefix.is_none_or(|pre| name.starts_with(pre))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|d| (p, d)))
        .collect()
}

/// Replays `corpus/<name>` and `crashes/<name>-*`, then fuzzes for `budget`.
pub fn fuzz(target: &mut dyn Target, budget: Duration, seed: u64) -> Result<Report, FuzzError> {
    let name = target.name();
    let root = crate_dir();
    let corpus_dir = root.join("corpus").join(name);
    let crash_dir = root.join("crashes");
    let mut corpus: Vec<Vec<u8>> = read_dir(&corpus_dir, None)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    if corpus.is_empty() {
        return Err(FuzzError::Config(format!(
            "no corpus in {} (run `cargo test -p weft-fuzz --test seeds -- --ignored`)",
            corpus_dir.display()
        )));
    }
    let started = Instant::now();
    let thread0 = cpu_time(libc::CLOCK_THREAD_CPUTIME_ID);
    let process0 = cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID);
    let mut crashes = Vec::new();
    let mut iterations = 0u64;
    let crash = |data: &[u8], why: String, crashes: &mut Vec<PathBuf>| {
        let path = crash_dir.join(format!("{name}-{:016x}", hash(data)));
        let _ = std::fs::create_dir_all(&crash_dir);
        let _ = std::fs::write(&path, data);
        eprintln!(
            "weft-fuzz [{name}]: CRASH {why}\n  input saved to {}",
            path.display()
        );
        crashes.push(path);
    };
    let replay: Vec<Vec<u8>> = corpus
        .iter()
        .cloned()
        .chain(
            read_dir(&crash_dir, Some(&format!("{name}-")))
                .into_iter()
                .map(|(_, d)| d),
        )
        .collect();
    for data in &replay {
        iterations += 1;
        if let Err(why) = run_one(target, data) {
            crash(data, why, &mut crashes);
        }
    }
    let mut rng = Rng::new(seed);
    while crashes.is_empty() && started.elapsed() < budget {
        let base = &corpus[rng.below(corpus.len())];
        let other = &corpus[rng.below(corpus.len())];
        let data = mutate(&mut rng, base, other);
        iterations += 1;
        if let Err(why) = run_one(target, &data) {
            crash(&data, why, &mut crashes);
            break;
        }
        // Keep a few mutants around so later mutations build on them (no coverage feedback on
        // stable Rust; a bounded pool of recent mutants goes deeper than the seeds alone).
        if iterations.is_multiple_of(64) {
            if corpus.len() < 512 {
                corpus.push(data);
            } else {
                let i = rng.below(corpus.len());
                corpus[i] = data;
            }
        }
    }
    let report = Report {
        target: name,
        corpus: replay.len(),
        iterations,
        reached: target.reached(),
        thread_cpu: cpu_time(libc::CLOCK_THREAD_CPUTIME_ID).saturating_sub(thread0),
        process_cpu: cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(process0),
        wall: started.elapsed(),
        crashes,
    };
    eprintln!("{report} (seed {seed})");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct PanicsOn(u8);
    impl Target for PanicsOn {
        fn name(&self) -> &'static str {
            "self-test"
        }
        fn run(&mut self, data: &[u8]) -> Result<(), String> {
            if data.contains(&self.0) {
                panic!("found the byte");
            }
            Ok(())
        }
    }

    #[test]
    fn a_panic_is_a_crash_and_its_message_is_kept() {
        let err = run_one(&mut PanicsOn(7), &[1, 7]).unwrap_err();
        assert!(err.contains("found the byte"), "{err}");
        assert_eq!(run_one(&mut PanicsOn(7), &[1, 2]), Ok(()));
    }

    #[test]
    fn mutation_changes_inputs_and_respects_the_size_limit() {
        let mut rng = Rng::new(42);
        let seed = vec![5u8; 32];
        let changed = (0..100)
            .filter(|_| mutate(&mut rng, &seed, b"other") != seed)
            .count();
        assert!(changed > 80, "only {changed} of 100 mutants differ");
        let big = vec![0u8; MAX_INPUT + 100];
        assert!(mutate(&mut rng, &big, &[]).len() <= MAX_INPUT);
    }
}
