//! Real components for the backup tests: a TLS etcd 3.4 on loopback (certificates made with
//! the openssl CLI), an s3s-fs S3 server, and helpers to run `clusterkit backup|restore`.
//! Every process is stopped by its PID when its guard drops.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{self, free_port, run_ok, tool, wait_until, Child};

/// Runs a command and panics with its output on failure.
fn sh(cmd: &mut Command) {
    run_ok(cmd);
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Certs {
    pub fn generate(dir: &Path) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let p = |n: &str| dir.join(n);
        let openssl = || {
            let mut c = Command::new("openssl");
            c.current_dir(dir);
            c
        };
        sh(openssl().args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test-etcd-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]));
        std::fs::write(
            p("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        std::fs::write(p("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        for (name, ext) in [("server", "server.ext"), ("client", "client.ext")] {
            sh(openssl().args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]));
            common::openssl_sign(dir, "ca", name, ext, 2);
        }
        Certs {
            ca: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
        }
    }
}

/// One etcd member with TLS on free loopback ports.
pub struct Etcd {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub client_url: String,
    pub peer_url: String,
    pub name: String,
    log: PathBuf,
}

pub fn etcd_bin() -> PathBuf {
    tool("CLUSTERKIT_ETCD", Path::new("/usr/bin/etcd"))
}

pub fn etcdctl_bin() -> PathBuf {
    tool("CLUSTERKIT_ETCDCTL", Path::new("/usr/bin/etcdctl"))
}

impl Etcd {
    pub fn start(dir: &Path, certs: &Certs) -> Etcd {
        let mut e = Etcd {
            child: None,
            data_dir: dir.join("etcd-data"),
            client_url: format!("https://127.0.0.1:{}", free_port()),
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            name: "default".into(),
            log: dir.join("etcd.log"),
        };
        e.boot(certs);
        e
    }

    /// (Re)starts etcd on its data dir and waits until it answers.
    pub fn boot(&mut self, certs: &Certs) {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(etcd_bin())
            .args(["--name", &self.name, "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args([
                "--initial-cluster",
                &format!("{}={}", self.name, self.peer_url),
            ])
            .arg("--cert-file")
            .arg(&certs.server_cert)
            .arg("--key-file")
            .arg(&certs.server_key)
            .arg("--trusted-ca-file")
            .arg(&certs.ca)
            .arg("--client-cert-auth")
            .args(["--quota-backend-bytes", "8589934592"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(Child(child));
        let ok = wait_until(Duration::from_secs(30), || {
            Command::new(etcdctl_bin())
                .args(self.ctl_args(certs))
                .args(["endpoint", "health"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        });
        assert!(
            ok,
            "etcd did not become healthy; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn ctl_args(&self, certs: &Certs) -> Vec<String> {
        vec![
            format!("--endpoints={}", self.client_url),
            format!("--cacert={}", certs.ca.display()),
            format!("--cert={}", certs.client_cert.display()),
            format!("--key={}", certs.client_key.display()),
        ]
    }

    pub fn stop(&mut self) {
        self.child = None; // Child's Drop kills by PID and waits
    }

    /// Flags for `clusterkit backup etcd`.
    pub fn backup_flags(&self, certs: &Certs) -> Vec<String> {
        vec![
            "--endpoints".into(),
            self.client_url.clone(),
            "--cacert".into(),
            certs.ca.display().to_string(),
            "--cert".into(),
            certs.client_cert.display().to_string(),
            "--key".into(),
            certs.client_key.display().to_string(),
        ]
    }

    /// Flags for `clusterkit restore etcd` into this member's data dir.
    pub fn restore_flags(&self) -> Vec<String> {
        vec![
            "--data-dir".into(),
            self.data_dir.display().to_string(),
            "--name".into(),
            self.name.clone(),
            "--initial-advertise-peer-urls".into(),
            self.peer_url.clone(),
            "--etcdctl".into(),
            etcdctl_bin().display().to_string(),
            "--yes".into(),
        ]
    }
}

/// An etcd-client connected over TLS.
pub async fn client(e: &Etcd, certs: &Certs) -> etcd_client::Client {
    let tls = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(
            std::fs::read(&certs.ca).unwrap(),
        ))
        .identity(etcd_client::Identity::from_pem(
            std::fs::read(&certs.client_cert).unwrap(),
            std::fs::read(&certs.client_key).unwrap(),
        ));
    etcd_client::Client::connect(
        [e.client_url.as_str()],
        Some(etcd_client::ConnectOptions::new().with_tls(tls)),
    )
    .await
    .expect("connect to etcd")
}

/// Writes `n` keys `key-000000…` with values from `value(i)`, in transactions of 100.
pub async fn fill(c: &mut etcd_client::Client, n: usize, value: impl Fn(usize) -> Vec<u8>) {
    for start in (0..n).step_by(100) {
        let ops: Vec<_> = (start..(start + 100).min(n))
            .map(|i| etcd_client::TxnOp::put(format!("key-{i:06}"), value(i), None))
            .collect();
        c.txn(etcd_client::Txn::new().and_then(ops))
            .await
            .expect("txn");
    }
}

/// Every key and value under `key-`.
pub async fn dump(c: &mut etcd_client::Client) -> Vec<(Vec<u8>, Vec<u8>)> {
    let r = c
        .get("key-", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("get");
    r.kvs()
        .iter()
        .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
        .collect()
}

/// An s3s-fs server on a free loopback port, with one bucket.
pub struct S3 {
    pub child: Option<Child>,
    pub root: PathBuf,
    pub port: u16,
    pub bucket: String,
    log: PathBuf,
    /// The directory of `start_temp`, removed after the server has stopped (fields drop in
    /// order).
    _tmp: Option<tempfile::TempDir>,
}

pub const ACCESS_KEY: &str = "ck-test-access";
pub const SECRET_KEY: &str = "ck-test-secret-0123456789";

impl S3 {
    pub fn start(dir: &Path, bucket: &str) -> S3 {
        let root = dir.join("s3root");
        // s3s-fs keeps each bucket as a directory of its root.
        std::fs::create_dir_all(root.join(bucket)).unwrap();
        let mut s = S3 {
            child: None,
            root,
            port: free_port(),
            bucket: bucket.into(),
            log: dir.join("s3s.log"),
            _tmp: None,
        };
        s.boot();
        s
    }

    /// `start` in a temporary directory of its own, removed when the server is dropped.
    pub fn start_temp(bucket: &str) -> S3 {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = S3::start(tmp.path(), bucket);
        s._tmp = Some(tmp);
        s
    }

    pub fn boot(&mut self) {
        let bin = tool(
            "CLUSTERKIT_S3S_FS",
            &common::cache_dir().join("s3s/bin/s3s-fs"),
        );
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(Child(child));
        let port = self.port;
        assert!(
            common::listens(port, Duration::from_secs(20)),
            "s3s-fs did not listen on {port}"
        );
    }

    pub fn kill(&mut self) {
        self.child = None;
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// Store options pointing at this server (no environment needed).
    pub fn options(&self) -> clusterkit_backup::store::StoreOptions {
        let mut o = clusterkit_backup::store::StoreOptions::default();
        o.s3.endpoint = Some(format!("http://127.0.0.1:{}", self.port));
        o.s3.region = Some("us-east-1".into());
        o.s3.access_key_id = Some(ACCESS_KEY.into());
        o.s3.secret_access_key = Some(SECRET_KEY.into());
        o
    }

    /// Applies the S3 environment to a clusterkit command.
    pub fn env(&self, cmd: &mut Command) {
        cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN");
    }

    /// Files of the bucket (relative paths), recursively.
    pub fn files(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.root, &self.root, &mut out);
        out
    }

    /// Every stored file's content concatenated (to look for plaintext).
    pub fn all_bytes(&self) -> Vec<u8> {
        self.files()
            .iter()
            .flat_map(|f| std::fs::read(self.root.join(f)).unwrap_or_default())
            .collect()
    }
}

pub fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
}

/// `clusterkit` in `cwd` (no cluster.yaml there).
pub fn ck(cwd: &Path) -> Command {
    let mut c = common::clusterkit();
    c.current_dir(cwd);
    c
}

/// `clusterkit ARGS…` in `cwd` (no cluster.yaml there), with the environment of the S3 server
/// `s3` when there is one.
pub fn ck_s3(cwd: &Path, s3: Option<&S3>, args: &[&str]) -> Command {
    let mut c = ck(cwd);
    c.args(args);
    if let Some(s) = s3 {
        s.env(&mut c);
    }
    c
}

/// Ids from `backup list -o json`.
pub fn list_ids(cwd: &Path, store: &str, s3: Option<&S3>) -> Vec<String> {
    let mut c = ck_s3(cwd, s3, &["backup", "list", "-o", "json", "--store", store]);
    let out = run_ok(&mut c);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// Runs a backup and returns the new id (from `-o json`).
pub fn backup(
    cwd: &Path,
    store: &str,
    etcd: &Etcd,
    certs: &Certs,
    s3: Option<&S3>,
    extra: &[&str],
) -> String {
    let mut c = ck_s3(cwd, s3, &["backup", "etcd", "-o", "json", "--store", store]);
    c.args(etcd.backup_flags(certs));
    c.args(extra);
    let out = run_ok(&mut c);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["id"].as_str().unwrap().to_string()
}
