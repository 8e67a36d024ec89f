//! What really runs on a host: the version of each Kubernetes component's running process,
//! read from the process's own executable (`/proc/PID/exe --version`), so a binary replaced on
//! disk but not restarted still shows the old version, and a static-pod component shows the
//! version in its container. One remote command per host.
//!
//! Limits: a component that is not running is absent (not "unknown"); etcd is not read here.

use clusterkit_core::exec::{ExecError, Executor};
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
}

/// The script: every process whose executable is a Kubernetes component, its name and the
/// first line of `--version` (`Kubernetes v1.20.2`), one line per component.
fn script() -> String {
    let names: Vec<&str> = Component::ALL.iter().map(|c| c.name()).collect();
    format!(
        "for p in /proc/[0-9]*; do \
           e=$(readlink \"$p/exe\" 2>/dev/null) || continue; n=${{e##*/}}; n=${{n% (deleted)}}; \
           case \"$n\" in {}) echo \"$n $(\"$p/exe\" --version 2>/dev/null | head -n1)\";; esac; \
         done | sort -u",
        names.join("|")
    )
}

/// The components running on `exec`'s host and their versions, in [`Component::ALL`]'s order.
pub async fn read(exec: &dyn Executor) -> Result<Vec<Running>, RunningError> {
    let out = exec.sh(&script()).await?;
    parse(exec.host(), &out)
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
}
