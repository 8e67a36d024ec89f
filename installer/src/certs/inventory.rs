//! What each node should hold and what it has: the certificate and kubeconfig files of a
//! host ([`node_files`]) and the one command that reads them all on the node ([`read_command`],
//! [`read_node`]): certificates whole, kubeconfigs reduced to their client-certificate line,
//! key files to their mode. Limits: private keys never leave the node; nothing is written.

use super::*;
use clusterkit_core::layout::kubeconfig_file;

/// How a node file holds its certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileKind {
    /// A PEM certificate file (`.crt`).
    Cert,
    /// A kubeconfig with an embedded client certificate (or a path to one).
    Kubeconfig,
    /// A PEM file holding a certificate and its key (the kubelet's rotated client pair): only
    /// the certificate block is read.
    CertAndKey,
}

/// A file a node should (or may) hold, as `check-expiration` reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFile {
    /// kubeadm's name (`apiserver`, `etcd-server`, `admin.conf`…).
    pub name: String,
    /// Its path on the node.
    pub remote: String,
    /// How the certificate is stored.
    pub kind: FileKind,
    /// The private key next to it on the node (`.key`), checked for presence and mode 0600.
    pub key: Option<String>,
    /// The state directory's copy, when clusterkit issues it.
    pub local: Option<PathBuf>,
    /// Present only on some nodes (kube-proxy before the addons phase, rotated kubelet
    /// certificates): no row when absent.
    pub optional: bool,
}

/// Every certificate file `host` should hold, in a stable order. The rules are those of
/// [`pki::host_files`], applied whether or not the state directory has the file, so a
/// file missing everywhere still shows as missing.
pub fn node_files(cluster: &Cluster, layout: &StateLayout, host: &Host) -> Vec<NodeFile> {
    let node = NodeLayout::from_cluster(cluster);
    let cp = host.has_role(Role::ControlPlane);
    let etcd = host.has_role(Role::Etcd);
    let pki = layout.pki_dir();
    let host_dir = layout.host_dir(&host.name);
    let mut out = Vec::new();
    let mut cert = |name: &str, rel: &str, local_root: &Path, key: bool| {
        out.push(NodeFile {
            name: name.to_string(),
            remote: node.pki(&format!("{rel}.crt")),
            kind: FileKind::Cert,
            key: key.then(|| node.pki(&format!("{rel}.key"))),
            local: Some(local_root.join(format!("{rel}.crt"))),
            optional: false,
        })
    };
    if cp {
        for (name, rel) in [
            ("ca", "ca"),
            ("apiserver", "apiserver"),
            ("apiserver-kubelet-client", "apiserver-kubelet-client"),
            ("front-proxy-ca", "front-proxy-ca"),
            ("front-proxy-client", "front-proxy-client"),
            ("apiserver-etcd-client", "apiserver-etcd-client"),
            ("etcd-ca", "etcd/ca"),
            ("etcd-healthcheck-client", "etcd/healthcheck-client"),
        ] {
            cert(name, rel, &pki, true);
        }
    } else {
        cert("ca", "ca", &pki, false);
    }
    if etcd {
        if !cp {
            cert("etcd-ca", "etcd/ca", &pki, false);
        }
        let host_pki = host_dir.join(StateLayout::PKI);
        cert("etcd-server", "etcd/server", &host_pki, true);
        cert("etcd-peer", "etcd/peer", &host_pki, true);
    }
    let mut conf = |name: &str, local: Option<PathBuf>, optional: bool| {
        out.push(NodeFile {
            name: name.to_string(),
            remote: node.kubeconfig(name),
            kind: FileKind::Kubeconfig,
            key: None,
            local,
            optional,
        })
    };
    if cp {
        conf(
            kubeconfig_file::CONTROLLER_MANAGER,
            Some(host_dir.join(kubeconfig_file::CONTROLLER_MANAGER)),
            false,
        );
        conf(
            kubeconfig_file::SCHEDULER,
            Some(host_dir.join(kubeconfig_file::SCHEDULER)),
            false,
        );
    }
    // Control-plane hosts get a kubelet.conf from clusterkit; other nodes' kubelets write
    // theirs during TLS bootstrap.
    if cp {
        conf(
            kubeconfig_file::KUBELET,
            Some(host_dir.join(kubeconfig_file::KUBELET)),
            false,
        );
    } else {
        conf(kubeconfig_file::KUBELET, None, true);
    }
    if cp && pki::holds_admin_conf(layout, &host.name) {
        conf(kubeconfig_file::ADMIN, Some(layout.admin_conf()), false);
    }
    // The addons phase puts kube-proxy's kubeconfig on every node once it has run.
    let proxy = layout.kubeconfig_dir().join(kubeconfig_file::KUBE_PROXY);
    let proxy_issued = proxy.is_file();
    conf(
        kubeconfig_file::KUBE_PROXY,
        proxy_issued.then_some(proxy),
        !proxy_issued,
    );
    let _ = cluster;
    // The monitoring stack's certificates, once the monitor has issued them.
    if pki::has_monitoring(layout) {
        for f in pki::monitoring_files(layout, &host.name) {
            let remote = f.remote.to_string_lossy().into_owned();
            let Some(base) = remote.strip_suffix(".crt") else {
                continue;
            };
            let file = base.rsplit('/').next().unwrap_or(base);
            let ca = remote.ends_with(monitoring::CA);
            out.push(NodeFile {
                name: if ca {
                    CaName::Monitoring.name().to_string()
                } else {
                    format!("monitoring-{file}")
                },
                key: (!ca).then(|| format!("{base}.key")),
                remote,
                kind: FileKind::Cert,
                local: Some(f.local),
                optional: false,
            });
        }
    }
    // Prometheus's copies of the cluster CAs and of its client pairs, where it was deployed:
    // `prometheus-<file>` (`prometheus-etcd-metrics-client`).
    let copies = pki::prometheus_copies(layout, &host.name);
    let remotes: Vec<String> = copies
        .iter()
        .map(|f| f.remote.to_string_lossy().into_owned())
        .collect();
    for (f, remote) in copies.iter().zip(&remotes) {
        let Some(base) = remote.strip_suffix(".crt") else {
            continue;
        };
        let key = format!("{base}.key");
        out.push(NodeFile {
            name: format!("prometheus-{}", base.rsplit('/').next().unwrap_or(base)),
            key: remotes.contains(&key).then_some(key),
            remote: remote.clone(),
            kind: FileKind::Cert,
            local: Some(f.local.clone()),
            optional: false,
        });
    }
    // The kubelet's own pairs, once it has them (rotated through CSRs).
    for (name, remote) in [
        ("kubelet-client-current", node.kubelet_client_pem),
        ("kubelet-server-current", node.kubelet_server_pem),
    ] {
        out.push(NodeFile {
            name: name.into(),
            remote: remote.into(),
            kind: FileKind::CertAndKey,
            key: None,
            local: None,
            optional: true,
        });
    }
    out
}

/// What a node has at one path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteFile {
    /// Whether the file exists.
    pub present: bool,
    /// Its permission bits.
    pub mode: Option<u32>,
    /// What was read: the certificate PEM, or a kubeconfig's client-certificate line(s).
    pub data: Vec<u8>,
}

/// awk program printing a kubeconfig's `client-certificate(-data)` line and its continuation
/// lines (a YAML block or folded scalar carries the value on the next, deeper-indented lines).
/// (No single quote in it: it is passed single-quoted.)
pub(super) const KUBECONFIG_CERT_AWK: &str = "/^[[:space:]]*client-certificate(-data)?:/ { p = 1; match($0, /^[[:space:]]*/); ind = RLENGTH; print; next } p { match($0, /^[[:space:]]*/); if (RLENGTH > ind && NF) { print; next } p = 0 }";

/// The one command that reads every file of `files` on a node: for each path a header line
/// `@@ <kind> <mode|-> <path>` and, for certificates and kubeconfigs, one line of base64.
pub fn read_command(files: &[NodeFile]) -> Command {
    // c: whole file; k: only the client-certificate lines of a kubeconfig; p: only the
    // certificate block of a cert+key PEM; x: mode only (private keys never leave the node).
    let script = String::from(
        "r(){ if [ -e \"$2\" ]; then printf '@@ %s %s %s\\n' \"$1\" \"$(stat -c %a \"$2\")\" \"$2\"; \
         case $1 in c) base64 -w0 <\"$2\";; \
         k) awk '{KEY_AWK}' \"$2\" | base64 -w0;; \
         p) sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' \"$2\" | base64 -w0;; \
         esac; echo; else printf '@@ %s - %s\\n' \"$1\" \"$2\"; fi; }\n",
    );
    let mut script = script.replace("{KEY_AWK}", KUBECONFIG_CERT_AWK);
    for f in files {
        let kind = match f.kind {
            FileKind::Cert => "c",
            FileKind::Kubeconfig => "k",
            FileKind::CertAndKey => "p",
        };
        script.push_str(&format!("r {kind} {}\n", shell_quote(&f.remote)));
        if let Some(key) = &f.key {
            script.push_str(&format!("r x {}\n", shell_quote(key)));
        }
    }
    Command::new(script)
}

/// Parses the output of [`read_command`] into path → file.
pub fn parse_read_output(
    host: &str,
    text: &str,
) -> Result<BTreeMap<String, RemoteFile>, CertsError> {
    let bad = |message: String| CertsError::Protocol {
        host: host.to_string(),
        message,
    };
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("@@ ") else {
            return Err(bad(format!(
                "expected a header line, got {:?}",
                truncate(line)
            )));
        };
        let mut parts = rest.splitn(3, ' ');
        let (Some(kind), Some(mode), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(format!("bad header {:?}", truncate(line))));
        };
        let mut file = RemoteFile::default();
        if mode != "-" {
            file.present = true;
            file.mode = Some(
                u32::from_str_radix(mode, 8).map_err(|_| bad(format!("bad mode in {line:?}")))?,
            );
            let body = lines
                .next()
                .ok_or_else(|| bad(format!("no content line after {line:?}")))?;
            if kind != "x" {
                file.data = B64
                    .decode(body.trim())
                    .map_err(|e| bad(format!("{path}: bad base64: {e}")))?;
            }
        }
        out.insert(path.to_string(), file);
    }
    Ok(out)
}

pub(super) fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Reads `files` on a node in one round trip.
pub async fn read_node(
    exec: &dyn Executor,
    files: &[NodeFile],
) -> Result<BTreeMap<String, RemoteFile>, CertsError> {
    let out = exec.run_checked(&read_command(files)).await?;
    parse_read_output(exec.host(), &out.stdout_str())
}
