//! Unit tests of the resolution rules: defaults, profile-dependent defaults, path resolution,
//! auth/become forms, selection. Every rule's error message and line is tested end to end
//! through the binary in `tests/config.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::*;

/// A temporary directory with a private key file `id` (mode 0600) in it.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("id");
        std::fs::write(&key, "not really a key\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        Dir(d)
    }

    fn file(&self) -> PathBuf {
        self.0.path().join("cluster.yaml")
    }

    fn load(&self, text: &str) -> Result<Loaded, ConfigError> {
        load_str(text, &self.file())
    }

    fn ok(&self, text: &str) -> Loaded {
        self.load(text)
            .unwrap_or_else(|e| panic!("expected valid:\n{e}"))
    }

    fn errors(&self, text: &str) -> Vec<Diagnostic> {
        match self.load(text) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e
                .diagnostics()
                .iter()
                .filter(|d| d.is_error())
                .cloned()
                .collect(),
        }
    }
}

const MINIMAL: &str = "\
name: t
hosts:
  - { name: a, address: 192.168.7.1, roles: [control-plane, etcd], auth: { key_file: id } }
kubernetes: { version: v1.20.2 }
";

#[test]
fn minimal_file_gets_documented_defaults() {
    let d = Dir::new();
    let c = d.ok(MINIMAL).cluster;
    let dir = d.0.path();
    assert_eq!(c.dir, dir);
    assert_eq!(c.state_dir, dir.join("t-state"));
    assert_eq!(c.ssh.known_hosts, dir.join("known_hosts"));
    assert!(!c.ssh.trust_on_first_use);
    assert_eq!(c.ssh.concurrency, 16);
    assert_eq!(c.ssh.connect_timeout().as_secs(), 10);
    assert_eq!(c.ssh.command_timeout().as_secs(), 600);
    let h = &c.hosts[0];
    assert_eq!((h.port, h.user.as_str()), (22, "root"));
    assert_eq!(h.become_, None, "root needs no sudo");
    assert_eq!(
        h.auth,
        Auth::Key {
            file: dir.join("id"),
            passphrase: None
        }
    );
    let k = &c.kubernetes;
    assert_eq!(k.pod_cidr.to_string(), "10.244.0.0/16");
    assert_eq!(k.service_cidr.to_string(), "10.96.0.0/12");
    assert_eq!(k.dns_domain, "cluster.local");
    assert_eq!(k.proxy_mode, ProxyMode::Ipvs);
    assert_eq!(k.control_plane_mode, ControlPlaneMode::StaticPod);
    assert_eq!(k.network, Network::Calico);
    assert_eq!(k.image_repository, "registry.k8s.io");
    assert_eq!(k.control_plane_endpoint.to_string(), "192.168.7.1:6443");
    assert_eq!(c.runtime.sandbox_image, "registry.k8s.io/pause:3.2");
    assert_eq!(c.profile, Profile::Production);
    assert_eq!(
        c.packages,
        Packages::Online {
            repositories: Default::default(),
            mirror: None
        }
    );
    assert_eq!(c.backup.store, None);
    assert_eq!(c.backup.s3.checksums, Checksums::WhenRequired);
    assert_eq!(
        (c.backup.s3.part_size_mib, c.backup.s3.parts_in_flight),
        (5, 2)
    );
    assert_eq!(c.backup.compression_level, 3);
    assert!(!c.backup.encryption.enabled());
    assert_eq!(c.monitor.listen.to_string(), "127.0.0.1:9842");
    assert_eq!(c.monitor.intervals.certificates_secs, 3600);
}

#[test]
fn sandbox_profile_changes_proxy_control_plane_and_network_defaults() {
    let d = Dir::new();
    let c = d.ok(&format!("{MINIMAL}profile: sandbox\n")).cluster;
    assert_eq!(c.profile, Profile::Sandbox);
    assert_eq!(c.kubernetes.proxy_mode, ProxyMode::Iptables);
    assert_eq!(c.kubernetes.control_plane_mode, ControlPlaneMode::Systemd);
    assert_eq!(c.kubernetes.network, Network::HostGw);
}

#[test]
fn explicit_values_win_over_profile_defaults_with_a_warning_for_ipvs_in_sandbox() {
    let d = Dir::new();
    let text = MINIMAL.replace(
        "kubernetes: { version: v1.20.2 }",
        "kubernetes: { version: v1.20.2, proxy_mode: ipvs, network: flannel }\nprofile: sandbox",
    );
    let l = d.ok(&text);
    assert_eq!(l.cluster.kubernetes.proxy_mode, ProxyMode::Ipvs);
    assert_eq!(l.cluster.kubernetes.network, Network::Flannel);
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(l.warnings[0].message.contains("IPVS"));
    assert_eq!(l.warnings[0].line, 4);
}

#[test]
fn relative_paths_resolve_against_the_file_directory() {
    let d = Dir::new();
    // An absolute path stays as it is (it must exist: the key file stands in for a CA file).
    let ca = d.0.path().join("id");
    let text = format!(
        "{MINIMAL}state_dir: st\nssh: {{ known_hosts: ../kh }}\npackages: {{ bundle: ./b }}\n\
         backup: {{ store: 'file://bk', s3: {{ ca_file: {} }} }}\n",
        ca.display()
    );
    let c = d.ok(&text).cluster;
    let dir = d.0.path();
    assert_eq!(c.state_dir, dir.join("st"));
    assert_eq!(c.ssh.known_hosts, dir.join("../kh"));
    assert_eq!(c.packages, Packages::Bundle { dir: dir.join("b") });
    assert_eq!(
        c.backup.store,
        Some(Store::File {
            path: dir.join("bk")
        })
    );
    assert_eq!(c.backup.s3.ca_file.as_deref(), Some(ca.as_path()));
}

#[test]
fn s3_store_splits_bucket_and_prefix() {
    let d = Dir::new();
    let c = d
        .ok(&format!("{MINIMAL}backup: {{ store: 's3://bkt/a/b/' }}\n"))
        .cluster;
    assert_eq!(
        c.backup.store,
        Some(Store::S3 {
            bucket: "bkt".into(),
            prefix: "a/b".into()
        })
    );
    assert_eq!(c.backup.store.unwrap().to_string(), "s3://bkt/a/b");
}

#[test]
fn non_root_user_defaults_to_passwordless_sudo_and_none_disables_it() {
    let d = Dir::new();
    let text = "\
name: t
hosts:
  - { name: a, address: 192.168.7.1, user: ops, roles: [control-plane, etcd], auth: { agent: true } }
  - { name: b, address: 192.168.7.2, user: ops, roles: [worker], auth: { password_env: B_PASS }, become: { method: none } }
  - { name: c, address: 192.168.7.3, user: ops, roles: [worker], auth: { agent: true }, become: { password_env: C_SUDO } }
kubernetes: { version: v1.26.3 }
";
    let c = d.ok(text).cluster;
    assert_eq!(
        c.hosts[0].become_,
        Some(Become {
            method: BecomeMethod::Sudo,
            password: None
        })
    );
    assert_eq!(c.hosts[0].auth, Auth::Agent);
    assert_eq!(c.hosts[1].become_, None);
    match &c.hosts[1].auth {
        Auth::Password { password } => {
            assert_eq!(password.var, "B_PASS");
            assert!(password.what.contains("host b"), "{}", password.what);
        }
        other => panic!("{other:?}"),
    }
    let sudo = c.hosts[2].become_.as_ref().unwrap();
    assert_eq!(sudo.password.as_ref().unwrap().var, "C_SUDO");
}

#[test]
fn debug_of_the_model_shows_variable_names_only() {
    let d = Dir::new();
    let text = MINIMAL.replace("auth: { key_file: id }", "auth: { password_env: A_PASS }");
    let c = d.ok(&text).cluster;
    let dbg = format!("{c:?}");
    assert!(dbg.contains("$A_PASS"), "{dbg}");
}

#[test]
fn select_by_names_and_roles() {
    let d = Dir::new();
    let text = "\
name: t
hosts:
  - { name: a, address: 192.168.7.1, roles: [control-plane, etcd], auth: { agent: true } }
  - { name: b, address: 192.168.7.2, roles: [worker], auth: { agent: true } }
  - { name: c, address: 192.168.7.3, roles: [worker, monitor], auth: { agent: true } }
kubernetes: { version: v1.26.3 }
";
    let c = d.ok(text).cluster;
    let names = |v: Vec<&Host>| v.iter().map(|h| h.name.clone()).collect::<Vec<_>>();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(names(c.select(&[], &[]).unwrap()), ["a", "b", "c"]);
    assert_eq!(names(c.select(&s(&["c", "a"]), &[]).unwrap()), ["a", "c"]);
    assert_eq!(names(c.select(&[], &s(&["worker"])).unwrap()), ["b", "c"]);
    assert_eq!(
        names(c.select(&s(&["a", "c"]), &s(&["worker"])).unwrap()),
        ["c"]
    );
    assert_eq!(names(c.hosts_with_role(Role::Monitor)), ["c"]);
    assert!(matches!(
        c.select(&s(&["zz"]), &[]),
        Err(SelectError::UnknownHost { .. })
    ));
    assert!(matches!(
        c.select(&[], &s(&["master"])),
        Err(SelectError::UnknownRole { .. })
    ));
    assert!(matches!(
        c.select(&s(&["a"]), &s(&["monitor"])),
        Err(SelectError::Empty { .. })
    ));
    let err = c.select(&s(&["zz"]), &[]).unwrap_err().to_string();
    assert!(err.contains("zz") && err.contains("a, b, c"), "{err}");
}

#[test]
fn group_readable_key_is_refused_and_all_errors_are_collected() {
    let d = Dir::new();
    let key = d.0.path().join("id");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let text = "\
name: t
hosts:
  - { name: a, address: 192.168.7.1, roles: [control-plane, etcd], auth: { key_file: id } }
  - { name: a, address: 192.168.7.300, roles: [wrker], auth: { agent: true } }
kubernetes: { version: 1.26 }
";
    let errs = d.errors(text);
    let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 5, "{msgs:#?}");
    assert!(
        msgs[0].contains(":3:") && msgs[0].contains("mode 0640"),
        "{msgs:#?}"
    );
    assert!(msgs
        .iter()
        .any(|m| m.contains(":4:") && m.contains("duplicate host name")));
    assert!(msgs
        .iter()
        .any(|m| m.contains("hosts[1].address") && m.contains("not an IP")));
    assert!(msgs
        .iter()
        .any(|m| m.contains("hosts[1].roles[0]") && m.contains("unknown role")));
    assert!(msgs
        .iter()
        .any(|m| m.contains(":5:") && m.contains("kubernetes.version")));
}

#[test]
fn even_etcd_count_is_a_warning_not_an_error() {
    let d = Dir::new();
    let text = MINIMAL.replace(
        "kubernetes:",
        "  - { name: b, address: 192.168.7.2, roles: [etcd], auth: { agent: true } }\nkubernetes:",
    );
    let l = d.ok(&text);
    assert_eq!(l.warnings.len(), 1);
    assert!(
        l.warnings[0].message.contains("2 etcd members"),
        "{:?}",
        l.warnings
    );
    assert_eq!(l.warnings[0].severity, Severity::Warning);
}

#[test]
fn parse_errors_carry_line_and_column_without_snippet() {
    let d = Dir::new();
    let text = MINIMAL.replace("name: t", "name: t\nnmae: x");
    let errs = d.errors(&text);
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].column), (2, 1));
    assert!(
        errs[0].message.starts_with("unknown field `nmae`"),
        "{}",
        errs[0].message
    );
    assert!(!errs[0].message.contains("line 2"), "{}", errs[0].message);
}

#[test]
fn the_example_validates_with_its_key_file() {
    let d = Dir::new();
    std::fs::rename(d.0.path().join("id"), d.0.path().join("id_ed25519")).unwrap();
    let l = d.ok(EXAMPLE);
    assert_eq!(l.cluster.hosts.len(), 4);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(l.cluster.monitor.alertmanager.receivers.len(), 4);
}

#[test]
fn pki_validity_defaults_and_rules() {
    let d = Dir::new();
    assert_eq!(d.ok(MINIMAL).cluster.pki, Pki::default());
    let c = d
        .ok(&format!(
            "{MINIMAL}pki: {{ ca_validity_days: 7300, cert_validity_days: 90, renew_before_days: 10 }}\n"
        ))
        .cluster;
    assert_eq!(
        c.pki,
        Pki {
            ca_validity_days: 7300,
            cert_validity_days: 90,
            renew_before_days: 10
        }
    );
    // A short leaf life without a renewal window gets one that fits.
    let c = d
        .ok(&format!("{MINIMAL}pki: {{ cert_validity_days: 7 }}\n"))
        .cluster;
    assert_eq!(c.pki.renew_before_days, 6);
    let errs = d.errors(&format!(
        "{MINIMAL}pki: {{ ca_validity_days: 100, cert_validity_days: 365 }}\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.to_string().contains("pki.cert_validity_days")
                && e.to_string().contains("outlive")),
        "{errs:?}"
    );
    let errs = d.errors(&format!(
        "{MINIMAL}pki: {{ cert_validity_days: 30, renew_before_days: 30 }}\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.to_string().contains("pki.renew_before_days")),
        "{errs:?}"
    );
    let errs = d.errors(&format!("{MINIMAL}pki: {{ ca_validity_days: 0 }}\n"));
    assert!(!errs.is_empty());
    let errs = d.errors(&format!("{MINIMAL}pki: {{ leaf_days: 3 }}\n"));
    assert!(!errs.is_empty(), "unknown keys are refused");
}

/// What the PKI is built from is checked here, once: the installer takes it as typed values.
#[test]
fn what_the_pki_is_built_from_is_refused_with_the_field() {
    let d = Dir::new();
    for (bad, field) in [
        (
            "kubernetes: { version: v1.20.2, service_cidr: 10.96.0.0 }",
            "kubernetes.service_cidr",
        ),
        (
            "kubernetes: { version: v1.20.2, service_cidr: 10.96.0.0/33 }",
            "kubernetes.service_cidr",
        ),
        (
            "kubernetes: { version: v1.20.2, control_plane_endpoint: \"bad_name:6443\" }",
            "kubernetes.control_plane_endpoint",
        ),
        (
            "kubernetes: { version: v1.20.2, dns_domain: \"bad_name\" }",
            "kubernetes.dns_domain",
        ),
    ] {
        let text = MINIMAL.replace("kubernetes: { version: v1.20.2 }", bad);
        let errs = d.errors(&text);
        assert!(
            errs.iter().any(|e| e.to_string().contains(field)),
            "{bad}: {errs:?}"
        );
    }
    let errs = d.errors(&MINIMAL.replace("name: a,", "name: bad_name,"));
    assert!(
        errs.iter().any(|e| e.to_string().contains("hosts[0].name")),
        "{errs:?}"
    );
    let errs = d.errors(&format!("{MINIMAL}pki: {{ renew_before_days: 400 }}\n"));
    assert!(
        errs.iter()
            .any(|e| e.to_string().contains("pki.renew_before_days")),
        "{errs:?}"
    );
}

#[test]
fn local_load_balancer_is_off_by_default_and_its_port_is_checked() {
    let d = Dir::new();
    let lb = d.ok(MINIMAL).cluster.kubernetes.load_balancer;
    assert_eq!(lb, LoadBalancer::default());
    assert!(!lb.local && lb.local_url().is_none());

    let text = MINIMAL.replace(
        "kubernetes: { version: v1.20.2 }",
        "  - { name: b, address: 192.168.7.2, roles: [control-plane, etcd], auth: { key_file: id } }\n  - { name: c, address: 192.168.7.3, roles: [control-plane, etcd], auth: { key_file: id } }\nkubernetes: { version: v1.20.2, load_balancer: { local: true } }",
    );
    let l = d.ok(&text);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let lb = l.cluster.kubernetes.load_balancer;
    assert_eq!((lb.local, lb.port), (true, 16443));
    assert_eq!(lb.local_url().as_deref(), Some("https://127.0.0.1:16443"));
    // The endpoint stays what the operator uses.
    assert_eq!(
        l.cluster.kubernetes.control_plane_endpoint.to_string(),
        "192.168.7.1:6443"
    );

    let lb = d
        .ok(&text.replace("{ local: true }", "{ local: true, port: 8443 }"))
        .cluster
        .kubernetes
        .load_balancer;
    assert_eq!(lb.port, 8443);

    // A port a node service already listens on: error at its line, naming the service.
    let errs = d.errors(&text.replace("{ local: true }", "{ local: true, port: 6443 }"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "kubernetes.load_balancer.port");
    assert_eq!(errs[0].line, 6);
    assert!(errs[0].message.contains("kube-apiserver"), "{errs:?}");
    let errs = d.errors(&text.replace("{ local: true }", "{ local: true, port: 0 }"));
    assert_eq!(errs[0].field, "kubernetes.load_balancer.port");
    // Out of range and unknown keys are parse errors with a line.
    let errs = d.errors(&text.replace("{ local: true }", "{ local: true, port: 70000 }"));
    assert_eq!(errs[0].line, 6, "{errs:?}");
    let errs = d.errors(&text.replace("{ local: true }", "{ locale: true }"));
    assert!(errs[0].message.contains("locale"), "{errs:?}");

    // One control-plane host: allowed, with a warning.
    let l = d.ok(&MINIMAL.replace(
        "{ version: v1.20.2 }",
        "{ version: v1.20.2, load_balancer: { local: true } }",
    ));
    assert!(l.cluster.kubernetes.load_balancer.local);
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert_eq!(l.warnings[0].field, "kubernetes.load_balancer.local");
}

#[test]
fn a_ten_megabyte_name_is_refused_with_its_length() {
    let d = Dir::new();
    let name = "a".repeat(10 << 20);
    let errs = d.errors(&MINIMAL.replace("name: t", &format!("name: {name}")));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!((errs[0].field.as_str(), errs[0].line), ("name", 1));
    assert!(
        errs[0]
            .message
            .starts_with("is 10485760 bytes long; at most 63"),
        "{}",
        errs[0].message
    );
}

#[test]
fn non_utf8_file_is_refused_at_its_byte_offset() {
    let d = Dir::new();
    let mut bytes = MINIMAL.as_bytes().to_vec();
    bytes.splice(7..7, [0xc3, 0xa9, 0xff]);
    std::fs::write(d.file(), &bytes).unwrap();
    let err = load(d.file()).unwrap_err();
    let diags = err.diagnostics();
    assert_eq!(diags.len(), 1, "{diags:?}");
    // 'é' (two bytes) counts as one column: the 0xff is the 9th character of line 1.
    assert_eq!((diags[0].line, diags[0].column), (1, 9));
    assert!(
        diags[0]
            .message
            .contains("byte 0xff at byte offset 9 does not start a valid character"),
        "{}",
        diags[0].message
    );
}

#[test]
fn versions_outside_the_supported_range_are_refused() {
    let d = Dir::new();
    for (v, ok) in [
        ("v1.19.16", false),
        ("v1.9.0", false),
        ("v1.20.0", true),
        ("v1.34.99", true),
        ("v1.35.0", false),
        ("v2.0.0", false),
    ] {
        let text = MINIMAL.replace("v1.20.2", v);
        if ok {
            d.ok(&text);
        } else {
            let errs = d.errors(&text);
            assert!(
                errs[0]
                    .message
                    .ends_with("is not supported: clusterkit installs v1.20.0 through v1.34.x"),
                "{v}: {errs:?}"
            );
            assert_eq!(errs[0].line, 4);
        }
    }
}

#[test]
fn pod_networks_must_hold_a_node_slice_per_host() {
    let d = Dir::new();
    let with = |k8s: &str| MINIMAL.replace("{ version: v1.20.2 }", k8s);
    d.ok(&with("{ version: v1.20.2, pod_cidr: 10.244.0.0/24 }"));
    d.ok(&with(
        "{ version: v1.20.2, pod_cidr: 'fd10::/56', network: calico }",
    ));
    for (k8s, needle) in [
        (
            "{ version: v1.20.2, pod_cidr: 10.244.0.0/25 }",
            "smaller than one node's /24",
        ),
        (
            "{ version: v1.20.2, pod_cidr: 'fd10::/80' }",
            "smaller than one node's /64",
        ),
        (
            "{ version: v1.20.2, pod_cidr: 'fd10::/40' }",
            "use a /48 to /64",
        ),
        (
            "{ version: v1.20.2, pod_cidr: 'fd10::/56', network: host-gw }",
            "host-gw needs an IPv4 pod_cidr",
        ),
        (
            "{ version: v1.20.2, service_cidr: 10.96.0.0/29 }",
            "/12 to /28",
        ),
        (
            "{ version: v1.20.2, service_cidr: 'fd20::/100' }",
            "/108 to /124",
        ),
    ] {
        let errs = d.errors(&with(k8s));
        assert!(
            errs.iter()
                .any(|e| e.message.contains(needle) && e.line == 4),
            "{k8s}: {errs:?}"
        );
    }
}

#[test]
fn loopback_node_addresses_only_in_the_sandbox_profile() {
    let d = Dir::new();
    let text = MINIMAL.replace("192.168.7.1", "127.88.0.1");
    let errs = d.errors(&text);
    assert!(
        errs[0].message.contains("only profile: sandbox"),
        "{errs:?}"
    );
    let c = d.ok(&format!("{text}profile: sandbox\n")).cluster;
    assert_eq!(c.hosts[0].address.to_string(), "127.88.0.1");
    let errs = d.errors(&format!(
        "{}profile: sandbox\n",
        MINIMAL.replace("192.168.7.1", "255.255.255.255")
    ));
    assert!(errs[0].message.contains("broadcast"), "{errs:?}");
}

#[test]
fn monitor_tls_is_on_by_default_and_off_warns() {
    let d = Dir::new();
    let c = d.ok(MINIMAL).cluster;
    assert!(c.monitor.tls);
    assert_eq!(c.monitor.web_auth.username, "admin");
    assert!(c.monitor.web_auth.password.is_none());
    let l = d.ok(&format!(
        "{MINIMAL}monitor:\n  tls: false\n  web_auth: {{ username: ops, password_env: MON_PW }}\n"
    ));
    assert!(!l.cluster.monitor.tls);
    let w = &l.cluster.monitor.web_auth;
    assert_eq!(w.username, "ops");
    assert_eq!(w.password.as_ref().map(|p| p.var.as_str()), Some("MON_PW"));
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert_eq!(
        (l.warnings[0].field.as_str(), l.warnings[0].line),
        ("monitor.tls", 6)
    );
    assert!(l.warnings[0].message.contains("plain HTTP"));
    let errs = d.errors(&format!(
        "{MINIMAL}monitor:\n  web_auth: {{ username: \"a:b\", password_env: \"not a name\" }}\n"
    ));
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["monitor.web_auth.username", "monitor.web_auth.password_env"]
    );
    let errs = d.errors(&format!(
        "{MINIMAL}monitor:\n  tls: {{ cert_file: a, key_file: b }}\n"
    ));
    assert_eq!(errs[0].line, 6, "{errs:?}");
}

#[test]
fn the_watchdog_receiver_name_is_reserved() {
    let d = Dir::new();
    let errs = d.errors(&format!(
        "{MINIMAL}monitor:\n  alertmanager:\n    receivers:\n      - {{ name: {}, webhook: {{ url: \"http://127.0.0.1:9/hook\" }} }}\n",
        Alertmanager::NULL_RECEIVER
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        (errs[0].field.as_str(), errs[0].line),
        ("monitor.alertmanager.receivers[0].name", 8)
    );
    assert!(errs[0].message.contains("reserved"), "{errs:?}");
    assert_eq!(
        d.ok(MINIMAL).cluster.monitor.kubelet_disk,
        KubeletDisk::default()
    );
}
