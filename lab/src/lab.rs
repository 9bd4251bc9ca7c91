//! The lab: a bridge that claims its id, a node namespace that routes
//! between pods (and holds kube-proxy's rules), one work directory and one
//! parent cgroup, owning the pods built on them. Dropping it removes
//! everything it created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};

use crate::certs::{CertAuthority, Identity};
use crate::cgroup;
use crate::error::{LabError, Result};
use crate::live;
use crate::netns::{self, PodLink};
use crate::pod::{Pod, PodParts};
use crate::shared::{
    CGROUP_PREFIX, DIR_PREFIX, KILL_TIMEOUT, LabShared, PodRecord, lock, require_root,
};
use crate::stale;

/// Lab ids are the third octet of the IPv4 subnet.
pub const MAX_LAB_ID: u8 = 250;

const FIRST_HOST: u8 = 10;
/// Pods take host numbers up to here; Services' cluster IPs come after.
const LAST_POD_HOST: u8 = 199;

/// A set of pods on one bridge. See the crate docs for an example.
#[derive(Debug)]
pub struct Lab {
    shared: Arc<LabShared>,
    /// Handles of the pods, by name; the shared state records what teardown removes.
    pods: Mutex<BTreeMap<String, Pod>>,
}

static STALE_SWEEP: Once = Once::new();

impl Lab {
    /// Claims a free lab id (first bridge name `mdl<id>br` not yet taken) and
    /// creates the bridge, the cgroup `meshdrift-lab-<id>` and a work dir.
    /// `name` only labels logs.
    pub fn new(name: &str) -> Result<Lab> {
        require_root()?;
        let cgroup_root = cgroup::cgroup2_root()?;
        // Leftovers of crashed runs hold ids and addresses; sweep once per
        // process. Only labs whose owner process is gone are touched.
        STALE_SWEEP.call_once(|| match stale::cleanup_stale() {
            Ok(report) if !report.removed.is_empty() => {
                tracing::info!(ids = ?report.removed, "removed leftovers of earlier lab runs")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not sweep leftovers of earlier lab runs"),
        });
        let owner = stale::own_owner_tag();
        for id in 1..=MAX_LAB_ID {
            if !netns::create_bridge(id, &owner)? {
                continue;
            }
            // Namespaces of a lab that lost its bridge would clash with our
            // pods' names: leave that id to the sweeper too.
            let prefix = netns::netns_name(id, "");
            if netns::list_netns()?.iter().any(|n| n.starts_with(&prefix)) {
                let _ = netns::delete_link(&netns::bridge_name(id));
                continue;
            }
            let cgroup_path = cgroup_root.join(format!("{CGROUP_PREFIX}{id}"));
            match cgroup::create(&cgroup_path) {
                Ok(true) => {}
                Ok(false) => {
                    // A leftover group of a lab that lost its bridge: not ours
                    // to reuse; leave the id to the sweeper.
                    let _ = netns::delete_link(&netns::bridge_name(id));
                    continue;
                }
                Err(e) => {
                    let _ = netns::delete_link(&netns::bridge_name(id));
                    return Err(e);
                }
            }
            if let Err(e) = netns::create_node(id) {
                let _ = netns::delete_netns(&netns::node_netns_name(id));
                let _ = cgroup::remove_tree(&cgroup_path, KILL_TIMEOUT);
                let _ = netns::delete_link(&netns::bridge_name(id));
                return Err(e);
            }
            let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{id}-{}", std::process::id()));
            let shared = Arc::new(LabShared::new(id, name, dir.clone(), cgroup_path));
            // From here on Drop cleans up whatever exists.
            let lab = Lab {
                shared,
                pods: Mutex::new(BTreeMap::new()),
            };
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("logs"))
                .map_err(|e| LabError::io("creating", &dir, e))?;
            live::register(&lab.shared);
            tracing::info!(lab = name, id, dir = %dir.display(), "lab created");
            return Ok(lab);
        }
        Err(LabError::NoFreeId)
    }

    pub fn id(&self) -> u8 {
        self.shared.id
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Name of the (empty) Linux bridge whose existence claims the lab's id.
    pub fn bridge(&self) -> &str {
        &self.shared.bridge
    }

    /// The node's network namespace: it routes between pods and holds the
    /// kube-proxy rules of the lab's Services.
    pub fn node_netns(&self) -> String {
        netns::node_netns_name(self.shared.id)
    }

    /// The node's own address (`10.213.<id>.1`, `fd00:213:<id>::1`), which
    /// hostNetwork pods have.
    pub fn node_ip(&self, v6: bool) -> std::net::IpAddr {
        if v6 {
            netns::ipv6_of(self.shared.id, netns::NODE_HOST).into()
        } else {
            netns::ipv4_of(self.shared.id, netns::NODE_HOST).into()
        }
    }

    /// Links this machine's own network namespace to the lab's node, so the
    /// pods are reachable from here at their addresses (and
    /// [`Lab::uplink_ip`] from them). Idempotent within a lab.
    pub fn connect_uplink(&self) -> Result<std::net::Ipv4Addr> {
        let address = netns::ipv4_of(self.shared.id, netns::UPLINK_HOST);
        if !self.shared.take_uplink() {
            return Ok(address);
        }
        netns::create_uplink(self.shared.id)?;
        Ok(address)
    }

    /// This machine's address on the lab's uplink ([`Lab::connect_uplink`]).
    pub fn uplink_ip(&self) -> std::net::Ipv4Addr {
        netns::ipv4_of(self.shared.id, netns::UPLINK_HOST)
    }

    /// Programs kube-proxy's rules for these Services in the node's
    /// namespace, replacing the previous set.
    pub fn sync_services(&self, services: &[crate::kube_proxy::ClusterService]) -> Result<()> {
        crate::kube_proxy::sync(&self.node_netns(), &self.shared.dir, services)
    }

    /// The `n`th cluster IP of the lab's Services (`10.213.<id>.200` + n).
    pub fn service_ip(&self, n: u8) -> Result<std::net::Ipv4Addr> {
        let host = netns::SERVICE_HOSTS
            .start()
            .checked_add(n)
            .filter(|h| netns::SERVICE_HOSTS.contains(h))
            .ok_or_else(|| {
                LabError::invalid(
                    "service IP",
                    format!("{n} (a lab has {} cluster IPs)", netns::SERVICE_HOSTS.len()),
                )
            })?;
        Ok(netns::ipv4_of(self.shared.id, host))
    }

    /// Work directory: configs, certificates, logs, pid files.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The lab's parent cgroup; every pod's cgroup is below it (a child of
    /// it in a single-node lab, of its node's subtree in a lab with more).
    pub fn cgroup_path(&self) -> &Path {
        &self.shared.cgroup
    }

    /// The cgroup whose children are node `node`'s pods and processes: the
    /// lab's own group while the lab has one node, `<lab cgroup>/node-<k>`
    /// once [`Lab::add_node`] gave it more. An agent attached there sees
    /// only that node's sockets, as on a real node.
    pub fn node_cgroup_path(&self, node: u8) -> PathBuf {
        self.shared.node_cgroup(node)
    }

    /// Whether each node's pods live in a cgroup subtree of their own
    /// (the lab has more than one node).
    pub fn has_per_node_cgroups(&self) -> bool {
        self.shared.has_per_node_cgroups()
    }

    /// `10.213.<id>.0/24`
    pub fn ipv4_subnet(&self) -> String {
        format!("10.213.{}.0/24", self.shared.id)
    }

    /// `fd00:213:<id>::/64`
    pub fn ipv6_subnet(&self) -> String {
        format!("{}/64", netns::ipv6_of(self.shared.id, 0))
    }

    /// Adds a pod at the next free host number (from .10 up).
    pub fn add_pod(&self, name: &str) -> Result<Pod> {
        let used = self.shared.used_hosts()?;
        let host = (FIRST_HOST..=LAST_POD_HOST)
            .find(|h| !used.contains(h))
            .ok_or_else(|| LabError::invalid("pod", "no host numbers left in the lab's /24"))?;
        self.add_pod_at(name, host)
    }

    /// Adds a pod with the host part `host` (`10.213.<id>.<host>`).
    pub fn add_pod_at(&self, name: &str, host: u8) -> Result<Pod> {
        self.add_pod_on(name, host, 1)
    }

    /// Adds node `node` (2 to [`netns::MAX_NODES`]): a namespace of its own
    /// that routes between its pods and reaches the others through node 1,
    /// with its own address `10.213.<id>.<248 + node>`. Its programs run
    /// through [`Lab::nth_node_processes`], its pods come from
    /// [`Lab::add_pod_on`].
    ///
    /// A lab with more than one node gives each node a cgroup subtree
    /// (`<lab cgroup>/node-<k>/<pod>`, node 1's included), as each node of a
    /// cluster has its own hierarchy; so nodes must be added before the
    /// lab's first pod or node process, and adding one later is refused. A
    /// lab that never adds a node keeps its pods directly under its group.
    pub fn add_node(&self, node: u8) -> Result<()> {
        if !(2..=netns::MAX_NODES).contains(&node) {
            return Err(LabError::invalid(
                "node number",
                format!(
                    "{node} (node 1 is the lab's own; add 2..={})",
                    netns::MAX_NODES
                ),
            ));
        }
        let id = self.shared.id;
        let name = netns::node_pod_name(node);
        let ns = netns::nth_node_netns_name(id, node);
        self.shared.use_per_node_cgroups(node)?;
        self.shared.claim_pod(
            &name,
            PodRecord {
                host: netns::node_host(node),
                netns: ns.clone(),
            },
        )?;
        if let Err(e) = netns::create_extra_node(id, node) {
            let _ = netns::delete_netns(&ns);
            self.shared.release_pod(&name);
            return Err(e);
        }
        tracing::debug!(lab = id, node, "node added");
        Ok(())
    }

    /// Whether node `node` exists (node 1 always does).
    pub fn has_node(&self, node: u8) -> Result<bool> {
        if node == 1 {
            return Ok(true);
        }
        let ns = netns::nth_node_netns_name(self.shared.id, node);
        Ok(netns::list_netns()?.contains(&ns))
    }

    /// The address of node `node` (`10.213.<id>.1` for node 1).
    pub fn nth_node_ip(&self, node: u8) -> std::net::Ipv4Addr {
        netns::ipv4_of(self.shared.id, netns::node_host(node))
    }

    /// Adds a pod with the host part `host` on node `node` (see [`Lab::add_node`]).
    pub fn add_pod_on(&self, name: &str, host: u8, node: u8) -> Result<Pod> {
        validate_pod_name(name)?;
        if !self.has_node(node)? {
            return Err(LabError::invalid(
                "node number",
                format!("{node}: the lab has no such node (Lab::add_node makes it)"),
            ));
        }
        if !(2..=LAST_POD_HOST).contains(&host) {
            return Err(LabError::invalid(
                "pod host number",
                format!("{host} (use 2..={LAST_POD_HOST}: 1 is the node, 200 up are Services)"),
            ));
        }
        let id = self.shared.id;
        let netns_name = netns::netns_name(id, name);
        let host_veth = netns::host_veth_name(id, host);
        self.shared.claim_pod(
            name,
            PodRecord {
                host,
                netns: netns_name.clone(),
            },
        )?;
        let cgroup_path = self.shared.node_cgroup(node).join(name);
        let ipv4 = netns::ipv4_of(id, host);
        let ipv6 = netns::ipv6_of(id, host);
        let build = || -> Result<u64> {
            cgroup::create(&cgroup_path)?;
            netns::create_pod_network(&PodLink {
                netns: &netns_name,
                host_veth: &host_veth,
                node_netns: &netns::nth_node_netns_name(id, node),
                node_host: netns::node_host(node),
                lab_id: id,
                ipv4,
                ipv6,
            })?;
            if node != 1 {
                netns::route_pod_via_node(id, node, ipv4, ipv6)?;
            }
            cgroup::cgroup_id(&cgroup_path)
        };
        let cgroup_id = match build() {
            Ok(cgroup_id) => cgroup_id,
            Err(e) => {
                // Undo the half-built pod so the lab stays usable.
                // The veth pair goes with the pod's namespace.
                let _ = netns::delete_netns(&netns_name);
                let _ = cgroup::remove_tree(&cgroup_path, KILL_TIMEOUT);
                self.shared.release_pod(name);
                return Err(e);
            }
        };
        let pod = Pod::new(PodParts {
            name: name.to_owned(),
            host,
            node,
            ipv4,
            ipv6,
            netns: netns_name,
            host_veth,
            cgroup_path,
            cgroup_id,
            lab_id: id,
            lab: Arc::downgrade(&self.shared),
        });
        lock(&self.pods).insert(name.to_owned(), pod.clone());
        tracing::debug!(lab = id, pod = name, %ipv4, %ipv6, cgroup_id, "pod created");
        Ok(pod)
    }

    /// Adds a hostNetwork pod: its own cgroup, but the node's network
    /// namespace and address, as a Kubernetes pod with `hostNetwork: true`.
    /// A lab has at most one.
    pub fn add_host_network_pod(&self, name: &str) -> Result<Pod> {
        validate_pod_name(name)?;
        let id = self.shared.id;
        let node = netns::node_netns_name(id);
        self.shared.claim_pod(
            name,
            PodRecord {
                host: netns::NODE_HOST,
                netns: node.clone(),
            },
        )?;
        let cgroup_path = self.shared.node_cgroup(1).join(name);
        let cgroup_id =
            match cgroup::create(&cgroup_path).and_then(|_| cgroup::cgroup_id(&cgroup_path)) {
                Ok(cgroup_id) => cgroup_id,
                Err(e) => {
                    let _ = cgroup::remove_tree(&cgroup_path, KILL_TIMEOUT);
                    self.shared.release_pod(name);
                    return Err(e);
                }
            };
        let pod = Pod::new(PodParts {
            name: name.to_owned(),
            host: netns::NODE_HOST,
            node: 1,
            ipv4: netns::ipv4_of(id, netns::NODE_HOST),
            ipv6: netns::ipv6_of(id, netns::NODE_HOST),
            netns: node,
            host_veth: String::new(),
            cgroup_path,
            cgroup_id,
            lab_id: id,
            lab: Arc::downgrade(&self.shared),
        });
        lock(&self.pods).insert(name.to_owned(), pod.clone());
        Ok(pod)
    }

    /// Processes on the node itself, outside any pod: its network namespace
    /// and a cgroup `node-<name>` of their own under the node's (node agents
    /// such as kube-proxy). Teardown stops them with the lab.
    pub fn node_processes(&self, name: &str) -> Result<Pod> {
        self.nth_node_processes(1, name)
    }

    /// [`Lab::node_processes`] on node `node`; the cgroup is
    /// `node<k>-<name>` for nodes after the first.
    pub fn nth_node_processes(&self, node: u8, name: &str) -> Result<Pod> {
        validate_pod_name(name)?;
        if !self.has_node(node)? {
            return Err(LabError::invalid(
                "node number",
                format!("{node}: the lab has no such node (Lab::add_node makes it)"),
            ));
        }
        let id = self.shared.id;
        let group = format!("{}-{name}", netns::node_pod_name(node));
        let cgroup_path = self.shared.node_cgroup(node).join(&group);
        cgroup::create(&cgroup_path)?;
        let cgroup_id = cgroup::cgroup_id(&cgroup_path)?;
        let host = netns::node_host(node);
        Ok(Pod::new(PodParts {
            name: group,
            host,
            node,
            ipv4: netns::ipv4_of(id, host),
            ipv6: netns::ipv6_of(id, host),
            netns: netns::nth_node_netns_name(id, node),
            host_veth: String::new(),
            cgroup_path,
            cgroup_id,
            lab_id: id,
            lab: Arc::downgrade(&self.shared),
        }))
    }

    /// Removes pod `name` now: its processes, network namespace (and veth)
    /// and cgroup; its name and host number are free again, so a new pod
    /// can take its address.
    pub fn remove_pod(&self, name: &str) -> Result<()> {
        let pod = lock(&self.pods).remove(name).ok_or_else(|| {
            LabError::invalid("pod", format!("{name} is not in lab {}", self.id()))
        })?;
        cgroup::kill_all(pod.cgroup_path(), KILL_TIMEOUT)?;
        netns::delete_netns(pod.netns())?;
        cgroup::remove_tree(pod.cgroup_path(), KILL_TIMEOUT)?;
        self.shared.release_pod(name);
        Ok(())
    }

    /// The pod called `name`, if any.
    pub fn pod(&self, name: &str) -> Option<Pod> {
        lock(&self.pods).get(name).cloned()
    }

    /// All pods, by name.
    pub fn pods(&self) -> Vec<Pod> {
        lock(&self.pods).values().cloned().collect()
    }

    /// The lab's CA, created on first use.
    pub fn ca(&self) -> Result<CertAuthority> {
        self.shared.ca()
    }

    /// A client identity (`spiffe://cluster.local/ns/default/sa/<name>`),
    /// created on first use and reused afterwards.
    pub fn client_identity(&self, name: &str) -> Result<Identity> {
        self.shared.client_identity(name)
    }

    /// The server identity of `pod` (SANs: its IPs, its name, `extra_dns`),
    /// created on first use and reused afterwards.
    pub fn server_identity(&self, pod: &Pod, extra_dns: &[&str]) -> Result<Identity> {
        pod.server_identity(extra_dns)
    }

    /// Removes everything now and reports the first failure (Drop does the
    /// same but can only log).
    pub fn teardown(self) -> Result<()> {
        self.shared.teardown()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.shared.teardown() {
            tracing::error!(lab = self.shared.id, error = %e, "lab teardown incomplete; `cargo xtask lab down` removes the rest");
        }
    }
}

fn validate_pod_name(name: &str) -> Result<()> {
    let is_node = name
        .strip_prefix(netns::NODE)
        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()));
    let ok = !is_node
        && !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(LabError::invalid(
            "pod name",
            format!(
                "{name:?} (use 1-40 of a-z, 0-9 and '-', not starting with '-'; `node` and `node<k>` are the nodes')"
            ),
        ))
    }
}
