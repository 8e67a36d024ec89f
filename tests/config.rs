//! `clusterkit config`: golden good files validate (and resolve to the recorded model), every
//! bad file fails with the expected message at the expected line, `config init` output
//! validates, and a missing file is a clear error. Runs the real binary.
//!
//! Bad files carry their expectations in comments, so adding a rule means adding one file:
//!   `# expect: LINE TEXT` — an error on LINE whose text (after `FILE:LINE:COL: `) starts with
//!   TEXT; the file must produce exactly as many errors as it has `expect` lines.
//!   `# expect-warning: LINE TEXT` — the same for warnings (good files may have them).
//!   `# forbid: TEXT` — TEXT must not appear anywhere in the output (secrets).
//! `$DIR` in TEXT stands for the temporary directory the file is validated in.
//!
//! Key files cannot live in git with mode 0600, so each file is validated in a fresh temporary
//! directory holding `id_test` (0600) and `id_open` (0644), plus the `s3-ca.pem` and `age.key`
//! full.yaml names.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{clusterkit, run_fail, run_ok, stderr, stdout};

fn data_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config")
        .join(kind)
}

/// The YAML files of a data directory, sorted.
fn yaml_files(kind: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no test files in {kind}");
    files
}

/// A temporary directory with the test key files, and `src` copied in as `cluster.yaml`.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, mode) in [("id_test", 0o600), ("id_open", 0o644)] {
            let p = dir.path().join(name);
            std::fs::write(&p, "test key: validation checks existence and mode only\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        // Files full.yaml names, which validation requires to be readable.
        for name in ["s3-ca.pem", "age.key"] {
            std::fs::write(
                dir.path().join(name),
                "test file: validation checks it is readable\n",
            )
            .unwrap();
        }
        Workspace { dir }
    }

    fn with_file(src: &Path) -> (Self, PathBuf) {
        let ws = Workspace::new();
        let dst = ws.dir.path().join("cluster.yaml");
        std::fs::copy(src, &dst).unwrap();
        (ws, dst)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The `# expect…:` and `# forbid:` comments of a test file.
#[derive(Default)]
struct Expect {
    errors: Vec<(u64, String)>,
    warnings: Vec<(u64, String)>,
    forbid: Vec<String>,
}

fn expectations(text: &str, dir: &Path) -> Expect {
    let mut e = Expect::default();
    let dir = dir.display().to_string();
    for line in text.lines() {
        let parse = |rest: &str| -> (u64, String) {
            let (n, msg) = rest.trim().split_once(' ').unwrap_or((rest.trim(), ""));
            let n = n
                .parse()
                .unwrap_or_else(|_| panic!("bad line number in {line:?}"));
            (n, msg.trim().replace("$DIR", &dir))
        };
        if let Some(rest) = line.strip_prefix("# expect:") {
            e.errors.push(parse(rest));
        } else if let Some(rest) = line.strip_prefix("# expect-warning:") {
            e.warnings.push(parse(rest));
        } else if let Some(rest) = line.strip_prefix("# forbid:") {
            e.forbid.push(rest.trim().to_string());
        }
    }
    e
}

/// Checks that `output` has diagnostics for `file` matching `expected`, one each, and no more
/// of that severity.
fn check_diagnostics(
    output: &str,
    file: &Path,
    expected: &[(u64, String)],
    warnings: bool,
    what: &str,
) {
    let file = file.display().to_string();
    let diags: Vec<(u64, String)> = output
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&format!("{file}:"))?;
            let (line, rest) = rest.split_once(':')?;
            let (_col, text) = rest.split_once(": ")?;
            let is_warning = text.starts_with("warning: ");
            (is_warning == warnings).then(|| {
                (
                    line.parse().unwrap(),
                    text.trim_start_matches("warning: ").to_string(),
                )
            })
        })
        .collect();
    for (line, text) in expected {
        assert!(
            diags
                .iter()
                .any(|(l, t)| l == line && t.starts_with(text.as_str())),
            "{what}: expected {} at line {line} starting with {text:?}\ngot:\n{output}",
            if warnings { "a warning" } else { "an error" }
        );
    }
    assert_eq!(
        diags.len(),
        expected.len(),
        "{what}: expected {} {}, got:\n{output}",
        expected.len(),
        if warnings { "warnings" } else { "errors" }
    );
}

#[test]
fn good_files_validate() {
    for src in yaml_files("good") {
        let (ws, file) = Workspace::with_file(&src);
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = expectations(&text, ws.path());
        let out = run_ok(clusterkit().args(["config", "validate", "-f"]).arg(&file));
        let what = src.display().to_string();
        assert!(stdout(&out).starts_with("ok: "), "{what}: {}", stdout(&out));
        check_diagnostics(&stderr(&out), &file, &expect.warnings, true, &what);
        check_diagnostics(&stderr(&out), &file, &[], false, &what);
    }
}

#[test]
fn validate_summarises_hosts_and_roles() {
    let (_ws, file) = Workspace::with_file(&data_dir("good").join("sandbox.yaml"));
    let out = run_ok(clusterkit().args(["config", "validate", "-f"]).arg(&file));
    assert_eq!(
        stdout(&out).trim(),
        "ok: 3 hosts (1 etcd, 1 control-plane, 2 worker, 1 monitor)"
    );
}

/// The resolved model of full.yaml (defaults, paths, parsed values) matches the recorded
/// golden JSON (`CLUSTERKIT_UPDATE_GOLDEN=1` rewrites it after an intended change).
#[test]
fn full_file_resolves_to_the_golden_model() {
    for name in ["full", "minimal", "sandbox"] {
        let (ws, file) = Workspace::with_file(&data_dir("good").join(format!("{name}.yaml")));
        let out = run_ok(
            clusterkit()
                .args(["-o", "json", "config", "validate", "-f"])
                .arg(&file),
        );
        let mut doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let text = serde_json::to_string_pretty(&doc["cluster"].take())
            .unwrap()
            .replace(&ws.path().display().to_string(), "$DIR")
            + "\n";
        let golden = data_dir("good").join(format!("{name}.resolved.json"));
        if let Err(e) = common::golden::check(&golden, &text) {
            panic!("{name}.yaml resolved differently: {e}");
        }
    }
}

#[test]
fn each_bad_file_fails_with_its_message_and_line() {
    for src in yaml_files("bad") {
        let (ws, file) = Workspace::with_file(&src);
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = expectations(&text, ws.path());
        let what = src.display().to_string();
        assert!(!expect.errors.is_empty(), "{what} has no `# expect:` line");
        let out = run_fail(clusterkit().args(["config", "validate", "-f"]).arg(&file));
        assert_eq!(out.status.code(), Some(1), "{what}");
        let err = stderr(&out);
        check_diagnostics(&err, &file, &expect.errors, false, &what);
        check_diagnostics(&err, &file, &expect.warnings, true, &what);
        let n = expect.errors.len();
        let summary = format!("is invalid: {n} error{}", if n == 1 { "" } else { "s" });
        assert!(err.contains(&summary), "{what}: no {summary:?} in\n{err}");
        for secret in &expect.forbid {
            assert!(
                !err.contains(secret.as_str()),
                "{what}: {secret:?} leaked:\n{err}"
            );
        }
    }
}

#[test]
fn json_output_lists_diagnostics_with_positions() {
    let (_ws, file) = Workspace::with_file(&data_dir("bad").join("bad_address.yaml"));
    let out = run_fail(
        clusterkit()
            .args(["-o", "json", "config", "validate", "-f"])
            .arg(&file),
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["ok"], false);
    let d = &doc["diagnostics"][0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["field"], "hosts[1].address");
    assert_eq!(d["line"], 9);
    assert_eq!(d["column"], 14);
}

#[test]
fn init_prints_an_example_that_validates() {
    let out = run_ok(clusterkit().args(["config", "init"]));
    let example = stdout(&out);
    assert!(example.contains("# "), "the example is annotated");
    let ws = Workspace::new();
    let file = ws.path().join("cluster.yaml");
    std::fs::write(&file, &example).unwrap();
    // Without its key file the example must fail, naming the missing file.
    let out = run_fail(clusterkit().args(["config", "validate", "-f"]).arg(&file));
    assert!(
        stderr(&out).contains("id_ed25519 does not exist"),
        "{}",
        stderr(&out)
    );
    std::fs::copy(ws.path().join("id_test"), ws.path().join("id_ed25519")).unwrap();
    let out = run_ok(clusterkit().args(["config", "validate", "-f"]).arg(&file));
    assert_eq!(
        stdout(&out).trim(),
        "ok: 4 hosts (3 etcd, 3 control-plane, 1 worker, 1 monitor)"
    );
    assert_eq!(stderr(&out), "", "the example has no warnings");
}

#[test]
fn example_comments_every_section() {
    // Field-level comments are checked by reading; this catches a section added without one.
    let out = run_ok(clusterkit().args(["config", "init"]));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    for (i, line) in lines.iter().enumerate() {
        let top_level_key = !line.starts_with([' ', '#', '-']) && line.contains(':');
        if top_level_key && i > 0 {
            let prev = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap();
            assert!(
                prev.trim_start().starts_with('#'),
                "top-level key {line:?} has no comment above it"
            );
        }
    }
}

#[test]
fn missing_file_is_a_clear_error() {
    let ws = Workspace::new();
    let file = ws.path().join("absent.yaml");
    let out = run_fail(clusterkit().args(["config", "validate", "-f"]).arg(&file));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot read cluster file {}", file.display()))
            && err.contains("No such file or directory"),
        "{err}"
    );
    assert_eq!(
        err.matches("No such file").count(),
        1,
        "reason said once: {err}"
    );
}

#[test]
fn unknown_field_is_an_error_with_its_line() {
    let ws = Workspace::new();
    let file = ws.path().join("cluster.yaml");
    std::fs::write(
        &file,
        "name: x\nkubernetes: { version: v1.26.3 }\nhosts:\n  - name: a\n    address: 192.168.77.1\n    rolez: [etcd]\n",
    )
    .unwrap();
    let out = run_fail(clusterkit().args(["config", "validate", "-f"]).arg(&file));
    let err = stderr(&out);
    let want = format!("{}:6:5: unknown field `rolez`", file.display());
    assert!(err.contains(&want), "want {want:?} in\n{err}");
}
