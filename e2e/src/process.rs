//! A child process run under `timeout`, so that it ends even if the test that
//! started it is killed, and signals sent to the process itself rather than to
//! `timeout` (which only forwards some of them).

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest any test process lives, in seconds, even if its test is killed.
const LIFETIME_S: &str = "600";
/// How long `timeout` may take to start its command.
const FORK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often waits poll.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Runs `binary args…` to its end with `stdin` as its input, killing it if it runs
/// over `limit` (a short-lived client such as `ferryctl`, which starts no children).
pub fn run_bounded(binary: &Path, args: &[String], stdin: &str, limit: Duration) -> Output {
    run_bounded_with_env(binary, args, &[], stdin, limit)
}

/// Like [`run_bounded`], with more environment variables for the process.
pub fn run_bounded_with_env(
    binary: &Path,
    args: &[String],
    env: &[(String, String)],
    stdin: &str,
    limit: Duration,
) -> Output {
    let mut child = Command::new(binary)
        .args(args)
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {}: {err}", binary.display()));
    let mut input = child.stdin.take().expect("piped stdin");
    // A process that exits before reading its input closes the pipe: not a failure.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let started = Instant::now();
    while child.try_wait().expect("poll the child").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("reap the child");
            panic!(
                "{} {args:?} ran over {limit:?}: {}",
                binary.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    child
        .wait_with_output()
        .expect("collect the child's output")
}

/// A command that runs `program` under `timeout`.
pub(crate) fn command(program: &Path) -> Command {
    command_in(None, program)
}

/// A command that runs `program` under `timeout`, in network namespace `namespace`
/// if one is given (see `crate::netns`). `ip netns exec` execs the program in its
/// own process, so `timeout`'s child is still the program, and signals reach it.
pub(crate) fn command_in(namespace: Option<&str>, program: &Path) -> Command {
    let mut command = Command::new("timeout");
    command.arg(LIFETIME_S);
    if let Some(namespace) = namespace {
        command
            .arg(crate::netns::ip_binary())
            .args(["netns", "exec", namespace]);
    }
    command.arg(program);
    command
}

/// A process started with [`command`]: `timeout` and the program it runs.
pub(crate) struct Supervised {
    name: String,
    timeout: Child,
    program_pid: Option<u32>,
}

impl Supervised {
    /// Spawns `command`; `name` is used in messages.
    pub(crate) fn spawn(name: &str, command: &mut Command) -> Self {
        let timeout = command
            .spawn()
            .unwrap_or_else(|err| panic!("spawn {name} under timeout: {err}"));
        Self {
            name: name.to_owned(),
            timeout,
            program_pid: None,
        }
    }

    /// The `timeout` child, whose pipes are the program's.
    pub(crate) fn child_mut(&mut self) -> &mut Child {
        &mut self.timeout
    }

    /// The program's own pid (a child of `timeout`), or `None` once it has exited.
    pub(crate) fn program_pid(&mut self) -> Option<u32> {
        let pid = self.find_program_pid(FORK_TIMEOUT);
        assert!(
            pid.is_some() || self.has_exited(),
            "{}: timeout did not start its program",
            self.name
        );
        pid
    }

    /// Looks for the program's pid for up to `within` (`timeout` forks it right
    /// after it starts); `None` if it is not found or has exited.
    fn find_program_pid(&mut self, within: Duration) -> Option<u32> {
        let deadline = Instant::now() + within;
        while self.program_pid.is_none() && !self.has_exited() {
            self.program_pid = child_of(self.timeout.id());
            if self.program_pid.is_none() {
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(POLL_INTERVAL);
            }
        }
        let pid = self.program_pid?;
        (!self.has_exited()).then_some(pid)
    }

    /// Whether the process has exited (`timeout` exits with its program).
    pub(crate) fn has_exited(&mut self) -> bool {
        !matches!(self.timeout.try_wait(), Ok(None))
    }

    /// Sends `signal` (a name such as `STOP`) to the program itself.
    pub(crate) fn signal_program(&mut self, signal: &str) {
        let Some(pid) = self.program_pid() else {
            panic!("{}: cannot send SIG{signal}, it has exited", self.name);
        };
        send_signal(pid, signal);
    }

    /// Sends SIGTERM to `timeout`, which passes it on to the program and wakes the
    /// program with SIGCONT if it was stopped; waits up to `grace` for the exit,
    /// then kills it. Returns the exit status if it exited within `grace`.
    pub(crate) fn terminate(mut self, grace: Duration) -> Option<ExitStatus> {
        if self.has_exited() {
            return self.timeout.wait().ok();
        }
        send_signal(self.timeout.id(), "TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.timeout.try_wait() {
                return Some(status);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        None
    }

    /// Waits up to `within` for the process to exit by itself.
    pub(crate) fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.timeout.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Supervised {
    /// SIGKILL to the program (stopped or not), so that `timeout` reaps it and
    /// exits; `timeout` itself is killed only if it lingers.
    fn drop(&mut self) {
        if let Some(pid) = self.find_program_pid(FORK_TIMEOUT) {
            send_signal(pid, "KILL");
        }
        if self.wait_exit(FORK_TIMEOUT).is_none() {
            let _ = self.timeout.kill();
        }
        let _ = self.timeout.wait();
    }
}

/// Sends `signal` to `pid` with kill(1): the crate forbids unsafe code, so no libc.
fn send_signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .map(|status| status.success());
    // A process that exited in the meantime cannot be signalled; callers notice
    // that through `has_exited`, so only a missing kill(1) is a harness failure.
    if let Err(err) = sent {
        panic!("run kill -s {signal} {pid}: {err}");
    }
}

/// The pid of a child of `parent`, found by scanning `/proc/*/stat`.
fn child_of(parent: u32) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        (ProcStat::read(pid)?.parent == parent).then_some(pid)
    })
}

/// What the harness and the benchmarks read of `/proc/PID/stat`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProcStat {
    /// `R`, `S`, `Z` (exited, not yet reaped), …
    pub(crate) state: char,
    /// The parent's pid.
    pub(crate) parent: u32,
    /// User and system time of every thread the process has had, in clock ticks.
    pub(crate) cpu_ticks: u64,
}

impl ProcStat {
    /// `None` once the process is gone (or reaped).
    pub(crate) fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid …": comm may hold spaces and parentheses.
        let fields: Vec<&str> = stat
            .get(stat.rfind(')')? + 1..)?
            .split_whitespace()
            .collect();
        let number = |n: usize| fields.get(n)?.parse::<u64>().ok();
        Some(Self {
            state: fields.first()?.chars().next()?,
            parent: u32::try_from(number(1)?).ok()?,
            // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
            cpu_ticks: number(11)? + number(12)?,
        })
    }

    /// The CPU time in seconds.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        self.cpu_ticks as f64 / rustix::param::clock_ticks_per_second() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pid` runs: it exists and is not a zombie.
    fn runs(pid: u32) -> bool {
        ProcStat::read(pid).is_some_and(|stat| stat.state != 'Z')
    }

    fn sleeper() -> Supervised {
        Supervised::spawn("sleep", command(Path::new("sleep")).arg("30"))
    }

    #[test]
    fn a_process_reads_its_own_stat() {
        let stat = ProcStat::read(std::process::id()).expect("this process's stat");
        assert_eq!(stat.parent, std::os::unix::process::parent_id());
        assert_ne!(stat.state, 'Z', "a running process is no zombie");
    }

    #[test]
    fn signals_reach_the_program_under_timeout() {
        let mut sleeper = sleeper();
        let pid = sleeper.program_pid().expect("sleep is running");
        assert_ne!(pid, sleeper.child_mut().id(), "the program, not timeout");
        sleeper.signal_program("KILL");
        let status = sleeper.wait_exit(Duration::from_secs(10)).expect("exited");
        assert!(!status.success());
        assert_eq!(sleeper.program_pid(), None);
    }

    #[test]
    fn dropping_the_handle_kills_the_program_even_when_stopped() {
        let mut sleeper = sleeper();
        let pid = sleeper.program_pid().expect("sleep is running");
        sleeper.signal_program("STOP");
        drop(sleeper);
        assert!(!runs(pid), "sleep {pid} outlived its handle");
    }

    #[test]
    fn dropping_a_fresh_handle_leaves_nothing_running() {
        // A duration no other test uses marks this sleep among all processes.
        let marker = "29.4242";
        drop(Supervised::spawn(
            "sleep",
            command(Path::new("sleep")).arg(marker),
        ));
        let cmdline = format!("sleep\0{marker}\0");
        let left: Vec<u32> = std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == cmdline.as_bytes())
            })
            .filter(|pid| runs(*pid))
            .collect();
        assert_eq!(left, [] as [u32; 0], "sleep {marker} outlived its handle");
    }
}
