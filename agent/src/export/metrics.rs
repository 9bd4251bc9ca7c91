//! The agent's metric registry: names, help texts, and how observations and
//! reports turn into samples.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use foldhash::HashMap;

use prometheus_client::encoding::text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::cumulative::CumulativeCounters;
use super::gauges::{FloatGauge, ReplacedGauges};
use super::labels::{
    BypassLabels, EndpointLabels, FindingLabels, KindLabels, PodSplitLabels, PodSubsetLabels,
    PolicyLabels, SplitLabels, SubsetLabels, TrafficLabels, TransportLabels, VersionLabels,
};
use crate::observation::{Destination, Observation, TransportOutcome, judge_transport};
use crate::report::{PolicyOutcome, Report};

/// Content type of [`Metrics::encode`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`Metrics::encode_prometheus_text`].
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// All meshdrift metrics. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<TrafficLabels, Counter>,
    connections: Family<TrafficLabels, Counter>,
    bytes: Family<TrafficLabels, Counter>,
    unexpected: Family<SplitLabels, Counter>,
    bypass: Family<BypassLabels, Counter>,
    tls_violations: Family<TransportLabels, Counter>,
    tls_mismatches: Family<TransportLabels, Counter>,
    endpoint_requests: Family<EndpointLabels, Counter>,
    policy_violation: ReplacedGauges<PolicyLabels>,
    declared: ReplacedGauges<SubsetLabels>,
    observed: ReplacedGauges<SubsetLabels>,
    drift_ratio: ReplacedGauges<SubsetLabels>,
    p_value: ReplacedGauges<SplitLabels>,
    drift_detected: ReplacedGauges<SplitLabels>,
    samples: ReplacedGauges<SplitLabels>,
    pod_drift_detected: ReplacedGauges<PodSplitLabels>,
    pod_observed: ReplacedGauges<PodSubsetLabels>,
    pod_samples: ReplacedGauges<PodSplitLabels>,
    findings: ReplacedGauges<FindingLabels>,
    flows_tracked: FloatGauge,
    inventory: ReplacedGauges<KindLabels>,
    inventory_synced: FloatGauge,
    lost_events: Arc<CumulativeCounters>,
    excluded_flows: Arc<CumulativeCounters>,
    /// Counter handles of each traffic line seen, by a hash of its labels:
    /// an observation finds its counters without building labels or
    /// locking the families. As bounded as the families themselves.
    traffic: Mutex<HashMap<u64, Vec<TrafficHandles>>>,
    /// The same for the per-endpoint request counters.
    endpoints: Mutex<HashMap<u64, Vec<(EndpointLabels, Counter)>>>,
    hasher: foldhash::fast::RandomState,
}

/// The three traffic counters of one label set (clones share the families' values).
#[derive(Debug)]
struct TrafficHandles {
    labels: TrafficLabels,
    requests: Counter,
    connections: Counter,
    bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let metrics = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            connections: Family::default(),
            bytes: Family::default(),
            unexpected: Family::default(),
            bypass: Family::default(),
            tls_violations: Family::default(),
            tls_mismatches: Family::default(),
            endpoint_requests: Family::default(),
            policy_violation: ReplacedGauges::new(),
            declared: ReplacedGauges::new(),
            observed: ReplacedGauges::new(),
            drift_ratio: ReplacedGauges::new(),
            p_value: ReplacedGauges::new(),
            drift_detected: ReplacedGauges::new(),
            samples: ReplacedGauges::new(),
            pod_drift_detected: ReplacedGauges::new(),
            pod_observed: ReplacedGauges::new(),
            pod_samples: ReplacedGauges::new(),
            findings: ReplacedGauges::new(),
            flows_tracked: FloatGauge::default(),
            inventory: ReplacedGauges::new(),
            inventory_synced: FloatGauge::default(),
            lost_events: Arc::new(CumulativeCounters::new(
                "meshdrift_lost_events",
                "Records lost on the way from the kernel to the tallies since the agent started, by \
                 reason: in the kernel (ring buffer full, flow map full) or in user space (open-flow \
                 table full, a close never seen, observations older than the window, failed reads \
                 of the kernel's counters). Any increase means the counts are incomplete.",
                "reason",
            )),
            traffic: Mutex::new(HashMap::default()),
            endpoints: Mutex::new(HashMap::default()),
            hasher: foldhash::fast::RandomState::default(),
            excluded_flows: Arc::new(CumulativeCounters::new(
                "meshdrift_excluded_flows",
                "Flows left out of split accounting since the agent started, by reason \
                 (mesh-internal port, node-local host traffic, unattributed source, ...).",
                "reason",
            )),
        };
        metrics.register()
    }

    /// Names and help texts live here, in one place. Counter names omit `_total`:
    /// the OpenMetrics encoder appends it to the samples.
    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register(
            "meshdrift_requests",
            "Requests (request/response exchanges) from a source workload to a destination \
             host, port and subset, by the transport seen on the wire; the unit of http routes",
            self.requests.clone(),
        );
        r.register(
            "meshdrift_connections",
            "TCP connections opened from a source workload to a destination host, port and \
             subset, by the transport seen on the wire; the unit of tcp and tls routes",
            self.connections.clone(),
        );
        r.register(
            "meshdrift_bytes",
            "Bytes in both directions from a source workload to a destination host, port and \
             subset, by transport",
            self.bytes.clone(),
        );
        r.register(
            "meshdrift_unexpected_destination",
            "Connections from a source workload to a pod that its declared routes for the host \
             and port do not send it to (see GET /report for the pods)",
            self.unexpected.clone(),
        );
        r.register(
            "meshdrift_bypass",
            "Connections into the mesh that no proxy carried, by source workload, destination \
             host, port and subset, and reason: no_sidecar (the client has none; kube-proxy \
             chose the pod), sidecar_bypassed (the client's sidecar was left out), host_network \
             (a hostNetwork client). Counted on the node of the pod judged (see the README)",
            self.bypass.clone(),
        );
        r.register(
            "meshdrift_tls_violations",
            "Connections sent in plaintext (observed http, http2 or other) where the policy \
             expects Istio mutual TLS, by source workload, host, subset, expected and observed \
             transport",
            self.tls_violations.clone(),
        );
        r.register(
            "meshdrift_tls_mismatches",
            "Connections whose transport differs from the policy without being a plaintext \
             violation: TLS where plaintext (DISABLE) is expected, non-Istio TLS where mTLS is \
             expected, or the reverse for originated TLS (SIMPLE, MUTUAL)",
            self.tls_mismatches.clone(),
        );
        r.register(
            "meshdrift_endpoint_requests",
            "Requests from a source workload to each endpoint pod of a destination host, port \
             and subset: how the client proxies spread them (compare with the DestinationRule's \
             loadBalancer). One series per endpoint and source workload",
            self.endpoint_requests.clone(),
        );
        r.register(
            "meshdrift_policy_violation",
            "1 while a source workload's proxies contradict a DestinationRule traffic-policy \
             setting for a destination host, port and subset (check: load_balancer, \
             consistent_hash, max_connections, max_requests_per_connection, idle_timeout, \
             outlier_detection, tls_origination), 0 while they follow it; absent while untested. \
             See GET /report for the evidence",
            self.policy_violation.family(),
        );
        r.register(
            "meshdrift_declared_weight_ratio",
            "Share of the split (0 to 1) the VirtualService route weights declare for the subset",
            self.declared.family(),
        );
        r.register(
            "meshdrift_observed_ratio",
            "Share of the split (0 to 1) the subset received in the agent's window, in the \
             route's unit (requests for http routes, connections for tcp and tls routes)",
            self.observed.family(),
        );
        r.register(
            "meshdrift_split_drift_ratio",
            "Observed minus declared share for the subset (-1 to 1); positive means the subset \
             gets more than declared",
            self.drift_ratio.family(),
        );
        r.register(
            "meshdrift_split_p_value",
            "Goodness-of-fit p-value of the observed counts against the declared weights; absent \
             while the split is not tested (too few samples, a single subset)",
            self.p_value.family(),
        );
        r.register(
            "meshdrift_split_drift_detected",
            "1 when the split drifts from its declared weights (statistically significant and \
             beyond the tolerance, or a zero-weight subset receiving traffic), else 0",
            self.drift_detected.family(),
        );
        r.register(
            "meshdrift_split_samples",
            "Observations (requests or connections) the split verdict is based on: the current \
             window and policy generation",
            self.samples.family(),
        );
        r.register(
            "meshdrift_pod_split_drift_detected",
            "1 while a client pod's own split drifts from the declared weights (its sequential \
             test, or a zero-weight subset receiving its traffic): the pod whose proxy to check \
             and restart. Present only for drifting pods, so healthy pods add no series",
            self.pod_drift_detected.family(),
        );
        r.register(
            "meshdrift_pod_observed_ratio",
            "Share of a drifting client pod's split (0 to 1) each subset received in the \
             agent's window; present only while the pod drifts",
            self.pod_observed.family(),
        );
        r.register(
            "meshdrift_pod_split_samples",
            "Observations (requests or connections) of a drifting client pod's split in the \
             agent's window and policy generation; present only while the pod drifts",
            self.pod_samples.family(),
        );
        r.register(
            "meshdrift_config_findings",
            "Static findings on the mesh configuration, by finding code and severity",
            self.findings.family(),
        );
        r.register(
            "meshdrift_flows_tracked",
            "TCP flows the agent currently tracks",
            self.flows_tracked.clone(),
        );
        r.register(
            "meshdrift_inventory_objects",
            "Objects in the agent's inventory by kind (Pod, Service, VirtualService, ...)",
            self.inventory.family(),
        );
        r.register(
            "meshdrift_inventory_last_synced_timestamp_seconds",
            "When the inventory was last known current (every kind listed and watched without \
             error, or the manifests loaded), in seconds since the epoch; time() minus it is \
             how stale the agent's view of the cluster may be",
            self.inventory_synced.clone(),
        );
        // A gauge fixed at 1, the usual *_info idiom; kept a gauge rather than an
        // OpenMetrics info so that Prometheus text parsers understand it too.
        let build: Family<VersionLabels, FloatGauge> = Family::default();
        let version = VersionLabels {
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        build.get_or_create(&version).set(1.0);
        r.register(
            "meshdrift_build_info",
            "Always 1; the version label carries the meshdrift version",
            build,
        );
        r.register_collector(Box::new(super::process::ProcessCollector));
        r.register_collector(Box::new(self.lost_events.clone()));
        r.register_collector(Box::new(self.excluded_flows.clone()));
        self
    }

    /// Counts one attributed increment of traffic.
    ///
    /// Traffic to an unexpected destination is counted in the traffic counters with
    /// an empty subset (so totals stay complete) and also in
    /// `meshdrift_unexpected_destination_total`. Transport violations and mismatches
    /// are counted per connection, when the observation opens the flow's account.
    pub fn record(&self, observation: &Observation) {
        let subset = match &observation.destination {
            Destination::Subset { subset } => subset.as_deref(),
            Destination::Unexpected { .. } => None,
        };
        self.count_traffic(observation, subset);
        if let Some(endpoint) = &observation.endpoint
            && observation.requests > 0
        {
            self.count_endpoint(observation, subset.unwrap_or_default(), endpoint);
        }

        if let Some(reason) = observation.bypass {
            let key = &observation.key;
            self.bypass
                .get_or_create(&BypassLabels {
                    source_namespace: key.source.namespace.clone(),
                    source_workload: key.source.name.clone(),
                    destination_host: key.host.clone(),
                    destination_port: key.port,
                    destination_subset: subset.unwrap_or_default().to_owned(),
                    reason: reason.as_str(),
                })
                .inc_by(observation.connections);
        }

        if matches!(observation.destination, Destination::Unexpected { .. }) {
            let key = &observation.key;
            self.unexpected
                .get_or_create(&SplitLabels::new(&key.source, &key.host, key.port))
                .inc_by(observation.connections);
        }

        let Some(expected) = observation.expected_transport else {
            return;
        };
        if observation.connections == 0 {
            return;
        }
        let family = match judge_transport(Some(expected), observation.transport) {
            TransportOutcome::Expected | TransportOutcome::Neutral => return,
            TransportOutcome::Violation => &self.tls_violations,
            TransportOutcome::Mismatch => &self.tls_mismatches,
        };
        let labels = TransportLabels {
            source_namespace: observation.key.source.namespace.clone(),
            source_workload: observation.key.source.name.clone(),
            destination_host: observation.key.host.clone(),
            destination_subset: subset.unwrap_or_default().to_owned(),
            expected: expected.as_str(),
            observed: observation.transport.as_str(),
        };
        family
            .get_or_create(&labels)
            .inc_by(observation.connections);
    }

    fn count_traffic(&self, observation: &Observation, subset: Option<&str>) {
        let mut hasher = self.hasher.build_hasher();
        observation.key.hash(&mut hasher);
        subset.hash(&mut hasher);
        observation.transport.hash(&mut hasher);
        let hash = hasher.finish();
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still sound.
        let mut cache = self
            .traffic
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let line = cache.entry(hash).or_default();
        let index = match line
            .iter()
            .position(|handles| handles.labels.describe(observation, subset))
        {
            Some(index) => index,
            None => {
                let labels = TrafficLabels::of(observation, subset);
                line.push(TrafficHandles {
                    requests: self.requests.get_or_create(&labels).clone(),
                    connections: self.connections.get_or_create(&labels).clone(),
                    bytes: self.bytes.get_or_create(&labels).clone(),
                    labels,
                });
                line.len() - 1
            }
        };
        if let Some(handles) = line.get(index) {
            handles.requests.inc_by(observation.requests);
            handles.connections.inc_by(observation.connections);
            handles.bytes.inc_by(observation.bytes);
        }
    }

    fn count_endpoint(&self, observation: &Observation, subset: &str, endpoint: &str) {
        let mut hasher = self.hasher.build_hasher();
        observation.key.hash(&mut hasher);
        subset.hash(&mut hasher);
        endpoint.hash(&mut hasher);
        let hash = hasher.finish();
        let mut cache = self
            .endpoints
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let line = cache.entry(hash).or_default();
        match line
            .iter()
            .find(|(labels, _)| labels.describe(observation, subset, endpoint))
        {
            Some((_, counter)) => {
                counter.inc_by(observation.requests);
            }
            None => {
                let labels = EndpointLabels::of(observation, subset, endpoint);
                let counter = self.endpoint_requests.get_or_create(&labels).clone();
                counter.inc_by(observation.requests);
                line.push((labels, counter));
            }
        }
    }

    /// Refreshes every verdict and health series from a report. Series for splits,
    /// subsets, findings and inventory kinds absent from `report` are removed.
    pub fn update(&self, report: &Report) {
        let mut declared = Vec::new();
        let mut observed = Vec::new();
        let mut drift_ratio = Vec::new();
        let mut p_value = Vec::new();
        let mut detected = Vec::new();
        let mut samples = Vec::new();
        for split in &report.splits {
            let labels = SplitLabels::new(&split.source, &split.host, split.port);
            for share in &split.subsets {
                let subset = labels.with_subset(share.subset.as_deref());
                declared.push((subset.clone(), share.declared));
                observed.push((subset.clone(), share.observed));
                drift_ratio.push((subset, share.observed - share.declared));
            }
            if let Some(p) = split.p_value {
                p_value.push((labels.clone(), p));
            }
            detected.push((labels.clone(), if split.drift { 1.0 } else { 0.0 }));
            samples.push((labels, split.samples as f64));
        }
        self.declared.replace(declared);
        self.observed.replace(observed);
        self.drift_ratio.replace(drift_ratio);
        self.p_value.replace(p_value);
        self.drift_detected.replace(detected);
        self.samples.replace(samples);
        self.update_pods(report);
        self.policy_violation
            .replace(report.policies.iter().filter_map(|policy| {
                let value = match policy.verdict {
                    PolicyOutcome::Violation => 1.0,
                    PolicyOutcome::Ok => 0.0,
                    PolicyOutcome::Untested => return None,
                };
                let labels = PolicyLabels {
                    source_namespace: policy.source.namespace.clone(),
                    source_workload: policy.source.name.clone(),
                    destination_host: policy.host.clone(),
                    destination_port: policy.port,
                    destination_subset: policy.subset.clone().unwrap_or_default(),
                    check: policy.check.as_str(),
                };
                Some((labels, value))
            }));

        let mut findings: BTreeMap<(&str, &'static str), u64> = BTreeMap::new();
        for finding in &report.findings {
            *findings
                .entry((&finding.code, finding.severity.as_str()))
                .or_default() += 1;
        }
        self.findings
            .replace(findings.into_iter().map(|((code, severity), n)| {
                let labels = FindingLabels {
                    code: code.to_owned(),
                    severity,
                };
                (labels, n as f64)
            }));

        let agent = &report.agent;
        self.flows_tracked.set(agent.flows_tracked as f64);
        self.inventory.replace(
            agent
                .inventory
                .iter()
                .map(|(kind, n)| (KindLabels { kind: kind.clone() }, *n as f64)),
        );
        self.lost_events.set(&agent.lost_events);
        self.excluded_flows.set(&agent.excluded_flows);
    }

    /// Series for the client pods whose own split drifts, and none for the others.
    fn update_pods(&self, report: &Report) {
        let mut detected = Vec::new();
        let mut observed = Vec::new();
        for pod in report.pods.iter().filter(|pod| pod.split.drift) {
            let split = &pod.split;
            let name = pod
                .pod
                .split_once('/')
                .map_or(pod.pod.as_str(), |(_, name)| name);
            let labels = PodSplitLabels {
                source_namespace: split.source.namespace.clone(),
                source_workload: split.source.name.clone(),
                source_pod: name.to_owned(),
                destination_host: split.host.clone(),
                destination_port: split.port,
            };
            for share in &split.subsets {
                let subset = PodSubsetLabels {
                    source_namespace: labels.source_namespace.clone(),
                    source_workload: labels.source_workload.clone(),
                    source_pod: labels.source_pod.clone(),
                    destination_host: labels.destination_host.clone(),
                    destination_port: labels.destination_port,
                    destination_subset: share.subset.clone().unwrap_or_default(),
                };
                observed.push((subset, share.observed));
            }
            detected.push((labels, 1.0, split.samples as f64));
        }
        self.pod_observed.replace(observed);
        self.pod_samples.replace(
            detected
                .iter()
                .map(|(labels, _, samples)| (labels.clone(), *samples)),
        );
        self.pod_drift_detected.replace(
            detected
                .into_iter()
                .map(|(labels, value, _)| (labels, value)),
        );
    }

    /// The inventory is current as of `at`.
    pub fn inventory_synced(&self, at: std::time::SystemTime) {
        if let Ok(since_epoch) = at.duration_since(std::time::UNIX_EPOCH) {
            self.inventory_synced.set(since_epoch.as_secs_f64());
        }
    }

    /// The OpenMetrics text exposition (what Prometheus asks for when it scrapes).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(err) = text::encode(&mut out, &self.registry) {
            // Only a collector can fail, and ours write to a String: log rather than
            // serve nothing.
            tracing::error!(%err, "encoding metrics failed; the exposition is incomplete");
        }
        out
    }

    /// The Prometheus text format 0.0.4, for clients that do not speak OpenMetrics
    /// (`promtool check metrics`, plain `curl`).
    pub fn encode_prometheus_text(&self) -> String {
        super::text::openmetrics_to_prometheus(&self.encode())
    }
}
