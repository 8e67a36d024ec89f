//! Two `clusterkit backup etcd` processes started together on one store, 50 rounds on a
//! `file://` store and 50 on S3 (the s3s-fs server): in every round at least one backup
//! succeeds, and a backup that fails does so with the lock's "is held by" message — never
//! with an error from a listing that raced with the winner releasing its lock or cleaning up.
//! Real etcd 3.4 (TLS), the real binary.

mod backup_util;
mod common;

use std::path::Path;
use std::process::{Command, Output};

use backup_util::*;

const ROUNDS: usize = 50;

/// Starts both commands, then waits for both.
fn race(mut a: Command, mut b: Command) -> (Output, Output) {
    let a = a.spawn().expect("spawn first backup");
    let b = b.spawn().expect("spawn second backup");
    (
        a.wait_with_output().expect("first backup"),
        b.wait_with_output().expect("second backup"),
    )
}

fn backup_cmd(dir: &Path, store: &str, etcd: &Etcd, certs: &Certs, s3: Option<&S3>) -> Command {
    let mut c = ck_s3(dir, s3, &["backup", "etcd", "-o", "json", "--store", store]);
    c.args(etcd.backup_flags(certs));
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

/// Runs the rounds; returns how many rounds had a loser.
fn rounds(dir: &Path, store: &str, etcd: &Etcd, certs: &Certs, s3: Option<&S3>) -> usize {
    let mut contended = 0;
    for round in 0..ROUNDS {
        let (a, b) = race(
            backup_cmd(dir, store, etcd, certs, s3),
            backup_cmd(dir, store, etcd, certs, s3),
        );
        let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
        assert!(
            ok >= 1,
            "{store} round {round}: both failed:\n{}\n{}",
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        );
        for o in [&a, &b].into_iter().filter(|o| !o.status.success()) {
            contended += 1;
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("lock backup in") && err.contains("is held by"),
                "{store} round {round}: the loser did not get the lock message:\n{err}"
            );
        }
    }
    contended
}

#[test]
fn two_backups_at_once_one_wins_the_other_is_told_who_holds_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = Certs::generate(&dir.join("pki"));
    let etcd = Etcd::start(dir, &certs);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = client(&etcd, &certs).await;
        fill(&mut c, 200, |i| format!("v{i}").into_bytes()).await;
    });

    let file_store = format!("file://{}", dir.join("store").display());
    let on_file = rounds(dir, &file_store, &etcd, &certs, None);

    let s3 = S3::start(dir, "ck-contended");
    let on_s3 = rounds(dir, &s3.url("c"), &etcd, &certs, Some(&s3));

    // Two processes started together do overlap on this machine; a run where they never did
    // would prove nothing about the race.
    eprintln!("losers: {on_file} of {ROUNDS} rounds on file://, {on_s3} on S3");
    assert!(
        on_file > 0 && on_s3 > 0,
        "no round was contended (file:// {on_file}, S3 {on_s3})"
    );
    // Every winner's backup is complete and listed; no lock is left behind.
    for (store, s3) in [
        (file_store.as_str(), None),
        (s3.url("c").as_str(), Some(&s3)),
    ] {
        let ids = list_ids(dir, store, s3);
        assert!(ids.len() >= ROUNDS, "{store}: {} backups listed", ids.len());
    }
    assert!(
        !dir.join("store/locks/backup").exists()
            || std::fs::read_dir(dir.join("store/locks/backup"))
                .unwrap()
                .next()
                .is_none(),
        "a lock was left in the file:// store"
    );
}
