//! Property tests: weights of determinable answers sum to 1; document order
//! changes no answer; random or truncated input never panics.

use std::path::Path;

use crate::support::policy::*;
use meshdrift::inventory::Index;
use meshdrift::inventory::files::{LoadOutcome, load_str};
use meshdrift::policy::{Expectation, Policies, check};
use proptest::prelude::*;

const CLIENTS: [&str; 3] = ["default/client", "default/tester", "other/client"];

/// An http match entry from a pool mixing L4-decidable and L7 conditions.
fn match_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("{sourceLabels: {app: client}}".to_owned()),
        Just("{sourceLabels: {app: tester}}".to_owned()),
        Just("{sourceNamespace: other}".to_owned()),
        Just("{port: 9080}".to_owned()),
        Just("{port: 1234}".to_owned()),
        Just("{gateways: [mesh], sourceLabels: {app: nobody}}".to_owned()),
        Just("{headers: {x-user: {exact: a}}}".to_owned()),
        Just("{uri: {prefix: /api}, sourceLabels: {app: tester}}".to_owned()),
    ]
}

fn destination() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("v1"), Just("v2"), Just("v3")],
        prop::option::of(0i64..=100),
    )
        .prop_map(|(subset, weight)| match weight {
            Some(w) => format!(
                "        - {{destination: {{host: reviews, subset: {subset}}}, weight: {w}}}\n"
            ),
            None => format!("        - {{destination: {{host: reviews, subset: {subset}}}}}\n"),
        })
}

fn http_route() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(match_entry(), 0..3),
        prop::collection::vec(destination(), 1..4),
    )
        .prop_map(|(matches, dests)| {
            let matches = if matches.is_empty() {
                String::new()
            } else {
                format!("      match: [{}]\n", matches.join(", "))
            };
            format!("    - route:\n{}{matches}", dests.concat())
        })
}

fn random_virtual_service() -> impl Strategy<Value = String> {
    prop::collection::vec(http_route(), 1..4).prop_map(|routes| {
        vs(
            "default",
            "random",
            &format!("  hosts: [reviews]\n  http:\n{}", routes.concat()),
        )
    })
}

fn total(e: &Expectation) -> f64 {
    e.destinations.iter().map(|d| d.weight).sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn determinable_weights_sum_to_one(virtual_service in random_virtual_service()) {
        let m = mesh(&format!("{}---\n{virtual_service}", dr("default", "r", &format!("  host: reviews\n{REVIEWS_SUBSETS}"))));
        for client in CLIENTS {
            let host = if client.starts_with("default/") { "reviews" } else { "reviews.default" };
            let e = m.expect(client, host, 9080);
            if !e.determinable {
                prop_assert!(e.destinations.is_empty(), "no guess when indeterminate");
                prop_assert!(e.reason.is_some());
                continue;
            }
            if e.destinations.is_empty() {
                prop_assert!(e.reason.is_some(), "an empty answer says why");
                continue;
            }
            let sum = total(&e);
            if sum == 0.0 {
                prop_assert!(e.reason.as_deref().unwrap_or("").contains("weight 0"));
            } else {
                prop_assert!((sum - 1.0).abs() < 1e-9, "sum {sum} in {e:#?}");
            }
            prop_assert!(e.destinations.iter().all(|d| (0.0..=1.0).contains(&d.weight)));
        }
    }
}

/// Resources spread over namespaces, several claiming the same hosts.
fn resources() -> Vec<String> {
    vec![
        vs(
            "default",
            "a",
            "  hosts: [reviews]\n  http:\n    - route:\n        - {destination: {host: reviews, subset: v1}, weight: 70}\n        - {destination: {host: reviews, subset: v2}, weight: 30}\n",
        ),
        vs(
            "default",
            "b",
            "  hosts: [reviews]\n  http:\n    - route: [{destination: {host: reviews, subset: v3}}]\n",
        ),
        vs(
            "other",
            "c",
            "  hosts: ['*.default.svc.cluster.local']\n  http:\n    - route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]\n",
        ),
        vs(
            "default",
            "d",
            "  hosts: [db]\n  tcp:\n    - match: [{sourceLabels: {app: tester}}]\n      route: [{destination: {host: db}}]\n    - route: [{destination: {host: db}, weight: 10}, {destination: {host: reviews}, weight: 30}]\n",
        ),
        dr(
            "default",
            "r1",
            &format!(
                "  host: reviews\n  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}\n{REVIEWS_SUBSETS}"
            ),
        ),
        dr(
            "default",
            "r2",
            "  host: reviews\n  subsets:\n    - {name: v1, labels: {version: v2}}\n    - {name: extra, labels: {app: reviews}}\n",
        ),
        dr(
            "other",
            "w",
            "  host: '*.default.svc.cluster.local'\n  trafficPolicy:\n    tls: {}\n",
        ),
        dr(
            "istio-system",
            "mesh",
            "  host: '*.local'\n  trafficPolicy: {tls: {mode: SIMPLE}}\n",
        ),
        dr(
            "default",
            "sel",
            "  host: reviews\n  workloadSelector: {matchLabels: {app: tester}}\n  trafficPolicy: {tls: {mode: MUTUAL}}\n",
        ),
        pa("istio-system", "mesh", "  mtls: {mode: STRICT}\n"),
        pa("default", "ns", "  mtls: {mode: PERMISSIVE}\n"),
        pa("default", "ns2", "  mtls: {mode: DISABLE}\n"),
        pa(
            "default",
            "wl",
            "  selector: {matchLabels: {version: v2}}\n  mtls: {mode: STRICT}\n",
        ),
    ]
}

fn answers(yaml: &str) -> Vec<Expectation> {
    let m = mesh_from(yaml);
    let mut out = Vec::new();
    for client in CLIENTS {
        for (host, port) in [
            ("reviews.default", 9080),
            ("db.default", 5432),
            ("ratings.prod", 9080),
        ] {
            out.push(m.expect(client, host, port));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn reordering_resources_changes_no_answer(order in Just((0..resources().len()).collect::<Vec<_>>()).prop_shuffle()) {
        let all = resources();
        let reference = answers(&format!("{}---\n{}", base(), all.join("---\n")));
        let shuffled: Vec<String> = order.iter().map(|&i| all[i].clone()).collect();
        // Interleave the base objects too: the index must not depend on order either.
        let yaml = format!("{}---\n{}", shuffled.join("---\n"), base());
        prop_assert_eq!(answers(&yaml), reference);
    }
}

fn load_all(text: &str, name: &str) -> LoadOutcome {
    let mut outcome = LoadOutcome::default();
    load_str(Path::new(name), text, &mut outcome);
    // Everything downstream must cope with whatever loaded.
    let index = Index::build(&outcome.objects);
    let policies = Policies::build(&outcome.objects);
    let _ = check(&index, &policies);
    outcome
}

fn valid_manifests() -> String {
    format!("{}---\n{}", base(), resources().join("---\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,400}") {
        load_all(&text, "random.yaml");
        load_all(&text, "random.json");
    }

    #[test]
    fn yaml_like_noise_never_panics(text in "([a-zA-Z]{1,6}: ?(\\{|\\[|-|\\||>|'|\"|\\*|&|!|[0-9]{1,3}|~)?\n {0,4}(---\n)?){0,30}") {
        load_all(&text, "noise.yaml");
    }

    #[test]
    fn truncated_manifests_never_panic(cut in 0usize..10_000) {
        let text = valid_manifests();
        let mut cut = cut.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let outcome = load_all(&text[..cut], "truncated.yaml");
        // Only the cut document may fail.
        prop_assert!(outcome.problems.len() <= 1, "{:?}", outcome.problems);
    }

    #[test]
    fn corrupted_manifests_never_panic(pos in 0usize..10_000, byte in prop::sample::select(vec!['{', '}', '[', ':', '-', '\t', '"', '\n', '#'])) {
        let mut text = valid_manifests();
        let mut pos = pos.min(text.len());
        while !text.is_char_boundary(pos) {
            pos -= 1;
        }
        text.insert(pos, byte);
        load_all(&text, "corrupted.yaml");
    }
}
