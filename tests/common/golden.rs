//! Golden files: what a renderer must produce, kept beside its input in the repository.
//!
//! One variable for every golden test, `CLUSTERKIT_UPDATE_GOLDEN=1`, rewrites the golden files
//! of the tests run with it instead of comparing (review the diff before committing). Under CI
//! (`CI` set, as CI services do) it is refused: a run that blesses its own output proves nothing.
//! `scripts/test.sh` refuses the same combination before building anything.
//!
//! Self-contained (std only) so that crates' own test directories can include it by path.
#![allow(dead_code)]

use std::path::Path;

/// The variable that switches every golden test from comparing to rewriting.
pub const UPDATE_VAR: &str = "CLUSTERKIT_UPDATE_GOLDEN";

fn set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

/// Whether golden files are to be rewritten rather than compared; panics under CI.
pub fn updating() -> bool {
    let update = set(UPDATE_VAR);
    assert!(
        !(update && set("CI")),
        "{UPDATE_VAR} is set while CI is: golden files are compared in CI, never rewritten"
    );
    update
}

/// Compares `got` with the golden file at `path`, or writes it when [`updating`]. The error
/// names the file and shows both texts, so a failing test says what changed.
pub fn check(path: &Path, got: &str) -> Result<(), String> {
    if updating() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        return std::fs::write(path, got).map_err(|e| format!("{}: {e}", path.display()));
    }
    let want = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e} ({UPDATE_VAR}=1 creates it; review it before committing)",
            path.display()
        )
    })?;
    if want == got {
        Ok(())
    } else {
        Err(format!(
            "{} differs from what is rendered now ({UPDATE_VAR}=1 accepts a deliberate change)\n\
             --- golden\n{want}--- rendered\n{got}",
            path.display()
        ))
    }
}
