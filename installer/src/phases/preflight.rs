//! Preflight checks before `prepare` touches anything: per host (supported OS, systemd as init
//! for the systemd cgroup driver, CPUs and memory on control-plane hosts, required ports free
//! (the local load balancer's too when it is on), IPVS support when kube-proxy is to use it,
//! time sync, the cgroup version the release's kubelet needs) and across hosts (unique product_uuid, MAC addresses and names, clock skew).
//!
//! Facts are gathered once here (one remote command per host) and handed to the playbook
//! engine. A host with a problem of its own fails alone, as any task failure would; a problem
//! between hosts (duplicates, skew) stops the installation. Warnings are printed and do not
//! stop anything.
//!
//! Control-plane mode: a host whose kube-apiserver or etcd already runs the other way
//! (`kubernetes.control_plane_mode` changed since the install: a systemd unit file where a
//! static pod is wanted, or a manifest in /etc/kubernetes/manifests where a unit is) stops the
//! whole installation here, before any phase changes anything on any host: switching an
//! installed cluster between the modes is not something clusterkit does
//! ([`mode_conflicts`]), and the other hosts must not go on in the other mode (kube-proxy,
//! for one, runs differently).
//!
//! Limits: ports held by the component that belongs there (a rerun after the control plane is
//! up) are fine; a port held by anything else is an error. In the sandbox profile all nodes
//! share the machine's DMI product_uuid, so duplicates there are only a warning.

use std::collections::BTreeMap;

use clusterkit_core::config::{Cluster, ControlPlaneMode, Host, Profile, ProxyMode, Role};
use clusterkit_core::exec::Executor;
use clusterkit_core::layout::NodeLayout;
use clusterkit_core::playbook::modules::{facts, ModuleError};
use clusterkit_core::release::KubeVersion;
use serde_json::Value;

use super::{InstallError, PhaseContext};
use crate::versions;

/// Minimum CPUs on a control-plane host (kubeadm's rule).
pub const MIN_CPUS: u64 = 2;
/// Minimum memory on a control-plane host, MiB (1.7 GiB, kubeadm's rule).
pub const MIN_MEMORY_MIB: u64 = 1740;
/// Clock skew between hosts above which etcd and TLS misbehave.
pub const MAX_SKEW_SECS: f64 = 2.0;
/// Skew worth a warning.
pub const WARN_SKEW_SECS: f64 = 0.5;

/// OS ids and the major versions clusterkit supports.
const SUPPORTED: &[(&str, &[&str])] = &[
    ("debian", &["11", "12"]),
    ("ubuntu", &["20.04", "22.04", "24.04"]),
    ("rhel", &["8", "9"]),
    ("rocky", &["8", "9"]),
    ("almalinux", &["8", "9"]),
    ("centos", &["8", "9"]),
];

/// Ports each role needs, and the process allowed to hold each already.
fn required_ports(roles: &[Role]) -> Vec<(u16, &'static str)> {
    let p = NodeLayout::DEFAULT.ports;
    let mut ports = vec![(p.kubelet, "kubelet")];
    if roles.contains(&Role::ControlPlane) {
        ports.extend([
            (p.apiserver, "kube-apiserver"),
            (p.controller_manager, "kube-controller"),
            (p.scheduler, "kube-scheduler"),
        ]);
    }
    if roles.contains(&Role::Etcd) {
        ports.extend([(p.etcd_client, "etcd"), (p.etcd_peer, "etcd")]);
    }
    ports
}

/// A port of `ports` held by another process than the one allowed to hold it, as error lines.
pub fn port_conflicts(facts: &Value, ports: &[(u16, &str)]) -> Vec<String> {
    let mut errors = Vec::new();
    let listening = facts
        .pointer("/listening")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for &(port, owner) in ports {
        for l in &listening {
            if l["port"].as_u64() == Some(port as u64) {
                let process = l["process"].as_str().unwrap_or("");
                if !process.starts_with(owner) {
                    errors.push(format!(
                        "port {port} (needed by {owner}) is already in use by `{}` on {}",
                        if process.is_empty() {
                            "an unknown process"
                        } else {
                            process
                        },
                        l["address"].as_str().unwrap_or("?")
                    ));
                }
            }
        }
    }
    errors
}

/// One host's problems: errors fail it, warnings are printed.
#[derive(Debug, Default)]
pub struct HostFindings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// What the checks found about the host, printed as one line (OS, cgroup version, …).
    pub summary: String,
}

/// The cgroup version of a host's facts (`1` or `2`; `None` when not gathered).
fn cgroup_version(facts: &Value) -> Option<u64> {
    facts.pointer("/cgroup_version").and_then(Value::as_u64)
}

/// The kubelet and cgroup v1: refused where the release's kubelet will not start on it, a
/// warning naming the release that drops it before that.
fn check_cgroup(facts: &Value, version: KubeVersion, f: &mut HostFindings) {
    if cgroup_version(facts) != Some(1) {
        return;
    }
    if versions::rules(version).kubelet_fails_on_cgroup_v1 {
        f.errors.push(format!(
            "cgroup v1: the kubelet of Kubernetes {version} does not start on a cgroup v1 host \
             (failCgroupV1 defaults to true from {}); boot the host with the unified hierarchy \
             (systemd.unified_cgroup_hierarchy=1, the default of Debian 11+, Ubuntu 21.10+, RHEL 9)",
            versions::CGROUP_V1_DROPPED
        ));
    } else {
        f.warnings.push(format!(
            "cgroup v1: Kubernetes {version} runs on it, but from {} the kubelet refuses to start \
             on cgroup v1; move the host to cgroup v2 before upgrading that far",
            versions::CGROUP_V1_DROPPED
        ));
    }
}

/// Checks one host's facts against its roles.
pub fn check_host(
    facts: &Value,
    roles: &[Role],
    proxy_mode: ProxyMode,
    kube: KubeVersion,
) -> HostFindings {
    let mut f = HostFindings::default();
    let s = |p: &str| {
        facts
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let n = |p: &str| facts.pointer(p).and_then(Value::as_u64);
    let (id, version, pretty) = (s("/os/id"), s("/os/version_id"), s("/os/pretty_name"));
    let supported = SUPPORTED.iter().any(|(os, versions)| {
        *os == id
            && versions
                .iter()
                .any(|v| version == *v || version.starts_with(&format!("{v}.")))
    });
    if !supported {
        f.errors.push(format!(
            "unsupported OS `{}` (id {id}, version {version}): clusterkit supports Debian 11/12, Ubuntu 20.04+ and RHEL-family 8/9",
            if pretty.is_empty() { "unknown" } else { &pretty }
        ));
    }
    if s("/init") != "systemd" {
        f.errors.push(format!(
            "init is `{}`, not systemd: containerd and kubelet use the systemd cgroup driver",
            s("/init")
        ));
    }
    if roles.contains(&Role::ControlPlane) {
        match n("/cpus") {
            Some(c) if c < MIN_CPUS => f.errors.push(format!(
                "{c} CPU(s): a control-plane host needs at least {MIN_CPUS}"
            )),
            None => f.errors.push("cannot tell the number of CPUs".into()),
            _ => {}
        }
        match n("/memory_mib") {
            Some(m) if m < MIN_MEMORY_MIB => f.errors.push(format!(
                "{m} MiB of memory: a control-plane host needs at least {MIN_MEMORY_MIB} MiB (1.7 GiB)"
            )),
            None => f.errors.push("cannot tell the amount of memory".into()),
            _ => {}
        }
    }
    f.errors
        .extend(port_conflicts(facts, &required_ports(roles)));
    if proxy_mode == ProxyMode::Ipvs && facts.pointer("/ipvs") != Some(&Value::Bool(true)) {
        // Refined by `ipvs_loadable` (a dry-run modprobe) before it becomes an error.
        f.errors.push(
            "IPVS is not available: /proc/net/ip_vs is absent and the ip_vs kernel module cannot be loaded; \
             set kubernetes.proxy_mode: iptables or use a kernel with IPVS"
                .into(),
        );
    }
    check_cgroup(facts, kube, &mut f);
    f.summary = format!(
        "{}, kernel {}, cgroup v{}, {} CPU(s), {} MiB",
        if pretty.is_empty() {
            id.as_str()
        } else {
            pretty.as_str()
        },
        s("/kernel"),
        cgroup_version(facts).map_or("?".to_string(), |v| v.to_string()),
        n("/cpus").map_or("?".to_string(), |c| c.to_string()),
        n("/memory_mib").map_or("?".to_string(), |m| m.to_string()),
    );
    if s("/ntp_synchronized") != "yes" {
        f.warnings.push(format!(
            "the clock is not reported as NTP-synchronized (timedatectl says `{}`): run chrony or systemd-timesyncd",
            s("/ntp_synchronized")
        ));
    }
    f
}

/// Checks across hosts: duplicates and clock skew. Returns (errors, warnings).
pub fn check_cluster(facts: &BTreeMap<String, Value>, sandbox: bool) -> (Vec<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut dup = |what: &str, values: Vec<(String, String)>, fatal: bool| {
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (host, v) in values {
            if !v.is_empty() {
                seen.entry(v).or_default().push(host);
            }
        }
        for (v, hosts) in seen.into_iter().filter(|(_, h)| h.len() > 1) {
            let msg = format!("hosts {} share the same {what} {v}", hosts.join(", "));
            if fatal {
                errors.push(msg);
            } else {
                warnings.push(format!(
                    "{msg} (expected in the sandbox: nodes share this machine's)"
                ));
            }
        }
    };
    let get = |h: &Value, p: &str| {
        h.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    dup(
        "product_uuid",
        facts
            .iter()
            .map(|(n, f)| (n.clone(), get(f, "/product_uuid")))
            .collect(),
        !sandbox,
    );
    dup(
        "MAC address",
        facts
            .iter()
            .flat_map(|(n, f)| {
                f.pointer("/macs")
                    .and_then(Value::as_object)
                    .map(|m| {
                        // A host may show one MAC on several interfaces (bridge ports, VLANs).
                        let mine: std::collections::BTreeSet<String> = m
                            .values()
                            .filter_map(|v| v.as_str())
                            .map(str::to_string)
                            .collect();
                        mine.into_iter().map(|v| (n.clone(), v)).collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            })
            .collect(),
        true,
    );
    dup(
        "machine-id",
        facts
            .iter()
            .map(|(n, f)| (n.clone(), get(f, "/machine_id")))
            .collect(),
        !sandbox,
    );
    let skews: Vec<(String, f64, f64)> = facts
        .iter()
        .filter_map(|(n, f)| {
            let s = f.pointer("/clock/skew_secs")?.as_f64()?;
            let u = f
                .pointer("/clock/uncertainty_secs")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            Some((n.clone(), s, u))
        })
        .collect();
    if let (Some(min), Some(max)) = (
        skews.iter().min_by(|a, b| a.1.total_cmp(&b.1)),
        skews.iter().max_by(|a, b| a.1.total_cmp(&b.1)),
    ) {
        // Subtract what the round trips cannot tell apart.
        let skew = (max.1 - min.1 - max.2 - min.2).max(0.0);
        let msg = format!("clocks of {} and {} differ by {skew:.2}s", max.0, min.0);
        if skew > MAX_SKEW_SECS {
            errors.push(format!(
                "{msg} (more than {MAX_SKEW_SECS}s: etcd and TLS need synchronized clocks)"
            ));
        } else if skew > WARN_SKEW_SECS {
            warnings.push(msg);
        }
    }
    (errors, warnings)
}

/// Gathers facts everywhere, runs the checks, hands the facts to the engine.
pub async fn run(cx: &PhaseContext<'_>) -> Result<(), InstallError> {
    let concurrency = cx.cluster.ssh.concurrency.max(1);
    let proxy_mode = cx.cluster.kubernetes.proxy_mode;
    let semaphore = tokio::sync::Semaphore::new(concurrency);
    let gathered: Vec<(String, Result<Value, HostPreflight>, Vec<String>)> =
        futures::future::join_all(
            cx.targets
                .iter()
                .map(|t| check_one(cx, t, proxy_mode, &semaphore)),
        )
        .await;
    let mut all_facts = BTreeMap::new();
    let mut refusals = Vec::new();
    for (host, result, conflicts) in gathered {
        refusals.extend(conflicts.into_iter().map(|c| format!("{host}: {c}")));
        match result {
            Ok(f) => {
                cx.engine.set_facts(&host, f.clone());
                all_facts.insert(host, f);
            }
            Err(HostPreflight::AlreadyFailed) => {}
            Err(e) => {
                let e = clusterkit_core::error_chain(&e);
                eprintln!("error: {host}: {e}");
                cx.engine.fail_host(&host, e);
            }
        }
    }
    // The mode is the cluster's: one host that runs the other way stops the install on every
    // host, before anything changes (the others would otherwise go on in the wrong mode).
    if !refusals.is_empty() {
        return Err(InstallError::Preflight { failures: refusals });
    }
    let (errors, warnings) = check_cluster(&all_facts, cx.cluster.profile == Profile::Sandbox);
    for w in &warnings {
        eprintln!("warning: preflight: {w}");
    }
    if !errors.is_empty() {
        return Err(InstallError::Preflight { failures: errors });
    }
    Ok(())
}

/// Why one host did not pass preflight.
#[derive(Debug, thiserror::Error)]
enum HostPreflight {
    /// The host failed before preflight and is reported already.
    #[error("failed before preflight")]
    AlreadyFailed,

    #[error("preflight: gathering facts: {0}")]
    Facts(#[source] ModuleError),

    /// The checks that failed, in words.
    #[error("preflight: {}", .0.join("; "))]
    Checks(Vec<String>),
}

/// Gathers one host's facts and checks them.
async fn check_one(
    cx: &PhaseContext<'_>,
    t: &clusterkit_core::playbook::HostTarget,
    proxy_mode: ProxyMode,
    semaphore: &tokio::sync::Semaphore,
) -> (String, Result<Value, HostPreflight>, Vec<String>) {
    let _permit = semaphore.acquire().await;
    if cx.engine.host_failed(&t.name) {
        return (t.name.clone(), Err(HostPreflight::AlreadyFailed), vec![]);
    }
    let facts = match facts::gather(t.exec.as_ref()).await {
        Ok(f) => f,
        Err(e) => return (t.name.clone(), Err(HostPreflight::Facts(e)), vec![]),
    };
    let roles: Vec<Role> = cx
        .cluster
        .host(&t.name)
        .map(|h| h.roles.clone())
        .unwrap_or_default();
    let mut findings = check_host(&facts, &roles, proxy_mode, cx.cluster.kubernetes.version);
    // The local load balancer's port, on every node (haproxy may hold it on a rerun).
    let lb = cx.cluster.kubernetes.load_balancer;
    if lb.local {
        findings
            .errors
            .extend(port_conflicts(&facts, &[(lb.port, "haproxy")]));
    }
    let mut conflicts = Vec::new();
    if let Some(h) = cx.cluster.host(&t.name) {
        match installed_modes(t.exec.as_ref()).await {
            Ok(found) => conflicts = mode_conflicts(cx.cluster, h, &found),
            Err(e) => return (t.name.clone(), Err(HostPreflight::Facts(e.into())), vec![]),
        }
    }
    if proxy_mode == ProxyMode::Ipvs
        && facts.pointer("/ipvs") != Some(&Value::Bool(true))
        && ipvs_loadable(t.exec.as_ref()).await == Some(true)
    {
        findings.errors.retain(|e| !e.starts_with("IPVS"));
    }
    eprintln!("  {}: preflight: {}", t.name, findings.summary);
    for w in &findings.warnings {
        eprintln!("warning: {}: preflight: {w}", t.name);
    }
    if findings.errors.is_empty() {
        (t.name.clone(), Ok(facts), conflicts)
    } else {
        (
            t.name.clone(),
            Err(HostPreflight::Checks(findings.errors)),
            conflicts,
        )
    }
}

/// The files of the two ways kube-apiserver and etcd run: (component, unit file, manifest).
fn mode_files() -> [(&'static str, String, String); 2] {
    let l = NodeLayout::DEFAULT;
    [
        (
            "kube-apiserver",
            l.service_file(l.units.kube_apiserver),
            l.manifest("kube-apiserver"),
        ),
        ("etcd", l.service_file(l.units.etcd), l.manifest("etcd")),
    ]
}

/// Which of [`mode_files`] exist on a host.
async fn installed_modes(
    exec: &dyn Executor,
) -> Result<Vec<String>, clusterkit_core::exec::ExecError> {
    let paths: Vec<String> = mode_files()
        .into_iter()
        .flat_map(|(_, unit, manifest)| [unit, manifest])
        .collect();
    let script = format!(
        "for f in {}; do if [ -e \"$f\" ]; then echo \"$f\"; fi; done",
        paths.join(" ")
    );
    let out = exec
        .run(&clusterkit_core::exec::Command::new(script))
        .await?;
    Ok(out
        .stdout_str()
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// The refusals for a host whose kube-apiserver or etcd runs the other way than cluster.yaml
/// now says (`found`: which of [`mode_files`] exist there).
pub fn mode_conflicts(cluster: &Cluster, host: &Host, found: &[String]) -> Vec<String> {
    let static_pod = cluster.kubernetes.control_plane_mode == ControlPlaneMode::StaticPod;
    let mut errors = Vec::new();
    for (component, unit, manifest) in mode_files() {
        let (wanted, other, runs) = match component {
            "etcd" if !host.has_role(Role::Etcd) => continue,
            "etcd" if super::etcd::static_pod(cluster, host) => ("static-pod", &unit, "systemd"),
            "etcd" => ("systemd", &manifest, "static-pod"),
            _ if !host.has_role(Role::ControlPlane) => continue,
            _ if static_pod => ("static-pod", &unit, "systemd"),
            _ => ("systemd", &manifest, "static-pod"),
        };
        if found.contains(other) {
            errors.push(format!(
                "{component} already runs in {runs} mode here ({other} exists) but cluster.yaml \
                 wants {wanted}: switching an installed cluster between control_plane_mode \
                 systemd and static-pod is refused; set kubernetes.control_plane_mode back \
                 to what the cluster was installed with, or `clusterkit reset` it and install anew"
            ));
        }
    }
    errors
}

/// Whether `modprobe -n ip_vs` (a dry run: nothing is loaded) finds the module; `None` when
/// the host cannot be asked.
async fn ipvs_loadable(exec: &dyn Executor) -> Option<bool> {
    let out = exec
        .run(&clusterkit_core::exec::Command::new(
            "modprobe -n ip_vs 2>&1",
        ))
        .await
        .ok()?;
    Some(out.success())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn switching_the_control_plane_mode_is_refused() {
        let cluster = |mode: &str| {
            crate::test_cluster(&format!(
                "name: demo\nhosts:\n  - {{ name: cp1, address: 10.0.0.11, roles: [control-plane, etcd], auth: {{ key_file: ./k }} }}\n  - {{ name: w1, address: 10.0.0.12, roles: [worker, etcd], auth: {{ key_file: ./k }} }}\nkubernetes: {{ version: v1.20.2, control_plane_mode: {mode} }}\n"
            ))
        };
        let (sp, sd) = (cluster("static-pod"), cluster("systemd"));
        let units: Vec<String> = vec![
            "/etc/systemd/system/kube-apiserver.service".into(),
            "/etc/systemd/system/etcd.service".into(),
        ];
        let manifests: Vec<String> = vec![
            "/etc/kubernetes/manifests/kube-apiserver.yaml".into(),
            "/etc/kubernetes/manifests/etcd.yaml".into(),
        ];
        // As installed: nothing to say.
        assert!(mode_conflicts(&sd, sd.host("cp1").unwrap(), &units).is_empty());
        assert!(mode_conflicts(&sp, sp.host("cp1").unwrap(), &manifests).is_empty());
        // An external etcd member keeps its unit in static-pod mode.
        assert!(mode_conflicts(&sp, sp.host("w1").unwrap(), &units[1..]).is_empty());
        assert!(mode_conflicts(&sp, sp.host("w1").unwrap(), &[]).is_empty());
        // systemd → static-pod and back: both components named, with the way out.
        let e = mode_conflicts(&sp, sp.host("cp1").unwrap(), &units);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("kube-apiserver already runs in systemd mode here (/etc/systemd/system/kube-apiserver.service exists) but cluster.yaml wants static-pod"), "{e:?}");
        assert!(e[1].contains("etcd already runs in systemd mode"), "{e:?}");
        assert!(e[0].contains("clusterkit reset"), "{e:?}");
        let e = mode_conflicts(&sd, sd.host("cp1").unwrap(), &manifests);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("already runs in static-pod mode"), "{e:?}");
    }

    fn facts(cpus: u64, mem: u64) -> Value {
        json!({"os": {"id": "debian", "version_id": "12", "pretty_name": "Debian 12"}, "init": "systemd",
               "cpus": cpus, "memory_mib": mem, "ipvs": false, "ntp_synchronized": "yes",
               "listening": [{"port": 6443, "address": "0.0.0.0:6443", "process": "nginx"},
                             {"port": 10250, "address": "*:10250", "process": "kubelet"}]})
    }

    const V1_28: KubeVersion = KubeVersion::new(1, 28, 7);

    #[test]
    fn cgroup_v1_is_a_warning_before_the_kubelet_drops_it_and_an_error_after() {
        let mut f = facts(2, 2048);
        f["cgroup_version"] = json!(1);
        let before = check_host(&f, &[Role::Worker], ProxyMode::Iptables, V1_28);
        assert!(before.errors.is_empty(), "{:?}", before.errors);
        assert!(
            before
                .warnings
                .iter()
                .any(|w| w.contains("cgroup v1") && w.contains("v1.35.0")),
            "{:?}",
            before.warnings
        );
        assert!(before.summary.contains("cgroup v1"), "{}", before.summary);
        let after = check_host(
            &f,
            &[Role::Worker],
            ProxyMode::Iptables,
            KubeVersion::new(1, 35, 0),
        );
        assert!(
            after
                .errors
                .iter()
                .any(|e| e.contains("cgroup v1") && e.contains("failCgroupV1")),
            "{:?}",
            after.errors
        );
        f["cgroup_version"] = json!(2);
        let v2 = check_host(
            &f,
            &[Role::Worker],
            ProxyMode::Iptables,
            KubeVersion::new(1, 35, 0),
        );
        assert!(v2.errors.is_empty() && v2.warnings.is_empty(), "{v2:?}");
        assert!(v2.summary.contains("cgroup v2"), "{}", v2.summary);
    }

    #[test]
    fn load_balancer_port_must_be_free_or_held_by_haproxy() {
        let mut f = facts(2, 2048);
        f["listening"] = json!([
            {"port": 16443, "address": "127.0.0.1:16443", "process": "haproxy"},
            {"port": 7443, "address": "0.0.0.0:7443", "process": "nginx"}
        ]);
        assert!(port_conflicts(&f, &[(16443, "haproxy")]).is_empty());
        let errs = port_conflicts(&f, &[(7443, "haproxy")]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].contains("port 7443") && errs[0].contains("nginx"),
            "{errs:?}"
        );
    }

    #[test]
    fn control_plane_needs_cpus_memory_and_free_ports() {
        let f = check_host(
            &facts(1, 1024),
            &[Role::ControlPlane],
            ProxyMode::Iptables,
            V1_28,
        );
        let all = f.errors.join("\n");
        assert!(
            all.contains("1 CPU(s)") && all.contains("1024 MiB") && all.contains("port 6443"),
            "{all}"
        );
        assert!(
            !all.contains("10250"),
            "kubelet holding its own port is fine: {all}"
        );
        let f = check_host(&facts(1, 1024), &[Role::Worker], ProxyMode::Iptables, V1_28);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        let f = check_host(&facts(2, 2048), &[Role::Worker], ProxyMode::Ipvs, V1_28);
        assert!(
            f.errors.iter().any(|e| e.contains("IPVS")),
            "{:?}",
            f.errors
        );
    }

    #[test]
    fn duplicates_and_skew_across_hosts() {
        let mut m = BTreeMap::new();
        m.insert("a".to_string(), json!({"product_uuid": "U", "macs": {"eth0": "aa"}, "clock": {"skew_secs": 0.0, "uncertainty_secs": 0.01}}));
        m.insert("b".to_string(), json!({"product_uuid": "U", "macs": {"eth0": "aa"}, "clock": {"skew_secs": 5.0, "uncertainty_secs": 0.01}}));
        let (errors, _) = check_cluster(&m, false);
        let all = errors.join("\n");
        assert!(
            all.contains("product_uuid") && all.contains("MAC") && all.contains("differ by"),
            "{all}"
        );
        let (errors, warnings) = check_cluster(&m, true);
        assert!(!errors.join("").contains("product_uuid"));
        assert!(warnings.join("").contains("product_uuid"));
    }
}
