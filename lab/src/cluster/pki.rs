//! The cluster's credentials, as kubeadm would lay them out: one CA, the API
//! server's serving certificate, a client certificate per control-plane
//! component (the API server reads the common name as the user and the
//! organisation as the group, which the default RBAC bindings name), the
//! service-account signing key pair, and a kubeconfig per client.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::certs::{CertAuthority, Identity};
use crate::cmd;
use crate::error::{LabError, Result};

/// Everything the control plane and its clients authenticate with.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca: CertAuthority,
    pub apiserver: Identity,
    /// Signs and verifies service-account tokens (ECDSA P-256).
    pub service_account_key: PathBuf,
    pub service_account_public: PathBuf,
    pub admin: Identity,
    pub controller_manager: Identity,
    pub scheduler: Identity,
    pub kube_proxy: Identity,
}

/// The names a client of the API server may use for it.
const APISERVER_NAMES: [&str; 5] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
];

impl Pki {
    /// Creates it all in `dir`; `apiserver_ips` are the addresses the API
    /// server is reached at (its own, and the `kubernetes` Service's
    /// cluster IP).
    pub fn create(dir: &Path, apiserver_ips: &[IpAddr]) -> Result<Pki> {
        let ca = CertAuthority::create(dir, "meshdrift-lab-kubernetes-ca")?;
        let names: Vec<String> = APISERVER_NAMES.iter().map(|n| (*n).to_owned()).collect();
        let mut ips = apiserver_ips.to_vec();
        ips.push(IpAddr::from([127, 0, 0, 1]));
        let apiserver = ca.issue_server("kube-apiserver", &names, &ips)?;
        let service_account_key = dir.join("service-account.key");
        let service_account_public = dir.join("service-account.pub");
        cmd::run(
            Command::new("openssl")
                .args([
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                ])
                .arg(&service_account_key),
        )?;
        cmd::run(
            Command::new("openssl")
                .args(["ec", "-pubout", "-in"])
                .arg(&service_account_key)
                .arg("-out")
                .arg(&service_account_public),
        )?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            admin: ca.issue_kubernetes_client(
                "admin",
                "meshdrift-lab-admin",
                &["system:masters"],
            )?,
            controller_manager: ca.issue_kubernetes_client(
                "kube-controller-manager",
                "system:kube-controller-manager",
                &[],
            )?,
            scheduler: ca.issue_kubernetes_client(
                "kube-scheduler",
                "system:kube-scheduler",
                &[],
            )?,
            kube_proxy: ca.issue_kubernetes_client("kube-proxy", "system:kube-proxy", &[])?,
            ca,
            apiserver,
            service_account_key,
            service_account_public,
        })
    }

    /// Writes a kubeconfig for `identity` talking to `server` and returns
    /// its path (`<dir>/<name>.kubeconfig`).
    pub fn kubeconfig(&self, name: &str, server: &str, identity: &Identity) -> Result<PathBuf> {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n  - name: lab\n    cluster:\n      server: {server}\n      certificate-authority: {ca}\n\
             users:\n  - name: {name}\n    user:\n      client-certificate: {cert}\n      client-key: {key}\n\
             contexts:\n  - name: lab\n    context:\n      cluster: lab\n      user: {name}\ncurrent-context: lab\n",
            ca = self.ca.cert.display(),
            cert = identity.cert.display(),
            key = identity.key.display(),
        );
        std::fs::write(&path, text).map_err(|e| LabError::io("writing", &path, e))?;
        Ok(path)
    }
}
