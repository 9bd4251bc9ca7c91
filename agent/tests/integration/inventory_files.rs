//! The files source: directories, multi-document YAML, JSON, `kind: List`,
//! skipped kinds, and problems that name file, document and line.

use std::fs;
use std::path::Path;

use meshdrift::inventory::files::{LoadError, load_dir};

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meshdrift-files-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec: {containers: [{name: c, image: i}]}\nstatus: {podIP: 10.1.0.1}\n";

#[test]
fn loads_a_directory_recursively_with_all_extensions() {
    let dir = tempdir("recursive");
    write(&dir, "a.yaml", POD);
    write(
        &dir,
        "sub/deeper/b.yml",
        &POD.replace("name: p,", "name: q,")
            .replace("10.1.0.1", "10.1.0.2"),
    );
    write(
        &dir,
        "c.json",
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}"#,
    );
    write(&dir, "notes.txt", "kind: Pod\n");
    write(&dir, ".hidden/d.yaml", POD);
    let out = load_dir(&dir).unwrap();
    assert_eq!(out.problems, vec![]);
    assert_eq!(out.files, 3);
    assert_eq!(out.objects.pods.len(), 2);
    assert_eq!(out.objects.services.len(), 1);
}

#[test]
fn multi_document_files_and_lists() {
    let dir = tempdir("multi");
    let list = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Namespace\n    metadata: {name: a}\n  - apiVersion: apps/v1\n    kind: Deployment\n    metadata: {name: d}\n  - apiVersion: networking.istio.io/v1alpha3\n    kind: VirtualService\n    metadata: {name: v}\n    spec: {hosts: [x]}\n";
    write(
        &dir,
        "all.yaml",
        &format!("# leading comment\n---\n{POD}---\n---\n{list}...\n"),
    );
    let out = load_dir(&dir).unwrap();
    assert_eq!(out.problems, vec![]);
    assert_eq!(out.objects.pods.len(), 1);
    assert_eq!(out.objects.namespaces.len(), 1);
    assert_eq!(out.objects.virtual_services.len(), 1);
    assert_eq!(out.skipped.get("Deployment"), Some(&1));
}

#[test]
fn every_istio_api_version_shares_one_schema() {
    let dir = tempdir("versions");
    for (i, version) in ["v1", "v1beta1", "v1alpha3"].iter().enumerate() {
        write(
            &dir,
            &format!("dr{i}.yaml"),
            &format!(
                "apiVersion: networking.istio.io/{version}\nkind: DestinationRule\nmetadata: {{name: r{i}}}\nspec:\n  host: x\n  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}\n  unknownField: ignored\n"
            ),
        );
    }
    let out = load_dir(&dir).unwrap();
    assert_eq!(out.problems, vec![]);
    assert_eq!(out.objects.destination_rules.len(), 3);
}

#[test]
fn unrelated_kinds_are_skipped_and_counted() {
    let dir = tempdir("skipped");
    write(
        &dir,
        "x.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
    );
    let out = load_dir(&dir).unwrap();
    assert_eq!(out.skipped.get("Deployment"), Some(&2));
    assert_eq!(out.skipped.get("ConfigMap"), Some(&1));
    assert!(out.objects.is_empty());
}

#[test]
fn bad_documents_become_problems_with_file_document_and_line() {
    let dir = tempdir("bad");
    // Document 2 leaves a `{` open on file line 9; document 3 has a bad enum on line 16.
    let text = format!(
        "{POD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: broken\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r}}\nspec:\n  host: x\n  trafficPolicy: {{tls: {{mode: SOMETIMES}}}}\n---\n{}",
        POD.replace("name: p,", "name: ok2,")
    );
    write(&dir, "mixed.yaml", &text);
    write(
        &dir,
        "zz.yaml",
        POD.replace("name: p,", "name: last,").as_str(),
    );
    let out = load_dir(&dir).unwrap();
    assert_eq!(out.objects.pods.len(), 3, "the rest still loads");
    assert_eq!(out.problems.len(), 2, "{:#?}", out.problems);
    let syntax = &out.problems[0];
    assert!(syntax.file.ends_with("mixed.yaml"));
    assert_eq!(syntax.document, Some(2));
    // libyaml notices the unclosed `{` on the line after it.
    assert!(
        syntax.line.is_some_and(|l| (9..=10).contains(&l)),
        "{syntax}"
    );
    let typed = &out.problems[1];
    assert_eq!(typed.document, Some(3));
    assert_eq!(typed.line, Some(16), "{typed}");
    assert!(typed.to_string().contains("SOMETIMES"), "{typed}");
    assert!(typed.to_string().contains("DestinationRule r"), "{typed}");
}

#[test]
fn documents_without_kind_or_not_mappings_are_problems() {
    let dir = tempdir("nokind");
    write(
        &dir,
        "a.yaml",
        "metadata: {name: x}\n---\n- just\n- a list\n---\n42\n",
    );
    let out = load_dir(&dir).unwrap();
    assert_eq!(out.problems.len(), 3, "{:#?}", out.problems);
    assert_eq!(out.problems[0].document, Some(1));
    assert_eq!(out.problems[1].line, Some(3));
}

#[test]
fn invalid_json_names_the_line() {
    let dir = tempdir("json");
    write(&dir, "bad.json", "{\n  \"kind\": \"Pod\",\n  oops\n}\n");
    let out = load_dir(&dir).unwrap();
    assert_eq!(out.problems.len(), 1);
    assert_eq!(out.problems[0].line, Some(3));
}

#[test]
fn non_utf8_file_is_a_problem_not_a_failure() {
    let dir = tempdir("binary");
    fs::write(dir.join("bin.yaml"), [0xff, 0xfe, 0x00, 0x41]).unwrap();
    write(&dir, "ok.yaml", POD);
    let out = load_dir(&dir).unwrap();
    assert_eq!(out.problems.len(), 1);
    assert_eq!(out.objects.pods.len(), 1);
}

#[test]
fn missing_directory_is_an_error() {
    let err = load_dir(Path::new("/nonexistent/meshdrift/manifests")).unwrap_err();
    assert!(matches!(err, LoadError::Unreadable { .. }));
    assert!(err.to_string().contains("/nonexistent/meshdrift/manifests"));
}

#[test]
fn a_single_file_can_be_loaded() {
    let dir = tempdir("single");
    write(&dir, "one.yaml", POD);
    let out = load_dir(&dir.join("one.yaml")).unwrap();
    assert_eq!(out.objects.pods.len(), 1);
}

#[test]
fn peer_authentication_port_keys_accept_numbers_and_strings() {
    let dir = tempdir("pa");
    write(
        &dir,
        "a.yaml",
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {app: x}}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n    '9090': {mode: STRICT}\n",
    );
    write(
        &dir,
        "b.json",
        r#"{"apiVersion":"security.istio.io/v1","kind":"PeerAuthentication","metadata":{"name":"b"},"spec":{"portLevelMtls":{"7070":{"mode":"PERMISSIVE"}}}}"#,
    );
    let out = load_dir(&dir).unwrap();
    assert_eq!(out.problems, vec![]);
    let keys: Vec<u32> = out
        .objects
        .peer_authentications
        .iter()
        .flat_map(|p| p.spec.port_level_mtls.keys().copied())
        .collect();
    assert_eq!(keys, vec![8080, 9090, 7070]);
}

#[test]
fn null_lists_are_empty() {
    let dir = tempdir("null");
    write(
        &dir,
        "a.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  hosts:\n  http:\n  gateways: ~\n",
    );
    let out = load_dir(&dir).unwrap();
    assert_eq!(out.problems, vec![]);
    assert!(out.objects.virtual_services[0].spec.hosts.is_empty());
}

#[test]
fn service_entries_load_in_every_api_version() {
    let dir = tempdir("service-entries");
    for (i, version) in ["v1", "v1beta1", "v1alpha3"].iter().enumerate() {
        write(
            &dir,
            &format!("se{i}.yaml"),
            &format!(
                "apiVersion: networking.istio.io/{version}\nkind: ServiceEntry\nmetadata: {{name: e{i}}}\nspec:\n  hosts: [a{i}.example.com, b{i}.example.com]\n  ports: [{{number: 443, name: https, protocol: HTTPS}}]\n  resolution: DNS\n  exportTo: ['.']\n"
            ),
        );
    }
    let out = load_dir(&dir).unwrap();
    assert_eq!(out.problems, vec![]);
    assert_eq!(out.objects.service_entries.len(), 3);
    let index = meshdrift::inventory::Index::build(&out.objects);
    let b1 = index
        .service("b1.example.com")
        .expect("one service per host");
    assert_eq!(b1.describe(), "ServiceEntry default/e1");
    assert_eq!(b1.export_to, vec![".".to_owned()]);
    assert!(b1.mesh_external && !b1.headless);
}

/// YAML that kubectl accepts loads here too: a byte order mark, directives,
/// merge keys.
#[test]
fn yaml_that_kubectl_accepts_loads() {
    const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n";
    let merged_rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: web\n  subsets:\n    - &v1\n      name: v1\n      labels: {version: v1}\n      trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n    - <<: *v1\n      name: v2\n      labels: {version: v2}\n";
    let merged_labels = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: &team {team: payments}\n  labels:\n    <<: *team\n    app: web\nspec: {containers: [{name: c, image: i}]}\nstatus: {podIP: 10.1.0.9}\n";
    // (why, file name, text)
    let table = [
        ("a UTF-8 byte order mark", "bom.yaml", format!("\u{feff}{NS}")),
        (
            "a byte order mark on JSON",
            "bom.json",
            "\u{feff}{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"a\"}}"
                .to_owned(),
        ),
        ("a %YAML directive", "directive.yaml", format!("%YAML 1.2\n---\n{NS}")),
        (
            "directives between documents",
            "stream.yaml",
            format!("%YAML 1.1\n%TAG !e! tag:example.com,2000:\n---\n{POD}...\n%YAML 1.2\n---\n{NS}"),
        ),
        ("merge keys in a list", "rule.yaml", merged_rule.to_owned()),
        ("merge keys in a mapping", "pod.yaml", merged_labels.to_owned()),
    ];
    for (why, name, text) in table {
        let dir = tempdir("kubectl");
        write(&dir, name, &text);
        let out = load_dir(&dir).unwrap();
        assert_eq!(out.problems, vec![], "{why}");
        assert!(!out.objects.is_empty(), "{why}");
        if let Some(rule) = out.objects.destination_rules.first() {
            let v2 = &rule.spec.subsets[1];
            assert_eq!(v2.name, "v2", "{why}");
            assert_eq!(v2.labels.get("version").map(String::as_str), Some("v2"));
            let tls = v2.traffic_policy.as_ref().and_then(|p| p.tls.as_ref());
            assert!(tls.is_some(), "{why}: v2 inherits v1's trafficPolicy");
        }
        if let Some(pod) = out
            .objects
            .pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some("p") && name == "pod.yaml")
        {
            let labels = &pod.metadata.labels;
            assert_eq!(
                labels.get("team").map(String::as_str),
                Some("payments"),
                "{why}"
            );
            assert_eq!(labels.get("app").map(String::as_str), Some("web"), "{why}");
        }
    }
}

/// Each item of a `List` reports its own line.
#[test]
fn list_items_report_their_own_lines() {
    let text = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Namespace\n    metadata: {name: fine}\n  - apiVersion: networking.istio.io/v1\n    kind: DestinationRule\n    metadata: {name: r}\n    spec:\n      host: x\n      trafficPolicy: {tls: {mode: SOMETIMES}}\n  - metadata: {name: kindless}\n  - apiVersion: networking.istio.io\n    kind: VirtualService\n    metadata: {name: v}\n";
    let dir = tempdir("list-lines");
    write(&dir, "list.yaml", &format!("# header\n{text}"));
    let out = load_dir(&dir).unwrap();
    let found: Vec<(Option<usize>, bool)> = out
        .problems
        .iter()
        .map(|p| (p.line, p.message.starts_with("List item")))
        .collect();
    // File lines: the bad tls mode on 13, the item without kind on 14, the
    // apiVersion without version on 15.
    assert_eq!(
        found,
        vec![(Some(13), true), (Some(14), true), (Some(15), true)],
        "{:#?}",
        out.problems
    );
    assert!(
        out.problems[0].message.contains("SOMETIMES"),
        "{:#?}",
        out.problems
    );
    assert_eq!(out.objects.namespaces.len(), 1);
}

/// An `apiVersion` without a version is a problem, not a silent skip.
#[test]
fn api_version_without_a_version_is_a_problem() {
    let table = [
        ("networking.istio.io", "VirtualService", "has no version"),
        ("security.istio.io", "PeerAuthentication", "has no version"),
        ("apps", "Deployment", "has no version"),
        ("networking.istio.io/v2", "DestinationRule", "not served"),
    ];
    for (api_version, kind, says) in table {
        let dir = tempdir("api-version");
        write(
            &dir,
            "x.yaml",
            &format!("# {kind}\napiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x}}\n"),
        );
        let out = load_dir(&dir).unwrap();
        assert_eq!(out.problems.len(), 1, "{api_version}: {:#?}", out.problems);
        assert_eq!(out.problems[0].line, Some(2), "{api_version}");
        assert!(
            out.problems[0].message.contains(says),
            "{:#?}",
            out.problems
        );
        assert!(out.skipped.is_empty(), "{api_version}");
    }
}
