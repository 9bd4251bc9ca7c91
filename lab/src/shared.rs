//! What a lab's pods and servers share with it: its id, names and work
//! directory, its certificates, the record of each pod's network parts, and
//! the teardown that removes them. The [`crate::Lab`] owns it; pods hold it
//! weakly, so a pod handle never keeps a lab alive.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::certs::{CertAuthority, Identity};
use crate::cgroup;
use crate::error::{LabError, Result};
use crate::netns;

/// Prefix of the lab's cgroup (`<cgroup2 root>/meshdrift-lab-<id>`).
pub const CGROUP_PREFIX: &str = "meshdrift-lab-";
/// Prefix of the lab's work directory (`<tmp>/mdlab-<id>-<pid>`).
pub const DIR_PREFIX: &str = "mdlab-";
/// Set to `1` to keep the work directory (configs, certs, logs) after drop.
pub const KEEP_ENV: &str = "MESHDRIFT_LAB_KEEP";

pub(crate) const KILL_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn require_root() -> Result<()> {
    let uid = nix::unistd::geteuid();
    if !uid.is_root() {
        return Err(LabError::NotRoot { uid: uid.as_raw() });
    }
    Ok(())
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop cleanup.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The name of node `node`'s cgroup subtree under the lab's group: its
/// Node name, `node-<k>`.
pub(crate) fn node_cgroup_name(node: u8) -> String {
    format!("node-{node}")
}

/// The parts of a pod that teardown removes.
#[derive(Debug, Clone)]
pub(crate) struct PodRecord {
    pub host: u8,
    pub netns: String,
}

#[derive(Debug)]
pub(crate) struct LabShared {
    pub(crate) id: u8,
    pub(crate) name: String,
    pub(crate) bridge: String,
    pub(crate) dir: PathBuf,
    pub(crate) cgroup: PathBuf,
    state: Mutex<LabState>,
    seq: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct LabState {
    pods: BTreeMap<String, PodRecord>,
    torn_down: bool,
    ca: Option<CertAuthority>,
    clients: BTreeMap<String, Identity>,
    servers: BTreeMap<String, Identity>,
    uplink: bool,
    /// Whether each node's pods and processes live in a subtree of their
    /// own (`<lab cgroup>/node-<k>/…`); see [`LabShared::node_cgroup`].
    per_node_cgroups: bool,
}

impl LabShared {
    /// True the first time: the caller then creates the uplink.
    pub(crate) fn take_uplink(&self) -> bool {
        !std::mem::replace(&mut lock(&self.state).uplink, true)
    }

    pub(crate) fn new(id: u8, name: &str, dir: PathBuf, cgroup: PathBuf) -> Self {
        Self {
            id,
            name: name.to_owned(),
            bridge: netns::bridge_name(id),
            dir,
            cgroup,
            state: Mutex::new(LabState::default()),
            seq: AtomicU64::new(0),
        }
    }

    /// The cgroup that node `node`'s pods and processes are children of:
    /// the lab's own group in a single-node lab, `<lab cgroup>/node-<k>`
    /// once the lab has more nodes, so an agent attached there sees only
    /// that node's sockets.
    pub(crate) fn node_cgroup(&self, node: u8) -> PathBuf {
        if lock(&self.state).per_node_cgroups {
            self.cgroup.join(node_cgroup_name(node))
        } else {
            self.cgroup.clone()
        }
    }

    pub(crate) fn has_per_node_cgroups(&self) -> bool {
        lock(&self.state).per_node_cgroups
    }

    /// Switches the lab to a subtree per node (node 1's and node `node`'s
    /// are made now). Only a lab without a pod or node process may switch: a group
    /// cannot move processes between subtrees behind their owners' backs.
    pub(crate) fn use_per_node_cgroups(&self, node: u8) -> Result<()> {
        let mut state = self.lock_live()?;
        if !state.per_node_cgroups {
            let occupied = cgroup::child_groups(&self.cgroup);
            if !occupied.is_empty() {
                return Err(LabError::invalid(
                    "lab nodes",
                    format!(
                        "lab {} already has groups {occupied:?}: add its nodes before its first pod, so each node's pods get a cgroup subtree of their own",
                        self.id
                    ),
                ));
            }
            state.per_node_cgroups = true;
        }
        for node in [1, node] {
            cgroup::create(&self.cgroup.join(node_cgroup_name(node)))?;
        }
        Ok(())
    }

    fn lock_live(&self) -> Result<MutexGuard<'_, LabState>> {
        let state = lock(&self.state);
        if state.torn_down {
            return Err(LabError::TornDown { id: self.id });
        }
        Ok(state)
    }

    pub(crate) fn is_torn_down(&self) -> bool {
        lock(&self.state).torn_down
    }

    /// Held while forking a pod process so teardown waits for it.
    pub(crate) fn spawn_guard(&self) -> Result<MutexGuard<'_, LabState>> {
        self.lock_live()
    }

    /// Host numbers taken by pods.
    pub(crate) fn used_hosts(&self) -> Result<Vec<u8>> {
        Ok(self.lock_live()?.pods.values().map(|p| p.host).collect())
    }

    /// Records a pod about to be built, refusing a taken name or host number.
    /// Held under the state lock, so two pods cannot claim one host.
    pub(crate) fn claim_pod(&self, name: &str, record: PodRecord) -> Result<()> {
        let mut state = self.lock_live()?;
        if state.pods.contains_key(name) {
            return Err(LabError::invalid(
                "pod name",
                format!("{name} already exists in lab {}", self.id),
            ));
        }
        if state.pods.values().any(|p| p.host == record.host) {
            return Err(LabError::invalid(
                "pod host number",
                format!("{} already used in lab {}", record.host, self.id),
            ));
        }
        state.pods.insert(name.to_owned(), record);
        Ok(())
    }

    /// Forgets a pod whose build failed (its parts are already undone).
    pub(crate) fn release_pod(&self, name: &str) {
        lock(&self.state).pods.remove(name);
    }

    /// Fresh stdout/stderr file paths for a process.
    pub(crate) fn log_paths(&self, pod: &str, program: &str) -> (PathBuf, PathBuf) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let base = self.dir.join("logs").join(format!("{pod}.{program}.{n}"));
        (
            base.with_extension(format!("{n}.out")),
            base.with_extension(format!("{n}.err")),
        )
    }

    /// A fresh directory for one server's files (`nginx-<pod>-<n>` …).
    pub(crate) fn instance_dir(&self, kind: &str, pod: &str) -> Result<PathBuf> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let dir = self.dir.join(format!("{kind}-{pod}-{n}"));
        std::fs::create_dir_all(&dir).map_err(|e| LabError::io("creating", &dir, e))?;
        Ok(dir)
    }

    pub(crate) fn ca(&self) -> Result<CertAuthority> {
        let mut state = self.lock_live()?;
        if let Some(ca) = &state.ca {
            return Ok(ca.clone());
        }
        let ca = CertAuthority::create(
            &self.dir.join("certs"),
            &format!("meshdrift lab {} CA", self.id),
        )?;
        state.ca = Some(ca.clone());
        Ok(ca)
    }

    pub(crate) fn client_identity(&self, name: &str) -> Result<Identity> {
        let ca = self.ca()?;
        let mut state = self.lock_live()?;
        if let Some(id) = state.clients.get(name) {
            return Ok(id.clone());
        }
        let identity = ca.issue_client(&format!("client-{name}"), "default", name)?;
        state.clients.insert(name.to_owned(), identity.clone());
        Ok(identity)
    }

    /// The server identity of pod `name` (SANs: its IPs, its name,
    /// `extra_dns`), created on first use and reused afterwards.
    pub(crate) fn server_identity(
        &self,
        name: &str,
        ips: &[IpAddr],
        extra_dns: &[&str],
    ) -> Result<Identity> {
        let ca = self.ca()?;
        let mut state = self.lock_live()?;
        if let Some(id) = state.servers.get(name) {
            return Ok(id.clone());
        }
        let mut dns = vec![name.to_owned()];
        dns.extend(extra_dns.iter().map(|d| d.to_string()));
        let identity = ca.issue_server(&format!("server-{name}"), &dns, ips)?;
        state.servers.insert(name.to_owned(), identity.clone());
        Ok(identity)
    }

    /// Idempotent: kills every process in the lab's cgroups, then removes
    /// namespaces, veths, cgroups and the work dir, and the bridge last (it is
    /// what holds the id, so the id is free only once everything is gone).
    pub(crate) fn teardown(&self) -> Result<()> {
        let pods: Vec<PodRecord> = {
            let mut state = lock(&self.state);
            if state.torn_down {
                return Ok(());
            }
            state.torn_down = true;
            std::mem::take(&mut state.pods).into_values().collect()
        };
        tracing::info!(lab = self.id, "tearing down lab");
        let mut first_error: Option<LabError> = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                tracing::warn!(lab = self.id, error = %e, "teardown step failed");
                first_error.get_or_insert(e);
            }
        };
        note(cgroup::kill_all(&self.cgroup, KILL_TIMEOUT));
        for pod in &pods {
            note(netns::delete_netns(&pod.netns));
        }
        // The uplink is this machine's link: deleted here and now, since the
        // kernel frees a deleted namespace's links later, and a lab reusing
        // this id at once would find its name taken. The pods' veths go
        // with the node's namespace.
        note(netns::delete_link(&netns::host_veth_name(
            self.id,
            netns::UPLINK_HOST,
        )));
        note(netns::delete_netns(&netns::node_netns_name(self.id)));
        note(cgroup::remove_tree(&self.cgroup, KILL_TIMEOUT));
        if std::env::var(KEEP_ENV).as_deref() == Ok("1") {
            tracing::info!(dir = %self.dir.display(), "keeping lab directory ({KEEP_ENV}=1)");
        } else {
            note(
                std::fs::remove_dir_all(&self.dir)
                    .or_else(|e| {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            Ok(())
                        } else {
                            Err(e)
                        }
                    })
                    .map_err(|e| LabError::io("removing", &self.dir, e)),
            );
        }
        note(netns::delete_link(&self.bridge));
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
