//! Fuzzing cluster.yaml: what `config validate` accepts renders without a panic, and what it
//! refuses gets an error with a position.
//!
//! Inputs are the corpus — every file under `tests/data/config/` and `tests/data/fuzz/config/`
//! — and proptest mutations of the good files (values swapped for awkward ones, bytes
//! inserted, lines deleted or duplicated), run with a fixed seed and a bounded number of cases
//! so the normal suite replays the same inputs every time. For each input:
//! - refused: every error diagnostic has a line and a column (≥ 1);
//! - accepted: the resolved cluster goes through everything an install, a backup and the
//!   monitor derive from it — every component's flags for every host, the control-plane,
//!   kubelet, etcd, load-balancer and network variables, the PKI plan, every embedded template
//!   and every playbook task's arguments rendered with the installer's context, the backup
//!   settings, the monitoring configs — and none of it panics. Flags, variables and the PKI
//!   plan must also succeed: a file validation accepts must be installable.
//!
//! A longer run (the numbers the run prints go to bench/fuzz/RESULTS.md):
//!
//! ```sh
//! CLUSTERKIT_FUZZ_CASES=20000 CLUSTERKIT_FUZZ_SEED=$RANDOM \
//!   cargo nextest run --test fuzz_config --no-capture
//! ```
//!
//! A failing case is printed in full; save it under `tests/data/fuzz/config/` so the normal
//! suite replays it from then on.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use clusterkit_core::config::{self, Cluster, ConfigError, Role};
use clusterkit_core::layout::Component;
use clusterkit_installer::phases;
use proptest::prelude::*;

#[path = "../src/fuzz.rs"]
mod fuzz;
use proptest::test_runner::TestCaseError;

/// Cases of the normal suite's run: about ten seconds of a debug build on a loaded 2-core
/// machine.
const DEFAULT_CASES: u32 = 200;
/// The normal suite's seed, so every run tries the same inputs.
const DEFAULT_SEED: u64 = 0x636b_6675_7a7a;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// A directory holding the files the corpus names (key files, the S3 CA, the age identity).
fn workspace() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for (name, mode) in [
        ("id_test", 0o600),
        ("id_open", 0o644),
        ("s3-ca.pem", 0o644),
        ("age.key", 0o600),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, "fuzz: validation checks presence and mode only\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

/// Loads `bytes` as `dir/cluster.yaml` and checks the property. `Err` says what broke it.
fn check(dir: &Path, bytes: &[u8]) -> Result<bool, String> {
    let file = dir.join("cluster.yaml");
    std::fs::write(&file, bytes).map_err(|e| e.to_string())?;
    let loaded = std::panic::catch_unwind(|| config::load(&file))
        .map_err(|p| format!("config::load panicked: {}", panic_text(&p)))?;
    match loaded {
        Ok(l) => {
            let cluster = l.cluster;
            std::panic::catch_unwind(AssertUnwindSafe(|| render_everything(&cluster)))
                .map_err(|p| {
                    format!(
                        "an accepted file panicked while rendering: {}",
                        panic_text(&p)
                    )
                })?
                .map_err(|e| format!("an accepted file does not render: {e}"))?;
            Ok(true)
        }
        Err(ConfigError::Invalid { diagnostics, .. }) => {
            if diagnostics.is_empty() {
                return Err("refused without a diagnostic".into());
            }
            for d in diagnostics.iter().filter(|d| d.is_error()) {
                if d.line == 0 || d.column == 0 {
                    return Err(format!("an error without a position: {d}"));
                }
            }
            Ok(false)
        }
        Err(e @ ConfigError::Read { .. }) => Err(format!("the file could not be read: {e}")),
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

/// Everything derived from a resolved cluster. Templates and playbook tasks may need loop
/// items or facts the fuzzer does not have, so their errors are allowed (panics are not);
/// everything else must succeed.
fn render_everything(cluster: &Cluster) -> Result<(), String> {
    let lib = phases::library(&[]);
    let ctx = phases::context(cluster);
    let boot = phases::etcd::new_cluster(cluster);
    phases::network::pod_cidrs(cluster).map_err(|e| format!("pod CIDRs: {e}"))?;
    let pki = phases::pki::input(cluster);
    // The PKI takes the resolved values as they are: every DNS name it puts in a
    // certificate must already be one.
    for spec in clusterkit_installer::pki::cert_specs(&pki) {
        for name in &spec.dns_names {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err(format!(
                    "PKI plan: {}: SAN {name:?} is not a DNS name",
                    spec.name
                ));
            }
        }
    }
    let _ = phases::load_balancer::vars(cluster);
    let templates = lib.embedded_names("templates/");
    let playbooks = lib.embedded_names("playbooks/");
    for host in &cluster.hosts {
        let mut c = ctx.clone();
        c["host"] = clusterkit_core::inventory::host_vars(host);
        for component in Component::ALL {
            phases::common::flags(cluster, host, component)
                .map_err(|e| format!("{} flags on {}: {e}", component, host.name))?;
        }
        if host.has_role(Role::ControlPlane) {
            c["control_plane"] = serde_json::Value::Array(
                phases::control_plane::component_vars(cluster, host)
                    .map_err(|e| format!("control-plane vars on {}: {e}", host.name))?,
            );
        }
        c["host"]["kubelet"] = phases::kubelet::kubelet_vars(cluster, host, None)
            .map_err(|e| format!("kubelet vars on {}: {e}", host.name))?;
        if host.has_role(Role::Etcd) {
            let _ = phases::etcd::member_flags(cluster, host, &boot);
        }
        for name in &templates {
            let name = name.trim_start_matches("templates/");
            if let Ok(source) = lib.template(name) {
                let _ = clusterkit_core::playbook::render::render_text(&source.text, &c);
            }
        }
        let tera = tera::Context::from_value(c.clone()).map_err(|e| e.to_string())?;
        for name in &playbooks {
            let name = name.trim_start_matches("playbooks/");
            let Ok(playbook) = clusterkit_core::playbook::parse::load(&lib, name) else {
                return Err(format!("the built-in playbook {name} does not load"));
            };
            for task in playbook.plays.iter().flat_map(|p| p.tasks.iter()) {
                let _ = clusterkit_core::playbook::render::render_value(&task.args, &tera);
            }
        }
    }
    let _ = clusterkit_backup::settings::store(
        &clusterkit_backup::settings::StoreOverrides {
            store: Some("file:///nonexistent-fuzz-store".into()),
            ..Default::default()
        },
        Some(&cluster.backup),
    );
    let _ = clusterkit_backup::settings::retention(Some(&cluster.backup));
    if let Some(expr) = &cluster.backup.schedule {
        clusterkit_backup::schedule::parse_cron(expr)
            .map_err(|e| format!("the accepted schedule does not parse: {e}"))?;
    }
    let topology = clusterkit_monitor::topology::Topology::from_cluster(cluster.clone());
    let tuning = clusterkit_monitor::generate::Tuning::default();
    let jobs = clusterkit_monitor::generate::prometheus::jobs(&topology);
    let login = cluster
        .monitor
        .tls
        .then_some(cluster.monitor.web_auth.username.as_str());
    let _ = clusterkit_monitor::generate::prometheus::config(&topology, &jobs, login, &tuning);
    let _ = clusterkit_monitor::generate::rules::rule_file(&topology, &tuning.alert_for);
    let _ = clusterkit_monitor::generate::alertmanager::config(
        &topology,
        Path::new("/nonexistent"),
        &tuning,
    );
    Ok(())
}

/// Values that have broken parsers before: limits of every integer type, addresses no node can
/// have, grammar edge cases, YAML's own surprises.
const AWKWARD: &[&str] = &[
    "0",
    "-1",
    "1",
    "65535",
    "65536",
    "4294967296",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "1e400",
    ".nan",
    ".inf",
    "0x10",
    "~",
    "''",
    "'::::'",
    "\"\\0\"",
    "\"a\\nb\"",
    "'\t'",
    "[]",
    "{}",
    "[[[[[[]]]]]]",
    "!!binary AAAA",
    "&a x",
    "*a",
    "255.255.255.255",
    "127.0.0.1",
    "0.0.0.0",
    "'::'",
    "'::ffff:10.0.0.1'",
    "224.0.0.1",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "'::/0'",
    "'root;rm -rf /'",
    "'$(reboot)'",
    "'a\"b'",
    "v1.9.0",
    "v1.35.0",
    "v1.20.0",
    "v4294967295.4294967295.4294967295",
    "'61 * * * *'",
    "'* * * * * * * *'",
    "'@reboot'",
    "s3://",
    "'file://'",
    "'https://'",
    "'registry.k8s.io/pause:3.9@sha256:zz'",
    "ünïcødé",
    "true",
    "null",
];

/// One edit of a file.
#[derive(Clone, Debug)]
enum Edit {
    /// Replace the value of line `line` (mod the line count) with `AWKWARD[value]`.
    Value { line: usize, value: usize },
    /// Replace the value of line `line` with a random string.
    Text { line: usize, text: String },
    /// Insert `byte` at `at` (mod the length).
    Byte { at: usize, byte: u8 },
    /// Delete line `line`.
    DeleteLine { line: usize },
    /// Duplicate line `line`.
    DuplicateLine { line: usize },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), 0..AWKWARD.len()).prop_map(|(line, value)| Edit::Value { line, value }),
        2 => (any::<usize>(), proptest::collection::vec(any::<char>(), 0..40))
            .prop_map(|(line, chars)| Edit::Text { line, text: chars.into_iter().collect() }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Edit::Byte { at, byte }),
        1 => any::<usize>().prop_map(|line| Edit::DeleteLine { line }),
        1 => any::<usize>().prop_map(|line| Edit::DuplicateLine { line }),
    ]
}

fn apply(base: &str, edits: &[Edit]) -> Vec<u8> {
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    let mut tail: Vec<(usize, u8)> = Vec::new();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        let n = lines.len();
        match e {
            Edit::Value { line, value } => set_value(&mut lines[line % n], AWKWARD[*value]),
            Edit::Text { line, text } => set_value(&mut lines[line % n], text),
            Edit::Byte { at, byte } => tail.push((*at, *byte)),
            Edit::DeleteLine { line } => {
                lines.remove(line % n);
            }
            Edit::DuplicateLine { line } => {
                let l = lines[line % n].clone();
                lines.insert(line % n, l);
            }
        }
    }
    let mut bytes = (lines.join("\n") + "\n").into_bytes();
    for (at, byte) in tail {
        let at = at % (bytes.len() + 1);
        bytes.insert(at, byte);
    }
    bytes
}

/// Replaces what follows the last `: ` of a line (or the whole item after `- `).
fn set_value(line: &mut String, value: &str) {
    if let Some(i) = line.rfind(": ") {
        line.truncate(i + 2);
        line.push_str(value);
    } else if let Some(i) = line.find("- ") {
        line.truncate(i + 2);
        line.push_str(value);
    }
}

/// The corpus, replayed first: every config test file and the saved fuzz findings.
#[test]
fn corpus_is_refused_with_positions_or_renders() {
    let ws = workspace();
    let mut files = yaml_files(&data("config/good"));
    files.extend(yaml_files(&data("config/bad")));
    files.extend(yaml_files(&data("fuzz/config")));
    let mut accepted = 0;
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        match check(ws.path(), &bytes) {
            Ok(ok) => accepted += usize::from(ok),
            Err(e) => panic!("{}: {e}", f.display()),
        }
    }
    // The good files (and the accepted fuzz findings) must really have been rendered.
    assert!(
        accepted >= yaml_files(&data("config/good")).len(),
        "{accepted}"
    );
}

#[test]
fn mutated_files_are_refused_with_positions_or_render() {
    // Shrinking re-runs the whole render; the printed input is enough to save.
    let mut run = fuzz::runner(DEFAULT_CASES, DEFAULT_SEED, 64);
    let ws = workspace();
    let bases: Vec<String> = yaml_files(&data("config/good"))
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let accepted = std::cell::Cell::new(0u32);
    let result = run.runner.run(
        &(0..bases.len(), proptest::collection::vec(edit(), 1..4)),
        |(base, edits)| {
            let bytes = apply(&bases[base], &edits);
            match check(ws.path(), &bytes) {
                Ok(ok) => {
                    accepted.set(accepted.get() + u32::from(ok));
                    Ok(())
                }
                Err(e) => Err(TestCaseError::fail(format!(
                    "{e}\n--- input ---\n{}",
                    String::from_utf8_lossy(&bytes)
                ))),
            }
        },
    );
    run.report("fuzz_config", &format!(", {} accepted", accepted.get()));
    if let Err(e) = result {
        panic!("{e}");
    }
    // Mutations that keep a file valid must occur, or rendering was never exercised.
    assert!(accepted.get() > 0, "no mutated file was accepted");
}
