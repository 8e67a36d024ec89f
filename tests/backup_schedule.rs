//! The schedule lock: two schedulers of one job at once → one runs, the other waits and skips
//! the tick already served; two jobs at once both run; a crashed holder's lock expires. Real etcd, real S3 server (s3s-fs), the library's own scheduler.
//! Namespace schedules (`--kind namespace`): a real kube-apiserver v1.20.2 + etcd
//! (tests/kube_harness), two selections in one store that neither skip nor prune each other,
//! the daemon loop, and the `clusterkit` binary's schedule/list/describe/verify/prune.

mod backup_util;
mod common;
mod kube_harness;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use backup_util::*;
use clusterkit_backup::chrono::{Duration, Utc};
use clusterkit_backup::clock::{Clock, ManualClock, SystemClock};
use clusterkit_backup::etcd::{EtcdBackupOptions, EtcdTarget, EtcdTls};
use clusterkit_backup::lock;
use clusterkit_backup::manifest::Kind;
use clusterkit_backup::namespace::{self as ns, ApiClient};
use clusterkit_backup::pipeline::WriteSettings;
use clusterkit_backup::retention::Retention;
use clusterkit_backup::schedule::{self, Job, Source};
use clusterkit_backup::status::{self, Outcome};
use clusterkit_backup::store::{open_store, Store};

async fn s3_store(s3: &S3, prefix: &str) -> Arc<dyn Store> {
    open_store(&s3.url(prefix), &s3.options()).await.unwrap()
}

#[test]
fn two_schedulers_one_runs_the_other_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = Certs::generate(&dir.join("pki"));
    let etcd = Etcd::start(dir, &certs);
    let s3 = S3::start(dir, "ck-sched");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = client(&etcd, &certs).await;
        fill(&mut c, 3000, |i| format!("v{i}").into_bytes()).await;
        let store = s3_store(&s3, "sched").await;
        let job = |metrics| Job {
            store: store.clone(),
            source: Source::Etcd {
                target: EtcdTarget {
                    endpoints: vec![etcd.client_url.clone()],
                    tls: Some(EtcdTls {
                        ca: certs.ca.clone(),
                        cert: certs.client_cert.clone(),
                        key: certs.client_key.clone(),
                    }),
                    timeout: StdDuration::from_secs(10),
                },
                options: EtcdBackupOptions {
                    cluster: "t".into(),
                    write: WriteSettings {
                        compression_level: 3,
                        encrypt: Default::default(),
                        etcd_integrity: true,
                    },
                    lock_ttl: Duration::minutes(2),
                },
            },
            retention: Retention {
                keep_last: 5,
                ..Default::default()
            },
            clock: Arc::new(SystemClock),
            metrics,
            lock_wait: StdDuration::from_secs(60),
            drill: None,
        };
        let metrics = status::Metrics::new();
        let (a, b) = (job(metrics.clone()), job(metrics.clone()));
        let tick = Utc::now();
        let (ra, rb) = tokio::join!(schedule::run_once(&a, tick), schedule::run_once(&b, tick));
        let mut outcomes = vec![ra.outcome, rb.outcome];
        outcomes.sort_by_key(|o| o.as_str());
        assert_eq!(
            outcomes,
            vec![Outcome::Skipped, Outcome::Success],
            "a: {:?} / b: {:?}",
            ra.message,
            rb.message
        );
        let skipped = if ra.outcome == Outcome::Skipped {
            &ra
        } else {
            &rb
        };
        let why = skipped.message.as_deref().unwrap_or("");
        assert!(
            why.contains("lock held by") || why.contains("already finished"),
            "{why}"
        );
        // Exactly one backup, the lock released, status and metrics recorded.
        let list = clusterkit_backup::catalog::list_manifests(store.as_ref())
            .await
            .unwrap();
        assert_eq!(list.len(), 1);
        assert!(store.list("locks/").await.unwrap().is_empty());
        let st = status::read_status(store.as_ref(), Kind::Etcd)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(st.runs.get("success"), Some(&1));
        assert_eq!(st.last_success_id.as_deref(), Some(list[0].id.as_str()));
        let text = metrics.render();
        assert!(
            text.contains(r#"clusterkit_backup_runs_total{kind="etcd",outcome="skipped"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("clusterkit_backup_last_success_timestamp_seconds"),
            "{text}"
        );
    });
}

#[test]
fn simultaneous_contenders_never_both_hold_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(tmp.path(), "ck-locks");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = s3_store(&s3, "l").await;
        for round in 0..10 {
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let (a, b) = tokio::join!(
                lock::try_acquire(store.clone(), "t", Duration::minutes(1), clock.clone()),
                lock::try_acquire(store.clone(), "t", Duration::minutes(1), clock.clone()),
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert!(
                !(a.is_ok() && b.is_ok()),
                "round {round}: both hold the lock"
            );
            for g in [a, b].into_iter().flatten() {
                g.release().await.unwrap();
            }
        }
    });
}

#[test]
fn a_crashed_holders_lock_expires() {
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3::start(tmp.path(), "ck-stale");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = s3_store(&s3, "l").await;
        let clock = ManualClock::new(Utc::now());
        let c: Arc<dyn Clock> = Arc::new(clock.clone());
        let first = lock::try_acquire(store.clone(), "backup", Duration::minutes(5), c.clone())
            .await
            .unwrap()
            .expect("first acquires");
        // The holder crashes: renewal stops, the object stays.
        drop(first);
        let held = lock::try_acquire(store.clone(), "backup", Duration::minutes(5), c.clone())
            .await
            .unwrap();
        let info = held.expect_err("still held before expiry");
        assert!(info.holder.contains(':'));
        clock.advance(Duration::minutes(6));
        let second = lock::try_acquire(store.clone(), "backup", Duration::minutes(5), c.clone())
            .await
            .unwrap()
            .expect("the stale lock expired");
        assert_eq!(store.list("locks/backup/").await.unwrap().len(), 1);
        second.release().await.unwrap();
        assert!(store.list("locks/").await.unwrap().is_empty());
    });
}

/// A namespace with `n` ConfigMaps.
async fn make_namespace(c: &ApiClient, name: &str, n: usize) {
    let nsobj =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    c.apply_as("test-setup", "/api/v1/namespaces", name, &nsobj, false)
        .await
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
    let path = format!("/api/v1/namespaces/{name}/configmaps");
    for i in 0..n {
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{i}"), "namespace": name}, "data": {"i": i.to_string()}});
        c.apply_as("test-setup", &path, &format!("cm-{i}"), &cm, false)
            .await
            .unwrap_or_else(|e| panic!("configmap {name}/cm-{i}: {e}"));
    }
}

fn namespace_job(
    store: &Arc<dyn Store>,
    client: &ApiClient,
    namespace: &str,
    keep_last: u32,
    metrics: status::Metrics,
) -> Job {
    Job {
        store: store.clone(),
        source: Source::Namespace {
            client: client.clone(),
            options: ns::BackupOptions {
                namespaces: vec![namespace.into()],
                cluster: "t".into(),
                lock_ttl: Duration::minutes(2),
                ..Default::default()
            },
        },
        retention: Retention {
            keep_last,
            ..Default::default()
        },
        clock: Arc::new(SystemClock),
        metrics,
        lock_wait: StdDuration::from_secs(60),
        drill: None,
    }
}

/// The namespace backups in the store whose manifest names exactly `namespace`, oldest first.
async fn namespace_backups(store: &dyn Store, namespace: &str) -> Vec<String> {
    let mut list: Vec<_> = clusterkit_backup::catalog::list_manifests(store)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| {
            m.kind == Kind::Namespace && m.details["namespaces"] == serde_json::json!([namespace])
        })
        .collect();
    list.sort_by_key(|m| m.finished_at);
    list.into_iter().map(|m| m.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn namespace_schedules_back_up_prune_their_own_and_record_status() {
    let cluster = kube_harness::KubeCluster::start();
    let s3 = S3::start_temp("ns-sched");
    let client = cluster.client().await;
    make_namespace(&client, "alpha", 5).await;
    make_namespace(&client, "beta", 3).await;
    let store: Arc<dyn Store> = open_store(&s3.url("sched"), &s3.options()).await.unwrap();
    let metrics = status::Metrics::new();

    // Two schedulers of the same job, one tick: one backs up, the other skips.
    let a1 = namespace_job(&store, &client, "alpha", 2, metrics.clone());
    let a2 = namespace_job(&store, &client, "alpha", 2, metrics.clone());
    let tick = Utc::now();
    let (r1, r2) = tokio::join!(schedule::run_once(&a1, tick), schedule::run_once(&a2, tick));
    let mut outcomes = vec![r1.outcome, r2.outcome];
    outcomes.sort_by_key(|o| o.as_str());
    assert_eq!(
        outcomes,
        vec![Outcome::Skipped, Outcome::Success],
        "{:?} / {:?}\n{}",
        r1.message,
        r2.message,
        cluster.logs()
    );
    let first = [&r1, &r2]
        .into_iter()
        .find_map(|r| r.manifest.clone())
        .unwrap();
    assert_eq!(first.kind, Kind::Namespace);
    // Five ConfigMaps, and kube-root-ca.crt once the controller manager has published it.
    let cms = first.details["resource_counts"]["configmaps"]
        .as_u64()
        .unwrap();
    assert!(
        (5..=6).contains(&cms),
        "{}",
        first.details["resource_counts"]
    );
    assert_eq!(
        first.details["selection"]["namespaces"],
        serde_json::json!(["alpha"])
    );

    // Another selection at the same tick is not "already served" by alpha's backup, and runs
    // of two jobs at once both back up: the second waits for the store's lock, never skips.
    let b = namespace_job(&store, &client, "beta", 1, metrics.clone());
    let (rb, ra) = tokio::join!(
        schedule::run_once(&b, tick),
        schedule::run_once(&a1, Utc::now())
    );
    assert_eq!(rb.outcome, Outcome::Success, "{:?}", rb.message);
    assert_eq!(ra.outcome, Outcome::Success, "{:?}", ra.message);
    let mut pruned = ra.pruned;

    // One more alpha run: keep_last 2 prunes alpha's oldest, never beta's.
    let r = schedule::run_once(&a1, Utc::now()).await;
    assert_eq!(r.outcome, Outcome::Success, "{:?}", r.message);
    pruned.extend(r.pruned);
    assert_eq!(pruned, vec![first.id.clone()]);
    assert_eq!(namespace_backups(store.as_ref(), "alpha").await.len(), 2);
    let beta = namespace_backups(store.as_ref(), "beta").await;
    assert_eq!(beta, vec![rb.manifest.as_ref().unwrap().id.clone()]);

    // The daemon loop (every second) for beta: one run, then beta's keep_last 1 prunes the
    // older beta backup.
    let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = reports.clone();
    let shutdown = async {
        while reports.lock().unwrap().is_empty() {
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(
        StdDuration::from_secs(120),
        schedule::run_daemon(
            b.clone(),
            schedule::parse_cron("* * * * * *").unwrap(),
            shutdown,
            move |r| {
                seen.lock().unwrap().push((
                    r.outcome,
                    r.manifest.as_ref().map(|m| m.id.clone()),
                    r.pruned.clone(),
                ))
            },
        ),
    )
    .await
    .expect("the daemon ran no job within 120 s");
    let (outcome, id, pruned) = reports.lock().unwrap()[0].clone();
    assert_eq!(outcome, Outcome::Success);
    assert_eq!(pruned, beta);
    assert_eq!(
        namespace_backups(store.as_ref(), "beta").await,
        vec![id.unwrap()]
    );

    // Status and metrics per kind: 5 successful namespace runs, nothing for etcd.
    let st = status::read_status(store.as_ref(), Kind::Namespace)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(st.runs.get("success"), Some(&5), "{st:?}");
    assert!(status::read_status(store.as_ref(), Kind::Etcd)
        .await
        .unwrap()
        .is_none());
    let text = metrics.render();
    assert!(
        text.contains(r#"clusterkit_backup_runs_total{kind="namespace",outcome="skipped"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"clusterkit_backup_runs_total{kind="namespace",outcome="success"} 5"#),
        "{text}"
    );
    assert!(store.list("locks/").await.unwrap().is_empty());

    cli_schedule_and_catalog(&cluster, &s3).await;
}

/// The `clusterkit` binary: `backup schedule --once --kind namespace`, then list, describe,
/// verify and prune treat the namespace backups like etcd ones.
async fn cli_schedule_and_catalog(cluster: &kube_harness::KubeCluster, s3: &S3) {
    let cwd = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| backup_util::ck_s3(cwd.path(), Some(s3), args);
    let kubeconfig = cluster.kubeconfig.display().to_string();
    let store = s3.url("cli");
    let schedule_once = |extra: &[&str]| {
        let mut args = vec![
            "backup",
            "schedule",
            "--once",
            "--once-window-secs",
            "0",
            "--kind",
            "namespace",
            "alpha",
            "--kubeconfig",
            &kubeconfig,
            "--store",
            &store,
            "--keep-last",
            "1",
        ];
        args.extend_from_slice(extra);
        let out = common::run_ok(&mut run(&args));
        let line = common::stdout(&out);
        let v: serde_json::Value =
            serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["kind"], "namespace", "{v}");
        assert_eq!(v["outcome"], "success", "{v}");
        v
    };
    let first = schedule_once(&[]);
    let first_id = first["id"].as_str().unwrap().to_string();
    assert!(first_id.starts_with("namespace-"), "{first}");
    // A second run with --exclude-resources is another selection: it prunes nothing.
    let other = schedule_once(&["--exclude-resources", "serviceaccounts"]);
    assert_eq!(other["pruned"], serde_json::json!([]), "{other}");

    let list = common::stdout(&common::run_ok(&mut run(&[
        "backup", "list", "--store", &store,
    ])));
    assert!(
        list.lines()
            .any(|l| l.starts_with(&first_id) && l.contains(" namespace ")),
        "{list}"
    );
    let described = common::stdout(&common::run_ok(&mut run(&[
        "backup", "describe", &first_id, "--store", &store,
    ])));
    let m: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!(m["kind"], "namespace");
    assert_eq!(m["details"]["namespaces"], serde_json::json!(["alpha"]));
    let verified = common::stdout(&common::run_ok(&mut run(&[
        "backup", "verify", &first_id, "--store", &store,
    ])));
    assert!(verified.contains("is intact"), "{verified}");
    // Manual prune is per kind over every selection: keep-last 1 deletes the older one.
    let pruned = common::stdout(&common::run_ok(&mut run(&[
        "backup",
        "prune",
        "--store",
        &store,
        "--keep-last",
        "1",
    ])));
    assert!(pruned.contains(&format!("deleted {first_id}")), "{pruned}");

    // Wrong combinations are refused before anything runs.
    let out = common::run_fail(&mut run(&[
        "backup", "schedule", "--once", "alpha", "--store", &store,
    ]));
    assert!(
        common::stderr(&out).contains("--kind namespace"),
        "{}",
        common::stderr(&out)
    );
    let out = common::run_fail(&mut run(&[
        "backup",
        "schedule",
        "--once",
        "--kind",
        "namespace",
        "--kubeconfig",
        &kubeconfig,
        "--store",
        &store,
    ]));
    assert!(
        common::stderr(&out).contains("at least one namespace"),
        "{}",
        common::stderr(&out)
    );
}
