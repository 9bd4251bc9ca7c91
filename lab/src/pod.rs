//! A pod: a network namespace with one `eth0` on the lab bridge, an IPv4 and
//! an IPv6 address, and its own cgroup v2 group. Processes started through a
//! pod run in both, so the kernel attributes their sockets to the pod exactly
//! as it would for a Kubernetes pod.

use std::fs::{File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::certs::Identity;
use crate::cmd::describe;
use crate::error::{LabError, Result};
use crate::process::{Output, Process};
use crate::shared::LabShared;

/// How long [`Pod::exec`] lets a command run.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// A handle to one pod of a lab; cheap to clone. It does not keep the lab
/// alive: once the [`crate::Lab`] is dropped, starting processes fails.
#[derive(Clone, Debug)]
pub struct Pod {
    inner: Arc<PodInner>,
}

#[derive(Debug)]
struct PodInner {
    name: String,
    host: u8,
    node: u8,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
    netns: String,
    host_veth: String,
    cgroup_path: PathBuf,
    cgroup_id: u64,
    lab_id: u8,
    lab: Weak<LabShared>,
}

pub(crate) struct PodParts {
    pub name: String,
    pub host: u8,
    /// The lab node it runs on (1 unless the lab has more).
    pub node: u8,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    pub netns: String,
    pub host_veth: String,
    pub cgroup_path: PathBuf,
    pub cgroup_id: u64,
    pub lab_id: u8,
    pub lab: Weak<LabShared>,
}

impl Pod {
    pub(crate) fn new(p: PodParts) -> Pod {
        Pod {
            inner: Arc::new(PodInner {
                name: p.name,
                host: p.host,
                node: p.node,
                ipv4: p.ipv4,
                ipv6: p.ipv6,
                netns: p.netns,
                host_veth: p.host_veth,
                cgroup_path: p.cgroup_path,
                cgroup_id: p.cgroup_id,
                lab_id: p.lab_id,
                lab: p.lab,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The last octet of the IPv4 address (and last group of the IPv6 one).
    pub fn host(&self) -> u8 {
        self.inner.host
    }

    /// The lab node the pod runs on (1 unless [`crate::Lab::add_node`] made more).
    pub fn node(&self) -> u8 {
        self.inner.node
    }

    pub fn ipv4(&self) -> Ipv4Addr {
        self.inner.ipv4
    }

    pub fn ipv6(&self) -> Ipv6Addr {
        self.inner.ipv6
    }

    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.inner.ipv6)
        } else {
            IpAddr::V4(self.inner.ipv4)
        }
    }

    /// Name of the network namespace (`ip netns exec <netns> …`).
    pub fn netns(&self) -> &str {
        &self.inner.netns
    }

    pub fn netns_path(&self) -> PathBuf {
        crate::netns::netns_path(&self.inner.netns)
    }

    /// The host end of the pod's veth pair (on the lab bridge).
    pub fn host_veth(&self) -> &str {
        &self.inner.host_veth
    }

    /// The pod's cgroup v2 directory.
    pub fn cgroup_path(&self) -> &Path {
        &self.inner.cgroup_path
    }

    /// The kernel's id for the pod's cgroup (the directory's inode number).
    pub fn cgroup_id(&self) -> u64 {
        self.inner.cgroup_id
    }

    pub fn lab_id(&self) -> u8 {
        self.inner.lab_id
    }

    pub(crate) fn lab(&self) -> Result<Arc<LabShared>> {
        self.inner.lab.upgrade().ok_or(LabError::TornDown {
            id: self.inner.lab_id,
        })
    }

    /// The pod's server identity (SANs: its IPs, its name, `extra_dns`),
    /// created on first use and reused afterwards.
    pub fn server_identity(&self, extra_dns: &[&str]) -> Result<Identity> {
        self.lab()?.server_identity(
            &self.inner.name,
            &[self.ip(false), self.ip(true)],
            extra_dns,
        )
    }

    /// Sets network sysctls in the pod's namespace, e.g.
    /// `("net/ipv4/tcp_tw_reuse", "1")`.
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> Result<()> {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        crate::netns::write_sysctls(&self.inner.netns, &settings)
    }

    /// Has the kernel process what arrives on the pod's `eth0` on CPU `cpu`
    /// (receive packet steering), whichever CPU sent it: the pod then
    /// answers a moment later than its peer's own system call returns, as a
    /// pod on another machine would.
    pub fn steer_receive_to_cpu(&self, cpu: usize) -> Result<()> {
        let mask = 1u128
            .checked_shl(u32::try_from(cpu).unwrap_or(u32::MAX))
            .ok_or_else(|| LabError::invalid("cpu", cpu.to_string()))?;
        // sysfs shows the namespace of whoever mounts it: `ip netns exec`
        // mounts the pod's.
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.inner.netns, "sh", "-c"])
            .arg(format!(
                "echo {mask:x} > /sys/class/net/eth0/queues/rx-0/rps_cpus"
            ));
        crate::cmd::run(&mut command).map(drop)
    }

    /// `http://<ip>:<port>/` with IPv6 in brackets.
    pub fn url(&self, scheme: &str, v6: bool, port: u16) -> String {
        if v6 {
            format!("{scheme}://[{}]:{port}/", self.inner.ipv6)
        } else {
            format!("{scheme}://{}:{port}/", self.inner.ipv4)
        }
    }

    /// Starts `cmd` inside the pod's network namespace and cgroup. Stdin is
    /// /dev/null; stdout and stderr go to files in the lab directory.
    pub fn spawn(&self, mut cmd: Command) -> Result<Process> {
        let lab = self.lab()?;
        let command = describe(&cmd);
        let program = Path::new(cmd.get_program())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "proc".into());
        let (stdout_path, stderr_path) = lab.log_paths(&self.inner.name, &program);
        let stdout =
            File::create(&stdout_path).map_err(|e| LabError::io("creating", &stdout_path, e))?;
        let stderr =
            File::create(&stderr_path).map_err(|e| LabError::io("creating", &stderr_path, e))?;

        // Both files are opened here, before fork: the child may only make
        // async-signal-safe calls between fork and exec.
        let netns_path = self.netns_path();
        let netns =
            File::open(&netns_path).map_err(|e| LabError::io("opening netns", &netns_path, e))?;
        let procs_path = self.inner.cgroup_path.join("cgroup.procs");
        let procs = OpenOptions::new()
            .write(true)
            .open(&procs_path)
            .map_err(|e| LabError::io("opening", &procs_path, e))?;
        let netns_fd = netns.as_raw_fd();
        let procs_fd = procs.as_raw_fd();
        // SAFETY: the closure only calls setns(2) and write(2), both
        // async-signal-safe, on descriptors that stay open until spawn returns
        // (they are O_CLOEXEC, so the new program does not inherit them).
        unsafe {
            cmd.pre_exec(move || {
                // The descriptors outlive the fork; the child only borrows them.
                let procs = BorrowedFd::borrow_raw(procs_fd);
                let netns = BorrowedFd::borrow_raw(netns_fd);
                // Writing "0" moves the writing process itself; doing it before
                // exec means not one instruction of the program runs elsewhere.
                if nix::unistd::write(procs, b"0")? != 1 {
                    return Err(std::io::Error::other("short write to cgroup.procs"));
                }
                nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                Ok(())
            });
        }
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);

        // Held across fork so teardown cannot empty the cgroup in between and
        // miss this child.
        let guard = lab.spawn_guard()?;
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
        drop(guard);
        drop((netns, procs));
        tracing::debug!(pod = %self.inner.name, pid = child.id(), %command, "spawned");
        Ok(Process::new(
            child,
            command,
            self.inner.name.clone(),
            stdout_path,
            stderr_path,
        ))
    }

    /// Runs `cmd` in the pod to completion (killed after `timeout`) and
    /// returns its output whatever the exit code.
    pub fn run(&self, cmd: Command, timeout: Duration) -> Result<Output> {
        self.spawn(cmd)?.wait_output(timeout)
    }

    /// Like [`Pod::run`], but a non-zero exit is an error with its stderr.
    pub fn run_ok(&self, cmd: Command, timeout: Duration) -> Result<Output> {
        self.run(cmd, timeout)?.ok()
    }

    /// `exec(&["ip", "addr"])`: run argv in the pod, must succeed within 30 s.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        let (program, args) = argv
            .split_first()
            .ok_or_else(|| LabError::invalid("command", "empty argv"))?;
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.run_ok(cmd, DEFAULT_RUN_TIMEOUT)
    }
}
