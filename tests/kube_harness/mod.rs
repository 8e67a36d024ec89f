//! A real Kubernetes control plane for the namespace backup tests: etcd 3.4 (TLS) +
//! kube-apiserver v1.20.2 (+ kube-controller-manager, for service accounts, ownerReferences and
//! garbage collection, namespace deletion) on free loopback ports in a temporary directory, with
//! a minimal PKI made by the openssl CLI (the S3 server these tests store into is
//! `backup_util::S3`). Every process is stopped by its PID when the guard drops, even when a
//! test fails.
//!
//! Binaries: `CLUSTERKIT_KUBE_BIN_DIR` (default `/var/cache/clusterkit/kube-v1.20.2-r2/bin`),
//! `CLUSTERKIT_ETCD` (default `/usr/bin/etcd`), both built or installed by `scripts/deps.sh`;
//! and `CLUSTERKIT_CURL` (default `/usr/bin/curl`) to wait for the API server's /healthz.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clusterkit_backup::namespace::ApiClient;

use crate::common::{
    cache_dir, free_port, listens, openssl, openssl_sign, tool, wait_until, Child,
};

/// The Kubernetes server binaries.
pub fn kube_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("CLUSTERKIT_KUBE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("kube-v1.20.2-r2/bin"));
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} does not exist: set CLUSTERKIT_KUBE_BIN_DIR or run `bash scripts/deps.sh` (it builds Kubernetes v1.20.2)",
        bin.display()
    );
    bin
}

/// Files of a minimal PKI.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

impl Pki {
    /// A CA (EC P-256, fast to make), a serving certificate for 127.0.0.1 (also used as etcd's
    /// server and client certificate), an admin client certificate in `system:masters`, and
    /// the service-account signing key pair.
    fn generate(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let p = |n: &str| dir.join(n);
        let key = |name: &str| {
            openssl(
                dir,
                &[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    name,
                ],
            )
        };
        key("ca.key");
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-days",
                "2",
                "-subj",
                "/CN=clusterkit-test-ca",
                "-out",
                "ca.crt",
            ],
        );
        std::fs::write(
            p("server.ext"),
            "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default\n\
             extendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
        )
        .unwrap();
        std::fs::write(
            p("admin.ext"),
            "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n",
        )
        .unwrap();
        for (name, subject, ext) in [
            ("server", "/CN=kube-apiserver", "server.ext"),
            (
                "admin",
                "/O=system:masters/CN=clusterkit-admin",
                "admin.ext",
            ),
        ] {
            key(&format!("{name}.key"));
            openssl(
                dir,
                &[
                    "req",
                    "-new",
                    "-key",
                    &format!("{name}.key"),
                    "-subj",
                    subject,
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl_sign(dir, "ca", name, ext, 2);
        }
        key("sa.key");
        openssl(dir, &["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        Pki {
            ca: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            admin_cert: p("admin.crt"),
            admin_key: p("admin.key"),
            sa_key: p("sa.key"),
            sa_pub: p("sa.pub"),
        }
    }
}

/// etcd + kube-apiserver + kube-controller-manager on loopback.
pub struct KubeCluster {
    /// Processes in start order; dropped (killed by PID) in reverse order.
    children: Vec<Child>,
    /// The admin kubeconfig (client certificate in system:masters).
    pub kubeconfig: PathBuf,
    pub api_url: String,
    /// etcd's client URL (TLS), for tests that back etcd up directly.
    pub etcd_url: String,
    /// CA, client certificate and key that etcd accepts (the API server's own).
    pub etcd_tls: (PathBuf, PathBuf, PathBuf),
    /// Logs of the three servers, shown when startup fails.
    logs: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        while let Some(child) = self.children.pop() {
            drop(child);
        }
    }
}

/// The start of a Go crash (if any) and the last lines of a log.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    // A Go crash, or klog's Fatal (a line `F1122 …`, then every goroutine's stack).
    let klog_fatal =
        |l: &str| l.len() > 5 && l.starts_with('F') && l[1..5].bytes().all(|b| b.is_ascii_digit());
    if let Some(i) = lines
        .iter()
        .position(|l| l.starts_with("fatal error") || l.starts_with("panic:") || klog_fatal(l))
    {
        out.push_str(&lines[i..(i + 40).min(lines.len())].join("\n"));
        out.push_str("\n...\n");
    }
    out.push_str(&lines[lines.len().saturating_sub(30)..].join("\n"));
    out
}

impl KubeCluster {
    /// Starts everything and waits until each server listens (see [`KubeCluster::client`] for
    /// readiness).
    pub fn start() -> KubeCluster {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let pki = Pki::generate(&root.join("pki"));
        let mut cluster = KubeCluster {
            children: Vec::new(),
            kubeconfig: root.join("admin.conf"),
            api_url: String::new(),
            etcd_url: String::new(),
            etcd_tls: (
                pki.ca.clone(),
                pki.server_cert.clone(),
                pki.server_key.clone(),
            ),
            logs: Vec::new(),
            _dir: dir,
        };

        // etcd, TLS with client certificates, loopback only.
        let etcd = tool("CLUSTERKIT_ETCD", Path::new("/usr/bin/etcd"));
        let (client_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("https://127.0.0.1:{client_port}");
        cluster.etcd_url = etcd_url.clone();
        let etcd_log = root.join("etcd.log");
        let mut etcd_cmd = Command::new(etcd);
        etcd_cmd
            .args(["--name", "test", "--data-dir"])
            .arg(root.join("etcd"))
            .args([
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .args([
                "--initial-cluster",
                &format!("test=http://127.0.0.1:{peer_port}"),
            ])
            .arg("--cert-file")
            .arg(&pki.server_cert)
            .arg("--key-file")
            .arg(&pki.server_key)
            .arg("--trusted-ca-file")
            .arg(&pki.ca)
            .arg("--client-cert-auth")
            // The tests create tens of thousands of objects quickly.
            .args([
                "--quota-backend-bytes",
                "4294967296",
                "--snapshot-count",
                "100000",
            ]);
        cluster.spawn(&mut etcd_cmd, etcd_log);
        assert!(
            listens(client_port, Duration::from_secs(20)),
            "etcd did not listen:\n{}",
            log_tail(&cluster.logs[0])
        );

        let api_port = free_port();
        cluster.api_url = format!("https://127.0.0.1:{api_port}");
        let api_log = root.join("kube-apiserver.log");
        let mut api = Command::new(kube_bin("kube-apiserver"));
        api.args(["--etcd-servers", &etcd_url])
            .arg(format!("--etcd-cafile={}", pki.ca.display()))
            .arg(format!("--etcd-certfile={}", pki.server_cert.display()))
            .arg(format!("--etcd-keyfile={}", pki.server_key.display()))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={api_port}"))
            .arg("--insecure-port=0")
            .arg(format!(
                "--cert-dir={}",
                root.join("apiserver-certs").display()
            ))
            .arg(format!("--tls-cert-file={}", pki.server_cert.display()))
            .arg(format!(
                "--tls-private-key-file={}",
                pki.server_key.display()
            ))
            .arg(format!("--client-ca-file={}", pki.ca.display()))
            .arg(format!(
                "--service-account-key-file={}",
                pki.sa_pub.display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--service-node-port-range=30000-32767")
            .arg("--authorization-mode=RBAC")
            .arg("--enable-priority-and-fairness=false")
            // Fast deletes of big namespaces and many CRs.
            .arg("--max-requests-inflight=1000")
            .arg("--max-mutating-requests-inflight=500");
        cluster.spawn(&mut api, api_log);

        std::fs::write(
            &cluster.kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
                 users:\n- name: admin\n  user:\n    client-certificate: {}\n    client-key: {}\n\
                 contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\ncurrent-context: test\n",
                cluster.api_url,
                pki.ca.display(),
                pki.admin_cert.display(),
                pki.admin_key.display()
            ),
        )
        .unwrap();
        assert!(
            listens(api_port, Duration::from_secs(60)),
            "kube-apiserver did not listen:\n{}",
            log_tail(&cluster.logs[1])
        );

        // kube-controller-manager v1.20 gives the API server only 10 s to report /healthz ok
        // and then exits (klog.Fatal "failed to wait for apiserver being healthy"); on a loaded
        // CI machine the API server can take longer after it starts listening. So it starts
        // only once /healthz answers ok.
        let curl = tool("CLUSTERKIT_CURL", Path::new("/usr/bin/curl"));
        let healthz = format!("{}/healthz", cluster.api_url);
        let healthy = || {
            Command::new(&curl)
                .args(["-sf", "-o", "/dev/null", "--max-time", "5", "--cacert"])
                .arg(&pki.ca)
                .arg("--cert")
                .arg(&pki.admin_cert)
                .arg("--key")
                .arg(&pki.admin_key)
                .arg(&healthz)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        assert!(
            wait_until(Duration::from_secs(240), healthy),
            "kube-apiserver did not report /healthz ok within 240 s:\n{}",
            log_tail(&cluster.logs[1])
        );

        let cm_log = root.join("kube-controller-manager.log");
        let mut cm = Command::new(kube_bin("kube-controller-manager"));
        cm.arg(format!("--kubeconfig={}", cluster.kubeconfig.display()))
            .args([
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--port=0",
                "--leader-elect=false",
            ])
            .arg(format!(
                "--service-account-private-key-file={}",
                pki.sa_key.display()
            ))
            .arg(format!("--root-ca-file={}", pki.ca.display()))
            .arg("--use-service-account-credentials=false")
            // Deleting namespaces with thousands of objects in the tests.
            .args([
                "--concurrent-namespace-syncs=5",
                "--concurrent-gc-syncs=40",
                "--kube-api-qps=500",
                "--kube-api-burst=1000",
            ]);
        cluster.spawn(&mut cm, cm_log);
        cluster
    }

    /// Starts `cmd` with its stderr in `log` (shown by `logs`); it stops with the cluster.
    fn spawn(&mut self, cmd: &mut Command, log: PathBuf) {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()));
        self.children.push(Child(child));
        self.logs.push(log);
    }

    /// A client for the admin kubeconfig, once the API serves requests and the controller
    /// manager has created the `default` ServiceAccount (so Pods can be admitted).
    pub async fn client(&self) -> ApiClient {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut last = String::new();
        while std::time::Instant::now() < deadline {
            match ApiClient::from_kubeconfig(&self.kubeconfig).await {
                Ok(c) => match c
                    .get("/api/v1/namespaces/default/serviceaccounts", "default")
                    .await
                {
                    Ok(Some(_)) => return c,
                    Ok(None) => last = "no default ServiceAccount yet".into(),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        panic!(
            "the control plane did not become ready: {last}\n{}",
            self.logs()
        );
    }

    /// The last lines of every server log, for failure messages.
    pub fn logs(&self) -> String {
        self.logs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.display(), log_tail(p)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
