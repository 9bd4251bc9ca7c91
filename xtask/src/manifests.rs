//! The shipped manifests under the tools their users run on them, as a stage
//! of `cargo xtask test`: `helm lint --strict` on the chart, then
//! kubernetes-validate (the objects against Kubernetes' OpenAPI schemas of
//! the release the lab's cluster runs) and checkov (security and
//! reliability checks) on every rendering a user can apply: the kustomize
//! output of `deploy/kubernetes` (alone and with its auth component), of
//! `deploy/prometheus-operator`, and the chart with default values and with
//! every feature on (`deploy/helm/meshdrift/ci/all-features-values.yaml`).
//!
//! The two Python tools come from PyPI at the versions
//! `tools/python/requirements.txt` pins, into a virtual environment in
//! `target/pyenv` that is made again only when that file or the Python
//! version changes. Helm and kubectl are the ones `upstream::build` makes.
//! That the chart's default rendering equals the kustomize output is a test
//! of the end-to-end suite (`tests/tests/e2e/chart.rs`).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cmd, upstream::UpstreamBin};

/// The chart, relative to the workspace.
const CHART: &str = "deploy/helm/meshdrift";
/// Its values with every optional feature on.
const ALL_FEATURES: &str = "deploy/helm/meshdrift/ci/all-features-values.yaml";
/// What the Prometheus Operator's CRDs add, announced to `helm template`.
const OPERATOR_KINDS: [&str; 2] = [
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
];
/// Kinds kubernetes-validate has no schema for (CRDs, not Kubernetes' own):
/// its warning about them is expected, any other is a failure.
const CUSTOM_API_GROUPS: [&str; 1] = ["monitoring.coreos.com/"];

/// The pinned Python packages, relative to the workspace.
const REQUIREMENTS: &str = "tools/python/requirements.txt";
const VENV_STAMP: &str = "meshdrift-venv.stamp";

/// Runs every check; fails on the first tool that finds a problem.
pub fn check(upstream: &UpstreamBin) -> anyhow::Result<()> {
    let root = cmd::workspace_root();
    let venv = venv(&root.join("target").join("pyenv"))?;
    let out = root.join("target").join("manifest-checks");
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    eprintln!(
        "[manifests] the chart with Helm {}, the kustomizations with kubectl {}",
        upstream.helm_version, upstream.kubernetes_version
    );
    cmd::run(
        Command::new(&upstream.helm)
            .current_dir(&root)
            .args(["lint", "--strict", CHART]),
    )?;
    cmd::run(Command::new(&upstream.helm).current_dir(&root).args([
        "lint",
        "--strict",
        CHART,
        "--values",
        ALL_FEATURES,
    ]))?;

    let renderings = render(upstream, &root, &out)?;

    // The schemas of the release the lab's control plane runs (tools/go.mod):
    // kubernetes-validate 1.37.0 ships them for 1.36 and maps a patch release
    // to its minor's schemas.
    let kubernetes = upstream.kubernetes_version.trim_start_matches('v');
    let mut validate = Command::new(venv.join("kubernetes-validate"));
    validate
        .args(["--strict", "--quiet", "--kubernetes-version", kubernetes])
        .args(&renderings);
    let output = captured(&mut validate)?;
    let unexpected: Vec<&str> = output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| {
            !(line.starts_with("WARN ")
                && line.contains("Couldn't find schema")
                && CUSTOM_API_GROUPS.iter().any(|group| line.contains(group)))
        })
        .collect();
    if !unexpected.is_empty() {
        bail!(
            "kubernetes-validate (Kubernetes {kubernetes}) found problems:\n{}",
            unexpected.join("\n")
        );
    }
    eprintln!(
        "[manifests] kubernetes-validate: {} renderings valid against Kubernetes {kubernetes}",
        renderings.len()
    );

    // checkov fails on any failed check. The checks it skips are the ones
    // the DaemonSet's checkov.io/skipN annotations name, each with its
    // reason. No network: no download of the platform's policies, no
    // update check.
    let mut checkov = Command::new(venv.join("checkov"));
    checkov
        .args([
            "--framework",
            "kubernetes",
            "--skip-download",
            "--compact",
            "--quiet",
        ])
        .env("CKV_SKIP_PACKAGE_UPDATE_CHECK", "true");
    for file in &renderings {
        checkov.arg("--file").arg(file);
    }
    cmd::run(&mut checkov).context("checkov found problems in the shipped manifests")?;
    eprintln!(
        "[manifests] checkov: no failed check in {} renderings",
        renderings.len()
    );
    Ok(())
}

/// Writes every rendering into `out`; returns their paths.
fn render(upstream: &UpstreamBin, root: &Path, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut write = |name: &str, command: &mut Command| -> anyhow::Result<()> {
        let text = captured(command.current_dir(root))?;
        let path = out.join(name);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
        Ok(())
    };
    write(
        "kustomize.yaml",
        Command::new(&upstream.kubectl).args(["kustomize", "deploy/kubernetes"]),
    )?;
    write(
        "kustomize-prometheus-operator.yaml",
        Command::new(&upstream.kubectl).args(["kustomize", "deploy/prometheus-operator"]),
    )?;
    let overlay = auth_overlay(out)?;
    write(
        "kustomize-auth.yaml",
        Command::new(&upstream.kubectl)
            .arg("kustomize")
            .arg(&overlay),
    )?;
    write(
        "chart-default.yaml",
        Command::new(&upstream.helm).args([
            "template",
            "meshdrift",
            CHART,
            "--namespace",
            "meshdrift",
        ]),
    )?;
    let mut all = Command::new(&upstream.helm);
    all.args([
        "template",
        "meshdrift",
        CHART,
        "--namespace",
        "meshdrift",
        "--values",
        ALL_FEATURES,
    ]);
    for kind in OPERATOR_KINDS {
        all.args(["--api-versions", kind]);
    }
    write("chart-all-features.yaml", &mut all)?;
    Ok(files)
}

/// A kustomization in `out` (`target/manifest-checks`) with
/// `deploy/kubernetes` and its auth component, as a user's own would be;
/// by relative paths, as kustomize refuses absolute ones.
fn auth_overlay(out: &Path) -> anyhow::Result<PathBuf> {
    let dir = out.join("auth-overlay");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                resources:\n  - ../../../deploy/kubernetes\n\
                components:\n  - ../../../deploy/kubernetes/components/auth\n";
    let path = dir.join("kustomization.yaml");
    fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(dir)
}

/// Runs `command`, returns its standard output; on failure, says what it
/// printed.
fn captured(command: &mut Command) -> anyhow::Result<String> {
    let rendered = cmd::render(command);
    eprintln!("[xtask] $ {rendered}");
    let output = command
        .output()
        .with_context(|| format!("cannot start `{rendered}`"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "`{rendered}` failed with {}:\n{stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// The virtual environment at `dir` with the pinned packages; returns its
/// `bin/`. Made again only when the requirements or the Python version
/// changed since the stamp was written.
fn venv(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = cmd::workspace_root();
    let requirements = root.join(REQUIREMENTS);
    let pins = fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let python = cmd::output(Command::new("python3").arg("--version"))
        .context("python3 is not on PATH (`cargo xtask setup` installs python3-venv)")?;
    let key = format!("{}\n{pins}", python.trim());
    let bin = dir.join("bin");
    let stamp = dir.join(VENV_STAMP);
    if fs::read_to_string(&stamp).is_ok_and(|recorded| recorded == key)
        && ["checkov", "kubernetes-validate"]
            .iter()
            .all(|tool| bin.join(tool).is_file())
    {
        return Ok(bin);
    }
    eprintln!(
        "[manifests] installing the pinned field tools of {REQUIREMENTS} into {}",
        dir.display()
    );
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("removing {}", dir.display())),
    }
    cmd::run(Command::new("python3").args(["-m", "venv"]).arg(dir))
        .context("making a Python virtual environment (is python3-venv installed?)")?;
    // Every package is pinned in the file, dependencies included: --no-deps
    // installs exactly those, and `pip check` proves they fit together.
    cmd::run(
        Command::new(bin.join("pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--require-virtualenv",
                "--no-deps",
                "--requirement",
            ])
            .arg(&requirements),
    )
    .context("installing the pinned field tools from PyPI")?;
    cmd::run(Command::new(bin.join("pip")).arg("check"))?;
    fs::write(&stamp, key).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(bin)
}
