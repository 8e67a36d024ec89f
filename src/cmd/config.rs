//! `clusterkit config`: write and check cluster.yaml.
//!
//! `init` prints the annotated example (every field explained); `validate` loads the file
//! named by `-f` exactly as every other command does and reports all problems at once.

use clap::Subcommand;
use clusterkit_core::config::{self, ConfigError, Role};

use super::Global;

#[derive(Subcommand)]
pub enum Command {
    /// Print an annotated example cluster.yaml (redirect it to a file and edit it).
    Init,
    /// Check the cluster file given with -f: prints every error (exit 1) or "ok" (exit 0).
    Validate,
}

impl Command {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        match self {
            Command::Init => super::write_stdout(config::EXAMPLE),
            Command::Validate => validate(&global),
        }
    }
}

fn validate(global: &Global) -> anyhow::Result<()> {
    let path = &global.config;
    match config::load(path) {
        Ok(loaded) => {
            let c = &loaded.cluster;
            let doc = serde_json::json!({
                "ok": true,
                "warnings": loaded.warnings,
                "cluster": c,
            });
            global.output.print(&doc, || {
                for w in &loaded.warnings {
                    eprintln!("{w}");
                }
                let roles: Vec<String> = Role::ALL
                    .iter()
                    .map(|r| (r, c.hosts_with_role(*r).len()))
                    .filter(|(_, n)| *n > 0)
                    .map(|(r, n)| format!("{n} {r}"))
                    .collect();
                let warnings = match loaded.warnings.len() {
                    0 => String::new(),
                    1 => ", 1 warning".to_string(),
                    n => format!(", {n} warnings"),
                };
                format!(
                    "ok: {} hosts ({}){warnings}\n",
                    c.hosts.len(),
                    roles.join(", ")
                )
            })
        }
        Err(err @ ConfigError::Invalid { .. }) => {
            let doc = serde_json::json!({ "ok": false, "diagnostics": err.diagnostics() });
            global.output.print(&doc, || {
                for d in err.diagnostics() {
                    eprintln!("{d}");
                }
                String::new()
            })?;
            let n = err.error_count();
            anyhow::bail!(
                "{} is invalid: {n} error{}",
                path.display(),
                if n == 1 { "" } else { "s" }
            )
        }
        Err(err) => Err(err.into()),
    }
}
