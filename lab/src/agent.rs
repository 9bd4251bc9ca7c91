//! The real `meshdrift` binary run next to the lab: a child process whose
//! standard output (JSON lines) and standard error are collected. Used by the
//! end-to-end tests and the demo.

use std::{
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::sys::signal::{Signal, kill};

use crate::error::{LabError, Result};
use crate::process::pid_of;

/// The `meshdrift` binary: `$MESHDRIFT_BIN`, else `target/debug/meshdrift` in the workspace.
pub fn meshdrift_bin() -> PathBuf {
    std::env::var_os("MESHDRIFT_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/meshdrift"),
        PathBuf::from,
    )
}

/// A running `meshdrift` command.
pub struct AgentProcess {
    child: Child,
    command: String,
    stdout: Option<JoinHandle<Vec<String>>>,
    stderr: Option<JoinHandle<Vec<String>>>,
}

/// What the process printed, line by line, and how it ended.
#[derive(Debug)]
pub struct AgentOutput {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl AgentProcess {
    /// Starts `meshdrift run` on a lab's manifests, listening on `listen`,
    /// sweeping and re-reading every second (so tests wait seconds, not the
    /// defaults' tens), with `extra` arguments after those.
    pub fn run_on_manifests(
        binary: &Path,
        manifests: &Path,
        listen: std::net::SocketAddr,
        extra: &[String],
    ) -> Result<Self> {
        let manifests = manifests.display().to_string();
        let listen = listen.to_string();
        let mut args: Vec<&str> = vec![
            "run",
            "--manifests",
            &manifests,
            "--listen",
            &listen,
            "--update-interval",
            "1s",
            "--reload-interval",
            "1s",
        ];
        args.extend(extra.iter().map(String::as_str));
        Self::start(binary, &args, "agent running", Duration::from_secs(60))
    }

    /// Starts `binary args...` and waits until a line of its standard error
    /// contains `ready_marker` (the agent says so once its programs are attached).
    pub fn start(
        binary: &Path,
        args: &[&str],
        ready_marker: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let command = format!("{} {}", binary.display(), args.join(" "));
        if !binary.exists() {
            return Err(LabError::invalid(
                "meshdrift binary",
                format!(
                    "{} does not exist: build it (`cargo build -p meshdrift-agent`) or set MESHDRIFT_BIN",
                    binary.display()
                ),
            ));
        }
        let mut child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: command.clone(),
                source,
            })?;
        let stdout = child
            .stdout
            .take()
            .map(|out| std::thread::spawn(move || read_lines(out, None)));
        let (ready_tx, ready_rx) = mpsc::channel();
        let marker = ready_marker.to_owned();
        let stderr = child
            .stderr
            .take()
            .map(|err| std::thread::spawn(move || read_lines(err, Some((marker, ready_tx)))));
        let mut agent = Self {
            child,
            command,
            stdout,
            stderr,
        };
        if ready_rx.recv_timeout(timeout).is_err() {
            let _ = agent.child.kill();
            let output = agent.collect();
            return Err(LabError::NotReady {
                what: agent.command.clone(),
                pod: "host".to_owned(),
                timeout,
                detail: output.map(|o| o.stderr.join("\n")).unwrap_or_default(),
            });
        }
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `Signal::SIGSTOP`) to the process.
    pub fn signal(&self, signal: Signal) {
        // The child is not reaped before `stop`, so its pid still names it.
        let _ = kill(pid_of(&self.child), signal);
    }

    /// SIGINT, then waits up to `timeout` for the process to exit and returns its output.
    pub fn stop(mut self, timeout: Duration) -> Result<AgentOutput> {
        self.signal(Signal::SIGINT);
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    return Err(LabError::Timeout {
                        command: self.command.clone(),
                        timeout,
                    });
                }
                Err(source) => {
                    return Err(LabError::Spawn {
                        command: self.command.clone(),
                        source,
                    });
                }
            }
        }
        self.collect()
    }

    fn collect(&mut self) -> Result<AgentOutput> {
        let status = self.child.wait().map_err(|source| LabError::Spawn {
            command: self.command.clone(),
            source,
        })?;
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok(AgentOutput {
            status,
            stdout,
            stderr,
        })
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn read_lines(stream: impl Read, ready: Option<(String, mpsc::Sender<()>)>) -> Vec<String> {
    let mut lines = Vec::new();
    for line in BufReader::new(stream)
        .lines()
        .map_while(std::io::Result::ok)
    {
        if let Some((marker, tx)) = &ready
            && line.contains(marker.as_str())
        {
            let _ = tx.send(());
        }
        lines.push(line);
    }
    lines
}
