//! `clusterkit reset` on a 3-node sandbox, all real: Debian 12 nspawn nodes over SSH, the PKI
//! and a 3-member TLS etcd installed by the real `install --phase pki` and `--phase etcd`, plus
//! what later phases leave behind, made by hand where those phases need more than this test
//! installs: a running kubelet-named unit and a kube-apiserver-named unit (systemd services of
//! the same names and paths the installer writes), a tmpfs mounted under /var/lib/kubelet, CNI
//! config, kube-proxy/CNI iptables chains next to a foreign rule that must survive, and files
//! `upgrade apply` keeps for a rollback.
//!
//! One sandbox is shared by the steps: without `--yes` and with "no" typed, nothing changes;
//! `--check` reports and changes nothing; resetting one etcd member of three removes it from
//! the member list first and the other two stay healthy; the reset stops and disables every
//! service, removes the directories, moves etcd's data aside, removes the units and exactly the
//! kube-proxy/CNI iptables rules; a second reset reports "nothing to do" everywhere; `--purge`
//! deletes etcd's data; a stopped node fails alone and is named.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh) and apt access for the bundle;
//! fails with the reason when one is missing.

mod common;

use std::io::Write;
use std::process::Stdio;

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{ck, describe, json_of, run_fail, run_ok, ssh, stderr, stdout, NODES};
use serde_json::Value;

fn changed_of(v: &Value, host: &str) -> Vec<String> {
    v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == host)
        .unwrap_or_else(|| panic!("no {host} in {v:#}"))["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

/// What must be gone or kept, read on the node: one line per fact.
fn facts(sb: &SandboxGuard, node: &str) -> String {
    ssh(
        sb,
        node,
        "for u in etcd kubelet kube-apiserver; do echo \"$u $(systemctl is-active $u) $(systemctl is-enabled $u 2>/dev/null || echo none)\"; done; \
         for d in /etc/kubernetes /var/lib/kubelet /var/lib/etcd /var/lib/clusterkit/previous /etc/systemd/system/etcd.service /etc/systemd/system/kubelet.service; do [ -e $d ] && echo \"exists $d\"; done; \
         ls -d /var/lib/etcd.reset-* 2>/dev/null | sed 's/^/moved /'; \
         [ -d /etc/cni/net.d ] && ls -A /etc/cni/net.d | wc -l | sed 's/^/cni-conf-files /'; \
         grep -c ' /var/lib/kubelet/' /proc/mounts | sed 's/^/kubelet-mounts /'; \
         iptables-save | grep -cE 'KUBE-|CNI-' | sed 's/^/kube-rules /'; \
         iptables-save | grep -c '^-A INPUT -j MINE' | sed 's/^/mine /'; true",
    )
}

#[test]
fn reset_three_nodes() {
    let mut sb = SandboxGuard::up(UpOptions::new("reset", 3))
        .expect("sandbox up (needs root and scripts/deps.sh)");
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    common::build_bundle(&bundle, None, &["--package", "etcd-server"]);
    let cfg = common::sandbox_config(&sb, "reset.yaml", &bundle, "");
    for phase in ["pki", "etcd"] {
        run_ok(&mut ck(&cfg, &["install", "--phase", phase]));
    }
    // What later phases leave behind (see the module documentation).
    let unit = |name: &str| {
        format!(
            "printf '[Unit]\\nDescription={name} stand-in\\n[Service]\\nExecStart=/bin/sleep infinity\\n[Install]\\nWantedBy=multi-user.target\\n' > /etc/systemd/system/{name}.service && systemctl daemon-reload && systemctl enable -q --now {name}"
        )
    };
    ssh(&sb, "node1", &unit("kube-apiserver"));
    for node in NODES {
        ssh(&sb, node, &unit("kubelet"));
        ssh(
            &sb,
            node,
            "mkdir -p /var/lib/kubelet/pods/p1/volumes/v /etc/cni/net.d && \
             mount -t tmpfs tmpfs /var/lib/kubelet/pods/p1/volumes/v && \
             echo '{}' > /etc/cni/net.d/10-clusterkit.conflist && \
             iptables -t nat -N KUBE-SERVICES && iptables -t nat -A PREROUTING -j KUBE-SERVICES && \
             iptables -t nat -N CNI-0123abcd && iptables -t nat -A POSTROUTING -s 10.244.0.0/24 -j CNI-0123abcd && \
             iptables -N KUBE-FIREWALL && iptables -A INPUT -j KUBE-FIREWALL && \
             iptables -N MINE && iptables -A INPUT -j MINE && \
             mkdir -p /var/lib/clusterkit/previous/node && \
             echo kept > /var/lib/clusterkit/previous/node/%usr%local%bin%kubelet",
        );
    }
    let installed: Vec<String> = NODES.iter().map(|n| facts(&sb, n)).collect();
    for (node, f) in NODES.iter().zip(&installed) {
        assert!(f.contains("etcd active enabled"), "{node}: {f}");
        assert!(f.contains("kubelet active enabled"), "{node}: {f}");
        assert!(f.contains("exists /var/lib/etcd\n"), "{node}: {f}");
        assert!(
            f.contains("exists /var/lib/clusterkit/previous\n"),
            "{node}: {f}"
        );
        assert!(f.contains("kubelet-mounts 1"), "{node}: {f}");
        assert!(f.contains("kube-rules 6"), "{node}: {f}");
        assert!(f.contains("cni-conf-files 1"), "{node}: {f}");
    }

    // 1. Without --yes, answering "no": nothing changes.
    let mut c = ck(&cfg, &["reset"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"no\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "{}",
        describe(&c, &out, "expected refusal")
    );
    assert!(
        stderr(&out).contains("Type 'yes' to continue"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("nothing was changed"),
        "{}",
        stderr(&out)
    );
    // No terminal and no --yes: refused too.
    let out = run_fail(ck(&cfg, &["reset"]).stdin(Stdio::null()));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));

    // 2. --check: reports, changes nothing.
    let v = json_of(&mut ck(&cfg, &["-o", "json", "reset", "--check"]));
    assert_eq!(v["check"], true);
    let node1 = changed_of(&v, "node1");
    for want in [
        "stop and disable kubelet",
        "stop and disable kube-apiserver",
        "stop and disable etcd",
        "remove /etc/kubernetes",
        "remove /etc/systemd/system/etcd.service",
    ] {
        assert!(node1.iter().any(|c| c == want), "{want}: {node1:#?}");
    }
    for (node, before) in NODES.iter().zip(&installed) {
        assert_eq!(&facts(&sb, node), before, "{node} changed by --check");
    }

    // 3. One etcd member of three first: it leaves the member list through a remaining
    //    member, and the other two stay a healthy cluster.
    let v = json_of(&mut ck(
        &cfg,
        &["-o", "json", "reset", "--yes", "--hosts", "node3"],
    ));
    common::assert_removed_etcd_member(&v, "node3");
    let node3_changes = changed_of(&v, "node3");
    let state = sb.dir().join("reset-state");
    let two = format!(
        "https://{}:2379,https://{}:2379",
        sb.node("node1").unwrap().address,
        sb.node("node2").unwrap().address
    );
    let members = stdout(&run_ok(&mut common::etcdctl(
        &state,
        &two,
        &["member", "list"],
    )));
    assert_eq!(members.lines().count(), 2, "{members}");
    assert!(!members.contains("node3"), "{members}");
    let health = run_ok(&mut common::etcdctl(&state, &two, &["endpoint", "health"]));
    let health = format!("{}{}", stdout(&health), stderr(&health));
    assert_eq!(health.matches("is healthy").count(), 2, "{health}");

    // 4. The rest (the whole etcd cluster now: no member removal).
    let v = json_of(&mut ck(&cfg, &["-o", "json", "reset", "--yes"]));
    assert_eq!(v["etcd_members_removed"], serde_json::json!([]), "{v:#}");
    assert_eq!(changed_of(&v, "node3"), Vec::<String>::new(), "{v:#}");
    for node in NODES {
        let changed = if node == "node3" {
            node3_changes.clone()
        } else {
            changed_of(&v, node)
        };
        assert!(
            changed
                .iter()
                .any(|c| c == "unmount /var/lib/kubelet/pods/p1/volumes/v"),
            "{node}: {changed:#?}"
        );
        assert!(
            changed
                .iter()
                .any(|c| c.starts_with("move /var/lib/etcd to /var/lib/etcd.reset-")),
            "{node}: {changed:#?}"
        );
        assert!(
            changed
                .iter()
                .any(|c| c == "remove 6 kube-proxy/CNI iptables lines (iptables)"),
            "{node}: {changed:#?}"
        );
        let f = facts(&sb, node);
        for u in ["etcd", "kubelet", "kube-apiserver"] {
            assert!(
                f.lines().any(|l| l.starts_with(&format!("{u} inactive "))),
                "{node}: {f}"
            );
            assert!(!f.contains(&format!("{u} inactive enabled")), "{node}: {f}");
        }
        assert!(!f.contains("exists "), "{node}: {f}");
        assert!(f.contains("moved /var/lib/etcd.reset-"), "{node}: {f}");
        assert!(f.contains("kubelet-mounts 0"), "{node}: {f}");
        assert!(f.contains("kube-rules 0"), "{node}: {f}");
        assert!(f.contains("mine 1"), "{node}: foreign rule lost: {f}");
        // The CNI configuration is gone, its directory kept: containerd watches it.
        assert!(
            changed
                .iter()
                .any(|c| c == "remove the CNI configuration in /etc/cni/net.d"),
            "{node}: {changed:#?}"
        );
        assert!(f.contains("cni-conf-files 0"), "{node}: {f}");
        // The moved data is etcd's, intact.
        let member = ssh(&sb, node, "ls /var/lib/etcd.reset-*/member");
        assert!(
            member.contains("wal") && member.contains("snap"),
            "{node}: {member}"
        );
    }
    // The Debian package's own etcd unit is left, disabled; clusterkit's override is gone.
    assert!(!ssh(&sb, "node1", "systemctl cat etcd 2>/dev/null || true").contains("clusterkit"));

    // 5. Idempotent: nothing to do.
    let out = run_ok(&mut ck(&cfg, &["reset", "--yes"]));
    for node in NODES {
        assert!(
            stdout(&out).contains(&format!("{node}: nothing to do")),
            "{}",
            stdout(&out)
        );
    }
    let v = json_of(&mut ck(&cfg, &["-o", "json", "reset", "--yes"]));
    for node in NODES {
        assert!(changed_of(&v, node).is_empty(), "{v:#}");
    }

    // 6. --purge deletes etcd's data instead of moving it.
    ssh(
        &sb,
        "node1",
        "mkdir -p /var/lib/etcd/member && echo x > /var/lib/etcd/member/f",
    );
    let v = json_of(&mut ck(
        &cfg,
        &[
            "-o", "json", "reset", "--yes", "--purge", "--hosts", "node1",
        ],
    ));
    assert_eq!(changed_of(&v, "node1"), ["delete /var/lib/etcd (purge)"]);
    assert_eq!(
        ssh(&sb, "node1", "ls -d /var/lib/etcd* | wc -l").trim(),
        "1",
        "only the earlier moved copy remains"
    );

    // 7. A node that cannot be reached fails alone, named; the others are done.
    sb.stop_node("node3").unwrap();
    let mut c = ck(&cfg, &["-o", "json", "reset", "--yes"]);
    let out = run_fail(&mut c);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&c, &out, "expected JSON")));
    let status = |n: &str| {
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == n)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("node1"), "ok");
    assert_eq!(status("node2"), "ok");
    assert_eq!(status("node3"), "failed");
    assert!(
        stderr(&out).contains("1 of 3 hosts failed: node3"),
        "{}",
        stderr(&out)
    );
}
