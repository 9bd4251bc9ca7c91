//! Ctrl-C and SIGTERM for long-running lab users. The handler itself only
//! writes the signal number to a pipe (all a handler may safely do); a thread
//! reading the pipe does the work: it wakes [`wait_for_signal`] callers, who
//! then drop their labs normally, or, when nobody waits, tears down every
//! lab of the process and exits with 128 + signal.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};
use crate::lab::{lock, teardown_all_live};

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

extern "C" fn on_signal(signal: libc::c_int) {
    let fd = PIPE_WRITE.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = signal as u8;
        // SAFETY: write(2) is async-signal-safe; the buffer is on our stack.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
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
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    PIPE_WRITE.store(write_fd, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("lab-signals".into())
        .spawn(move || signal_thread(read_fd))
        .map_err(|e| format!("spawning signal thread: {e}"))?;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only calls write(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

fn signal_thread(read_fd: i32) {
    loop {
        let mut byte = 0u8;
        // SAFETY: reads one byte into a live stack variable.
        let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
        if n != 1 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let signal = i32::from(byte);
        let mut waiters = lock(&WAITERS);
        if waiters.waiting > 0 {
            waiters.received = Some(signal);
            WAKE.notify_all();
            continue;
        }
        drop(waiters);
        tracing::warn!(signal, "signal received: tearing down labs");
        teardown_all_live();
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
