//! The kube source against a stand-in API server speaking the real
//! list/watch protocol: initial lists, watch events, missing Istio CRDs,
//! expired and ended watches, and the pace of snapshots.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::support::kube::*;
use meshdrift::inventory::kube::{KubeSource, KubeSourceOptions, Snapshots};
use meshdrift::inventory::{Index, files};
use meshdrift::model::Objects;
use meshdrift::policy::{Expectation, Policies};
use serde_json::{Value, json};
use tokio::time::Instant;

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/frontend")
}

fn options() -> KubeSourceOptions {
    KubeSourceOptions {
        min_interval: Duration::from_millis(50),
        crd_recheck: Duration::from_millis(200),
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

async fn start(server: &ApiServer) -> (Snapshots, meshdrift::inventory::kube::KubeSourceHandle) {
    KubeSource::start_with(server.client(), options())
        .await
        .unwrap()
}

fn expectation(objects: &Objects) -> Expectation {
    let index = Index::build(objects);
    let policies = Policies::build(objects);
    let client = index.pod_by_name("default", "client").expect("client pod");
    policies
        .expect(&index, client, "frontend", Some(80))
        .unwrap()
}

fn weights(objects: &Objects) -> Vec<(String, i64)> {
    let vs = &objects.virtual_services[0];
    vs.spec.http[0]
        .route
        .iter()
        .map(|r| {
            let subset = r.destination.subset.clone().unwrap_or_default();
            (subset, r.weight.unwrap_or_default())
        })
        .collect()
}

fn pod_names(objects: &Objects) -> Vec<String> {
    objects
        .pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

fn full(objects: &Objects) -> bool {
    objects.pods.len() == 3 && objects.virtual_services.len() == 1
}

#[tokio::test]
async fn the_initial_list_gives_the_same_expectation_as_the_files_source() {
    let server = frontend_server(&all()).await;
    server.set_page_size(2);
    let (mut snapshots, _handle) = start(&server).await;
    let objects = snapshot_where(&mut snapshots, "every object", full).await;

    assert_eq!(
        pod_names(&objects),
        ["client", "frontend-v1", "frontend-v2"]
    );
    assert_eq!(objects.services.len(), 1);
    assert_eq!(objects.namespaces.len(), 1);
    assert_eq!(objects.endpoint_slices.len(), 1);
    assert_eq!(objects.destination_rules.len(), 1);
    assert_eq!(objects.destination_rules[0].spec.subsets.len(), 2);
    assert_eq!(objects.peer_authentications.len(), 1);

    let from_files = files::load_dir(&examples()).unwrap();
    assert_eq!(from_files.problems, vec![]);
    let declared = expectation(&from_files.objects);
    assert_eq!(expectation(&objects), declared);
    assert_eq!(
        weights(&objects),
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
async fn nothing_is_published_until_every_kind_has_listed() {
    let server = frontend_server(&all()).await;
    server.hold(PEER_AUTHENTICATIONS);
    let (mut snapshots, _handle) = start(&server).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        snapshots.borrow().is_none(),
        "published before PeerAuthentications listed"
    );

    server.release();
    snapshot_where(&mut snapshots, "every object", full).await;
}

#[tokio::test]
async fn a_modified_virtual_service_gives_a_snapshot_with_the_new_weights() {
    let server = frontend_server(&all()).await;
    let (mut snapshots, _handle) = start(&server).await;
    snapshot_where(&mut snapshots, "every object", full).await;

    let mut vs = manifests(&examples())
        .into_iter()
        .find(|o| o["kind"] == "VirtualService")
        .unwrap();
    vs["spec"]["http"][0]["route"][0]["weight"] = json!(90);
    vs["spec"]["http"][0]["route"][1]["weight"] = json!(10);
    server.apply(vs);

    let objects = snapshot_where(&mut snapshots, "weights 90/10", |o| {
        weights(o).first().is_some_and(|(_, w)| *w == 90)
    })
    .await;
    assert_eq!(
        weights(&objects),
        [("v1".to_owned(), 90), ("v2".to_owned(), 10)]
    );
    let shares: Vec<_> = expectation(&objects)
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
}

#[tokio::test]
async fn a_deleted_pod_disappears() {
    let server = frontend_server(&all()).await;
    let (mut snapshots, _handle) = start(&server).await;
    snapshot_where(&mut snapshots, "every object", full).await;

    server.delete(PODS, "default", "frontend-v2");
    let objects = snapshot_where(&mut snapshots, "two pods", |o| o.pods.len() == 2).await;
    assert_eq!(pod_names(&objects), ["client", "frontend-v1"]);
    assert!(
        Index::build(&objects)
            .pod_by_name("default", "frontend-v2")
            .is_none()
    );
}

#[tokio::test]
async fn without_istio_crds_the_core_kinds_still_make_a_snapshot() {
    let server = frontend_server(&CORE).await;
    let (mut snapshots, _handle) = start(&server).await;
    let objects = snapshot_where(&mut snapshots, "the core kinds", |o| o.pods.len() == 3).await;

    assert_eq!(objects.services.len(), 1);
    assert_eq!(objects.namespaces.len(), 1);
    assert_eq!(objects.endpoint_slices.len(), 1);
    assert!(objects.virtual_services.is_empty());
    assert!(objects.destination_rules.is_empty());
    assert!(objects.peer_authentications.is_empty());
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

    let (mut snapshots, _handle) = start(&server).await;
    let objects = snapshot_where(&mut snapshots, "every object", full).await;
    assert_eq!(
        weights(&objects),
        [("v1".to_owned(), 50), ("v2".to_owned(), 50)]
    );
}

#[tokio::test]
async fn an_istio_crd_installed_later_is_picked_up() {
    let mut collections = CORE.to_vec();
    collections.extend([DESTINATION_RULES, PEER_AUTHENTICATIONS]);
    let server = frontend_server(&collections).await;
    let (mut snapshots, _handle) = start(&server).await;
    snapshot_where(&mut snapshots, "the core kinds", |o| o.pods.len() == 3).await;

    server.serve(VIRTUAL_SERVICES);
    let vs = manifests(&examples())
        .into_iter()
        .find(|o| o["kind"] == "VirtualService")
        .unwrap();
    server.apply(vs);
    snapshot_where(&mut snapshots, "the VirtualService", full).await;
}

#[tokio::test]
async fn an_istio_crd_removed_later_empties_its_kind() {
    let server = frontend_server(&all()).await;
    let (mut snapshots, _handle) = start(&server).await;
    snapshot_where(&mut snapshots, "every object", full).await;

    server.unserve(VIRTUAL_SERVICES);
    let objects = snapshot_where(&mut snapshots, "no VirtualService", |o| {
        o.virtual_services.is_empty()
    })
    .await;
    assert_eq!(objects.pods.len(), 3);
    assert_eq!(objects.destination_rules.len(), 1);
}

#[tokio::test]
async fn an_object_that_does_not_fit_the_model_is_skipped_alone() {
    let server = frontend_server(&all()).await;
    server.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "odd", "namespace": "default"},
        "spec": {"hosts": "not-a-list"}
    }));
    let (mut snapshots, _handle) = start(&server).await;
    let objects = snapshot_where(&mut snapshots, "every object", full).await;
    let names: Vec<_> = objects
        .virtual_services
        .iter()
        .filter_map(|vs| vs.metadata.name.clone())
        .collect();
    assert_eq!(names, ["frontend"]);
}

#[tokio::test]
async fn an_expired_watch_relists_without_losing_state() {
    let server = frontend_server(&all()).await;
    let (mut snapshots, _handle) = start(&server).await;
    snapshot_where(&mut snapshots, "every object", full).await;

    let mut relabelled = manifests(&examples())
        .into_iter()
        .find(|o| o["kind"] == "Pod" && o["metadata"]["name"] == "frontend-v2")
        .unwrap();
    relabelled["metadata"]["labels"]["version"] = json!("v3");
    server.expire_with_silent_change(PODS, relabelled);

    let objects = snapshot_where(&mut snapshots, "the relisted label", |o| {
        o.pods
            .iter()
            .any(|p| p.metadata.labels.get("version").map(String::as_str) == Some("v3"))
    })
    .await;
    assert_eq!(
        pod_names(&objects),
        ["client", "frontend-v1", "frontend-v2"]
    );
    assert_eq!(objects.services.len(), 1);
    assert_eq!(objects.virtual_services.len(), 1);
    let pod_lists = server
        .requests()
        .iter()
        .filter(|r| r.starts_with(PODS) && !r.contains("watch="))
        .count();
    assert!(pod_lists >= 2, "no relist: {:?}", server.requests());
}

#[tokio::test]
async fn an_ended_watch_resumes_and_misses_nothing() {
    let server = frontend_server(&all()).await;
    let (mut snapshots, _handle) = start(&server).await;
    snapshot_where(&mut snapshots, "every object", full).await;

    server.end_watches(PODS);
    server.delete(PODS, "default", "frontend-v1");
    let objects = snapshot_where(&mut snapshots, "two pods", |o| o.pods.len() == 2).await;
    assert_eq!(pod_names(&objects), ["client", "frontend-v2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_is_published_at_a_bounded_pace() {
    let server = frontend_server(&all()).await;
    let min_interval = Duration::from_millis(300);
    let (mut snapshots, _handle) = KubeSource::start_with(
        server.client(),
        KubeSourceOptions {
            min_interval,
            ..options()
        },
    )
    .await
    .unwrap();
    snapshot_where(&mut snapshots, "every object", full).await;
    // Observe from another task so the burst below does not delay the observations.
    let observer = tokio::spawn(async move {
        let mut published = vec![Instant::now()];
        loop {
            tokio::time::timeout(Duration::from_secs(5), snapshots.changed())
                .await
                .expect("a snapshot within 5 s")
                .unwrap();
            published.push(Instant::now());
            let objects: Arc<Objects> = snapshots.borrow_and_update().clone().unwrap();
            if objects.pods.len() == 23 {
                return (published, objects);
            }
        }
    });

    let pod = manifests(&examples())
        .into_iter()
        .find(|o| o["kind"] == "Pod" && o["metadata"]["name"] == "client")
        .unwrap();
    for i in 0..20 {
        let mut extra = pod.clone();
        extra["metadata"]["name"] = json!(format!("burst-{i}"));
        extra["status"]["podIP"] = json!(format!("10.213.1.{i}"));
        server.apply(extra);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (published, last) = observer.await.unwrap();
    assert_eq!(last.pods.len(), 23);
    // 20 changes over ~400 ms: a handful of snapshots, never two too close.
    assert!(published.len() <= 5, "{} snapshots", published.len());
    for pair in published.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= min_interval - Duration::from_millis(30),
            "snapshots {gap:?} apart"
        );
    }
}
