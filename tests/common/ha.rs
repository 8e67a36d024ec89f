//! What must hold in a cluster of two control-plane hosts behind the local API load balancer
//! while one host's API server is down, whichever way it was stopped (a systemd unit killed, a
//! static pod's manifest moved away).

use std::path::Path;
use std::time::Instant;

use clusterkit_sandbox::SandboxGuard;
use serde_json::Value;

use super::{poll, ssh_cmd, stderr, stdout};

/// [`super::try_kubectl`], through `server` instead of the kubeconfig's when given.
pub fn try_kubectl(
    kube_bin: &Path,
    admin: &Path,
    server: Option<&str>,
    args: &[&str],
) -> (bool, String) {
    let mut all: Vec<&str> = server.map(|s| vec!["--server", s]).unwrap_or_default();
    all.extend_from_slice(args);
    super::try_kubectl(kube_bin, admin, &all)
}

/// `name -> {holder, renew}` of the Leases in a namespace, read through `server`.
pub fn leases(kube_bin: &Path, admin: &Path, server: &str, ns: &str) -> Result<Value, String> {
    let (ok, out) = try_kubectl(
        kube_bin,
        admin,
        Some(server),
        &["-n", ns, "get", "leases", "-o", "json"],
    );
    if !ok {
        return Err(out);
    }
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    let mut m = serde_json::Map::new();
    for l in v["items"].as_array().into_iter().flatten() {
        m.insert(
            l["metadata"]["name"].as_str().unwrap_or("").to_string(),
            serde_json::json!({
                "holder": l["spec"]["holderIdentity"],
                "renew": l["spec"]["renewTime"],
            }),
        );
    }
    Ok(Value::Object(m))
}

/// The current UTC time on `node` in the API's MicroTime format, which compares as text with
/// the Leases' renewTime (the sandbox's nodes share this machine's clock).
pub fn micro_time(sb: &SandboxGuard, node: &str) -> String {
    let t = super::ssh(sb, node, "date -u +%Y-%m-%dT%H:%M:%S.%6NZ")
        .trim()
        .to_string();
    assert_eq!(t.len(), 27, "a MicroTime: {t:?}");
    t
}

/// With `down`'s API server stopped at `stop_at` ([`micro_time`], `stopped` the same moment
/// here), waits for and asserts what keeps the cluster working: through `down`'s own load
/// balancer (its kubelet's credentials and server) the API answers `/readyz` five times in a
/// row, so not by one lucky round-robin turn; every sandbox Node renews its Lease after the
/// stop and stays Ready; `survivor`'s controller manager and scheduler hold their leases and
/// renew them after the stop (the leader moved, or stayed). Reads the API through
/// `survivor`'s API server; prints how long each took.
pub fn survives_api_server_down(
    sb: &SandboxGuard,
    (kube_bin, admin): (&Path, &Path),
    (down, survivor): (&str, &str),
    (stop_at, stopped): (&str, Instant),
) {
    let survivor_api = &format!("https://{}:6443", sb.node(survivor).unwrap().address);
    let nodes = super::NODES;
    let via_lb = "for i in 1 2 3 4 5; do kubectl --kubeconfig /etc/kubernetes/kubelet.conf --request-timeout=10s get --raw /readyz || exit 1; echo; done";
    poll(
        std::time::Duration::from_secs(120),
        &format!("{down}'s load balancer answering /readyz from {survivor}"),
        || {
            let out = ssh_cmd(sb, down, via_lb)
                .output()
                .map_err(|e| e.to_string())?;
            let text = stdout(&out);
            if out.status.success() && text.matches("ok").count() == 5 {
                Ok(())
            } else {
                Err(format!("{text}{}", stderr(&out)))
            }
        },
    );
    eprintln!(
        "{down}'s LB answered from {survivor} {:.1}s after the stop",
        stopped.elapsed().as_secs_f64()
    );
    let renewed_after = |l: &Value, name: &str| {
        l[name]["renew"]
            .as_str()
            .is_some_and(|r| r.len() == stop_at.len() && r > stop_at)
    };
    let node_leases = poll(
        std::time::Duration::from_secs(180),
        "every node's lease renewed after the stop",
        || {
            let now = leases(kube_bin, admin, survivor_api, "kube-node-lease")?;
            let stale: Vec<&str> = nodes
                .iter()
                .copied()
                .filter(|n| !renewed_after(&now, n))
                .collect();
            if stale.is_empty() {
                Ok(now)
            } else {
                Err(format!("not renewed since {stop_at}: {stale:?}: {now}"))
            }
        },
    );
    eprintln!(
        "every node lease renewed after the stop at {stop_at} ({:.1}s later): {node_leases}",
        stopped.elapsed().as_secs_f64()
    );
    let ready = r#"jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{" "}{end}"#;
    let (ok, out) = try_kubectl(
        kube_bin,
        admin,
        Some(survivor_api),
        &["get", "nodes", "-o", ready],
    );
    let mut got: Vec<&str> = out.split_whitespace().collect();
    got.sort();
    let mut want: Vec<String> = nodes.iter().map(|n| format!("{n}=True")).collect();
    want.sort();
    assert!(ok && got == want, "every Node stays Ready: {out}");
    let leaders = poll(
        std::time::Duration::from_secs(180),
        &format!("{survivor} holding and renewing the controller-manager and scheduler leases"),
        || {
            let l = leases(kube_bin, admin, survivor_api, "kube-system")?;
            for name in ["kube-controller-manager", "kube-scheduler"] {
                let holder = l[name]["holder"].as_str().unwrap_or("");
                if !holder.starts_with(survivor) || !renewed_after(&l, name) {
                    return Err(format!("{name}: {l}"));
                }
            }
            Ok(l)
        },
    );
    eprintln!(
        "leaders {:.1}s after the stop: {leaders}",
        stopped.elapsed().as_secs_f64()
    );
}
