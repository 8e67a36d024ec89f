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
    let mut args = vec!["-q", "-t", kind, "-N", passphrase, "-C", "clusterkit-test", "-f"];
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
                 StrictModes no\nAllowTcpForwarding yes\nLogLevel DEBUG1\n",
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
        let up = common::wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
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
    let out = sh(&keygen(), &["-l", "-E", "sha256", "-f", pub_file.to_str().unwrap()]);
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
            ssh.run_checked(&Command::new(format!("sleep 0.2; echo out-{i}; echo err-{i} >&2")))
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
    assert!(text.contains("exited with 3") && text.contains("oops"), "{text}");
    assert_eq!(sshd.accepted_logins(), 1, "expected one SSH connection for all commands");
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
    assert!(text.contains(&real_fp) && text.contains(&other_fp), "{text}");
    assert_eq!(std::fs::read_to_string(&tampered).unwrap().lines().count(), 1);

    // Unknown host without TOFU: refused, file untouched.
    let unknown = sshd.path("kh_missing/known_hosts");
    let err = SshExecutor::connect(sshd.target(&unknown)).await.unwrap_err();
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
        let ssh = SshExecutor::connect(target)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
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
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
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
    assert!(log.contains("direct-tcpip") || log.contains("Connection from 127.0.0.1"), "{log}");
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
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
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
        matches!(err, ExecError::Connect { .. }) && err.to_string().contains(&target.port.to_string()),
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
