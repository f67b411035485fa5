//! One child process of a test cluster: output in log files, stdout lines readable with a deadline,
//! signalled and reaped by its own PID, killed when dropped and by the kernel if the launcher dies.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use crate::error::TestkitError;

type Result<T, E = TestkitError> = std::result::Result<T, E>;

/// The signals a test sends: crash, graceful stop, pause and resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Kill,
    Term,
    Stop,
    Cont,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Term => libc::SIGTERM,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
        }
    }
}

/// A started child. Logs: `<base>.stdout.log` and `<base>.stderr.log`, appended across restarts
/// with a `=== start` marker line, so one file tells a role's whole story.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    lines: Option<Receiver<String>>,
    stderr_log: PathBuf,
    stdout_log: PathBuf,
    /// Stopped by SIGSTOP and not resumed yet (a stopped process is resumed before it is killed,
    /// so that its exit is observed at once).
    paused: bool,
}

impl Proc {
    /// Spawns `cmd` with stdin closed, stdout piped (pumped to the log by a thread), stderr to the
    /// log. The child gets its own process group (a Ctrl-C at the terminal reaches the launcher,
    /// which then ends its children itself) and dies with the thread that spawned it
    /// (`PR_SET_PDEATHSIG`), so a SIGKILLed launcher leaves no orphans behind.
    pub fn spawn(name: &str, mut cmd: Command, log_base: &Path) -> Result<Self> {
        let stderr_log = log_base.with_extension("stderr.log");
        let stdout_log = log_base.with_extension("stdout.log");
        let marker = format!(
            "=== start {name} at {:?}\n",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
        );
        let mut err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_log)?;
        err.write_all(marker.as_bytes())?;
        let mut out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stdout_log)?;
        out.write_all(marker.as_bytes())?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .process_group(0);
        // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid, _exit).
        unsafe {
            let parent = libc::getpid();
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The launcher may have died between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| TestkitError::Command {
            what: format!("spawning {name}"),
            detail: e.to_string(),
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                // Drain to EOF whether or not anyone reads the lines, so the child never blocks
                // on a full pipe.
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(out, "{line}");
                    let _ = tx.send(line);
                }
            })?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            lines: Some(rx),
            stderr_log,
            stdout_log,
            paused: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the child has not exited (a paused child is running).
    pub fn running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) | None => false,
        }
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Waits for the first stdout line that `want` accepts. Fails when the child exits first
    /// (with its stderr tail) or the deadline passes.
    pub fn wait_line(
        &mut self,
        what: &str,
        deadline: Instant,
        want: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let started = Instant::now();
        let rx = self
            .lines
            .as_ref()
            .ok_or_else(|| TestkitError::NotRunning(self.name.clone()))?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TestkitError::Timeout {
                    what: format!("{}: {what}", self.name),
                    secs: started.elapsed().as_secs_f64(),
                    detail: format!("\n--- stderr ---\n{}", self.stderr_tail(4000)),
                });
            }
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) if want(&line) => return Ok(line),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // stdout closed: the child exited (or closed stdout, which ours never do).
                    let status = self.wait_exit(Duration::from_secs(5)).ok();
                    return Err(TestkitError::Command {
                        what: format!("{} ({what})", self.name),
                        detail: format!(
                            "exited with {status:?} first\n--- stderr ---\n{}",
                            self.stderr_tail(4000)
                        ),
                    });
                }
            }
        }
    }

    /// Sends `sig` to this child's PID (never to a group or by name).
    pub fn signal(&mut self, sig: Signal) -> Result<()> {
        if !self.running() {
            return Err(TestkitError::NotRunning(self.name.clone()));
        }
        let pid = self.pid().expect("running implies a child") as libc::pid_t;
        // SAFETY: kill(2) with a PID we spawned and have not reaped (so it cannot be reused).
        if unsafe { libc::kill(pid, sig.raw()) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        match sig {
            Signal::Stop => self.paused = true,
            Signal::Cont => self.paused = false,
            Signal::Kill | Signal::Term => {}
        }
        Ok(())
    }

    /// Polls for the exit until `timeout`; reaps the child.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self
            .child
            .as_mut()
            .ok_or_else(|| TestkitError::NotRunning(self.name.clone()))?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.lines = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::Timeout {
                    what: format!("{} to exit", self.name),
                    secs: timeout.as_secs_f64(),
                    detail: String::new(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL (a crash) and reap. A no-op for a child that already exited.
    pub fn kill(&mut self) -> Result<()> {
        if self.running() {
            self.signal(Signal::Kill)?;
        }
        if self.child.is_some() {
            self.wait_exit(Duration::from_secs(10))?;
        }
        self.paused = false;
        Ok(())
    }

    /// SIGTERM and wait up to `timeout` for a graceful exit; on timeout SIGKILL and fail.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if self.paused {
            self.signal(Signal::Cont)?;
        }
        self.signal(Signal::Term)?;
        match self.wait_exit(timeout) {
            Ok(s) => Ok(s),
            Err(e) => {
                let _ = self.kill();
                Err(e)
            }
        }
    }

    pub fn stderr_log(&self) -> &Path {
        &self.stderr_log
    }

    pub fn stdout_log(&self) -> &Path {
        &self.stdout_log
    }

    pub fn stderr_tail(&self, max: usize) -> String {
        let s = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        let start = s.len().saturating_sub(max);
        let start = (start..s.len())
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(s.len());
        s[start..].to_string()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
