//! kube-proxy's iptables mode in the lab's node namespace: each Service's
//! cluster IP and port DNATed to one of its endpoints, chosen at random with
//! the `statistic` match, exactly the chain layout kube-proxy writes
//! (`KUBE-SERVICES` → `KUBE-SVC-…` → `KUBE-SEP-…`). Pods reach cluster IPs
//! through the node (see [`crate::netns`]), so their connections meet these
//! rules on the way, as on a Kubernetes node.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use crate::cmd;
use crate::error::{LabError, Result};

/// One Service port as kube-proxy programs it.
#[derive(Debug, Clone)]
pub struct ClusterService {
    /// `namespace/name:port`, for the chains' comments.
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// Pod IP and target port of each ready endpoint.
    pub endpoints: Vec<SocketAddrV4>,
}

/// Writes the nat rules of `services` into the node namespace `netns`,
/// replacing whatever kube-proxy rules were there (as kube-proxy's sync does).
pub(crate) fn sync(netns: &str, dir: &Path, services: &[ClusterService]) -> Result<()> {
    let rules = render(services);
    let path = dir.join("kube-proxy.rules");
    std::fs::write(&path, &rules).map_err(|e| LabError::io("writing", &path, e))?;
    let path_arg = path.display().to_string();
    cmd::run(std::process::Command::new("ip").args([
        "netns",
        "exec",
        netns,
        "iptables-restore",
        &path_arg,
    ]))?;
    tracing::debug!(netns, services = services.len(), "kube-proxy rules written");
    Ok(())
}

/// The whole nat table, in `iptables-restore` form. Endpoint `i` of `n` is
/// taken with probability `1 / (n - i)` of what is left, which makes the
/// choice even over all of them.
fn render(services: &[ClusterService]) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    let _ = writeln!(rules, "-A PREROUTING -j KUBE-SERVICES");
    let _ = writeln!(rules, "-A OUTPUT -j KUBE-SERVICES");
    for (s, service) in services.iter().enumerate() {
        let svc_chain = format!("KUBE-SVC-{s}");
        let _ = writeln!(chains, ":{svc_chain} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp --dport {} -j {svc_chain}",
            service.cluster_ip, service.name, service.port
        );
        let n = service.endpoints.len();
        for (e, endpoint) in service.endpoints.iter().enumerate() {
            let sep_chain = format!("KUBE-SEP-{s}-{e}");
            let _ = writeln!(chains, ":{sep_chain} - [0:0]");
            let left = n - e;
            if left > 1 {
                let _ = writeln!(
                    rules,
                    "-A {svc_chain} -m statistic --mode random --probability {:.11} -j {sep_chain}",
                    1.0 / left as f64
                );
            } else {
                let _ = writeln!(rules, "-A {svc_chain} -j {sep_chain}");
            }
            let _ = writeln!(
                rules,
                "-A {sep_chain} -p tcp -m tcp -j DNAT --to-destination {endpoint}"
            );
        }
    }
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n{chains}{rules}COMMIT\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_chosen_evenly_like_kube_proxy() {
        let rules = render(&[ClusterService {
            name: "default/frontend:80".into(),
            cluster_ip: Ipv4Addr::new(10, 213, 7, 200),
            port: 80,
            endpoints: vec![
                "10.213.7.11:8080".parse().unwrap(),
                "10.213.7.12:8080".parse().unwrap(),
                "10.213.7.14:8080".parse().unwrap(),
            ],
        }]);
        assert!(rules.contains("-A KUBE-SERVICES -d 10.213.7.200/32 -p tcp"));
        assert!(rules.contains("--probability 0.33333333333 -j KUBE-SEP-0-0"));
        assert!(rules.contains("--probability 0.50000000000 -j KUBE-SEP-0-1"));
        assert!(rules.contains("-A KUBE-SVC-0 -j KUBE-SEP-0-2"));
        assert!(
            rules.contains(
                "-A KUBE-SEP-0-2 -p tcp -m tcp -j DNAT --to-destination 10.213.7.14:8080"
            )
        );
        assert!(rules.ends_with("COMMIT\n"));
    }
}
