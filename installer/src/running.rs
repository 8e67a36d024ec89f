//! What really runs on a host: the version of each Kubernetes component's running process,
//! read from the process's own executable (`/proc/PID/exe --version`), so a binary replaced on
//! disk but not restarted still shows the old version, and a static-pod component shows the
//! version in its container. One remote command per host; a caller that needs more from the
//! host passes its own script to [`read_hosts`], which runs in the same command.
//!
//! Also what should run ([`expected`]) and whether what runs is cluster.yaml's
//! `kubernetes.version` ([`against_desired`]: `install` refuses to move a running cluster to
//! another release, which is `upgrade apply`'s job).
//!
//! Also the version of an installed kubectl ([`kubectl_script`]), a client the skew policy
//! checks apart from the components.
//!
//! Limits: a component that is not running is absent (not "unknown"); etcd is not read here.

use std::fmt;

use clusterkit_core::config::{Cluster, Host, Role};
use clusterkit_core::exec::ssh::SshExecutor;
use clusterkit_core::exec::{ExecError, Executor};
use clusterkit_core::fanout::{Fanout, HostResult};
use clusterkit_core::layout::Component;
use clusterkit_core::release::{KubeVersion, VersionError};

use crate::skew::Running;

/// Reading a host's component versions failed.
#[derive(Debug, thiserror::Error)]
pub enum RunningError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A component answered `--version` with something that is not a version.
    #[error("{host}: {component} --version printed {line:?}")]
    Version {
        host: String,
        component: Component,
        line: String,
        #[source]
        source: VersionError,
    },
    /// The combined command's output lacks the line that ends this module's part.
    #[error("{host}: the version listing ended early (no {END:?} line)")]
    Truncated { host: String },
}

/// The line that ends [`script`]'s output when a caller's script follows it.
const END: &str = "@@@ end of running components";

/// The script: every process whose executable is a Kubernetes component, its name and the
/// first line of `--version` (`Kubernetes v1.20.2`), one line per component. The `--version`
/// runs start together (each is a Go binary's start-up, ~60 ms; one after the other they were
/// most of a converged install's first second); each prints one short line, which a pipe
/// writes whole; `sort` reads until the last of them has closed the pipe.
fn script() -> String {
    let names: Vec<&str> = Component::ALL.iter().map(|c| c.name()).collect();
    format!(
        "for p in /proc/[0-9]*; do \
           e=$(readlink \"$p/exe\" 2>/dev/null) || continue; n=${{e##*/}}; n=${{n% (deleted)}}; \
           case \"$n\" in {}) echo \"$n $(\"$p/exe\" --version 2>/dev/null | head -n1)\" & ;; esac; \
         done | sort -u",
        names.join("|")
    )
}

/// The components running on `exec`'s host and their versions, in [`Component::ALL`]'s order.
pub async fn read(exec: &dyn Executor) -> Result<Vec<Running>, RunningError> {
    Ok(read_with(exec, "").await?.0)
}

/// [`read`], and the stdout of `also` (a shell script) run after it in the same remote command.
pub async fn read_with(
    exec: &dyn Executor,
    also: &str,
) -> Result<(Vec<Running>, String), RunningError> {
    let out = exec
        .sh(&format!("{}\necho '{END}'\n{also}", script()))
        .await?;
    let (mine, rest) = split_end(&out).ok_or_else(|| RunningError::Truncated {
        host: exec.host().to_string(),
    })?;
    Ok((parse(exec.host(), mine)?, rest.to_string()))
}

/// The output before the [`END`] line and after it.
fn split_end(out: &str) -> Option<(&str, &str)> {
    if let Some(rest) = out.strip_prefix(&format!("{END}\n")) {
        return Some(("", rest));
    }
    out.split_once(&format!("\n{END}\n"))
}

/// What runs on each of `hosts`, one SSH connection and one command per host (at most
/// `fanout`'s concurrency at once), with the stdout of `also(host)` run in the same command;
/// results in the order of `hosts`.
pub async fn read_hosts(
    cluster: &Cluster,
    hosts: &[&Host],
    fanout: &Fanout,
    also: impl Fn(&Host) -> String,
) -> Vec<HostResult<(Vec<Running>, String), RunningError>> {
    let items = hosts
        .iter()
        .map(|h| {
            let target = clusterkit_core::inventory::ssh_target(cluster, h);
            (h.name.clone(), (target, also(h)))
        })
        .collect();
    fanout
        .run(items, |(target, also)| async move {
            let ssh = SshExecutor::connect(target?).await?;
            let found = read_with(&ssh, &also).await;
            ssh.close().await;
            found
        })
        .await
}

/// The shell script that prints the kubectl at `path` as `kubectl version --client -o json`
/// does (the one output both old and new releases share), nothing when there is none.
pub fn kubectl_script(path: &str) -> String {
    format!("if [ -x {path} ]; then {path} version --client -o json 2>/dev/null; fi")
}

/// The client version in the output of [`kubectl_script`] (or `kubectl version --client -o
/// json`); `None` when it holds none.
pub fn kubectl_version(json: &str) -> Option<KubeVersion> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    KubeVersion::parse(v["clientVersion"]["gitVersion"].as_str()?).ok()
}

/// The components clusterkit runs on `host`: kubelet and kube-proxy on every host (each is a
/// Node), the control plane's three on control-plane hosts; in [`Component::ALL`]'s order.
pub fn expected(host: &Host) -> Vec<Component> {
    Component::ALL
        .into_iter()
        .filter(|c| !Component::CONTROL_PLANE.contains(c) || host.has_role(Role::ControlPlane))
        .collect()
}

/// Components running another release than cluster.yaml's `kubernetes.version`: `install`
/// neither upgrades (that is `upgrade apply`, which keeps the version-skew policy and drains
/// nodes) nor downgrades a running cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Mismatch {
    /// cluster.yaml's `kubernetes.version`.
    pub desired: KubeVersion,
    /// Components running an older release than `desired`.
    pub older: Vec<Running>,
    /// Components running a newer release than `desired`.
    pub newer: Vec<Running>,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.desired;
        if !self.older.is_empty() {
            write!(
                f,
                "cluster.yaml's kubernetes.version is {d} but {}: install does not upgrade a \
                 running cluster; `clusterkit upgrade apply --to {d}` does (`clusterkit upgrade \
                 plan --to {d}` shows the moves)",
                per_host(&self.older)
            )?;
        }
        if let Some(newest) = self.newer.iter().map(|r| r.version).max() {
            if !self.older.is_empty() {
                f.write_str("; and ")?;
            }
            write!(
                f,
                "cluster.yaml's kubernetes.version is {d} but {}: clusterkit does not \
                 downgrade; set kubernetes.version to {newest}",
                per_host(&self.newer)
            )?;
        }
        Ok(())
    }
}

/// "node1 runs kube-apiserver v1.20.2, kubelet v1.20.2, node2 runs kubelet v1.20.2".
fn per_host(running: &[Running]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut host: Option<&str> = None;
    for r in running {
        if host == Some(r.host.as_str()) {
            parts.push(format!("{} {}", r.component, r.version));
        } else {
            parts.push(format!("{} runs {} {}", r.host, r.component, r.version));
            host = Some(&r.host);
        }
    }
    parts.join(", ")
}

/// Whether everything in `running` is `desired`; nothing running (fresh hosts) is.
pub fn against_desired(running: &[Running], desired: KubeVersion) -> Result<(), Mismatch> {
    let older: Vec<Running> = running
        .iter()
        .filter(|r| r.version < desired)
        .cloned()
        .collect();
    let newer: Vec<Running> = running
        .iter()
        .filter(|r| r.version > desired)
        .cloned()
        .collect();
    if older.is_empty() && newer.is_empty() {
        Ok(())
    } else {
        Err(Mismatch {
            desired,
            older,
            newer,
        })
    }
}

fn parse(host: &str, out: &str) -> Result<Vec<Running>, RunningError> {
    let mut found = Vec::new();
    for component in Component::ALL {
        let prefix = format!("{} ", component.name());
        // Two processes of one component (a restart in progress) print two lines: the oldest
        // version is the one that constrains the roll.
        let mut versions = Vec::new();
        for line in out.lines().filter(|l| l.starts_with(&prefix)) {
            let printed = line[prefix.len()..].trim();
            let word = printed.rsplit(' ').next().unwrap_or_default();
            let version = KubeVersion::parse(word).map_err(|source| RunningError::Version {
                host: host.to_string(),
                component,
                line: printed.to_string(),
                source,
            })?;
            versions.push(version);
        }
        if let Some(version) = versions.into_iter().min() {
            found.push(Running {
                host: host.to_string(),
                component,
                version,
            });
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clusterkit_core::exec::local::LocalExecutor;

    #[test]
    fn lines_become_versions_in_component_order() {
        let out = "kubelet Kubernetes v1.20.2\nkube-apiserver Kubernetes v1.21.14\n\
                   kube-proxy Kubernetes v1.20.2-debian\nkube-apiserver Kubernetes v1.20.2\n";
        let got = parse("cp1", out).unwrap();
        let names: Vec<(&str, String)> = got
            .iter()
            .map(|r| (r.component.name(), r.version.to_string()))
            .collect();
        assert_eq!(
            names,
            [
                ("kube-apiserver", "v1.20.2".to_string()),
                ("kubelet", "v1.20.2".to_string()),
                ("kube-proxy", "v1.20.2".to_string()),
            ]
        );
        assert!(got.iter().all(|r| r.host == "cp1"));
    }

    fn run(host: &str, component: Component, version: &str) -> Running {
        Running {
            host: host.into(),
            component,
            version: KubeVersion::parse(version).unwrap(),
        }
    }

    #[test]
    fn the_desired_release_or_nothing_running_passes() {
        let v = KubeVersion::new(1, 20, 2);
        assert_eq!(against_desired(&[], v), Ok(()));
        let same = [
            run("cp1", Component::KubeApiserver, "v1.20.2"),
            run("cp1", Component::Kubelet, "v1.20.2"),
        ];
        assert_eq!(against_desired(&same, v), Ok(()));
    }

    #[test]
    fn a_newer_desired_release_points_to_upgrade_apply() {
        let running = [
            run("cp1", Component::KubeApiserver, "v1.20.2"),
            run("cp1", Component::Kubelet, "v1.20.2"),
            run("cp2", Component::KubeApiserver, "v1.20.2"),
        ];
        let err = against_desired(&running, KubeVersion::new(1, 20, 3)).unwrap_err();
        assert_eq!(err.older.len(), 3);
        assert!(err.newer.is_empty());
        assert_eq!(
            err.to_string(),
            "cluster.yaml's kubernetes.version is v1.20.3 but cp1 runs kube-apiserver v1.20.2, \
             kubelet v1.20.2, cp2 runs kube-apiserver v1.20.2: install does not upgrade a running \
             cluster; `clusterkit upgrade apply --to v1.20.3` does (`clusterkit upgrade plan --to \
             v1.20.3` shows the moves)"
        );
    }

    #[test]
    fn an_older_desired_release_is_a_downgrade_and_names_what_runs() {
        let running = [
            run("cp1", Component::KubeApiserver, "v1.21.1"),
            run("cp1", Component::Kubelet, "v1.20.2"),
        ];
        let err = against_desired(&running, KubeVersion::new(1, 20, 2))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cluster.yaml's kubernetes.version is v1.20.2 but cp1 runs kube-apiserver v1.21.1: \
             clusterkit does not downgrade; set kubernetes.version to v1.21.1"
        );
        // Mid-roll, both ways at once: both are said.
        let err = against_desired(&running, KubeVersion::new(1, 21, 0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("upgrade apply --to v1.21.0") && err.contains("does not downgrade"),
            "{err}"
        );
    }

    #[test]
    fn control_plane_hosts_run_five_components_the_others_two() {
        let cluster = crate::test_cluster(
            "name: t\nssh: { known_hosts: ./known_hosts }\nkubernetes: { version: v1.20.2 }\nhosts:\n  \
             - { name: cp1, address: 10.0.0.1, roles: [control-plane, etcd], auth: { key_file: ./k } }\n  \
             - { name: w1, address: 10.0.0.2, roles: [worker], auth: { key_file: ./k } }\n  \
             - { name: e1, address: 10.0.0.3, roles: [etcd], auth: { key_file: ./k } }\n",
        );
        assert_eq!(expected(&cluster.hosts[0]), Component::ALL);
        for h in &cluster.hosts[1..] {
            assert_eq!(expected(h), [Component::Kubelet, Component::KubeProxy]);
        }
    }

    #[test]
    fn the_caller_script_output_follows_the_end_line() {
        assert_eq!(
            split_end(&format!("kubelet Kubernetes v1.20.2\n{END}\n@@ c - /x\n")),
            Some(("kubelet Kubernetes v1.20.2", "@@ c - /x\n"))
        );
        assert_eq!(split_end(&format!("{END}\n")), Some(("", "")));
        assert_eq!(split_end("kubelet Kubernetes v1.20.2\n"), None);
    }

    #[test]
    fn a_line_without_a_version_names_host_component_and_line() {
        let err = parse("w1", "kubelet \n").unwrap_err().to_string();
        assert!(err.contains("w1: kubelet --version printed"), "{err}");
    }

    #[tokio::test]
    async fn the_script_reads_a_running_process_by_its_executable() {
        // A real process whose executable is named kube-proxy: GNU sleep, whose `--version`
        // is not a Kubernetes version, so reading this machine must fail naming it.
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("kube-proxy");
        std::fs::copy("/bin/sleep", &bin).unwrap();
        let mut child = std::process::Command::new(&bin).arg("30").spawn().unwrap();
        let exec = LocalExecutor::new("here", std::time::Duration::from_secs(30));
        let result = read(&exec).await;
        child.kill().unwrap();
        child.wait().unwrap();
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("here: kube-proxy --version printed \"sleep (GNU coreutils)"),
            "{err}"
        );
    }

    #[test]
    fn kubectl_versions_of_old_and_new_releases_and_of_nothing() {
        // v1.20's output (kubectl's version.Info); v1.28's adds kustomizeVersion.
        let old = r#"{"clientVersion": {"major": "1", "minor": "20", "gitVersion": "v1.20.2", "platform": "linux/amd64"}}"#;
        let new = r#"{"clientVersion": {"major": "1", "minor": "28", "gitVersion": "v1.28.7"}, "kustomizeVersion": "v5.0.4"}"#;
        assert_eq!(kubectl_version(old).unwrap().to_string(), "v1.20.2");
        assert_eq!(kubectl_version(new).unwrap().to_string(), "v1.28.7");
        assert_eq!(kubectl_version(""), None);
        assert_eq!(kubectl_version(r#"{"clientVersion": {}}"#), None);
    }
}
