//! The index kept up to date one change at a time answers every lookup as
//! one built from scratch from the final objects: pods (added, relabelled,
//! moved to another IP, finished, deleted), Services (selectors, named and
//! numeric target ports, cluster IPs) and EndpointSlices, in any order,
//! with IPs two pods claim at once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use meshdrift::inventory::Index;
use meshdrift::model::pod::{Container, ContainerPort, PodMeta, PodSpec, PodStatus};
use meshdrift::model::{Change, Kind, Labels, Object, ObjectKey, Objects, Pod};
use proptest::prelude::*;
use serde_json::json;

const NAMESPACES: [&str; 2] = ["a", "b"];
const IPS: [&str; 4] = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"];
const PORTS: [u16; 3] = [80, 8080, 9090];

#[derive(Debug, Clone)]
enum Op {
    Pod {
        ns: usize,
        name: usize,
        ip: usize,
        app: usize,
        version: usize,
        finished: bool,
        host_network: bool,
    },
    DeletePod {
        ns: usize,
        name: usize,
    },
    Service {
        ns: usize,
        name: usize,
        selector: usize,
        named_target: bool,
        vip: bool,
    },
    DeleteService {
        ns: usize,
        name: usize,
    },
    Slice {
        ns: usize,
        name: usize,
        service: usize,
        ips: Vec<usize>,
        pod: Option<usize>,
    },
    DeleteSlice {
        ns: usize,
        name: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..6usize, 0..4usize, 0..2usize, 0..2usize, prop::bool::weighted(0.15), prop::bool::weighted(0.1))
            .prop_map(|(ns, name, ip, app, version, finished, host_network)| Op::Pod { ns, name, ip, app, version, finished, host_network }),
        2 => (0..2usize, 0..6usize).prop_map(|(ns, name)| Op::DeletePod { ns, name }),
        3 => (0..2usize, 0..3usize, 0..4usize, any::<bool>(), any::<bool>())
            .prop_map(|(ns, name, selector, named_target, vip)| Op::Service { ns, name, selector, named_target, vip }),
        1 => (0..2usize, 0..3usize).prop_map(|(ns, name)| Op::DeleteService { ns, name }),
        2 => (0..2usize, 0..2usize, 0..3usize, prop::collection::vec(0..4usize, 0..3), prop::option::of(0..6usize))
            .prop_map(|(ns, name, service, ips, pod)| Op::Slice { ns, name, service, ips, pod }),
        1 => (0..2usize, 0..2usize).prop_map(|(ns, name)| Op::DeleteSlice { ns, name }),
    ]
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn selector(n: usize) -> Option<Labels> {
    match n {
        0 => Some(labels(&[("app", "x")])),
        1 => Some(labels(&[("app", "y")])),
        2 => Some(labels(&[("app", "x"), ("version", "v1")])),
        _ => None,
    }
}

fn pod(
    ns: usize,
    name: usize,
    ip: usize,
    app: usize,
    version: usize,
    finished: bool,
    host_network: bool,
) -> Pod {
    Pod {
        metadata: PodMeta {
            name: Some(format!("p{name}")),
            namespace: Some(NAMESPACES[ns].to_owned()),
            labels: labels(&[("app", ["x", "y"][app]), ("version", ["v1", "v2"][version])]),
            ..PodMeta::default()
        },
        spec: PodSpec {
            containers: vec![Container {
                name: "app".to_owned(),
                ports: vec![ContainerPort {
                    name: Some("http".to_owned()),
                    container_port: 8080 + i32::try_from(name).unwrap(),
                }],
            }],
            node_name: None,
            host_network: Some(host_network),
        },
        status: PodStatus {
            phase: Some(if finished { "Succeeded" } else { "Running" }.to_owned()),
            pod_ip: Some(IPS[ip].to_owned()),
            pod_ips: Vec::new(),
        },
    }
}

fn service(ns: usize, name: usize, selector_n: usize, named_target: bool, vip: bool) -> Service {
    let mut spec = json!({
        "ports": [{"name": "http", "port": 80,
                   "targetPort": if named_target { json!("http") } else { json!(8080) }}],
    });
    if let Some(selector) = selector(selector_n) {
        spec["selector"] = json!(selector);
    }
    if vip {
        spec["clusterIP"] = json!(format!("10.96.{ns}.{name}"));
    }
    serde_json::from_value(json!({
        "metadata": {"name": format!("s{name}"), "namespace": NAMESPACES[ns]},
        "spec": spec,
    }))
    .unwrap()
}

fn slice(
    ns: usize,
    name: usize,
    service: usize,
    ips: &[usize],
    pod: Option<usize>,
) -> EndpointSlice {
    let endpoints: Vec<_> = ips
        .iter()
        .map(|&ip| {
            let mut endpoint =
                json!({"addresses": [IPS[ip]], "conditions": {"ready": ip % 2 == 0}});
            if let Some(pod) = pod {
                endpoint["targetRef"] = json!({"kind": "Pod", "name": format!("p{pod}")});
            }
            endpoint
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": format!("sl{name}"), "namespace": NAMESPACES[ns],
                     "labels": {"kubernetes.io/service-name": format!("s{service}")}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 9090}],
    }))
    .unwrap()
}

/// The objects that exist after the operations, and the changes that told.
#[derive(Default)]
struct World {
    pods: BTreeMap<ObjectKey, Pod>,
    services: BTreeMap<ObjectKey, Service>,
    slices: BTreeMap<ObjectKey, EndpointSlice>,
}

impl World {
    fn change(&mut self, op: &Op) -> Change {
        let key = |ns: usize, name: String| ObjectKey::new(NAMESPACES[ns], name);
        match op.clone() {
            Op::Pod {
                ns,
                name,
                ip,
                app,
                version,
                finished,
                host_network,
            } => {
                let pod = pod(ns, name, ip, app, version, finished, host_network);
                self.pods.insert(key(ns, format!("p{name}")), pod.clone());
                Change::Applied(Object::Pod(Box::new(pod)))
            }
            Op::DeletePod { ns, name } => {
                self.pods.remove(&key(ns, format!("p{name}")));
                Change::Deleted(Kind::Pod, key(ns, format!("p{name}")))
            }
            Op::Service {
                ns,
                name,
                selector,
                named_target,
                vip,
            } => {
                let service = service(ns, name, selector, named_target, vip);
                self.services
                    .insert(key(ns, format!("s{name}")), service.clone());
                Change::Applied(Object::Service(Box::new(service)))
            }
            Op::DeleteService { ns, name } => {
                self.services.remove(&key(ns, format!("s{name}")));
                Change::Deleted(Kind::Service, key(ns, format!("s{name}")))
            }
            Op::Slice {
                ns,
                name,
                service,
                ips,
                pod,
            } => {
                let slice = slice(ns, name, service, &ips, pod);
                self.slices
                    .insert(key(ns, format!("sl{name}")), slice.clone());
                Change::Applied(Object::EndpointSlice(Box::new(slice)))
            }
            Op::DeleteSlice { ns, name } => {
                self.slices.remove(&key(ns, format!("sl{name}")));
                Change::Deleted(Kind::EndpointSlice, key(ns, format!("sl{name}")))
            }
        }
    }

    fn objects(&self) -> Objects {
        Objects {
            pods: self.pods.values().cloned().collect(),
            services: self.services.values().cloned().collect(),
            endpoint_slices: self.slices.values().cloned().collect(),
            ..Objects::default()
        }
    }
}

/// Everything the index answers, in terms that do not depend on pod ids.
fn answers(index: &Index) -> Vec<String> {
    let mut out = Vec::new();
    let key_of = |id| index.pod(id).map(|p| p.key());
    for ip in IPS {
        let ip: IpAddr = ip.parse().unwrap();
        out.push(format!(
            "ip {ip}: {:?}",
            index.pod_by_ip(ip).map(|p| p.key())
        ));
        for port in PORTS {
            let at = SocketAddr::new(ip, port);
            out.push(format!(
                "endpoint {at}: {:?}",
                index.service_for_endpoint(at)
            ));
        }
    }
    for ns in NAMESPACES {
        for name in 0..6 {
            let pod = index.pod_by_name(ns, &format!("p{name}"));
            out.push(format!("pod {ns}/p{name}: {pod:?}"));
        }
        for n in 0..4 {
            let selector = selector(n).unwrap_or_default();
            let mut keys: Vec<_> = index
                .pods_matching(Some(ns), &selector)
                .into_iter()
                .map(key_of)
                .collect();
            keys.sort();
            out.push(format!("matching {ns} {selector:?}: {keys:?}"));
        }
        for name in 0..3 {
            let fqdn = format!("s{name}.{ns}.svc.cluster.local");
            let Some(service) = index.service(&fqdn) else {
                out.push(format!("service {fqdn}: none"));
                continue;
            };
            let mut endpoints: Vec<_> = service
                .endpoints
                .iter()
                .map(|e| {
                    (
                        e.ip,
                        e.ready,
                        index.endpoint_pod(e).map(|p| p.key()),
                        e.ports.to_vec(),
                    )
                })
                .collect();
            endpoints.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
            out.push(format!(
                "service {fqdn}: {:?} {:?} {:?}",
                service.endpoints_from, service.cluster_ips, endpoints
            ));
            for ip in &service.cluster_ips {
                out.push(format!(
                    "vip {ip}: {}",
                    index.is_service_vip(SocketAddr::new(*ip, 80))
                ));
            }
        }
    }
    let mut services: Vec<_> = index.services().map(|s| s.fqdn.clone()).collect();
    services.sort();
    out.push(format!("services {services:?}"));
    out.push(format!("warnings {:?}", index.warnings()));
    out.push(format!("counts {:?}", index.counts()));
    out.push(format!(
        "namespaces {:?}",
        index.namespaces().collect::<Vec<_>>()
    ));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn an_index_kept_up_to_date_answers_as_one_built_from_scratch(ops in prop::collection::vec(op(), 1..60)) {
        let mut world = World::default();
        let mut index = Index::default();
        for op in &ops {
            let change = world.change(op);
            index.apply(&change);
        }
        let scratch = Index::build(&world.objects());
        let (kept, built) = (answers(&index), answers(&scratch));
        for (kept, built) in kept.iter().zip(&built) {
            prop_assert_eq!(kept, built);
        }
        prop_assert_eq!(kept.len(), built.len());
    }

    #[test]
    fn a_relist_leaves_what_the_list_names(ops in prop::collection::vec(op(), 1..40), keep in prop::collection::vec(any::<bool>(), 6)) {
        let mut world = World::default();
        let mut index = Index::default();
        for op in &ops {
            let change = world.change(op);
            index.apply(&change);
        }
        // A relist of pods that names only some of them.
        index.apply(&Change::Listing(Kind::Pod));
        let listed: Vec<(ObjectKey, Pod)> = world
            .pods
            .iter()
            .enumerate()
            .filter(|(i, _)| keep[i % keep.len()])
            .map(|(_, (k, p))| (k.clone(), p.clone()))
            .collect();
        world.pods = listed.iter().cloned().collect();
        for (_, pod) in listed {
            index.apply(&Change::Applied(Object::Pod(Box::new(pod))));
        }
        index.apply(&Change::Listed(Kind::Pod));
        let scratch = Index::build(&world.objects());
        prop_assert_eq!(answers(&index), answers(&scratch));
    }
}

/// A pod removed and its address given to a pod of another workload: the
/// address answers for the pod that held it at each moment, by the API
/// server's creation times (the removal reaches the agent later than that).
#[test]
fn an_address_answers_for_the_pod_that_held_it_at_the_time() {
    let pod = |name: &str, app: &str, created: &str| {
        let mut labels = Labels::new();
        labels.insert("app".to_owned(), app.to_owned());
        Pod {
            metadata: PodMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                labels,
                creation_timestamp: Some(created.to_owned()),
                ..PodMeta::default()
            },
            spec: PodSpec {
                containers: vec![Container {
                    name: "app".to_owned(),
                    ..Container::default()
                }],
                ..PodSpec::default()
            },
            status: PodStatus {
                pod_ip: Some("10.0.0.9".to_owned()),
                phase: Some("Running".to_owned()),
                ..PodStatus::default()
            },
        }
    };
    // 2026-12-07T10:00:00Z and ten seconds later.
    let (t_old, t_new) = (1_796_637_600.0, 1_796_637_610.0);
    let ip: IpAddr = "10.0.0.9".parse().unwrap();
    let mut index = Index::default();
    index.apply(&Change::Applied(Object::Pod(Box::new(pod(
        "old-7f9",
        "old",
        "2026-12-07T10:00:00Z",
    )))));
    index.apply(&Change::Deleted(
        Kind::Pod,
        ObjectKey::new("default", "old-7f9"),
    ));
    index.apply(&Change::Applied(Object::Pod(Box::new(pod(
        "new-2c1",
        "new",
        "2026-12-07T10:00:10Z",
    )))));
    let name_at = |at| index.pod_by_ip_at(ip, at).map(|p| p.name.to_string());
    // A connection made while the old pod held the address is its own.
    assert_eq!(name_at(t_old + 5.0).as_deref(), Some("old-7f9"));
    assert_eq!(name_at(t_new).as_deref(), Some("new-2c1"));
    assert_eq!(name_at(t_new + 60.0).as_deref(), Some("new-2c1"));
    // Before either existed: the pod holding the address now.
    assert_eq!(name_at(t_old - 60.0).as_deref(), Some("new-2c1"));
    assert_eq!(
        index.pod_by_ip(ip).map(|p| p.name.to_string()).as_deref(),
        Some("new-2c1")
    );
}
