//! Server processes under test: free ports, starting with a log file, SIGKILL, signals with a
//! deadline, one-shot runs.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::wait_for;

pub use crate::free_ports;

/// A process's log file (its stderr, appended across restarts). Dropped while the test
/// panics, it prints its last lines.
#[derive(Debug)]
pub struct LogFile {
    label: String,
    path: PathBuf,
}

impl LogFile {
    /// The log at `path`, named `label` when printed.
    pub fn new(label: impl Into<String>, path: PathBuf) -> Self {
        Self {
            label: label.into(),
            path,
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file opened for appending (created if missing).
    pub fn append(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .expect("open log")
    }

    /// Everything logged so far, without terminal colour codes.
    pub fn read(&self) -> String {
        let log = std::fs::read_to_string(&self.path).unwrap_or_default();
        let mut plain = String::with_capacity(log.len());
        let mut chars = log.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                // CSI: ESC '[' parameters, ended by a letter.
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                plain.push(c);
            }
        }
        plain
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.read();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {} log ---", self.label);
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A running child process, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildProcess {
    child: Option<Child>,
}

impl ChildProcess {
    /// Starts `command` with no stdin, no stdout, and stderr appended to `log`.
    pub fn spawn(mut command: Command, log: &LogFile) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.append())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        Self { child: Some(child) }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    /// Sends `signal` (`TERM`, `INT`, ...) and waits up to `deadline` for it to exit.
    pub async fn stop_with(self, signal: &str, deadline: Duration) -> ExitStatus {
        self.signal(signal);
        self.wait_exit(&format!("exit after SIG{signal}"), deadline)
            .await
    }

    /// Sends `signal` (`TERM`, `INT`, ...) without waiting for anything.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `deadline` for it to exit (panicking with `what` after it; the process is
    /// then killed as the panic drops it, not left running).
    pub async fn wait_exit(mut self, what: &str, deadline: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let mut exit = None;
        wait_for(what, deadline, || {
            let done = child.try_wait().expect("try_wait");
            exit = exit.or(done);
            std::future::ready(exit.is_some())
        })
        .await;
        // Exited and reaped: nothing for `drop` to kill.
        self.child = None;
        exit.expect("exited")
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a process that ran to its end printed.
#[derive(Debug)]
pub struct Run {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `bin args...` with `RUST_LOG=info` and no stdin, killing it if it has not exited
/// within `deadline` (and then panicking).
pub async fn run_binary(bin: &str, args: &[&str], deadline: Duration) -> Run {
    run_binary_with_env(bin, args, &[], deadline).await
}

/// Like [`run_binary`], with the environment variables `env` (name, value) set as well.
pub async fn run_binary_with_env(
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
    deadline: Duration,
) -> Run {
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let (mut stdout, mut stderr) = (
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let run = async {
        let (mut out, mut err) = (String::new(), String::new());
        let (status, _, _) = tokio::join!(
            child.wait(),
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        (status.expect("wait"), out, err)
    };
    match tokio::time::timeout(deadline, run).await {
        Ok((status, stdout, stderr)) => Run {
            status,
            stdout,
            stderr,
        },
        Err(_) => panic!("{bin} {args:?} did not exit within {deadline:?}"),
    }
}

/// The settings a server binary resolves `args` and `env` to, from `--print-config` (JSON
/// on stdout); panics unless it exits with status 0.
pub async fn print_config(
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
    deadline: Duration,
) -> serde_json::Value {
    let args: Vec<&str> = args.iter().copied().chain(["--print-config"]).collect();
    let run = run_binary_with_env(bin, &args, env, deadline).await;
    assert!(run.status.success(), "{args:?} {env:?}: {run:?}");
    serde_json::from_str(&run.stdout).expect("JSON settings")
}

/// Runs a server binary with `args` and `env`, which it must refuse as a configuration error
/// (exit status 2, no panic); returns its stderr.
pub async fn refused_config(
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
    deadline: Duration,
) -> String {
    let run = run_binary_with_env(bin, args, env, deadline).await;
    assert_eq!(run.status.code(), Some(2), "{args:?} {env:?}: {run:?}");
    assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
    run.stderr
}
