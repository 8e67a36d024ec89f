//! SSH executor tests against real OpenSSH servers.
//!
//! Two kinds of servers, both real:
//! - `Sshd`: an sshd this test starts on 127.0.0.1 with its own host key and config in a temp
//!   dir (fast; covers key types, known_hosts forms, jump host, timeouts, reconnect, agent);
//! - the nodes of a 3-node sandbox (systemd-nspawn + sshd), shared by the sandbox tests of this
//!   file, through the real `clusterkit` binary (ping, exec, sudo, stopped node...).
//!
//! Tools: `CLUSTERKIT_SSHD` (default /usr/sbin/sshd, package openssh-server),
//! `CLUSTERKIT_SSH_KEYGEN`, `CLUSTERKIT_SSH_AGENT`, `CLUSTERKIT_SSH_ADD` (package openssh-client).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clusterkit_core::exec::ssh::{Secret, SshAuth, SshExecutor, SshTarget, Sudo};
use clusterkit_core::exec::{Command, ExecError, Executor, UploadOptions};

fn keygen() -> PathBuf {
    common::tool("CLUSTERKIT_SSH_KEYGEN", Path::new("/usr/bin/ssh-keygen"))
}

/// Runs a tool and panics with its output when it fails.
fn sh(program: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generates a key pair `dir/name` (+ `.pub`); `passphrase` empty for none.
fn new_key(dir: &Path, name: &str, kind: &str, passphrase: &str) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec![
        "-q",
        "-t",
        kind,
        "-N",
        passphrase,
        "-C",
        "clusterkit-test",
        "-f",
    ];
    let p = path.to_str().unwrap().to_string();
    args.push(&p);
    if kind == "rsa" {
        args.extend(["-b", "2048"]);
    }
    sh(&keygen(), &args);
    path
}

fn pub_line(key: &Path) -> String {
    std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// A real sshd on 127.0.0.1, stopped (by PID) when dropped.
struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    /// The client key root may log in with (ed25519).
    key: PathBuf,
    /// `[127.0.0.1]:port ssh-ed25519 AAAA...`: the server's real known_hosts line.
    host_line: String,
    log: PathBuf,
    child: Option<common::Child>,
}

impl Sshd {
    fn start() -> Sshd {
        let sshd = common::tool("CLUSTERKIT_SSHD", Path::new("/usr/sbin/sshd"));
        // sshd insists on its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let host_key = new_key(dir.path(), "host_ed25519", "ed25519", "");
        let key = new_key(dir.path(), "id_ed25519", "ed25519", "");
        let mut authorized = String::new();
        for (name, kind, pass) in [
            ("id_ecdsa", "ecdsa", ""),
            ("id_rsa", "rsa", ""),
            ("id_locked", "ed25519", "s3cret phrase"),
        ] {
            let k = new_key(dir.path(), name, kind, pass);
            authorized.push_str(&pub_line(&k));
            authorized.push('\n');
        }
        authorized.push_str(&pub_line(&key));
        authorized.push('\n');
        std::fs::write(dir.path().join("authorized_keys"), authorized).unwrap();
        let port = common::free_port();
        let log = dir.path().join("sshd.log");
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nAllowTcpForwarding yes\nLogLevel DEBUG1\n\
                 SetEnv HOME={d}\n",
                // HOME: root's own shell start-up files on this machine (pyenv and the like)
                // must not write to the commands' stderr.
                hk = host_key.display(),
                d = dir.path().display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new(&sshd)
            .args(["-D", "-f"])
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", sshd.display()));
        let child = common::Child(child);
        let up = common::listens(port, Duration::from_secs(10));
        assert!(
            up,
            "sshd did not listen on {port}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let host_pub = pub_line(&host_key);
        let mut parts = host_pub.split_whitespace();
        let host_line = format!(
            "[127.0.0.1]:{port} {} {}",
            parts.next().unwrap(),
            parts.next().unwrap()
        );
        Sshd {
            dir,
            port,
            key,
            host_line,
            log,
            child: Some(child),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A known_hosts file with the given content.
    fn known_hosts(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn target(&self, known_hosts: &Path) -> SshTarget {
        SshTarget {
            name: "local".into(),
            address: "127.0.0.1".into(),
            port: self.port,
            user: "root".into(),
            auth: SshAuth::Key {
                path: self.key.clone(),
                passphrase: None,
            },
            sudo: None,
            known_hosts: known_hosts.to_path_buf(),
            trust_on_first_use: false,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_secs(30),
            jump: None,
        }
    }

    /// A target whose known_hosts holds the server's real key.
    fn good_target(&self) -> SshTarget {
        let kh = self.known_hosts("known_hosts", &format!("{}\n", self.host_line));
        self.target(&kh)
    }

    fn accepted_logins(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    fn listener_pid(&self) -> u32 {
        self.child.as_ref().unwrap().0.id()
    }
}

/// The SHA256 fingerprint of a public key file, as `ssh-keygen -l` prints it.
fn key_fingerprint(pub_file: &Path) -> String {
    let out = sh(
        &keygen(),
        &["-l", "-E", "sha256", "-f", pub_file.to_str().unwrap()],
    );
    out.split_whitespace().nth(1).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_concurrent_commands_share_one_connection() {
    let sshd = Sshd::start();
    let ssh = Arc::new(SshExecutor::connect(sshd.good_target()).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..24 {
        let ssh = ssh.clone();
        tasks.push(tokio::spawn(async move {
            ssh.run_checked(&Command::new(format!(
                "sleep 0.2; echo out-{i}; echo err-{i} >&2"
            )))
            .await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        let out = task.await.unwrap().unwrap();
        assert_eq!(out.stdout_str(), format!("out-{i}\n"));
        assert_eq!(out.stderr_str(), format!("err-{i}\n"));
    }
    // Exit status, stdin and a failing command keep everything.
    let out = ssh
        .run(&Command::new("tr a-z A-Z; exit 7").stdin("hello"))
        .await
        .unwrap();
    assert_eq!((out.status, out.stdout_str().as_str()), (Some(7), "HELLO"));
    let err = ssh
        .run_checked(&Command::new("echo oops >&2; exit 3"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("exited with 3") && text.contains("oops"),
        "{text}"
    );
    assert_eq!(
        sshd.accepted_logins(),
        1,
        "expected one SSH connection for all commands; sshd log:\n{}",
        std::fs::read_to_string(&sshd.log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_upload_download_atomic_with_mode() {
    let sshd = Sshd::start();
    let ssh = SshExecutor::connect(sshd.good_target()).await.unwrap();
    let dest = sshd.path("deep/dir/secret.txt");
    let dest_s = dest.to_str().unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let options = UploadOptions {
        mode: 0o600,
        owner: Some("root:root".into()),
        create_parents: true,
    };
    ssh.upload(&data, dest_s, &options).await.unwrap();
    assert_eq!(ssh.download(dest_s).await.unwrap(), data);
    let mode = ssh
        .sh(&format!("stat -c %a {}", dest.display()))
        .await
        .unwrap();
    assert_eq!(mode.trim(), "600");
    ssh.upload(b"second", dest_s, &options).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"second");
    let names: Vec<_> = std::fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "temp files left: {names:?}");
    let err = ssh.download("/nonexistent/file").await.unwrap_err();
    assert!(
        matches!(err, ExecError::Transfer { .. }) && err.to_string().contains("/nonexistent/file"),
        "{err}"
    );
}

/// `upload_shared`: a zstd frame is unpacked on the host (this machine's `zstd`, as on nodes);
/// one prepared content goes to several paths at once without copies; a size that does not
/// match and a damaged frame fail naming the path, and leave no file or temp file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_upload_shared_unpacks_and_checks() {
    use clusterkit_core::exec::{Encoding, SharedUpload};
    let sshd = Sshd::start();
    let ssh = Arc::new(SshExecutor::connect(sshd.good_target()).await.unwrap());
    let data: Vec<u8> = (0..3_000_000u32)
        .flat_map(|i| (i % 1000).to_le_bytes())
        .collect();
    let packed = SharedUpload::zstd(&data).unwrap();
    assert!(packed.data.len() < data.len() / 4, "{packed:?}");
    let options = UploadOptions {
        mode: 0o755,
        ..Default::default()
    };
    let uploads: Vec<_> = (0..3)
        .map(|i| {
            let ssh = ssh.clone();
            let packed = packed.clone();
            let dest = sshd.path(&format!("bin/tool{i}"));
            let options = options.clone();
            tokio::spawn(async move {
                ssh.upload_shared(&packed, dest.to_str().unwrap(), &options)
                    .await
                    .unwrap();
                dest
            })
        })
        .collect();
    for upload in uploads {
        let dest = upload.await.unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), data, "{}", dest.display());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }
    let raw = SharedUpload::raw(b"plain".to_vec());
    assert_eq!(raw.encoding, Encoding::Raw);
    let dest = sshd.path("bin/plain");
    ssh.upload_shared(&raw, dest.to_str().unwrap(), &options)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"plain");

    let mut short = packed.clone();
    short.size += 1;
    let bad = sshd.path("bin/short");
    let err = ssh
        .upload_shared(&short, bad.to_str().unwrap(), &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bin/short") && err.contains("expected"),
        "{err}"
    );
    let mut damaged = packed.clone();
    let mut bytes = damaged.data.to_vec();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    damaged.data = bytes.into();
    let err = ssh
        .upload_shared(&damaged, bad.to_str().unwrap(), &options)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("bin/short"), "{err}");
    let mut names: Vec<_> = std::fs::read_dir(sshd.path("bin"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["plain", "tool0", "tool1", "tool2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_known_hosts_rules() {
    let sshd = Sshd::start();
    let real_fp = key_fingerprint(&sshd.path("host_ed25519.pub"));

    // Tampered: the entry for this host holds another key -> hard error with both fingerprints.
    let other = new_key(sshd.dir.path(), "other_host", "ed25519", "");
    let other_pub = pub_line(&other);
    let other_fp = key_fingerprint(&other.with_extension("pub"));
    let mut parts = other_pub.split_whitespace();
    let tampered = sshd.known_hosts(
        "kh_tampered",
        &format!(
            "[127.0.0.1]:{} {} {}\n",
            sshd.port,
            parts.next().unwrap(),
            parts.next().unwrap()
        ),
    );
    let mut target = sshd.target(&tampered);
    target.trust_on_first_use = true; // TOFU never overrides a mismatch
    let err = SshExecutor::connect(target).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ExecError::HostKeyMismatch { .. }), "{text}");
    assert!(
        text.contains(&real_fp) && text.contains(&other_fp),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&tampered).unwrap().lines().count(),
        1
    );

    // Unknown host without TOFU: refused, file untouched.
    let unknown = sshd.path("kh_missing/known_hosts");
    let err = SshExecutor::connect(sshd.target(&unknown))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::UnknownHostKey { .. }), "{err}");
    assert!(err.to_string().contains(&real_fp), "{err}");
    assert!(!unknown.exists());

    // With TOFU: accepted and recorded (file created 0600), then known without TOFU.
    let mut target = sshd.target(&unknown);
    target.trust_on_first_use = true;
    SshExecutor::connect(target).await.unwrap();
    let recorded = std::fs::read_to_string(&unknown).unwrap();
    assert_eq!(recorded.trim(), sshd.host_line, "{recorded}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&unknown).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    SshExecutor::connect(sshd.target(&unknown)).await.unwrap();

    // Hashed entries as `ssh-keygen -H` writes them are recognised.
    let hashed = sshd.known_hosts("kh_hashed", &format!("{}\n", sshd.host_line));
    sh(&keygen(), &["-q", "-H", "-f", hashed.to_str().unwrap()]);
    let text = std::fs::read_to_string(&hashed).unwrap();
    assert!(text.starts_with("|1|"), "{text}");
    let ssh = SshExecutor::connect(sshd.target(&hashed)).await.unwrap();
    assert_eq!(ssh.sh("echo ok").await.unwrap(), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_key_types_passphrase_agent_and_wrong_key() {
    let sshd = Sshd::start();
    let base = sshd.good_target();
    for name in ["id_ecdsa", "id_rsa"] {
        let mut target = base.clone();
        target.auth = SshAuth::Key {
            path: sshd.path(name),
            passphrase: None,
        };
        let mut result = SshExecutor::connect(target.clone()).await;
        // ssh-key 0.7.0-rc.11 cannot load ~1 ECDSA key in 500 (short private scalar): the
        // error says so; such a key is replaced by a new one, once or twice at most.
        for _ in 0..5 {
            match &result {
                Err(e) if name == "id_ecdsa" && e.to_string().contains("length invalid") => {
                    assert!(e.to_string().contains("known bug"), "{e}");
                    std::fs::remove_file(sshd.path(name)).unwrap();
                    std::fs::remove_file(sshd.path("id_ecdsa.pub")).unwrap();
                    let key = new_key(sshd.dir.path(), name, "ecdsa", "");
                    let mut authorized =
                        std::fs::read_to_string(sshd.path("authorized_keys")).unwrap();
                    authorized.push_str(&format!("{}\n", pub_line(&key)));
                    std::fs::write(sshd.path("authorized_keys"), authorized).unwrap();
                    result = SshExecutor::connect(target.clone()).await;
                }
                _ => break,
            }
        }
        let ssh = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ssh.sh("whoami").await.unwrap(), "root\n", "{name}");
    }

    // Encrypted key: works with the passphrase, fails clearly without it or with a wrong one.
    let mut target = base.clone();
    target.auth = SshAuth::Key {
        path: sshd.path("id_locked"),
        passphrase: Some(Secret::new("s3cret phrase")),
    };
    SshExecutor::connect(target.clone()).await.unwrap();
    target.auth = SshAuth::Key {
        path: sshd.path("id_locked"),
        passphrase: Some(Secret::new("wrong phrase")),
    };
    let err = SshExecutor::connect(target).await.unwrap_err();
    assert!(matches!(err, ExecError::Auth { .. }), "{err}");
    assert!(!err.to_string().contains("wrong phrase"), "{err}");

    // A key the server does not know: a clear authentication error naming the key.
    let stranger = new_key(sshd.dir.path(), "id_stranger", "ed25519", "");
    let mut target = base.clone();
    target.auth = SshAuth::Key {
        path: stranger.clone(),
        passphrase: None,
    };
    let err = SshExecutor::connect(target).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ExecError::Auth { .. }), "{text}");
    assert!(
        text.contains("refused key") && text.contains("id_stranger") && text.contains("root"),
        "{text}"
    );

    // ssh-agent holding the ecdsa key.
    let agent_bin = common::tool("CLUSTERKIT_SSH_AGENT", Path::new("/usr/bin/ssh-agent"));
    let add_bin = common::tool("CLUSTERKIT_SSH_ADD", Path::new("/usr/bin/ssh-add"));
    let sock = sshd.path("agent.sock");
    let agent = common::Child(
        std::process::Command::new(agent_bin)
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(common::wait_until(Duration::from_secs(5), || sock.exists()));
    let added = std::process::Command::new(add_bin)
        .arg(sshd.path("id_ecdsa"))
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    // Only this test uses SSH_AUTH_SOCK in this process.
    std::env::set_var("SSH_AUTH_SOCK", &sock);
    let mut target = base.clone();
    target.auth = SshAuth::Agent;
    let ssh = SshExecutor::connect(target).await.unwrap();
    assert_eq!(ssh.sh("echo via-agent").await.unwrap(), "via-agent\n");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_jump_host() {
    let sshd = Sshd::start();
    let mut target = sshd.good_target();
    // Through the same sshd: a direct-tcpip channel to 127.0.0.1:port, then SSH inside it.
    target.name = "behind-jump".into();
    target.jump = Some(Box::new(sshd.good_target()));
    let ssh = SshExecutor::connect(target).await.unwrap();
    assert_eq!(ssh.sh("echo through").await.unwrap(), "through\n");
    assert_eq!(sshd.accepted_logins(), 2, "jump + target logins");
    let log = std::fs::read_to_string(&sshd.log).unwrap();
    assert!(
        log.contains("direct-tcpip") || log.contains("Connection from 127.0.0.1"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_timeouts_and_reconnect() {
    let sshd = Sshd::start();
    let ssh = SshExecutor::connect(sshd.good_target()).await.unwrap();

    // Command timeout: Timeout error, the remote command is gone, the connection still works.
    let marker = sshd.path("late-marker");
    let started = Instant::now();
    let err = ssh
        .run(
            &Command::new(format!("sleep 3 && touch {}", marker.display()))
                .timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(ssh.sh("echo still-here").await.unwrap(), "still-here\n");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        !marker.exists(),
        "the timed-out command kept running; sshd log:\n{}",
        std::fs::read_to_string(&sshd.log).unwrap_or_default()
    );

    // Dropped connection: kill the server-side session process; the next command reconnects.
    let listener = sshd.listener_pid();
    let children = sh(Path::new("/usr/bin/pgrep"), &["-P", &listener.to_string()]);
    for pid in children.split_whitespace() {
        sh(Path::new("/bin/kill"), &["-KILL", pid]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ssh.sh("echo reconnected").await.unwrap(), "reconnected\n");
    assert_eq!(sshd.accepted_logins(), 2);

    // Connect timeout: a TCP server that accepts but never speaks SSH.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut target = sshd.good_target();
    target.port = silent.local_addr().unwrap().port();
    target.connect_timeout = Duration::from_millis(700);
    let started = Instant::now();
    let err = SshExecutor::connect(target).await.unwrap_err();
    assert!(matches!(err, ExecError::ConnectTimeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));

    // Nothing listening: a connect error naming the address, not a hang.
    let mut target = sshd.good_target();
    target.port = common::free_port();
    let err = SshExecutor::connect(target.clone()).await.unwrap_err();
    assert!(
        matches!(err, ExecError::Connect { .. })
            && err.to_string().contains(&target.port.to_string()),
        "{err}"
    );
}

/// sudo without a configured password on a root target is simply not used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sudo_ignored_for_root() {
    let sshd = Sshd::start();
    let mut target = sshd.good_target();
    target.sudo = Some(Sudo {
        password: Some(Secret::new("unused")),
    });
    let ssh = SshExecutor::connect(target).await.unwrap();
    let out = ssh
        .run_checked(&Command::new("cat; id -u").stdin("in\n"))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "in\n0\n");
}

// ---------------------------------------------------------------------------------------------
// Against a 3-node sandbox: one sandbox for all the checks below (bringing nodes up is the
// expensive part), torn down by the guard even when a check fails.
// ---------------------------------------------------------------------------------------------

/// A copy of the sandbox's cluster.yaml, key and known_hosts in a temp dir, to be edited.
struct Variant {
    dir: tempfile::TempDir,
    yaml: String,
}

impl Variant {
    fn new(sb: &clusterkit_sandbox::Sandbox) -> Variant {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_ed25519");
        std::fs::copy(sb.key_file(), &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::copy(sb.known_hosts(), dir.path().join("known_hosts")).unwrap();
        let yaml = std::fs::read_to_string(sb.cluster_yaml()).unwrap();
        Variant { dir, yaml }
    }

    /// Replaces `old` (which must occur) by `new` in cluster.yaml.
    fn edit(mut self, old: &str, new: &str) -> Variant {
        assert!(self.yaml.contains(old), "{old:?} not in:\n{}", self.yaml);
        self.yaml = self.yaml.replacen(old, new, 1);
        self
    }

    /// Replaces a host's `user: root` + key auth lines by `lines` (YAML at host indentation).
    fn host_auth(self, node: &str, lines: &str) -> Variant {
        let start = self.yaml.find(&format!("- name: {node}\n")).unwrap();
        let rest = &self.yaml[start..];
        let block_end = rest[2..]
            .find("  - name:")
            .map(|i| i + 2)
            .unwrap_or_else(|| rest.find("kubernetes:").unwrap());
        let block = &rest[..block_end];
        let new_block = block
            .replace("    user: root\n", "")
            .replace("    auth: { key_file: ./id_ed25519 }\n", lines);
        let yaml = format!("{}{}{}", &self.yaml[..start], new_block, &rest[block_end..]);
        Variant { yaml, ..self }
    }

    fn known_hosts_path(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// Writes cluster.yaml and returns its path.
    fn write(&self) -> PathBuf {
        let path = self.dir.path().join("cluster.yaml");
        std::fs::write(&path, &self.yaml).unwrap();
        path
    }
}

fn node_address(sb: &clusterkit_sandbox::Sandbox, node: &str) -> String {
    sb.node(node).unwrap().address.to_string()
}

/// Runs `clusterkit exec -o json` and returns (success, per-host JSON by host name, stderr).
fn exec_json(
    cluster: &Path,
    extra: &[&str],
    command: &str,
    env: &[(&str, &str)],
) -> (
    bool,
    std::collections::BTreeMap<String, serde_json::Value>,
    String,
) {
    let mut cmd = common::clusterkit();
    cmd.arg("exec")
        .arg("-f")
        .arg(cluster)
        .args(["-o", "json"])
        .args(extra);
    cmd.args(["--", command]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{}\n{e}", common::describe(&cmd, &out, "bad JSON")));
    let map = rows
        .into_iter()
        .map(|r| (r["host"].as_str().unwrap().to_string(), r))
        .collect();
    (out.status.success(), map, common::stderr(&out))
}

#[test]
fn sandbox_three_nodes() {
    use clusterkit_sandbox::{SandboxGuard, UpOptions};
    let mut sb = SandboxGuard::up(UpOptions::new("sshtest", 3)).expect("sandbox up");
    let cluster = sb.cluster_yaml();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // 1. exec on all nodes in parallel: every node answers with its own hostname.
    let (ok, rows, stderr) = exec_json(&cluster, &[], "hostname", &[]);
    assert!(ok, "{stderr}");
    for node in ["node1", "node2", "node3"] {
        assert_eq!(rows[node]["stdout"], format!("{node}\n"), "{rows:?}");
        assert_eq!(rows[node]["exit_status"], 0);
    }
    // Table output groups by host.
    let out = common::run_ok(
        common::clusterkit()
            .arg("exec")
            .arg("-f")
            .arg(&cluster)
            .args(["--hosts", "node1,node3", "--", "echo", "hi"]),
    );
    let text = common::stdout(&out);
    assert!(
        text.contains("==> node1 (exit 0") && text.contains("==> node3 (exit 0"),
        "{text}"
    );
    assert!(!text.contains("node2"), "{text}");

    // 2. ping: facts from every node.
    let out = common::run_ok(
        common::clusterkit()
            .arg("ping")
            .arg("-f")
            .arg(&cluster)
            .args(["-o", "json"]),
    );
    let facts: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(facts.len(), 3);
    for f in &facts {
        assert_eq!(f["ok"], true, "{f}");
        assert_eq!(f["facts"]["hostname"], f["host"], "{f}");
        assert_eq!(f["facts"]["os_id"], "debian", "{f}");
        assert!(f["facts"]["cpus"].as_u64().unwrap() >= 1, "{f}");
    }
    let uuids: std::collections::BTreeSet<String> = facts
        .iter()
        .map(|f| {
            f["facts"]["machine_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(uuids.len(), 3, "machine ids must differ: {uuids:?}");

    // 3. Through the library API other crates use (connect_all + Fanout::run): upload a file
    //    with mode 0600 to every node in parallel, read it back, check the mode on the node.
    let loaded = clusterkit_core::config::load(&cluster).unwrap();
    let hosts = loaded.cluster.select(&[], &[]).unwrap();
    rt.block_on(async {
        use clusterkit_core::fanout::{self, Fanout};
        let fan = Fanout::new("upload", 3);
        let connected = fanout::connect_all(&loaded.cluster, &hosts, &fan).await;
        fanout::check(&connected).unwrap();
        let executors: Vec<_> = connected
            .into_iter()
            .map(|r| (r.host, r.result.unwrap()))
            .collect();
        let results = fan
            .run(executors, |ssh| async move {
                let options = UploadOptions {
                    mode: 0o600,
                    owner: None,
                    create_parents: true,
                };
                let body = format!("secret of {}\n", ssh.host());
                let path = "/etc/clusterkit-test/secret.txt";
                ssh.upload(body.as_bytes(), path, &options).await?;
                let back = ssh.download(path).await?;
                let mode = ssh.sh(&format!("stat -c '%a %U' {path}")).await?;
                Ok::<_, ExecError>((body.into_bytes() == back, mode))
            })
            .await;
        fanout::check(&results).unwrap();
        for r in results {
            let (same, mode) = r.result.unwrap();
            assert!(same, "{}: downloaded content differs", r.host);
            assert_eq!(mode.trim(), "600 root", "{}", r.host);
        }
    });

    // 4. Tampered known_hosts entry for node2: refused, both fingerprints named; others fine.
    let addr2 = node_address(&sb, "node2");
    let variant = Variant::new(&sb);
    let kh = std::fs::read_to_string(variant.known_hosts_path()).unwrap();
    let real_line = kh
        .lines()
        .find(|l| l.starts_with(&format!("{addr2} ssh-ed25519 ")))
        .unwrap()
        .to_string();
    let real_pub = variant.dir.path().join("real.pub");
    std::fs::write(&real_pub, real_line.split_once(' ').unwrap().1).unwrap();
    let real_fp = key_fingerprint(&real_pub);
    let fake = new_key(variant.dir.path(), "fake_host", "ed25519", "");
    let fake_fp = key_fingerprint(&fake.with_extension("pub"));
    let fake_pub = pub_line(&fake);
    let mut fake_parts = fake_pub.split_whitespace();
    let tampered: String = kh
        .lines()
        .filter(|l| !l.starts_with(&format!("{addr2} ")))
        .map(|l| format!("{l}\n"))
        .chain([format!(
            "{addr2} {} {}\n",
            fake_parts.next().unwrap(),
            fake_parts.next().unwrap()
        )])
        .collect();
    std::fs::write(variant.known_hosts_path(), tampered).unwrap();
    let (ok, rows, stderr) = exec_json(&variant.write(), &[], "true", &[]);
    assert!(!ok);
    assert!(stderr.contains("1 of 3 hosts failed: node2"), "{stderr}");
    let err = rows["node2"]["error"].as_str().unwrap();
    assert!(
        err.contains("HOST KEY MISMATCH") && err.contains(&real_fp) && err.contains(&fake_fp),
        "{err}"
    );
    assert_eq!(rows["node1"]["ok"], true);

    // 5. Unknown host (node3 missing from known_hosts): refused without TOFU...
    let addr3 = node_address(&sb, "node3");
    let variant = Variant::new(&sb);
    let kh = std::fs::read_to_string(variant.known_hosts_path()).unwrap();
    let without3: String = kh
        .lines()
        .filter(|l| !l.starts_with(&format!("{addr3} ")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(variant.known_hosts_path(), &without3).unwrap();
    let (ok, rows, stderr) = exec_json(&variant.write(), &[], "true", &[]);
    assert!(
        !ok && stderr.contains("1 of 3 hosts failed: node3"),
        "{stderr}"
    );
    assert!(
        rows["node3"]["error"]
            .as_str()
            .unwrap()
            .contains("unknown host key"),
        "{rows:?}"
    );
    assert_eq!(
        std::fs::read_to_string(variant.known_hosts_path()).unwrap(),
        without3
    );
    // ... accepted and recorded with it, then known without it.
    let variant = variant.edit("trust_on_first_use: false", "trust_on_first_use: true");
    let (ok, _, stderr) = exec_json(&variant.write(), &[], "true", &[]);
    assert!(ok, "{stderr}");
    let recorded = std::fs::read_to_string(variant.known_hosts_path()).unwrap();
    assert!(
        recorded
            .lines()
            .any(|l| l.starts_with(&format!("{addr3} "))),
        "{recorded}"
    );
    let variant = variant.edit("trust_on_first_use: true", "trust_on_first_use: false");
    let (ok, _, stderr) = exec_json(&variant.write(), &[], "true", &[]);
    assert!(ok, "{stderr}");

    // 6. Wrong key: a clear authentication error on every host.
    let variant = Variant::new(&sb);
    let stranger = new_key(variant.dir.path(), "id_stranger", "ed25519", "");
    std::fs::copy(&stranger, variant.dir.path().join("id_ed25519")).unwrap();
    let (ok, rows, stderr) = exec_json(&variant.write(), &[], "true", &[]);
    assert!(!ok && stderr.contains("3 of 3 hosts failed"), "{stderr}");
    let err = rows["node1"]["error"].as_str().unwrap();
    assert!(
        err.contains("authentication as root failed") && err.contains("refused key"),
        "{err}"
    );

    // 6b. Jump host: node2 and node3 reached through node1 (direct-tcpip channels).
    let addr1 = node_address(&sb, "node1");
    let variant = Variant::new(&sb).edit(
        "  connect_timeout_secs: 10\n",
        &format!(
            "  connect_timeout_secs: 10\n  jump_host: {{ address: \"{addr1}\", user: root, auth: {{ key_file: ./id_ed25519 }} }}\n"
        ),
    );
    let (ok, rows, stderr) = exec_json(
        &variant.write(),
        &["--hosts", "node2,node3"],
        "hostname; echo $SSH_CONNECTION",
        &[],
    );
    assert!(ok, "{stderr}");
    for node in ["node2", "node3"] {
        let out = rows[node]["stdout"].as_str().unwrap();
        // The connection comes from node1's address, not from the host's bridge address.
        assert!(
            out.starts_with(&format!("{node}\n{addr1} ")),
            "{node}: {out}"
        );
    }

    // 7. sudo as a non-root user with a password (sudoers without NOPASSWD).
    let password = "Ck-sudo-pw-7781";
    let (ok, _, stderr) = exec_json(
        &cluster,
        &["--hosts", "node2"],
        &format!(
            "useradd -m -s /bin/bash ops && echo 'ops:{password}' | chpasswd && \
             echo 'ops ALL=(ALL) ALL' > /etc/sudoers.d/ops && chmod 0440 /etc/sudoers.d/ops"
        ),
        &[],
    );
    assert!(ok, "creating user ops: {stderr}");
    let ops = Variant::new(&sb).host_auth(
        "node2",
        "    user: ops\n    auth: { password_env: CK_TEST_OPS_PASS }\n    become: { method: sudo, password_env: CK_TEST_OPS_SUDO }\n",
    );
    let ops_yaml = ops.write();
    let mut cmd = common::clusterkit();
    cmd.arg("-vvv")
        .arg("exec")
        .arg("-f")
        .arg(&ops_yaml)
        .args([
            "--hosts",
            "node2",
            "--",
            "id -un; head -c 4 /etc/shadow; echo",
        ])
        .env("CK_TEST_OPS_PASS", password)
        .env("CK_TEST_OPS_SUDO", password);
    let out = common::run_ok(&mut cmd);
    let stdout = common::stdout(&out);
    let stderr = common::stderr(&out);
    assert!(stdout.contains("root\nroot"), "{stdout}");
    assert!(
        !stderr.contains(password),
        "password leaked to stderr with -vvv"
    );
    assert!(!stdout.contains(password), "password leaked to stdout");
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "no debug logs?\n{stderr}"
    );

    // Through the library: stdin reaches the command untouched (the password never leaks into
    // it, also when sudo has cached credentials), and uploads as root work.
    let loaded = clusterkit_core::config::load(&ops_yaml).unwrap();
    let node2 = loaded.cluster.host("node2").unwrap();
    std::env::set_var("CK_TEST_OPS_PASS", password);
    std::env::set_var("CK_TEST_OPS_SUDO", password);
    let target = clusterkit_core::inventory::ssh_target(&loaded.cluster, node2).unwrap();
    rt.block_on(async {
        let ssh = SshExecutor::connect(target.clone()).await.unwrap();
        for _ in 0..2 {
            let out = ssh
                .run_checked(&Command::new("cat; id -u").stdin("line one\n"))
                .await
                .unwrap();
            assert_eq!(out.stdout_str(), "line one\n0\n");
            assert!(!out.stderr_str().contains(password));
        }
        ssh.upload(
            b"root only\n",
            "/root/ck-upload",
            &UploadOptions {
                mode: 0o600,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            ssh.sh("stat -c '%a %U' /root/ck-upload").await.unwrap(),
            "600 root\n"
        );
        assert_eq!(
            ssh.download("/root/ck-upload").await.unwrap(),
            b"root only\n"
        );

        // A wrong sudo password is reported as such, without the password.
        let mut wrong = target.clone();
        wrong.sudo = Some(Sudo {
            password: Some(Secret::new("not-the-password")),
        });
        let ssh = SshExecutor::connect(wrong).await.unwrap();
        let err = ssh.run(&Command::new("true")).await.unwrap_err();
        assert!(err.to_string().contains("sudo rejected"), "{err}");
        assert!(!err.to_string().contains("not-the-password"));
    });

    // 8. Wrong password: a clear authentication error.
    let mut cmd = common::clusterkit();
    cmd.arg("exec")
        .arg("-f")
        .arg(&ops_yaml)
        .args(["--hosts", "node2", "--", "true"])
        .env("CK_TEST_OPS_PASS", "wrong-password-42")
        .env("CK_TEST_OPS_SUDO", password);
    let out = common::run_fail(&mut cmd);
    let all = format!("{}{}", common::stdout(&out), common::stderr(&out));
    assert!(
        all.contains("authentication as ops failed") && all.contains("refused the password"),
        "{all}"
    );
    assert!(!all.contains("wrong-password-42"));

    // 9. A stopped node fails within the connect timeout while the others succeed.
    sb.stop_node("node3").unwrap();
    let variant = Variant::new(&sb).edit("connect_timeout_secs: 10", "connect_timeout_secs: 3");
    let started = Instant::now();
    let (ok, rows, stderr) = exec_json(&variant.write(), &[], "hostname", &[]);
    let elapsed = started.elapsed();
    assert!(
        !ok && stderr.contains("1 of 3 hosts failed: node3"),
        "{stderr}"
    );
    assert_eq!(rows["node1"]["stdout"], "node1\n");
    assert_eq!(rows["node2"]["stdout"], "node2\n");
    // Bounded by the 3 s connect timeout (plus process start-up), not by TCP's minutes.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    let err = rows["node3"]["error"].as_str().unwrap();
    assert!(err.contains("node3") && err.contains(&addr3), "{err}");
}
