//! Every command prints its result the same way: `-o json` is JSON, `-o yaml` is YAML of the same
//! shape (same keys and value types; values such as durations may differ between two runs), and
//! the default table is neither. Run through the real binary against a 1-node sandbox (real
//! sshd), for the commands that read or check without changing a node, and without one for
//! the commands that need no host.
//!
//! Needs root, systemd-nspawn and debootstrap (scripts/deps.sh) for the sandbox.

mod common;

use std::path::Path;

use clusterkit_sandbox::{SandboxGuard, UpOptions};
use common::{clusterkit, describe};
use serde_json::Value;

/// Whether two results have the same shape: the same keys, the same value types, and arrays
/// whose elements are alike (an empty array is like any array: its length is a value, and two
/// runs may differ in it, e.g. `changed` files on the first run only).
fn alike(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| alike(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => x
            .iter()
            .chain(y.iter())
            .all(|v| x.iter().chain(y.iter()).all(|w| alike(v, w))),
        (Value::Number(_), Value::Number(_)) => true,
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

/// Runs `args` under `-o json`, `-o yaml` and the default table; returns the JSON value after
/// checking that the YAML parses to the same shape and that the table is not JSON.
fn check_formats(what: &str, cfg: &Path, args: &[&str]) -> Value {
    let run = |format: Option<&str>| {
        let mut c = clusterkit();
        c.arg("-f").arg(cfg);
        if let Some(f) = format {
            c.args(["-o", f]);
        }
        c.args(args);
        let out = c.output().expect("run clusterkit");
        assert!(
            out.status.success(),
            "{}",
            describe(&c, &out, &format!("{what} failed"))
        );
        (c, out)
    };
    let (jc, json) = run(Some("json"));
    let json_value: Value = serde_json::from_slice(&json.stdout)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&jc, &json, "-o json is not JSON")));
    let (yc, yaml) = run(Some("yaml"));
    let text = String::from_utf8_lossy(&yaml.stdout);
    let yaml_value: Value = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{e}\n{}", describe(&yc, &yaml, "-o yaml is not YAML")));
    // Flow style is YAML too, but only an empty collection should come out that way.
    let empty = matches!(text.trim(), "[]" | "{}");
    assert!(
        empty || !(text.trim_start().starts_with('{') || text.trim_start().starts_with('[')),
        "{}",
        describe(
            &yc,
            &yaml,
            "-o yaml printed JSON (flow style), not block YAML"
        )
    );
    assert!(
        alike(&yaml_value, &json_value),
        "{what}: -o yaml and -o json differ in shape\n--- yaml\n{text}\n--- json\n{}",
        String::from_utf8_lossy(&json.stdout)
    );
    let (tc, table) = run(None);
    assert!(
        serde_json::from_slice::<Value>(&table.stdout).is_err(),
        "{}",
        describe(&tc, &table, "the default output is JSON, not a table")
    );
    json_value
}

#[test]
fn every_command_prints_json_yaml_and_table_alike() {
    let steps = common::Steps::new("output formats");
    let tmp = tempfile::tempdir().unwrap();

    steps.enter("1. a 1-node sandbox");
    let sb = SandboxGuard::up(UpOptions::new("outfmt", 1)).expect("sandbox up");
    // The sandbox's cluster.yaml plus where alerts go (monitor config requires a receiver),
    // beside it (its key and known_hosts paths are relative to it).
    let cfg = sb.cluster_yaml().with_file_name("cluster-outfmt.yaml");
    let yaml = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{yaml}\nmonitor:\n  alertmanager:\n    receivers: \
             [ {{ name: hook, webhook: {{ url: \"http://127.0.0.1:9/alerts\" }} }} ]\n"
        ),
    )
    .unwrap();

    steps.enter("2. commands that need no host");
    let v = check_formats("config validate", &cfg, &["config", "validate"]);
    assert_eq!(v["ok"], true, "{v}");
    // Only this test's sandbox: others that tests running alongside are starting change state
    // between the three calls.
    let v = check_formats(
        "sandbox status",
        &cfg,
        &["sandbox", "status", "--name", "outfmt"],
    );
    assert!(
        v.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["name"] == "outfmt"),
        "{v}"
    );
    let store = format!("file://{}", tmp.path().join("store").display());
    std::fs::create_dir_all(tmp.path().join("store")).unwrap();
    let v = check_formats("backup list", &cfg, &["backup", "list", "--store", &store]);
    assert!(v.is_array(), "{v}");
    let dir = tmp.path().join("monitor");
    let dir_arg = dir.display().to_string();
    let v = check_formats(
        "monitor config",
        &cfg,
        &[
            "monitor",
            "config",
            "--dir",
            &dir_arg,
            "--install-dir",
            &dir_arg,
        ],
    );
    assert!(v["changed"].is_array() && v["unchanged"].is_array(), "{v}");

    steps.enter("3. commands that read or check the node");
    let v = check_formats("ping", &cfg, &["ping"]);
    assert_eq!(v[0]["facts"]["hostname"], "node1", "{v}");
    let v = check_formats("exec", &cfg, &["exec", "--", "echo", "hi"]);
    assert_eq!(v[0]["stdout"], "hi\n", "{v}");
    let v = check_formats(
        "install --check",
        &cfg,
        &["install", "--phase", "prepare", "--check"],
    );
    assert!(v["hosts"].is_array() || v["hosts"].is_object(), "{v}");
    let v = check_formats("reset --check", &cfg, &["reset", "--check", "--yes"]);
    assert_eq!(v["check"], true, "{v}");
}

/// `clusterkit completion SHELL`: the bash script, loaded into a real bash, completes
/// subcommands and their flags; every other shell gets a script naming the subcommands; an
/// unknown shell is refused with the accepted values.
#[test]
fn completion_scripts_complete_subcommands_and_flags() {
    let bash_complete = |line: &str| {
        let out = common::run_ok(clusterkit().args(["completion", "bash"]));
        let script = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(script.path(), &out.stdout).unwrap();
        let words: Vec<&str> = line.split(' ').collect();
        let probe = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT={}; \
             _clusterkit clusterkit {} {}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.path().display(),
            words.join(" "),
            words.len() - 1,
            line.len(),
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let mut c = std::process::Command::new("bash");
        c.args(["-c", &probe]);
        common::stdout(&common::run_ok(&mut c))
    };
    let got = bash_complete("clusterkit ins");
    assert_eq!(got.trim(), "install", "{got}");
    let got = bash_complete("clusterkit install --ph");
    assert_eq!(got.trim(), "--phase", "{got}");
    let got = bash_complete("clusterkit certs re");
    assert_eq!(got.trim(), "renew", "{got}");

    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = common::run_ok(clusterkit().args(["completion", shell]));
        let text = common::stdout(&out);
        for sub in ["install", "backup", "restore", "certs"] {
            assert!(text.contains(sub), "{shell} script lacks {sub}");
        }
    }
    let out = common::run_fail(clusterkit().args(["completion", "tcsh"]));
    let err = common::stderr(&out);
    assert!(err.contains("tcsh") && err.contains("bash"), "{err}");
}
