//! The schedule lock: two schedulers at once → one runs, the other skips; a crashed holder's
//! lock expires. Real etcd, real S3 server (s3s-fs), the library's own scheduler.

mod backup_util;
mod common;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use backup_util::*;
use clusterkit_backup::chrono::{Duration, Utc};
use clusterkit_backup::clock::{Clock, ManualClock, SystemClock};
use clusterkit_backup::etcd::{EtcdBackupOptions, EtcdTarget, EtcdTls};
use clusterkit_backup::lock;
use clusterkit_backup::manifest::Kind;
use clusterkit_backup::pipeline::WriteSettings;
use clusterkit_backup::retention::Retention;
use clusterkit_backup::schedule::{self, Job};
use clusterkit_backup::status::{self, Outcome};
use clusterkit_backup::store::{open_store, S3Options, Store, StoreOptions};

async fn s3_store(s3: &S3, prefix: &str) -> Arc<dyn Store> {
    let opts = StoreOptions {
        s3: S3Options {
            endpoint: Some(format!("http://127.0.0.1:{}", s3.port)),
            region: Some("us-east-1".into()),
            access_key_id: Some(ACCESS_KEY.into()),
            secret_access_key: Some(SECRET_KEY.into()),
            ..Default::default()
        },
        part_size: None,
    };
    open_store(&s3.url(prefix), &opts).await.unwrap()
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
            target: EtcdTarget {
                endpoints: vec![etcd.client_url.clone()],
                tls: Some(EtcdTls {
                    ca: certs.ca.clone(),
                    cert: certs.client_cert.clone(),
                    key: certs.client_key.clone(),
                }),
                timeout: StdDuration::from_secs(10),
            },
            backup: EtcdBackupOptions {
                cluster: "t".into(),
                write: WriteSettings {
                    compression_level: 3,
                    encrypt: Default::default(),
                    etcd_integrity: true,
                },
                lock_ttl: Duration::minutes(2),
            },
            retention: Retention {
                keep_last: 5,
                ..Default::default()
            },
            clock: Arc::new(SystemClock),
            metrics,
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
