//! What the watchers tell the snapshot builder: which kinds have completed
//! their first list, and that something changed since.

use tokio::sync::watch;

/// The kinds an [`Objects`](crate::model::Objects) snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pod,
    Service,
    EndpointSlice,
    Namespace,
    ServiceEntry,
    VirtualService,
    DestinationRule,
    PeerAuthentication,
}

impl Kind {
    pub(crate) const ALL: [Kind; 8] = [
        Kind::Pod,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Namespace,
        Kind::ServiceEntry,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::PeerAuthentication,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Namespace => "Namespace",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::PeerAuthentication => "PeerAuthentication",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Bumped on every change to any store; only its difference matters.
    pub(crate) changes: u64,
    ready: u8,
}

impl Progress {
    pub(crate) fn all_ready(&self) -> bool {
        Kind::ALL.iter().all(|k| self.ready & k.bit() != 0)
    }
}

/// A watcher's side of the progress channel.
#[derive(Debug, Clone)]
pub(crate) struct Reporter {
    kind: Kind,
    tx: watch::Sender<Progress>,
}

impl Reporter {
    pub(crate) fn new(kind: Kind, tx: watch::Sender<Progress>) -> Reporter {
        Reporter { kind, tx }
    }

    pub(crate) fn kind(&self) -> Kind {
        self.kind
    }

    /// The kind's store holds a complete list (possibly an empty one).
    pub(crate) fn listed(&self) {
        let bit = self.kind.bit();
        self.tx.send_modify(|p| {
            p.ready |= bit;
            p.changes += 1;
        });
    }

    pub(crate) fn changed(&self) {
        self.tx.send_modify(|p| p.changes += 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_kind_has_listed() {
        let (tx, rx) = watch::channel(Progress::default());
        for kind in Kind::ALL {
            assert!(!rx.borrow().all_ready(), "ready before {}", kind.name());
            Reporter::new(kind, tx.clone()).listed();
        }
        assert!(rx.borrow().all_ready());
        assert_eq!(rx.borrow().changes, Kind::ALL.len() as u64);
    }
}
