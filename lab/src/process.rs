//! A process the lab started inside a pod. Its stdout and stderr go to files
//! in the lab directory (pipes would block a chatty server nobody reads), and
//! dropping the handle stops it, so a test cannot leak a server by accident.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{LabError, Result};

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for error messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// `Err` with the command and its stderr unless it exited with 0.
    pub fn ok(self) -> Result<Output> {
        if self.success() {
            Ok(self)
        } else {
            Err(LabError::Command {
                command: self.command,
                status: self.status.to_string(),
                stderr: if self.stderr.trim().is_empty() {
                    self.stdout.trim().to_owned()
                } else {
                    self.stderr.trim().to_owned()
                },
            })
        }
    }
}

/// A running (or finished) process inside a pod.
#[derive(Debug)]
pub struct Process {
    child: Child,
    command: String,
    pod: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Process {
    pub(crate) fn new(
        child: Child,
        command: String,
        pod: String,
        stdout_path: PathBuf,
        stderr_path: PathBuf,
    ) -> Self {
        Process {
            child,
            command,
            pod,
            stdout_path,
            stderr_path,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    pub fn pod(&self) -> &str {
        &self.pod
    }

    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// The exit status if it has exited (reaping it), else `None`.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.status = Some(status);
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Sends a signal (e.g. `Signal::SIGTERM`) unless the process was reaped.
    pub fn signal(&mut self, signal: Signal) {
        if self.try_status().is_none() {
            // Not reaped yet, so the pid still names the child.
            let _ = kill(pid_of(&self.child), signal);
        }
    }

    /// Waits for exit; on timeout the process is killed and `Err(Timeout)`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(LabError::Timeout {
                    command: self.command.clone(),
                    timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for exit and returns what it printed (whatever the exit code).
    pub fn wait_output(mut self, timeout: Duration) -> Result<Output> {
        let status = self.wait_timeout(timeout)?;
        Ok(Output {
            command: self.command.clone(),
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
        })
    }

    /// SIGTERM, then SIGKILL after `grace`; always reaps.
    pub fn terminate(&mut self, grace: Duration) {
        if self.try_status().is_some() {
            return;
        }
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.try_status().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if self.try_status().is_some() {
            return;
        }
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.status = Some(status);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.terminate(Duration::from_millis(1500));
    }
}

pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The pid of a child process, as nix names it. Linux pids fit an i32.
pub(crate) fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}
