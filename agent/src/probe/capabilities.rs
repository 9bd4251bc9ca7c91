//! The Linux capabilities loading and attaching the probe needs, checked
//! before anything is loaded: a missing one is one clear line at start,
//! not a verifier log or a probe attached half-way. Each is needed (Linux
//! 6.18, each dropped in turn with the check disabled): without `CAP_BPF`
//! creating the first map fails with EPERM; without `CAP_NET_ADMIN` loading
//! the `sock_ops` program does; without `CAP_PERFMON` the verifier refuses
//! it ("pointer arithmetic … prohibited for !root").
//!
//! On kernels from 5.11 the memory of BPF maps is charged to the cgroup,
//! not to `RLIMIT_MEMLOCK`, so `CAP_SYS_RESOURCE` (to raise that limit) is
//! not needed. `CAP_SYS_ADMIN` implies all three below, as the kernel's own
//! checks (`bpf_capable`, `perfmon_capable`, `bpf_net_capable`) accept it.

use std::fmt;

/// One capability the probe needs, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    pub name: &'static str,
    bit: u32,
    pub why: &'static str,
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Every capability the probe needs, in the order a reader meets them.
pub const REQUIRED: [Capability; 3] = [
    Capability {
        name: "CAP_BPF",
        bit: CAP_BPF,
        why: "to create the maps and load the programs",
    },
    Capability {
        name: "CAP_NET_ADMIN",
        bit: CAP_NET_ADMIN,
        why: "to load cgroup_skb and sock_ops programs and attach them to the cgroup",
    },
    Capability {
        name: "CAP_PERFMON",
        bit: CAP_PERFMON,
        why: "for the verifier to accept the programs' pointer arithmetic (refused without it as \
              a Spectre v1 mitigation)",
    },
];

/// The capabilities of [`REQUIRED`] that `effective` (a `CapEff` mask) lacks.
pub fn missing_from(effective: u64) -> Vec<Capability> {
    let has = |bit: u32| effective & (1u64 << bit) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    REQUIRED.into_iter().filter(|cap| !has(cap.bit)).collect()
}

/// This process's effective capabilities, from `/proc/self/status`.
pub fn effective() -> std::io::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_effective(&status).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "/proc/self/status has no readable CapEff line",
        )
    })
}

fn parse_effective(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// What is missing, as the one line the agent stops with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub Vec<Capability>);

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|cap| cap.name).collect();
        let plural = if self.0.len() == 1 { "y" } else { "ies" };
        write!(f, "missing capabilit{plural} {}: needed ", names.join(", "))?;
        for (index, cap) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            if self.0.len() > 1 {
                write!(f, "{} ", cap.name)?;
            }
            f.write_str(cap.why)?;
        }
        f.write_str(
            " — add it to the container's securityContext.capabilities.add (the shipped \
             DaemonSet grants BPF, NET_ADMIN and PERFMON), or run as root",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(bits: &[u32]) -> u64 {
        bits.iter().fold(0, |mask, bit| mask | 1 << bit)
    }

    #[test]
    fn the_shipped_set_is_enough_and_each_one_is_needed() {
        let all = [CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON];
        assert!(missing_from(mask(&all)).is_empty());
        for dropped in all {
            let rest: Vec<u32> = all.into_iter().filter(|bit| *bit != dropped).collect();
            let missing = missing_from(mask(&rest));
            assert_eq!(missing.len(), 1);
            assert_eq!(missing[0].bit, dropped);
        }
    }

    #[test]
    fn sys_admin_implies_the_rest() {
        assert!(missing_from(mask(&[CAP_SYS_ADMIN])).is_empty());
    }

    #[test]
    fn the_message_is_one_line_naming_each_missing_capability() {
        let one = Missing(missing_from(mask(&[CAP_BPF, CAP_NET_ADMIN]))).to_string();
        assert!(one.starts_with("missing capability CAP_PERFMON: needed for the verifier"));
        assert!(!one.contains('\n'));
        let two = Missing(missing_from(mask(&[CAP_NET_ADMIN]))).to_string();
        assert!(two.starts_with("missing capabilities CAP_BPF, CAP_PERFMON: needed CAP_BPF "));
    }

    #[test]
    fn cap_eff_is_read_from_the_status_file() {
        let status = "Name:\tmeshdrift\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\n";
        assert_eq!(
            parse_effective(status),
            Some(mask(&[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]))
        );
        assert_eq!(parse_effective("Name:\tx\n"), None);
    }
}
