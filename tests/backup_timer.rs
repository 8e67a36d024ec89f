//! `clusterkit backup install-timer --print` for etcd and namespace timers: the units each kind
//! gets, and the refusals that come before any host is touched (no namespace, namespace flags
//! on an etcd timer, a CronJob for namespaces, Secrets without encryption, no kubeconfig), and
//! that `reset` knows both timers' units; `--drill` in the unit, refused with recipient encryption.
//! Runs the real binary on a cluster.yaml; nothing is contacted. Installing and running the
//! timers on real nodes is in tests/install_cluster.rs (step 8) and tests/restore_cluster.rs.

mod common;

use std::path::Path;

use common::{clusterkit, run_fail, run_ok, stderr, stdout};

const CLUSTER: &str = "name: tk
hosts:
  - name: cp1
    address: 10.0.0.11
    roles: [control-plane, etcd]
    auth: { key_file: ./id_test }
kubernetes:
  version: v1.20.2
backup:
  store: file:///var/backups/tk
";

fn timer(cfg: &Path, args: &[&str]) -> std::process::Command {
    let mut c = clusterkit();
    c.arg("-f")
        .arg(cfg)
        .args(["backup", "install-timer"])
        .args(args);
    c
}

/// The `ExecStart=` line of printed units.
fn exec_start(printed: &str) -> &str {
    printed
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in {printed}"))
}

/// A directory with CLUSTER as cluster.yaml and the key file it names (validation checks only
/// that the key exists with mode 0600).
fn cluster_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    common::stand_in_key(&dir.path().join("id_test"));
    let cfg = dir.path().join("cluster.yaml");
    std::fs::write(&cfg, CLUSTER).unwrap();
    (dir, cfg)
}

#[test]
fn namespace_timer_units_and_refusals() {
    let (dir, cfg) = cluster_dir();

    // Refused before anything else, each with its reason.
    for (args, reason) in [
        (
            &["--kind", "namespace", "--print"][..],
            "name at least one namespace, or --all-namespaces",
        ),
        (
            &["shop", "--print"][..],
            "namespace selection flags need --kind namespace",
        ),
        (
            &["--kind", "namespace", "shop", "--print-cronjob"][..],
            "--print-cronjob prints the etcd backup CronJob",
        ),
        (
            &[
                "--kind",
                "namespace",
                "shop",
                "--include-secrets",
                "--print",
            ][..],
            "--include-secrets needs an encrypted backup",
        ),
        (
            &["--kind", "namespace", "shop", "--print"][..],
            "kubeconfig/admin.conf does not exist: install the cluster first",
        ),
    ] {
        let out = run_fail(&mut timer(&cfg, args));
        assert!(stderr(&out).contains(reason), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }

    // With the kubeconfig `install` writes: the namespace units, the selection as flags.
    let kubeconfig = dir.path().join("tk-state/kubeconfig/admin.conf");
    std::fs::create_dir_all(kubeconfig.parent().unwrap()).unwrap();
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
    let ns = stdout(&run_ok(&mut timer(
        &cfg,
        &[
            "--kind",
            "namespace",
            "-A",
            "-l",
            "app=web",
            "--exclude-resources",
            "events",
            "--print",
        ],
    )));
    assert!(
        ns.contains("# /etc/systemd/system/clusterkit-backup-namespaces.service\n"),
        "{ns}"
    );
    assert!(
        ns.contains("# /etc/systemd/system/clusterkit-backup-namespaces.timer\n"),
        "{ns}"
    );
    assert!(
        ns.contains("Description=clusterkit namespace backup\n"),
        "{ns}"
    );
    let exec = exec_start(&ns);
    for want in [
        " backup schedule --once --store file:///var/backups/tk ",
        " --kind namespace --kubeconfig /etc/clusterkit/namespace-backup.conf ",
        " --cluster-name tk ",
        " --all-namespaces --selector app=web --exclude-resources events",
    ] {
        assert!(exec.contains(want), "{want:?} not in {exec}");
    }
    assert!(!exec.contains("--endpoints"), "{exec}");

    // The etcd timer keeps its own units and etcd flags.
    let etcd = stdout(&run_ok(&mut timer(&cfg, &["--print"])));
    assert!(
        etcd.contains("# /etc/systemd/system/clusterkit-backup.service\n"),
        "{etcd}"
    );
    let exec = exec_start(&etcd);
    assert!(
        exec.contains(" --endpoints https://10.0.0.11:2379 --cacert "),
        "{exec}"
    );
    assert!(!exec.contains("--kind"), "{exec}");

    // `reset` knows both timers, so it removes them (and their secrets) with the node.
    for (printed, unit) in [
        (&etcd, "clusterkit-backup"),
        (&ns, "clusterkit-backup-namespaces"),
    ] {
        assert!(printed.contains(&format!("/etc/systemd/system/{unit}.timer\n")));
        assert!(
            clusterkit_core::layout::Units::DEFAULT
                .backup_timers()
                .contains(&unit),
            "reset does not know {unit}"
        );
    }
}

#[test]
fn drilling_timers_pass_the_flag_and_refuse_recipient_encryption() {
    let (dir, cfg) = cluster_dir();
    let printed = stdout(&run_ok(&mut timer(&cfg, &["--drill", "--print"])));
    let exec = exec_start(&printed);
    assert!(exec.contains(" --drill"), "{exec}");
    let plain = stdout(&run_ok(&mut timer(&cfg, &["--print"])));
    assert!(!exec_start(&plain).contains("--drill"), "{plain}");

    // Backups encrypted to an age recipient: a drill on the hosts would need the identity there.
    let out = run_ok(
        clusterkit()
            .args(["backup", "keygen", "--out"])
            .arg(dir.path().join("backup.age")),
    );
    let recipient = stdout(&out).trim().to_string();
    std::fs::write(
        &cfg,
        format!("{CLUSTER}  encryption: {{ age_recipients: [{recipient}] }}\n"),
    )
    .unwrap();
    let out = run_fail(&mut timer(&cfg, &["--drill", "--print"]));
    assert!(
        stderr(&out).contains("would need the age identity on every control-plane host"),
        "{}",
        stderr(&out)
    );
    let printed = stdout(&run_ok(&mut timer(&cfg, &["--print"])));
    assert!(exec_start(&printed).contains(&recipient), "{printed}");
}

/// The rendered units and CronJob against their golden files (`tests/data/backup-units/`):
/// an etcd timer whose arguments need systemd's quoting and escaping, a namespace timer, and
/// the CronJob. `CLUSTERKIT_UPDATE_GOLDEN=1` rewrites them.
#[test]
fn units_and_cronjob_match_golden_files() {
    use clusterkit_backup::timer::{self, TimerSpec};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/backup-units");
    let spec = |unit, kubeconfig: Option<&str>, args: &[&str]| TimerSpec {
        unit,
        kubeconfig: kubeconfig.map(Into::into),
        on_calendar: "*-*-* 00/6:00:00".into(),
        binary: "/usr/local/bin/clusterkit".into(),
        upload_binary: None,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        ca_file: None,
        drill: false,
    };
    let etcd = spec(
        "clusterkit-backup",
        None,
        &[
            "backup",
            "schedule",
            "--once",
            "--store",
            "s3://b/p",
            "--cluster-name",
            "a b",
            "--x",
            "100%$",
            "--y",
            "q\"uo\\te",
            "--z",
            "",
        ],
    );
    let ns = spec(
        "clusterkit-backup-namespaces",
        Some("/tmp/admin.conf"),
        &["backup", "schedule", "--once", "--kind", "namespace", "-A"],
    );
    let cases = [
        ("etcd.service", timer::service_unit(&etcd).unwrap()),
        ("etcd.timer", timer::timer_unit(&etcd).unwrap()),
        ("namespaces.service", timer::service_unit(&ns).unwrap()),
        ("namespaces.timer", timer::timer_unit(&ns).unwrap()),
        (
            "cronjob.yaml",
            timer::cronjob("0 */6 * * *", "clusterkit:latest").unwrap(),
        ),
    ];
    for (name, got) in cases {
        if let Err(e) = common::golden::check(&dir.join(name), &got) {
            panic!("{e}");
        }
    }
}
