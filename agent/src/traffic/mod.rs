//! Judges how client proxies treat each cluster against its declared
//! traffic policy: how they spread requests over endpoints, how many
//! connections they keep open, how many requests a connection carries, how
//! long idle connections live, whether they stop dialing an endpoint whose
//! connections fail, and the TLS they originate.
//!
//! Pure: connection samples in, [`PolicyVerdict`]s out. Each check is judged
//! per client pod (a proxy's limits are its own) and reported per source
//! workload: one violating pod makes the row a violation.
//!
//! Order matters for concurrency and outlier detection, and the kernel's
//! evidence arrives out of order (failures at once, opens at the next sweep
//! of the flow map), so those events wait in a per-pod timeline until
//! `settle` has passed and are then replayed in time order.

mod balance;
mod origination;
mod outlier;
mod pool;
mod timeline;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use foldhash::{HashMap, HashMapExt};

use crate::{
    observation::conduct::{
        Activity, Balance, ClusterKey, ConnectionEvent, ConnectionSample, DeclaredTraffic,
    },
    report::{PolicyCheck, PolicyOutcome, PolicyVerdict, format::plural},
};

use balance::EndpointTally;
use origination::OriginationTally;
use outlier::OutlierState;
use pool::PoolState;
use timeline::{Timeline, TimelineEvent};

/// How the checks weigh evidence.
#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// Evidence older than this is forgotten (the drift window).
    pub window: Duration,
    /// Significance and practical tolerance of the balance test (the split's).
    pub alpha: f64,
    pub tolerance: f64,
    /// Requests (or connections) a client pod needs before its balance is judged.
    pub min_samples: u64,
    /// How long after an event all evidence before it has arrived: one
    /// sweep of the flow map plus a margin.
    pub settle: Duration,
    /// How long above `maxConnections`, or past `idleTimeout`, is tolerated.
    pub grace: Duration,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(600),
            alpha: 0.001,
            tolerance: 0.05,
            min_samples: 100,
            settle: Duration::from_secs(11),
            grace: Duration::from_secs(1),
        }
    }
}

/// Open connections followed at most; beyond it new ones are not followed.
const MAX_CONNECTIONS_FOLLOWED: usize = 1 << 20;

/// One client pod's evidence about one cluster.
#[derive(Debug, Default)]
struct PodState {
    balance: EndpointTally,
    pool: PoolState,
    outlier: OutlierState,
    origination: OriginationTally,
    timeline: Timeline,
    last_seen: f64,
}

#[derive(Debug)]
struct ClusterState {
    declared: Arc<DeclaredTraffic>,
    pods: BTreeMap<String, PodState>,
}

/// An open connection being followed, by socket cookie, from its first
/// update until its close (or until the kernel's flow map no longer has it).
#[derive(Debug)]
struct Followed {
    cluster: ClusterKey,
    pod: String,
    requests: u64,
    estimated: bool,
    /// When the kernel saw it establish (or adopted it).
    opened_at: f64,
    /// When the last update that carried bytes was read.
    last_growth: f64,
}

/// What one pod's check concluded.
#[derive(Debug, Clone)]
struct PodVerdict {
    outcome: PolicyOutcome,
    observed: String,
    reason: String,
    samples: u64,
}

pub struct TrafficJudge {
    config: TrafficConfig,
    clusters: BTreeMap<ClusterKey, ClusterState>,
    followed: HashMap<u64, Followed>,
}

impl TrafficJudge {
    pub fn new(config: TrafficConfig) -> Self {
        Self {
            config,
            clusters: BTreeMap::new(),
            followed: HashMap::new(),
        }
    }

    pub fn config(&self) -> &TrafficConfig {
        &self.config
    }

    /// Takes one sample. A cluster whose declared policy changed starts over.
    pub fn observe(&mut self, sample: &ConnectionSample) {
        // Looked up before inserting: the keys are cloned only once per
        // cluster and pod, not per sample.
        if !self.clusters.contains_key(&sample.cluster) {
            self.clusters.insert(
                sample.cluster.clone(),
                ClusterState {
                    declared: Arc::clone(&sample.declared),
                    pods: BTreeMap::new(),
                },
            );
        }
        let Some(cluster) = self.clusters.get_mut(&sample.cluster) else {
            return;
        };
        if !Arc::ptr_eq(&cluster.declared, &sample.declared) {
            // Answers are recomputed after every change to the mesh: an equal
            // policy keeps the evidence, and its newer copy is kept so the
            // next sample compares by pointer.
            if cluster.declared != sample.declared {
                cluster.pods.clear();
            }
            cluster.declared = Arc::clone(&sample.declared);
        }
        if !cluster.pods.contains_key(&sample.client_pod) {
            cluster
                .pods
                .insert(sample.client_pod.clone(), PodState::default());
        }
        let Some(pod) = cluster.pods.get_mut(&sample.client_pod) else {
            return;
        };
        let declared = &cluster.declared;
        match &sample.event {
            ConnectionEvent::Failed { at, timed_out } => {
                pod.last_seen = pod.last_seen.max(*at);
                pod.timeline.push(
                    *at,
                    TimelineEvent::Failed {
                        endpoint: sample.endpoint.clone(),
                        timed_out: *timed_out,
                    },
                );
            }
            ConnectionEvent::Activity(activity) => {
                pod.last_seen = pod.last_seen.max(activity.seen_at);
                follow(&mut self.followed, declared, pod, sample, activity);
            }
        }
    }

    /// The verdicts at `now`: replays settled events, ages idle connections,
    /// forgets what left the window, and judges every cluster seen in it.
    pub fn snapshot(&mut self, now: f64) -> Vec<PolicyVerdict> {
        let horizon = now - self.config.settle.as_secs_f64();
        let window = self.config.window.as_secs_f64();
        for cluster in self.clusters.values_mut() {
            for pod in cluster.pods.values_mut() {
                for (at, event) in pod.timeline.settle(horizon) {
                    match event {
                        TimelineEvent::Opened { endpoint } => {
                            pod.pool.opened(at, &cluster.declared);
                            pod.outlier.connected(at, &endpoint, &cluster.declared);
                        }
                        TimelineEvent::Closed => {
                            pod.pool.closed(at, &cluster.declared);
                        }
                        TimelineEvent::Failed {
                            endpoint,
                            timed_out,
                        } => pod
                            .outlier
                            .failed(at, &endpoint, timed_out, &cluster.declared),
                    }
                }
                pod.pool.settled_until(horizon);
            }
        }
        self.count_open_connections(now);
        // An open connection that carried nothing since its last growth has
        // been idle at least until the last sweep before `horizon`. Walked
        // only when some cluster declares an idle timeout.
        let idle_declared = self
            .clusters
            .values()
            .any(|cluster| cluster.declared.idle_timeout.is_some());
        for connection in self.followed.values().filter(|_| idle_declared) {
            let Some(cluster) = self.clusters.get_mut(&connection.cluster) else {
                continue;
            };
            if cluster.declared.idle_timeout.is_none() {
                continue;
            }
            if let Some(pod) = cluster.pods.get_mut(&connection.pod) {
                pod.pool.idle_for(horizon - connection.last_growth, now);
            }
        }
        self.expire(now, window);
        let mut verdicts = Vec::new();
        for (key, cluster) in &self.clusters {
            for check in checks(&cluster.declared) {
                let per_pod: Vec<(&String, PodVerdict)> = cluster
                    .pods
                    .iter()
                    .map(|(name, pod)| (name, judge(check, pod, &cluster.declared, &self.config)))
                    .collect();
                if let Some(verdict) = combine(key, check, &cluster.declared, per_pod) {
                    verdicts.push(verdict);
                }
            }
        }
        verdicts
    }

    /// Forgets followed connections the kernel no longer has although no
    /// close arrived (a lost close record), closing them at `now` in their
    /// pod's replay: `is_open` answers from the last complete sweep of the
    /// flow map.
    pub fn retain_open(&mut self, now: f64, is_open: impl Fn(u64) -> bool) {
        let clusters = &mut self.clusters;
        self.followed.retain(|cookie, connection| {
            if is_open(*cookie) {
                return true;
            }
            if let Some(pod) = clusters
                .get_mut(&connection.cluster)
                .and_then(|cluster| cluster.pods.get_mut(&connection.pod))
            {
                pod.timeline.push(now, TimelineEvent::Closed);
            }
            false
        });
    }

    /// Every connection established and not yet closed, adopted ones
    /// included, counted for `maxConnections` at `now`: a pool that stays
    /// open (as pooled upstream connections do) may have opened long before
    /// the window, so replaying opens and closes alone would not see it.
    fn count_open_connections(&mut self, now: f64) {
        let limited = self
            .clusters
            .values()
            .any(|cluster| cluster.declared.max_connections.is_some());
        if !limited {
            return;
        }
        let mut open: HashMap<(&ClusterKey, &str), Vec<f64>> = HashMap::new();
        for connection in self.followed.values() {
            open.entry((&connection.cluster, connection.pod.as_str()))
                .or_default()
                .push(connection.opened_at);
        }
        for ((key, pod), mut opened) in open {
            let Some(cluster) = self.clusters.get_mut(key) else {
                continue;
            };
            if cluster.declared.max_connections.is_none() {
                continue;
            }
            if let Some(state) = cluster.pods.get_mut(pod) {
                state.pool.open_now(now, &mut opened, &cluster.declared);
                // An open connection is evidence of this pod's pool even
                // when it has been idle for longer than the window.
                state.last_seen = state.last_seen.max(now);
            }
        }
    }

    fn expire(&mut self, now: f64, window: f64) {
        let oldest = now - window;
        for cluster in self.clusters.values_mut() {
            for pod in cluster.pods.values_mut() {
                pod.balance.expire(oldest);
                pod.pool.expire(oldest);
                pod.outlier.expire(oldest);
                pod.origination.expire(oldest);
            }
            cluster
                .pods
                .retain(|_, pod| pod.last_seen >= oldest || !pod.timeline.is_empty());
        }
        self.clusters.retain(|_, cluster| !cluster.pods.is_empty());
    }
}

/// Follows one connection's update: its requests, its growth, its close.
fn follow(
    followed: &mut HashMap<u64, Followed>,
    declared: &DeclaredTraffic,
    pod: &mut PodState,
    sample: &ConnectionSample,
    activity: &Activity,
) {
    let known = followed.contains_key(&sample.cookie);
    if !known {
        pod.timeline.push(
            activity.opened_at,
            TimelineEvent::Opened {
                endpoint: sample.endpoint.clone(),
            },
        );
        pod.balance.connection(activity.seen_at, &sample.endpoint);
        pod.pool.connection(activity.seen_at);
        // A connection first met mid-life (the agent restarted, or the
        // policy changed) has no first bytes to judge.
        if activity.first {
            pod.origination.connection(activity, declared);
        }
    }
    if activity.estimated {
        pod.balance.estimated();
    }
    pod.balance
        .requests(activity.seen_at, &sample.endpoint, activity.requests);
    let connection = if known {
        followed.get_mut(&sample.cookie)
    } else if followed.len() < MAX_CONNECTIONS_FOLLOWED || activity.closed_at.is_some() {
        Some(followed.entry(sample.cookie).or_insert(Followed {
            cluster: sample.cluster.clone(),
            pod: sample.client_pod.clone(),
            requests: 0,
            estimated: false,
            opened_at: activity.opened_at,
            last_growth: activity.seen_at,
        }))
    } else {
        None
    };
    if let Some(connection) = connection {
        let before = connection.requests;
        connection.requests += activity.requests;
        connection.estimated |= activity.estimated;
        pod.pool.requests_on_connection(
            activity.seen_at,
            before,
            connection.requests,
            connection.estimated,
            declared,
        );
        match activity.closed_at {
            // A close that carried nothing new: idle since the last growth.
            Some(closed_at) if activity.bytes == 0 && declared.idle_timeout.is_some() => {
                pod.pool
                    .idle_for(closed_at - connection.last_growth, activity.seen_at);
            }
            Some(_) => {}
            None if activity.bytes > 0 => connection.last_growth = activity.seen_at,
            None => {}
        }
    }
    if let Some(closed_at) = activity.closed_at {
        followed.remove(&sample.cookie);
        pod.timeline.push(closed_at, TimelineEvent::Closed);
    }
}

/// The checks a declared policy calls for.
fn checks(declared: &DeclaredTraffic) -> Vec<PolicyCheck> {
    let mut checks = vec![match declared.load_balancer {
        Balance::HashSourceIp | Balance::HashL7 { .. } => PolicyCheck::ConsistentHash,
        _ => PolicyCheck::LoadBalancer,
    }];
    if declared.max_connections.is_some() {
        checks.push(PolicyCheck::MaxConnections);
    }
    if declared.max_requests_per_connection.is_some() {
        checks.push(PolicyCheck::MaxRequestsPerConnection);
    }
    if declared.idle_timeout.is_some() {
        checks.push(PolicyCheck::IdleTimeout);
    }
    if declared.outlier_detection.is_some() {
        checks.push(PolicyCheck::OutlierDetection);
    }
    if declared.tls_origination.is_some() {
        checks.push(PolicyCheck::TlsOrigination);
    }
    checks
}

fn judge(
    check: PolicyCheck,
    pod: &PodState,
    declared: &DeclaredTraffic,
    config: &TrafficConfig,
) -> PodVerdict {
    match check {
        PolicyCheck::LoadBalancer => pod.balance.judge_spread(declared, config),
        PolicyCheck::ConsistentHash => pod.balance.judge_hash(declared),
        PolicyCheck::MaxConnections => pod.pool.judge_max_connections(declared, config),
        PolicyCheck::MaxRequestsPerConnection => pod.pool.judge_requests(declared),
        PolicyCheck::IdleTimeout => pod.pool.judge_idle(declared, config),
        PolicyCheck::OutlierDetection => pod.outlier.judge(declared),
        PolicyCheck::TlsOrigination => pod.origination.judge(declared),
    }
}

/// One row per workload: a violating pod speaks for it, else a pod that
/// passed (the one with the most evidence), else the first untested one.
fn combine(
    key: &ClusterKey,
    check: PolicyCheck,
    declared: &DeclaredTraffic,
    per_pod: Vec<(&String, PodVerdict)>,
) -> Option<PolicyVerdict> {
    let several = per_pod.len() > 1;
    let samples = per_pod.iter().map(|(_, v)| v.samples).sum();
    let (pod, chosen) = per_pod
        .iter()
        .find(|(_, v)| v.outcome == PolicyOutcome::Violation)
        .or_else(|| {
            per_pod
                .iter()
                .filter(|(_, v)| v.outcome == PolicyOutcome::Ok)
                .max_by_key(|(_, v)| v.samples)
        })
        .or_else(|| per_pod.first())?;
    let observed = if several {
        format!("client pod {pod}: {}", chosen.observed)
    } else {
        chosen.observed.clone()
    };
    Some(PolicyVerdict {
        source: key.source.clone(),
        host: key.host.clone(),
        port: key.port,
        subset: key.subset.clone(),
        check,
        declared: describe_declared(check, declared),
        observed,
        verdict: chosen.outcome,
        reason: chosen.reason.clone(),
        samples,
    })
}

fn describe_declared(check: PolicyCheck, declared: &DeclaredTraffic) -> String {
    use crate::model::traffic_policy::format_duration;
    match check {
        PolicyCheck::LoadBalancer | PolicyCheck::ConsistentHash => {
            format!(
                "{} over {} endpoint{}",
                declared.load_balancer.describe(),
                declared.endpoints.len(),
                plural(declared.endpoints.len() as u64)
            )
        }
        PolicyCheck::MaxConnections => declared
            .max_connections
            .map_or_else(String::new, |n| format!("at most {n} connections")),
        PolicyCheck::MaxRequestsPerConnection => declared
            .max_requests_per_connection
            .map_or_else(String::new, |n| {
                format!("at most {n} requests per connection")
            }),
        PolicyCheck::IdleTimeout => declared.idle_timeout.map_or_else(String::new, |d| {
            format!("idle connections closed after {}", format_duration(d))
        }),
        PolicyCheck::OutlierDetection => {
            declared
                .outlier_detection
                .as_ref()
                .map_or_else(String::new, |e| match e.consecutive_errors {
                    Some(n) => format!(
                        "eject after {n} consecutive failures ({}) for at least {}",
                        e.limit_from,
                        format_duration(e.base_ejection_time)
                    ),
                    None => format!("no limit on connection failures ({})", e.limit_from),
                })
        }
        PolicyCheck::TlsOrigination => {
            declared
                .tls_origination
                .as_ref()
                .map_or_else(String::new, |o| {
                    format!(
                        "{} TLS with SNI {}{}",
                        o.mode,
                        o.sni,
                        if o.sni_declared {
                            ""
                        } else {
                            " (the host; sni unset)"
                        }
                    )
                })
        }
    }
}

#[cfg(test)]
mod tests;
