//! etcd backup and restore end to end with the real binary, a real TLS etcd 3.4 and a real
//! S3 server (s3s-fs): round trips to S3 and to a directory, encryption, corruption, and an
//! S3 server killed mid-upload.

mod backup_util;
mod common;

use std::path::Path;
use std::time::Duration;

use backup_util::*;
use common::{run_fail, run_ok, stderr};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(i % 50)).into_bytes()
}

/// Stops etcd, moves its data away (the "wipe"), restores `id` from `store`, starts etcd.
fn wipe_and_restore(
    dir: &Path,
    etcd: &mut Etcd,
    certs: &Certs,
    store: &str,
    s3: Option<&S3>,
    extra: &[&str],
) {
    etcd.stop();
    std::fs::remove_dir_all(&etcd.data_dir).unwrap();
    let id = extra[0];
    let mut c = ck_s3(dir, s3, &["restore", "etcd", id, "--store", store]);
    c.args(etcd.restore_flags());
    c.args(&extra[1..]);
    run_ok(&mut c);
    etcd.boot(certs);
}

#[test]
fn backup_to_s3_and_dir_wipe_restore_all_equal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = Certs::generate(&dir.join("pki"));
    let mut etcd = Etcd::start(dir, &certs);
    let s3 = S3::start(dir, "ck-backups");
    let rt = rt();
    let expected = rt.block_on(async {
        let mut c = client(&etcd, &certs).await;
        fill(&mut c, 10_000, value).await;
        dump(&mut c).await
    });
    assert_eq!(expected.len(), 10_000);

    let s3_store = s3.url("cluster-a");
    let dir_store = format!("file://{}", dir.join("store").display());
    let s3_id = backup(dir, &s3_store, &etcd, &certs, Some(&s3), &[]);
    let dir_id = backup(dir, &dir_store, &etcd, &certs, None, &[]);
    assert_eq!(list_ids(dir, &s3_store, Some(&s3)), vec![s3_id.clone()]);
    assert_eq!(list_ids(dir, &dir_store, None), vec![dir_id.clone()]);

    // The manifest says what an operator needs.
    let mut c = ck_s3(
        dir,
        Some(&s3),
        &[
            "backup", "describe", &s3_id, "-o", "json", "--store", &s3_store,
        ],
    );
    let m: serde_json::Value = serde_json::from_slice(&run_ok(&mut c).stdout).unwrap();
    assert_eq!(m["kind"], "etcd");
    assert!(m["etcd"]["revision"].as_i64().unwrap() >= 100);
    assert_eq!(m["encryption"]["method"], "none");
    assert!(m["raw_size"].as_u64().unwrap() > m["stored_size"].as_u64().unwrap());

    let mut c = ck_s3(
        dir,
        Some(&s3),
        &["backup", "verify", &s3_id, "--store", &s3_store],
    );
    run_ok(&mut c);

    // Change data after the backup: the restore must bring back the snapshot's state.
    rt.block_on(async {
        let mut c = client(&etcd, &certs).await;
        c.put("key-000001", "changed", None).await.unwrap();
    });

    wipe_and_restore(dir, &mut etcd, &certs, &s3_store, Some(&s3), &[&s3_id]);
    let got = rt.block_on(async { dump(&mut client(&etcd, &certs).await).await });
    assert!(got == expected, "restore from S3 differs");

    wipe_and_restore(dir, &mut etcd, &certs, &dir_store, None, &[&dir_id]);
    let got = rt.block_on(async { dump(&mut client(&etcd, &certs).await).await });
    assert!(got == expected, "restore from the directory store differs");
}

#[test]
fn encrypted_backup_hides_plaintext_restores_and_rejects_wrong_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = Certs::generate(&dir.join("pki"));
    let mut etcd = Etcd::start(dir, &certs);
    let marker = "PLAINTEXT-MARKER-7d1f0c5e9a-do-not-leak";
    let rt = rt();
    let expected = rt.block_on(async {
        let mut c = client(&etcd, &certs).await;
        fill(&mut c, 500, value).await;
        c.put("key-secret", marker, None).await.unwrap();
        dump(&mut c).await
    });

    let gen = |name: &str| {
        let path = dir.join(name);
        let out = run_ok(ck(dir).args(["backup", "keygen", "--out"]).arg(&path));
        (
            path,
            String::from_utf8(out.stdout).unwrap().trim().to_string(),
        )
    };
    let (identity, recipient) = gen("id.age");
    let (wrong_identity, _) = gen("wrong.age");
    assert!(recipient.starts_with("age1"));

    let store_dir = dir.join("store");
    let store = format!("file://{}", store_dir.display());
    let id = backup(
        dir,
        &store,
        &etcd,
        &certs,
        None,
        &["--age-recipient", &recipient],
    );

    // Sanity of the check below: the plain snapshot does contain the marker.
    let plain = dir.join("plain.db");
    run_ok(
        std::process::Command::new(etcdctl_bin())
            .args(etcd.ctl_args(&certs))
            .args(["snapshot", "save"])
            .arg(&plain),
    );
    let contains = |hay: &[u8]| hay.windows(marker.len()).any(|w| w == marker.as_bytes());
    assert!(contains(&std::fs::read(&plain).unwrap()));
    let stored = std::fs::read(store_dir.join("backups").join(&id).join("data")).unwrap();
    assert!(!contains(&stored), "the stored object leaks the plaintext");
    assert!(stored.starts_with(b"age-encryption.org/v1"));

    // Wrong key: clear error, data dir untouched.
    etcd.stop();
    let before = std::fs::read(etcd.data_dir.join("member/snap/db")).unwrap();
    let mut c = ck(dir);
    c.args(["restore", "etcd", &id, "--store", &store, "--age-identity"])
        .arg(&wrong_identity)
        .args(etcd.restore_flags());
    let err = stderr(&run_fail(&mut c));
    assert!(err.contains("none of the given keys matches"), "{err}");
    assert!(!err.contains("AGE-SECRET-KEY"), "{err}");
    assert_eq!(
        std::fs::read(etcd.data_dir.join("member/snap/db")).unwrap(),
        before
    );

    // No key at all: says it is encrypted.
    let mut c = ck(dir);
    c.args(["backup", "verify", &id, "--store", &store]);
    let err = stderr(&run_fail(&mut c));
    assert!(err.contains("encrypted"), "{err}");

    // Right key: restores.
    etcd.boot(&certs);
    let identity_s = identity.display().to_string();
    wipe_and_restore(
        dir,
        &mut etcd,
        &certs,
        &store,
        None,
        &[&id, "--age-identity", &identity_s],
    );
    let got = rt.block_on(async { dump(&mut client(&etcd, &certs).await).await });
    assert!(got == expected, "encrypted restore differs");
}

#[test]
fn corrupt_byte_is_refused_by_verify_and_restore_before_touching_etcd() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = Certs::generate(&dir.join("pki"));
    let mut etcd = Etcd::start(dir, &certs);
    let rt = rt();
    rt.block_on(async {
        let mut c = client(&etcd, &certs).await;
        fill(&mut c, 2000, value).await;
    });
    let store_dir = dir.join("store");
    let store = format!("file://{}", store_dir.display());
    let id = backup(dir, &store, &etcd, &certs, None, &[]);
    run_ok(ck(dir).args(["backup", "verify", &id, "--store", &store]));

    let data = store_dir.join("backups").join(&id).join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();

    let err = stderr(&run_fail(
        ck(dir).args(["backup", "verify", &id, "--store", &store]),
    ));
    assert!(err.contains("corrupt"), "{err}");
    // The failed verdict is recorded and shown.
    let out = run_ok(ck(dir).args(["backup", "list", "--store", &store]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAILED"));

    etcd.stop();
    let entries_before = std::fs::read_dir(dir).unwrap().count();
    let db_before = std::fs::read(etcd.data_dir.join("member/snap/db")).unwrap();
    let mut c = ck(dir);
    c.args(["restore", "etcd", &id, "--store", &store])
        .args(etcd.restore_flags());
    let err = stderr(&run_fail(&mut c));
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(
        std::fs::read(etcd.data_dir.join("member/snap/db")).unwrap(),
        db_before
    );
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        entries_before,
        "restore left files behind"
    );
}

#[test]
fn s3_killed_mid_upload_fails_cleanly_and_next_run_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = Certs::generate(&dir.join("pki"));
    let etcd = Etcd::start(dir, &certs);
    let mut s3 = S3::start(dir, "ck-backups");
    let rt = rt();
    // ~120 MiB of incompressible values, so the upload takes many 5 MiB parts.
    rt.block_on(async {
        let mut c = client(&etcd, &certs).await;
        for start in (0..1200).step_by(10) {
            let ops: Vec<_> = (start..start + 10)
                .map(|i| {
                    let v: Vec<u8> = (0..100_000u32)
                        .map(|j| {
                            ((j.wrapping_mul(2654435761) ^ (i as u32).wrapping_mul(40503)) >> 13)
                                as u8
                        })
                        .collect();
                    etcd_client::TxnOp::put(format!("big-{i:05}"), v, None)
                })
                .collect();
            c.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
        }
    });
    let store = s3.url("p");
    let mut c = ck(dir);
    c.args([
        "backup",
        "etcd",
        "--store",
        &store,
        "--part-size-mib",
        "5",
        "--parts-in-flight",
        "1",
        "--compression-level",
        "1",
    ])
    .args(etcd.backup_flags(&certs))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    s3.env(&mut c);
    let mut child = c.spawn().unwrap();
    // Kill the server as soon as the multipart upload has started (its pending marker is
    // written right after CreateMultipartUpload, before the first part).
    let start = std::time::Instant::now();
    let mut saw_part = false;
    while start.elapsed() < Duration::from_secs(60) {
        if s3.files().iter().any(|f| f.ends_with("pending.json")) {
            saw_part = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if !saw_part {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "the upload never started; files {:?}\nstderr:\n{}",
            s3.files(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    s3.kill();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "backup succeeded with the S3 server dead:\n{err}"
    );
    assert!(err.contains("etcd backup failed"), "{err}");
    assert!(
        err.contains("upload") || err.contains("dispatch") || err.contains("connect"),
        "{err}"
    );
    let files = s3.files();
    assert!(
        !files.iter().any(|f| f.ends_with("manifest.json")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with("pending.json")),
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.contains(".upload-")),
        "no multipart leftovers to clean? {files:?}"
    );

    // Server back: the next run succeeds and aborts the stale upload.
    s3.boot();
    let id = backup(
        dir,
        &store,
        &etcd,
        &certs,
        Some(&s3),
        &["--part-size-mib", "5"],
    );
    let files = s3.files();
    assert!(
        !files.iter().any(|f| f.contains(".upload")),
        "stale multipart upload left: {files:?}"
    );
    assert!(
        !files.iter().any(|f| f.ends_with("pending.json")),
        "{files:?}"
    );
    assert_eq!(list_ids(dir, &store, Some(&s3)), vec![id.clone()]);
    let backups: Vec<_> = files.iter().filter(|f| f.contains("/backups/")).collect();
    assert!(backups.iter().all(|f| f.contains(&id)), "{backups:?}");
    let mut c = ck_s3(
        dir,
        Some(&s3),
        &["backup", "verify", &id, "--store", &store],
    );
    run_ok(&mut c);
}
