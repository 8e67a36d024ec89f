//! `command`, `shell` and `assert`.
//!
//! `shell` runs its text with `sh -c` on the host; `command` is the same with an `argv` form
//! that quotes each word, for when arguments come from variables. `creates`/`removes` make a
//! command idempotent: the test and the command run in one remote call. A command without them
//! reports `changed` unless the task's `changed_when` says otherwise. In check mode commands do
//! not run (they are reported as skipped, or as "would run" when `creates`/`removes` can tell)
//! unless the task says `check_mode: false` — for read-only commands only.
//!
//! `assert` evaluates tera conditions against the host's context and fails with `msg` when one
//! is false; it never touches the host.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::{flex, sh_quote, ArgsError, ModuleError, Outcome, TaskCx};
use crate::exec::Command;

/// Arguments of `command` and `shell`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandArgs {
    /// The command line (`sh -c`).
    #[serde(default)]
    pub cmd: Option<String>,
    /// Words, each quoted (only one of `cmd`/`argv`).
    #[serde(default)]
    pub argv: Option<Vec<String>>,
    /// Skip when this path exists.
    #[serde(default)]
    pub creates: Option<String>,
    /// Skip when this path does not exist.
    #[serde(default)]
    pub removes: Option<String>,
    /// Run in this directory.
    #[serde(default)]
    pub chdir: Option<String>,
    /// Fed to the command's standard input.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Per-command timeout in seconds (default: the executor's).
    #[serde(default, deserialize_with = "flex::opt_u64")]
    pub timeout_secs: Option<u64>,
}

/// Marker printed instead of running when `creates`/`removes` says the work is done.
const DONE: &str = "__CK_ALREADY_DONE__";

pub async fn run(args: CommandArgs, _shell: bool, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let line = match (&args.cmd, &args.argv) {
        (Some(c), None) => c.clone(),
        (None, Some(a)) if !a.is_empty() => {
            a.iter().map(|w| sh_quote(w)).collect::<Vec<_>>().join(" ")
        }
        _ => return Err(ArgsError::Invalid("give exactly one of `cmd` or `argv`".into()).into()),
    };
    let mut guard = String::new();
    if let Some(p) = &args.creates {
        guard.push_str(&format!(
            "if [ -e {} ]; then echo {DONE}; exit 0; fi\n",
            sh_quote(p)
        ));
    }
    if let Some(p) = &args.removes {
        guard.push_str(&format!(
            "if [ ! -e {} ]; then echo {DONE}; exit 0; fi\n",
            sh_quote(p)
        ));
    }
    if cx.check && !cx.run_in_check {
        if guard.is_empty() {
            return Ok(Outcome::skipped("not run in check mode"));
        }
        let out = cx
            .exec
            .run(&Command::new(format!("{guard}echo would-run")))
            .await?;
        return Ok(if out.stdout_str().contains(DONE) {
            Outcome::ok("already done (creates/removes)")
        } else {
            Outcome::changed(format!("would run: {}", first_line(&line)))
        });
    }
    let mut script = guard;
    if let Some(dir) = &args.chdir {
        script.push_str(&format!("cd {} || exit 1\n", sh_quote(dir)));
    }
    script.push_str(&line);
    let mut cmd = Command::new(script);
    if let Some(input) = &args.stdin {
        cmd = cmd.stdin(input.as_bytes().to_vec());
    }
    if let Some(t) = args.timeout_secs {
        cmd = cmd.timeout(Duration::from_secs(t));
    }
    if cx.no_log {
        cmd = cmd.redacted();
    }
    let out = cx.exec.run(&cmd).await?;
    let stdout = out.stdout_str();
    if (args.creates.is_some() || args.removes.is_some()) && stdout.trim() == DONE {
        return Ok(Outcome::ok("already done (creates/removes)")
            .with_result(json!({"rc": 0, "stdout": "", "stderr": "", "skipped": true})));
    }
    let stderr = out.stderr_str();
    let rc = out.status.unwrap_or(-1);
    let result = json!({"rc": rc, "stdout": stdout.trim_end(), "stderr": stderr.trim_end()});
    if out.success() {
        Ok(Outcome::changed(format!("ran: {}", first_line(&line))).with_result(result))
    } else {
        // The engine may still turn this into a success with `failed_when`; keep the result.
        Ok(Outcome::new(
            super::Status::Failed,
            format!(
                "`{}` exited with {}: {}",
                if cx.no_log {
                    "<redacted>"
                } else {
                    first_line(&line)
                },
                out.status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "no status (killed)".into()),
                crate::exec::tail(if stderr.trim().is_empty() {
                    &stdout
                } else {
                    &stderr
                })
            ),
        )
        .with_result(result))
    }
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// Arguments of `assert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertArgs {
    /// Tera conditions that must all be true.
    #[serde(deserialize_with = "flex::strings")]
    pub that: Vec<String>,
    /// Shown when one is false.
    #[serde(default)]
    pub msg: Option<String>,
}

pub async fn assert(args: AssertArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    for cond in &args.that {
        let ok = crate::playbook::render::eval_condition(cond, cx.context)?;
        if !ok {
            let msg = match &args.msg {
                Some(m) => crate::playbook::render::render_str(m, cx.context)?,
                None => format!("assertion failed: {cond}"),
            };
            return Err(ModuleError::Failed(msg));
        }
    }
    Ok(Outcome::ok("all assertions passed"))
}
