//! Pods removed lately, by the addresses they held. The kernel's evidence
//! about a connection arrives after the fact (at its close, or at the next
//! sweep of the flow map); by then the pod that made it may be gone and its
//! address given to a new pod of another workload. The connection belongs
//! to the pod that held the address when it was made — the last created
//! before it, by the API server's creation times (the watch's own events
//! come too late to tell) — so a removed pod is kept here for a while.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use foldhash::{HashMap, HashMapExt};

use crate::inventory::PodInfo;

/// How long a removed pod is remembered: several sweeps of the flow map and
/// the traffic checks' settling time.
const RETENTION: Duration = Duration::from_secs(120);
/// Removed pods remembered at most (a mass deletion keeps the newest).
const CAPACITY: usize = 65_536;

#[derive(Debug)]
pub(super) struct Departed {
    by_ip: HashMap<IpAddr, Vec<(Instant, PodInfo)>>,
    /// Removal times in order, to forget the oldest first.
    order: VecDeque<(Instant, IpAddr)>,
}

impl Default for Departed {
    fn default() -> Self {
        Self {
            by_ip: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl Departed {
    /// Remembers `pod`, removed now, under each address it routed.
    pub(super) fn record(&mut self, pod: &PodInfo) {
        let now = Instant::now();
        self.forget_before(now.checked_sub(RETENTION));
        for &ip in pod.routable_ips() {
            while self.order.len() >= CAPACITY {
                self.forget_oldest();
            }
            self.by_ip.entry(ip).or_default().push((now, pod.clone()));
            self.order.push_back((now, ip));
        }
    }

    /// Of the removed pods that held `ip`, the last created by `at` (seconds
    /// since the Unix epoch).
    pub(super) fn held_at(&self, ip: IpAddr, at: f64) -> Option<&PodInfo> {
        self.by_ip
            .get(&ip)?
            .iter()
            .filter(|(_, pod)| f64::from(pod.created) <= at)
            .max_by_key(|(removed, pod)| (pod.created, *removed))
            .map(|(_, pod)| pod)
    }

    fn forget_before(&mut self, cutoff: Option<Instant>) {
        let Some(cutoff) = cutoff else {
            return;
        };
        while self.order.front().is_some_and(|(at, _)| *at < cutoff) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((at, ip)) = self.order.pop_front() else {
            return;
        };
        if let Some(pods) = self.by_ip.get_mut(&ip) {
            if let Some(position) = pods.iter().position(|(removed, _)| *removed == at) {
                pods.remove(position);
            }
            if pods.is_empty() {
                self.by_ip.remove(&ip);
            }
        }
    }
}
