//! SIGINT and SIGTERM, installed once at start-up so that a signal arriving
//! while events are being processed is buffered rather than missed (a fresh
//! `ctrl_c()` future per loop turn could miss it).

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Shutdown {
    interrupt: Signal,
    terminate: Signal,
}

impl Shutdown {
    /// Installs the handlers; from here on the default action (exit) is replaced.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Completes when SIGINT or SIGTERM arrives.
    pub async fn requested(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
