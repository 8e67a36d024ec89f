//! Integration tests of the PKI and kubeconfigs: every chain checked by the real `openssl`,
//! subjects, SANs and key usages compared with what kubeadm issues, idempotence, renewal, file
//! modes — and a smoke test that runs real etcd (TLS) and kube-apiserver on loopback with the
//! generated PKI and the flags from `versions.rs`.

use std::collections::BTreeMap;
use std::net::{IpAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use clusterkit_core::layout::{Component, StateLayout};
use clusterkit_core::release::KubeVersion;
use clusterkit_installer::kubeconfig::{self, Kubeconfig};
use clusterkit_installer::pki::{
    self, Action, CertSpec, Host, Mode, PkiInput, Report, Validity, DAY,
};
use clusterkit_installer::versions::{self, FlagInput};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cluster(version: &str, n: usize) -> PkiInput {
    let hosts: Vec<Host> = (1..=n)
        .map(|i| Host::new(&format!("cp{i}"), ip(&format!("10.213.0.{}", 10 + i))))
        .collect();
    PkiInput {
        cluster_name: "demo".into(),
        version: KubeVersion::parse(version).unwrap(),
        control_plane: hosts.clone(),
        etcd: hosts.clone(),
        control_plane_endpoint: "api.demo.internal:6443".parse().unwrap(),
        apiserver_port: 6443,
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        dns_domain: "cluster.local".into(),
        kubelet_nodes: hosts,
        node_api_server: None,
        validity: Validity::default(),
    }
}

fn ensure_all(input: &PkiInput, layout: &StateLayout) -> Report {
    let mut r = pki::ensure(input, layout, Mode::Apply).expect("pki::ensure");
    r.extend(kubeconfig::ensure(input, layout, Mode::Apply).expect("kubeconfig::ensure"));
    r
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (is it installed? scripts/deps.sh installs it)")
    })
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value lines of one X.509 extension as openssl prints it ("" when absent).
fn openssl_ext(cert: &Path, ext: &str) -> String {
    let out = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-ext", ext, "-in"])
            .arg(cert),
    );
    out.lines()
        .skip(1)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

fn openssl_subject(cert: &Path) -> String {
    run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(cert),
    )
    .trim()
    .trim_start_matches("subject=")
    .to_string()
}

fn sans(cert: &Path) -> (Vec<String>, Vec<IpAddr>) {
    let (mut dns, mut ips) = (vec![], vec![]);
    for item in openssl_ext(cert, "subjectAltName")
        .split(", ")
        .filter(|s| !s.is_empty())
    {
        if let Some(d) = item.strip_prefix("DNS:") {
            dns.push(d.to_string());
        } else if let Some(a) = item.strip_prefix("IP Address:") {
            ips.push(a.parse().unwrap_or_else(|_| panic!("bad IP SAN {a}")));
        } else {
            panic!("unexpected SAN {item}");
        }
    }
    dns.sort();
    ips.sort();
    (dns, ips)
}

fn sorted<T: Ord + Clone>(v: &[T]) -> Vec<T> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn openssl_verify(ca: &Path, cert: &Path) {
    let out = run_ok(
        Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(ca)
            .arg(cert),
    );
    assert!(
        out.trim().ends_with(": OK"),
        "openssl verify {}: {out}",
        cert.display()
    );
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn ca_file(layout: &StateLayout, spec: &CertSpec) -> PathBuf {
    layout.pki_dir().join(format!("{}.crt", spec.ca.base()))
}

#[test]
fn full_pki_matches_kubeadm_and_verifies_with_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = StateLayout::new(tmp.path().join("demo-state"));
    let input = cluster("v1.20.2", 3);
    let report = ensure_all(&input, &layout);
    assert!(
        report.items.iter().all(|i| i.action == Action::Created),
        "{report:#?}"
    );

    // CAs: self-signed, CA:TRUE, kubeadm's CNs and key usages.
    for (base, cn) in [
        ("ca", "kubernetes"),
        ("front-proxy-ca", "front-proxy-ca"),
        ("etcd/ca", "etcd-ca"),
    ] {
        let crt = layout.pki_dir().join(format!("{base}.crt"));
        openssl_verify(&crt, &crt);
        assert_eq!(openssl_subject(&crt), format!("CN = {cn}"));
        assert!(
            openssl_ext(&crt, "basicConstraints").contains("CA:TRUE"),
            "{base}"
        );
        assert_eq!(
            openssl_ext(&crt, "keyUsage"),
            "Digital Signature, Key Encipherment, Certificate Sign",
            "{base}"
        );
    }

    // Leaves, against an independent statement of what kubeadm 1.20 issues.
    let expect: Vec<(&str, &str, &str)> = vec![
        (
            "pki/apiserver",
            "CN = kube-apiserver",
            "TLS Web Server Authentication",
        ),
        (
            "pki/apiserver-kubelet-client",
            "O = system:masters, CN = kube-apiserver-kubelet-client",
            "TLS Web Client Authentication",
        ),
        (
            "pki/front-proxy-client",
            "CN = front-proxy-client",
            "TLS Web Client Authentication",
        ),
        (
            "pki/etcd/healthcheck-client",
            "O = system:masters, CN = kube-etcd-healthcheck-client",
            "TLS Web Client Authentication",
        ),
        (
            "pki/etcd/metrics-client",
            "CN = clusterkit-etcd-metrics",
            "TLS Web Client Authentication",
        ),
        (
            "pki/apiserver-etcd-client",
            "O = system:masters, CN = kube-apiserver-etcd-client",
            "TLS Web Client Authentication",
        ),
        (
            "hosts/cp2/pki/etcd/server",
            "CN = cp2",
            "TLS Web Server Authentication, TLS Web Client Authentication",
        ),
        (
            "hosts/cp3/pki/etcd/peer",
            "CN = cp3",
            "TLS Web Server Authentication, TLS Web Client Authentication",
        ),
    ];
    let specs = pki::cert_specs(&input);
    assert_eq!(specs.len(), 6 + 2 * 3, "{specs:#?}");
    for (base, subject, eku) in expect {
        let spec = specs
            .iter()
            .find(|s| s.base == Path::new(base))
            .unwrap_or_else(|| panic!("{base}"));
        let crt = spec.cert_path(&layout);
        assert_eq!(openssl_subject(&crt), subject, "{base}");
        assert_eq!(openssl_ext(&crt, "extendedKeyUsage"), eku, "{base}");
    }
    for spec in &specs {
        let crt = spec.cert_path(&layout);
        openssl_verify(&ca_file(&layout, spec), &crt);
        assert!(
            openssl_ext(&crt, "basicConstraints").contains("CA:FALSE"),
            "{}",
            spec.name
        );
        assert_eq!(
            openssl_ext(&crt, "keyUsage"),
            "Digital Signature, Key Encipherment",
            "{}",
            spec.name
        );
        // Each leaf chains to its own CA only.
        let other = if spec.ca == pki::CaName::Etcd {
            "ca.crt"
        } else {
            "etcd/ca.crt"
        };
        let out = run(Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(layout.pki_dir().join(other))
            .arg(&crt));
        assert!(
            !out.status.success(),
            "{} must not verify against {other}",
            spec.name
        );
    }

    // SANs: kubeadm's GetAPIServerAltNames for every control-plane host, plus the endpoint.
    let (dns, ips) = sans(&layout.pki_dir().join("apiserver.crt"));
    assert_eq!(
        dns,
        sorted(
            &[
                "api.demo.internal",
                "cp1",
                "cp2",
                "cp3",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(String::from)
        )
    );
    assert_eq!(
        ips,
        sorted(
            &[
                "10.213.0.11",
                "10.213.0.12",
                "10.213.0.13",
                "10.96.0.1",
                "127.0.0.1"
            ]
            .map(ip)
        )
    );
    // etcd server and peer: kubeadm's getAltNames.
    for kind in ["server", "peer"] {
        let (dns, ips) = sans(&layout.host_dir("cp2").join(format!("pki/etcd/{kind}.crt")));
        assert_eq!(dns, ["cp2", "localhost"]);
        assert_eq!(
            ips,
            sorted(&[ip("10.213.0.12"), ip("127.0.0.1"), ip("::1")])
        );
    }
    // Client certs have no SANs.
    assert_eq!(
        openssl_ext(
            &layout.pki_dir().join("apiserver-etcd-client.crt"),
            "subjectAltName"
        ),
        ""
    );

    // sa.pub is sa.key's public half.
    let derived = run_ok(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(layout.pki_dir().join("sa.key")),
    );
    assert_eq!(
        derived,
        std::fs::read_to_string(layout.pki_dir().join("sa.pub")).unwrap()
    );

    // Every private key and kubeconfig is 0600; certificates 0644.
    for (path, _) in snapshot(&layout.root) {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        let name = path.to_string_lossy();
        if name.ends_with(".key") || name.ends_with(".conf") {
            assert_eq!(mode, 0o600, "{name}");
        } else {
            assert_eq!(mode, 0o644, "{name}");
        }
    }

    // What a control-plane node and a pure etcd node receive.
    let cp = pki::host_files(&layout, "cp1", true, true);
    let remote: Vec<_> = cp.iter().map(|f| f.remote.display().to_string()).collect();
    for want in [
        "/etc/kubernetes/pki/ca.key",
        "/etc/kubernetes/pki/sa.pub",
        "/etc/kubernetes/pki/etcd/server.crt",
        "/etc/kubernetes/pki/etcd/peer.key",
        "/etc/kubernetes/controller-manager.conf",
        "/etc/kubernetes/kubelet.conf",
    ] {
        assert!(
            remote.iter().any(|r| r == want),
            "{want} missing from {remote:?}"
        );
    }
    assert!(cp.iter().all(|f| f.local.is_file()));
    // An etcd member that is not a control-plane host never signs: the etcd CA's
    // certificate, not its key.
    let member: Vec<_> = pki::host_files(&layout, "cp2", false, true)
        .iter()
        .map(|f| f.remote.display().to_string())
        .collect();
    assert!(
        member.contains(&"/etc/kubernetes/pki/etcd/ca.crt".to_string()),
        "{member:?}"
    );
    assert!(
        member.contains(&"/etc/kubernetes/pki/etcd/server.key".to_string()),
        "{member:?}"
    );
    assert!(
        !member.iter().any(|r| r.ends_with("etcd/ca.key")),
        "{member:?}"
    );
}

#[test]
fn second_run_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = StateLayout::new(tmp.path());
    let input = cluster("v1.30.0", 3);
    ensure_all(&input, &layout);
    let before = snapshot(tmp.path());
    let again = ensure_all(&input, &layout);
    assert_eq!(again.changed(), 0, "{again:#?}");
    assert_eq!(
        snapshot(tmp.path()),
        before,
        "a second run must not rewrite any file"
    );

    // Check mode on a complete tree also reports nothing; on an empty one, everything, and
    // writes nothing.
    assert_eq!(
        pki::ensure(&input, &layout, Mode::Check).unwrap().changed(),
        0
    );
    let empty = tempfile::tempdir().unwrap();
    let empty_layout = StateLayout::new(empty.path().join("s"));
    let r = pki::ensure(&input, &empty_layout, Mode::Check).unwrap();
    assert_eq!(r.changed(), r.items.len());
    let r = kubeconfig::ensure(&input, &empty_layout, Mode::Check).unwrap();
    assert_eq!(r.changed(), r.items.len());
    assert!(!empty_layout.root.exists(), "check mode wrote files");

    // A loosened key mode is repaired, nothing else changes.
    let key = layout.pki_dir().join("apiserver.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = pki::ensure(&input, &layout, Mode::Apply).unwrap();
    assert_eq!(r.changed(), 1, "{r:#?}");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn adding_a_host_reissues_only_what_it_affects() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = StateLayout::new(tmp.path());
    let mut input = cluster("v1.20.2", 3);
    ensure_all(&input, &layout);
    let before = snapshot(tmp.path());

    let cp4 = Host::new("cp4", ip("10.213.0.14"));
    input.control_plane.push(cp4.clone());
    input.etcd.push(cp4.clone());
    let report = ensure_all(&input, &layout);
    let changed: BTreeMap<&str, &Action> = report
        .items
        .iter()
        .filter(|i| i.action != Action::Kept)
        .map(|i| (i.name.as_str(), &i.action))
        .collect();
    let names: Vec<&str> = changed.keys().copied().collect();
    assert_eq!(
        names,
        [
            "apiserver",
            "controller-manager.conf/cp4",
            "etcd-peer/cp4",
            "etcd-server/cp4",
            "scheduler.conf/cp4",
        ],
        "{report:#?}"
    );
    assert!(
        matches!(changed["apiserver"], Action::Replaced { reason } if reason.contains("cp4")),
        "{:?}",
        changed["apiserver"]
    );
    let (dns, ips) = sans(&layout.pki_dir().join("apiserver.crt"));
    assert!(dns.contains(&"cp4".to_string()) && ips.contains(&ip("10.213.0.14")));
    // Everything else is byte for byte what it was.
    let after = snapshot(tmp.path());
    for (path, bytes) in &before {
        let name = path.to_string_lossy();
        if name.ends_with("/pki/apiserver.crt") || name.ends_with("/pki/apiserver.key") {
            assert_ne!(&after[path], bytes, "{name} should have been re-issued");
        } else {
            assert_eq!(&after[path], bytes, "{name} changed");
        }
    }
}

#[test]
fn a_replaced_ca_reissues_what_it_signed_only() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = StateLayout::new(tmp.path());
    let input = cluster("v1.20.2", 3);
    ensure_all(&input, &layout);
    std::fs::remove_file(layout.pki_dir().join("etcd/ca.key")).unwrap();
    let report = pki::ensure(&input, &layout, Mode::Apply).unwrap();
    for item in &report.items {
        let etcd = item.name.starts_with("etcd") || item.name == "apiserver-etcd-client";
        assert_eq!(item.action != Action::Kept, etcd, "{item:?}");
    }
    for spec in pki::cert_specs(&input) {
        openssl_verify(&ca_file(&layout, &spec), &spec.cert_path(&layout));
    }
}

#[test]
fn validity_is_configurable_and_renewal_is_due_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = StateLayout::new(tmp.path());
    let mut input = cluster("v1.20.2", 1);
    input.validity = Validity {
        ca: DAY * 20,
        leaf: DAY * 2,
        renew_before: DAY,
    };
    ensure_all(&input, &layout);
    let checkend = |path: &Path, secs: u64| {
        run(Command::new("openssl")
            .args(["x509", "-noout", "-checkend", &secs.to_string(), "-in"])
            .arg(path))
        .status
        .success()
    };
    let leaf = layout.pki_dir().join("apiserver.crt");
    let ca = layout.pki_dir().join("ca.crt");
    assert!(
        checkend(&leaf, 86_400 + 3600),
        "leaf must be valid for more than a day"
    );
    assert!(
        !checkend(&leaf, 2 * 86_400 + 3600),
        "leaf must expire within 2 days"
    );
    assert!(
        checkend(&ca, 19 * 86_400),
        "CA must be valid 19 days from now"
    );
    assert!(
        !checkend(&ca, 20 * 86_400 + 3600),
        "CA must expire within 20 days"
    );
    // The admin client certificate has the leaf validity too.
    let admin = Kubeconfig::load(&layout.kubeconfig_dir().join("admin.conf")).unwrap();
    let admin_crt = tmp.path().join("admin.crt");
    std::fs::write(&admin_crt, admin.client_cert_pem().unwrap()).unwrap();
    assert!(!checkend(&admin_crt, 2 * 86_400 + 3600));

    // Defaults: 10 years for CAs, 1 year for leaves.
    let tmp2 = tempfile::tempdir().unwrap();
    let layout2 = StateLayout::new(tmp2.path());
    pki::ensure(&cluster("v1.20.2", 1), &layout2, Mode::Apply).unwrap();
    assert!(checkend(&layout2.pki_dir().join("ca.crt"), 3649 * 86_400));
    assert!(!checkend(&layout2.pki_dir().join("ca.crt"), 3651 * 86_400));
    assert!(checkend(
        &layout2.pki_dir().join("apiserver.crt"),
        364 * 86_400
    ));
    assert!(!checkend(
        &layout2.pki_dir().join("apiserver.crt"),
        366 * 86_400
    ));

    // A day and a half later every leaf is within its renewal window; CAs are not.
    let later = time::OffsetDateTime::now_utc() + Duration::from_secs(36 * 3600);
    let report = pki::ensure_at(&input, &layout, Mode::Apply, later).unwrap();
    for item in &report.items {
        let is_ca = ["ca", "front-proxy-ca", "etcd-ca", "sa"].contains(&item.name.as_str());
        match &item.action {
            Action::Kept => assert!(is_ca, "{item:?}"),
            Action::Replaced { reason } => {
                assert!(!is_ca && reason.starts_with("expires in"), "{item:?}")
            }
            other => panic!("{item:?}: {other:?}"),
        }
    }
    let report = kubeconfig::ensure_at(&input, &layout, Mode::Apply, later).unwrap();
    assert_eq!(report.changed(), report.items.len(), "{report:#?}");
}

#[test]
fn kubeconfigs_embed_the_ca_endpoint_and_identity() {
    for (version, admin_group, super_admin) in [
        ("v1.20.2", "system:masters", false),
        ("v1.30.0", "kubeadm:cluster-admins", true),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let layout = StateLayout::new(tmp.path());
        let input = cluster(version, 3);
        ensure_all(&input, &layout);
        let ca_pem = std::fs::read_to_string(layout.pki_dir().join("ca.crt")).unwrap();
        let check = |path: PathBuf, server: &str, subject: &str| {
            let text = std::fs::read_to_string(&path).unwrap();
            let k =
                Kubeconfig::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(k.server(), Some(server), "{}", path.display());
            assert_eq!(
                k.ca_pem().as_deref(),
                Some(ca_pem.as_str()),
                "{}",
                path.display()
            );
            let crt = tmp.path().join("client.crt");
            std::fs::write(&crt, k.client_cert_pem().unwrap()).unwrap();
            openssl_verify(&layout.pki_dir().join("ca.crt"), &crt);
            assert_eq!(openssl_subject(&crt), subject, "{}", path.display());
            assert_eq!(
                openssl_ext(&crt, "extendedKeyUsage"),
                "TLS Web Client Authentication"
            );
            // The embedded key belongs to the embedded certificate.
            let key = tmp.path().join("client.key");
            std::fs::write(&key, k.client_key_pem().unwrap()).unwrap();
            let from_key = run_ok(
                Command::new("openssl")
                    .args(["pkey", "-pubout", "-in"])
                    .arg(&key),
            );
            let from_crt = run_ok(
                Command::new("openssl")
                    .args(["x509", "-noout", "-pubkey", "-in"])
                    .arg(&crt),
            );
            assert_eq!(from_key, from_crt, "{}", path.display());
        };
        let endpoint = "https://api.demo.internal:6443";
        check(
            layout.kubeconfig_dir().join("admin.conf"),
            endpoint,
            &format!("O = {admin_group}, CN = kubernetes-admin"),
        );
        let sa = layout.kubeconfig_dir().join("super-admin.conf");
        assert_eq!(sa.exists(), super_admin, "{version}");
        if super_admin {
            check(
                sa,
                endpoint,
                "O = system:masters, CN = kubernetes-super-admin",
            );
        }
        check(
            layout.host_dir("cp2").join("controller-manager.conf"),
            "https://10.213.0.12:6443",
            "CN = system:kube-controller-manager",
        );
        check(
            layout.host_dir("cp3").join("scheduler.conf"),
            "https://10.213.0.13:6443",
            "CN = system:kube-scheduler",
        );
        check(
            layout.host_dir("cp1").join("kubelet.conf"),
            endpoint,
            "O = system:nodes, CN = system:node:cp1",
        );
    }

    // The bootstrap kubeconfig carries the CA, the endpoint and the token, nothing else.
    let k = kubeconfig::bootstrap_kubeconfig(
        "demo",
        "https://api.demo.internal:6443",
        "CA",
        "abcdef.0123456789abcdef",
    )
    .unwrap();
    let k = Kubeconfig::from_yaml(&k.to_yaml().unwrap()).unwrap();
    assert_eq!(
        k.users[0].user.token.as_deref(),
        Some("abcdef.0123456789abcdef")
    );
    assert!(k.client_cert_pem().is_none());
    assert!(kubeconfig::bootstrap_kubeconfig("demo", "https://x:6443", "CA", "bad").is_err());
}

// ---------------------------------------------------------------------------------------------
// Real etcd + kube-apiserver with the generated PKI.

/// A child process killed and reaped on drop, so a failing test leaves nothing running.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn start(name: &'static str, cmd: &mut Command, log: PathBuf) -> Self {
        let f = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self { name, child, log }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn kube_bin_dir() -> PathBuf {
    match std::env::var_os("CLUSTERKIT_KUBE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => panic!(
            "CLUSTERKIT_KUBE_BIN_DIR is not set: run `bash scripts/deps.sh` (it builds Kubernetes \
             v1.20.2 from Debian's source) and then `. scripts/env.sh`"
        ),
    }
}

fn wait_for(
    timeout: Duration,
    what: &str,
    procs: &mut [&mut Proc],
    mut check: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        for p in procs.iter_mut() {
            p.assert_running();
        }
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let logs: Vec<String> = procs
        .iter()
        .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail()))
        .collect();
    panic!("timed out waiting for {what}\n{}", logs.join("\n"));
}

#[test]
fn real_etcd_and_kube_apiserver_accept_the_generated_pki() {
    let bin = kube_bin_dir();
    let etcd_bin = std::env::var_os("CLUSTERKIT_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| "etcd".into());
    let etcdctl = std::env::var_os("CLUSTERKIT_ETCDCTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| "etcdctl".into());
    let tmp = tempfile::tempdir().unwrap();
    let layout = StateLayout::new(tmp.path().join("state"));
    let (client_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let lo = ip("127.0.0.1");
    let me = Host::new("cp1", lo);
    let input = PkiInput {
        control_plane: vec![me.clone()],
        etcd: vec![me.clone()],
        kubelet_nodes: vec![me.clone()],
        control_plane_endpoint: format!("127.0.0.1:{api_port}").parse().unwrap(),
        apiserver_port: api_port,
        ..cluster("v1.20.2", 1)
    };
    ensure_all(&input, &layout);
    let pki = layout.pki_dir();
    let member = layout.host_dir("cp1").join("pki/etcd");

    // etcd with client and peer TLS and client-certificate auth on both.
    let client_url = format!("https://127.0.0.1:{client_port}");
    let peer_url = format!("https://127.0.0.1:{peer_port}");
    let mut etcd = Proc::start(
        "etcd",
        Command::new(&etcd_bin)
            .arg("--name=cp1")
            .arg(format!("--data-dir={}", tmp.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=cp1={peer_url}"))
            .arg("--client-cert-auth")
            .arg(format!(
                "--trusted-ca-file={}",
                pki.join("etcd/ca.crt").display()
            ))
            .arg(format!(
                "--cert-file={}",
                member.join("server.crt").display()
            ))
            .arg(format!(
                "--key-file={}",
                member.join("server.key").display()
            ))
            .arg("--peer-client-cert-auth")
            .arg(format!(
                "--peer-trusted-ca-file={}",
                pki.join("etcd/ca.crt").display()
            ))
            .arg(format!(
                "--peer-cert-file={}",
                member.join("peer.crt").display()
            ))
            .arg(format!(
                "--peer-key-file={}",
                member.join("peer.key").display()
            )),
        tmp.path().join("etcd.log"),
    );
    let etcd_health = |cert: &Path, key: &Path| {
        run(Command::new(&etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={client_url}"))
            .arg(format!("--cacert={}", pki.join("etcd/ca.crt").display()))
            .arg(format!("--cert={}", cert.display()))
            .arg(format!("--key={}", key.display()))
            .args(["--command-timeout=3s", "endpoint", "health"]))
    };
    let hc = (
        pki.join("etcd/healthcheck-client.crt"),
        pki.join("etcd/healthcheck-client.key"),
    );
    wait_for(
        Duration::from_secs(30),
        "etcd health with the healthcheck cert",
        &mut [&mut etcd],
        || etcd_health(&hc.0, &hc.1).status.success(),
    );
    // The monitoring cert can scrape /metrics; a cert from another cluster's CA is refused.
    let metrics = run_ok(
        Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "5", "--cacert"])
            .arg(pki.join("etcd/ca.crt"))
            .arg("--cert")
            .arg(pki.join("etcd/metrics-client.crt"))
            .arg("--key")
            .arg(pki.join("etcd/metrics-client.key"))
            .arg(format!("{client_url}/metrics")),
    );
    assert!(
        metrics.contains("etcd_server_has_leader"),
        "no etcd metrics"
    );
    let other = tempfile::tempdir().unwrap();
    let other_layout = StateLayout::new(other.path());
    pki::ensure(&input, &other_layout, Mode::Apply).unwrap();
    let foreign = etcd_health(
        &other_layout.pki_dir().join("etcd/healthcheck-client.crt"),
        &other_layout.pki_dir().join("etcd/healthcheck-client.key"),
    );
    assert!(
        !foreign.status.success(),
        "etcd accepted a client cert from another CA"
    );

    // kube-apiserver with the generated PKI and the flags rendered for v1.20.2, on loopback.
    let mut flags_in = FlagInput::new(input.version, "cp1", lo);
    flags_in.apiserver_bind_address = Some(lo);
    flags_in.apiserver_port = api_port;
    flags_in.etcd_servers = vec![client_url.clone()];
    flags_in.pki_dir = pki.clone();
    flags_in.kubeconfig_dir = layout.kubeconfig_dir();
    let flags = versions::render_flags(Component::KubeApiserver, &flags_in).unwrap();
    assert!(flags.contains(&"--insecure-port=0".to_string()));
    let mut apiserver = Proc::start(
        "kube-apiserver",
        Command::new(bin.join("kube-apiserver")).args(&flags),
        tmp.path().join("apiserver.log"),
    );
    let kubectl = |kubeconfig: &Path, path: &str| {
        run(Command::new(bin.join("kubectl"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(["--request-timeout=5s", "get", "--raw", path]))
    };
    let admin = layout.kubeconfig_dir().join("admin.conf");
    wait_for(
        Duration::from_secs(90),
        "kube-apiserver /readyz through admin.conf",
        &mut [&mut etcd, &mut apiserver],
        || {
            let out = kubectl(&admin, "/readyz");
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok"
        },
    );
    // admin.conf is authorised for everything (system:masters in 1.20).
    let out = kubectl(&admin, "/api/v1/namespaces/kube-system");
    assert!(
        out.status.success(),
        "admin: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without a client certificate the same request is anonymous and forbidden.
    let anon = run(Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(pki.join("ca.crt"))
        .arg(format!(
            "https://127.0.0.1:{api_port}/api/v1/namespaces/kube-system"
        )));
    assert_eq!(
        String::from_utf8_lossy(&anon.stdout),
        "403",
        "anonymous request not refused"
    );
    // The scheduler's identity may list nodes; the kubelet's is authorised by the Node
    // authorizer for its own Node (which does not exist yet: NotFound, not Forbidden).
    let out = kubectl(
        &layout.host_dir("cp1").join("scheduler.conf"),
        "/api/v1/nodes",
    );
    assert!(
        out.status.success(),
        "scheduler: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(
        &layout.host_dir("cp1").join("kubelet.conf"),
        "/api/v1/nodes/cp1",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NotFound") && !err.contains("Forbidden"),
        "kubelet: {err}"
    );
    let out = kubectl(
        &layout.host_dir("cp1").join("kubelet.conf"),
        "/api/v1/secrets",
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
        "kubelet must not list secrets"
    );

    // kube-controller-manager and kube-scheduler with their kubeconfigs and rendered flags
    // (secure ports moved to free ones): the controller manager signs service-account tokens
    // with sa.key and creates the default service account; the scheduler serves /healthz.
    let (kcm_port, sched_port) = (free_port(), free_port());
    flags_in.kubeconfig_dir = layout.host_dir("cp1");
    for (c, port) in [
        (Component::KubeControllerManager, kcm_port),
        (Component::KubeScheduler, sched_port),
    ] {
        flags_in
            .extra_args
            .entry(c)
            .or_default()
            .insert("secure-port".into(), port.to_string());
    }
    let mut kcm = Proc::start(
        "kube-controller-manager",
        Command::new(bin.join("kube-controller-manager"))
            .args(versions::render_flags(Component::KubeControllerManager, &flags_in).unwrap()),
        tmp.path().join("kcm.log"),
    );
    let mut sched = Proc::start(
        "kube-scheduler",
        Command::new(bin.join("kube-scheduler"))
            .args(versions::render_flags(Component::KubeScheduler, &flags_in).unwrap()),
        tmp.path().join("scheduler.log"),
    );
    wait_for(
        Duration::from_secs(90),
        "the default service account and its token",
        &mut [&mut etcd, &mut apiserver, &mut kcm, &mut sched],
        || {
            let out = kubectl(&admin, "/api/v1/namespaces/default/serviceaccounts/default");
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("default-token-")
        },
    );
    wait_for(
        Duration::from_secs(30),
        "kube-scheduler /healthz",
        &mut [&mut sched],
        || {
            let out = run(Command::new("curl")
                .args(["-sS", "-k", "--max-time", "3"])
                .arg(format!("https://127.0.0.1:{sched_port}/healthz")));
            String::from_utf8_lossy(&out.stdout).trim() == "ok"
        },
    );
    for p in [&mut etcd, &mut apiserver, &mut kcm, &mut sched] {
        p.assert_running();
    }
}

#[test]
fn input_from_cluster_yaml() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("id_ed25519");
    std::fs::write(&key, "not used").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(tmp.path().join("known_hosts"), "").unwrap();
    let yaml = r#"
name: demo
ssh: { known_hosts: ./known_hosts }
hosts:
  - { name: cp1, address: 10.213.0.11, user: root, roles: [control-plane, etcd], auth: { key_file: ./id_ed25519 } }
  - { name: w1, address: 10.213.0.12, user: root, roles: [worker], auth: { key_file: ./id_ed25519 } }
kubernetes: { version: v1.26.3, service_cidr: 10.96.0.0/12, control_plane_endpoint: "10.213.0.11:6443" }
"#;
    let path = tmp.path().join("cluster.yaml");
    std::fs::write(&path, yaml).unwrap();
    let cluster = clusterkit_core::config::load(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .cluster;
    let input = PkiInput::from_cluster(&cluster);
    assert_eq!(
        input.control_plane,
        vec![Host::new("cp1", ip("10.213.0.11"))]
    );
    assert_eq!(input.etcd, input.control_plane);
    assert_eq!(input.version, KubeVersion::new(1, 26, 3));
    assert_eq!(input.server_url(), "https://10.213.0.11:6443");
    let layout = StateLayout::from_cluster(&cluster);
    assert!(
        layout.root.ends_with("demo-state"),
        "{}",
        layout.root.display()
    );
    // Default lifetimes are kubeadm's; `pki:` in cluster.yaml changes them.
    assert_eq!(input.validity, Validity::default());
    std::fs::write(
        &path,
        format!("{yaml}pki: {{ ca_validity_days: 7300, cert_validity_days: 90, renew_before_days: 7 }}\n"),
    )
    .unwrap();
    let cluster = clusterkit_core::config::load(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .cluster;
    let input = PkiInput::from_cluster(&cluster);
    assert_eq!(
        input.validity,
        Validity {
            ca: DAY * 7300,
            leaf: DAY * 90,
            renew_before: DAY * 7
        }
    );
}

#[test]
fn kubeadm_reads_and_renews_the_generated_pki() {
    // kubeadm's own `certs check-expiration` and `certs renew` (v1.20.2, built from Debian's
    // source) work on the tree, chrooted (--rootfs) into a copy of a node's /etc/kubernetes.
    let bin = kube_bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let layout = StateLayout::new(tmp.path().join("state"));
    let input = cluster("v1.20.2", 1);
    ensure_all(&input, &layout);
    let root = tmp.path().join("root");
    for f in pki::host_files(&layout, "cp1", true, true) {
        let dest = root.join(f.remote.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f.local, &dest).unwrap();
    }
    std::fs::copy(
        layout.kubeconfig_dir().join("admin.conf"),
        root.join("etc/kubernetes/admin.conf"),
    )
    .unwrap();
    std::fs::write(
        root.join("kubeadm.yaml"),
        "apiVersion: kubeadm.k8s.io/v1beta2\nkind: ClusterConfiguration\nkubernetesVersion: v1.20.2\n\
         controlPlaneEndpoint: api.demo.internal:6443\nnetworking: {serviceSubnet: 10.96.0.0/12, dnsDomain: cluster.local}\n",
    )
    .unwrap();
    let kubeadm = |args: &[&str]| {
        run_ok(
            Command::new(bin.join("kubeadm"))
                .args(args)
                .arg(format!("--rootfs={}", root.display()))
                .arg("--config=/kubeadm.yaml"),
        )
    };
    let out = kubeadm(&["certs", "check-expiration"]);
    for name in [
        "admin.conf",
        "apiserver ",
        "apiserver-etcd-client",
        "apiserver-kubelet-client",
        "controller-manager.conf",
        "etcd-healthcheck-client",
        "etcd-peer",
        "etcd-server",
        "front-proxy-client",
        "scheduler.conf",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{out}"));
        assert!(
            line.contains("364d") && line.trim_end().ends_with("no"),
            "{line}\n{out}"
        );
    }
    for ca in ["ca ", "etcd-ca", "front-proxy-ca"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(ca))
            .unwrap_or_else(|| panic!("{ca} not listed:\n{out}"));
        assert!(line.contains("9y"), "{line}");
    }
    assert!(
        !out.contains("MISSING") && !out.contains("invalid"),
        "{out}"
    );

    // kubeadm renews a certificate with our CA; the result keeps every SAN, so clusterkit
    // keeps it afterwards.
    let crt = root.join("etc/kubernetes/pki/apiserver.crt");
    let before = std::fs::read(&crt).unwrap();
    kubeadm(&["certs", "renew", "apiserver"]);
    let after = std::fs::read(&crt).unwrap();
    assert_ne!(before, after, "kubeadm did not renew");
    openssl_verify(&layout.pki_dir().join("ca.crt"), &crt);
    std::fs::copy(&crt, layout.pki_dir().join("apiserver.crt")).unwrap();
    std::fs::copy(
        root.join("etc/kubernetes/pki/apiserver.key"),
        layout.pki_dir().join("apiserver.key"),
    )
    .unwrap();
    let report = pki::ensure(&input, &layout, Mode::Apply).unwrap();
    assert_eq!(report.changed(), 0, "{report:#?}");
}
