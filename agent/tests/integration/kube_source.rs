//! The kube source against a stand-in API server speaking the real
//! list/watch protocol, seen as the agent keeps it: the first whole load,
//! then each change applied in place. Initial lists, watch events, missing
//! Istio CRDs, expired and ended watches, and the pace of updates.

use std::path::Path;
use std::time::Duration;

use crate::support::kube::*;
use meshdrift::attribution::Mesh;
use meshdrift::inventory::kube::KubeSourceOptions;
use meshdrift::inventory::{Index, files};
use meshdrift::model::Objects;
use meshdrift::policy::{Expectation, Policies};
use serde_json::{Value, json};

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/frontend")
}

fn options() -> KubeSourceOptions {
    KubeSourceOptions {
        min_interval: Duration::from_millis(50),
        crd_recheck: Duration::from_millis(200),
        ..KubeSourceOptions::default()
    }
}

/// The EndpointSlice the endpoints controller would write for the frontend Service.
fn frontend_slice() -> Value {
    let endpoint = |ip: &str, pod: &str| {
        json!({"addresses": [ip], "conditions": {"ready": true},
               "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}})
    };
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "frontend-abc12", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "frontend"}},
        "addressType": "IPv4",
        "endpoints": [endpoint("10.213.0.11", "frontend-v1"), endpoint("10.213.0.12", "frontend-v2")],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
    })
}

/// A server holding the frontend example plus its EndpointSlice.
async fn frontend_server(collections: &[&str]) -> ApiServer {
    let server = ApiServer::start(collections).await;
    for object in manifests(&examples()) {
        let served = collection_of(
            object["apiVersion"].as_str().unwrap(),
            object["kind"].as_str().unwrap(),
        )
        .is_some_and(|path| collections.contains(&path.as_str()));
        if served {
            server.apply(object);
        }
    }
    server.apply(frontend_slice());
    server
}

fn all() -> Vec<&'static str> {
    CORE.iter().chain(ISTIO.iter()).copied().collect()
}

async fn start(server: &ApiServer) -> Mirror {
    Mirror::start(server, options()).await
}

fn expectation_of(index: &Index, policies: &Policies) -> Expectation {
    let client = index.pod_by_name("default", "client").expect("client pod");
    policies
        .expect(index, client, "frontend", Some(80))
        .unwrap()
}

fn expectation(objects: &Objects) -> Expectation {
    expectation_of(&Index::build(objects), &Policies::build(objects))
}

fn weights(mesh: &Mesh) -> Vec<(String, i64)> {
    let Some(vs) = mesh.policies.virtual_services().first() else {
        return Vec::new();
    };
    vs.spec.http[0]
        .route
        .iter()
        .map(|r| {
            let subset = r.destination.subset.clone().unwrap_or_default();
            (subset, r.weight.unwrap_or_default())
        })
        .collect()
}

fn pod_names(mesh: &Mesh) -> Vec<String> {
    let mut names: Vec<String> = mesh.index.pods().map(|p| p.name.to_string()).collect();
    names.sort();
    names
}

fn full(mesh: &Mesh) -> bool {
    mesh.index.pod_count() == 3 && mesh.policies.counts().virtual_services == 1
}

fn frontend_pod(name: &str) -> Value {
    manifests(&examples())
        .into_iter()
        .find(|o| o["kind"] == "Pod" && o["metadata"]["name"] == name)
        .unwrap()
}

#[tokio::test]
async fn the_initial_list_gives_the_same_expectation_as_the_files_source() {
    let server = frontend_server(&all()).await;
    server.set_page_size(2);
    let mut mirror = start(&server).await;
    let mesh = mirror.wait("every object", full).await;

    assert_eq!(pod_names(mesh), ["client", "frontend-v1", "frontend-v2"]);
    let counts = mesh.index.counts();
    assert_eq!(
        (counts.services, counts.namespaces, counts.endpoint_slices),
        (1, 1, 1)
    );
    let policies = mesh.policies.counts();
    assert_eq!(policies.destination_rules, 1);
    assert_eq!(policies.peer_authentications, 1);

    let from_files = files::load_dir(&examples()).unwrap();
    assert_eq!(from_files.problems, vec![]);
    let declared = expectation(&from_files.objects);
    assert_eq!(expectation_of(&mesh.index, &mesh.policies), declared);
    assert_eq!(
        weights(mesh),
        [("v1".to_owned(), 50), ("v2".to_owned(), 50)]
    );

    // Three pods in pages of two: the second page was asked for by token.
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with(PODS) && r.contains("continue=2")),
        "{:?}",
        server.requests()
    );
}

#[tokio::test]
async fn nothing_is_loaded_until_every_kind_has_listed() {
    let server = frontend_server(&all()).await;
    server.hold(PEER_AUTHENTICATIONS);
    let mut mirror = start(&server).await;
    assert!(
        mirror.quiet_for(Duration::from_millis(500)).await,
        "loaded before PeerAuthentications listed"
    );
    assert_eq!(mirror.loads, 0);

    server.release();
    mirror.wait("every object", full).await;
}

#[tokio::test]
async fn a_modified_virtual_service_rebuilds_the_policies_with_the_new_weights() {
    let server = frontend_server(&all()).await;
    let mut mirror = start(&server).await;
    mirror.wait("every object", full).await;

    let mut vs = manifests(&examples())
        .into_iter()
        .find(|o| o["kind"] == "VirtualService")
        .unwrap();
    vs["spec"]["http"][0]["route"][0]["weight"] = json!(90);
    vs["spec"]["http"][0]["route"][1]["weight"] = json!(10);
    server.apply(vs);

    let mesh = mirror
        .wait("weights 90/10", |m| {
            weights(m).first().is_some_and(|(_, w)| *w == 90)
        })
        .await;
    let shares: Vec<_> = expectation_of(&mesh.index, &mesh.policies)
        .destinations
        .iter()
        .map(|d| {
            (
                d.subset.clone().unwrap_or_default(),
                (d.weight * 100.0).round(),
            )
        })
        .collect();
    assert_eq!(shares, [("v1".to_owned(), 90.0), ("v2".to_owned(), 10.0)]);
    assert_eq!(mirror.loads, 1, "a policy change is not a whole reload");
}

#[tokio::test]
async fn a_pod_added_and_deleted_through_the_watch_changes_the_index_in_place() {
    let server = frontend_server(&all()).await;
    let mut mirror = start(&server).await;
    let mesh = mirror.wait("every object", full).await;
    let ids = |mesh: &Mesh| {
        ["client", "frontend-v1", "frontend-v2"].map(|name| {
            mesh.index
                .pod_id_by_name("default", name)
                .expect("pod indexed")
        })
    };
    let before = ids(mesh);

    let mut extra = frontend_pod("frontend-v2");
    extra["metadata"]["name"] = json!("frontend-v2-extra");
    extra["status"]["podIP"] = json!("10.213.0.99");
    server.apply(extra);
    let mesh = mirror
        .wait("the added pod", |m| {
            m.index.pod_by_ip("10.213.0.99".parse().unwrap()).is_some()
        })
        .await;
    assert_eq!(
        &*mesh
            .index
            .pod_by_ip("10.213.0.99".parse().unwrap())
            .unwrap()
            .name,
        "frontend-v2-extra"
    );
    assert_eq!(ids(mesh), before, "pods that did not change keep their ids");
    assert_eq!(mesh.inventory["Pod"], 4);

    server.delete(PODS, "default", "frontend-v2-extra");
    let mesh = mirror
        .wait("the pod deleted", |m| m.index.pod_count() == 3)
        .await;
    assert!(
        mesh.index
            .pod_by_ip("10.213.0.99".parse().unwrap())
            .is_none()
    );
    assert!(
        mesh.index
            .pod_by_name("default", "frontend-v2-extra")
            .is_none()
    );
    assert_eq!(ids(mesh), before);
    assert_eq!(
        mirror.loads, 1,
        "no rebuild: the first load was changed in place"
    );
}

#[tokio::test]
async fn a_deleted_pod_disappears() {
    let server = frontend_server(&all()).await;
    let mut mirror = start(&server).await;
    mirror.wait("every object", full).await;

    server.delete(PODS, "default", "frontend-v2");
    let mesh = mirror.wait("two pods", |m| m.index.pod_count() == 2).await;
    assert_eq!(pod_names(mesh), ["client", "frontend-v1"]);
    assert!(mesh.index.pod_by_name("default", "frontend-v2").is_none());
}

#[tokio::test]
async fn without_istio_crds_the_core_kinds_still_load() {
    let server = frontend_server(&CORE).await;
    let mut mirror = start(&server).await;
    let mesh = mirror
        .wait("the core kinds", |m| m.index.pod_count() == 3)
        .await;

    let counts = mesh.index.counts();
    assert_eq!(
        (counts.services, counts.namespaces, counts.endpoint_slices),
        (1, 1, 1)
    );
    assert_eq!(mesh.policies.counts(), Default::default());
    // Both versions were tried before giving up on the kind.
    let requests = server.requests();
    assert!(requests.iter().any(|r| r.starts_with(VIRTUAL_SERVICES)));
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("/apis/networking.istio.io/v1beta1/virtualservices"))
    );
}

#[tokio::test]
async fn an_istio_kind_served_only_as_v1beta1_is_watched_there() {
    const V1BETA1: &str = "/apis/networking.istio.io/v1beta1/virtualservices";
    let mut collections = CORE.to_vec();
    collections.extend([V1BETA1, DESTINATION_RULES, PEER_AUTHENTICATIONS]);
    let server = frontend_server(&collections).await;
    let mut vs = manifests(&examples())
        .into_iter()
        .find(|o| o["kind"] == "VirtualService")
        .unwrap();
    vs["apiVersion"] = json!("networking.istio.io/v1beta1");
    server.apply(vs);

    let mut mirror = start(&server).await;
    let mesh = mirror.wait("every object", full).await;
    assert_eq!(
        weights(mesh),
        [("v1".to_owned(), 50), ("v2".to_owned(), 50)]
    );
}

#[tokio::test]
async fn an_istio_crd_installed_later_is_picked_up() {
    let mut collections = CORE.to_vec();
    collections.extend([DESTINATION_RULES, PEER_AUTHENTICATIONS]);
    let server = frontend_server(&collections).await;
    let mut mirror = start(&server).await;
    mirror
        .wait("the core kinds", |m| m.index.pod_count() == 3)
        .await;

    server.serve(VIRTUAL_SERVICES);
    let vs = manifests(&examples())
        .into_iter()
        .find(|o| o["kind"] == "VirtualService")
        .unwrap();
    server.apply(vs);
    mirror.wait("the VirtualService", full).await;
}

#[tokio::test]
async fn an_istio_crd_removed_later_empties_its_kind() {
    let server = frontend_server(&all()).await;
    let mut mirror = start(&server).await;
    mirror.wait("every object", full).await;

    server.unserve(VIRTUAL_SERVICES);
    let mesh = mirror
        .wait("no VirtualService", |m| {
            m.policies.counts().virtual_services == 0
        })
        .await;
    assert_eq!(mesh.index.pod_count(), 3);
    assert_eq!(mesh.policies.counts().destination_rules, 1);
}

#[tokio::test]
async fn an_object_that_does_not_fit_the_model_is_skipped_alone() {
    let server = frontend_server(&all()).await;
    server.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "odd", "namespace": "default"},
        "spec": {"hosts": "not-a-list"}
    }));
    let mut mirror = start(&server).await;
    let mesh = mirror.wait("every object", full).await;
    let names: Vec<_> = mesh
        .policies
        .virtual_services()
        .iter()
        .map(|vs| vs.name.clone())
        .collect();
    assert_eq!(names, ["frontend"]);
}

#[tokio::test]
async fn an_expired_watch_relists_without_losing_state() {
    let server = frontend_server(&all()).await;
    let mut mirror = start(&server).await;
    mirror.wait("every object", full).await;

    let mut relabelled = frontend_pod("frontend-v2");
    relabelled["metadata"]["labels"]["version"] = json!("v3");
    server.expire_with_silent_change(PODS, relabelled);

    let mesh = mirror
        .wait("the relisted label", |m| {
            m.index
                .pods()
                .any(|p| p.labels.get("version") == Some("v3"))
        })
        .await;
    assert_eq!(pod_names(mesh), ["client", "frontend-v1", "frontend-v2"]);
    assert_eq!(mesh.index.counts().services, 1);
    assert_eq!(mesh.policies.counts().virtual_services, 1);
    let pod_lists = server
        .requests()
        .iter()
        .filter(|r| r.starts_with(PODS) && !r.contains("watch="))
        .count();
    assert!(pod_lists >= 2, "no relist: {:?}", server.requests());
}

#[tokio::test]
async fn a_relist_forgets_what_it_no_longer_names() {
    let server = frontend_server(&all()).await;
    let mut mirror = start(&server).await;
    mirror.wait("every object", full).await;

    // Deleted while no watch could see it: only the relist tells.
    server.delete(PODS, "default", "frontend-v1");
    let client = frontend_pod("client");
    server.expire_with_silent_change(PODS, client);
    let mesh = mirror.wait("two pods", |m| m.index.pod_count() == 2).await;
    assert_eq!(pod_names(mesh), ["client", "frontend-v2"]);
}

#[tokio::test]
async fn an_ended_watch_resumes_and_misses_nothing() {
    let server = frontend_server(&all()).await;
    let mut mirror = start(&server).await;
    mirror.wait("every object", full).await;

    server.end_watches(PODS);
    server.delete(PODS, "default", "frontend-v1");
    let mesh = mirror.wait("two pods", |m| m.index.pod_count() == 2).await;
    assert_eq!(pod_names(mesh), ["client", "frontend-v2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_arrives_at_a_bounded_pace() {
    let server = frontend_server(&all()).await;
    let min_interval = Duration::from_millis(300);
    let mut mirror = Mirror::start(
        &server,
        KubeSourceOptions {
            min_interval,
            ..options()
        },
    )
    .await;
    mirror.wait("every object", full).await;
    let burst = {
        let server = server.clone();
        tokio::spawn(async move {
            let pod = frontend_pod("client");
            for i in 0..20 {
                let mut extra = pod.clone();
                extra["metadata"]["name"] = json!(format!("burst-{i}"));
                extra["status"]["podIP"] = json!(format!("10.213.1.{i}"));
                server.apply(extra);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let updates_before = mirror.updates.len();
    mirror.wait("23 pods", |m| m.index.pod_count() == 23).await;
    burst.await.unwrap();
    let updates = &mirror.updates[updates_before..];
    // 20 changes over ~400 ms: a handful of updates, never two too close.
    assert!(updates.len() <= 5, "{} updates", updates.len());
    for pair in updates.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= min_interval - Duration::from_millis(30),
            "updates {gap:?} apart"
        );
    }
}
