//! `clusterkit backup drill` with the real binary against a real TLS etcd 3.4 and a real S3
//! server (s3s-fs): the marker and key count a backup records, a drill whose verdict is ok and
//! whose figures equal what the test counted itself, a drill while the cluster is written to
//! (the live cluster moves only by the test's own writes), a flipped byte and an edited key
//! count that fail naming what differed, and retention keeping the newest passed-drill backup.
//! With `--kubeconfig`, an etcd drill reports how far a real API server's cluster moved since
//! the backup. (The 3-member sandbox cluster and `--on HOST` are in tests/restore_cluster.rs.)

mod backup_util;
mod common;
mod kube_harness;

use std::path::Path;
use std::process::Command;

use backup_util::*;
use common::{describe, run_fail, run_ok, stderr, stdout};
use serde_json::Value;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

fn value(i: usize) -> Vec<u8> {
    format!("drill-{i}-{}", "y".repeat(i % 40)).into_bytes()
}

/// `etcdctl get "" --from-key --limit 1 -w json`: (key count, revision) as etcd reports them
/// (the count is of the whole range, whatever the limit).
fn count_with_etcdctl(etcd: &Etcd, certs: &Certs) -> (i64, i64) {
    let out = run_ok(
        Command::new(etcdctl_bin())
            .env("ETCDCTL_API", "3")
            .args(etcd.ctl_args(certs))
            .args(["get", "", "--from-key", "--limit", "1", "-w", "json"]),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["count"].as_i64().unwrap_or(0),
        v["header"]["revision"].as_i64().unwrap(),
    )
}

/// `backup drill` with the etcd tools of this machine.
fn drill_cmd(dir: &Path, store: &str, s3: Option<&S3>, args: &[&str]) -> Command {
    let mut c = ck_s3(
        dir,
        s3,
        &["-o", "json", "backup", "drill", "--store", store],
    );
    c.args(["--etcd", &etcd_bin().display().to_string()])
        .args(["--etcdctl", &etcdctl_bin().display().to_string()])
        .args(["--work-dir", &dir.join("drills").display().to_string()])
        .args(args);
    c
}

fn json(out: &std::process::Output, c: &Command) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(c, out, "want JSON on stdout")))
}

fn check<'a>(rec: &'a Value, name: &str) -> &'a Value {
    rec["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name}: {rec:#}"))
}

fn list(dir: &Path, store: &str, s3: Option<&S3>) -> Value {
    let mut c = ck_s3(dir, s3, &["backup", "list", "-o", "json", "--store", store]);
    serde_json::from_slice(&run_ok(&mut c).stdout).unwrap()
}

#[test]
fn drill_latest_matches_what_etcd_counted_and_leaves_the_live_cluster_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = Certs::generate(&dir.join("pki"));
    let etcd = Etcd::start(dir, &certs);
    let s3 = S3::start(dir, "ck-drills");
    let rt = rt();
    rt.block_on(async {
        let mut c = client(&etcd, &certs).await;
        fill(&mut c, 2_000, value).await;
        c.delete("key-000007", None).await.unwrap();
    });
    let store = s3.url("drills");
    let id = backup(dir, &store, &etcd, &certs, Some(&s3), &[]);
    // Counted by the test with etcdctl right after the backup, nothing written since.
    let (count, revision) = count_with_etcdctl(&etcd, &certs);
    assert_eq!(count, 2_000, "1999 keys and the marker");

    let mut c = ck_s3(
        dir,
        Some(&s3),
        &["backup", "describe", &id, "-o", "json", "--store", &store],
    );
    let m: Value = serde_json::from_slice(&run_ok(&mut c).stdout).unwrap();
    assert_eq!(m["etcd"]["key_count"], count, "{m:#}");
    assert_eq!(m["etcd"]["revision"], revision, "{m:#}");
    assert_eq!(m["etcd"]["revision_after"], revision, "{m:#}");
    assert_eq!(m["etcd"]["marker"]["key"], "/clusterkit/backup-marker");
    assert_eq!(m["etcd"]["marker"]["id"], id.as_str());
    assert_eq!(m["etcd"]["marker"]["revision"], revision);
    // The marker is in the live cluster too, holding this backup's id.
    let out = run_ok(
        Command::new(etcdctl_bin())
            .env("ETCDCTL_API", "3")
            .args(etcd.ctl_args(&certs))
            .args(["get", "/clusterkit/backup-marker", "--print-value-only"]),
    );
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));

    let members_before = run_ok(
        Command::new(etcdctl_bin())
            .env("ETCDCTL_API", "3")
            .args(etcd.ctl_args(&certs))
            .args(["member", "list"]),
    );
    // The drill runs while the test writes to the live cluster.
    let mut c = drill_cmd(dir, &store, Some(&s3), &["--latest"]);
    let child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let writes = rt.block_on(async {
        let mut cl = client(&etcd, &certs).await;
        let mut n = 0i64;
        let child = std::sync::Arc::new(std::sync::Mutex::new(child));
        loop {
            if child.lock().unwrap().try_wait().unwrap().is_some() {
                break;
            }
            cl.put(format!("live-{n}"), "during the drill", None)
                .await
                .unwrap();
            n += 1;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let out = std::sync::Arc::try_unwrap(child)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
            .wait_with_output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            describe(&c, &out, "drill --latest should pass")
        );
        let rec: Value = json(&out, &c);
        assert_eq!(rec["ok"], true, "{rec:#}");
        assert_eq!(rec["verdict"], "ok", "{rec:#}");
        assert_eq!(rec["id"], id.as_str(), "{rec:#}");
        assert_eq!(rec["figures"]["key_count"], count, "{rec:#}");
        assert_eq!(rec["figures"]["revision"], revision, "{rec:#}");
        for name in ["integrity", "starts", "revision", "key_count", "marker"] {
            assert_eq!(check(&rec, name)["ok"], true, "{name}: {rec:#}");
        }
        assert!(rec["restore_seconds"].as_f64().unwrap() > 0.0, "{rec:#}");
        n
    });
    assert!(writes > 0, "the test wrote nothing while the drill ran");
    // The live cluster moved by exactly the test's writes, and is still the same one member.
    let (live_count, live_revision) = count_with_etcdctl(&etcd, &certs);
    assert_eq!(live_revision, revision + writes);
    assert_eq!(live_count, count + writes);
    let members_after = run_ok(
        Command::new(etcdctl_bin())
            .env("ETCDCTL_API", "3")
            .args(etcd.ctl_args(&certs))
            .args(["member", "list"]),
    );
    assert_eq!(stdout(&members_before), stdout(&members_after));
    // Nothing of the drill is left on this machine.
    let left: Vec<_> = std::fs::read_dir(dir.join("drills")).unwrap().collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");

    // `backup list` shows the last drill, recorded next to the backup.
    let l = list(dir, &store, Some(&s3));
    let e = &l.as_array().unwrap()[0];
    assert_eq!(e["last_drill"]["ok"], true, "{l:#}");
    assert!(
        s3.files()
            .iter()
            .any(|f| f.ends_with(&format!("{id}/drill.json"))),
        "{:?}",
        s3.files()
    );
    let mut c = ck_s3(dir, Some(&s3), &["backup", "list", "--store", &store]);
    let table = stdout(&run_ok(&mut c));
    assert!(
        table.contains("DRILL") && table.contains("ok 20"),
        "{table}"
    );
}

#[test]
fn flipped_byte_and_edited_key_count_fail_naming_what_differed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = Certs::generate(&dir.join("pki"));
    let etcd = Etcd::start(dir, &certs);
    let s3 = S3::start(dir, "ck-drills");
    rt().block_on(async {
        let mut c = client(&etcd, &certs).await;
        fill(&mut c, 300, value).await;
    });
    let store = s3.url("bad");
    let flipped = backup(dir, &store, &etcd, &certs, Some(&s3), &[]);
    let edited = backup(dir, &store, &etcd, &certs, Some(&s3), &[]);

    // One byte of the stored object flipped in the S3 server's files.
    let data = s3
        .root
        .join(&s3.bucket)
        .join(format!("bad/backups/{flipped}/data"));
    let mut bytes = std::fs::read(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&data, bytes).unwrap();
    let mut c = drill_cmd(dir, &store, Some(&s3), &[&flipped]);
    let out = run_fail(&mut c);
    let rec = json(&out, &c);
    assert_eq!(rec["ok"], false, "{rec:#}");
    let integrity = check(&rec, "integrity");
    assert_eq!(integrity["ok"], false);
    assert!(
        integrity["found"]
            .as_str()
            .unwrap()
            .contains("integrity check failed"),
        "{rec:#}"
    );
    assert!(
        stderr(&out).contains("integrity check failed"),
        "{}",
        describe(&c, &out, "the error names the integrity check")
    );

    // The manifest's key count edited: the drill names the count.
    let mpath = s3
        .root
        .join(&s3.bucket)
        .join(format!("bad/backups/{edited}/manifest.json"));
    let mut m: Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    let real = m["etcd"]["key_count"].as_i64().unwrap();
    m["etcd"]["key_count"] = Value::from(real + 1);
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let mut c = drill_cmd(dir, &store, Some(&s3), &[&edited]);
    let out = run_fail(&mut c);
    let rec = json(&out, &c);
    let kc = check(&rec, "key_count");
    assert_eq!(kc["ok"], false, "{rec:#}");
    assert_eq!(kc["found"], real.to_string(), "{rec:#}");
    assert!(
        kc["expected"]
            .as_str()
            .unwrap()
            .starts_with(&(real + 1).to_string()),
        "{rec:#}"
    );
    assert_eq!(
        check(&rec, "marker")["ok"],
        true,
        "only the count differs: {rec:#}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("key_count: expected"),
        "{}",
        describe(&c, &out, "the error names the key count")
    );
    // Both verdicts are recorded, and `list` shows them.
    let l = list(dir, &store, Some(&s3));
    for e in l.as_array().unwrap() {
        assert_eq!(e["last_drill"]["ok"], false, "{l:#}");
    }
}

/// A TLS etcd in `dir` with `keys` keys, and a `file://` store next to it.
fn filled_etcd_and_dir_store(dir: &Path, keys: usize) -> (Certs, Etcd, String) {
    let certs = Certs::generate(&dir.join("pki"));
    let etcd = Etcd::start(dir, &certs);
    rt().block_on(async {
        let mut c = client(&etcd, &certs).await;
        fill(&mut c, keys, value).await;
    });
    let store = format!("file://{}", dir.join("store").display());
    (certs, etcd, store)
}

#[test]
fn retention_keeps_the_newest_backup_whose_drill_passed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (certs, etcd, store) = filled_etcd_and_dir_store(dir, 100);
    let a = backup(dir, &store, &etcd, &certs, None, &[]);
    let mut c = drill_cmd(dir, &store, None, &[&a]);
    run_ok(&mut c);
    let b = backup(dir, &store, &etcd, &certs, None, &[]);
    let newest = backup(dir, &store, &etcd, &certs, None, &[]);
    // keep-last 1 alone would remove a and b; a is the newest backup proven to restore.
    let mut c = ck(dir);
    c.args([
        "-o",
        "json",
        "backup",
        "prune",
        "--keep-last",
        "1",
        "--store",
        &store,
    ]);
    let plan: Value = serde_json::from_slice(&run_ok(&mut c).stdout).unwrap();
    assert_eq!(plan["delete"], serde_json::json!([b]), "{plan:#}");
    assert_eq!(
        plan["keep"][&a],
        serde_json::json!(["newest-drilled"]),
        "{plan:#}"
    );
    assert_eq!(list_ids(dir, &store, None), vec![a.clone(), newest.clone()]);
    // Once the newest passes its drill too, the older one is no longer protected.
    run_ok(&mut drill_cmd(dir, &store, None, &[&newest]));
    let mut c = ck(dir);
    c.args(["backup", "prune", "--keep-last", "1", "--store", &store]);
    run_ok(&mut c);
    assert_eq!(list_ids(dir, &store, None), vec![newest]);
}

#[test]
fn schedule_once_with_drill_drills_each_new_backup_before_pruning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (certs, etcd, store) = filled_etcd_and_dir_store(dir, 50);
    let run = || -> Value {
        let mut c = ck(dir);
        c.args([
            "backup",
            "schedule",
            "--once",
            "--drill",
            "--keep-last",
            "1",
        ])
        .args(["--once-window-secs", "0", "--store", &store])
        .args(etcd.backup_flags(&certs))
        .args(["--etcd", &etcd_bin().display().to_string()])
        .args(["--etcdctl", &etcdctl_bin().display().to_string()]);
        let out = run_ok(&mut c);
        let line = stdout(&out);
        serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "want one JSON line")))
    };
    let first = run();
    assert_eq!(first["outcome"], "success", "{first:#}");
    assert_eq!(first["drill"]["ok"], true, "{first:#}");
    let second = run();
    assert_eq!(second["drill"]["ok"], true, "{second:#}");
    // The first backup was pruned only because the second one's drill passed before the prune.
    assert_eq!(
        second["pruned"],
        serde_json::json!([first["id"]]),
        "{second:#}"
    );
    let l = list(dir, &store, None);
    let only = &l.as_array().unwrap()[..];
    assert_eq!(only.len(), 1, "{l:#}");
    assert_eq!(only[0]["id"], second["id"]);
    assert_eq!(only[0]["last_drill"]["ok"], true, "{l:#}");
}

/// `--kubeconfig` on an etcd drill: the drill reads the live cluster's revision through its API
/// server (read only) and reports how many revisions it moved since the backup, which the test
/// knows a floor of from its own writes.
#[test]
fn drill_with_kubeconfig_reports_how_far_the_live_cluster_moved() {
    let cluster = kube_harness::KubeCluster::start();
    let rt = rt();
    let client = rt.block_on(cluster.client());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = format!("file://{}", dir.join("store").display());
    let (ca, cert, key) = &cluster.etcd_tls;
    let path = |p: &Path| p.display().to_string();
    let mut c = ck(dir);
    c.args(["-o", "json", "backup", "etcd", "--store", &store])
        .args(["--endpoints", &cluster.etcd_url])
        .args([
            "--cacert",
            &path(ca),
            "--cert",
            &path(cert),
            "--key",
            &path(key),
        ]);
    let out = run_ok(&mut c);
    let manifest = json(&out, &c);
    let id = manifest["id"].as_str().unwrap().to_string();

    // Five writes after the backup: the live cluster is at least five revisions ahead.
    const WRITES: i64 = 5;
    let mut last_written = 0i64;
    for i in 0..WRITES {
        let name = format!("after-backup-{i}");
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"},
            "data": {"i": i.to_string()},
        });
        let applied = rt
            .block_on(client.apply("/api/v1/namespaces/default/configmaps", &name, &cm, false))
            .unwrap();
        last_written = applied.object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("resourceVersion of the write");
    }

    let kubeconfig = path(&cluster.kubeconfig);
    let mut c = drill_cmd(dir, &store, None, &[&id, "--kubeconfig", &kubeconfig]);
    let out = run_ok(&mut c);
    let rec = json(&out, &c);
    let show = || describe(&c, &out, "drill record");
    assert_eq!(rec["ok"], true, "{}", show());
    let figure = |name: &str| {
        rec["figures"][name]
            .as_i64()
            .unwrap_or_else(|| panic!("no figure {name}\n{}", show()))
    };
    let (restored, live, behind) = (
        figure("revision"),
        figure("live_revision"),
        figure("revisions_behind_live"),
    );
    assert!(
        live >= last_written,
        "live {live} < the test's last write {last_written}"
    );
    assert!(
        restored < last_written,
        "the backup {restored} already holds the later writes"
    );
    assert_eq!(behind, live - restored, "{}", show());
    assert!(
        behind >= WRITES,
        "{behind} revisions behind, the test wrote {WRITES}"
    );
    // Read only: the live cluster still has every object the test wrote.
    for i in 0..WRITES {
        let name = format!("after-backup-{i}");
        assert!(rt
            .block_on(client.get("/api/v1/namespaces/default/configmaps", &name))
            .unwrap()
            .is_some());
    }
}
