//! Per-lab certificates made with the `openssl` CLI: a CA, server identities
//! whose SANs hold the pod's IPs and DNS names, and client identities carrying
//! an Istio-style SPIFFE id. ECDSA P-256 keeps generation to milliseconds.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cmd;
use crate::error::{LabError, Result};

/// A certificate, its key, and both concatenated (what HAProxy's `crt` wants).
#[derive(Debug, Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate followed by key, one PEM file.
    pub bundle: PathBuf,
}

/// The lab's certificate authority.
#[derive(Debug, Clone)]
pub struct CertAuthority {
    dir: PathBuf,
    /// CA certificate (trust anchor for curl `--cacert`, nginx `ssl_client_certificate`).
    pub cert: PathBuf,
    key: PathBuf,
}

static SERIAL: AtomicU64 = AtomicU64::new(1);

impl CertAuthority {
    /// Creates `ca.pem` / `ca.key` in `dir`.
    pub fn create(dir: &Path, common_name: &str) -> Result<CertAuthority> {
        std::fs::create_dir_all(dir).map_err(|e| LabError::io("creating", dir, e))?;
        let cert = dir.join("ca.pem");
        let key = dir.join("ca.key");
        let subject = format!("/O=meshdrift-lab/CN={common_name}");
        cmd::run(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .args(["-days", "7", "-subj", &subject]),
        )?;
        Ok(CertAuthority {
            dir: dir.to_path_buf(),
            cert,
            key,
        })
    }

    /// A server identity: SANs are every DNS name and IP given.
    pub fn issue_server(
        &self,
        file_stem: &str,
        dns: &[String],
        ips: &[IpAddr],
    ) -> Result<Identity> {
        let mut sans: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
        sans.extend(ips.iter().map(|ip| format!("IP:{ip}")));
        let cn = dns.first().cloned().unwrap_or_else(|| file_stem.to_owned());
        self.issue(file_stem, &cn, &sans, "serverAuth")
    }

    /// A client identity with the SPIFFE id Istio would give the workload's
    /// service account: `spiffe://cluster.local/ns/<namespace>/sa/<account>`.
    pub fn issue_client(
        &self,
        file_stem: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Identity> {
        let san = format!("URI:spiffe://cluster.local/ns/{namespace}/sa/{service_account}");
        self.issue(file_stem, service_account, &[san], "clientAuth")
    }

    /// A Kubernetes client certificate: the API server reads the common name
    /// as the user and each organisation as a group (`system:masters`, …).
    pub fn issue_kubernetes_client(
        &self,
        file_stem: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<Identity> {
        let subject: String = groups
            .iter()
            .map(|group| format!("/O={group}"))
            .chain(std::iter::once(format!("/CN={user}")))
            .collect();
        self.issue_subject(file_stem, &subject, &[], "clientAuth")
    }

    fn issue(&self, stem: &str, cn: &str, sans: &[String], usage: &str) -> Result<Identity> {
        self.issue_subject(stem, &format!("/O=meshdrift-lab/CN={cn}"), sans, usage)
    }

    fn issue_subject(
        &self,
        stem: &str,
        subject: &str,
        sans: &[String],
        usage: &str,
    ) -> Result<Identity> {
        if stem.is_empty()
            || !stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(LabError::invalid("certificate file name", stem));
        }
        let cert = self.dir.join(format!("{stem}.pem"));
        let key = self.dir.join(format!("{stem}.key"));
        let csr = self.dir.join(format!("{stem}.csr"));
        let ext = self.dir.join(format!("{stem}.ext"));
        let bundle = self.dir.join(format!("{stem}-bundle.pem"));
        let mut ext_text = format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
        );
        if !sans.is_empty() {
            ext_text.push_str(&format!("subjectAltName={}\n", sans.join(",")));
        }
        std::fs::write(&ext, ext_text).map_err(|e| LabError::io("writing", &ext, e))?;
        cmd::run(
            Command::new("openssl")
                .args([
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                ])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr)
                .args(["-subj", subject]),
        )?;
        let serial = format!(
            "{}",
            SERIAL.fetch_add(1, Ordering::Relaxed) + (std::process::id() as u64) * 1_000_000
        );
        cmd::run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "7", "-set_serial", &serial])
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&self.cert)
                .arg("-CAkey")
                .arg(&self.key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&cert),
        )?;
        let mut pem = std::fs::read(&cert).map_err(|e| LabError::io("reading", &cert, e))?;
        pem.extend(std::fs::read(&key).map_err(|e| LabError::io("reading", &key, e))?);
        std::fs::write(&bundle, pem).map_err(|e| LabError::io("writing", &bundle, e))?;
        let _ = std::fs::remove_file(&csr);
        Ok(Identity { cert, key, bundle })
    }
}
