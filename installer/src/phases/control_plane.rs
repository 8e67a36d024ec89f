//! Phase `control-plane`: kube-apiserver, kube-controller-manager and kube-scheduler on the
//! control-plane hosts, then a wait until the API answers `/readyz` through the control-plane
//! endpoint, `/livez` on every control-plane host, and the controller manager and scheduler
//! hold their leader-election leases.
//!
//! `kubernetes.control_plane_mode` picks how they run, with the SAME flags
//! ([`crate::versions::render_flags`]):
//! - `systemd`: the binaries from the offline bundle in `/usr/local/bin`, one unit each
//!   (template `kubernetes/systemd/component.service`);
//! - `static-pod`: kubeadm-style manifests in `/etc/kubernetes/manifests` (template
//!   `kubernetes/manifests/component.yaml`, images from `kubernetes.image_repository`), run by
//!   the kubelet, which this phase then starts on the control-plane hosts (playbook `kubelet`;
//!   already running where the etcd phase started it for etcd's static pod) with the
//!   kubelet.conf the pki phase gave them. The images come from the offline bundle
//!   ([`crate::images`], imported by the `images` phase) or the hosts' registries.
//!
//! Several control-plane hosts: each runs all three components; the API servers share etcd
//! and one certificate (every control-plane host in its SANs), the controller managers and
//! schedulers elect a leader through their Leases (`--leader-elect`), each talking to its own
//! host's API server. Node components reach the API through `control_plane_endpoint`, or
//! through the local load balancer on every node (phase `load-balancer`) when it is on.
//!
//! Limits: clusterkit sets up no load balancer in front of `control_plane_endpoint` itself:
//! the operator's admin.conf reaches the API only while the host (or external load balancer)
//! the endpoint names is up.

use clusterkit_core::layout::kubeconfig_file;
use std::time::Duration;

use async_trait::async_trait;
use clusterkit_core::config::{Cluster, ControlPlaneMode, Host, Role};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::{json, Map, Value};

use super::common::{self, binary_files, with_vars};
use super::kubelet::{kubelet_vars, run_kubelet};
use super::{InstallError, Phase, PhaseContext};
use crate::kube_api;
use crate::poll::{self, NotReady};
use crate::versions;
use clusterkit_core::layout::{Component, NodeLayout};

/// The `control-plane` phase.
pub struct ControlPlanePhase;

/// How long the phase waits for the API server and the controllers.
pub const READY_TIMEOUT: Duration = Duration::from_secs(240);

fn describe(c: Component) -> &'static str {
    match c {
        Component::KubeApiserver => "Kubernetes API server",
        Component::KubeControllerManager => "Kubernetes controller manager",
        Component::KubeScheduler => "Kubernetes scheduler",
        Component::Kubelet => "Kubernetes node agent",
        Component::KubeProxy => "Kubernetes service proxy",
    }
}

/// A hostPath volume of a static pod.
fn volume(name: &str, path: &str, kind: &str) -> Value {
    json!({ "name": name, "path": path, "type": kind })
}

/// What the static pod of `c` mounts (kubeadm's volumes, minus the flexvolume directory).
fn pod_volumes(layout: &NodeLayout, c: Component) -> Vec<Value> {
    let mut v = vec![
        volume("k8s-certs", layout.pki_dir, "DirectoryOrCreate"),
        volume("ca-certs", "/etc/ssl/certs", "DirectoryOrCreate"),
    ];
    match c {
        Component::KubeControllerManager => v.push(volume(
            "kubeconfig",
            &layout.kubeconfig(kubeconfig_file::CONTROLLER_MANAGER),
            "FileOrCreate",
        )),
        // The scheduler serves with the API server's certificate, from the pki directory.
        Component::KubeScheduler => v.push(volume(
            "kubeconfig",
            &layout.kubeconfig(kubeconfig_file::SCHEDULER),
            "FileOrCreate",
        )),
        _ => {}
    }
    v
}

/// The port and path of a component's liveness endpoint (HTTPS).
fn probe(layout: &NodeLayout, c: Component, host: &Host) -> Value {
    let (port, path) = match c {
        Component::KubeApiserver => (layout.ports.apiserver, "/livez"),
        Component::KubeControllerManager => (layout.ports.controller_manager, "/healthz"),
        _ => (layout.ports.scheduler, "/healthz"),
    };
    json!({ "host": host.address.to_string(), "port": port, "path": path })
}

/// The image a control-plane component's static pod runs:
/// `<image_repository>/<component>:<version>`, as kubeadm names them.
pub fn component_image(cluster: &Cluster, c: Component) -> String {
    crate::images::component_image(
        &cluster.kubernetes.image_repository,
        c.name(),
        &cluster.kubernetes.version.to_string(),
    )
}

/// The images `host`'s static pods run: the control plane's on a control-plane host and
/// etcd's where etcd runs as a static pod ([`super::etcd::static_pod`]); none in systemd mode.
pub fn static_pod_images(cluster: &Cluster, host: &Host) -> Vec<String> {
    if cluster.kubernetes.control_plane_mode != ControlPlaneMode::StaticPod {
        return Vec::new();
    }
    let mut images = Vec::new();
    if host.has_role(Role::ControlPlane) {
        images.extend(
            Component::CONTROL_PLANE
                .iter()
                .map(|&c| component_image(cluster, c)),
        );
    }
    if super::etcd::static_pod(cluster, host) {
        images.push(super::etcd::image(cluster));
    }
    images
}

/// The control-plane variables of one host: `control_plane` (one entry per component:
/// name, description, binary, flags, image, probe, volumes).
pub fn component_vars(cluster: &Cluster, host: &Host) -> Result<Vec<Value>, InstallError> {
    let layout = NodeLayout::from_cluster(cluster);
    Component::CONTROL_PLANE
        .iter()
        .map(|&c| {
            Ok(json!({
                "name": c.name(),
                "description": describe(c),
                "binary": layout.bin(c.name()),
                "flags": common::flags(cluster, host, c)?,
                "image": component_image(cluster, c),
                "probe": probe(&layout, c, host),
                "volumes": pod_volumes(&layout, c),
            }))
        })
        .collect()
}

/// The controller manager's and the scheduler's leader-election leases.
pub const LEADER_LEASES: [&str; 2] = ["kube-controller-manager", "kube-scheduler"];

/// Waits for `/readyz` through the endpoint, `/livez` on every control-plane host, and fresh
/// leader-election leases of the controller manager and the scheduler.
pub async fn wait_ready(cluster: &Cluster) -> Result<(), InstallError> {
    wait_ready_without(cluster, &[]).await
}

/// The holders of [`LEADER_LEASES`] now (empty where a lease has none).
pub async fn leaders(cluster: &Cluster) -> Result<Vec<String>, InstallError> {
    let client = kube_api::admin_client(cluster, None).await?;
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    let mut holders = Vec::new();
    for name in LEADER_LEASES {
        let lease = leases
            .get_opt(name)
            .await
            .map_err(|e| kube_api::api_err(format!("lease {name}"), e))?;
        holders.push(
            lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .unwrap_or_default(),
        );
    }
    Ok(holders)
}

/// [`wait_ready`], where a lease held by one of `stopped` (leaders that were restarted, whose
/// leases run out before a successor takes over) does not count: until a running process
/// leads, nothing reconciles (a drained pod would stay in its Service's endpoints).
pub async fn wait_ready_without(cluster: &Cluster, stopped: &[String]) -> Result<(), InstallError> {
    let fail = |what: &str, source: NotReady| InstallError::Timeout {
        host: "control plane".into(),
        what: what.to_string(),
        secs: READY_TIMEOUT.as_secs(),
        source,
    };
    let client = kube_api::admin_client(cluster, None).await?;
    poll::wait_until(READY_TIMEOUT, || async {
        match kube_api::get_raw(&client, "/readyz").await {
            Ok(body) if body.trim() == "ok" => Ok(()),
            Ok(body) => Err(NotReady::Seen(format!("/readyz said {body:?}"))),
            Err(e) => Err(NotReady::failed("/readyz", e)),
        }
    })
    .await
    .map_err(|e| fail("the API server is not ready", e))?;
    for h in cluster.hosts_with_role(Role::ControlPlane) {
        let c = kube_api::admin_client(cluster, Some(&kube_api::apiserver_url(cluster, h.address)))
            .await?;
        poll::wait_until(READY_TIMEOUT, || async {
            match kube_api::get_raw(&c, "/livez").await {
                Ok(body) if body.trim() == "ok" => Ok(()),
                Ok(body) => Err(NotReady::Seen(format!("{}: /livez said {body:?}", h.name))),
                Err(e) => Err(NotReady::failed(format!("{}: /livez", h.name), e)),
            }
        })
        .await
        .map_err(|e| fail("an API server is not live", e))?;
    }
    let leases: Api<Lease> = Api::namespaced(client, "kube-system");
    for name in LEADER_LEASES {
        poll::wait_until(READY_TIMEOUT, || async {
            let lease = leases
                .get(name)
                .await
                .map_err(|e| NotReady::failed(format!("lease {name}"), e))?;
            let spec = lease.spec.unwrap_or_default();
            let renewed = spec
                .renew_time
                .map(|t| t.0)
                .ok_or_else(|| NotReady::Seen(format!("lease {name} never renewed")))?;
            let holder = spec.holder_identity.unwrap_or_default();
            let age = jiff_age(renewed);
            if stopped.contains(&holder) {
                return Err(NotReady::Seen(format!(
                    "lease {name}: still held by {holder:?}, which was restarted"
                )));
            }
            if holder.is_empty() || age > Duration::from_secs(60) {
                return Err(NotReady::Seen(format!(
                    "lease {name}: holder {holder:?}, renewed {}s ago",
                    age.as_secs()
                )));
            }
            Ok(())
        })
        .await
        .map_err(|e| fail(&format!("{name} is not running"), e))?;
    }
    Ok(())
}

/// How long ago a lease was renewed.
fn jiff_age(t: k8s_openapi::jiff::Timestamp) -> Duration {
    let now = k8s_openapi::jiff::Timestamp::now();
    now.duration_since(t).unsigned_abs()
}

#[async_trait]
impl Phase for ControlPlanePhase {
    fn name(&self) -> &'static str {
        "control-plane"
    }
    fn describe(&self) -> &'static str {
        "kube-apiserver, controller manager and scheduler (systemd units or static pods), waited for until ready"
    }
    async fn run(&self, cx: &PhaseContext<'_>) -> Result<(), InstallError> {
        let pb = clusterkit_core::playbook::load(cx.library, "control-plane")?;
        let systemd = cx.cluster.kubernetes.control_plane_mode == ControlPlaneMode::Systemd;
        let mut names = vec!["kubectl"];
        if systemd {
            names.extend(Component::CONTROL_PLANE.iter().map(|c| c.name()));
        }
        let bins = binary_files(cx.cluster, &names)?;
        let mut err = None;
        let cp_targets = with_vars(cx.targets, |t| {
            let h = cx
                .cluster
                .host(&t.name)
                .filter(|h| h.has_role(Role::ControlPlane))?;
            let mut m = Map::new();
            match component_vars(cx.cluster, h) {
                Ok(v) => {
                    m.insert("control_plane".into(), Value::Array(v));
                }
                Err(e) => err = Some(e),
            }
            m.insert("control_plane_systemd".into(), json!(systemd));
            m.insert("kube_binaries".into(), Value::Array(bins.clone()));
            Some(m)
        });
        if let Some(e) = err {
            return Err(e);
        }
        cx.engine.run(&pb, &cp_targets).await;
        if !systemd {
            // Static pods run only under a kubelet: start it on the control-plane hosts now.
            run_kubelet(cx, &cp_targets, None).await?;
        }
        if cx.check || cp_targets.iter().any(|t| cx.engine.host_failed(&t.name)) {
            return Ok(());
        }
        wait_ready(cx.cluster).await?;
        if versions::rules(cx.cluster.kubernetes.version).super_admin_kubeconfig {
            super::join::bind_cluster_admins(cx.cluster).await?;
        }
        apply_kubeadm_config(cx).await
    }
}

/// The cluster's KubeletConfiguration as every node gets it (the `kubernetes/kubelet-config.yaml`
/// template rendered with cluster-level values), for the `kubelet-config-1.X` ConfigMap.
pub fn cluster_kubelet_config(cx: &PhaseContext<'_>) -> Result<String, InstallError> {
    let Some(host) = cx.cluster.hosts.first() else {
        return Ok(String::new());
    };
    let template = cx.library.template("kubernetes/kubelet-config.yaml")?;
    let vars = kubelet_vars(cx.cluster, host, None)?;
    clusterkit_core::playbook::render::render_text(
        &template.text,
        &kubelet_config_context(cx.cluster, vars),
    )
    .map_err(|e| InstallError::host("kubelet config", template.origin.clone(), e))
}

/// What the KubeletConfiguration template is rendered with outside a playbook: the kubelet
/// variables as `host.kubelet` and the node layout.
fn kubelet_config_context(cluster: &Cluster, kubelet: Value) -> Value {
    json!({ "host": { "kubelet": kubelet }, "layout": NodeLayout::from_cluster(cluster) })
}

/// kubeadm compatibility: the `kubeadm-config` and `kubelet-config-1.X` ConfigMaps and the RBAC
/// `kubeadm join` needs ([`crate::token::kubeadm_objects`]), so the command
/// `clusterkit token create --print-join-command` prints joins a node with kubeadm.
async fn apply_kubeadm_config(cx: &PhaseContext<'_>) -> Result<(), InstallError> {
    let kubelet = cluster_kubelet_config(cx)?;
    let client = kube_api::admin_client(cx.cluster, None).await?;
    crate::token::apply_kubeadm_objects(&client, cx.cluster, &kubelet)
        .await
        .map_err(|e| kube_api::api_err("kubeadm configuration", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clusterkit_core::playbook::render::render_text;
    use k8s_openapi::api::core::v1::Pod;

    fn cluster(mode: &str) -> Cluster {
        let text = format!(
            "name: demo\nhosts:\n  - {{ name: cp1, address: 10.0.0.11, roles: [control-plane, etcd], auth: {{ key_file: ./k }} }}\n  - {{ name: w1, address: 10.0.0.12, roles: [worker], auth: {{ key_file: ./k }} }}\nkubernetes: {{ version: v1.20.2, control_plane_mode: {mode} }}\n"
        );
        crate::test_cluster(&text)
    }

    #[test]
    fn static_pod_manifests_are_pods_with_the_rendered_flags() {
        let c = cluster("static-pod");
        let cp = c.host("cp1").unwrap();
        let template = include_str!("../../../templates/kubernetes/manifests/component.yaml");
        for item in component_vars(&c, cp).unwrap() {
            let text = render_text(template, &json!({ "item": item })).unwrap();
            let pod: Pod = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let name = item["name"].as_str().unwrap();
            assert_eq!(pod.metadata.name.as_deref(), Some(name));
            assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
            let spec = pod.spec.unwrap();
            assert_eq!(spec.host_network, Some(true));
            let ctr = &spec.containers[0];
            assert_eq!(
                ctr.image.as_deref(),
                Some(format!("registry.k8s.io/{name}:v1.20.2").as_str())
            );
            let command = ctr.command.clone().unwrap();
            assert_eq!(command[0], name);
            let flags: Vec<String> = item["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            assert_eq!(
                command[1..],
                flags[..],
                "the manifest carries exactly the rendered flags"
            );
            let mounts = ctr.volume_mounts.clone().unwrap();
            let volumes = spec.volumes.unwrap();
            assert_eq!(mounts.len(), volumes.len());
            let probe = ctr.liveness_probe.clone().unwrap().http_get.unwrap();
            assert_eq!(probe.scheme.as_deref(), Some("HTTPS"));
        }
        let flags = component_vars(&c, cp).unwrap()[1]["flags"].to_string();
        assert!(
            flags.contains("--controllers=*,bootstrapsigner,tokencleaner"),
            "{flags}"
        );
        assert!(
            flags.contains("--cluster-signing-key-file=/etc/kubernetes/pki/ca.key"),
            "{flags}"
        );
    }

    #[test]
    fn systemd_units_and_kubelet_config_render() {
        let c = cluster("systemd");
        let cp = c.host("cp1").unwrap();
        let unit = include_str!("../../../templates/kubernetes/systemd/component.service");
        let api = &component_vars(&c, cp).unwrap()[0];
        let text = render_text(unit, &json!({ "item": api })).unwrap();
        assert!(
            text.contains(
                "ExecStart=/usr/local/bin/kube-apiserver \\\n  --advertise-address=10.0.0.11 \\\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("--insecure-port=0"),
            "v1.20 keeps --insecure-port=0: {text}"
        );
        let w1 = c.host("w1").unwrap();
        let kubelet = kubelet_vars(&c, w1, Some("x")).unwrap();
        let flags = kubelet["flags"].to_string();
        assert!(
            flags.contains("--container-runtime=remote")
                && flags.contains(
                    "--container-runtime-endpoint=unix:///run/containerd/containerd.sock"
                ),
            "{flags}"
        );
        let cfg = render_text(
            include_str!("../../../templates/kubernetes/kubelet-config.yaml"),
            &kubelet_config_context(&c, kubelet),
        )
        .unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(&cfg).unwrap();
        assert_eq!(v["cgroupDriver"], "systemd");
        assert_eq!(v["staticPodPath"], "/etc/kubernetes/manifests");
        assert_eq!(v["clusterDNS"][0], "10.96.0.10");
        assert_eq!(v["rotateCertificates"], true);
        assert!(
            v.get("containerRuntimeEndpoint").is_none(),
            "v1.20 takes the endpoint as a flag"
        );
    }
}
