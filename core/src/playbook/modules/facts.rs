//! `gather_facts`: what a playbook knows about a host, as `facts` in tera (`facts.os.family`,
//! `facts.cpus`, `facts.memory_mib`, …) and for preflight checks.
//!
//! A thin adapter: the gathering (one remote command) and the parsing are
//! [`crate::facts`]'s; this module turns them into the JSON view ([`crate::facts::Facts::to_value`])
//! and a module outcome.
//!
//! Limits: those of [`crate::facts`] (Linux only; missing optional tools give empty values).

use serde::Deserialize;
use serde_json::Value;

use super::{ModuleError, Outcome, TaskCx};
use crate::exec::Executor;
use crate::facts::FactsError;

/// Arguments of `gather_facts` (none).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatherArgs {}

impl From<FactsError> for ModuleError {
    fn from(e: FactsError) -> Self {
        match e {
            FactsError::Exec(e) => ModuleError::Exec(e),
            other => ModuleError::Failed(other.to_string()),
        }
    }
}

/// Gathers facts with one command and returns the playbook view.
pub async fn gather(exec: &dyn Executor) -> Result<Value, ModuleError> {
    Ok(crate::facts::gather(exec).await?.to_value())
}

pub async fn run(_args: GatherArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let facts = gather(cx.exec).await?;
    Ok(Outcome::ok("facts gathered").with_result(facts))
}
