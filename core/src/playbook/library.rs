//! Where playbooks, templates and local files come from: override directories first, then the
//! copies embedded in the binary.
//!
//! The installer embeds `playbooks/*.yaml` and `templates/**` at build time and hands them to a
//! [`Library`]; an operator may put a file with the same relative name in an override directory
//! (`--library DIR`, or the directory of a playbook given to `clusterkit run`) to change it
//! without rebuilding. Lookups name every place searched when nothing matches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::PlaybookError;

/// A text file and where it came from (shown in every error about it).
#[derive(Debug, Clone)]
pub struct Source {
    /// `path/on/disk` or `embedded:relative/name`.
    pub origin: String,
    /// The directory relative names in this file resolve against, if it came from disk.
    pub dir: Option<PathBuf>,
    pub text: String,
}

/// Embedded files plus override directories, searched in order.
#[derive(Debug, Clone, Default)]
pub struct Library {
    /// Relative name (`playbooks/prepare.yaml`, `templates/containerd/config.toml`) → content.
    embedded: BTreeMap<String, String>,
    /// Searched before the embedded copies, first match wins.
    dirs: Vec<PathBuf>,
}

impl Library {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an embedded file under its relative name.
    pub fn embed(&mut self, name: &str, text: &str) -> &mut Self {
        self.embedded.insert(name.to_string(), text.to_string());
        self
    }

    /// Adds an override directory. Directories are searched in the order they were added, all
    /// before the embedded files.
    pub fn add_dir(&mut self, dir: impl Into<PathBuf>) -> &mut Self {
        self.dirs.push(dir.into());
        self
    }

    /// A copy of this library that searches `dir` before everything else.
    pub fn with_first_dir(&self, dir: &Path) -> Library {
        let mut lib = self.clone();
        lib.dirs.insert(0, dir.to_path_buf());
        lib
    }

    /// The override directories, in search order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Names of the embedded files below `prefix` (e.g. `templates/`).
    pub fn embedded_names(&self, prefix: &str) -> Vec<String> {
        self.embedded
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// A playbook by file path (if it exists) or by name under `playbooks/` (`prepare` or
    /// `prepare.yaml`).
    pub fn playbook(&self, name: &str) -> Result<Source, PlaybookError> {
        let path = Path::new(name);
        if path.is_file() {
            return read_source(path);
        }
        let file = if name.ends_with(".yaml") || name.ends_with(".yml") {
            name.to_string()
        } else {
            format!("{name}.yaml")
        };
        self.find("playbook", &[format!("playbooks/{file}"), file])
    }

    /// A template by its relative name (`containerd/config.toml`), under `templates/` in each
    /// place.
    pub fn template(&self, name: &str) -> Result<Source, PlaybookError> {
        self.find("template", &[format!("templates/{name}"), name.to_string()])
    }

    /// A local file for the `copy` module: absolute, or relative to an override directory
    /// (`files/NAME` or `NAME`).
    pub fn file_path(&self, name: &str) -> Result<PathBuf, PlaybookError> {
        let path = Path::new(name);
        if path.is_absolute() {
            return if path.is_file() {
                Ok(path.to_path_buf())
            } else {
                Err(PlaybookError::NotFound {
                    kind: "file",
                    name: name.to_string(),
                    searched: name.to_string(),
                })
            };
        }
        let mut searched = Vec::new();
        for dir in &self.dirs {
            for candidate in [dir.join("files").join(name), dir.join(name)] {
                if candidate.is_file() {
                    return Ok(candidate);
                }
                searched.push(candidate.display().to_string());
            }
        }
        Err(PlaybookError::NotFound {
            kind: "file",
            name: name.to_string(),
            searched: searched.join(", "),
        })
    }

    fn find(&self, kind: &'static str, names: &[String]) -> Result<Source, PlaybookError> {
        let mut searched = Vec::new();
        for dir in &self.dirs {
            for name in names {
                let candidate = dir.join(name);
                if candidate.is_file() {
                    return read_source(&candidate);
                }
                searched.push(candidate.display().to_string());
            }
        }
        if let Some(name) = names.first() {
            if let Some(text) = self.embedded.get(name) {
                return Ok(Source {
                    origin: format!("embedded:{name}"),
                    dir: None,
                    text: text.clone(),
                });
            }
            searched.push(format!("embedded:{name}"));
        }
        Err(PlaybookError::NotFound {
            kind,
            name: names.first().cloned().unwrap_or_default(),
            searched: searched.join(", "),
        })
    }
}

fn read_source(path: &Path) -> Result<Source, PlaybookError> {
    let bytes = std::fs::read(path).map_err(|e| PlaybookError::io(path, e))?;
    let text = crate::config::text(bytes).map_err(|e| {
        let at = format!("line {}, column {}: {e}", e.line, e.column);
        PlaybookError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, at),
        )
    })?;
    Ok(Source {
        origin: path.display().to_string(),
        dir: path.parent().map(Path::to_path_buf),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_directory_wins_over_embedded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("templates/a")).unwrap();
        std::fs::write(dir.path().join("templates/a/b.conf"), "disk").unwrap();
        let mut lib = Library::new();
        lib.embed("templates/a/b.conf", "embedded");
        lib.embed("templates/c.conf", "only embedded");
        assert_eq!(lib.template("a/b.conf").unwrap().text, "embedded");
        lib.add_dir(dir.path());
        assert_eq!(lib.template("a/b.conf").unwrap().text, "disk");
        assert_eq!(lib.template("c.conf").unwrap().text, "only embedded");
        let err = lib.template("nope").unwrap_err().to_string();
        assert!(err.contains("embedded:templates/nope"), "{err}");
    }

    #[test]
    fn a_non_utf8_file_is_refused_at_its_byte() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("templates")).unwrap();
        std::fs::write(dir.path().join("templates/x.conf"), b"ok\nab\xffc\n").unwrap();
        let mut lib = Library::new();
        lib.add_dir(dir.path());
        let Err(e) = lib.template("x.conf") else {
            panic!("accepted");
        };
        let text = format!(
            "{e}: {}",
            std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_default()
        );
        assert!(
            text.contains("line 2, column 3: the file is not UTF-8: byte 0xff at byte offset 5"),
            "{text}"
        );
    }
}
