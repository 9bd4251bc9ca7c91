//! The lab: one bridge, one work directory and one parent cgroup, owning the
//! pods built on them. Dropping it removes everything it created.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, Weak};
use std::time::Duration;

use crate::certs::{CertAuthority, Identity};
use crate::cgroup;
use crate::error::{LabError, Result};
use crate::netns::{self, PodLink};
use crate::pod::{Pod, PodParts};
use crate::stale;

/// Lab ids are the third octet of the IPv4 subnet.
pub const MAX_LAB_ID: u8 = 250;
/// Prefix of the lab's cgroup (`<cgroup2 root>/meshdrift-lab-<id>`).
pub const CGROUP_PREFIX: &str = "meshdrift-lab-";
/// Prefix of the lab's work directory (`<tmp>/mdlab-<id>-<pid>`).
pub const DIR_PREFIX: &str = "mdlab-";
/// Set to `1` to keep the work directory (configs, certs, logs) after drop.
pub const KEEP_ENV: &str = "MESHDRIFT_LAB_KEEP";

const FIRST_HOST: u8 = 10;
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// A set of pods on one bridge. See the crate docs for an example.
#[derive(Debug)]
pub struct Lab {
    shared: Arc<LabShared>,
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
    pods: BTreeMap<String, Pod>,
    torn_down: bool,
    ca: Option<CertAuthority>,
    clients: BTreeMap<String, Identity>,
    servers: BTreeMap<String, Identity>,
}

/// Labs alive in this process, for the signal hook.
static LIVE: Mutex<Vec<Weak<LabShared>>> = Mutex::new(Vec::new());
static STALE_SWEEP: Once = Once::new();

pub(crate) fn require_root() -> Result<()> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        return Err(LabError::NotRoot { uid });
    }
    Ok(())
}

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
            let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{id}-{}", std::process::id()));
            let shared = Arc::new(LabShared {
                id,
                name: name.to_owned(),
                bridge: netns::bridge_name(id),
                dir: dir.clone(),
                cgroup: cgroup_path,
                state: Mutex::new(LabState::default()),
                seq: AtomicU64::new(0),
            });
            // From here on Drop cleans up whatever exists.
            let lab = Lab { shared };
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("logs"))
                .map_err(|e| LabError::io("creating", &dir, e))?;
            lock(&LIVE).push(Arc::downgrade(&lab.shared));
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

    /// Name of the Linux bridge joining the pods.
    pub fn bridge(&self) -> &str {
        &self.shared.bridge
    }

    /// Work directory: configs, certificates, logs, pid files.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The lab's parent cgroup; every pod's cgroup is a child of it.
    pub fn cgroup_path(&self) -> &Path {
        &self.shared.cgroup
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
        let host = {
            let state = self.shared.lock_live()?;
            let used: Vec<u8> = state.pods.values().map(|p| p.host()).collect();
            (FIRST_HOST..=254)
                .find(|h| !used.contains(h))
                .ok_or_else(|| LabError::invalid("pod", "no host numbers left in the lab's /24"))?
        };
        self.add_pod_at(name, host)
    }

    /// Adds a pod with the host part `host` (`10.213.<id>.<host>`).
    pub fn add_pod_at(&self, name: &str, host: u8) -> Result<Pod> {
        validate_pod_name(name)?;
        if host < 2 || host == 255 {
            return Err(LabError::invalid(
                "pod host number",
                format!("{host} (use 2..=254)"),
            ));
        }
        let id = self.shared.id;
        let mut state = self.shared.lock_live()?;
        if state.pods.contains_key(name) {
            return Err(LabError::invalid(
                "pod name",
                format!("{name} already exists in lab {id}"),
            ));
        }
        if state.pods.values().any(|p| p.host() == host) {
            return Err(LabError::invalid(
                "pod host number",
                format!("{host} already used in lab {id}"),
            ));
        }
        let netns_name = netns::netns_name(id, name);
        let host_veth = netns::host_veth_name(id, host);
        let cgroup_path = self.shared.cgroup.join(name);
        let ipv4 = netns::ipv4_of(id, host);
        let ipv6 = netns::ipv6_of(id, host);
        let build = || -> Result<u64> {
            cgroup::create(&cgroup_path)?;
            netns::create_pod_network(&PodLink {
                netns: &netns_name,
                host_veth: &host_veth,
                bridge: &self.shared.bridge,
                ipv4,
                ipv6,
            })?;
            cgroup::cgroup_id(&cgroup_path)
        };
        let cgroup_id = match build() {
            Ok(cgroup_id) => cgroup_id,
            Err(e) => {
                // Undo the half-built pod so the lab stays usable.
                let _ = netns::delete_netns(&netns_name);
                let _ = netns::delete_link(&host_veth);
                let _ = cgroup::remove_tree(&cgroup_path, KILL_TIMEOUT);
                return Err(e);
            }
        };
        let pod = Pod::new(PodParts {
            name: name.to_owned(),
            host,
            ipv4,
            ipv6,
            netns: netns_name,
            host_veth,
            cgroup_path,
            cgroup_id,
            lab_id: id,
            lab: Arc::downgrade(&self.shared),
        });
        state.pods.insert(name.to_owned(), pod.clone());
        tracing::debug!(lab = id, pod = name, %ipv4, %ipv6, cgroup_id, "pod created");
        Ok(pod)
    }

    /// The pod called `name`, if any.
    pub fn pod(&self, name: &str) -> Option<Pod> {
        lock(&self.shared.state).pods.get(name).cloned()
    }

    /// All pods, by name.
    pub fn pods(&self) -> Vec<Pod> {
        lock(&self.shared.state).pods.values().cloned().collect()
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
        self.shared.server_identity(pod, extra_dns)
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
    let ok = !name.is_empty()
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
            format!("{name:?} (use 1-40 of a-z, 0-9 and '-', not starting with '-')"),
        ))
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop cleanup.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Tears down every lab of this process (the signal hook's job).
pub(crate) fn teardown_all_live() {
    let labs: Vec<Arc<LabShared>> = lock(&LIVE).iter().filter_map(Weak::upgrade).collect();
    for lab in labs {
        if let Err(e) = lab.teardown() {
            tracing::error!(lab = lab.id, error = %e, "lab teardown incomplete");
        }
    }
}

/// Ids of labs alive in this process (never swept as stale).
pub(crate) fn live_ids() -> Vec<u8> {
    lock(&LIVE)
        .iter()
        .filter_map(Weak::upgrade)
        .map(|l| l.id)
        .collect()
}

impl LabShared {
    fn lock_live(&self) -> Result<MutexGuard<'_, LabState>> {
        let state = lock(&self.state);
        if state.torn_down {
            return Err(LabError::TornDown { id: self.id });
        }
        Ok(state)
    }

    /// Held while forking a pod process so teardown waits for it.
    pub(crate) fn spawn_guard(&self) -> Result<MutexGuard<'_, LabState>> {
        self.lock_live()
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

    pub(crate) fn server_identity(&self, pod: &Pod, extra_dns: &[&str]) -> Result<Identity> {
        let ca = self.ca()?;
        let mut state = self.lock_live()?;
        if let Some(id) = state.servers.get(pod.name()) {
            return Ok(id.clone());
        }
        let mut dns = vec![pod.name().to_owned()];
        dns.extend(extra_dns.iter().map(|d| d.to_string()));
        let identity = ca.issue_server(
            &format!("server-{}", pod.name()),
            &dns,
            &[pod.ip(false), pod.ip(true)],
        )?;
        state
            .servers
            .insert(pod.name().to_owned(), identity.clone());
        Ok(identity)
    }

    /// Idempotent: kills every process in the lab's cgroups, then removes
    /// namespaces, veths, cgroups and the work dir, and the bridge last (it is
    /// what holds the id, so the id is free only once everything is gone).
    pub(crate) fn teardown(&self) -> Result<()> {
        let pods: Vec<Pod> = {
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
            note(netns::delete_netns(pod.netns()));
            note(netns::delete_link(pod.host_veth()));
        }
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
        lock(&LIVE).retain(|w| w.upgrade().is_some_and(|l| l.id != self.id));
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
