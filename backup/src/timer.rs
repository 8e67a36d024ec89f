//! `clusterkit backup install-timer`: a systemd service + timer on the control-plane hosts that
//! runs `clusterkit backup schedule --once` (lock, backup, prune, status; with `--drill` a
//! restore drill of each new backup on the host itself) on a calendar: of etcd
//! (`clusterkit-backup.{service,timer}`), or with `--kind namespace` of namespaces
//! (`clusterkit-backup-namespaces.{service,timer}`). Both can run on the same hosts and store:
//! a run that finds the store's lock held waits for it (`crate::schedule`).
//!
//! Design (what a host needs and where it comes from):
//! - **the binary**: the running `clusterkit` is uploaded to `/usr/local/bin/clusterkit`
//!   when the host's copy differs (sha256) — same architecture required (`uname -m` is
//!   checked), otherwise give `--binary PATH --no-upload` for a binary already on the hosts;
//! - **no cluster.yaml on the hosts**: every setting is resolved on the operator's machine and
//!   written as flags into the unit's `ExecStart` (store URL, S3 endpoint/region/path style/
//!   part size, every etcd member's client URL, compression, age recipients, retention, cluster
//!   name), so the unit shows exactly what runs and the hosts need no SSH credentials or config
//!   schema;
//! - **etcd client certificate**: the apiserver's etcd client pair and the etcd CA the `pki`
//!   phase already put on every control-plane host (`/etc/kubernetes/pki/…`); checked before
//!   anything is written;
//! - **the API, for namespaces**: the operator's admin kubeconfig (the state directory's
//!   `kubeconfig/admin.conf`, or `--kubeconfig`) copied to `/etc/clusterkit/namespace-backup.conf`, mode
//!   0600 in a 0700 directory — the credential kubeadm leaves in `/etc/kubernetes/admin.conf`
//!   on every control-plane host; the namespace selection is validated here, before any host
//!   is touched;
//! - **secrets** (S3 keys, the encryption passphrase): read from the operator's environment
//!   (the variables cluster.yaml names) and written to `/etc/clusterkit/backup.env`, mode
//!   0600, read by the unit's `EnvironmentFile=`; never in the unit, logs or errors;
//! - the S3 CA bundle, when configured, is copied to `/etc/clusterkit/s3-ca.pem`.
//!
//! The units and the `--print-cronjob` CronJob are rendered from `templates/backup/`
//! (compiled in, golden files in `tests/data/backup-units/`); what needs escaping — the
//! `ExecStart=` words, the environment file — is quoted here before it reaches a template.
//!
//! Idempotent: each file goes through the playbook `copy` module's check-then-act
//! (`files::ensure_content`: one stat with sha256 and mode, an upload only when either
//! differs); the units are reloaded and the timer enabled only when needed; the report lists
//! what changed per host. `--check` runs the same checks, changes nothing, and reports what
//! would change with the diff of each unit or CA file (never of the binary, the environment
//! file or the kubeconfig).
//! Several control-plane hosts run the timer: the store lock plus `--once`'s window make one
//! backup per tick. Limits: the store must be reachable from the hosts (a `file://` store is
//! each host's own directory); secrets are copied as they are at install time.

use std::path::{Path, PathBuf};

use clusterkit_core::config::Cluster;
use clusterkit_core::exec::{Command, Executor};
use clusterkit_core::layout::NodeLayout;
use clusterkit_core::playbook::modules::{files, Standalone, Status};

use crate::error::BackupError;

/// The admin kubeconfig copy a namespace timer uses (0600).
pub const KUBECONFIG_PATH: &str = NODE.backup_kubeconfig;
/// Secrets for the unit (0600).
pub const ENV_PATH: &str = NODE.backup_env;
/// The S3 CA bundle copy.
pub const CA_PATH: &str = NODE.backup_s3_ca;

/// Where the timers' files and the etcd client pair are on a host.
const NODE: NodeLayout = NodeLayout::DEFAULT;

/// What a timer backs up.
#[derive(Debug, Clone)]
pub enum What {
    Etcd,
    /// Namespaces: `selection` is the `backup namespace` selection flags (see
    /// `NamespaceSelection::to_args`), `kubeconfig` the local file copied to
    /// [`KUBECONFIG_PATH`].
    Namespaces {
        selection: Vec<String>,
        kubeconfig: PathBuf,
    },
}

/// What to install.
#[derive(Debug, Clone)]
pub struct TimerSpec {
    /// The units' name without suffix: `clusterkit-backup` (etcd) or
    /// `clusterkit-backup-namespaces`.
    pub unit: &'static str,
    /// Local kubeconfig copied to [`KUBECONFIG_PATH`] (namespace timers).
    pub kubeconfig: Option<PathBuf>,
    /// systemd `OnCalendar=`.
    pub on_calendar: String,
    /// The binary's path on the hosts.
    pub binary: String,
    /// Local binary uploaded to `binary` when the host's differs; `None`: must exist there.
    pub upload_binary: Option<PathBuf>,
    /// Arguments after the binary (`backup schedule --once …`).
    pub args: Vec<String>,
    /// `NAME=value` lines of the environment file (secrets).
    pub env: Vec<(String, String)>,
    /// Local S3 CA bundle to copy to [`CA_PATH`].
    pub ca_file: Option<PathBuf>,
    /// Each run drills its new backup (`--drill`): etcd timers need `etcd` and `etcdctl` on
    /// the hosts (checked at install).
    pub drill: bool,
}

impl TimerSpec {
    /// Where the service unit goes.
    pub fn service_path(&self) -> String {
        NODE.service_file(self.unit)
    }

    /// Where the timer unit goes.
    pub fn timer_path(&self) -> String {
        NODE.timer_file(self.unit)
    }

    fn timer_name(&self) -> String {
        format!("{}.timer", self.unit)
    }

    fn what(&self) -> &'static str {
        if self.kubeconfig.is_some() {
            "namespace"
        } else {
            "etcd"
        }
    }
}

/// Resolves the unit's arguments and secrets from cluster.yaml. `store` overrides
/// `backup.store`.
pub fn spec_from_cluster(
    cluster: &Cluster,
    what: What,
    store: Option<&str>,
    on_calendar: &str,
    binary: &str,
    upload_binary: Option<PathBuf>,
    drill: bool,
) -> Result<TimerSpec, BackupError> {
    let b = &cluster.backup;
    let store = match (store, &b.store) {
        (Some(s), _) => s.to_string(),
        (None, Some(s)) => s.to_string(),
        (None, None) => {
            return Err(BackupError::Invalid(
                "no store: give --store or set backup.store in cluster.yaml".into(),
            ))
        }
    };
    let mut args: Vec<String> = ["backup", "schedule", "--once", "--store"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(store);
    let mut push = |k: &str, v: String| {
        args.push(k.to_string());
        args.push(v);
    };
    let (unit, kubeconfig, selection) = match what {
        What::Etcd => {
            let endpoints = NodeLayout::from_cluster(cluster).etcd_client_urls(cluster);
            if endpoints.is_empty() {
                return Err(BackupError::Invalid(
                    "cluster.yaml has no etcd hosts".into(),
                ));
            }
            push("--endpoints", endpoints.join(","));
            let (cert, key) = NODE.apiserver_etcd_client();
            push("--cacert", NODE.etcd_ca());
            push("--cert", cert);
            push("--key", key);
            (NODE.units.etcd_backup, None, vec![])
        }
        What::Namespaces {
            selection,
            kubeconfig,
        } => {
            push("--kind", "namespace".into());
            push("--kubeconfig", KUBECONFIG_PATH.into());
            (NODE.units.namespace_backup, Some(kubeconfig), selection)
        }
    };
    push("--cluster-name", cluster.name.clone());
    push("--compression-level", b.compression_level.to_string());
    if let Some(e) = &b.s3.endpoint {
        push("--s3-endpoint", e.clone());
    }
    if let Some(r) = &b.s3.region {
        push("--s3-region", r.clone());
    }
    if let Some(p) = b.s3.path_style {
        push("--s3-path-style", p.to_string());
    }
    push(
        "--s3-checksums",
        match b.s3.checksums {
            clusterkit_core::config::Checksums::WhenRequired => "when-required".into(),
            clusterkit_core::config::Checksums::WhenSupported => "when-supported".into(),
        },
    );
    push("--part-size-mib", b.s3.part_size_mib.to_string());
    push("--parts-in-flight", b.s3.parts_in_flight.to_string());
    let ca_file = b.s3.ca_file.clone();
    if ca_file.is_some() {
        push("--s3-ca-file", CA_PATH.into());
    }
    for r in &b.encryption.age_recipients {
        push("--age-recipient", r.clone());
    }
    let r = &b.retention;
    for (flag, v) in [
        ("--keep-last", r.keep_last),
        ("--hourly", r.hourly),
        ("--daily", r.daily),
        ("--weekly", r.weekly),
        ("--monthly", r.monthly),
    ] {
        if let Some(v) = v {
            push(flag, v.to_string());
        }
    }
    let mut env = Vec::new();
    let read = |s: &clusterkit_core::config::SecretEnv| {
        s.read()
            .map(|v| v.expose().to_string())
            .map_err(|e| BackupError::Invalid(e.to_string()))
    };
    if let Some(s) = &b.s3.access_key_id {
        env.push(("AWS_ACCESS_KEY_ID".to_string(), read(s)?));
    }
    if let Some(s) = &b.s3.secret_access_key {
        env.push(("AWS_SECRET_ACCESS_KEY".to_string(), read(s)?));
    }
    if let Some(p) = &b.encryption.passphrase {
        env.push(("CLUSTERKIT_BACKUP_PASSPHRASE".to_string(), read(p)?));
        push("--passphrase-env", "CLUSTERKIT_BACKUP_PASSPHRASE".into());
    }
    if drill {
        // The hosts hold the store's passphrase already (backup.env); an age identity would
        // let every control-plane host decrypt every backup in the store.
        if !b.encryption.age_recipients.is_empty() && b.encryption.passphrase.is_none() {
            return Err(BackupError::Invalid(
                "--drill on the hosts would need the age identity on every control-plane host; \
                 drill from the operator's machine instead (`clusterkit backup drill --latest`)"
                    .into(),
            ));
        }
        args.push("--drill".into());
    }
    args.extend(selection);
    Ok(TimerSpec {
        unit,
        kubeconfig,
        on_calendar: on_calendar.to_string(),
        binary: binary.to_string(),
        upload_binary,
        args,
        env,
        ca_file,
        drill,
    })
}

/// One word of an `ExecStart=` line: systemd expands `%` specifiers and `$VAR`, and splits on
/// whitespace unless quoted.
fn exec_word(s: &str) -> Result<String, BackupError> {
    if s.contains('\n') || s.contains('\r') {
        return Err(BackupError::Invalid(format!(
            "a unit argument contains a newline: {s:?}"
        )));
    }
    let escaped = s.replace('%', "%%").replace('$', "$$");
    if !escaped.is_empty()
        && escaped
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@+,[]%$".contains(&b))
    {
        return Ok(escaped);
    }
    Ok(format!(
        "\"{}\"",
        escaped.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// The service unit template, compiled in.
pub const SERVICE_TEMPLATE: (&str, &str) = (
    "templates/backup/clusterkit-backup.service",
    include_str!("../../templates/backup/clusterkit-backup.service"),
);

/// The timer unit template, compiled in.
pub const TIMER_TEMPLATE: (&str, &str) = (
    "templates/backup/clusterkit-backup.timer",
    include_str!("../../templates/backup/clusterkit-backup.timer"),
);

/// The CronJob template, compiled in.
pub const CRONJOB_TEMPLATE: (&str, &str) = (
    "templates/backup/cronjob.yaml",
    include_str!("../../templates/backup/cronjob.yaml"),
);

/// Renders one of the templates above with `context`.
pub fn render_template(
    (name, text): (&str, &str),
    context: &serde_json::Value,
) -> Result<String, BackupError> {
    clusterkit_core::playbook::render::render_text(text, context).map_err(|e| BackupError::Render {
        template: name.to_string(),
        message: e.to_string(),
    })
}

/// The service unit's template context: the `ExecStart=` line is quoted here, word by word.
pub fn service_context(spec: &TimerSpec) -> Result<serde_json::Value, BackupError> {
    let mut exec = exec_word(&spec.binary)?;
    for a in &spec.args {
        exec.push(' ');
        exec.push_str(&exec_word(a)?);
    }
    Ok(serde_json::json!({ "unit": {
        "what": spec.what(),
        "dir": NODE.clusterkit_dir,
        "config": NODE.clusterkit_file("no-cluster.yaml"),
        "env_file": ENV_PATH,
        "exec_start": exec,
    }}))
}

/// The timer unit's template context.
pub fn timer_context(spec: &TimerSpec) -> Result<serde_json::Value, BackupError> {
    if spec.on_calendar.contains('\n') {
        return Err(BackupError::Invalid("OnCalendar contains a newline".into()));
    }
    Ok(serde_json::json!({ "unit": {
        "what": spec.what(),
        "on_calendar": spec.on_calendar,
    }}))
}

/// The service unit.
pub fn service_unit(spec: &TimerSpec) -> Result<String, BackupError> {
    render_template(SERVICE_TEMPLATE, &service_context(spec)?)
}

/// The timer unit.
pub fn timer_unit(spec: &TimerSpec) -> Result<String, BackupError> {
    render_template(TIMER_TEMPLATE, &timer_context(spec)?)
}

fn env_file(spec: &TimerSpec) -> Result<String, BackupError> {
    let mut out = String::from("# Written by `clusterkit backup install-timer` (mode 0600).\n");
    for (k, v) in &spec.env {
        if v.contains('\n') {
            return Err(BackupError::Invalid(format!(
                "the value of {k} contains a newline"
            )));
        }
        out.push_str(&format!(
            "{k}=\"{}\"\n",
            v.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    Ok(out)
}

/// The Kubernetes CronJob `install-timer --print-cronjob` prints: `schedule` in cron syntax,
/// `image` one that contains the clusterkit binary.
pub fn cronjob(schedule: &str, image: &str) -> Result<String, BackupError> {
    render_template(
        CRONJOB_TEMPLATE,
        &serde_json::json!({ "cronjob": { "schedule": schedule, "image": image } }),
    )
}

/// What changed on one host (in check mode: what would change).
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostReport {
    pub host: String,
    /// Empty when everything was already in place.
    pub changed: Vec<String>,
    /// Check mode: the unified diff of each file that would change, except the binary and
    /// the files holding secrets (the environment file, the kubeconfig).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<String>,
}

/// How one host is brought to the spec: the module context files are compared and written
/// through, and what was (or would be) done.
struct Converge<'a> {
    x: &'a dyn Executor,
    modules: &'a Standalone,
    check: bool,
    report: HostReport,
}

impl Converge<'_> {
    /// Makes `path` hold `data` with `mode` (the `copy` module's check-then-act: one stat, an
    /// upload only when content or mode differ). `action` names the change in the report;
    /// `secret` keeps the content out of the check-mode diff. Returns whether it changed.
    async fn file(
        &mut self,
        action: &str,
        path: &str,
        data: &[u8],
        mode: u32,
        secret: bool,
    ) -> Result<bool, BackupError> {
        let cx = self.modules.cx(self.x, self.check, secret);
        let outcome = files::ensure_content(&cx, path, data, Some(mode), None, None)
            .await
            .map_err(|source| BackupError::OnHost {
                host: self.x.host().to_string(),
                what: format!("writing {path}"),
                source: Box::new(source),
            })?;
        if outcome.status != Status::Changed {
            return Ok(false);
        }
        self.done(format!("{action} {path}"));
        self.report.diff.extend(outcome.diff);
        Ok(true)
    }

    /// Records a change; in check mode it is what would be done.
    fn done(&mut self, what: String) {
        let what = if self.check {
            format!("would {what}")
        } else {
            what
        };
        self.report.changed.push(what);
    }

    /// Runs a command that changes the host, unless in check mode.
    async fn act(&mut self, what: &str, line: String) -> Result<(), BackupError> {
        if !self.check {
            sh(self.x, what, line).await?;
        }
        Ok(())
    }
}

fn q(s: &str) -> String {
    clusterkit_core::exec::ssh::shell_quote(s)
}

fn err(host: &str, what: &str, e: impl std::fmt::Display) -> BackupError {
    BackupError::Command {
        command: format!("{what} on {host}"),
        status: "failed".into(),
        stderr: e.to_string(),
    }
}

async fn sh(x: &dyn Executor, what: &str, line: String) -> Result<String, BackupError> {
    x.run_checked(&Command::new(line))
        .await
        .map(|o| o.stdout_str())
        .map_err(|e| err(x.host(), what, e))
}

fn local_arch() -> &'static str {
    std::env::consts::ARCH
}

/// Installs (or updates) the units on one control-plane host and enables the timer; with
/// `check`, only reports what would change (read-only checks still run, nothing is written).
pub async fn install_on(
    x: &dyn Executor,
    spec: &TimerSpec,
    modules: &Standalone,
    check: bool,
) -> Result<HostReport, BackupError> {
    let host = x.host().to_string();
    // An etcd timer needs the etcd client pair the pki phase installed; a namespace timer
    // brings its kubeconfig.
    let needed = if spec.kubeconfig.is_some() {
        String::new()
    } else {
        let (cert, key) = NODE.apiserver_etcd_client();
        format!("{} {cert} {key}", NODE.etcd_ca())
    };
    if spec.drill && spec.kubeconfig.is_none() {
        sh(
            x,
            "checking etcd and etcdctl for --drill",
            "for b in etcd etcdctl; do command -v $b >/dev/null || { echo \"--drill needs $b on this host (Debian packages etcd-server and etcd-client)\" >&2; exit 1; }; done"
                .into(),
        )
        .await?;
    }
    sh(
        x,
        "checking the etcd client certificate and systemd",
        format!(
            "for f in {needed}; do [ -f \"$f\" ] || {{ echo \"$f is missing (run install --phase pki first; only control-plane hosts have it)\" >&2; exit 1; }}; done; \
             command -v systemctl >/dev/null || {{ echo 'no systemd' >&2; exit 1; }}"
        ),
    )
    .await?;
    let mut host_run = Converge {
        x,
        modules,
        check,
        report: HostReport {
            host: host.clone(),
            changed: Vec::new(),
            diff: Vec::new(),
        },
    };
    if let Some(local) = &spec.upload_binary {
        let arch = sh(x, "uname -m", "uname -m".into()).await?;
        if arch.trim() != local_arch() {
            return Err(err(
                &host,
                "checking the architecture",
                format!(
                    "the host is {}, this clusterkit is {}: put a matching binary on the hosts and \
                     give --binary PATH --no-upload",
                    arch.trim(),
                    local_arch()
                ),
            ));
        }
        let data = tokio::fs::read(local)
            .await
            .map_err(|e| BackupError::LocalIo {
                path: local.clone(),
                source: e,
            })?;
        // No diff of a binary.
        host_run
            .file("upload", &spec.binary, &data, 0o755, true)
            .await?;
    } else {
        sh(
            x,
            "checking the binary",
            format!(
                "[ -x {b} ] || {{ echo '{b} is not an executable on this host' >&2; exit 1; }}",
                b = q(&spec.binary)
            ),
        )
        .await?;
    }
    host_run
        .act(
            &format!("creating {}", NODE.clusterkit_dir),
            format!("mkdir -p {d} && chmod 700 {d}", d = NODE.clusterkit_dir),
        )
        .await?;
    let env = env_file(spec)?;
    host_run
        .file("write", ENV_PATH, env.as_bytes(), 0o600, true)
        .await?;
    // Local files the hosts get a copy of; the kubeconfig is a credential.
    for (local, remote, mode, secret) in [
        (&spec.ca_file, CA_PATH, 0o644, false),
        (&spec.kubeconfig, KUBECONFIG_PATH, 0o600, true),
    ] {
        let Some(local) = local else { continue };
        let data = std::fs::read(local).map_err(|e| BackupError::LocalIo {
            path: local.clone(),
            source: e,
        })?;
        host_run.file("write", remote, &data, mode, secret).await?;
    }
    let mut units = false;
    for (path, text) in [
        (spec.service_path(), service_unit(spec)?),
        (spec.timer_path(), timer_unit(spec)?),
    ] {
        units |= host_run
            .file("write", &path, text.as_bytes(), 0o644, false)
            .await?;
    }
    if units {
        host_run
            .act("systemctl daemon-reload", "systemctl daemon-reload".into())
            .await?;
    }
    let timer = spec.timer_name();
    let state = sh(
        x,
        "checking the timer",
        format!("echo \"$(systemctl is-enabled {timer} 2>/dev/null) $(systemctl is-active {timer} 2>/dev/null)\""),
    )
    .await?;
    if state.trim() != "enabled active" {
        host_run
            .act(
                "enabling the timer",
                format!("systemctl enable --now {timer}"),
            )
            .await?;
        host_run.done(format!("enable --now {timer}"));
    } else if units {
        // A changed OnCalendar takes effect on restart.
        host_run
            .act("restarting the timer", format!("systemctl restart {timer}"))
            .await?;
    }
    Ok(host_run.report)
}

/// The running binary, for the upload.
pub fn current_binary() -> Result<PathBuf, BackupError> {
    std::env::current_exe().map_err(|e| BackupError::LocalIo {
        path: Path::new("/proc/self/exe").to_path_buf(),
        source: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(args: &[&str]) -> TimerSpec {
        TimerSpec {
            unit: "clusterkit-backup",
            kubeconfig: None,
            on_calendar: "*-*-* 00/6:00:00".into(),
            binary: NodeLayout::DEFAULT.clusterkit_binary.into(),
            upload_binary: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("AWS_SECRET_ACCESS_KEY".into(), "a\"b".into())],
            ca_file: None,
            drill: false,
        }
    }

    #[test]
    fn exec_start_quotes_and_escapes() {
        let u = service_unit(&spec(&["--store", "s3://b/p", "--x", "a b", "100%$"])).unwrap();
        assert!(
            u.contains(
                "ExecStart=/usr/local/bin/clusterkit --store s3://b/p --x \"a b\" 100%%$$\n"
            ),
            "{u}"
        );
        assert!(!u.contains("a\"b"), "secrets stay out of the unit");
        assert!(service_unit(&spec(&["a\nb"])).is_err());
    }

    #[test]
    fn env_file_quotes() {
        let e = env_file(&spec(&[])).unwrap();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY=\"a\\\"b\"\n"), "{e}");
    }
}
