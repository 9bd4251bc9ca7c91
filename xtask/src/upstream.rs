//! The real upstream programs the lab runs as a Kubernetes cluster: etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy and
//! kubectl, built with Go from the modules pinned in `tools/` (see
//! `tools/README.md`), plus Istio's CRDs copied out of the pinned
//! `istio.io/api` module, and Helm, which installs and checks the chart in
//! `deploy/helm/meshdrift`.
//!
//! A cold build takes many minutes, so [`build`] records what it built in a
//! stamp file and does nothing the next time while the pins (the `go.mod` and
//! `go.sum` files, etcd's `main.go`, the `tools.go` files, the build flags
//! and the Go version) are the same and every output exists. Go's own caches
//! (GOCACHE, GOMODCACHE) are left where the environment puts them, so a
//! rebuild after a pin change reuses whatever did not change.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Where the built programs go unless told otherwise.
pub fn default_dir() -> PathBuf {
    cmd::workspace_root().join("target").join("upstream")
}

/// The Go module with the Kubernetes and Istio pins (`tools/go.mod`).
pub fn tools_dir() -> PathBuf {
    cmd::workspace_root().join("tools")
}

/// The paths of what [`build`] made.
#[derive(Debug, Clone)]
pub struct UpstreamBin {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kube_proxy: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
    /// Prometheus with Kubernetes service discovery.
    pub prometheus: PathBuf,
    /// Istio's CustomResourceDefinitions, one multi-document YAML file.
    pub istio_crds: PathBuf,
    /// The Kubernetes release the binaries were built from, e.g. `v1.36.3`.
    pub kubernetes_version: String,
    /// The Helm release `helm` was built from, e.g. `v4.3.2`.
    pub helm_version: String,
}

impl UpstreamBin {
    fn at(out: &Path, kubernetes_version: String, helm_version: String) -> Self {
        let bin = out.join("bin");
        Self {
            etcd: bin.join("etcd"),
            kube_apiserver: bin.join("kube-apiserver"),
            kube_controller_manager: bin.join("kube-controller-manager"),
            kube_scheduler: bin.join("kube-scheduler"),
            kube_proxy: bin.join("kube-proxy"),
            kubectl: bin.join("kubectl"),
            helm: bin.join("helm"),
            prometheus: bin.join("prometheus"),
            istio_crds: out.join("istio-crds.yaml"),
            kubernetes_version,
            helm_version,
        }
    }

    /// Every output file, binaries first.
    pub fn files(&self) -> [&Path; 9] {
        [
            &self.etcd,
            &self.kube_apiserver,
            &self.kube_controller_manager,
            &self.kube_scheduler,
            &self.kube_proxy,
            &self.kubectl,
            &self.helm,
            &self.prometheus,
            &self.istio_crds,
        ]
    }
}

/// One Go program to build: its output name, the module directory (relative
/// to `tools/`) to build in, and the package.
struct Program {
    name: &'static str,
    module_dir: &'static str,
    package: &'static str,
    /// Which release it reports as its version.
    version: Version,
    /// Go build tags, if any.
    tags: Option<&'static str>,
}

/// The `-X` flags a program takes so that it reports its release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// Kubernetes' component-base and client-go version variables.
    Kubernetes,
    /// Helm's `internal/version` variables.
    Helm,
    /// None: etcd's version is a constant in its source.
    Builtin,
}

/// In build order: kube-apiserver first, as it compiles most of what the
/// others share; etcd, Helm and Prometheus last, each from its own module (`tools/etcd`,
/// `tools/helm`, `tools/prometheus`).
const PROGRAMS: &[Program] = &[
    Program {
        name: "kube-apiserver",
        module_dir: ".",
        package: "k8s.io/kubernetes/cmd/kube-apiserver",
        version: Version::Kubernetes,
        tags: None,
    },
    Program {
        name: "kube-controller-manager",
        module_dir: ".",
        package: "k8s.io/kubernetes/cmd/kube-controller-manager",
        version: Version::Kubernetes,
        tags: None,
    },
    Program {
        name: "kube-scheduler",
        module_dir: ".",
        package: "k8s.io/kubernetes/cmd/kube-scheduler",
        version: Version::Kubernetes,
        tags: None,
    },
    Program {
        name: "kube-proxy",
        module_dir: ".",
        package: "k8s.io/kubernetes/cmd/kube-proxy",
        version: Version::Kubernetes,
        tags: None,
    },
    Program {
        name: "kubectl",
        module_dir: ".",
        package: "k8s.io/kubernetes/cmd/kubectl",
        version: Version::Kubernetes,
        tags: None,
    },
    Program {
        name: "etcd",
        module_dir: "etcd",
        package: ".",
        version: Version::Builtin,
        tags: None,
    },
    Program {
        name: "helm",
        module_dir: "helm",
        package: "helm.sh/helm/v4/cmd/helm",
        version: Version::Helm,
        tags: None,
    },
    // Debian's package leaves Kubernetes service discovery out; the lab's
    // Prometheus finds one agent per node through the API server with it.
    // Only that mechanism (and the file and HTTP ones Prometheus always has)
    // is built in.
    Program {
        name: "prometheus",
        module_dir: "prometheus",
        package: "github.com/prometheus/prometheus/cmd/prometheus",
        version: Version::Builtin,
        tags: Some("remove_all_sd,enable_kubernetes_sd"),
    },
];

/// The Go modules `go mod download` fetches, relative to `tools/`.
const MODULE_DIRS: &[&str] = &[".", "etcd", "helm", "prometheus"];

/// The files whose contents decide what gets built (relative to `tools/`).
const PINNED_FILES: &[&str] = &[
    "go.mod",
    "go.sum",
    "tools.go",
    "etcd/go.mod",
    "etcd/go.sum",
    "etcd/main.go",
    "helm/go.mod",
    "helm/go.sum",
    "helm/tools.go",
    "prometheus/go.mod",
    "prometheus/go.sum",
    "prometheus/tools.go",
];

/// Bump when the way the programs are built changes (flags, outputs).
const RECIPE: &str = "upstream-recipe-3 CGO_ENABLED=0 -trimpath -s -w +helm +prometheus";

const STAMP: &str = "upstream.stamp";

/// Where Istio's CRDs sit inside the `istio.io/api` module.
const ISTIO_CRDS_IN_MODULE: &str = "kubernetes/customresourcedefinitions.gen.yaml";

/// Builds the eight programs into `out/bin/` and copies Istio's CRDs to
/// `out/istio-crds.yaml`, unless `out` already holds a build of the same
/// pins (then it returns at once).
pub fn build(out: &Path) -> anyhow::Result<UpstreamBin> {
    let tools = tools_dir();
    let go_version = go_version()?;
    let kubernetes_version = kubernetes_version(&tools)?;
    let helm_version = helm_version(&tools)?;
    let key = stamp_key(&tools, &go_version)?;
    let built = UpstreamBin::at(out, kubernetes_version.clone(), helm_version.clone());
    let stamp = out.join(STAMP);

    if fs::read_to_string(&stamp).is_ok_and(|recorded| recorded == key)
        && built.files().iter().all(|file| file.is_file())
    {
        eprintln!(
            "[setup] upstream Kubernetes {kubernetes_version}, etcd, Helm {helm_version}, Prometheus and Istio CRDs: up to date in {}",
            out.display()
        );
        return Ok(built);
    }

    // A build that stops half-way must not look finished next time.
    match fs::remove_file(&stamp) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("removing {}", stamp.display())),
    }
    let bin = out.join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;

    eprintln!(
        "[setup] building upstream Kubernetes {kubernetes_version}, etcd, Helm {helm_version} and Prometheus with {go_version} \
         into {} (a cold build takes a long while)",
        out.display()
    );
    let started = Instant::now();

    for dir in MODULE_DIRS.iter().map(|dir| {
        if *dir == "." {
            tools.clone()
        } else {
            tools.join(dir)
        }
    }) {
        eprintln!("[setup] downloading Go modules for {} …", dir.display());
        let step = Instant::now();
        go_quietly(
            go(&dir).args(["mod", "download"]),
            &format!("downloading the Go modules of {}", dir.display()),
        )?;
        eprintln!("[setup] downloaded in {:.0?}", step.elapsed());
    }

    let kubernetes_flags = ldflags(&kubernetes_version)?;
    let helm_flags = helm_ldflags(&helm_version);
    for (index, program) in PROGRAMS.iter().enumerate() {
        eprintln!(
            "[setup] building {} ({}/{}) …",
            program.name,
            index + 1,
            PROGRAMS.len()
        );
        let step = Instant::now();
        let output = bin.join(program.name);
        let flags = match program.version {
            Version::Kubernetes => kubernetes_flags.as_str(),
            Version::Helm => helm_flags.as_str(),
            Version::Builtin => "-s -w",
        };
        let mut command = go(&tools.join(program.module_dir));
        command.args(["build", "-trimpath", "-ldflags", flags]);
        if let Some(tags) = program.tags {
            command.arg(format!("-tags={tags}"));
        }
        command.arg("-o").arg(&output).arg(program.package);
        go_quietly(&mut command, &format!("building {}", program.name))?;
        let size = fs::metadata(&output)
            .with_context(|| format!("go build left no {}", output.display()))?
            .len();
        eprintln!(
            "[setup] built {} in {:.0?} ({} MiB)",
            program.name,
            step.elapsed(),
            size / (1024 * 1024)
        );
    }

    copy_istio_crds(&tools, &built.istio_crds)?;

    fs::write(&stamp, &key).with_context(|| format!("writing {}", stamp.display()))?;
    eprintln!(
        "[setup] upstream programs built in {:.0?}",
        started.elapsed()
    );
    Ok(built)
}

/// `go` run in `dir` with the settings every step shares: module files are
/// never rewritten, no VCS stamping (the work tree is not what is built), and
/// static binaries as Kubernetes' own release builds are.
fn go(dir: &Path) -> Command {
    let mut command = Command::new("go");
    let inherited = std::env::var("GOFLAGS").unwrap_or_default();
    command
        .current_dir(dir)
        .env(
            "GOFLAGS",
            format!("{inherited} -mod=readonly -buildvcs=false").trim_start(),
        )
        .env("CGO_ENABLED", "0");
    command
}

/// Runs a go command with its output captured, and on failure reports what
/// failed with the command line and the tail of go's output.
fn go_quietly(command: &mut Command, what: &str) -> anyhow::Result<String> {
    let rendered = cmd::render(command);
    let output = command.output().with_context(|| {
        format!("{what}: cannot start `{rendered}` (is Go 1.26 or newer on PATH?)")
    })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "{what} failed: `{rendered}` exited with {}; the end of its output:\n{}",
            output.status,
            tail(&format!("{stdout}{stderr}"), 40)
        );
    }
    Ok(stdout)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn go_version() -> anyhow::Result<String> {
    let version = go_quietly(
        Command::new("go").arg("version"),
        "finding the Go toolchain",
    )?;
    Ok(version.trim().to_owned())
}

/// The `k8s.io/kubernetes` version `tools/go.mod` requires, e.g. `v1.36.3`.
fn kubernetes_version(tools: &Path) -> anyhow::Result<String> {
    required_version(&tools.join("go.mod"), "k8s.io/kubernetes")
}

/// The `helm.sh/helm/v4` version `tools/helm/go.mod` requires, e.g. `v4.3.2`.
fn helm_version(tools: &Path) -> anyhow::Result<String> {
    required_version(&tools.join("helm").join("go.mod"), "helm.sh/helm/v4")
}

/// The version of `module` that the go.mod file at `path` requires.
fn required_version(path: &Path, module: &str) -> anyhow::Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            // Either `require MODULE vX` or a line of a require block.
            let first = words.next()?;
            let (name, version) = if first == "require" {
                (words.next()?, words.next()?)
            } else {
                (first, words.next()?)
            };
            (name == module && version.starts_with('v')).then(|| version.to_owned())
        })
        .next()
        .with_context(|| format!("{} requires no {module} version", path.display()))
}

/// `-s -w` and the release `helm version` reports, as Helm's own Makefile
/// sets them for a tagged build (no `+unreleased` metadata).
fn helm_ldflags(helm_version: &str) -> String {
    format!(
        "-s -w -X helm.sh/helm/v4/internal/version.version={helm_version} \
         -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
    )
}

/// `-s -w` and the version the binaries report (`kubectl version`,
/// `/version`, and the binary version kube-apiserver's compatibility-version
/// logic starts from: left at v0.0.0 it refuses to start).
fn ldflags(kubernetes_version: &str) -> anyhow::Result<String> {
    let numbers = kubernetes_version.trim_start_matches('v');
    let mut parts = numbers.split('.');
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
        bail!("cannot read major and minor from Kubernetes version {kubernetes_version}");
    };
    let mut flags = String::from("-s -w");
    for package in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        for (name, value) in [
            ("gitVersion", kubernetes_version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        ] {
            flags.push_str(&format!(" -X {package}.{name}={value}"));
        }
    }
    Ok(flags)
}

/// What the stamp records: the recipe, the Go version and a hash of every
/// pinned file.
fn stamp_key(tools: &Path, go_version: &str) -> anyhow::Result<String> {
    let mut hash = Fnv64::new();
    for file in PINNED_FILES {
        let path = tools.join(file);
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        hash.write(file.as_bytes());
        hash.write(&[0]);
        hash.write(&(bytes.len() as u64).to_le_bytes());
        hash.write(&bytes);
    }
    Ok(format!(
        "{RECIPE}\n{go_version}\npins {:016x}\n",
        hash.finish()
    ))
}

/// FNV-1a, 64 bits: a stable hash with std only (`DefaultHasher` may change
/// between Rust releases).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Copies `kubernetes/customresourcedefinitions.gen.yaml` out of the pinned
/// `istio.io/api` module (module-cache files are read-only: the copy is made
/// writable so that the next build can replace it).
fn copy_istio_crds(tools: &Path, to: &Path) -> anyhow::Result<()> {
    eprintln!("[setup] copying Istio's CRDs from istio.io/api …");
    let dir = go_quietly(
        go(tools).args(["list", "-m", "-f", "{{.Dir}}", "istio.io/api"]),
        "finding the istio.io/api module",
    )?;
    let dir = dir.trim();
    if dir.is_empty() {
        bail!("`go list -m istio.io/api` gave no directory: is the module downloaded?");
    }
    let from = Path::new(dir).join(ISTIO_CRDS_IN_MODULE);
    let crds = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
    if !crds
        .windows(b"kind: CustomResourceDefinition".len())
        .any(|window| window == b"kind: CustomResourceDefinition")
    {
        bail!("{} holds no CustomResourceDefinition", from.display());
    }
    match fs::remove_file(to) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("removing {}", to.display())),
    }
    fs::write(to, &crds).with_context(|| format!("writing {}", to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldflags_carry_the_release() {
        let flags = ldflags("v1.36.3").unwrap();
        assert!(flags.starts_with("-s -w "));
        for package in [
            "k8s.io/component-base/version",
            "k8s.io/client-go/pkg/version",
        ] {
            assert!(flags.contains(&format!("-X {package}.gitVersion=v1.36.3")));
            assert!(flags.contains(&format!("-X {package}.gitMajor=1")));
            assert!(flags.contains(&format!("-X {package}.gitMinor=36")));
            assert!(flags.contains(&format!("-X {package}.gitTreeState=clean")));
        }
    }

    #[test]
    fn the_pinned_release_is_read_from_go_mod() {
        let version = kubernetes_version(&tools_dir()).unwrap();
        assert!(version.starts_with("v1."), "{version}");
        let helm = helm_version(&tools_dir()).unwrap();
        assert!(helm.starts_with("v4."), "{helm}");
    }

    #[test]
    fn helm_reports_its_release() {
        assert_eq!(
            helm_ldflags("v4.3.2"),
            "-s -w -X helm.sh/helm/v4/internal/version.version=v4.3.2 \
             -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
        );
    }

    #[test]
    fn every_module_and_its_files_are_pinned() {
        for program in PROGRAMS {
            assert!(
                MODULE_DIRS.contains(&program.module_dir),
                "{} is built from {}, which is never downloaded",
                program.name,
                program.module_dir
            );
        }
        for dir in MODULE_DIRS {
            for file in ["go.mod", "go.sum"] {
                let path = if *dir == "." {
                    file.to_owned()
                } else {
                    format!("{dir}/{file}")
                };
                assert!(
                    PINNED_FILES.contains(&path.as_str()),
                    "{path} is not pinned"
                );
                assert!(tools_dir().join(&path).is_file(), "{path} is missing");
            }
        }
    }

    #[test]
    fn fnv_is_stable() {
        let mut hash = Fnv64::new();
        hash.write(b"a");
        assert_eq!(hash.finish(), 0xaf63_dc4c_8601_ec8c);
    }
}
