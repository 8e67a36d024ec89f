//! The playbook engine against the real `LocalExecutor`, confined to a temp directory: file,
//! template, copy, line/block edits, hosts_file, commands with creates/changed_when, handlers,
//! check mode with diffs, the resume journal and the event log. Modules that change system
//! state (sysctl, hostname, swap, systemd, package) are tested only against sandbox nodes
//! (tests/install_sandbox.rs), never against this machine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clusterkit_core::exec::local::LocalExecutor;
use clusterkit_core::playbook::{self, Engine, HostTarget, Library, RunOptions, RunReport};
use serde_json::{json, Value};

fn target(name: &str) -> HostTarget {
    HostTarget {
        name: name.to_string(),
        address: "127.0.0.1".into(),
        roles: vec!["worker".into()],
        exec: Arc::new(LocalExecutor::new(name, Duration::from_secs(60))),
        vars: json!({"name": name, "address": "127.0.0.1", "roles": ["worker"]}),
    }
}

fn library(dir: &Path) -> Library {
    let mut lib = Library::new();
    lib.embed(
        "templates/app.conf",
        "name = {{ host.name }}\nport = {{ port }}\n",
    );
    lib.add_dir(dir);
    lib
}

fn playbook(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"
- name: files
  hosts: worker
  gather_facts: false
  vars:
    port: 8080
    conf_dir: "{d}/etc/app"
  tasks:
    - name: config dir
      file: {{ path: "{{{{ conf_dir }}}}", state: directory, mode: "0750" }}
    - name: config
      template: {{ src: app.conf, dest: "{{{{ conf_dir }}}}/app.conf", mode: "0640" }}
      notify: reload app
    - name: static file
      copy: {{ content: "hello\n", dest: "{d}/etc/app/hello.txt" }}
    - name: link
      file: {{ path: "{d}/etc/app/current", state: symlink, src: app.conf }}
    - name: a line
      line_in_file: {{ path: "{d}/etc/app/settings", regexp: "^level=", line: "level=3", create: true }}
    - name: a block
      block_in_file: {{ path: "{d}/etc/app/settings", block: "x=1\ny=2\n" }}
    - name: hosts
      hosts_file: {{ path: "{d}/etc/hosts" }}
    - name: once
      shell: {{ cmd: "echo ran >> {d}/ran.log && touch {d}/marker", creates: "{d}/marker" }}
    - name: query
      shell: "echo 42"
      register: answer
      changed_when: "false"
    - name: uses registered
      copy: {{ content: "answer={{{{ answer.stdout }}}}\n", dest: "{d}/answer" }}
    - name: skipped by when
      shell: "exit 1"
      when: "port == 1"
  handlers:
    - name: reload app
      shell: "echo reloaded >> {d}/handler.log"
"#
    )
}

async fn run(dir: &Path, text: &str, check: bool, resume: bool) -> (RunReport, Vec<Value>) {
    run_with(dir, text, check, resume, false).await
}

async fn run_with(
    dir: &Path,
    text: &str,
    check: bool,
    resume: bool,
    verify_all: bool,
) -> (RunReport, Vec<Value>) {
    let lib = library(dir);
    let pb = playbook::load_str("test.yaml", text, &lib).expect("playbook loads");
    let events = dir.join(format!("events-{}.jsonl", rand_suffix()));
    let engine = Engine::new(
        json!({"cluster": {"name": "t"}}),
        vec![
            ("n1".into(), "10.0.0.1".into()),
            ("n2".into(), "10.0.0.2".into()),
        ],
        RunOptions {
            check,
            resume,
            concurrency: 4,
            journal_dir: Some(dir.join("state/journal")),
            events: Some(events.clone()),
            verify_all,
            ..Default::default()
        },
    )
    .unwrap();
    engine.run(&pb, &[target("n1")]).await;
    let report = engine.finish();
    let events: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (report, events)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[tokio::test]
async fn converges_then_reports_nothing_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    let text = playbook(dir);

    let (r, events) = run(dir, &text, false, false).await;
    let h = &r.hosts["n1"];
    assert_eq!(h.failed, 0, "{}", r.table());
    assert!(h.changed >= 9, "{}", r.table());
    assert_eq!(read(dir, "etc/app/app.conf"), "name = n1\nport = 8080\n");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("etc/app/app.conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);
    let mode = std::fs::metadata(dir.join("etc/app"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o750);
    assert_eq!(
        std::fs::read_link(dir.join("etc/app/current"))
            .unwrap()
            .to_str(),
        Some("app.conf")
    );
    let settings = read(dir, "etc/app/settings");
    assert!(
        settings.starts_with("level=3\n# BEGIN CLUSTERKIT MANAGED BLOCK\nx=1\ny=2\n"),
        "{settings}"
    );
    let hosts = read(dir, "etc/hosts");
    assert!(
        hosts.starts_with("127.0.0.1 localhost\n") && hosts.contains("10.0.0.2 n2\n"),
        "{hosts}"
    );
    assert_eq!(read(dir, "answer"), "answer=42\n");
    assert_eq!(read(dir, "handler.log"), "reloaded\n");
    assert_eq!(read(dir, "ran.log"), "ran\n");
    // One event per task (+ the handler, + the summary), each with timing and commands.
    let tasks: Vec<&Value> = events.iter().filter(|e| e["kind"] == "task").collect();
    assert_eq!(tasks.len(), 11);
    assert!(tasks
        .iter()
        .all(|e| e["duration_ms"].is_u64() && e["commands"].is_u64()));
    assert_eq!(events.iter().filter(|e| e["kind"] == "handler").count(), 1);
    let skipped = tasks
        .iter()
        .find(|e| e["task"] == "skipped by when")
        .unwrap();
    assert_eq!(skipped["status"], "skipped");
    assert_eq!(skipped["commands"], 0);

    // Second run: nothing changes, the handler does not run, the command is not rerun.
    let (r, events) = run(dir, &text, false, false).await;
    let h = &r.hosts["n1"];
    assert_eq!((h.changed, h.failed), (0, 0), "{}", r.table());
    assert_eq!(read(dir, "handler.log"), "reloaded\n");
    assert_eq!(read(dir, "ran.log"), "ran\n");
    // The idempotent check of a file costs one remote command.
    let conf = events.iter().find(|e| e["task"] == "config").unwrap();
    assert_eq!(conf["commands"], 1, "{conf}");

    // Drift one file: check mode reports exactly it, with a diff, and changes nothing.
    std::fs::write(dir.join("etc/app/app.conf"), "name = n1\nport = 1\n").unwrap();
    let (r, events) = run(dir, &text, true, false).await;
    assert!(r.check);
    let changed: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "task" && e["status"] == "changed")
        .map(|e| e["task"].as_str().unwrap())
        .collect();
    assert_eq!(changed, ["config"], "{events:#?}");
    assert_eq!(read(dir, "etc/app/app.conf"), "name = n1\nport = 1\n");
    assert_eq!(
        read(dir, "handler.log"),
        "reloaded\n",
        "handlers must not run in check mode"
    );

    // A normal run repairs it and runs the handler once.
    let (r, _) = run(dir, &text, false, false).await;
    assert_eq!(r.hosts["n1"].changed, 2, "{}", r.table());
    assert_eq!(read(dir, "etc/app/app.conf"), "name = n1\nport = 8080\n");
    assert_eq!(read(dir, "handler.log"), "reloaded\nreloaded\n");
}

#[tokio::test]
async fn resume_skips_finished_tasks_and_keeps_pending_handlers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = dir.display();
    let text = |fail: bool| {
        format!(
            r#"
- name: resume
  hosts: all
  gather_facts: false
  tasks:
    - name: first
      copy: {{ content: "1\n", dest: "{d}/one" }}
      notify: h
    - name: count
      shell: "echo x >> {d}/count"
    - name: flaky
      shell: "{}"
    - name: last
      copy: {{ content: "3\n", dest: "{d}/three" }}
  handlers:
    - name: h
      shell: "echo h >> {d}/handler.log"
"#,
            if fail { "exit 3" } else { "true" }
        )
    };
    let (r, _) = run(dir, &text(true), false, false).await;
    let h = &r.hosts["n1"];
    assert_eq!(h.failed, 1);
    assert!(
        h.error.as_deref().unwrap().contains("flaky"),
        "{:?}",
        h.error
    );
    assert!(!dir.join("three").exists());
    assert!(
        !dir.join("handler.log").exists(),
        "handlers do not run on a failed host"
    );

    let (r, events) = run(dir, &text(false), false, true).await;
    let h = &r.hosts["n1"];
    assert_eq!((h.failed, h.skipped), (0, 2), "{}", r.table());
    assert_eq!(
        read(dir, "count"),
        "x\n",
        "a finished task must not run again"
    );
    assert_eq!(read(dir, "three"), "3\n");
    assert_eq!(
        read(dir, "handler.log"),
        "h\n",
        "the pending handler runs after resume"
    );
    let first = events.iter().find(|e| e["task"] == "first").unwrap();
    assert_eq!(first["status"], "skipped");
}

#[test]
fn bad_playbooks_fail_before_touching_hosts() {
    let lib = Library::new();
    let cases = [
        ("- name: p\n  hosts: all\n  tasks:\n    - name: a\n      shell: 'true'\n    - name: b\n      no_such_module: {}\n", 6, "no_such_module"),
        ("- name: p\n  hosts: all\n  tasks:\n    - name: b\n      copy: { content: x, dest: /x, colour: red }\n", 4, "colour"),
        ("- name: p\n  hosts: all\n  tasks:\n    - name: b\n      shell: \"echo {{ x \"\n", 4, "template"),
    ];
    for (text, line, needle) in cases {
        let err = playbook::load_str("site.yaml", text, &lib)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("site.yaml:{line}:")), "{err}");
        assert!(err.contains(needle), "{err}");
    }
}

/// Removes the stamps a test's large copies left on this machine (under the stamp directory, at
/// the temp directory's path), even when the test fails.
struct StampsOf(std::path::PathBuf);

impl Drop for StampsOf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // And the directories above it that this left empty, up to the stamp directory.
        let top = Path::new(clusterkit_core::playbook::modules::transfer::STAMP_DIR);
        for dir in self.0.ancestors().skip(1) {
            if !dir.starts_with(top) || std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

/// The message of the one `task` event named `name`.
fn task_message(events: &[Value], name: &str) -> (String, String) {
    let e = events
        .iter()
        .find(|e| e["kind"] == "task" && e["task"] == name)
        .unwrap_or_else(|| panic!("no event for {name}: {events:#?}"));
    (
        e["status"].as_str().unwrap_or("").to_string(),
        e["message"].as_str().unwrap_or("").to_string(),
    )
}

/// A large `copy` source (2 MiB) is checked by the stamp clusterkit keeps of what it wrote:
/// created once, then "up to date (stamp)" without hashing; a file touched by someone else is
/// re-hashed and reported; one rewritten by someone else is replaced and reported; check mode
/// changes nothing; `verify_all` hashes despite a good stamp.
#[tokio::test]
async fn large_copy_is_checked_by_its_stamp() {
    use clusterkit_core::playbook::modules::transfer::STAMP_DIR;
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _cleanup = StampsOf(Path::new(STAMP_DIR).join(dir.strip_prefix("/").unwrap()));
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    let dest = dir.join("out/big.bin");
    let d = dir.display();
    let text = format!(
        "- name: large\n  hosts: worker\n  gather_facts: false\n  tasks:\n    - name: big\n      \
         copy: {{ src: \"{d}/big.bin\", dest: \"{d}/out/big.bin\", mode: \"0755\" }}\n"
    );
    let stamp = format!("{STAMP_DIR}{}", dest.display());

    let (r, events) = run(dir, &text, false, false).await;
    assert_eq!(r.hosts["n1"].changed, 1, "{}", r.table());
    assert_eq!(std::fs::read(&dest).unwrap(), big);
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o755);
    assert!(task_message(&events, "big").1.starts_with("create "));
    let recorded = std::fs::read_to_string(&stamp).unwrap();
    let sha = clusterkit_core::playbook::modules::files::sha256_hex(&big);
    assert!(
        recorded.starts_with(&format!("{sha} {} ", big.len())),
        "{recorded}"
    );

    let (r, events) = run(dir, &text, false, false).await;
    assert_eq!(r.hosts["n1"].changed, 0, "{}", r.table());
    let (status, message) = task_message(&events, "big");
    assert_eq!(status, "ok");
    assert!(message.ends_with("is up to date (stamp)"), "{message}");

    // Touched by someone else: re-hashed and said so, nothing to change; the stamp is renewed.
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&dest)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let (r, events) = run(dir, &text, false, false).await;
    assert_eq!(r.hosts["n1"].changed, 0, "{}", r.table());
    let (_, message) = task_message(&events, "big");
    assert!(
        message.contains("changed on the host since clusterkit wrote it")
            && message.contains("content is as wanted"),
        "{message}"
    );
    let (_, message) = task_message(&run(dir, &text, false, false).await.1, "big");
    assert!(message.ends_with("(stamp)"), "{message}");

    // Rewritten by someone else: check mode reports it and changes nothing; a run restores it.
    std::fs::write(&dest, b"someone else's").unwrap();
    let (r, events) = run(dir, &text, true, false).await;
    assert_eq!(r.hosts["n1"].changed, 1, "{}", r.table());
    let (_, message) = task_message(&events, "big");
    assert!(
        message.starts_with("would update ") && message.contains("changed on the host"),
        "{message}"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"someone else's");
    let (r, events) = run(dir, &text, false, false).await;
    assert_eq!(r.hosts["n1"].changed, 1, "{}", r.table());
    assert!(task_message(&events, "big")
        .1
        .contains("changed on the host"));
    assert_eq!(std::fs::read(&dest).unwrap(), big);

    // verify_all hashes although the stamp vouches for the file.
    let (r, events) = run_with(dir, &text, false, false, true).await;
    assert_eq!(r.hosts["n1"].changed, 0, "{}", r.table());
    let (_, message) = task_message(&events, "big");
    assert!(message.ends_with("(hashed on the host)"), "{message}");
    let names: Vec<_> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temp files left: {names:?}");
}
