//! `clusterkit backup etcd` and `clusterkit restore etcd ID` (the multi-member restore over SSH)
//! against a 3-member TLS etcd installed by the real `install --phase pki` and `--phase etcd` on
//! a 3-node sandbox (Debian 12 nspawn nodes, real sshd), with a file:// store.
//!
//! One sandbox is shared by the steps, in order:
//! 1. keys written; node3 powered off; `backup etcd` still succeeds from a healthy member
//!    (node1 or node2); node3 back, the cluster healthy again;
//!    then a backup to S3 (s3s-fs on loopback) and `backup drill --latest`: verdict ok, key count
//!    and revision equal what the test counted with etcdctl right after the backup, the marker
//!    found; the same backup drilled `--on node1` (node1's own etcd binary, its own ports and
//!    temporary directory): ok, and nothing left on node1 (no process, directory or unit), the
//!    cluster's members unchanged;
//! 2. more keys written after the backup (new keys, an overwrite, a delete);
//! 3. a restore whose member node3 cannot start etcd (a unit drop-in whose ExecStartPre fails,
//!    added for the test) fails naming node3 and rolls EVERY member back: old data dirs in
//!    place, nothing left aside or in scratch, the old member ids and the post-backup data
//!    back once node3's unit is repaired;
//! 4. the real restore: 3 started members with 3 distinct ids, none of the old ones, revision ≥
//!    the snapshot's, the data exactly as at the backup (later writes gone), and every node
//!    keeps its old data dir aside.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh), apt access for the bundle and
//! etcdctl (`CLUSTERKIT_ETCDCTL`, default /usr/bin/etcdctl); fails with the reason when one is
//! missing.

mod backup_util;
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{clusterkit, describe, run_fail, run_ok, ssh, stderr, stdout, NODES};
use serde_json::Value;

const PREFIX: &str = "/rstr/";

fn etcdctl_bin() -> PathBuf {
    common::tool("CLUSTERKIT_ETCDCTL", Path::new("/usr/bin/etcdctl"))
}

fn ck(cfg: &Path, args: &[&str]) -> Command {
    let mut c = clusterkit();
    c.env("CLUSTERKIT_ETCDCTL", etcdctl_bin())
        .arg("-f")
        .arg(cfg)
        .args(args);
    c
}

/// The etcd client of the test: the healthcheck client pair from the cluster's state dir.
struct Ctl {
    pki: PathBuf,
    all: String,
}

impl Ctl {
    fn cmd(&self, endpoints: &str, args: &[&str]) -> Command {
        let mut c = Command::new(etcdctl_bin());
        c.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--cacert={}", self.pki.join("ca.crt").display()))
            .arg(format!(
                "--cert={}",
                self.pki.join("healthcheck-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                self.pki.join("healthcheck-client.key").display()
            ))
            .args(["--dial-timeout=5s", "--command-timeout=15s"])
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        stdout(&run_ok(&mut self.cmd(&self.all, args)))
    }

    /// Every key under PREFIX with its value.
    fn data(&self, endpoints: &str) -> BTreeMap<String, String> {
        let out = stdout(&run_ok(
            &mut self.cmd(endpoints, &["get", PREFIX, "--prefix", "--consistency=l"]),
        ));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len() % 2, 0, "odd key/value output: {out}");
        lines
            .chunks(2)
            .map(|kv| (kv[0].to_string(), kv[1].to_string()))
            .collect()
    }

    /// name → member id (hex), of started members, from `member list`.
    fn members(&self, endpoints: &str) -> BTreeMap<String, String> {
        let out = stdout(&run_ok(&mut self.cmd(endpoints, &["member", "list"])));
        out.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(", ").collect();
                assert!(f.len() >= 3, "member list line {l:?}");
                (f[2].to_string(), f[0].to_string())
            })
            .collect()
    }

    /// Polls until every endpoint is healthy and the member list has 3 started members.
    fn wait_healthy(&self, what: &str) {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < Duration::from_secs(300) {
            let out = self
                .cmd(&self.all, &["endpoint", "health"])
                .output()
                .unwrap();
            let text = format!("{}{}", stdout(&out), stderr(&out));
            if out.status.success() && text.matches("is healthy").count() == 3 {
                let list = self.cmd(&self.all, &["member", "list"]).output().unwrap();
                let started = stdout(&list)
                    .lines()
                    .filter(|l| l.contains(", started, "))
                    .count();
                if list.status.success() && started == 3 {
                    return;
                }
                last = stdout(&list);
            } else {
                last = text;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        panic!("{what}: etcd not healthy with 3 started members after 300 s: {last}");
    }

    /// Highest revision any endpoint reports.
    fn revision(&self) -> i64 {
        let out = self.run(&["endpoint", "status", "-w", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["Status"]["header"]["revision"].as_i64().unwrap())
            .max()
            .unwrap()
    }
}

/// What is in /var/lib on a node around etcd's data dir.
fn etcd_dirs(sb: &SandboxGuard, node: &str) -> String {
    ssh(sb, node, "cd /var/lib && ls -d etcd* | sort")
}

#[test]
fn restore_three_members() {
    let t0 = Instant::now();
    let mut sb = SandboxGuard::up(UpOptions::new("rstr", 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    common::build_bundle(&bundle, None, &["--no-images", "--package", "etcd-server"]);
    let cfg = common::sandbox_config(&sb, "rstr.yaml", &bundle, "");
    for phase in ["pki", "etcd"] {
        run_ok(&mut ck(&cfg, &["install", "--phase", phase]));
    }
    let addrs: BTreeMap<&str, String> = NODES
        .iter()
        .map(|n| (*n, sb.node(n).unwrap().address.to_string()))
        .collect();
    let addr = |n: &str| addrs[n].clone();
    let ctl = Ctl {
        pki: sb.dir().join("rstr-state/pki/etcd"),
        all: NODES
            .iter()
            .map(|n| format!("https://{}:2379", addr(n)))
            .collect::<Vec<_>>()
            .join(","),
    };
    let two = format!(
        "https://{}:2379,https://{}:2379",
        addr("node1"),
        addr("node2")
    );
    ctl.wait_healthy("after install");
    let old_ids = ctl.members(&ctl.all);
    assert_eq!(old_ids.len(), 3, "{old_ids:?}");
    eprintln!("installed in {:?}", t0.elapsed());

    // 1. Keys; node3 powered off; the backup uses a healthy member.
    for i in 0..40 {
        ctl.run(&["put", &format!("{PREFIX}k{i:03}"), &format!("before-{i}")]);
    }
    let at_backup = ctl.data(&ctl.all);
    assert_eq!(at_backup.len(), 40);
    sb.stop_node("node3").unwrap();
    let store = format!("file://{}", work.path().join("store").display());
    let out = run_ok(&mut ck(
        &cfg,
        &["-o", "json", "backup", "etcd", "--store", &store],
    ));
    let m: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    let id = m["id"].as_str().unwrap().to_string();
    let from = m["etcd"]["member_name"].as_str().unwrap();
    assert!(
        from == "node1" || from == "node2",
        "backup from {from}: {m:#}"
    );
    assert_eq!(m["etcd"]["member_count"], 3, "{m:#}");
    let snap_rev = m["etcd"]["revision"].as_i64().unwrap();
    // The data did not change while node3 was away.
    assert_eq!(ctl.data(&two), at_backup);
    sb.start_node("node3").unwrap();
    ctl.wait_healthy("node3 back");
    run_ok(&mut ck(&cfg, &["backup", "verify", &id, "--store", &store]));
    eprintln!("backup with a member down done at {:?}", t0.elapsed());

    // 1b. A backup to S3 and its drills, here and on node1.
    let s3 = backup_util::S3::start(work.path(), "ck-rstr");
    let s3_store = s3.url("rstr");
    let mut c = ck(
        &cfg,
        &["-o", "json", "backup", "etcd", "--store", &s3_store],
    );
    s3.env(&mut c);
    let m: Value = serde_json::from_slice(&run_ok(&mut c).stdout).unwrap();
    let s3_id = m["id"].as_str().unwrap().to_string();
    let counted: Value =
        serde_json::from_str(&ctl.run(&["get", "", "--from-key", "--limit", "1", "-w", "json"]))
            .unwrap();
    let (count, rev) = (
        counted["count"].as_i64().unwrap(),
        counted["header"]["revision"].as_i64().unwrap(),
    );
    assert_eq!(m["etcd"]["key_count"], count, "{m:#}");
    assert_eq!(m["etcd"]["revision"], rev, "{m:#}");
    let drill = |extra: &[&str]| -> Value {
        let mut args = vec!["-o", "json", "backup", "drill", "--store", &s3_store];
        args.extend_from_slice(extra);
        let mut c = ck(&cfg, &args);
        c.env("CLUSTERKIT_ETCD", backup_util::etcd_bin());
        s3.env(&mut c);
        let out = run_ok(&mut c);
        let rec: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "want JSON")));
        assert_eq!(rec["ok"], true, "{rec:#}");
        assert_eq!(rec["id"], s3_id.as_str(), "{rec:#}");
        assert_eq!(rec["figures"]["key_count"], count, "{rec:#}");
        assert_eq!(rec["figures"]["revision"], rev, "{rec:#}");
        let marker = rec["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "marker")
            .unwrap_or_else(|| panic!("no marker check: {rec:#}"));
        assert_eq!(marker["ok"], true, "{rec:#}");
        rec
    };
    let local = drill(&["--latest"]);
    assert_eq!(local["host"], "local", "{local:#}");
    let on = drill(&[&s3_id, "--on", "node1"]);
    assert_eq!(on["host"], "node1", "{on:#}");
    assert!(
        on["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "ship"),
        "{on:#}"
    );
    // Every scratch etcd process, directory and unit (each line one thing left behind).
    let left = ssh(
        &sb,
        "node1",
        "ps -eo comm=,args= | awk '$1 == \"etcd\" && /--name clusterkit-drill/'; \
         ls -d /var/tmp/clusterkit-drill* 2>/dev/null; \
         systemctl list-units --all --no-legend 'clusterkit-drill*'; true",
    );
    assert!(
        left.trim().is_empty(),
        "left on node1 after the drill:\n{left}"
    );
    assert_eq!(
        ctl.members(&ctl.all),
        old_ids,
        "the drills touched no member"
    );
    eprintln!("drills done at {:?}", t0.elapsed());

    // 2. Writes after the backup.
    for i in 0..10 {
        ctl.run(&["put", &format!("{PREFIX}after{i}"), "after"]);
    }
    ctl.run(&["put", &format!("{PREFIX}k000"), "overwritten"]);
    ctl.run(&["del", &format!("{PREFIX}k001")]);
    let after_backup = ctl.data(&ctl.all);
    assert_ne!(after_backup, at_backup);
    let rev_before_restore = ctl.revision();

    // 2b. A corrupt copy of the backup is refused before any member is touched, and the
    // error does not claim a rollback that never happened.
    let bad_dir = work.path().join("bad-store");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(work.path().join("store"))
            .arg(&bad_dir),
    );
    let data = bad_dir.join("backups").join(&id).join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&data, &bytes).unwrap();
    let bad_store = format!("file://{}", bad_dir.display());
    let mut c = ck(
        &cfg,
        &["restore", "etcd", &id, "--store", &bad_store, "--yes"],
    );
    let out = run_fail(&mut c);
    let err = stderr(&out);
    assert!(
        err.contains("corrupt") && !err.contains("rolled back"),
        "{}",
        describe(&c, &out, "want corrupt, and no rollback claimed")
    );
    for node in NODES {
        let dirs = etcd_dirs(&sb, node);
        assert_eq!(dirs.trim(), "etcd", "{node}: {dirs}");
    }
    assert_eq!(
        ctl.data(&ctl.all),
        after_backup,
        "corrupt restore: data as before"
    );

    // 3. node3 cannot start etcd: the restore fails and every member is rolled back.
    ssh(
        &sb,
        "node3",
        "mkdir -p /etc/systemd/system/etcd.service.d && \
         printf '[Service]\\nExecStartPre=/bin/false\\n' > /etc/systemd/system/etcd.service.d/99-test-broken.conf && \
         systemctl daemon-reload",
    );
    let mut c = ck(&cfg, &["restore", "etcd", &id, "--store", &store, "--yes"]);
    let out = run_fail(&mut c);
    let err = stderr(&out);
    assert!(
        err.contains("etcd on node3"),
        "{}",
        describe(&c, &out, "want node3 named")
    );
    assert!(
        err.contains("rolled back"),
        "{}",
        describe(&c, &out, "want rollback")
    );
    for node in NODES {
        let dirs = etcd_dirs(&sb, node);
        assert_eq!(dirs.trim(), "etcd", "{node}: {dirs}");
    }
    ssh(
        &sb,
        "node3",
        "rm /etc/systemd/system/etcd.service.d/99-test-broken.conf && systemctl daemon-reload && \
         systemctl reset-failed etcd; systemctl restart --no-block etcd",
    );
    ctl.wait_healthy("after the rollback");
    assert_eq!(ctl.members(&ctl.all), old_ids, "rollback: old member ids");
    assert_eq!(ctl.data(&ctl.all), after_backup, "rollback: data as before");
    assert!(ctl.revision() >= rev_before_restore);
    eprintln!("failed restore rolled back at {:?}", t0.elapsed());

    // 4. The restore.
    let mut c = ck(
        &cfg,
        &[
            "-o", "json", "restore", "etcd", &id, "--store", &store, "--yes",
        ],
    );
    let out = run_ok(&mut c);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "want JSON")));
    let members = report["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{report:#}");
    assert!(
        !report["steps"].as_array().unwrap().is_empty(),
        "{report:#}"
    );
    ctl.wait_healthy("after the restore");
    let new_ids = ctl.members(&ctl.all);
    assert_eq!(new_ids.len(), 3, "{new_ids:?}");
    let mut distinct: Vec<&String> = new_ids.values().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "member ids not distinct: {new_ids:?}");
    for (name, id) in &new_ids {
        assert!(
            !old_ids.values().any(|o| o == id),
            "{name} kept an old id {id}: old {old_ids:?}, new {new_ids:?}"
        );
        let r = members
            .iter()
            .find(|r| r["member"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not in {report:#}"));
        assert_eq!(
            r["member_id"].as_str().unwrap().trim_start_matches('0'),
            id.trim_start_matches('0'),
            "{report:#}"
        );
    }
    // Every endpoint serves the snapshot's data, nothing written later.
    for node in NODES {
        let ep = format!("https://{}:2379", addr(node));
        assert_eq!(ctl.data(&ep), at_backup, "{node}: data after restore");
    }
    assert!(ctl.revision() >= snap_rev, "revision below the snapshot's");
    for node in NODES {
        let dirs = etcd_dirs(&sb, node);
        let aside: Vec<&str> = dirs
            .lines()
            .filter(|l| l.starts_with(&format!("etcd.before-{id}-")))
            .collect();
        assert_eq!(aside.len(), 1, "{node}: {dirs}");
        assert_eq!(dirs.lines().count(), 2, "{node}: scratch left: {dirs}");
        let kept = ssh(&sb, node, &format!("ls /var/lib/{}/member", aside[0]));
        assert!(
            kept.contains("wal") && kept.contains("snap"),
            "{node}: {kept}"
        );
    }
    // The cluster takes writes.
    ctl.run(&["put", &format!("{PREFIX}post-restore"), "ok"]);
    eprintln!("restore verified at {:?}", t0.elapsed());
}

/// `backup install-timer` on a 1-node sandbox (node1: control plane + etcd, PKI and etcd
/// installed for real): `--check` reports what would change (with the units' diff, not the
/// secrets file's) and writes nothing; the units are installed and the timer listed, a second run changes
/// nothing, a triggered run of the service on the node takes a backup into the node's store,
/// and `reset` removes the timer, its units and `/etc/clusterkit` but keeps the backups.
#[test]
fn install_timer_on_control_plane() {
    let t0 = Instant::now();
    let sb = SandboxGuard::up(UpOptions::new("rtimer", 1))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    common::build_bundle(&bundle, None, &["--no-images", "--package", "etcd-server"]);
    // The store is a directory on the node itself (file:// is host-local).
    let cfg = common::sandbox_config(
        &sb,
        "rtimer.yaml",
        &bundle,
        "backup: { store: \"file:///var/backups/clusterkit\", retention: { keep_last: 5 } }\n",
    );
    for phase in ["pki", "etcd"] {
        run_ok(&mut ck(&cfg, &["install", "--phase", phase]));
    }
    eprintln!("installed in {:?}", t0.elapsed());

    let report = |out: &std::process::Output| -> Vec<String> {
        let v: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)));
        let hosts = v.as_array().unwrap();
        assert_eq!(hosts.len(), 1, "{v:#}");
        assert_eq!(hosts[0]["host"], "node1", "{v:#}");
        hosts[0]["changed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    };
    // Check mode: what would change, with the units' diff, and nothing written.
    let out = run_ok(&mut ck(
        &cfg,
        &["-o", "json", "backup", "install-timer", "--check"],
    ));
    let predicted = report(&out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let diff = v[0]["diff"].to_string();
    assert!(
        diff.contains("+ExecStart=/usr/local/bin/clusterkit"),
        "{v:#}"
    );
    assert!(
        !diff.contains("--- /etc/clusterkit/backup.env"),
        "no diff of the secrets file: {v:#}"
    );
    assert_eq!(
        ssh(
            &sb,
            "node1",
            "ls /etc/systemd/system/clusterkit-backup.service /etc/clusterkit 2>&1 | grep -c 'No such file'"
        )
        .trim(),
        "2",
        "check mode wrote nothing"
    );
    let out = run_ok(&mut ck(&cfg, &["-o", "json", "backup", "install-timer"]));
    let changed = report(&out);
    for want in [
        "upload /usr/local/bin/clusterkit",
        "write /etc/systemd/system/clusterkit-backup.service",
        "write /etc/systemd/system/clusterkit-backup.timer",
        "enable --now clusterkit-backup.timer",
    ] {
        assert!(changed.iter().any(|c| c == want), "{want}: {changed:?}");
    }
    // Check mode said exactly what the run did.
    let predicted: Vec<String> = predicted
        .iter()
        .map(|c| {
            c.strip_prefix("would ")
                .unwrap_or_else(|| panic!("a check-mode entry says what it would do: {c}"))
                .to_string()
        })
        .collect();
    assert_eq!(predicted, changed, "check mode's prediction");
    let timers = ssh(&sb, "node1", "systemctl list-timers --all --no-pager");
    assert!(timers.contains("clusterkit-backup.timer"), "{timers}");
    assert_eq!(
        ssh(&sb, "node1", "stat -c %a /etc/clusterkit/backup.env").trim(),
        "600"
    );
    // Idempotent.
    let out = run_ok(&mut ck(&cfg, &["-o", "json", "backup", "install-timer"]));
    assert_eq!(report(&out), Vec::<String>::new());
    eprintln!("timer installed at {:?}", t0.elapsed());

    // A triggered run (oneshot: `start` returns when it is done) backs up into the store.
    common::start_units(&sb, "node1", &["clusterkit-backup.service"]);
    let list = ssh(
        &sb,
        "node1",
        "/usr/local/bin/clusterkit -o json backup list --store file:///var/backups/clusterkit",
    );
    let v: Value = serde_json::from_str(&list).unwrap_or_else(|e| panic!("{e}: {list}"));
    let backups = v.as_array().unwrap();
    assert_eq!(backups.len(), 1, "{v:#}");
    let m = &backups[0];
    assert_eq!(m["kind"], "etcd", "{v:#}");
    assert_eq!(m["cluster"], "rtimer", "{v:#}");
    let id = m["id"].as_str().unwrap();
    ssh(
        &sb,
        "node1",
        &format!(
            "/usr/local/bin/clusterkit backup verify {id} --store file:///var/backups/clusterkit"
        ),
    );
    eprintln!("triggered backup verified at {:?}", t0.elapsed());

    // `reset` takes the timer and its secrets away with the rest; the backups stay.
    run_ok(&mut ck(&cfg, &["reset", "--yes"]));
    let left = ssh(
        &sb,
        "node1",
        "systemctl list-timers --all --no-pager | grep -c clusterkit-backup || true; \
         ls /etc/clusterkit /etc/systemd/system/clusterkit-backup.timer \
            /etc/systemd/system/clusterkit-backup.service 2>&1 | grep -vc 'No such file' || true; \
         ls /var/backups/clusterkit/backups | wc -l",
    );
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "1"],
        "timers listed, files left, backups kept"
    );
}
