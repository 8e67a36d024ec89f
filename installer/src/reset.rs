//! Undo an installation on hosts: stop services, remove state, clean iptables/ipvs.
//!
//! One shell script per host ([`script`]), run in one SSH round trip, does every step
//! check-then-act and prints one `CHANGED <what>` line per thing it actually did (or, in check
//! mode, would do), and `FAILED <what>: <error>` for a step that failed; it carries on after a
//! failure so one stuck step does not leave the rest half-done, and exits non-zero when any
//! step failed. A second reset therefore prints nothing: "nothing to do". The steps, in order:
//!
//! 1. stop and disable kubelet, kube-proxy, kube-apiserver, kube-controller-manager,
//!    kube-scheduler and etcd, and the backup timers (whatever of them is active or enabled);
//! 2. remove the pod sandboxes and containers the kubelet left in containerd (`crictl rmp -fa`
//!    when crictl is there, else `ctr -n k8s.io` tasks and containers); containerd itself stays
//!    (it belongs to the runtime phase);
//! 3. unmount what the kubelet mounted under `/var/lib/kubelet`;
//! 4. remove `/etc/kubernetes`, `/etc/clusterkit` (the backup timers' secrets and kubeconfig),
//!    `/var/lib/kubelet`, `/var/lib/kube-proxy` and the CNI IPAM state (`/var/lib/cni`), and
//!    empty the CNI config directory (`/etc/cni/net.d`, kept: containerd watches it);
//!    `/var/lib/etcd` is moved aside to
//!    `/var/lib/etcd.reset-<timestamp>` (so a mistaken reset can be undone) unless `purge`;
//! 5. remove the systemd units clusterkit installed (`/etc/systemd/system/<unit>.service` and
//!    drop-in directories, the backup timers' `.timer` and `.service`), then `daemon-reload`
//!    and `reset-failed`;
//! 6. remove every iptables rule and chain kube-proxy and the CNI plugins created (chains
//!    `KUBE-*`, `CNI-*`, `FLANNEL-*` and every rule jumping to them), in each table, for IPv4
//!    and IPv6 and both the nft and legacy backends: the rules are filtered out of
//!    `iptables-save` and restored, so other rules stay; `ipvsadm --clear` when ipvsadm exists
//!    and has virtual services; the `kube-ipvs0`, `cni0` and `flannel.1` interfaces.
//!
//! Resetting some etcd members while others stay: [`remove_etcd_members`] first removes them
//! from the member list through a remaining member (as kubeadm's reset does), so the cluster
//! keeps a quorum of what is left and the host can later rejoin through `member add`.
//!
//! Limits: binaries in `/usr/local/bin` and packages (etcd-server, containerd) stay, like
//! kubeadm's reset; the state directory on the operator's machine (PKI, kubeconfigs) is not
//! touched, so a re-install reuses the CAs. Nodes are not drained or deleted from the API.

use std::time::Duration;

use clusterkit_core::config::{Cluster, Host, Role};
use clusterkit_core::exec::{Command, ExecError, Executor};
use clusterkit_core::layout::NodeLayout;
use serde::Serialize;

use crate::phases::etcd as etcd_phase;

/// Errors of a reset. The step messages come from the host's own commands.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// The host could not be reached or the script could not run.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Some steps failed on a host (the others were done).
    #[error("{host}: {} step(s) failed: {}", failed.len(), failed.join("; "))]
    Steps {
        /// The host.
        host: String,
        /// `what: error` of each failed step.
        failed: Vec<String>,
        /// What was done anyway.
        changed: Vec<String>,
    },
    /// The members to reset could not be removed from the etcd cluster first.
    #[error("etcd: cannot remove {members} from the cluster before the reset: {message}")]
    EtcdMembers {
        /// The members, comma-separated.
        members: String,
        /// Why, in words.
        message: String,
    },
    /// A step of removing the members failed.
    #[error("etcd: cannot remove {members} from the cluster before the reset: {what}: {source}")]
    EtcdStep {
        /// The members, comma-separated.
        members: String,
        /// The step.
        what: String,
        #[source]
        source: crate::phases::Cause,
    },
}

/// How to reset.
#[derive(Clone, Debug)]
pub struct ResetOptions {
    /// Delete `/var/lib/etcd` instead of moving it aside.
    pub purge: bool,
    /// Report what would be done; change nothing.
    pub check: bool,
    /// Suffix of the moved etcd data directory (`/var/lib/etcd.reset-<stamp>`), the same on
    /// every host of one run: `YYYYmmddTHHMMSS`.
    pub stamp: String,
}

impl ResetOptions {
    /// Options with a stamp of the current UTC time.
    pub fn now(purge: bool, check: bool) -> Self {
        Self {
            purge,
            check,
            stamp: chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string(),
        }
    }
}

/// Directories removed outright. The clusterkit directory holds the backup timers' secrets
/// (S3 keys, passphrase) and the namespace timer's admin kubeconfig, the previous directory
/// what `upgrade apply` kept for a rollback (binaries, units, configurations): they must not
/// outlive the node's place in the cluster. The CNI configuration directory is not among
/// them: it is emptied ([`script`]).
pub fn dirs(layout: &NodeLayout) -> [&'static str; 6] {
    [
        layout.kubernetes_dir,
        layout.clusterkit_dir,
        layout.previous_dir,
        layout.kubelet_dir,
        layout.kube_proxy_dir,
        layout.cni_state_dir,
    ]
}

/// iptables chains (by prefix) that kube-proxy and the CNI plugins create.
pub const CHAIN_PREFIXES: [&str; 3] = ["KUBE-", "CNI-", "FLANNEL-"];

/// Interfaces kube-proxy (ipvs) and the CNI plugins create.
pub const LINKS: [&str; 3] = ["kube-ipvs0", "cni0", "flannel.1"];

/// The whole reset as one POSIX shell script (see the module documentation).
pub fn script(opts: &ResetOptions) -> String {
    let layout = NodeLayout::DEFAULT;
    let units = layout.units;
    let mut s = String::new();
    s.push_str(if opts.check { "DRY=1\n" } else { "DRY=\n" });
    // act WHAT CMD...: report, then (unless dry) run; a failure is reported, not fatal.
    s.push_str(
        r#"FAILS=0
act() { what=$1; shift; echo "CHANGED $what"; [ -n "$DRY" ] && return 0
  if ! err=$("$@" 2>&1 >/dev/null); then echo "FAILED $what: $(printf '%s' "$err" | tr '\n' ' ' | cut -c1-400)"; FAILS=$((FAILS+1)); fi; }
export PATH="$PATH:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin"
"#,
    );
    // 1. Services: the local API load balancer only when its config is clusterkit's (an
    //    operator's own haproxy is left alone), then clusterkit's own units.
    s.push_str(&format!(
        "if head -n 1 {cfg} 2>/dev/null | grep -q '^# Written by clusterkit' && systemctl is-enabled -q {lb} 2>/dev/null; then act 'stop and disable {lb} (local API load balancer)' systemctl disable --now {lb}; fi\n",
        cfg = layout.haproxy_config,
        lb = units.haproxy,
    ));
    let timers = units.backup_timers().map(|t| format!("{t}.timer"));
    for unit in units
        .services()
        .into_iter()
        .chain(timers.iter().map(|t| t.as_str()))
    {
        s.push_str(&format!(
            "st=$(systemctl is-enabled {unit} 2>/dev/null); if systemctl is-active -q {unit} || [ \"$st\" = enabled ] || [ \"$st\" = enabled-runtime ]; then act 'stop and disable {unit}' systemctl disable --now {unit}; fi\n"
        ));
    }
    // 2. Containers left by the kubelet: through the CRI with crictl; else (Debian has no
    //    crictl) with ctr, behind the back of containerd's CRI plugin, which keeps listing
    //    the removed containers until it reloads its state at a restart. A kubelet started
    //    later on the node would find them, fail to remove them ("not found"), and never
    //    finish deleting a pod of theirs (a DaemonSet pod that outlived the node's removal
    //    stayed Terminating), so containerd is restarted after such removals.
    s.push_str(&format!("if [ -S {} ]; then\n", layout.containerd_socket));
    s.push_str(&format!(
        r#"  if command -v crictl >/dev/null 2>&1; then
    if [ -n "$(crictl pods -q 2>/dev/null)" ]; then act 'remove pod sandboxes and containers (crictl rmp -fa)' crictl rmp -fa; fi
  elif command -v ctr >/dev/null 2>&1; then
    removed=
    for c in $(ctr -n k8s.io containers ls -q 2>/dev/null); do
      act "remove container $c (ctr)" sh -c "ctr -n k8s.io tasks kill -s KILL $c >/dev/null 2>&1; sleep 1; ctr -n k8s.io tasks delete -f $c >/dev/null 2>&1; ctr -n k8s.io containers delete $c"
      removed=1
    done
    if [ -n "$removed" ] && systemctl is-active -q {containerd}; then act 'restart {containerd} (its CRI plugin reloads the containers removed with ctr)' systemctl restart {containerd}; fi
  fi
fi
"#,
        containerd = units.containerd
    ));
    // 3. Kubelet mounts, deepest first.
    s.push_str(&format!(
        r#"for m in $(awk '$2 ~ "^{kubelet}/" {{print $2}}' /proc/mounts | sort -r); do act "unmount $m" umount -l "$m"; done
"#,
        kubelet = layout.kubelet_dir
    ));
    // 4. Directories.
    for dir in dirs(&layout) {
        s.push_str(&format!(
            "if [ -e {dir} ]; then act 'remove {dir}' rm -rf {dir}; fi\n"
        ));
    }
    // The CNI configuration directory is emptied, not removed: containerd (which stays)
    // watches it with inotify from its start, and removing the directory ends that watch for
    // good, so the configuration a later install writes there would not be loaded until
    // containerd restarted, and the node would stay NotReady ("cni plugin not initialized").
    s.push_str(&format!(
        "if [ -n \"$(ls -A {cni} 2>/dev/null)\" ]; then act 'remove the CNI configuration in {cni}' find {cni} -mindepth 1 -delete; fi\n",
        cni = layout.cni_conf_dir
    ));
    let data = layout.etcd_data_dir;
    if opts.purge {
        s.push_str(&format!(
            "if [ -e {data} ]; then act 'delete {data} (purge)' rm -rf {data}; fi\n"
        ));
    } else {
        s.push_str(&format!(
            "if [ -e {data} ]; then act 'move {data} to {data}.reset-{stamp}' mv {data} {data}.reset-{stamp}; fi\n",
            stamp = opts.stamp
        ));
    }
    // 5. Units clusterkit wrote.
    s.push_str("RELOAD=\n");
    for t in units.backup_timers() {
        s.push_str(&format!(
            "for f in {timer} {service}; do if [ -e \"$f\" ]; then act \"remove $f\" rm -f \"$f\"; RELOAD=1; fi; done\n",
            timer = layout.timer_file(t),
            service = layout.service_file(t),
        ));
    }
    for unit in units.services() {
        s.push_str(&format!(
            "for f in {service} {service}.d; do if [ -e \"$f\" ]; then act \"remove $f\" rm -rf \"$f\"; RELOAD=1; fi; done\n",
            service = layout.service_file(unit),
        ));
    }
    s.push_str(
        "if [ -n \"$RELOAD\" ] && [ -z \"$DRY\" ]; then systemctl daemon-reload; systemctl reset-failed >/dev/null 2>&1; fi\n",
    );
    // 6. iptables, ipvs, interfaces.
    let prefixes = CHAIN_PREFIXES.join("|");
    s.push_str(&format!(
        r#"PAT='^:({prefixes})|^-A ({prefixes})|-[jg] ({prefixes})'
for t in iptables ip6tables iptables-legacy ip6tables-legacy; do
  command -v "$t-save" >/dev/null 2>&1 && command -v "$t-restore" >/dev/null 2>&1 || continue
  tmp=$(mktemp) || continue
  if "$t-save" >"$tmp" 2>/dev/null; then
    n=$(grep -cE "$PAT" "$tmp")
    if [ "$n" -gt 0 ]; then
      act "remove $n kube-proxy/CNI iptables lines ($t)" sh -c "grep -vE \"\$1\" \"\$2\" | $t-restore" sh "$PAT" "$tmp"
    fi
  fi
  rm -f "$tmp"
done
if command -v ipvsadm >/dev/null 2>&1 && [ -n "$(ipvsadm -Sn 2>/dev/null)" ]; then act 'clear ipvs virtual servers (ipvsadm --clear)' ipvsadm --clear; fi
"#
    ));
    for link in LINKS {
        s.push_str(&format!(
            "if ip link show {link} >/dev/null 2>&1; then act 'delete interface {link}' ip link delete {link}; fi\n"
        ));
    }
    s.push_str("[ \"$FAILS\" -eq 0 ]\n");
    s
}

/// Removes the etcd members among `leaving` from the etcd cluster, through the first of the
/// remaining members that answers (TLS, the healthcheck client certificate from the state
/// directory). Nothing to do when no etcd host leaves, or when every one does (the whole
/// cluster is reset), or when no etcd member answers at all (no running cluster to leave;
/// logged as a warning). An error when the leaving members still run but no remaining member
/// answers. `check` only looks. Returns one line per member removed (or, in check mode, that
/// would be); a member already gone is skipped.
pub async fn remove_etcd_members(
    cluster: &Cluster,
    leaving: &[&Host],
    check: bool,
) -> Result<Vec<String>, ResetError> {
    let leaving: Vec<&Host> = leaving
        .iter()
        .copied()
        .filter(|h| h.has_role(Role::Etcd))
        .collect();
    let remaining: Vec<&Host> = cluster
        .hosts_with_role(Role::Etcd)
        .into_iter()
        .filter(|h| !leaving.iter().any(|l| l.name == h.name))
        .collect();
    if leaving.is_empty() || remaining.is_empty() {
        return Ok(vec![]);
    }
    let names = leaving
        .iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let fail = |message: String| ResetError::EtcdMembers {
        members: names.clone(),
        message,
    };
    let step = |what: String, source: crate::phases::Cause| ResetError::EtcdStep {
        members: names.clone(),
        what,
        source,
    };
    let tls = etcd_phase::ClientTls::load(cluster)
        .map_err(|e| step("etcd client credentials".into(), e.into()))?;
    let timeout = Duration::from_secs(5);
    let mut errors = Vec::new();
    for via in &remaining {
        let endpoint = etcd_phase::client_url(via);
        let mut client = match tls.connect(&endpoint, timeout).await {
            Ok(c) => c,
            Err(e) => {
                errors.push(clusterkit_core::error_chain(&e));
                continue;
            }
        };
        let list = match tokio::time::timeout(timeout, client.member_list()).await {
            Ok(Ok(list)) => list,
            Ok(Err(e)) => {
                errors.push(format!("{endpoint}: {e}"));
                continue;
            }
            Err(_) => {
                errors.push(format!("{endpoint}: member list timed out"));
                continue;
            }
        };
        let mut done = Vec::new();
        for h in &leaving {
            let url = etcd_phase::peer_url(h);
            let Some(member) = list
                .members()
                .iter()
                .find(|m| m.name() == h.name || m.peer_urls().contains(&url))
            else {
                continue;
            };
            let id = member.id();
            if !check {
                etcd_phase::reconfigure(|| {
                    // A clone shares the connection; each attempt owns its handle.
                    let mut client = client.clone();
                    async move { client.member_remove(id).await }
                })
                .await
                .map_err(|e| {
                    step(
                        format!("member remove {} ({id:x}) through {}", h.name, via.name),
                        e.into(),
                    )
                })?;
                tracing::info!(member = %h.name, via = %via.name, "etcd member removed");
            }
            done.push(format!(
                "remove etcd member {} ({id:x}) through {}",
                h.name, via.name
            ));
        }
        return Ok(done);
    }
    // No remaining member answers. If a leaving member still does, the cluster is alive but
    // unreachable from here: refuse. If none answers at all, there is no running cluster to
    // leave (e.g. it was reset already): nothing to remove.
    for h in &leaving {
        if etcd_phase::view(&tls, &etcd_phase::client_url(h), timeout)
            .await
            .is_ok()
        {
            return Err(fail(format!(
                "{} still runs but no remaining member answers: {}",
                h.name,
                errors.join("; ")
            )));
        }
    }
    tracing::warn!(
        members = %names,
        "no etcd member answers; membership left as is ({})",
        errors.join("; ")
    );
    Ok(vec![])
}

/// What a reset did on one host.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HostReset {
    /// One line per thing done (or, in check mode, that would be done); empty when there was
    /// nothing to do.
    pub changed: Vec<String>,
}

/// Parses the script's output into (changed, failed).
pub fn parse_output(stdout: &str) -> (Vec<String>, Vec<String>) {
    let mut changed = Vec::new();
    let mut failed = Vec::new();
    for line in stdout.lines() {
        if let Some(what) = line.strip_prefix("CHANGED ") {
            changed.push(what.to_string());
        } else if let Some(what) = line.strip_prefix("FAILED ") {
            failed.push(what.to_string());
        }
    }
    (changed, failed)
}

/// Resets one host (the script as root; the executor handles `become`).
#[tracing::instrument(skip_all, fields(host = exec.host(), check = opts.check))]
pub async fn reset_host(exec: &dyn Executor, opts: &ResetOptions) -> Result<HostReset, ResetError> {
    let out = exec.run(&Command::new(script(opts))).await?;
    let (changed, failed) = parse_output(&out.stdout_str());
    for c in &changed {
        tracing::info!(change = %c, "reset");
    }
    if !failed.is_empty() || !out.success() {
        let mut failed = failed;
        if failed.is_empty() {
            failed.push(format!(
                "the reset script exited with {:?}: {}",
                out.status,
                clusterkit_core::exec::tail(&out.stderr_str())
            ));
        }
        return Err(ResetError::Steps {
            host: exec.host().to_string(),
            failed,
            changed,
        });
    }
    Ok(HostReset { changed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_is_valid_shell_and_parses() {
        for (purge, check) in [(false, false), (true, true)] {
            let s = script(&ResetOptions::now(purge, check));
            let out = std::process::Command::new("sh")
                .args(["-n", "-c", &s])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(s.contains("rm -rf /var/lib/etcd"), purge);
        }
        let (c, f) =
            parse_output("CHANGED stop and disable kubelet\nnoise\nFAILED remove /x: busy\n");
        assert_eq!(c, ["stop and disable kubelet"]);
        assert_eq!(f, ["remove /x: busy"]);
    }

    /// The iptables filter keeps foreign rules and drops kube-proxy's, on a saved dump (no
    /// iptables needed): the same grep the script runs.
    #[test]
    fn iptables_filter() {
        let dump = "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\n:MINE - [0:0]\n-A INPUT -j KUBE-FIREWALL\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A KUBE-FIREWALL -j DROP\n-A INPUT -j MINE\nCOMMIT\n*nat\n:CNI-abc - [0:0]\n-A POSTROUTING -s 10.244.0.0/24 -j CNI-abc\nCOMMIT\n";
        let pat = format!(
            "^:({p})|^-A ({p})|-[jg] ({p})",
            p = CHAIN_PREFIXES.join("|")
        );
        let dir = tempfile::tempdir().unwrap();
        let saved = dir.path().join("dump");
        std::fs::write(&saved, dump).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", "grep -vE \"$1\" \"$2\"", "sh", &pat])
            .arg(&saved)
            .output()
            .unwrap();
        let kept = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            kept,
            "*filter\n:INPUT ACCEPT [0:0]\n:MINE - [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -j MINE\nCOMMIT\n*nat\nCOMMIT\n"
        );
    }
}
