//! Ctrl-C and SIGTERM for long-running lab users. The handler itself only
//! writes the signal number to a pipe (all a handler may safely do); a thread
//! reading the pipe does the work: it wakes [`wait_for_signal`] callers, who
//! then drop their labs normally, or, when nobody waits, tears down every
//! lab of the process and exits with 128 + signal.

use std::ffi::c_int;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::error::{LabError, Result};
use crate::live;
use crate::shared::lock;

static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();

struct Waiters {
    waiting: usize,
    received: Option<i32>,
}

static WAITERS: Mutex<Waiters> = Mutex::new(Waiters {
    waiting: 0,
    received: None,
});
static WAKE: Condvar = Condvar::new();

extern "C" fn on_signal(signal: c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: the pipe's write end is never closed once installed.
        let pipe = unsafe { BorrowedFd::borrow_raw(fd) };
        // write(2) is async-signal-safe; signal numbers fit a byte.
        let _ = nix::unistd::write(pipe, &[signal as u8]);
    }
}

/// Installs the SIGINT/SIGTERM hook (once per process; later calls are no-ops).
pub fn install_signal_cleanup() -> Result<()> {
    INSTALLED
        .get_or_init(install)
        .clone()
        .map_err(|detail| LabError::invalid("signal hook", detail))
}

fn install() -> Result<(), String> {
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    // The write end lives as long as the process: the handler may run at any time.
    PIPE_WRITE.store(write_end.as_raw_fd(), Ordering::Relaxed);
    std::mem::forget(write_end);
    std::thread::Builder::new()
        .name("lab-signals".into())
        .spawn(move || signal_thread(read_end))
        .map_err(|e| format!("spawning signal thread: {e}"))?;
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only calls write(2), which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(|e| format!("sigaction: {e}"))?;
    }
    Ok(())
}

fn signal_thread(read_end: OwnedFd) {
    loop {
        let mut byte = [0u8];
        match nix::unistd::read(&read_end, &mut byte) {
            Ok(1) => {}
            Err(Errno::EINTR) => continue,
            _ => return,
        }
        let signal = i32::from(byte[0]);
        let mut waiters = lock(&WAITERS);
        if waiters.waiting > 0 {
            waiters.received = Some(signal);
            WAKE.notify_all();
            continue;
        }
        drop(waiters);
        tracing::warn!(signal, "signal received: tearing down labs");
        live::teardown_all();
        std::process::exit(128 + signal);
    }
}

/// Blocks until SIGINT or SIGTERM arrives and returns its number. While a
/// caller waits, signals do not tear labs down: the caller drops them.
pub fn wait_for_signal() -> Result<i32> {
    loop {
        if let Some(signal) = wait_for_signal_timeout(Duration::from_secs(3600))? {
            return Ok(signal);
        }
    }
}

/// Like [`wait_for_signal`], but gives up after `timeout` (`Ok(None)`).
pub fn wait_for_signal_timeout(timeout: Duration) -> Result<Option<i32>> {
    install_signal_cleanup()?;
    let deadline = Instant::now() + timeout;
    let mut waiters = lock(&WAITERS);
    waiters.waiting += 1;
    let signal = loop {
        if let Some(signal) = waiters.received.take() {
            break Some(signal);
        }
        let now = Instant::now();
        if now >= deadline {
            break None;
        }
        waiters = WAKE
            .wait_timeout(waiters, deadline - now)
            .map(|(guard, _)| guard)
            .unwrap_or_else(|p| p.into_inner().0);
    };
    waiters.waiting -= 1;
    Ok(signal)
}
