//! Helpers for the monitor tests: a real PKI made with `openssl` in kubeadm's layout, a
//! cluster.yaml, and running the generated configs through the real tools.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{describe, openssl_req_p256, openssl_sign};

/// A CA (`<name>.crt`, `<name>.key`) under `dir`.
pub fn make_ca(dir: &Path, name: &str, cn: &str) {
    std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
    openssl_req_p256(
        dir,
        &[
            "-x509",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-subj",
            &format!("/CN={cn}"),
            "-days",
            "3650",
        ],
    );
}

/// A leaf certificate signed by `ca` (a name relative to `dir`) valid `days`, with the given
/// subjectAltNames (`IP:…`, `DNS:…`, may be empty) and usage for server and client auth.
pub fn make_leaf(dir: &Path, ca: &str, name: &str, cn: &str, sans: &[String], days: u32) {
    std::fs::create_dir_all(dir.join(name).parent().unwrap()).unwrap();
    let ext = dir.join(format!("{name}.ext"));
    let mut text = String::from(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
    );
    if !sans.is_empty() {
        text.push_str(&format!("subjectAltName={}\n", sans.join(",")));
    }
    std::fs::write(&ext, text).unwrap();
    openssl_req_p256(
        dir,
        &[
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}/O=system:masters"),
        ],
    );
    openssl_sign(dir, ca, name, &format!("{name}.ext"), days);
    std::fs::remove_file(dir.join(format!("{name}.csr"))).unwrap();
    std::fs::remove_file(ext).unwrap();
}

/// kubeadm's PKI layout with what the monitor uses, for etcd serving on `etcd_ips`.
pub fn make_pki(pki: &Path, etcd_ips: &[&str]) {
    std::fs::create_dir_all(pki.join("etcd")).unwrap();
    make_ca(pki, "ca", "kubernetes");
    make_ca(pki, "etcd/ca", "etcd-ca");
    let sans: Vec<String> = etcd_ips
        .iter()
        .map(|ip| format!("IP:{ip}"))
        .chain(["DNS:localhost".to_string()])
        .collect();
    make_leaf(pki, "etcd/ca", "etcd/server", "etcd-server", &sans, 365);
    for (ca, name, cn, days) in [
        (
            "etcd/ca",
            "etcd/metrics-client",
            "clusterkit-etcd-metrics",
            365,
        ),
        (
            "etcd/ca",
            "apiserver-etcd-client",
            "kube-apiserver-etcd-client",
            365,
        ),
        (
            "ca",
            "apiserver-kubelet-client",
            "kube-apiserver-kubelet-client",
            365,
        ),
        // Valid for 20 days only, so certificate metrics have something to warn about.
        ("ca", "front-proxy-client", "front-proxy-client", 20),
    ] {
        make_leaf(pki, ca, name, cn, &[], days);
    }
}

/// Runs a tool and returns stdout, failing with everything shown.
pub fn tool_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e} (install it: bash scripts/deps.sh)"));
    if !out.status.success() {
        panic!("{}", describe(cmd, &out, "expected success"));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn promtool() -> PathBuf {
    crate::common::tool("CLUSTERKIT_PROMTOOL", Path::new("/usr/bin/promtool"))
}

pub fn amtool() -> PathBuf {
    crate::common::tool("CLUSTERKIT_AMTOOL", Path::new("/usr/bin/amtool"))
}

pub fn prometheus() -> PathBuf {
    crate::common::tool("CLUSTERKIT_PROMETHEUS", Path::new("/usr/bin/prometheus"))
}

pub fn alertmanager() -> PathBuf {
    crate::common::tool(
        "CLUSTERKIT_ALERTMANAGER",
        Path::new("/usr/bin/prometheus-alertmanager"),
    )
}

pub fn etcd() -> PathBuf {
    crate::common::tool("CLUSTERKIT_ETCD", Path::new("/usr/bin/etcd"))
}

pub fn node_exporter() -> PathBuf {
    crate::common::tool(
        "CLUSTERKIT_NODE_EXPORTER",
        Path::new("/usr/bin/prometheus-node-exporter"),
    )
}

/// Every dashboard panel query, as a recording-rule file promtool can check.
pub fn dashboard_rules(dashboards_dir: &Path) -> (String, Vec<String>) {
    let mut exprs = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dashboards_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in d["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                exprs.push(target["expr"].as_str().unwrap().to_string());
            }
        }
    }
    let mut text = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        text.push_str(&format!(
            "      - record: clusterkit_dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    (text, exprs)
}

/// `curl` of `url`, trusting only `ca`; `user` (`name:password`) and a client pair are
/// optional. The login reaches curl on its stdin (`-K -`), never on a command line. Returns
/// the HTTP status (`000` when no HTTP answer came: connection or TLS handshake refused) and
/// the body (curl's error text when there was none).
pub fn curl(
    url: &str,
    ca: &Path,
    user: Option<&str>,
    cert: Option<(&Path, &Path)>,
) -> (String, String) {
    use std::io::Write;
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(ca)
    .args(["-K", "-"]);
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    cmd.arg(url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("curl (install it: bash scripts/deps.sh)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(u) = user {
        writeln!(stdin, "user = \"{u}\"").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    let body = if body.is_empty() {
        String::from_utf8_lossy(&out.stderr).into_owned()
    } else {
        body.to_string()
    };
    (code.trim().to_string(), body)
}
