//! Install phases, in order: `prepare` (preflight, then node preparation) and `runtime`
//! (containerd). Later phases (PKI, etcd, control plane, join, …) add themselves to [`all`].
//!
//! A phase is anything implementing [`Phase`]: most are one embedded playbook
//! ([`PlaybookPhase`]); a phase that needs Rust-side work first (preflight compares hosts with
//! each other; PKI generates certificates locally) wraps that work around its playbook. All
//! phases of one `clusterkit install` share one playbook [`Engine`], so facts are gathered once
//! per host, a host that failed is left out of later phases, and the summary adds up.
//!
//! This module also builds what every phase needs beyond the inventory (SSH targets, `cluster`,
//! `hosts`, `groups`, `layout`: [`inventory`]): the tera context's `install` block, the engine
//! options, and the embedded [`Library`] of playbooks and templates (overridable with
//! `--library DIR`).
//!
//! Extending: write `playbooks/<name>.yaml` (+ templates), add it to [`EMBEDDED`], and add a
//! `Box<dyn Phase>` to [`all`] at its place in the order.

pub mod addons;
pub mod common;
pub mod control_plane;
pub mod etcd;
pub mod images;
pub mod join;
pub mod kubelet;
pub mod load_balancer;
pub mod network;
pub mod pki;
pub mod preflight;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use clusterkit_core::config::{Cluster, Host, Packages, Profile, ProxyMode, Role};
use clusterkit_core::inventory::{self, InventoryError};
use clusterkit_core::layout::StateLayout;
use clusterkit_core::playbook::modules::{Bundle, BundleError};
use clusterkit_core::playbook::{
    self, Engine, HostTarget, Library, PlaybookError, RunOptions, RunReport,
};
use serde_json::{json, Value};

use crate::images::ImageError;
use crate::versions::VersionError;
use network::NetworkError;

/// Playbooks and templates compiled into the binary, by relative name.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "playbooks/prepare.yaml",
        include_str!("../../../playbooks/prepare.yaml"),
    ),
    (
        "playbooks/runtime.yaml",
        include_str!("../../../playbooks/runtime.yaml"),
    ),
    (
        "templates/containerd/config.toml",
        include_str!("../../../templates/containerd/config.toml"),
    ),
    (
        "templates/containerd/hosts.toml",
        include_str!("../../../templates/containerd/hosts.toml"),
    ),
    (
        "templates/crictl.yaml",
        include_str!("../../../templates/crictl.yaml"),
    ),
    (
        "playbooks/images.yaml",
        include_str!("../../../playbooks/images.yaml"),
    ),
    (
        "playbooks/network.yaml",
        include_str!("../../../playbooks/network.yaml"),
    ),
    (
        "templates/cni/10-clusterkit.conflist",
        include_str!("../../../templates/cni/10-clusterkit.conflist"),
    ),
    (
        "templates/cni/99-loopback.conf",
        include_str!("../../../templates/cni/99-loopback.conf"),
    ),
    (
        "templates/cni/pod-network.sh",
        include_str!("../../../templates/cni/pod-network.sh"),
    ),
    (
        "templates/cni/clusterkit-pod-network.service",
        include_str!("../../../templates/cni/clusterkit-pod-network.service"),
    ),
    (
        "playbooks/pki.yaml",
        include_str!("../../../playbooks/pki.yaml"),
    ),
    (
        "playbooks/etcd.yaml",
        include_str!("../../../playbooks/etcd.yaml"),
    ),
    (
        "playbooks/control-plane.yaml",
        include_str!("../../../playbooks/control-plane.yaml"),
    ),
    (
        "playbooks/kubelet.yaml",
        include_str!("../../../playbooks/kubelet.yaml"),
    ),
    (
        "playbooks/addons.yaml",
        include_str!("../../../playbooks/addons.yaml"),
    ),
    (
        "playbooks/load-balancer.yaml",
        include_str!("../../../playbooks/load-balancer.yaml"),
    ),
    (
        "templates/haproxy/haproxy.cfg",
        include_str!("../../../templates/haproxy/haproxy.cfg"),
    ),
    (
        "templates/etcd/etcd.service",
        include_str!("../../../templates/etcd/etcd.service"),
    ),
    (
        "templates/kubernetes/systemd/component.service",
        include_str!("../../../templates/kubernetes/systemd/component.service"),
    ),
    (
        "templates/kubernetes/systemd/kubelet.service",
        include_str!("../../../templates/kubernetes/systemd/kubelet.service"),
    ),
    (
        "templates/kubernetes/systemd/kube-proxy.service",
        include_str!("../../../templates/kubernetes/systemd/kube-proxy.service"),
    ),
    (
        "templates/kubernetes/manifests/component.yaml",
        include_str!("../../../templates/kubernetes/manifests/component.yaml"),
    ),
    (
        "templates/kubernetes/manifests/etcd.yaml",
        include_str!("../../../templates/kubernetes/manifests/etcd.yaml"),
    ),
    (
        "templates/kubernetes/kubelet-config.yaml",
        include_str!("../../../templates/kubernetes/kubelet-config.yaml"),
    ),
    (
        "templates/kubernetes/kube-proxy-config.yaml",
        include_str!("../../../templates/kubernetes/kube-proxy-config.yaml"),
    ),
    (
        "templates/kubernetes/coredns.yaml",
        include_str!("../../../templates/kubernetes/coredns.yaml"),
    ),
    (
        "templates/kubernetes/kube-proxy.yaml",
        include_str!("../../../templates/kubernetes/kube-proxy.yaml"),
    ),
];

/// Kernel modules every node needs (containerd's overlayfs snapshotter, bridged pod traffic
/// through iptables).
pub const KERNEL_MODULES: &[&str] = &["overlay", "br_netfilter"];

/// Kernel modules kube-proxy needs in IPVS mode.
pub const IPVS_MODULES: &[&str] = &["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack"];

/// Sysctls every node needs; cluster.yaml's `sysctls` are added (and win on conflict).
pub const SYSCTLS: &[(&str, &str)] = &[
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("net.ipv4.ip_forward", "1"),
];

/// Packages the runtime phase installs: the container runtime, and zstd, which unpacks the
/// Kubernetes binaries later phases send compressed (a node without it gets them uncompressed,
/// four times the bytes).
pub const RUNTIME_PACKAGES: &[&str] = &["containerd", "runc", "zstd"];

/// Errors of an install run (before or around the playbooks; task failures are in the report).
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Playbook(#[from] PlaybookError),

    /// A host cannot be reached as cluster.yaml describes it (the error names the host).
    #[error(transparent)]
    Inventory(#[from] InventoryError),

    #[error("unknown phase `{name}` (phases: {known})")]
    UnknownPhase { name: String, known: String },

    /// What is wrong on one host (or with the API, the local PKI…), in words.
    #[error("{host}: {message}")]
    Target { host: String, message: String },

    /// A step on one host (or with the API, the local PKI…) failed; `context` says which
    /// (empty when the cause says it all).
    #[error("{host}: {}{source}", if context.is_empty() { String::new() } else { format!("{context}: ") })]
    Host {
        host: String,
        context: String,
        #[source]
        source: Cause,
    },

    #[error("offline bundle: {0}")]
    Bundle(#[from] BundleError),

    /// The offline bundle lacks what the install needs, in words.
    #[error("offline bundle: {0}")]
    BundleContent(String),

    /// A binary of the offline bundle that is not the release cluster.yaml names.
    #[error("offline bundle: {0}")]
    BundleVersion(#[source] VersionError),

    /// Cluster-wide preflight checks that failed, one line each.
    #[error("preflight failed:\n{}", failures.iter().map(|f| format!("  - {f}")).collect::<Vec<_>>().join("\n"))]
    Preflight { failures: Vec<String> },

    #[error("images: {0}")]
    Images(#[from] ImageError),

    #[error("pod network: {0}")]
    Network(#[from] NetworkError),

    /// Something the install waits for did not happen in time; `source` is what the last
    /// probe saw.
    #[error("{host}: {what} within {secs}s: {source}")]
    Timeout {
        host: String,
        what: String,
        secs: u64,
        #[source]
        source: crate::poll::NotReady,
    },

    /// cluster.yaml names another release than the one running on the control-plane hosts.
    #[error(transparent)]
    Versions(#[from] crate::running::Mismatch),

    /// A blocking step (building images, hashing) that panicked or was cancelled.
    #[error("{what}: {source}")]
    Task {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// The underlying error of an install step, kept whole so the chain reaches the operator.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

impl InstallError {
    /// `host`'s step `context` failed because of `source`.
    pub fn host(
        host: impl Into<String>,
        context: impl Into<String>,
        source: impl Into<Cause>,
    ) -> Self {
        InstallError::Host {
            host: host.into(),
            context: context.into(),
            source: source.into(),
        }
    }
}

/// One step of the installation.
#[async_trait]
pub trait Phase: Send + Sync {
    /// The name `--phase` takes.
    fn name(&self) -> &'static str;
    /// One line for `--help` and progress.
    fn describe(&self) -> &'static str;
    /// Runs the phase on the targets through the shared engine. Task failures go into the
    /// engine's report; `Err` is for failures that stop the whole installation.
    async fn run(&self, cx: &PhaseContext<'_>) -> Result<(), InstallError>;
}

/// What a phase gets.
pub struct PhaseContext<'a> {
    pub cluster: &'a Cluster,
    pub engine: &'a Engine,
    pub targets: &'a [HostTarget],
    pub library: &'a Library,
    pub check: bool,
}

impl PhaseContext<'_> {
    /// Loads (validated) and runs an embedded or overridden playbook.
    pub async fn run_playbook(&self, name: &str) -> Result<(), InstallError> {
        let pb = playbook::load(self.library, name)?;
        self.engine.run(&pb, self.targets).await;
        Ok(())
    }
}

/// A phase that is one playbook.
pub struct PlaybookPhase {
    pub name: &'static str,
    pub describe: &'static str,
    pub playbook: &'static str,
}

#[async_trait]
impl Phase for PlaybookPhase {
    fn name(&self) -> &'static str {
        self.name
    }
    fn describe(&self) -> &'static str {
        self.describe
    }
    async fn run(&self, cx: &PhaseContext<'_>) -> Result<(), InstallError> {
        cx.run_playbook(self.playbook).await
    }
}

/// `prepare`: preflight checks across hosts, then the prepare playbook.
pub struct PreparePhase;

#[async_trait]
impl Phase for PreparePhase {
    fn name(&self) -> &'static str {
        "prepare"
    }
    fn describe(&self) -> &'static str {
        "preflight checks, hostname, /etc/hosts, SELinux, swap, kernel modules, sysctls"
    }
    async fn run(&self, cx: &PhaseContext<'_>) -> Result<(), InstallError> {
        // Validate the playbook before touching any host, preflight included.
        let pb = playbook::load(cx.library, "prepare")?;
        preflight::run(cx).await?;
        cx.engine.run(&pb, cx.targets).await;
        Ok(())
    }
}

/// Every phase, in order.
pub fn all() -> Vec<Box<dyn Phase>> {
    vec![
        Box::new(PreparePhase),
        Box::new(PlaybookPhase {
            name: "runtime",
            describe: "containerd + runc, config.toml (systemd cgroups, mirrors), crictl",
            playbook: "runtime",
        }),
        Box::new(images::ImagesPhase),
        Box::new(network::NetworkPhase),
        Box::new(pki::PkiPhase),
        Box::new(etcd::EtcdPhase),
        Box::new(load_balancer::LoadBalancerPhase),
        Box::new(control_plane::ControlPlanePhase),
        Box::new(join::JoinPhase),
        Box::new(addons::AddonsPhase),
    ]
}

/// The phases to run: one by name, or all of them in order.
pub fn select(name: Option<&str>) -> Result<Vec<Box<dyn Phase>>, InstallError> {
    let phases = all();
    match name {
        None => Ok(phases),
        Some(n) => {
            let name = find(&phases, n)?.name();
            Ok(phases.into_iter().filter(|p| p.name() == name).collect())
        }
    }
}

/// The phase called `name`, or an error listing the known ones.
fn find<'p>(phases: &'p [Box<dyn Phase>], name: &str) -> Result<&'p dyn Phase, InstallError> {
    phases
        .iter()
        .find(|p| p.name() == name)
        .map(|p| p.as_ref())
        .ok_or_else(|| InstallError::UnknownPhase {
            name: name.to_string(),
            known: phases
                .iter()
                .map(|p| p.name())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The embedded playbooks and templates, with override directories searched first.
pub fn library(overrides: &[PathBuf]) -> Library {
    let mut lib = Library::new();
    for (name, text) in EMBEDDED {
        lib.embed(name, text);
    }
    for dir in overrides {
        lib.add_dir(dir);
    }
    lib
}

/// One registry's hosts.toml data.
fn registries(cluster: &Cluster) -> Vec<Value> {
    let mut names: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
    for (name, mirrors) in &cluster.runtime.registry_mirrors {
        names.entry(name.clone()).or_default().0 = mirrors.clone();
    }
    for name in &cluster.runtime.insecure_registries {
        names.entry(name.clone()).or_default().1 = true;
    }
    names
        .into_iter()
        .map(|(name, (mirrors, insecure))| {
            // Docker Hub's registry is not at its name.
            let server = if name == "docker.io" {
                "https://registry-1.docker.io".to_string()
            } else {
                format!("https://{name}")
            };
            json!({
                "name": name,
                "server": server,
                "plain_http": format!("http://{name}"),
                "mirrors": mirrors,
                "insecure": insecure,
            })
        })
        .collect()
}

/// The tera context every phase's playbooks see: the inventory's (`cluster`, `hosts`,
/// `groups`, `layout`: [`inventory::context`]) and `install` (values derived here, so
/// playbooks stay declarative).
/// Secrets never enter it: cluster.yaml only names the environment variables that hold them.
pub fn context(cluster: &Cluster) -> Value {
    let mut sysctls: BTreeMap<String, String> = SYSCTLS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    sysctls.extend(cluster.sysctls.clone());
    let sandbox = cluster.profile == Profile::Sandbox;
    let mut context = inventory::context(cluster);
    context["install"] = json!({
        "kernel_modules": KERNEL_MODULES,
        "ipvs_modules": if cluster.kubernetes.proxy_mode == ProxyMode::Ipvs { IPVS_MODULES.to_vec() } else { Vec::new() },
        "sysctls": sysctls,
        "runtime_packages": RUNTIME_PACKAGES,
        "registries": registries(cluster),
        "containerd": {
            "sandbox_image": cluster.runtime.sandbox_image,
            "restrict_oom_score_adj": sandbox,
        },
    });
    context
}

/// The offline bundle cluster.yaml points at, if any (manifest read, not hashed).
pub fn bundle(cluster: &Cluster) -> Result<Option<Bundle>, InstallError> {
    match &cluster.packages {
        Packages::Bundle { dir } => Ok(Some(Bundle::load(dir)?)),
        Packages::Online { .. } => Ok(None),
    }
}

/// How `clusterkit install` (and `run`) behave.
#[derive(Clone, Default)]
pub struct InstallOptions {
    /// `None`: every phase, in order.
    pub phase: Option<String>,
    pub check: bool,
    pub resume: bool,
    pub events: Option<PathBuf>,
    /// Override directories for playbooks and templates.
    pub library: Vec<PathBuf>,
    /// Hosts worked on at once (default: ssh.concurrency).
    pub concurrency: Option<usize>,
    /// Print task progress to stderr.
    pub progress: bool,
    pub verbose: bool,
    /// Hash every large file on the hosts instead of trusting clusterkit's stamps.
    pub verify_all: bool,
}

/// The engine options for a cluster.
pub fn run_options(cluster: &Cluster, opts: &InstallOptions) -> Result<RunOptions, InstallError> {
    Ok(RunOptions {
        check: opts.check,
        resume: opts.resume,
        concurrency: opts.concurrency.unwrap_or(cluster.ssh.concurrency).max(1),
        journal_dir: Some(StateLayout::from_cluster(cluster).journal_dir()),
        events: opts.events.clone(),
        bundle: bundle(cluster)?,
        progress: opts.progress,
        verbose: opts.verbose,
        verify_all: opts.verify_all,
    })
}

/// The playbook engine a run shares (every host of cluster.yaml in its context) and the
/// targets of `hosts`: [`inventory::engine`] with the installer's [`context`] and options.
pub fn engine(
    cluster: &Cluster,
    hosts: &[&Host],
    opts: &InstallOptions,
) -> Result<(Engine, Vec<HostTarget>), InstallError> {
    let run = run_options(cluster, opts)?;
    Ok(inventory::engine(cluster, hosts, context(cluster), run)?)
}

/// One step of a [`Plan`]: a phase on some of cluster.yaml's hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The phase's name ([`Phase::name`]).
    pub phase: &'static str,
    /// The hosts it runs on (names); an empty list skips the step.
    pub hosts: Vec<String>,
    /// What progress prints instead of the phase's own description.
    pub why: Option<&'static str>,
    /// The plan stops after this step when any of these hosts failed in it (later steps build
    /// on it); the report says what failed.
    pub stop_if_failed: Vec<String>,
}

/// Phases and the hosts each runs on, in order: what `install`, `node add` and other
/// commands that converge hosts hand to [`run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    /// The selected phases (`--phase`, or all in order) on `hosts`.
    pub fn phases_on(phase: Option<&str>, hosts: &[&Host]) -> Result<Plan, InstallError> {
        let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
        Ok(Plan {
            steps: select(phase)?
                .iter()
                .map(|p| Step {
                    phase: p.name(),
                    hosts: names.clone(),
                    why: None,
                    stop_if_failed: Vec::new(),
                })
                .collect(),
        })
    }
}

/// Runs `plan`: every playbook it needs is validated before any host is touched, then each
/// step runs its phase on its hosts through one shared engine (facts gathered once per host, a
/// failed host left out of later steps). Returns the per-host report; `Err` is for what stops
/// the whole run.
pub async fn run(
    cluster: &Cluster,
    plan: &Plan,
    opts: &InstallOptions,
) -> Result<RunReport, InstallError> {
    let phases = all();
    let library = library(&opts.library);
    let steps = validated(plan, &phases, &library)?;
    let hosts: Vec<&Host> = cluster
        .hosts
        .iter()
        .filter(|h| plan.steps.iter().any(|s| s.hosts.contains(&h.name)))
        .collect();
    let (engine, all_targets) = engine(cluster, &hosts, opts)?;
    for (step, phase) in steps.into_iter().filter(|(s, _)| !s.hosts.is_empty()) {
        let targets: Vec<HostTarget> = all_targets
            .iter()
            .filter(|t| step.hosts.contains(&t.name))
            .cloned()
            .collect();
        if opts.progress {
            let what = step.why.unwrap_or_else(|| phase.describe());
            if step.hosts.len() == all_targets.len() {
                eprintln!("PHASE {}: {what}", phase.name());
            } else {
                eprintln!(
                    "PHASE {} on {}: {what}",
                    phase.name(),
                    step.hosts.join(", ")
                );
            }
        }
        let cx = PhaseContext {
            cluster,
            engine: &engine,
            targets: &targets,
            library: &library,
            check: opts.check,
        };
        phase.run(&cx).await?;
        if step.stop_if_failed.iter().any(|h| engine.host_failed(h)) {
            break;
        }
    }
    Ok(engine.finish())
}

/// Each step's phase, and each playbook of the plan validated once: what [`run`] checks before
/// any host is touched.
fn validated<'s, 'p>(
    plan: &'s Plan,
    phases: &'p [Box<dyn Phase>],
    library: &Library,
) -> Result<Vec<(&'s Step, &'p dyn Phase)>, InstallError> {
    let mut steps = Vec::new();
    let mut loaded = std::collections::BTreeSet::new();
    for step in &plan.steps {
        let phase = find(phases, step.phase)?;
        if loaded.insert(step.phase) && library.playbook(step.phase).is_ok() {
            playbook::load(library, step.phase)?;
        }
        steps.push((step, phase));
    }
    Ok(steps)
}

/// Runs the selected phases on `hosts` and returns the per-host report; refused when the
/// control-plane hosts run another release than cluster.yaml's (see [`same_release`]), after
/// the playbooks are validated and before any host is changed.
pub async fn install(
    cluster: &Cluster,
    hosts: &[&Host],
    opts: &InstallOptions,
) -> Result<RunReport, InstallError> {
    let plan = Plan::phases_on(opts.phase.as_deref(), hosts)?;
    validated(&plan, &all(), &library(&opts.library))?;
    same_release(cluster, opts).await?;
    run(cluster, &plan, opts).await
}

/// Reads what runs on every control-plane host (one command each) and refuses an install whose
/// `kubernetes.version` differs from it: moving a running cluster to another release is
/// `upgrade apply`'s job, and clusterkit never downgrades. Hosts where nothing runs yet are
/// fresh and pass. A control-plane host that cannot be read stops the install: what it runs
/// decides whether the install may touch the others.
pub(crate) async fn same_release(
    cluster: &Cluster,
    opts: &InstallOptions,
) -> Result<(), InstallError> {
    let control_plane = cluster.hosts_with_role(Role::ControlPlane);
    let fanout = clusterkit_core::fanout::Fanout::new(
        "read versions",
        opts.concurrency.unwrap_or(cluster.ssh.concurrency),
    )
    .quiet();
    let mut found = Vec::new();
    for r in crate::running::read_hosts(cluster, &control_plane, &fanout, |_| String::new()).await {
        let (running, _) = r.result.map_err(|e| {
            InstallError::host(
                r.host,
                "reading which Kubernetes release runs before the install",
                e,
            )
        })?;
        found.extend(running);
    }
    crate::running::against_desired(&found, cluster.kubernetes.version)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_playbooks_validate() {
        let lib = library(&[]);
        for p in all() {
            if lib.playbook(p.name()).is_ok() {
                playbook::load(&lib, p.name()).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    #[test]
    fn unknown_phase_lists_the_known_ones() {
        let err = select(Some("nope")).err().unwrap().to_string();
        assert!(err.contains("prepare") && err.contains("runtime"), "{err}");
    }
}
