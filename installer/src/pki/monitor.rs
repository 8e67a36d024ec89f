//! The monitoring PKI: its own CA and the node-exporter, Prometheus and Alertmanager pairs
//! (made by `monitor config|deploy` while `monitor.tls` is on), where they go on a host and
//! which daemon reads each. Limits: issued by the same code as the cluster PKI
//! ([`ensure_at`]); no rotation of its CA other than replacing an expired one.

use super::*;

/// Where the monitoring stack's files live on a host and who reads them: `monitor deploy`
/// writes them, `certs check-expiration` reads the certificates among them and `certs renew`
/// replaces them and restarts the daemon that uses each.
pub mod monitoring {
    use clusterkit_core::layout::NodeLayout;

    const NODE: NodeLayout = NodeLayout::DEFAULT;

    /// The directory on every host (node-exporter's files on every host, Prometheus's and
    /// Alertmanager's on the monitor hosts).
    pub const DIR: &str = NODE.monitoring_dir;
    /// The user Debian's node-exporter, Prometheus and Alertmanager units run as: owner of
    /// their private keys.
    pub const DAEMON_USER: &str = "prometheus";
    /// The monitoring CA certificate, relative to [`DIR`] (every host).
    pub const CA: &str = "tls/monitoring-ca.crt";
    /// node-exporter's serving pair, relative to [`DIR`] without extension (every host).
    pub const NODE_EXPORTER: &str = "tls/node-exporter";
    /// Prometheus's serving pair (monitor hosts).
    pub const PROMETHEUS: &str = "tls/prometheus";
    /// Alertmanager's serving pair (monitor hosts).
    pub const ALERTMANAGER: &str = "tls/alertmanager";
    /// The client pair Prometheus scrapes with (monitor hosts).
    pub const PROMETHEUS_CLIENT: &str = "tls/prometheus-client";
    /// The client pair Alertmanager's clients present (Prometheus sending alerts).
    pub const ALERTMANAGER_CLIENT: &str = "tls/alertmanager-client";
    /// Prometheus's copy of the etcd CA (its etcd job), relative to [`DIR`] (monitor hosts).
    pub const ETCD_CA: &str = "tls/etcd-ca.crt";
    /// Prometheus's copy of the etcd client pair it scrapes etcd with
    /// ([`etcd_metrics_client`](super::etcd_metrics_client)).
    pub const ETCD_CLIENT_CERT: &str = "tls/etcd-metrics-client.crt";
    /// Its key.
    pub const ETCD_CLIENT_KEY: &str = "tls/etcd-metrics-client.key";
    /// Prometheus's copy of the cluster CA (its Kubernetes jobs).
    pub const KUBE_CA: &str = "tls/ca.crt";
    /// Prometheus's copy of the client pair it scrapes the Kubernetes components with
    /// ([`kube_metrics_client`](super::kube_metrics_client)).
    pub const KUBE_CLIENT_CERT: &str = "tls/kube-metrics-client.crt";
    /// Its key.
    pub const KUBE_CLIENT_KEY: &str = "tls/kube-metrics-client.key";
    /// node-exporter's systemd unit (Debian's).
    pub const NODE_EXPORTER_UNIT: &str = NODE.units.node_exporter;
    /// Prometheus's systemd unit.
    pub const PROMETHEUS_UNIT: &str = NODE.units.prometheus;
    /// Alertmanager's systemd unit.
    pub const ALERTMANAGER_UNIT: &str = NODE.units.alertmanager;

    /// Whether `file` (relative to [`DIR`]) is one of the monitoring PKI's files.
    pub fn is_pki_file(file: &str) -> bool {
        !units_reading(file).is_empty()
    }

    /// The units that read `file` (a path relative to [`DIR`]).
    pub fn units_reading(file: &str) -> &'static [&'static str] {
        let base = file.trim_end_matches(".crt").trim_end_matches(".key");
        match base {
            _ if file == CA => &[NODE_EXPORTER_UNIT, PROMETHEUS_UNIT, ALERTMANAGER_UNIT],
            NODE_EXPORTER => &[NODE_EXPORTER_UNIT],
            PROMETHEUS | PROMETHEUS_CLIENT | ALERTMANAGER_CLIENT => &[PROMETHEUS_UNIT],
            ALERTMANAGER => &[ALERTMANAGER_UNIT],
            _ => &[],
        }
    }
}

/// What the monitoring certificates are issued for.
#[derive(Clone, Debug)]
pub struct MonitoringInput {
    /// Every host (each runs node-exporter).
    pub hosts: Vec<Host>,
    /// The hosts running Prometheus and Alertmanager.
    pub monitors: Vec<Host>,
    /// DNS names Prometheus may reach the exporter by.
    pub exporter_names: Vec<String>,
    /// Addresses Prometheus may reach the exporter at.
    pub exporter_ips: Vec<IpAddr>,
    /// Lifetimes (the cluster's `pki:` settings).
    pub validity: Validity,
}

impl MonitoringInput {
    /// The input for a loaded cluster.yaml: every host, the `monitor` hosts (the first host
    /// when none has the role), and the exporter at `monitor.listen` (on every monitor host
    /// when it listens on all addresses); loopback is always in the exporter's names.
    pub fn from_cluster(cluster: &clusterkit_core::config::Cluster) -> Self {
        use clusterkit_core::config::Role;
        let hosts: Vec<Host> = cluster
            .hosts
            .iter()
            .map(|h| Host::new(&h.name, h.address))
            .collect();
        let mut monitors: Vec<Host> = cluster
            .hosts_with_role(Role::Monitor)
            .into_iter()
            .map(|h| Host::new(&h.name, h.address))
            .collect();
        if monitors.is_empty() {
            monitors.extend(hosts.first().cloned());
        }
        let mut exporter_names = vec!["localhost".to_string()];
        let mut exporter_ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let listen = cluster.monitor.listen.ip();
        if listen.is_unspecified() {
            for m in &monitors {
                push_unique(&mut exporter_names, m.name.clone());
                push_unique(&mut exporter_ips, m.ip);
            }
        } else {
            push_unique(&mut exporter_ips, listen);
        }
        Self {
            hosts,
            monitors,
            exporter_names,
            exporter_ips,
            validity: Validity::from_config(&cluster.pki),
        }
    }
}

/// A serving certificate of the monitoring CA for one host: its name, its address and
/// loopback (a check on the host itself verifies too).
pub(super) fn monitoring_server(
    name: String,
    base: PathBuf,
    h: &Host,
    usages: Vec<Usage>,
) -> CertSpec {
    let mut ips = vec![h.ip];
    push_unique(&mut ips, IpAddr::V4(Ipv4Addr::LOCALHOST));
    CertSpec {
        name,
        base,
        ca: CaName::Monitoring,
        common_name: h.name.clone(),
        organization: vec![],
        usages,
        dns_names: vec![h.name.clone(), "localhost".into()],
        ips,
    }
}

/// Every leaf certificate of the monitoring PKI, in issue order.
pub fn monitoring_cert_specs(input: &MonitoringInput) -> Vec<CertSpec> {
    let pki = StateLayout::monitoring_pki_rel();
    let mut specs = vec![
        CertSpec::client(
            "monitoring-prometheus-client",
            pki.join("prometheus-client"),
            CaName::Monitoring,
            "clusterkit-prometheus",
            &[],
        ),
        CertSpec::client(
            "monitoring-alertmanager-client",
            pki.join("alertmanager-client"),
            CaName::Monitoring,
            "clusterkit-alertmanager-client",
            &[],
        ),
        CertSpec {
            name: "monitoring-exporter".into(),
            base: pki.join("exporter"),
            ca: CaName::Monitoring,
            common_name: "clusterkit-exporter".into(),
            organization: vec![],
            usages: vec![Usage::ServerAuth],
            dns_names: input.exporter_names.clone(),
            ips: input.exporter_ips.clone(),
        },
    ];
    let host_pki = |h: &Host| StateLayout::host_monitoring_pki_rel(&h.name);
    for h in &input.hosts {
        specs.push(monitoring_server(
            format!("monitoring-node-exporter/{}", h.name),
            host_pki(h).join("node-exporter"),
            h,
            vec![Usage::ServerAuth],
        ));
    }
    for m in &input.monitors {
        // Alertmanager's certificate is also its client certificate towards the other monitor
        // hosts' Alertmanagers (gossip over mutual TLS).
        for (what, usages) in [
            ("prometheus", vec![Usage::ServerAuth]),
            ("alertmanager", vec![Usage::ServerAuth, Usage::ClientAuth]),
        ] {
            specs.push(monitoring_server(
                format!("monitoring-{what}/{}", m.name),
                host_pki(m).join(what),
                m,
                usages,
            ));
        }
    }
    specs
}

/// Creates whatever is missing or invalid in the monitoring PKI (or reports it in check
/// mode), with the same rules as [`ensure`].
#[tracing::instrument(skip_all, fields(state = %layout.root.display(), ?mode))]
pub fn ensure_monitoring(
    input: &MonitoringInput,
    layout: &StateLayout,
    mode: Mode,
) -> Result<Report, PkiError> {
    let now = OffsetDateTime::now_utc();
    let mut report = Report::default();
    let ca = ensure_ca(
        layout,
        CaName::Monitoring,
        &input.validity,
        now,
        mode,
        &mut report,
    )?;
    for spec in monitoring_cert_specs(input) {
        ensure_leaf(
            layout,
            &spec,
            ca.as_ref(),
            &input.validity,
            now,
            mode,
            &mut report,
        )?;
    }
    Ok(report)
}

/// Whether the monitoring CA exists (`monitor config` or `deploy` made it).
pub fn has_monitoring(layout: &StateLayout) -> bool {
    layout
        .pki_dir()
        .join(format!("{}.crt", CaName::Monitoring.base()))
        .is_file()
}

/// The monitoring files a host holds, as `monitor deploy` puts them and `certs renew`
/// replaces them: the monitoring CA and node-exporter's pair on every host; Prometheus's
/// and Alertmanager's serving and client pairs on a monitor host (one that has a
/// Prometheus certificate issued). Keys are 0600 and owned by the daemons' user. Files
/// never issued are skipped.
pub fn monitoring_files(layout: &StateLayout, host: &str) -> Vec<FileMapping> {
    let dir = Path::new(monitoring::DIR);
    let pki = layout.monitoring_pki_dir();
    let own = layout.host_monitoring_pki_dir(host);
    let mut out = Vec::new();
    let mut add = |local: PathBuf, rel: &str| {
        if local.is_file() {
            let key = rel.ends_with(".key");
            out.push(FileMapping {
                local,
                remote: dir.join(rel),
                mode: if key { 0o600 } else { 0o644 },
                owner: key.then_some(monitoring::DAEMON_USER),
            });
        }
    };
    add(pki.join("ca.crt"), monitoring::CA);
    let mut pairs = vec![(own.join("node-exporter"), monitoring::NODE_EXPORTER)];
    if own.join("prometheus.crt").is_file() {
        pairs.extend([
            (own.join("prometheus"), monitoring::PROMETHEUS),
            (own.join("alertmanager"), monitoring::ALERTMANAGER),
            (pki.join("prometheus-client"), monitoring::PROMETHEUS_CLIENT),
            (
                pki.join("alertmanager-client"),
                monitoring::ALERTMANAGER_CLIENT,
            ),
        ]);
    }
    for (local, rel) in pairs {
        for ext in ["crt", "key"] {
            add(local.with_extension(ext), &format!("{rel}.{ext}"));
        }
    }
    out
}

/// The client pair (certificate, key) Prometheus and the exporter read etcd's metrics and
/// status with, under the state directory's `pki_dir`: the dedicated `etcd/metrics-client`
/// when the pki phase issued one, else `etcd/healthcheck-client`.
pub fn etcd_metrics_client(pki_dir: &Path) -> (PathBuf, PathBuf) {
    let pair = |name: &str| {
        (
            pki_dir.join(format!("{name}.crt")),
            pki_dir.join(format!("{name}.key")),
        )
    };
    let dedicated = pair("etcd/metrics-client");
    if dedicated.0.exists() || !pair("etcd/healthcheck-client").0.exists() {
        return dedicated;
    }
    pair("etcd/healthcheck-client")
}

/// The client pair Prometheus scrapes the API server, kubelets, scheduler and controller
/// manager with: kubeadm's `apiserver-kubelet-client` (the kubelets trust it and it is
/// authorised on the API server).
pub fn kube_metrics_client(pki_dir: &Path) -> (PathBuf, PathBuf) {
    (
        pki_dir.join("apiserver-kubelet-client.crt"),
        pki_dir.join("apiserver-kubelet-client.key"),
    )
}

/// Prometheus's copies of the cluster PKI on a monitor host (one with a Prometheus
/// certificate issued): the CAs and client pairs of its etcd and Kubernetes jobs, each from
/// the state directory's file it copies, for the jobs whose copies `monitor deploy` staged
/// (in [`StateLayout::monitor_dir`]). `certs` keeps them in line with the state directory
/// (renewal, CA rotation); Prometheus reads them again at its next scrape, without a
/// restart. Keys are 0600 and owned by the daemons' user.
pub fn prometheus_copies(layout: &StateLayout, host: &str) -> Vec<FileMapping> {
    let own = layout.host_monitoring_pki_dir(host);
    if !own.join("prometheus.crt").is_file() {
        return vec![];
    }
    let pki = layout.pki_dir();
    let staged = layout.monitor_dir();
    let (etcd_cert, etcd_key) = etcd_metrics_client(&pki);
    let (kube_cert, kube_key) = kube_metrics_client(&pki);
    let jobs = [
        [
            (pki.join("etcd/ca.crt"), monitoring::ETCD_CA),
            (etcd_cert, monitoring::ETCD_CLIENT_CERT),
            (etcd_key, monitoring::ETCD_CLIENT_KEY),
        ],
        [
            (pki.join("ca.crt"), monitoring::KUBE_CA),
            (kube_cert, monitoring::KUBE_CLIENT_CERT),
            (kube_key, monitoring::KUBE_CLIENT_KEY),
        ],
    ];
    let mut out = Vec::new();
    for job in jobs {
        if !staged.join(job[0].1).is_file() {
            continue;
        }
        for (local, rel) in job {
            if !local.is_file() {
                continue;
            }
            let key = rel.ends_with(".key");
            out.push(FileMapping {
                local,
                remote: Path::new(monitoring::DIR).join(rel),
                mode: if key { 0o600 } else { 0o644 },
                owner: key.then_some(monitoring::DAEMON_USER),
            });
        }
    }
    out
}
