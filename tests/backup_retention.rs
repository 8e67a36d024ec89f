//! Retention over 60 simulated days with an injected clock, on a real directory store:
//! a backup every 6 hours, pruned after each, with corrupt backups found by `verify`.

use std::collections::BTreeSet;
use std::sync::Arc;

use clusterkit_backup::catalog;
use clusterkit_backup::chrono::{DateTime, Duration, Utc};
use clusterkit_backup::clock::{Clock, ManualClock};
use clusterkit_backup::crypto::{Decrypt, Encrypt};
use clusterkit_backup::manifest::{self, Kind};
use clusterkit_backup::pipeline::WriteSettings;
use clusterkit_backup::retention::{self, Retention};
use clusterkit_backup::store::{open_store, Store, StoreOptions};

fn settings() -> WriteSettings {
    WriteSettings {
        compression_level: 3,
        encrypt: Encrypt::None,
        etcd_integrity: false,
    }
}

async fn take(store: &dyn Store, clock: &ManualClock) -> String {
    let now = clock.now();
    let id = manifest::new_id(Kind::Etcd, now);
    let staged = catalog::stage_bytes(
        store,
        Kind::Etcd,
        &id,
        now,
        format!("payload {now}").into_bytes(),
        settings(),
    )
    .await
    .unwrap();
    catalog::commit(store, staged, "sim", now, None, Default::default())
        .await
        .unwrap();
    id
}

/// Flips a byte of the stored data and lets `verify` find it.
async fn corrupt_and_verify(
    store: &dyn Store,
    root: &std::path::Path,
    id: &str,
    now: DateTime<Utc>,
) {
    let data = root.join("backups").join(id).join("data");
    let mut b = std::fs::read(&data).unwrap();
    b[0] ^= 0xff;
    std::fs::write(&data, b).unwrap();
    let err = catalog::verify(store, id, &Decrypt::default(), now)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[tokio::test]
async fn sixty_days_every_six_hours_keeps_exactly_the_expected_set() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().display());
    let store: Arc<dyn Store> = open_store(&url, &StoreOptions::default()).await.unwrap();
    // 2024-01-01 is a Monday: ISO week 1 starts that day. 2024 is a leap year.
    let clock = ManualClock::new(at("2024-01-01T00:00:00Z"));
    let policy = Retention {
        keep_last: 2,
        daily: 7,
        weekly: 4,
        ..Default::default()
    };
    let mut times = std::collections::BTreeMap::new();
    for step in 0..(60 * 4) {
        let id = take(store.as_ref(), &clock).await;
        times.insert(id.clone(), clock.now());
        // The last day's 06:00, 12:00 and 18:00 backups turn out corrupt.
        if clock.now() >= at("2024-02-29T06:00:00Z") {
            corrupt_and_verify(store.as_ref(), tmp.path(), &id, clock.now()).await;
        }
        let plan = retention::prune(store.clone(), &policy, false, Arc::new(clock.clone()))
            .await
            .unwrap();
        // The newest trusted backup survives every single prune.
        let entries = catalog::list(store.as_ref()).await.unwrap();
        let newest_trusted = entries
            .iter()
            .rev()
            .find(|e| e.trusted())
            .expect("a trusted backup");
        assert!(
            plan.keep.contains_key(&newest_trusted.manifest.id),
            "step {step}"
        );
        if step < 60 * 4 - 1 {
            clock.advance(Duration::hours(6));
        }
    }
    assert_eq!(clock.now(), at("2024-02-29T18:00:00Z"));

    let survivors: BTreeSet<DateTime<Utc>> = catalog::list(store.as_ref())
        .await
        .unwrap()
        .iter()
        .map(|e| e.manifest.finished_at)
        .collect();
    let expected: BTreeSet<DateTime<Utc>> = [
        // weekly: newest of ISO weeks 6 and 7 (weeks 8 and 9 are covered below)
        "2024-02-11T18:00:00Z",
        "2024-02-18T18:00:00Z",
        // daily: newest of each of the last 7 days (Feb 25 is also week 8's newest)
        "2024-02-23T18:00:00Z",
        "2024-02-24T18:00:00Z",
        "2024-02-25T18:00:00Z",
        "2024-02-26T18:00:00Z",
        "2024-02-27T18:00:00Z",
        "2024-02-28T18:00:00Z",
        // newest verified: the three later backups of Feb 29 are corrupt
        "2024-02-29T00:00:00Z",
        // keep_last 2 (18:00 is also Feb 29's daily and week 9's weekly), corrupt or not
        "2024-02-29T12:00:00Z",
        "2024-02-29T18:00:00Z",
    ]
    .iter()
    .map(|s| at(s))
    .collect();
    assert_eq!(survivors, expected);
    // Nothing but the survivors' objects is left in the store.
    let objects = store.list("backups/").await.unwrap();
    let dirs: BTreeSet<String> = objects
        .iter()
        .map(|o| o.key.split('/').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(dirs.len(), expected.len());
    assert!(times.len() == 240);
}

#[tokio::test]
async fn dry_run_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().display());
    let store = open_store(&url, &StoreOptions::default()).await.unwrap();
    let clock = ManualClock::new(at("2024-05-01T00:00:00Z"));
    for _ in 0..5 {
        take(store.as_ref(), &clock).await;
        clock.advance(Duration::hours(1));
    }
    let policy = Retention {
        keep_last: 1,
        ..Default::default()
    };
    let plan = retention::prune(store.clone(), &policy, true, Arc::new(clock.clone()))
        .await
        .unwrap();
    assert_eq!(plan.delete.len(), 4);
    assert_eq!(catalog::list(store.as_ref()).await.unwrap().len(), 5);
}
