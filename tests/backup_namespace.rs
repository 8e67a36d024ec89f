//! Namespace backup and restore against a real kube-apiserver v1.20.2 + controller manager
//! over a local TLS etcd, storing in a real S3 server (s3s-fs) or a directory.
//!
//! One control plane serves every scenario (each in its own namespace) to keep CI fast:
//! round trip after deleting the namespace and the CRD, namespace mapping while the original
//! exists, `--existing skip|update`, dry run, Secrets only when asked and never unencrypted
//! without the explicit flag, the `clusterkit` binary's own `backup namespace`, and a restore
//! drill of a namespace backup (parsed, counted, applied under a mapped name, deleted).

mod backup_util;
mod common;
mod kube_harness;

use std::sync::Arc;
use std::time::Duration;

use clusterkit_backup::clock::SystemClock;
use clusterkit_backup::crypto::{Decrypt, Encrypt};
use clusterkit_backup::manifest::{Encryption, Kind, Manifest};
use clusterkit_backup::namespace::{
    self, ApiClient, BackupOptions, Existing, NamespaceError, ResourceType, RestoreOptions,
    RestoreReport, TypeFilter,
};
use clusterkit_backup::store::{open_store, FsStore, Store};
use serde_json::{json, Value};

use backup_util::S3;
use kube_harness::KubeCluster;

const PASSPHRASE_ENV: &str = "CK_NS_TEST_PASSPHRASE";
const SECRET_VALUE: &str = "s3cr3t-Pa55w0rd-only-in-the-secret";

/// The types the tests create, by kind.
fn rt(kind: &str) -> ResourceType {
    let (group, version, resource, namespaced) = match kind {
        "Namespace" => ("", "v1", "namespaces", false),
        "ConfigMap" => ("", "v1", "configmaps", true),
        "Secret" => ("", "v1", "secrets", true),
        "ServiceAccount" => ("", "v1", "serviceaccounts", true),
        "Service" => ("", "v1", "services", true),
        "Pod" => ("", "v1", "pods", true),
        "Deployment" => ("apps", "v1", "deployments", true),
        "ReplicaSet" => ("apps", "v1", "replicasets", true),
        "Role" => ("rbac.authorization.k8s.io", "v1", "roles", true),
        "RoleBinding" => ("rbac.authorization.k8s.io", "v1", "rolebindings", true),
        "CustomResourceDefinition" => (
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            false,
        ),
        "Widget" => ("example.com", "v1", "widgets", true),
        other => panic!("unknown kind {other}"),
    };
    ResourceType {
        group: group.into(),
        version: version.into(),
        resource: resource.into(),
        kind: kind.into(),
        namespaced,
    }
}

/// Test-side access to the cluster.
struct Kube<'a> {
    c: ApiClient,
    cluster: &'a KubeCluster,
}

impl Kube<'_> {
    async fn apply_as(&self, manager: &str, obj: Value) -> Value {
        let kind = obj["kind"].as_str().unwrap();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let ns = obj["metadata"]["namespace"].as_str();
        let path = rt(kind).collection_path(ns);
        self.c
            .apply_as(manager, &path, &name, &obj, false)
            .await
            .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}\n{}", self.cluster.logs()))
            .object
    }

    async fn apply(&self, obj: Value) -> Value {
        self.apply_as("test-setup", obj).await
    }

    async fn get(&self, kind: &str, ns: Option<&str>, name: &str) -> Option<Value> {
        self.c
            .get(&rt(kind).collection_path(ns), name)
            .await
            .unwrap()
    }

    async fn must(&self, kind: &str, ns: Option<&str>, name: &str) -> Value {
        self.get(kind, ns, name)
            .await
            .unwrap_or_else(|| panic!("{kind} {ns:?}/{name} does not exist"))
    }

    async fn list(&self, kind: &str, ns: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .c
                .list_page(
                    &rt(kind).collection_path(Some(ns)),
                    None,
                    500,
                    token.as_deref(),
                )
                .await
                .unwrap();
            out.extend(page.items);
            match page.continue_token {
                Some(t) => token = Some(t),
                None => return out,
            }
        }
    }

    /// Deletes and waits until it is gone (namespaces take the namespace controller's time).
    async fn delete_and_wait(&self, kind: &str, ns: Option<&str>, name: &str) {
        self.c
            .delete(&rt(kind).collection_path(ns), name)
            .await
            .unwrap();
        for _ in 0..600 {
            if self.get(kind, ns, name).await.is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{kind} {name} was not deleted within 120 s");
    }

    /// Polls until `f` finds what it wants.
    async fn eventually<T, F, Fut>(&self, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        for _ in 0..300 {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("timed out waiting for {what}");
    }
}

fn uid(o: &Value) -> String {
    o["metadata"]["uid"].as_str().unwrap().to_string()
}

/// The fields field manager `manager` owns in `o`, as JSON text (for "does not own X" checks).
fn owned_by(o: &Value, manager: &str) -> String {
    o["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["manager"] == manager)
        .map(|m| m["fieldsV1"].to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Creates the namespace the round trip works on: every kind the issue lists.
async fn populate(k: &Kube<'_>, ns: &str, with_crs: bool) {
    k.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"team": "shop"}}}))
        .await;
    if with_crs {
        create_crd(k).await;
    }
    populate_rest(k, ns, with_crs).await;
}

async fn create_crd(k: &Kube<'_>) {
    k.apply(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .await;
    k.eventually("the Widget CRD to be established", || async {
        let crd = k
            .get("CustomResourceDefinition", None, "widgets.example.com")
            .await?;
        let ok = crd["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        ok.then_some(())
    })
    .await;
}

async fn populate_rest(k: &Kube<'_>, ns: &str, with_crs: bool) {
    k.apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app-sa", "namespace": ns}}))
        .await;
    let app_config = k
        .apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "app-config", "namespace": ns, "labels": {"app": "web"}},
                      "data": {"mode": "production", "threads": "8", "flag": "true", "multi": "a\nb\n"}}))
        .await;
    k.apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-password", "namespace": ns},
                   "type": "Opaque", "stringData": {"password": SECRET_VALUE}}))
        .await;
    let deploy = k
        .apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns, "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"serviceAccountName": "app-sa",
                                           "containers": [{"name": "web", "image": "docker.io/library/busybox:1.36",
                                                           "command": ["httpd", "-f"], "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}}))
        .await;
    // Owned by the Deployment without being its controller's product: restored and relinked.
    k.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "web-extra", "namespace": ns,
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": uid(&deploy)}]},
                   "data": {"k": "v"}}))
        .await;
    for svc in [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 80, "protocol": "TCP"}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-np", "namespace": ns},
               "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-headless", "namespace": ns},
               "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
    ] {
        k.apply(svc).await;
    }
    if with_crs {
        k.apply(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "namespace": ns},
                       "spec": {"size": 3, "color": "blue", "tags": ["a", "b"]}}))
            .await;
        k.apply(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                       "metadata": {"name": "w2", "namespace": ns,
                                    "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "app-config", "uid": uid(&app_config)}]},
                       "spec": {"size": 1}}))
            .await;
    }
    k.apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader", "namespace": ns},
                   "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}))
        .await;
    k.apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader", "namespace": ns},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
                   "subjects": [{"kind": "ServiceAccount", "name": "app-sa", "namespace": ns}]}))
        .await;
    // The controller manager makes the ReplicaSet and its Pods (Pending: no nodes here).
    k.eventually("the Deployment's Pods", || async {
        let pods = k.list("Pod", ns).await;
        (pods.len() == 2).then_some(())
    })
    .await;
}

/// What the round trip compares: spec/data-like content per object.
async fn snapshot(k: &Kube<'_>, ns: &str, with_crs: bool) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (kind, name, fields) in [
        ("ConfigMap", "app-config", &["data"][..]),
        ("ConfigMap", "web-extra", &["data"]),
        ("Secret", "db-password", &["data", "type"]),
        ("Deployment", "web", &["spec"]),
        ("Role", "reader", &["rules"]),
        ("RoleBinding", "reader", &["roleRef", "subjects"]),
        ("ServiceAccount", "app-sa", &[]),
    ] {
        // The custom-resource test backs up without Secrets.
        if with_crs && kind == "Secret" {
            continue;
        }
        let o = k.must(kind, Some(ns), name).await;
        let mut v = serde_json::Map::new();
        for f in fields {
            v.insert(f.to_string(), o[*f].clone());
        }
        v.insert("labels".into(), o["metadata"]["labels"].clone());
        out.push((format!("{kind}/{name}"), Value::Object(v)));
    }
    // Services: everything but what the cluster allocates.
    for name in ["web", "web-np", "web-headless"] {
        let mut spec = k.must("Service", Some(ns), name).await["spec"].clone();
        let s = spec.as_object_mut().unwrap();
        if s["clusterIP"] != "None" {
            s.remove("clusterIP");
            s.remove("clusterIPs");
        }
        for p in s
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            p.as_object_mut().unwrap().remove("nodePort");
        }
        out.push((format!("Service/{name}"), spec));
    }
    if with_crs {
        for name in ["w1", "w2"] {
            let o = k.must("Widget", Some(ns), name).await;
            out.push((format!("Widget/{name}"), o["spec"].clone()));
        }
    }
    out
}

fn assert_clean(report: &RestoreReport) {
    assert_eq!(
        report.failed(),
        0,
        "restore failures: {:#?}\n{}",
        report.failures,
        report.table()
    );
}

fn counts(report: &RestoreReport, t: &str) -> (u64, u64, u64, u64) {
    report
        .counts(t)
        .map(|c| (c.created, c.updated, c.skipped, c.failed))
        .unwrap_or_else(|| panic!("no {t} in the report:\n{}", report.table()))
}

/// A directory store in `dir`.
fn dir_store(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(FsStore::new("file:///test", dir.to_path_buf(), 8 << 20))
}

/// `namespace::backup` of the namespace `ns` into `store`, with `opts` for the rest.
async fn backup_ns(
    c: &ApiClient,
    store: &Arc<dyn Store>,
    ns: &str,
    opts: BackupOptions,
) -> Result<Manifest, NamespaceError> {
    let opts = BackupOptions {
        namespaces: vec![ns.into()],
        ..opts
    };
    namespace::backup(c, store.clone(), &opts, Arc::new(SystemClock)).await
}

fn resource_counts(m: &Manifest) -> serde_json::Map<String, Value> {
    m.details["resource_counts"].as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_backup_and_restore_on_a_real_api_server() {
    let cluster = KubeCluster::start();
    let s3 = S3::start_temp("ns-backups");
    let k = Kube {
        c: cluster.client().await,
        cluster: &cluster,
    };
    let store: Arc<dyn Store> = open_store(&s3.url("team"), &s3.options()).await.unwrap();
    std::env::set_var(PASSPHRASE_ENV, "correct horse battery staple");

    populate(&k, "shop", false).await;
    let before = snapshot(&k, "shop", false).await;
    let old_deploy = k.must("Deployment", Some("shop"), "web").await;
    let old_config = k.must("ConfigMap", Some("shop"), "app-config").await;
    let old_np = k.must("Service", Some("shop"), "web-np").await;

    // --- back up with Secrets, encrypted with a passphrase, to S3 ---
    let opts = BackupOptions {
        namespaces: vec!["shop".into()],
        filter: TypeFilter {
            include_secrets: true,
            ..Default::default()
        },
        encrypt: Encrypt::from_options(&[], Some(PASSPHRASE_ENV)).unwrap(),
        page_size: 2, // several pages per type, so pagination is exercised
        ..Default::default()
    };
    let m = namespace::backup(&k.c, store.clone(), &opts, Arc::new(SystemClock))
        .await
        .unwrap_or_else(|e| panic!("backup: {e}\n{}", cluster.logs()));
    assert_eq!(m.kind, Kind::Namespace);
    assert_eq!(m.encryption, Encryption::AgePassphrase);
    assert_eq!(m.details["namespaces"], json!(["shop"]));
    assert_eq!(m.details["server_version"], json!("v1.20.2"));
    assert_eq!(m.details["crds"], json!([]));
    let rc = resource_counts(&m);
    assert_eq!(rc["deployments.apps"], json!(1));
    assert_eq!(rc["services"], json!(3));
    assert_eq!(rc["pods"], json!(2));
    assert_eq!(rc["namespaces"], json!(1));
    assert!(rc["secrets"].as_u64().unwrap() >= 1, "{rc:?}");
    assert!(!rc.contains_key("events"), "{rc:?}");
    assert!(
        !s3.all_bytes()
            .windows(SECRET_VALUE.len())
            .any(|w| w == SECRET_VALUE.as_bytes()),
        "the Secret's value is readable in the store"
    );
    // The shared catalog sees it like any backup, and verify checks it end to end.
    let listed = clusterkit_backup::catalog::list_manifests(store.as_ref())
        .await
        .unwrap();
    assert!(listed
        .iter()
        .any(|l| l.id == m.id && l.kind == Kind::Namespace));
    let decrypt = Decrypt::from_options(&[], Some(PASSPHRASE_ENV)).unwrap();
    clusterkit_backup::pipeline::read_and_check(store.as_ref(), &m, &decrypt, None)
        .await
        .unwrap();

    // --- a restore drill: parsed and counted, then applied under mapped names and deleted ---
    let mut dopts = clusterkit_backup::drill::DrillOptions::local("etcd".into(), "etcdctl".into());
    dopts.scratch_cluster = Some(k.c.clone());
    let rec = clusterkit_backup::drill::drill(store.as_ref(), &m.id, &decrypt, &dopts)
        .await
        .unwrap_or_else(|e| panic!("drill: {e}\n{}", cluster.logs()));
    assert!(rec.ok, "{rec:#?}");
    let names: Vec<&str> = rec.checks.iter().map(|c| c.name.as_str()).collect();
    for want in [
        "integrity",
        "parses",
        "objects",
        "resource_counts",
        "applied",
        "restored_counts",
        "listed",
    ] {
        assert!(names.contains(&want), "{want} not checked: {rec:#?}");
    }
    assert_eq!(rec.figures["objects"], m.details["objects"], "{rec:#?}");
    let mapped = rec.figures["scratch_namespaces"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(mapped.starts_with("shop-drill-"), "{rec:#?}");
    // The drill's namespace is gone or going.
    let ns = k.get("Namespace", None, &mapped).await;
    assert!(
        ns.as_ref()
            .is_none_or(|n| n["metadata"]["deletionTimestamp"].is_string()),
        "{mapped} still there: {ns:?}"
    );
    let last = clusterkit_backup::drill::last_drill(store.as_ref(), &m.id)
        .await
        .unwrap()
        .expect("drill.json recorded");
    assert_eq!(last, rec);

    // --- delete the namespace, restore everything ---
    k.delete_and_wait("Namespace", None, "shop").await;
    let ropts = RestoreOptions {
        decrypt: decrypt.clone(),
        ..Default::default()
    };
    let report = namespace::restore(&k.c, store.as_ref(), &m.id, &ropts)
        .await
        .unwrap_or_else(|e| panic!("restore: {e}\n{}", cluster.logs()));
    assert_clean(&report);
    println!("{}", report.table());
    // Dependency order: the namespace, service accounts, config, … workloads, then the rest.
    let order: Vec<&str> = report.types.iter().map(|t| t.resource.as_str()).collect();
    let pos = |t: &str| {
        order
            .iter()
            .position(|x| *x == t)
            .unwrap_or_else(|| panic!("{t} not in {order:?}"))
    };
    assert!(pos("namespaces") < pos("serviceaccounts"));
    assert!(pos("serviceaccounts") < pos("configmaps"));
    assert!(pos("secrets") < pos("services"));
    assert!(pos("configmaps") < pos("deployments.apps"));
    assert!(pos("deployments.apps") < pos("replicasets.apps"));
    assert!(pos("replicasets.apps") < pos("pods"));
    assert!(pos("pods") < pos("roles.rbac.authorization.k8s.io"));
    assert_eq!(counts(&report, "deployments.apps"), (1, 0, 0, 0));
    assert_eq!(counts(&report, "secrets").0, 1);
    // The Deployment's ReplicaSet and Pods are left to the controllers.
    assert_eq!(counts(&report, "replicasets.apps").2, 1);
    assert_eq!(counts(&report, "pods"), (0, 0, 2, 0));
    assert_eq!(
        report.skip_reasons.get("pods: recreated by its controller"),
        Some(&2)
    );

    let after = snapshot(&k, "shop", false).await;
    assert_eq!(before, after, "restored objects differ from the originals");
    let new_deploy = k.must("Deployment", Some("shop"), "web").await;
    let new_config = k.must("ConfigMap", Some("shop"), "app-config").await;
    assert_ne!(uid(&new_deploy), uid(&old_deploy));
    let extra = k.must("ConfigMap", Some("shop"), "web-extra").await;
    assert_eq!(
        extra["metadata"]["ownerReferences"][0]["uid"],
        json!(uid(&new_deploy))
    );
    assert_ne!(uid(&new_config), uid(&old_config));
    // Fresh cluster IPs and node ports: allocated by the cluster, never applied by clusterkit.
    for name in ["web", "web-np"] {
        let svc = k.must("Service", Some("shop"), name).await;
        let ip = svc["spec"]["clusterIP"].as_str().unwrap();
        assert!(ip.starts_with("10.0.0."), "{name}: {ip}");
        let mine = owned_by(&svc, "clusterkit");
        assert!(
            !mine.contains("clusterIP") && !mine.contains("nodePort"),
            "{name}: clusterkit owns {mine}"
        );
    }
    let np = k.must("Service", Some("shop"), "web-np").await;
    assert!(np["spec"]["ports"][0]["nodePort"].as_u64().unwrap() >= 30000);
    assert_eq!(old_np["spec"]["ports"][0]["nodePort"], json!(30080));
    assert_eq!(
        k.must("Service", Some("shop"), "web-headless").await["spec"]["clusterIP"],
        "None"
    );
    // The controllers take over: a new ReplicaSet owned by the new Deployment.
    let new_deploy_uid = uid(&new_deploy);
    k.eventually("a ReplicaSet owned by the restored Deployment", || {
        let want = new_deploy_uid.clone();
        let k = &k;
        async move {
            k.list("ReplicaSet", "shop")
                .await
                .iter()
                .any(|rs| rs["metadata"]["ownerReferences"][0]["uid"] == json!(want))
                .then_some(())
        }
    })
    .await;

    // --- namespace mapping while the original exists ---
    let report = namespace::restore(
        &k.c,
        store.as_ref(),
        &m.id,
        &RestoreOptions {
            decrypt: decrypt.clone(),
            namespace_mapping: [("shop".to_string(), "shop-copy".to_string())].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_clean(&report);
    assert_eq!(counts(&report, "namespaces"), (1, 0, 0, 0));
    let copy = snapshot(&k, "shop-copy", false).await;
    for ((name, a), (_, b)) in before.iter().zip(&copy) {
        if name == "RoleBinding/reader" {
            assert_eq!(b["subjects"][0]["namespace"], "shop-copy");
        } else {
            assert_eq!(a, b, "{name} differs in the copy");
        }
    }
    let copy_deploy = k.must("Deployment", Some("shop-copy"), "web").await;
    let copy_extra = k.must("ConfigMap", Some("shop-copy"), "web-extra").await;
    assert_eq!(
        copy_extra["metadata"]["ownerReferences"][0]["uid"],
        json!(uid(&copy_deploy))
    );
    assert_ne!(uid(&copy_deploy), uid(&new_deploy));
    assert_eq!(
        after,
        snapshot(&k, "shop", false).await,
        "the original changed"
    );

    // --- --existing skip leaves changes alone; update restores the backed-up spec ---
    k.apply_as(
        "someone-else",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "app-config", "namespace": "shop"}, "data": {"mode": "debug"}}),
    )
    .await;
    k.apply_as("someone-else", json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "docker.io/library/busybox:1.36"}]}}}}))
        .await;
    let report = namespace::restore(
        &k.c,
        store.as_ref(),
        &m.id,
        &RestoreOptions {
            decrypt: decrypt.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_clean(&report);
    assert_eq!(counts(&report, "deployments.apps"), (0, 0, 1, 0));
    assert_eq!(
        k.must("ConfigMap", Some("shop"), "app-config").await["data"]["mode"],
        "debug"
    );
    assert_eq!(
        k.must("Deployment", Some("shop"), "web").await["spec"]["replicas"],
        5
    );

    let report = namespace::restore(
        &k.c,
        store.as_ref(),
        &m.id,
        &RestoreOptions {
            decrypt: decrypt.clone(),
            existing: Existing::Update,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_clean(&report);
    assert_eq!(counts(&report, "deployments.apps"), (0, 1, 0, 0));
    let cm = k.must("ConfigMap", Some("shop"), "app-config").await;
    assert_eq!(
        cm["data"], before[0].1["data"],
        "update did not restore the data"
    );
    assert_eq!(
        k.must("Deployment", Some("shop"), "web").await["spec"]["replicas"],
        2
    );

    // --- dry run: the server checks, nothing is persisted ---
    let report = namespace::restore(
        &k.c,
        store.as_ref(),
        &m.id,
        &RestoreOptions {
            decrypt: decrypt.clone(),
            dry_run: true,
            namespace_mapping: [("shop".to_string(), "shop-dry".to_string())].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_clean(&report);
    assert!(report.dry_run);
    assert_eq!(counts(&report, "namespaces"), (1, 0, 0, 0));
    assert!(
        k.get("Namespace", None, "shop-dry").await.is_none(),
        "dry run created the namespace"
    );
    assert!(
        report.notes.iter().any(|n| n.contains("shop-dry")),
        "{:?}",
        report.notes
    );

    // A wrong key is refused before anything is applied.
    let err = namespace::restore(
        &k.c,
        store.as_ref(),
        &m.id,
        &RestoreOptions {
            namespace_mapping: [("shop".to_string(), "shop-nokey".to_string())].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
    assert!(k.get("Namespace", None, "shop-nokey").await.is_none());

    // --- Secrets: absent unless asked; plaintext only with the explicit flag ---
    let dir = tempfile::tempdir().unwrap();
    let fs = dir_store(dir.path());
    let plain = backup_ns(&k.c, &fs, "shop", BackupOptions::default())
        .await
        .unwrap();
    assert!(!resource_counts(&plain).contains_key("secrets"));
    let tar = raw_archive(fs.as_ref(), &plain, dir.path()).await;
    assert!(!contains(&tar, "/core/v1/secrets/"));
    assert!(!contains(&tar, SECRET_VALUE));
    assert!(contains(
        &tar,
        "namespaces/shop/core/v1/configmaps/app-config.yaml"
    ));
    assert!(contains(&tar, "mode: production"));

    let with_secrets = TypeFilter {
        include_secrets: true,
        ..Default::default()
    };
    let refused = backup_ns(
        &k.c,
        &fs,
        "shop",
        BackupOptions {
            filter: with_secrets.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(refused, NamespaceError::Refused(_)), "{refused}");
    let ids = clusterkit_backup::catalog::list_manifests(fs.as_ref())
        .await
        .unwrap();
    assert_eq!(ids.len(), 1, "the refused backup left something");

    let allowed = backup_ns(
        &k.c,
        &fs,
        "shop",
        BackupOptions {
            filter: with_secrets,
            allow_plaintext_secrets: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let tar = raw_archive(fs.as_ref(), &allowed, dir.path()).await;
    assert!(contains(
        &tar,
        "namespaces/shop/core/v1/secrets/db-password.yaml"
    ));

    cli_backup_and_restore(&cluster, &k, &s3).await;
}

/// Custom resources: the CRD is backed up with them (first), restored and waited for until
/// Established before its objects; ownerReferences from a custom resource are relinked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn custom_resources_round_trip_after_deleting_the_crd() {
    let cluster = KubeCluster::start();
    let k = Kube {
        c: cluster.client().await,
        cluster: &cluster,
    };
    populate(&k, "crs", true).await;
    let before = snapshot(&k, "crs", true).await;
    let dir = tempfile::tempdir().unwrap();
    let fs = dir_store(dir.path());
    let m = backup_ns(&k.c, &fs, "crs", BackupOptions::default())
        .await
        .unwrap_or_else(|e| panic!("backup: {e}\n{}", cluster.logs()));
    assert_eq!(m.details["crds"], json!(["widgets.example.com"]));
    assert_eq!(resource_counts(&m)["widgets.example.com"], json!(2));

    k.delete_and_wait("Namespace", None, "crs").await;
    k.delete_and_wait("CustomResourceDefinition", None, "widgets.example.com")
        .await;
    let report = namespace::restore(&k.c, fs.as_ref(), &m.id, &RestoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("restore: {e}\n{}", cluster.logs()));
    assert_clean(&report);
    let order: Vec<&str> = report.types.iter().map(|t| t.resource.as_str()).collect();
    assert_eq!(
        order[0], "customresourcedefinitions.apiextensions.k8s.io",
        "{order:?}"
    );
    assert_eq!(order[1], "namespaces", "{order:?}");
    // The custom resources come after the workloads' dependencies ("then the rest").
    let pos = |t: &str| order.iter().position(|x| *x == t).unwrap();
    assert!(pos("widgets.example.com") > pos("configmaps"), "{order:?}");
    // The CRD was waited for until Established before its objects were applied.
    let crd = k
        .must("CustomResourceDefinition", None, "widgets.example.com")
        .await;
    assert!(
        crd["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True"),
        "{crd}"
    );
    assert_eq!(
        counts(&report, "customresourcedefinitions.apiextensions.k8s.io"),
        (1, 0, 0, 0)
    );
    assert_eq!(counts(&report, "widgets.example.com"), (2, 0, 0, 0));
    assert_eq!(before, snapshot(&k, "crs", true).await);
    let config = k.must("ConfigMap", Some("crs"), "app-config").await;
    let w2 = k.must("Widget", Some("crs"), "w2").await;
    assert_eq!(
        w2["metadata"]["ownerReferences"][0]["uid"],
        json!(uid(&config))
    );
}

/// The `clusterkit` binary: `backup namespace`, `backup list`, `restore namespace`.
async fn cli_backup_and_restore(cluster: &KubeCluster, k: &Kube<'_>, s3: &S3) {
    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| backup_util::ck_s3(cwd.path(), Some(s3), args);
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let store = s3.url("cli");
    let out = common::run_ok(&mut run(&[
        "backup",
        "namespace",
        "shop",
        "--kubeconfig",
        &kubeconfig,
        "--store",
        &store,
        "--exclude-resources",
        "pods",
    ]));
    let id = common::stdout(&out).trim().to_string();
    assert!(
        id.starts_with("namespace-"),
        "{}",
        common::describe(&run(&[]), &out, "id")
    );
    let list = common::stdout(&common::run_ok(&mut run(&[
        "backup", "list", "--store", &store, "-o", "json",
    ])));
    assert!(list.contains(&id), "{list}");
    let out = common::run_ok(&mut run(&[
        "restore",
        "namespace",
        &id,
        "--kubeconfig",
        &kubeconfig,
        "--store",
        &store,
        "--namespace-mapping",
        "shop:shop-cli",
    ]));
    let table = common::stdout(&out);
    assert!(
        table.contains("CREATED") && table.contains("configmaps"),
        "{table}"
    );
    assert!(k
        .get("ConfigMap", Some("shop-cli"), "app-config")
        .await
        .is_some());
    // The backup and the restore each left their outcome in the store's status (the monitor's
    // source), with no status step of their own in the CLI.
    let st = open_store(&store, &s3.options()).await.unwrap();
    let status = clusterkit_backup::status::read_status(st.as_ref(), Kind::Namespace)
        .await
        .unwrap()
        .expect("status/namespace.json written");
    assert_eq!(
        status.last_success_id.as_deref(),
        Some(id.as_str()),
        "{status:?}"
    );
    assert_eq!(status.runs.get("success"), Some(&1), "{status:?}");
    assert_eq!(status.restores.get("success"), Some(&1), "{status:?}");
}

/// The decoded tar of a backup (through the library's own verified read path).
async fn raw_archive(store: &dyn Store, m: &Manifest, dir: &std::path::Path) -> Vec<u8> {
    let sink = dir.join(format!("{}.tar", m.id));
    clusterkit_backup::pipeline::read_and_check(store, m, &Decrypt::default(), Some(&sink))
        .await
        .unwrap();
    std::fs::read(sink).unwrap()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}
