//! Attribution: turns an observed client flow into an [`Observation`] of a
//! split — source workload, destination host, Service port, subset and
//! transport — next to the split the policy declares for that client.
//!
//! Evidence comes in order of strength: an Istio SNI names the host, port and
//! subset the client proxy chose; without one, the destination pod and the
//! EndpointSlices (pod IP + target port) name the Service, and the
//! DestinationRule subsets' endpoints name the subset.
//!
//! Interception decides which socket speaks for a connection. In a pod with a
//! sidecar, the proxy's sockets (its user, 1337) carry the split; the
//! application's socket redirected to the proxy (the kernel saw its packets
//! rewritten to loopback) and the legs inside a pod (loopback) are not
//! traffic of their own. An application socket that left such a pod without
//! being redirected went around the sidecar ([`bypass`]). A client without a
//! sidecar is judged where its connection arrives: the destination pod's
//! accepted socket, on that pod's node. A client in Istio's ambient mode is
//! in the mesh without a sidecar: its traffic is shown as such ([`ambient`]),
//! on its own node.

mod ambient;
mod bypass;
mod mesh;
pub mod requests;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use foldhash::{HashMap, HashMapExt};

pub use mesh::Mesh;

use crate::{
    findings::{Finding, Severity, codes},
    inventory::{PodId, PodInfo, sidecar::PROXY_UID},
    observation::{
        DeclaredSplit, DeclaredSubset, Destination, ExpectedTransport, Observation, SplitKey,
        Workload,
        conduct::{Activity, ClusterKey, ConnectionEvent, ConnectionSample, DeclaredTraffic},
    },
    pipeline::ObservedFlow,
    policy::{DestinationExpectation, Expectation},
    probe::{FlowKind, Role},
};

/// Ports of Istio's own plumbing (docs/istio-semantics.md, WIRE-5): sidecar admin, inbound/outbound
/// capture, HBONE, health, DNS, telemetry and istiod.
pub const MESH_INTERNAL_PORTS: &[u16] = &[
    15000, 15001, 15002, 15004, 15006, 15008, 15010, 15012, 15014, 15017, 15020, 15021, 15053,
    15090,
];

/// Why a flow is left out of split accounting; each is counted in its own metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exclusion {
    /// A port of the mesh's own plumbing.
    MeshInternalPort,
    /// The client is not a pod (the node itself, or a hostNetwork pod).
    HostTraffic,
    /// An application's connection to a Service's cluster IP, before its sidecar redirects it.
    ServiceVip,
    /// The server is neither a known pod nor named by an Istio SNI.
    UnknownDestination,
    /// The server pod backs no Service on that port.
    NoService,
    /// The policy engine could not answer for this client and host.
    NoExpectation,
    /// A connection inside one pod (its proxy and its application, over loopback).
    Loopback,
    /// An application's connection its sidecar's rules redirected to the proxy:
    /// the proxy's own connection carries it on.
    SidecarRedirect,
    /// The client side of a pod without a sidecar: judged from the
    /// destination's accepted socket, by the agent on that pod's node.
    JudgedAtServer,
}

impl Exclusion {
    pub fn as_str(self) -> &'static str {
        match self {
            Exclusion::MeshInternalPort => "mesh_internal_port",
            Exclusion::HostTraffic => "host_traffic",
            Exclusion::ServiceVip => "service_vip",
            Exclusion::UnknownDestination => "unknown_destination",
            Exclusion::NoService => "no_service",
            Exclusion::NoExpectation => "no_expectation",
            Exclusion::Loopback => "loopback",
            Exclusion::SidecarRedirect => "sidecar_redirect",
            Exclusion::JudgedAtServer => "judged_at_server",
        }
    }
}

/// What became of one flow record.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribution {
    /// Counted against the declared split; `connection` is what the
    /// traffic-policy checks see of it (absent for an unexpected destination).
    Counted {
        observation: Box<Observation>,
        declared: Arc<DeclaredSplit>,
        connection: Option<Box<ConnectionSample>>,
    },
    /// A client proxy's connection attempt that never established, to an
    /// endpoint of a declared cluster: evidence for outlier detection.
    FailedAttempt { connection: Box<ConnectionSample> },
    /// Traffic around the mesh's proxies: judged for its transport and shown
    /// as a bypass, never against the declared split.
    Bypass { observation: Box<Observation> },
    /// A client in Istio's ambient mode: ztunnel carries its traffic, which
    /// is shown, not judged.
    Ambient { observation: Box<Observation> },
    /// Left out of split accounting; `first` is true the first time this flow is seen.
    Excluded { reason: Exclusion, first: bool },
    /// A server-side socket whose connection is counted on its client's side.
    ServerSide,
    /// No client data yet: who sent it (the proxy or the application) and
    /// where it really went are known from the first client packet on.
    Pending,
}

/// Answers are cached per client pod and Service port, then by host, so a cache
/// hit allocates nothing; each with the mesh generation it was computed in.
type ExpectationCache = HashMap<(PodId, u16), (u64, HashMap<String, Option<Answer>>)>;

/// A policy answer, the split it declares and each destination's traffic
/// policy, computed once per client pod, host and port.
#[derive(Clone)]
struct Answer {
    expectation: Arc<Expectation>,
    declared: Arc<DeclaredSplit>,
    /// One per `expectation.destinations`, in order.
    traffic: Arc<[Arc<DeclaredTraffic>]>,
}

pub struct Attributor {
    mesh: Arc<Mesh>,
    expectations: ExpectationCache,
    cached: usize,
    /// Bumped when the mesh changes in place: older answers are stale.
    generation: u64,
    findings: HashMap<String, Finding>,
    /// `CLOCK_MONOTONIC` in ns when the agent's clock read 0: kernel
    /// timestamps become the agent's seconds.
    clock_origin_ns: u64,
    /// The same moment in seconds since the Unix epoch.
    clock_origin_wall: f64,
}

/// Cached expectations at most; the cache is rebuilt on demand.
const MAX_CACHED_EXPECTATIONS: usize = 100_000;
/// Attribution findings kept at most (one per pod and subset).
const MAX_FINDINGS: usize = 1_000;

impl Attributor {
    pub fn new(mesh: Arc<Mesh>) -> Self {
        Self {
            mesh,
            expectations: HashMap::new(),
            cached: 0,
            generation: 0,
            findings: HashMap::new(),
            clock_origin_ns: 0,
            clock_origin_wall: 0.0,
        }
    }

    /// Sets the kernel time (`CLOCK_MONOTONIC`, ns) at which the agent's
    /// clock started, so kernel timestamps convert to the agent's seconds.
    pub fn set_clock_origin(&mut self, monotonic_ns: u64) {
        self.clock_origin_ns = monotonic_ns;
        self.clock_origin_wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
    }

    /// A kernel timestamp in seconds since the Unix epoch, the clock the
    /// API server stamps objects with.
    fn wall_seconds(&self, kernel_ns: u64) -> f64 {
        self.clock_origin_wall + self.agent_seconds(kernel_ns)
    }

    /// A kernel timestamp in the agent's seconds (negative before it started).
    fn agent_seconds(&self, kernel_ns: u64) -> f64 {
        (kernel_ns as f64 - self.clock_origin_ns as f64) / 1e9
    }

    /// Switches to a newly loaded mesh; cached answers are dropped.
    pub fn set_mesh(&mut self, mesh: Arc<Mesh>) {
        self.mesh = mesh;
        self.expectations.clear();
        self.cached = 0;
        self.findings.clear();
    }

    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    /// The mesh, to update in place (pods, services, policies), when no one
    /// else holds it; every cached answer becomes stale at once.
    pub fn mesh_mut(&mut self) -> Option<&mut Mesh> {
        let mesh = Arc::get_mut(&mut self.mesh)?;
        self.generation += 1;
        Some(mesh)
    }

    /// Findings made while attributing (an SNI subset the pod's labels contradict).
    pub fn findings(&self) -> Vec<Finding> {
        let mut findings: Vec<Finding> = self.findings.values().cloned().collect();
        findings.sort_by(|a, b| (&a.resource, &a.code).cmp(&(&b.resource, &b.code)));
        findings
    }

    pub fn attribute(&mut self, flow: &ObservedFlow, at_seconds: f64) -> Attribution {
        let record = &flow.record;
        if let FlowKind::ConnectFailed { timed_out } = record.kind {
            return self.failed_attempt(flow, timed_out);
        }
        if record.counters.client_bytes == 0 {
            return Attribution::Pending;
        }
        if record.role == Role::Server {
            return self.server_side(flow, at_seconds);
        }
        let delta = flow.delta;
        let excluded = |reason| Attribution::Excluded {
            reason,
            first: delta.first,
        };
        let server = record.server();
        if MESH_INTERNAL_PORTS.contains(&server.port()) {
            return excluded(Exclusion::MeshInternalPort);
        }
        if record.client().ip().is_loopback() || server.ip().is_loopback() {
            return excluded(Exclusion::Loopback);
        }
        let mesh = Arc::clone(&self.mesh);
        // The pod that held the address when the connection was made, also
        // when it is gone since and its address is another pod's now.
        let started = self.wall_seconds(record.start_ns);
        let Some((client_id, client)) =
            match mesh.index.departed_holder(record.client().ip(), started) {
                Some(departed) => Some((None, departed)),
                None => mesh
                    .index
                    .pod_id_by_ip(record.client().ip())
                    .and_then(|id| Some((Some(id), mesh.index.pod(id)?))),
            }
            .filter(|(_, pod)| !pod.host_network)
        else {
            return excluded(Exclusion::HostTraffic);
        };
        match &client.sidecar {
            None if mesh.index.in_ambient(client) => {
                return self.ambient_client(flow, client, at_seconds);
            }
            None => return excluded(Exclusion::JudgedAtServer),
            Some(_) if record.uid == PROXY_UID => {}
            Some(_) => {
                return match record.nat {
                    Some(to) if to.ip().is_loopback() => excluded(Exclusion::SidecarRedirect),
                    _ => self.around_sidecar(flow, client_id, client, at_seconds),
                };
            }
        }
        if mesh.is_service_vip(server) {
            return excluded(Exclusion::ServiceVip);
        }
        let server_pod = mesh.index.pod_by_ip(server.ip());
        let mut by_sni_host = false;
        let (host, port) = match flow.classification.istio.as_ref() {
            Some(sni) => (sni.host.clone(), sni.port),
            None => match mesh.service_for_endpoint(server) {
                Some((fqdn, port)) => (fqdn.to_owned(), port),
                // A host outside the cluster (a ServiceEntry resolved by
                // DNS) is named by the SNI of the TLS the proxy originates.
                None if server_pod.is_none() => match flow
                    .classification
                    .sni
                    .as_deref()
                    .and_then(|sni| mesh.service_for_sni(sni, server.port()))
                {
                    Some((fqdn, port)) => {
                        by_sni_host = true;
                        (fqdn.to_owned(), port)
                    }
                    None => return excluded(Exclusion::UnknownDestination),
                },
                None => return excluded(Exclusion::NoService),
            },
        };
        let Some(Answer {
            expectation,
            declared,
            traffic,
        }) = self.expectation(client_id, client, &host, port)
        else {
            return excluded(Exclusion::NoExpectation);
        };
        let destination_pod = server_pod.map_or_else(|| server.ip().to_string(), PodInfo::key);
        let sni_subset = flow
            .classification
            .istio
            .as_ref()
            .map(|sni| sni.subset.clone());
        let (destination, expected_transport, chosen_traffic) =
            match choose_destination(&expectation, server, sni_subset, by_sni_host) {
                Chosen::Declared(at) => {
                    let chosen = &expectation.destinations[at];
                    if let Some(pod) = server_pod {
                        self.check_subset_labels(pod, chosen);
                    }
                    // An endpoint in ambient mode is reached through its
                    // ztunnel (HBONE): what the sidecar sends it is not judged.
                    let ambient_server = server_pod.is_some_and(|pod| mesh.index.in_ambient(pod));
                    (
                        Destination::Subset {
                            subset: chosen.subset.clone(),
                        },
                        (!ambient_server)
                            .then(|| expected_transport(chosen, server))
                            .flatten(),
                        traffic.get(at).cloned(),
                    )
                }
                Chosen::Unexpected(reason) => (
                    Destination::Unexpected {
                        destination: destination_pod.clone(),
                        reason,
                    },
                    None,
                    None,
                ),
            };
        let key = SplitKey {
            source: workload_of(client),
            host,
            port,
        };
        let mut observation = observe(flow, key, destination, expected_transport, at_seconds, None);
        observation.source_pod = Some(client.key());
        let connection = match (&observation.destination, chosen_traffic) {
            (Destination::Subset { subset }, Some(declared)) => {
                observation.endpoint = Some(destination_pod.clone());
                let cluster = ClusterKey {
                    source: observation.key.source.clone(),
                    host: observation.key.host.clone(),
                    port: observation.key.port,
                    subset: subset.clone(),
                };
                Some(Box::new(ConnectionSample {
                    cluster,
                    declared,
                    client_pod: client.key(),
                    endpoint: destination_pod,
                    cookie: record.cookie,
                    event: ConnectionEvent::Activity(self.activity(flow, &observation, at_seconds)),
                }))
            }
            _ => None,
        };
        Attribution::Counted {
            observation: Box::new(observation),
            declared,
            connection,
        }
    }

    /// What a counted flow's latest increment tells the traffic-policy checks.
    fn activity(
        &self,
        flow: &ObservedFlow,
        observation: &Observation,
        at_seconds: f64,
    ) -> Activity {
        let record = &flow.record;
        Activity {
            opened_at: self.agent_seconds(record.start_ns),
            closed_at: (record.kind == FlowKind::Close).then(|| self.agent_seconds(record.time_ns)),
            seen_at: at_seconds,
            requests: observation.requests,
            estimated: observation.estimated,
            bytes: observation.bytes,
            first: flow.delta.first,
            transport: flow.classification.transport,
            // Only a connection's first update is judged for the TLS it
            // originates: later ones do not copy the name again.
            sni: flow
                .delta
                .first
                .then(|| flow.classification.sni.clone())
                .flatten(),
        }
    }

    /// A connection attempt that never established. Only a client proxy's
    /// attempts to an endpoint of a declared cluster are evidence: the
    /// kernel does not say who owned the socket, so the client must be a pod
    /// with a sidecar (whose applications' connections its rules redirect to
    /// the proxy, which accepts them) and the server a cluster endpoint.
    fn failed_attempt(&mut self, flow: &ObservedFlow, timed_out: bool) -> Attribution {
        let record = &flow.record;
        let excluded = |reason| Attribution::Excluded {
            reason,
            first: true,
        };
        let server = record.server();
        if record.client().ip().is_loopback() || server.ip().is_loopback() {
            return excluded(Exclusion::Loopback);
        }
        if MESH_INTERNAL_PORTS.contains(&server.port()) {
            return excluded(Exclusion::MeshInternalPort);
        }
        let mesh = Arc::clone(&self.mesh);
        let Some((client_id, client)) = mesh
            .index
            .pod_id_by_ip(record.client().ip())
            .and_then(|id| Some((Some(id), mesh.index.pod(id)?)))
            .filter(|(_, pod)| !pod.host_network && pod.sidecar.is_some())
        else {
            return excluded(Exclusion::HostTraffic);
        };
        let Some((host, port)) = mesh.service_for_endpoint(server) else {
            return excluded(Exclusion::NoService);
        };
        let host = host.to_owned();
        let Some(answer) = self.expectation(client_id, client, &host, port) else {
            return excluded(Exclusion::NoExpectation);
        };
        let Chosen::Declared(at) = choose_destination(&answer.expectation, server, None, false)
        else {
            return excluded(Exclusion::UnknownDestination);
        };
        let Some(declared) = answer.traffic.get(at).cloned() else {
            return excluded(Exclusion::NoExpectation);
        };
        let endpoint = mesh
            .index
            .pod_by_ip(server.ip())
            .map_or_else(|| server.ip().to_string(), PodInfo::key);
        Attribution::FailedAttempt {
            connection: Box::new(ConnectionSample {
                cluster: ClusterKey {
                    source: workload_of(client),
                    host,
                    port,
                    subset: answer.expectation.destinations[at].subset.clone(),
                },
                declared,
                client_pod: client.key(),
                endpoint,
                cookie: record.cookie,
                event: ConnectionEvent::Failed {
                    at: self.agent_seconds(record.time_ns),
                    timed_out,
                },
            }),
        }
    }

    /// The answer for `client` (cached under its id; a pod removed since,
    /// without one, is answered afresh).
    fn expectation(
        &mut self,
        client_id: Option<PodId>,
        client: &PodInfo,
        host: &str,
        port: u16,
    ) -> Option<Answer> {
        if let Some(client_id) = client_id
            && let Some(cached) = self
                .expectations
                .get(&(client_id, port))
                .filter(|(generation, _)| *generation == self.generation)
                .and_then(|(_, by_host)| by_host.get(host))
        {
            return cached.clone();
        }
        if self.cached >= MAX_CACHED_EXPECTATIONS {
            self.expectations.clear();
            self.cached = 0;
        }
        let answer = match self
            .mesh
            .policies
            .expect(&self.mesh.index, client, host, Some(port))
        {
            Ok(expectation) => Some(Answer {
                declared: Arc::new(declared_split(&expectation)),
                traffic: expectation
                    .destinations
                    .iter()
                    .map(|d| Arc::new(d.traffic.clone()))
                    .collect(),
                expectation: Arc::new(expectation),
            }),
            Err(err) => {
                tracing::debug!(client = %client.key(), host, port, %err, "no expectation");
                None
            }
        };
        let Some(client_id) = client_id else {
            return answer;
        };
        let (generation, by_host) = self.expectations.entry((client_id, port)).or_default();
        if *generation != self.generation {
            by_host.clear();
            *generation = self.generation;
        }
        by_host.insert(host.to_owned(), answer.clone());
        self.cached += 1;
        answer
    }

    /// An SNI subset whose labels the server pod does not carry means the client
    /// proxy's view of the endpoints disagrees with the pods: worth a finding.
    fn check_subset_labels(&mut self, pod: &PodInfo, declared: &DestinationExpectation) {
        let Some(labels) = &declared.subset_labels else {
            return;
        };
        let matches = labels
            .iter()
            .all(|(key, value)| pod.labels.get(key) == Some(value.as_str()));
        if matches || self.findings.len() >= MAX_FINDINGS {
            return;
        }
        let subset = declared.subset.as_deref().unwrap_or("-");
        let id = format!("{}#{subset}", pod.key());
        self.findings.entry(id).or_insert_with(|| Finding {
            code: codes::SNI_SUBSET_LABEL_MISMATCH.to_owned(),
            severity: Severity::Warning,
            resource: format!("Pod {}", pod.key()),
            message: format!(
                "connections named subset {subset} of {} in their SNI reached this pod, whose labels do not match the subset's ({})",
                declared.host,
                labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
            ),
        });
    }
}

/// 1 when this increment holds the connection's first client bytes: a
/// connection counts once, when it first carries data (which is also when
/// the kernel learns its owner and where it really went). A flow adopted
/// mid-life was opened before the agent watched, and is not counted.
/// The workload a pod belongs to, as observations name their source.
fn workload_of(pod: &PodInfo) -> Workload {
    Workload {
        namespace: pod.namespace.to_string(),
        name: pod.workload.to_string(),
    }
}

/// What a flow's latest increment carried, observed under `key`: one
/// constructor for counted and bypassing flows alike.
fn observe(
    flow: &ObservedFlow,
    key: SplitKey,
    destination: Destination,
    expected_transport: Option<ExpectedTransport>,
    at_seconds: f64,
    bypass: Option<crate::observation::BypassReason>,
) -> Observation {
    let requests = requests::count(&flow.classification, &flow.delta);
    Observation {
        key,
        destination,
        transport: flow.classification.transport,
        expected_transport,
        requests: requests.requests,
        estimated: requests.estimated,
        connections: opens_connection(flow),
        bytes: flow.delta.bytes(),
        at_seconds,
        bypass,
        ambient: false,
        endpoint: None,
        source_pod: None,
    }
}

fn opens_connection(flow: &ObservedFlow) -> u64 {
    let total = flow.record.counters.client_bytes;
    u64::from(!flow.record.adopted && total > 0 && flow.delta.counters.client_bytes == total)
}

/// A declared destination, by its place in `Expectation::destinations`.
enum Chosen {
    Declared(usize),
    Unexpected(String),
}

/// The declared destination a flow belongs to: the SNI subset when there is one,
/// else the first declared destination whose endpoints include the server —
/// or, for a host the TLS SNI named (`by_sni_host`), the destination of that
/// host without a subset, whose addresses DNS resolves and the inventory
/// does not list.
fn choose_destination(
    expectation: &Expectation,
    server: SocketAddr,
    sni_subset: Option<Option<String>>,
    by_sni_host: bool,
) -> Chosen {
    let destinations = &expectation.destinations;
    match sni_subset {
        Some(subset) => destinations
            .iter()
            .position(|declared| declared.subset == subset)
            .map_or_else(
                || {
                    Chosen::Unexpected(format!(
                        "the client proxy chose subset {}, which the route does not send this client to",
                        subset.as_deref().unwrap_or("(none)")
                    ))
                },
                Chosen::Declared,
            ),
        None => destinations
            .iter()
            .position(|declared| declared.endpoints.iter().any(|endpoint| endpoint.ip == server.ip()))
            .or_else(|| {
                by_sni_host
                    .then(|| {
                        destinations.iter().position(|declared| {
                            declared.host == expectation.host && declared.subset.is_none()
                        })
                    })
                    .flatten()
            })
            .map_or_else(
                || {
                    Chosen::Unexpected(format!(
                        "{} is not an endpoint of any destination the route declares",
                        server.ip()
                    ))
                },
                Chosen::Declared,
            ),
    }
}

/// What the policy expects on the wire toward this server.
fn expected_transport(
    declared: &DestinationExpectation,
    server: SocketAddr,
) -> Option<ExpectedTransport> {
    let per_endpoint = declared
        .endpoints
        .iter()
        .find(|endpoint| endpoint.ip == server.ip())
        .map(|endpoint| endpoint.expect);
    per_endpoint.or_else(|| declared.tls.mode.explicit_transport())
}

fn declared_split(expectation: &Expectation) -> DeclaredSplit {
    DeclaredSplit {
        unit: expectation.unit,
        determinable: expectation.determinable,
        reason: expectation.reason.clone(),
        subsets: expectation
            .destinations
            .iter()
            .map(|declared| DeclaredSubset {
                subset: declared.subset.clone(),
                weight: declared.weight,
            })
            .collect(),
    }
}
