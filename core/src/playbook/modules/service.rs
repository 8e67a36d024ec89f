//! `systemd` and `wait_for`.
//!
//! `systemd` checks and acts in one remote script, reading the unit's state with a single
//! `systemctl show`: daemon-reload when a unit file changed on
//! disk (systemd says `NeedDaemonReload=yes`) or when asked, enable/disable, start/stop, and
//! `restarted` (always a change — it is what handlers use). `wait_for` polls on the host itself
//! in one remote command (a TCP port via bash's /dev/tcp, an HTTP URL via curl, or a command)
//! until it succeeds or the timeout passes.

use serde::Deserialize;

use super::{flex, sh_quote, ArgsError, ModuleError, Outcome, TaskCx};

/// Wanted run state.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    Started,
    Stopped,
    Restarted,
    Reloaded,
}

/// Arguments of `systemd`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemdArgs {
    /// Unit name (`containerd`, `kubelet.service`); may be absent for a bare daemon-reload.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "flex::opt_bool")]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub state: Option<ServiceState>,
    /// Always run `systemctl daemon-reload` first.
    #[serde(default, deserialize_with = "flex::opt_bool")]
    pub daemon_reload: Option<bool>,
}

pub async fn systemd(args: SystemdArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let mut s = String::from("command -v systemctl >/dev/null || { echo 'systemctl not found: this host does not run systemd' >&2; exit 1; }\n");
    if args.daemon_reload == Some(true) {
        // A forced reload is not a change of state: it only makes systemd re-read units.
        s.push_str("[ $CK_CHECK = 1 ] || systemctl daemon-reload\n");
    }
    let Some(name) = &args.name else {
        return Ok(cx.script(&s).await?.outcome("daemon reloaded"));
    };
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"@._-:\\".contains(&b))
    {
        return Err(ArgsError::Invalid(format!("`{name}` is not a unit name")).into());
    }
    let u = sh_quote(name);
    // The whole check is ONE `systemctl show` (one D-Bus round trip to systemd instead of one
    // per question): every systemctl process costs tens of milliseconds on a loaded host.
    s.push_str(&format!(
        "ck_unit() {{\n\
         need=; load=; en=; act=\n\
         while IFS='=' read -r k v; do case \"$k\" in NeedDaemonReload) need=$v ;; LoadState) load=$v ;; UnitFileState) en=$v ;; ActiveState) act=$v ;; esac; done <<EOF\n\
         $(systemctl show -p NeedDaemonReload -p LoadState -p UnitFileState -p ActiveState {u} 2>/dev/null)\n\
         EOF\n\
         }}\n\
         ck_unit\n\
         if [ \"$need\" = yes ]; then changed 'daemon-reload (unit file changed)'; [ $CK_CHECK = 1 ] || {{ systemctl daemon-reload; ck_unit; }}; fi\n\
         if [ \"$load\" = not-found ] && [ $CK_CHECK = 0 ]; then echo 'unit {name} not found (is its package installed?)' >&2; exit 1; fi\n"
    ));
    match args.enabled {
        Some(true) => s.push_str(&format!(
            "case \"$en\" in enabled|enabled-runtime|static|alias|indirect|generated) ;; \
             masked|masked-runtime) echo 'unit {name} is masked' >&2; exit 1 ;; \
             *) changed \"enable {name} (was ${{en:-unknown}})\"; [ $CK_CHECK = 1 ] || systemctl enable -q {u} ;; esac\n"
        )),
        Some(false) => s.push_str(&format!(
            "if [ \"$en\" = enabled ]; then changed 'disable {name}'; [ $CK_CHECK = 1 ] || systemctl disable -q {u}; fi\n"
        )),
        None => {}
    }
    match args.state {
        Some(ServiceState::Started) => s.push_str(&format!(
            "case \"$act\" in active|reloading) ;; *) changed \"start {name} (was ${{act:-unknown}})\"; \
             [ $CK_CHECK = 1 ] || systemctl start {u} || {{ systemctl status --no-pager -n 20 {u} >&2; exit 1; }} ;; esac\n"
        )),
        Some(ServiceState::Stopped) => s.push_str(&format!(
            "case \"$act\" in active|reloading|activating) changed 'stop {name}'; [ $CK_CHECK = 1 ] || systemctl stop {u} ;; esac\n"
        )),
        Some(ServiceState::Restarted) => s.push_str(&format!(
            "changed 'restart {name}'; [ $CK_CHECK = 1 ] || systemctl restart {u} || {{ systemctl status --no-pager -n 20 {u} >&2; exit 1; }}\n"
        )),
        Some(ServiceState::Reloaded) => s.push_str(&format!(
            "changed 'reload {name}'; [ $CK_CHECK = 1 ] || systemctl reload-or-restart {u}\n"
        )),
        None => {}
    }
    Ok(cx
        .script(&s)
        .await?
        .outcome(&format!("{name} is as wanted")))
}

/// Arguments of `wait_for`: exactly one of `port`, `url`, `command`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitForArgs {
    /// TCP port to accept a connection.
    #[serde(default, deserialize_with = "flex::opt_u64")]
    pub port: Option<u64>,
    /// Address for `port` (default 127.0.0.1, seen from the host).
    #[serde(default)]
    pub host: Option<String>,
    /// URL that must answer 2xx/3xx (`-k` is not used: https needs a trusted certificate or
    /// `ca_file`).
    #[serde(default)]
    pub url: Option<String>,
    /// CA certificate for an https `url`.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// A command that must exit 0.
    #[serde(default)]
    pub command: Option<String>,
    /// Give up after this many seconds (default 60).
    #[serde(default, deserialize_with = "flex::opt_u64")]
    pub timeout_secs: Option<u64>,
}

impl WaitForArgs {
    pub fn check(&self) -> Result<(), ArgsError> {
        let n = [
            self.port.is_some(),
            self.url.is_some(),
            self.command.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n == 1 {
            Ok(())
        } else {
            Err(ArgsError::Invalid(
                "give exactly one of `port`, `url` or `command`".into(),
            ))
        }
    }
}

pub async fn wait_for(args: WaitForArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    args.check()?;
    if cx.check && !cx.run_in_check {
        return Ok(Outcome::skipped("not waited for in check mode"));
    }
    let timeout = args.timeout_secs.unwrap_or(60);
    let (probe, what) = if let Some(port) = args.port {
        let host = args.host.clone().unwrap_or_else(|| "127.0.0.1".into());
        (
            format!(
                "bash -c {} 2>/dev/null",
                sh_quote(&format!("exec 3<>/dev/tcp/{host}/{port}"))
            ),
            format!("{host}:{port}"),
        )
    } else if let Some(url) = &args.url {
        let ca = args
            .ca_file
            .as_ref()
            .map(|c| format!("--cacert {} ", sh_quote(c)))
            .unwrap_or_default();
        (
            format!("curl -fsS -o /dev/null --max-time 5 {ca}{}", sh_quote(url)),
            url.clone(),
        )
    } else {
        let c = args.command.clone().unwrap_or_default();
        (format!("( {c} ) >/dev/null 2>&1"), c)
    };
    let line = format!(
        "end=$(( $(date +%s) + {timeout} ))\n\
         until {probe}; do\n\
           if [ $(date +%s) -ge $end ]; then echo 'gave up after {timeout}s waiting for {w}' >&2; exit 1; fi\n\
           sleep 0.3\n\
         done\n",
        w = what.replace('\'', "")
    );
    let mut cmd = crate::exec::Command::new(line);
    cmd.timeout = Some(std::time::Duration::from_secs(timeout + 30));
    cx.exec.run_checked(&cmd).await?;
    Ok(Outcome::ok(format!("{what} is up")))
}
