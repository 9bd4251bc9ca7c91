//! Network plumbing with iproute2: the lab's bridge (which claims its id),
//! its node namespace, one namespace per pod and the veth pair joining each
//! pod to the node. Every name the lab gives starts with `mdl<id>` so
//! leftovers can be found and attributed to a lab later.
//!
//! Pods are routed, not bridged, the way Calico wires them: each pod has its
//! address alone on `eth0` and a default route to a link-local gateway
//! (169.254.1.1, fe80::1) that the node answers for on every pod's veth; the
//! node routes each pod address to that pod's veth. So every packet between
//! pods, and every packet to a Service's cluster IP, passes through the
//! node's network stack, where kube-proxy's DNAT rules live.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Mutex;

use crate::cmd::{self, ip};
use crate::error::{LabError, Result};

/// Prefix of every network object name (`mdl<id>br`, `mdl<id>-<pod>`, `mdl<id>h<host>`).
pub const NAME_PREFIX: &str = "mdl";

pub(crate) fn bridge_name(id: u8) -> String {
    format!("{NAME_PREFIX}{id}br")
}

pub(crate) fn netns_name(id: u8, pod: &str) -> String {
    format!("{NAME_PREFIX}{id}-{pod}")
}

/// The pod name the node's namespace takes (`mdl<id>-node`); no pod may use it.
pub(crate) const NODE: &str = "node";
/// The node's own address (`10.213.<id>.1`): hostNetwork pods have it.
pub(crate) const NODE_HOST: u8 = 1;
/// Host numbers of Services' cluster IPs (`10.213.<id>.200` up).
pub(crate) const SERVICE_HOSTS: std::ops::RangeInclusive<u8> = 200..=249;
/// The host end of the link between this machine's own namespace and the
/// node's (`10.213.<id>.254`, link `mdl<id>h254`): how programs outside the
/// lab (the tests, kubectl, Prometheus) reach pods, as a machine on the
/// cluster network would.
pub(crate) const UPLINK_HOST: u8 = 254;
/// The gateway every pod routes through, answered by the node on each veth.
const GATEWAY_V4: &str = "169.254.1.1";
const GATEWAY_V6: &str = "fe80::1";

pub(crate) fn node_netns_name(id: u8) -> String {
    netns_name(id, NODE)
}

/// The most nodes a lab has: node 1 and nodes 2 to 5 at host numbers 250
/// to 253, between the Services' and the uplink's.
pub const MAX_NODES: u8 = 5;

/// The name a node's namespace takes as a pod (`node` for node 1, `node<k>`).
pub(crate) fn node_pod_name(node: u8) -> String {
    if node == 1 {
        NODE.to_owned()
    } else {
        format!("{NODE}{node}")
    }
}

/// The namespace of node `node` (1 is `mdl<id>-node`).
pub(crate) fn nth_node_netns_name(id: u8, node: u8) -> String {
    netns_name(id, &node_pod_name(node))
}

/// The host number of node `node`'s own address: 1 for node 1, 248 + k
/// for node k.
pub(crate) fn node_host(node: u8) -> u8 {
    if node <= 1 { NODE_HOST } else { 248 + node }
}

pub(crate) fn host_veth_name(id: u8, host: u8) -> String {
    format!("{NAME_PREFIX}{id}h{host}")
}

/// Where iproute2 keeps the named namespace; opening it gives a netns fd.
pub fn netns_path(netns: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(netns)
}

pub(crate) fn ipv4_of(id: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 213, id, host)
}

/// `fd00:213:<id>::<host>` with id and host written in decimal digits, so that
/// `10.213.7.11` and `fd00:213:7::11` are visibly the same pod.
pub(crate) fn ipv6_of(id: u8, host: u8) -> Ipv6Addr {
    let digits_as_hex = |n: u8| u16::from_str_radix(&n.to_string(), 16).unwrap_or(0);
    Ipv6Addr::new(
        0xfd00,
        0x0213,
        digits_as_hex(id),
        0,
        0,
        0,
        0,
        digits_as_hex(host),
    )
}

/// Creates the bridge that claims lab id `id`. `Ok(false)` when a bridge of
/// that name exists already: the id belongs to someone else.
pub(crate) fn create_bridge(id: u8, owner_tag: &str) -> Result<bool> {
    let name = bridge_name(id);
    // The kernel refuses a second link of the same name atomically, which
    // makes link creation the lock that hands out lab ids across processes.
    match ip(&[
        "link",
        "add",
        "name",
        &name,
        "type",
        "bridge",
        // ND multicast must reach every port even though nobody queries MLD.
        "mcast_snooping",
        "0",
        // No STP: ports forward the moment they come up.
        "stp_state",
        "0",
        "forward_delay",
        "0",
        // A host firewall (br_netfilter) must not see or drop pod traffic.
        "nf_call_iptables",
        "0",
        "nf_call_ip6tables",
        "0",
        "nf_call_arptables",
        "0",
    ]) {
        Ok(_) => {}
        Err(e) if cmd::is_exists(&e) => return Ok(false),
        Err(e) => return Err(e),
    }
    ip(&["link", "set", "dev", &name, "alias", owner_tag])?;
    // The host has no address on the lab network: it only switches frames.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    ip(&["link", "set", "dev", &name, "up"])?;
    Ok(true)
}

/// Deletes a link, ignoring one that is already gone.
pub(crate) fn delete_link(name: &str) -> Result<()> {
    match ip(&["link", "del", "dev", name]) {
        Err(e) if !cmd::is_missing(&e) => Err(e),
        _ => Ok(()),
    }
}

// `ip netns add` remounts /run/netns on first use; concurrent first uses in
// one process can stack mounts, so namespace creation is serialised.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Creates the node's namespace: forwarding on, and the node's own addresses.
pub(crate) fn create_node(id: u8) -> Result<()> {
    let ns = node_netns_name(id);
    create_node_namespace(&ns, id, NODE_HOST)?;
    // Cluster IPs need a route for a connection from the node itself to start
    // (kube-proxy's DNAT then reroutes it to a pod), as a node's default route
    // gives them.
    let services = format!("10.213.{id}.192/26");
    let node_v4 = ipv4_of(id, NODE_HOST).to_string();
    ip(&[
        "-n", &ns, "route", "add", &services, "dev", "lo", "src", &node_v4,
    ])?;
    Ok(())
}

/// A namespace with forwarding on and the node's own addresses on its
/// loopback.
fn create_node_namespace(ns: &str, id: u8, host: u8) -> Result<()> {
    {
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        ip(&["netns", "add", ns])?;
    }
    ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
    let settings: Vec<(String, String)> = [
        ("net/ipv4/ip_forward", "1"),
        ("net/ipv6/conf/all/forwarding", "1"),
        ("net/ipv4/conf/all/rp_filter", "0"),
        ("net/ipv4/conf/default/rp_filter", "0"),
        ("net/ipv6/conf/default/accept_dad", "0"),
        ("net/ipv6/conf/all/accept_dad", "0"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    write_sysctls(ns, &settings)?;
    let v4 = format!("{}/32", ipv4_of(id, host));
    let v6 = format!("{}/128", ipv6_of(id, host));
    ip(&["-n", ns, "addr", "add", &v4, "dev", "lo"])?;
    ip(&["-n", ns, "-6", "addr", "add", &v6, "dev", "lo", "nodad"])?;
    Ok(())
}

/// Creates node `node` (2 and up) and links it to node 1 with a veth pair
/// (`n<k>` in node 1, `n1` in node k): node k routes everything through
/// node 1, which routes node k's address (and, as they come, its pods'
/// addresses, [`route_pod_via_node`]) to it. Link-local next hops
/// (`fe80::1` on node 1's end, `fe80::<k>` on node k's) carry IPv6.
pub(crate) fn create_extra_node(id: u8, node: u8) -> Result<()> {
    let hub = node_netns_name(id);
    let ns = nth_node_netns_name(id, node);
    let host = node_host(node);
    create_node_namespace(&ns, id, host)?;
    let (hub_link, node_link) = (format!("n{node}"), "n1".to_owned());
    ip(&[
        "-n", &hub, "link", "add", "name", &hub_link, "type", "veth", "peer", "name", &node_link,
        "netns", &ns,
    ])?;
    let (hub_v4, node_v4) = (
        ipv4_of(id, NODE_HOST).to_string(),
        ipv4_of(id, host).to_string(),
    );
    let node_v6 = ipv6_of(id, host).to_string();
    let node_link_local = format!("fe80::{node}");
    ip(&[
        "-n",
        &hub,
        "-6",
        "addr",
        "add",
        "fe80::1/64",
        "dev",
        &hub_link,
        "nodad",
    ])?;
    ip(&[
        "-n",
        &ns,
        "-6",
        "addr",
        "add",
        &format!("{node_link_local}/64"),
        "dev",
        &node_link,
        "nodad",
    ])?;
    ip(&["-n", &hub, "link", "set", "dev", &hub_link, "up"])?;
    ip(&["-n", &ns, "link", "set", "dev", &node_link, "up"])?;
    ip(&[
        "-n",
        &hub,
        "route",
        "add",
        &format!("{node_v4}/32"),
        "dev",
        &hub_link,
        "src",
        &hub_v4,
    ])?;
    ip(&[
        "-n",
        &hub,
        "-6",
        "route",
        "add",
        &format!("{node_v6}/128"),
        "via",
        &node_link_local,
        "dev",
        &hub_link,
    ])?;
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        &format!("{hub_v4}/32"),
        "dev",
        &node_link,
        "src",
        &node_v4,
    ])?;
    ip(&[
        "-n", &ns, "route", "add", "default", "via", &hub_v4, "dev", &node_link, "src", &node_v4,
    ])?;
    ip(&[
        "-n", &ns, "-6", "route", "add", "default", "via", "fe80::1", "dev", &node_link, "src",
        &node_v6,
    ])?;
    Ok(())
}

/// Routes a pod of node `node` (2 and up) from node 1 through that node.
pub(crate) fn route_pod_via_node(id: u8, node: u8, ipv4: Ipv4Addr, ipv6: Ipv6Addr) -> Result<()> {
    let hub = node_netns_name(id);
    let link = format!("n{node}");
    let via_v4 = ipv4_of(id, node_host(node)).to_string();
    ip(&[
        "-n",
        &hub,
        "route",
        "replace",
        &format!("{ipv4}/32"),
        "via",
        &via_v4,
        "dev",
        &link,
        "onlink",
    ])?;
    ip(&[
        "-n",
        &hub,
        "-6",
        "route",
        "replace",
        &format!("{ipv6}/128"),
        "via",
        &format!("fe80::{node}"),
        "dev",
        &link,
    ])?;
    Ok(())
}

/// Joins this machine's own network namespace to the node's: a veth pair
/// (`mdl<id>h254` here, `uplink` in the node), the address
/// `10.213.<id>.254` here, and routes both ways, so the lab's pods and node
/// are reachable from here (and this address from them). It goes with the
/// node's namespace.
pub(crate) fn create_uplink(id: u8) -> Result<()> {
    let node = node_netns_name(id);
    let here = host_veth_name(id, UPLINK_HOST);
    // This id's bridge is ours, so a link of that name is a leftover of an
    // earlier lab with the id whose namespace the kernel has not freed yet.
    delete_link(&here)?;
    ip(&[
        "link", "add", "name", &here, "type", "veth", "peer", "name", "uplink", "netns", &node,
    ])?;
    let address = ipv4_of(id, UPLINK_HOST).to_string();
    let node_address = ipv4_of(id, NODE_HOST).to_string();
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{here}/disable_ipv6"), "1");
    ip(&["addr", "add", &format!("{address}/32"), "dev", &here])?;
    ip(&["link", "set", "dev", &here, "up"])?;
    ip(&["-n", &node, "link", "set", "dev", "uplink", "up"])?;
    ip(&[
        "-n",
        &node,
        "route",
        "add",
        &format!("{address}/32"),
        "dev",
        "uplink",
        "src",
        &node_address,
    ])?;
    // The node answers for its own address (on its loopback) on any link.
    ip(&[
        "route",
        "add",
        &format!("10.213.{id}.0/24"),
        "via",
        &node_address,
        "dev",
        &here,
        "onlink",
        "src",
        &address,
    ])?;
    Ok(())
}

pub(crate) struct PodLink<'a> {
    pub netns: &'a str,
    pub host_veth: &'a str,
    pub node_netns: &'a str,
    /// The host number of the node's own address (see [`node_host`]).
    pub node_host: u8,
    pub lab_id: u8,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

/// Namespace, veth pair (`eth0` inside, the host end in the node's
/// namespace), addresses and routes of one pod.
pub(crate) fn create_pod_network(link: &PodLink<'_>) -> Result<()> {
    {
        let _guard = NETNS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        ip(&["netns", "add", link.netns])?;
    }
    let (ns, node, veth) = (link.netns, link.node_netns, link.host_veth);
    let node_ips = (
        ipv4_of(link.lab_id, link.node_host),
        ipv6_of(link.lab_id, link.node_host),
    );
    ip(&[
        "-n", node, "link", "add", "name", veth, "type", "veth", "peer", "name", "eth0", "netns",
        ns,
    ])?;
    let v4 = link.ipv4.to_string();
    let v6 = link.ipv6.to_string();
    // The node's end: the gateway addresses, and a host route to the pod.
    let gateway_v6 = format!("{GATEWAY_V6}/64");
    ip(&[
        "-n",
        node,
        "addr",
        "add",
        &format!("{GATEWAY_V4}/32"),
        "dev",
        veth,
    ])?;
    ip(&[
        "-n",
        node,
        "-6",
        "addr",
        "add",
        &gateway_v6,
        "dev",
        veth,
        "nodad",
    ])?;
    ip(&["-n", node, "link", "set", "dev", veth, "up"])?;
    // The node speaks to pods from its own address, as a node does.
    let (node_v4, node_v6) = (node_ips.0.to_string(), node_ips.1.to_string());
    ip(&[
        "-n",
        node,
        "route",
        "add",
        &format!("{v4}/32"),
        "dev",
        veth,
        "src",
        &node_v4,
    ])?;
    ip(&[
        "-n",
        node,
        "-6",
        "route",
        "add",
        &format!("{v6}/128"),
        "dev",
        veth,
        "src",
        &node_v6,
    ])?;
    // The pod's end: its addresses alone, everything else through the node.
    ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
    // No duplicate address detection in the pod: addresses (link-local
    // included) are usable at once instead of after ~1 s of DAD.
    disable_dad(ns)?;
    ip(&["-n", ns, "addr", "add", &format!("{v4}/32"), "dev", "eth0"])?;
    ip(&[
        "-n",
        ns,
        "-6",
        "addr",
        "add",
        &format!("{v6}/128"),
        "dev",
        "eth0",
        "nodad",
    ])?;
    ip(&["-n", ns, "link", "set", "dev", "eth0", "up"])?;
    ip(&[
        "-n", ns, "route", "add", GATEWAY_V4, "dev", "eth0", "scope", "link",
    ])?;
    ip(&[
        "-n", ns, "route", "add", "default", "via", GATEWAY_V4, "dev", "eth0",
    ])?;
    ip(&[
        "-n", ns, "-6", "route", "add", "default", "via", GATEWAY_V6, "dev", "eth0",
    ])?;
    Ok(())
}

/// Writes the pod's IPv6 `accept_dad` sysctls, so addresses are usable at once.
fn disable_dad(netns: &str) -> Result<()> {
    let settings: Vec<(String, String)> = ["default", "all", "eth0"]
        .iter()
        .map(|dev| (format!("net/ipv6/conf/{dev}/accept_dad"), "0".to_owned()))
        .collect();
    write_sysctls(netns, &settings)
}

/// Writes sysctls (`net/ipv4/tcp_tw_reuse` = `1`, …) inside a namespace.
/// /proc/sys/net shows the namespace of the thread that opens it, so a
/// short-lived thread enters the pod's namespace instead of forking
/// `ip netns exec … sysctl`.
pub(crate) fn write_sysctls(netns: &str, settings: &[(String, String)]) -> Result<()> {
    let path = netns_path(netns);
    let file = std::fs::File::open(&path).map_err(|e| LabError::io("opening netns", &path, e))?;
    let settings = settings.to_vec();
    let handle = std::thread::spawn(move || -> std::io::Result<()> {
        // Changes only this thread, which ends right after.
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
        for (key, value) in &settings {
            std::fs::write(format!("/proc/sys/{key}"), value)?;
        }
        Ok(())
    });
    match handle.join() {
        Ok(result) => result.map_err(|e| LabError::io("writing sysctls in", path, e)),
        Err(_) => Err(LabError::invalid(
            "netns",
            format!("thread entering {netns} panicked"),
        )),
    }
}

pub(crate) fn delete_netns(netns: &str) -> Result<()> {
    match ip(&["netns", "del", netns]) {
        Err(e) if !cmd::is_missing(&e) => Err(e),
        _ => Ok(()),
    }
}

/// Names of all named network namespaces.
pub(crate) fn list_netns() -> Result<Vec<String>> {
    let out = ip(&["-j", "netns", "list"])?;
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<serde_json::Value> = serde_json::from_str(&out)
        .map_err(|e| LabError::parse("`ip -j netns list`", e.to_string()))?;
    Ok(entries
        .iter()
        .filter_map(|e| e.get("name").and_then(|n| n.as_str()).map(str::to_owned))
        .collect())
}

/// (name, alias) of every link in the root namespace.
pub(crate) fn list_links() -> Result<Vec<(String, Option<String>)>> {
    let out = ip(&["-j", "link", "show"])?;
    let entries: Vec<serde_json::Value> = serde_json::from_str(&out)
        .map_err(|e| LabError::parse("`ip -j link show`", e.to_string()))?;
    Ok(entries
        .iter()
        .filter_map(|e| {
            let name = e.get("ifname")?.as_str()?.to_owned();
            let alias = e.get("ifalias").and_then(|a| a.as_str()).map(str::to_owned);
            Some((name, alias))
        })
        .collect())
}

/// The lab id in an object name such as `mdl12br`, `mdl12-client`, `mdl12h10`.
pub(crate) fn id_of_name(name: &str) -> Option<u8> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let tail = &rest[digits.len()..];
    if !(tail == "br"
        || tail.starts_with('-')
        || (tail.starts_with('h') && tail[1..].parse::<u8>().is_ok()))
    {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_mirror_each_other() {
        assert_eq!(ipv4_of(7, 11).to_string(), "10.213.7.11");
        assert_eq!(ipv6_of(7, 11).to_string(), "fd00:213:7::11");
        assert_eq!(ipv6_of(250, 254).to_string(), "fd00:213:250::254");
    }

    #[test]
    fn names_fit_and_parse_back() {
        assert!(bridge_name(250).len() <= 15);
        assert!(host_veth_name(250, 254).len() <= 15);
        assert_eq!(id_of_name("mdl12br"), Some(12));
        assert_eq!(id_of_name("mdl12-client"), Some(12));
        assert_eq!(id_of_name("mdl12h10"), Some(12));
        assert_eq!(id_of_name("mdl12x"), None);
        assert_eq!(id_of_name("eth0"), None);
    }
}
