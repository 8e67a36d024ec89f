//! 10,000 ConfigMaps through namespace backup and restore on a real kube-apiserver v1.20.2:
//! both complete and every object comes back. No timing or memory asserts here — figures are
//! measured by bench/namespace/run.sh.

mod backup_util;
mod common;
mod kube_harness;

use std::sync::Arc;

use clusterkit_backup::clock::SystemClock;
use clusterkit_backup::namespace::{self, ApiClient, BackupOptions, RestoreOptions};
use clusterkit_backup::store::{open_store, Store};
use serde_json::json;
use tokio::task::JoinSet;

use backup_util::S3;
use kube_harness::KubeCluster;

const COUNT: usize = 10_000;

/// Creates `count` small ConfigMaps in `ns`, 64 requests in flight.
async fn create_configmaps(c: &ApiClient, ns: &str, count: usize) {
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let mut tasks = JoinSet::new();
    for i in 0..count {
        if tasks.len() >= 64 {
            tasks.join_next().await.unwrap().unwrap();
        }
        let c = c.clone();
        let path = path.clone();
        let ns = ns.to_string();
        tasks.spawn(async move {
            let name = format!("cm-{i:05}");
            let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
                             "metadata": {"name": name, "namespace": ns, "labels": {"bench": "yes"}},
                             "data": {"index": i.to_string(), "payload": "x".repeat(64)}});
            c.apply(&path, &name, &obj, false).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

async fn count_configmaps(c: &ApiClient, ns: &str) -> usize {
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let mut n = 0;
    let mut token: Option<String> = None;
    loop {
        let page = c
            .list_page(&path, None, 1000, token.as_deref())
            .await
            .unwrap();
        n += page.items.len();
        match page.continue_token {
            Some(t) => token = Some(t),
            None => return n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_configmaps_back_up_and_restore() {
    let cluster = KubeCluster::start();
    let s3 = S3::start_temp("ns-scale");
    let c = cluster.client().await;
    let ns_obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bulk"}});
    c.apply("/api/v1/namespaces", "bulk", &ns_obj, false)
        .await
        .unwrap();
    create_configmaps(&c, "bulk", COUNT).await;
    // kube-root-ca.crt is published into every namespace.
    assert_eq!(count_configmaps(&c, "bulk").await, COUNT + 1);

    let store: Arc<dyn Store> = open_store(&s3.url("scale"), &s3.options()).await.unwrap();
    let m = namespace::backup(
        &c,
        store.clone(),
        &BackupOptions {
            namespaces: vec!["bulk".into()],
            ..Default::default()
        },
        Arc::new(SystemClock),
    )
    .await
    .unwrap_or_else(|e| panic!("backup: {e}\n{}", cluster.logs()));
    assert_eq!(m.details["resource_counts"]["configmaps"], json!(COUNT + 1));

    let report = namespace::restore(
        &c,
        store.as_ref(),
        &m.id,
        &RestoreOptions {
            namespace_mapping: [("bulk".to_string(), "bulk-restored".to_string())].into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("restore: {e}\n{}", cluster.logs()));
    println!("{}", report.table());
    assert_eq!(report.failed(), 0, "{:#?}", report.failures);
    let cms = report.counts("configmaps").unwrap();
    // kube-root-ca.crt is the target cluster's own.
    assert_eq!((cms.created, cms.skipped), (COUNT as u64, 1));
    assert_eq!(count_configmaps(&c, "bulk-restored").await, COUNT + 1);
    let one = c
        .get("/api/v1/namespaces/bulk-restored/configmaps", "cm-04321")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one["data"]["index"], "4321");
    assert_eq!(one["metadata"]["labels"]["bench"], "yes");
}
