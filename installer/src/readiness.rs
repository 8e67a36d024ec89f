//! The readiness report `clusterkit install` ends with: is this a cluster that runs workloads?
//!
//! Checked from the operator's machine, through admin.conf:
//! - **nodes**: every cluster.yaml host has a Node, and it is Ready;
//! - **components**: `/readyz` through the endpoint, `/livez` of every control-plane host's
//!   API server, fresh leader leases of the controller manager and the scheduler, every etcd
//!   member healthy (the healthcheck client), and every kubelet reached by the API server over
//!   verified TLS (`nodes/<name>/proxy/healthz`);
//! - **probe**: a DaemonSet (`kube-system/clusterkit-probe`, tolerating every taint) puts a
//!   busybox httpd on every node; from each probe pod (`kubectl exec`-style, through the API)
//!   every other node's probe pod is fetched by pod IP with `busybox nc` — the pod network
//!   across every pair of nodes — and a ClusterIP Service in front of the probe pods (kube-proxy
//!   on every node). The DaemonSet and the Service are deleted afterwards. A converging
//!   `install` on a cluster that already answers creates them while its phases run
//!   ([`start_early`]) and uses them only when the run changed nothing.
//! - **dns**: CoreDNS, when a `kube-system/coredns` Deployment exists, must be available;
//!   without one the report says plainly that there is no cluster DNS (the sandbox has no
//!   CoreDNS image) and that services are reached by ClusterIP — a note, not a failure.
//!
//! The probe image is the busybox image clusterkit builds ([`crate::images::BUSYBOX_IMAGE`],
//! `imagePullPolicy: Never`) when the cluster's images include it (sandbox, or a bundle with
//! images), otherwise [`REGISTRY_BUSYBOX`] from the nodes' registries.
//!
//! Limits: one probe per node (not per pod); the DNS check does not resolve names.

use std::collections::BTreeMap;
use std::time::Duration;

use clusterkit_core::config::{Cluster, Profile, Role};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, AttachParams, DeleteParams, ListParams, PostParams};
use serde::Serialize;
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::kube_api;
use crate::phases::{etcd, images, InstallError};
use crate::poll::{self, NotReady};

/// The probe DaemonSet's name (in kube-system).
pub const PROBE_NAME: &str = "clusterkit-probe";

/// The probe image when clusterkit's own busybox image is not on the nodes.
pub const REGISTRY_BUSYBOX: &str = "docker.io/library/busybox:1.36";

/// The port the probe pods serve on.
pub const PROBE_PORT: u16 = 8080;

/// How long the report waits for nodes to be Ready and probe pods to run.
pub const WAIT: Duration = Duration::from_secs(180);

/// One checked item.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked (`node node2`, `etcd`, `probe node1 -> node3`).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, result: Result<String, NotReady>) -> Check {
        let (ok, detail) = match result {
            Ok(d) => (true, d),
            Err(e) => (false, clusterkit_core::error_chain(&e)),
        };
        Check {
            name: name.into(),
            ok,
            detail,
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when every check passed (notes do not count).
    pub ok: bool,
    pub nodes: Vec<Check>,
    pub components: Vec<Check>,
    pub probes: Vec<Check>,
    /// Cluster DNS: a check when CoreDNS is deployed, a note when it is not.
    pub dns: Check,
    /// Things the operator should know that are not failures.
    pub notes: Vec<String>,
    /// Whether the probe pods were started while the install ran ([`start_early`]: the run
    /// changed nothing), not after it.
    pub probes_during_run: bool,
}

impl Report {
    /// The failed checks, for the exit message.
    pub fn failures(&self) -> Vec<&Check> {
        self.nodes
            .iter()
            .chain(&self.components)
            .chain(&self.probes)
            .chain(std::iter::once(&self.dns))
            .filter(|c| !c.ok)
            .collect()
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::from("\nREADINESS\n");
        for (section, checks) in [
            ("nodes", &self.nodes),
            ("components", &self.components),
            ("pod network", &self.probes),
        ] {
            out.push_str(&format!("  {section}:\n"));
            for c in checks.iter() {
                out.push_str(&format!(
                    "    {:<4} {:<40} {}\n",
                    if c.ok { "ok" } else { "FAIL" },
                    c.name,
                    c.detail
                ));
            }
        }
        out.push_str(&format!(
            "  dns:\n    {:<4} {:<40} {}\n",
            if self.dns.ok { "ok" } else { "FAIL" },
            self.dns.name,
            self.dns.detail
        ));
        for n in &self.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        out.push_str(if self.ok {
            "cluster ready\n"
        } else {
            "cluster NOT ready\n"
        });
        out
    }
}

/// How long [`start_early`] may take to create the probes.
const EARLY_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts the probe pods ahead of the report, for a run that may change nothing (a converging
/// `install`): their start (sandbox, pod network, container: most of the report's time) then
/// overlaps the run. `None` when the API does not answer with admin.conf (a cluster not
/// installed yet) or they could not be created in time. Only valid while the cluster stays as
/// it was: hand them to [`check`] when the run changed nothing, else [`Probes::discard`] them.
pub async fn start_early(cluster: &Cluster) -> Option<Probes> {
    let client = kube_api::admin_client(cluster, None).await.ok()?;
    // A quick answer or none: a run that brings the API back must not wait for this.
    tokio::time::timeout(
        Duration::from_secs(3),
        kube_api::get_raw(&client, "/readyz"),
    )
    .await
    .ok()?
    .ok()?;
    match tokio::time::timeout(EARLY_TIMEOUT, start_probes(cluster, &client)).await {
        Ok(p) if p.failed.is_empty() => Some(p),
        // Half made or too slow: whatever was created goes (the report makes its own).
        _ => {
            let _ = tokio::time::timeout(EARLY_TIMEOUT, delete_probe(&client)).await;
            None
        }
    }
}

impl Probes {
    /// Deletes the probe DaemonSet and Service.
    pub async fn discard(self, cluster: &Cluster) {
        if let Ok(client) = kube_api::admin_client(cluster, None).await {
            delete_probe(&client).await;
        }
    }
}

/// Runs every check, with the probes `early` started (else creating them now); `Err` only
/// when the API cannot be reached at all with admin.conf.
pub async fn check(cluster: &Cluster, early: Option<Probes>) -> Result<Report, InstallError> {
    let client = kube_api::admin_client(cluster, None).await?;
    let probes_during_run = early.is_some();
    // The components and DNS do not depend on the nodes' checks: they run meanwhile. Probes
    // not made during the run are made once the nodes are Ready: a pod sent to a node whose
    // pod network is not up yet fails its sandbox and is retried after the kubelet's back-off.
    let nodes_then_probes = async {
        let nodes = node_checks(cluster, &client).await;
        let probes = match early {
            Some(p) => p,
            None => start_probes(cluster, &client).await,
        };
        let ready: Vec<String> = nodes
            .iter()
            .filter(|c| c.ok)
            .filter_map(|c| c.name.strip_prefix("node ").map(str::to_string))
            .collect();
        let probes = probe_checks(&client, probes, &ready).await;
        (nodes, probes)
    };
    let ((nodes, probes), components, (dns, notes)) = tokio::join!(
        nodes_then_probes,
        component_checks(cluster, &client),
        dns_check(cluster, &client)
    );
    let mut report = Report {
        ok: false,
        nodes,
        components,
        probes,
        dns,
        notes,
        probes_during_run,
    };
    report.ok = report.failures().is_empty();
    Ok(report)
}

/// `Ready`, or why the Node is not (its Ready condition's reason and message).
pub fn node_ready(n: &Node) -> Result<String, NotReady> {
    let cond = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
    match cond {
        Some(c) if c.status == "True" => Ok("Ready".into()),
        Some(c) => Err(seen(format!(
            "not Ready: {} {}",
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default()
        ))),
        None => Err(seen("no Ready condition yet")),
    }
}

async fn node_checks(cluster: &Cluster, client: &kube::Client) -> Vec<Check> {
    let api: Api<Node> = Api::all(client.clone());
    // The last answer per host (a Mutex only to share it with the probe closure).
    let last: std::sync::Mutex<BTreeMap<String, Result<String, NotReady>>> = Default::default();
    let _ = poll::wait_until(WAIT, || {
        let api = &api;
        let last = &last;
        async move {
            let list = api.list(&ListParams::default()).await;
            let mut now = BTreeMap::new();
            for h in &cluster.hosts {
                let r = match &list {
                    // One failed list is every host's answer (kube's error cannot be cloned).
                    Err(e) => Err(seen(format!(
                        "listing nodes: {}",
                        clusterkit_core::error_chain(e)
                    ))),
                    Ok(l) => match l
                        .items
                        .iter()
                        .find(|n| n.metadata.name.as_deref() == Some(&h.name))
                    {
                        None => Err(seen("not registered")),
                        Some(n) => node_ready(n),
                    },
                };
                now.insert(h.name.clone(), r);
            }
            let all = now.values().all(|r| r.is_ok());
            if let Ok(mut l) = last.lock() {
                *l = now;
            }
            if all {
                Ok(())
            } else {
                Err(())
            }
        }
    })
    .await;
    let last = last.into_inner().unwrap_or_default();
    last.into_iter()
        .map(|(n, r)| Check::new(format!("node {n}"), r))
        .collect()
}

async fn raw_ok(client: &kube::Client, path: &str) -> Result<String, NotReady> {
    match kube_api::get_raw(client, path).await {
        Ok(b) if b.trim() == "ok" => Ok("ok".into()),
        Ok(b) => Err(seen(format!("{path} said {:?}", b.trim()))),
        Err(e) => Err(NotReady::failed(path, e)),
    }
}

/// A failed check's words.
fn seen(what: impl Into<String>) -> NotReady {
    NotReady::Seen(what.into())
}

/// The components' checks alone (no waiting, no probe pods): `/readyz` through the endpoint,
/// `/livez` of every control-plane host, the leader leases, etcd's health and every kubelet
/// through the API server. What `clusterkit status` summarises.
pub async fn component_checks(cluster: &Cluster, client: &kube::Client) -> Vec<Check> {
    let mut out = vec![Check::new(
        "apiserver /readyz (endpoint)",
        raw_ok(client, "/readyz").await,
    )];
    for h in cluster.hosts_with_role(Role::ControlPlane) {
        let r = match kube_api::admin_client(
            cluster,
            Some(&kube_api::apiserver_url(cluster, h.address)),
        )
        .await
        {
            Ok(c) => raw_ok(&c, "/livez").await,
            Err(e) => Err(NotReady::failed("kubernetes client", e)),
        };
        out.push(Check::new(format!("apiserver /livez {}", h.name), r));
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    for name in crate::phases::control_plane::LEADER_LEASES {
        let r = match leases.get(name).await {
            Err(e) => Err(NotReady::failed("lease", e)),
            Ok(l) => {
                let spec = l.spec.unwrap_or_default();
                let holder = spec.holder_identity.unwrap_or_default();
                let duration = spec.lease_duration_seconds.unwrap_or(15).max(15) as u64;
                match spec.renew_time {
                    None => Err(seen("leader lease never renewed")),
                    Some(t) => {
                        let age = k8s_openapi::jiff::Timestamp::now()
                            .duration_since(t.0)
                            .unsigned_abs();
                        if holder.is_empty() || age > Duration::from_secs(2 * duration) {
                            Err(seen(format!(
                                "leader lease held by {holder:?}, renewed {}s ago",
                                age.as_secs()
                            )))
                        } else {
                            Ok(format!("leader {holder}"))
                        }
                    }
                }
            }
        };
        out.push(Check::new(name, r));
    }
    let etcd_health = match etcd::ClientTls::load(cluster) {
        Ok(tls) => etcd::health(cluster, &tls)
            .await
            .map(|_| {
                format!(
                    "{} members healthy",
                    cluster.hosts_with_role(Role::Etcd).len()
                )
            })
            .map_err(|e| NotReady::failed("etcd", e)),
        Err(e) => Err(NotReady::failed("etcd client", e)),
    };
    out.push(Check::new("etcd", etcd_health));
    for h in &cluster.hosts {
        out.push(Check::new(
            format!("kubelet {} (verified TLS)", h.name),
            raw_ok(client, &format!("/api/v1/nodes/{}/proxy/healthz", h.name)).await,
        ));
    }
    out
}

/// The probe image and its pull policy for this cluster.
fn probe_image(cluster: &Cluster) -> (String, &'static str) {
    let own = matches!(
        images::image_dir(cluster),
        Ok(Some((_, m))) if m.images.iter().any(|i| i.name == crate::images::BUSYBOX_IMAGE)
    );
    if own {
        (crate::images::BUSYBOX_IMAGE.to_string(), "Never")
    } else {
        (REGISTRY_BUSYBOX.to_string(), "IfNotPresent")
    }
}

fn probe_daemonset(image: &str, pull: &str, run: &str) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": { "name": PROBE_NAME, "namespace": "kube-system",
                      "labels": { "app.kubernetes.io/managed-by": "clusterkit" } },
        "spec": {
            "selector": { "matchLabels": { "app": PROBE_NAME, "run": run } },
            "template": {
                "metadata": { "labels": { "app": PROBE_NAME, "run": run } },
                "spec": {
                    "tolerations": [{ "operator": "Exists" }],
                    "terminationGracePeriodSeconds": 1,
                    "automountServiceAccountToken": false,
                    "containers": [{
                        "name": "probe",
                        "image": image,
                        "imagePullPolicy": pull,
                        "command": ["sh", "-c", format!(
                            "mkdir -p /tmp/www && echo probe-$NODE > /tmp/www/index.html && exec httpd -f -p {PROBE_PORT} -h /tmp/www")],
                        "env": [{ "name": "NODE", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } }],
                        "ports": [{ "containerPort": PROBE_PORT }]
                    }]
                }
            }
        }
    })
}

async fn delete_probe(client: &kube::Client) {
    let services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let _ = services.delete(PROBE_NAME, &DeleteParams::default()).await;
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), "kube-system");
    let _ = ds
        .delete(
            PROBE_NAME,
            &DeleteParams {
                propagation_policy: Some(kube::api::PropagationPolicy::Background),
                ..Default::default()
            },
        )
        .await;
}

/// All of `s` as text, for at most a minute.
async fn read_all(s: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut text = String::new();
    if let Some(mut s) = s {
        let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_string(&mut text)).await;
    }
    text
}

/// Runs `script` in `pod` and returns its stdout; an exec the runtime or the kubelet refused
/// (a failure status) is an error carrying the status message and stderr.
async fn exec(pods: &Api<Pod>, pod: &str, script: &str) -> Result<String, NotReady> {
    let ap = AttachParams::default()
        .stdout(true)
        .stderr(true)
        .stdin(false);
    let mut p = pods
        .exec(pod, ["sh", "-c", script], &ap)
        .await
        .map_err(|e| NotReady::failed(format!("exec in {pod}"), e))?;
    let status = p.take_status();
    let (stdout, stderr) = (p.stdout(), p.stderr());
    let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
    let status = match status {
        Some(st) => tokio::time::timeout(Duration::from_secs(10), st)
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), p.join()).await;
    match status {
        Some(st) if st.status.as_deref() == Some("Failure") => Err(seen(format!(
            "exec in {pod}: {} {}",
            st.message.unwrap_or_default(),
            err.trim()
        ))),
        _ => Ok(out),
    }
}

/// The probe DaemonSet and Service, created: what the probe checks wait for and fetch.
pub struct Probes {
    /// The `run` label of this report's probe pods (a leftover's pods have another).
    run: String,
    /// The probe image, named in the report when the pods do not run.
    image: String,
    /// The probe Service's ClusterIP (`None`: it could not be created, which `failed` says).
    service_ip: Option<String>,
    /// What failed while creating them; a failed DaemonSet means no probe pods at all.
    failed: Vec<Check>,
}

/// Creates the probe DaemonSet and Service (a leftover of an interrupted run is replaced).
async fn start_probes(cluster: &Cluster, client: &kube::Client) -> Probes {
    let (image, pull) = probe_image(cluster);
    let run = format!("{:x}", rand::random::<u32>());
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), "kube-system");
    let mut probes = Probes {
        run,
        image,
        service_ip: None,
        failed: Vec::new(),
    };
    delete_probe(client).await;
    let _ = poll::wait_until(Duration::from_secs(60), || async {
        match ds.get_opt(PROBE_NAME).await {
            Ok(None) => Ok(()),
            _ => Err(()),
        }
    })
    .await;
    let obj: DaemonSet =
        match serde_json::from_value(probe_daemonset(&probes.image, pull, &probes.run)) {
            Ok(o) => o,
            Err(e) => {
                probes.failed.push(Check::new(
                    "probe",
                    Err(NotReady::failed("probe DaemonSet", e)),
                ));
                return probes;
            }
        };
    if let Err(e) = ds.create(&PostParams::default(), &obj).await {
        probes.failed.push(Check::new(
            "probe",
            Err(NotReady::failed(
                format!("creating kube-system/{PROBE_NAME}"),
                e,
            )),
        ));
        return probes;
    }
    let services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let svc: Result<Service, serde_json::Error> = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": PROBE_NAME, "namespace": "kube-system",
                      "labels": { "app.kubernetes.io/managed-by": "clusterkit" } },
        "spec": { "selector": { "app": PROBE_NAME, "run": probes.run },
                  "ports": [{ "port": 80, "targetPort": PROBE_PORT }] }
    }));
    match svc {
        Ok(svc) => match services.create(&PostParams::default(), &svc).await {
            Ok(created) => probes.service_ip = created.spec.and_then(|s| s.cluster_ip),
            Err(e) => probes.failed.push(Check::new(
                "probe service",
                Err(NotReady::failed(
                    format!("creating kube-system/{PROBE_NAME} Service"),
                    e,
                )),
            )),
        },
        Err(e) => probes.failed.push(Check::new(
            "probe service",
            Err(NotReady::failed("probe Service", e)),
        )),
    }
    probes
}

/// Waits for `probes`' pods on the `ready` nodes, fetches across them, deletes the probes.
async fn probe_checks(client: &kube::Client, probes: Probes, ready: &[String]) -> Vec<Check> {
    if ready.is_empty() {
        delete_probe(client).await;
        return vec![Check::new("probe", Err(seen("no Ready node to probe")))];
    }
    let Probes {
        run,
        image,
        service_ip,
        failed: mut out,
    } = probes;
    if out.iter().any(|c| c.name == "probe") {
        delete_probe(client).await;
        return out;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    // node -> (pod name, pod IP) once Running on every Ready node.
    let running: std::sync::Mutex<BTreeMap<String, (String, String)>> = Default::default();
    let lp = ListParams::default().labels(&format!("app={PROBE_NAME},run={run}"));
    let waited = poll::wait_until(WAIT, || {
        let running = &running;
        let pods = &pods;
        let lp = &lp;
        async move {
            let list = pods
                .list(lp)
                .await
                .map_err(|e| NotReady::failed("listing probe pods", e))?;
            let mut now = BTreeMap::new();
            for p in list.items {
                let st = p.status.unwrap_or_default();
                let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
                let started = st
                    .container_statuses
                    .iter()
                    .flatten()
                    .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
                if st.phase.as_deref() == Some("Running") && started {
                    if let (Some(name), Some(ip)) = (p.metadata.name, st.pod_ip) {
                        now.insert(node, (name, ip));
                    }
                }
            }
            let missing: Vec<&String> = ready.iter().filter(|n| !now.contains_key(*n)).collect();
            let result = if missing.is_empty() {
                Ok(())
            } else {
                Err(seen(format!("no running probe pod on {missing:?}")))
            };
            if let Ok(mut r) = running.lock() {
                *r = now;
            }
            result
        }
    })
    .await;
    let running = running.into_inner().unwrap_or_default();
    if let Err(e) = waited {
        out.push(Check::new(
            "probe pods",
            Err(seen(format!(
                "{} after {}s (image {image})",
                clusterkit_core::error_chain(&e),
                WAIT.as_secs()
            ))),
        ));
    }
    // Every pod probes at once: the pods are independent, and each may need a few attempts.
    let per_pod = running
        .iter()
        .map(|(from, (pod, _))| probe_from(&pods, from, pod, &running, service_ip.as_deref()));
    for checks in futures::future::join_all(per_pod).await {
        out.extend(checks);
    }
    if running.len() == 1 && ready.len() == 1 {
        out.push(Check::new(
            "probe pods",
            Ok("one node: a probe pod runs, nothing to reach across nodes".into()),
        ));
    }
    delete_probe(client).await;
    out
}

/// How long a probe pod waits before trying its fetches again (fresh routes, iptables rules
/// and endpoints may take a moment).
const PROBE_RETRY: Duration = Duration::from_secs(1);

/// The checks of one probe pod (on node `from`): every other node's probe pod by IP (the pod
/// network) and the probe Service's ClusterIP (kube-proxy on this node).
async fn probe_from(
    pods: &Api<Pod>,
    from: &str,
    pod: &str,
    running: &BTreeMap<String, (String, String)>,
    service_ip: Option<&str>,
) -> Vec<Check> {
    let mut out = Vec::new();
    // What this pod fetches: every other node's probe pod by IP (the pod network), and
    // the probe Service's ClusterIP (kube-proxy on this node); key, address, port, the
    // answer wanted (`None`: any probe pod), the check's name.
    let mut wanted: Vec<(String, String, u16, Option<String>, String)> = running
        .iter()
        .filter(|(n, _)| *n != from)
        .map(|(n, (_, ip))| {
            (
                ip.clone(),
                ip.clone(),
                PROBE_PORT,
                Some(format!("probe-{n}")),
                format!("pod on {from} -> pod on {n}"),
            )
        })
        .collect();
    if let Some(cip) = service_ip {
        wanted.push((
            "service".into(),
            cip.to_string(),
            80,
            None,
            format!("pod on {from} -> service {PROBE_NAME} (kube-proxy)"),
        ));
    }
    if wanted.is_empty() {
        return out;
    }
    let good = |key: &str, body: &str| {
        wanted.iter().any(|(k, _, _, want, _)| {
            k == key
                && match want {
                    Some(w) => body == w,
                    None => body.starts_with("probe-"),
                }
        })
    };
    // One exec per pod: each answer on one line, `<key> <body>`; retried every PROBE_RETRY.
    let script = wanted
        .iter()
        .map(|(key, addr, port, _, _)| {
            format!(
                "echo {key} $(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {addr} {port} | tail -n 1)"
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let mut answers: BTreeMap<String, String> = BTreeMap::new();
    let mut exec_error = None;
    let mut raw = String::new();
    // Until every answer is right or two minutes have passed: a pod that has just started
    // may not take an exec yet, and its node's routes and rules may still be coming.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for attempt in 0.. {
        if attempt > 0 {
            if tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(PROBE_RETRY).await;
        }
        match exec(pods, pod, &script).await {
            Ok(text) => {
                exec_error = None;
                raw = text.clone();
                for l in text.lines() {
                    if let Some((key, body)) = l.split_once(' ') {
                        // A right answer from an earlier attempt stands.
                        let had = answers.get(key).is_some_and(|b| good(key, b));
                        if !had {
                            answers.insert(key.to_string(), body.trim().to_string());
                        }
                    }
                }
            }
            // Kept as text: the last one is every answer's error below.
            Err(e) => exec_error = Some(clusterkit_core::error_chain(&e)),
        }
        let all = wanted
            .iter()
            .all(|(k, ..)| answers.get(k).is_some_and(|b| good(k, b)));
        if all {
            break;
        }
    }
    for (key, addr, port, _, name) in &wanted {
        let r = match (answers.get(key), &exec_error) {
            (Some(b), _) if good(key, b) => Ok(format!("{addr}:{port} answered {b:?}")),
            (_, Some(e)) => Err(seen(e.clone())),
            (Some(b), None) if !b.is_empty() => Err(seen(format!("{addr}:{port} answered {b:?}"))),
            _ => Err(seen(format!(
                "{addr}:{port}: no answer (the probe printed {:?})",
                raw.trim()
            ))),
        };
        out.push(Check::new(name.clone(), r));
    }
    out
}

async fn dns_check(cluster: &Cluster, client: &kube::Client) -> (Check, Vec<String>) {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "kube-system");
    match deps.get_opt("coredns").await {
        Ok(Some(d)) => {
            let want = d.spec.and_then(|s| s.replicas).unwrap_or(1);
            let have = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
            let r = if have >= want && want > 0 {
                Ok(format!("{have}/{want} replicas available"))
            } else {
                Err(seen(format!("{have}/{want} replicas available")))
            };
            (Check::new("coredns", r), Vec::new())
        }
        Ok(None) => {
            let why = if cluster.profile == Profile::Sandbox {
                crate::phases::addons::NO_COREDNS_IN_SANDBOX
            } else {
                "the addons phase has not applied it: run `clusterkit install --phase addons`"
            };
            let note = format!(
                "no cluster DNS: CoreDNS is not installed ({why}); pods reach services by ClusterIP, not by name"
            );
            (
                Check::new("coredns", Ok("not installed".into())),
                vec![note],
            )
        }
        Err(e) => (
            Check::new("coredns", Err(NotReady::failed("coredns Deployment", e))),
            Vec::new(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(probe_ok: bool) -> Report {
        let c = |n: &str, ok: bool| Check {
            name: n.into(),
            ok,
            detail: if ok { "ok".into() } else { "no answer".into() },
        };
        let mut r = Report {
            ok: false,
            nodes: vec![c("node node1", true)],
            components: vec![c("etcd", true)],
            probes: vec![c("pod on node1 -> pod on node2", probe_ok)],
            dns: c("coredns", true),
            notes: vec!["no cluster DNS".into()],
            probes_during_run: false,
        };
        r.ok = r.failures().is_empty();
        r
    }

    #[test]
    fn any_failed_check_makes_the_cluster_not_ready() {
        let good = report(true);
        assert!(good.ok && good.failures().is_empty());
        assert!(good.table().ends_with("cluster ready\n"));
        let bad = report(false);
        assert!(!bad.ok);
        assert_eq!(bad.failures().len(), 1);
        assert_eq!(bad.failures()[0].name, "pod on node1 -> pod on node2");
        assert!(bad.table().contains("FAIL pod on node1 -> pod on node2"));
        assert!(bad.table().ends_with("cluster NOT ready\n"));
        let v = serde_json::to_value(&bad).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["probes"][0]["ok"], false);
        assert_eq!(v["notes"][0], "no cluster DNS");
    }

    #[test]
    fn probe_daemonset_tolerates_every_taint_and_parses() {
        let v = probe_daemonset("img", "Never", "abc");
        let ds: DaemonSet = serde_json::from_value(v).unwrap();
        let spec = ds.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            spec.tolerations.unwrap()[0].operator.as_deref(),
            Some("Exists")
        );
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("img"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
    }
}
