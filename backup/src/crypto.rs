//! Optional encryption of stored bytes with age: to X25519 recipients (`age1…` public keys)
//! or with a passphrase (scrypt). Keys and passphrases never reach manifests, logs or errors.
//!
//! Limits: only native X25519 recipients and identity files of `AGE-SECRET-KEY-1…` lines
//! (comments allowed) are supported; plugins and SSH keys are not.

use std::io::{Read, Write};
use std::path::PathBuf;

use age::secrecy::SecretString;

use crate::manifest::Encryption;

/// Errors setting up or performing encryption. Never contains key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("invalid age recipient {recipient:?}: {reason}")]
    BadRecipient { recipient: String, reason: String },

    #[error("cannot read age identity file {}: {message}", path.display())]
    IdentityFile { path: PathBuf, message: String },

    #[error("environment variable {var} (the passphrase) is not set or empty")]
    PassphraseMissing { var: String },

    #[error("give either age recipients or a passphrase, not both")]
    Both,

    #[error(
        "cannot decrypt: {reason} (the backup is encrypted with {what}; give the matching \
         --age-identity file or --passphrase-env)"
    )]
    Decrypt { reason: String, what: String },

    #[error("the backup is encrypted ({what}) but no identity or passphrase was given")]
    NoKey { what: String },
}

/// How new backups are encrypted.
#[derive(Clone, Default)]
pub enum Encrypt {
    #[default]
    None,
    Recipients(Vec<String>),
    Passphrase(String),
}

impl std::fmt::Debug for Encrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Encrypt::None => f.write_str("None"),
            Encrypt::Recipients(r) => f.debug_tuple("Recipients").field(r).finish(),
            Encrypt::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
        }
    }
}

impl Encrypt {
    /// Builds the setting from the operator's options (recipients given inline, passphrase
    /// read from the environment variable `passphrase_env`).
    pub fn from_options(
        recipients: &[String],
        passphrase_env: Option<&str>,
    ) -> Result<Encrypt, CryptoError> {
        let passphrase = match passphrase_env {
            Some(var) => Some(read_passphrase(var)?),
            None => None,
        };
        match (recipients.is_empty(), passphrase) {
            (false, Some(_)) => Err(CryptoError::Both),
            (false, None) => {
                for r in recipients {
                    parse_recipient(r)?;
                }
                Ok(Encrypt::Recipients(recipients.to_vec()))
            }
            (true, Some(p)) => Ok(Encrypt::Passphrase(p)),
            (true, None) => Ok(Encrypt::None),
        }
    }

    /// What the manifest records.
    pub fn describe(&self) -> Encryption {
        match self {
            Encrypt::None => Encryption::None,
            Encrypt::Recipients(r) => Encryption::AgeRecipients {
                recipients: r.clone(),
            },
            Encrypt::Passphrase(_) => Encryption::AgePassphrase,
        }
    }

    /// Wraps `out` in an encrypting writer (or passes it through). Call `finish` on the result.
    pub fn wrap<W: Write>(&self, out: W) -> std::io::Result<EncWriter<W>> {
        let encryptor = match self {
            Encrypt::None => return Ok(EncWriter::Plain(out)),
            Encrypt::Recipients(list) => {
                let parsed: Vec<age::x25519::Recipient> = list
                    .iter()
                    .map(|r| parse_recipient(r))
                    .collect::<Result<_, _>>()
                    .map_err(std::io::Error::other)?;
                age::Encryptor::with_recipients(parsed.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| std::io::Error::other(e.to_string()))?
            }
            Encrypt::Passphrase(p) => {
                age::Encryptor::with_user_passphrase(SecretString::from(p.clone()))
            }
        };
        Ok(EncWriter::Age(Box::new(encryptor.wrap_output(out)?)))
    }
}

fn read_passphrase(var: &str) -> Result<String, CryptoError> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => Err(CryptoError::PassphraseMissing {
            var: var.to_string(),
        }),
    }
}

fn parse_recipient(r: &str) -> Result<age::x25519::Recipient, CryptoError> {
    r.trim()
        .parse::<age::x25519::Recipient>()
        .map_err(|e| CryptoError::BadRecipient {
            recipient: r.to_string(),
            reason: e.to_string(),
        })
}

/// A writer that encrypts or not.
pub enum EncWriter<W: Write> {
    Plain(W),
    Age(Box<age::stream::StreamWriter<W>>),
}

impl<W: Write> EncWriter<W> {
    /// Flushes the last age chunk (mandatory, else the file is truncated) and returns `W`.
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            EncWriter::Plain(w) => Ok(w),
            EncWriter::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for EncWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            EncWriter::Plain(w) => w.write(buf),
            EncWriter::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            EncWriter::Plain(w) => w.flush(),
            EncWriter::Age(w) => w.flush(),
        }
    }
}

/// What can decrypt backups: identity files and/or a passphrase (from an env var).
#[derive(Clone, Default)]
pub struct Decrypt {
    pub identity_files: Vec<PathBuf>,
    passphrase: Option<String>,
}

impl std::fmt::Debug for Decrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decrypt")
            .field("identity_files", &self.identity_files)
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Decrypt {
    pub fn from_options(
        identity_files: &[PathBuf],
        passphrase_env: Option<&str>,
    ) -> Result<Decrypt, CryptoError> {
        let passphrase = match passphrase_env {
            Some(var) => Some(read_passphrase(var)?),
            None => None,
        };
        Ok(Decrypt {
            identity_files: identity_files.to_vec(),
            passphrase,
        })
    }

    /// Opens a decrypting reader over `input` for a backup encrypted as `how`.
    /// Runs in a blocking context (scrypt is slow on purpose).
    pub fn reader<'a, R: Read + 'a>(
        &self,
        how: &Encryption,
        input: R,
    ) -> Result<Box<dyn Read + 'a>, CryptoError> {
        let what = how.summary();
        let mut identities: Vec<Box<dyn age::Identity>> = Vec::new();
        match how {
            Encryption::None => return Ok(Box::new(input)),
            Encryption::AgePassphrase => match &self.passphrase {
                Some(p) => identities.push(Box::new(age::scrypt::Identity::new(
                    SecretString::from(p.clone()),
                ))),
                None => return Err(CryptoError::NoKey { what }),
            },
            Encryption::AgeRecipients { .. } => {
                if self.identity_files.is_empty() {
                    return Err(CryptoError::NoKey { what });
                }
                for path in &self.identity_files {
                    let file =
                        age::IdentityFile::from_file(path.display().to_string()).map_err(|e| {
                            CryptoError::IdentityFile {
                                path: path.clone(),
                                message: e.to_string(),
                            }
                        })?;
                    identities.extend(file.into_identities().map_err(|e| {
                        CryptoError::IdentityFile {
                            path: path.clone(),
                            message: e.to_string(),
                        }
                    })?);
                }
            }
        }
        let decryptor = age::Decryptor::new(input).map_err(|e| CryptoError::Decrypt {
            reason: format!("not a valid age file: {e}"),
            what: what.clone(),
        })?;
        let reader = decryptor
            .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|e| CryptoError::Decrypt {
                reason: match e {
                    age::DecryptError::NoMatchingKeys => {
                        "none of the given keys matches".to_string()
                    }
                    age::DecryptError::DecryptionFailed => "wrong passphrase or key".to_string(),
                    other => other.to_string(),
                },
                what,
            })?;
        Ok(Box::new(reader))
    }
}

/// Writes a new age X25519 identity to `path` (mode 0600, refuses to overwrite) and returns
/// its public recipient (`age1…`) for `backup.encryption.age_recipients`.
pub fn generate_identity_file(path: &std::path::Path) -> Result<String, CryptoError> {
    use age::secrecy::ExposeSecret;
    use std::os::unix::fs::OpenOptionsExt;
    let id = age::x25519::Identity::generate();
    let recipient = id.to_public().to_string();
    let text = format!(
        "# created by clusterkit backup keygen\n# public key: {recipient}\n{}\n",
        id.to_string().expose_secret()
    );
    let err = |e: std::io::Error| CryptoError::IdentityFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(recipient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_roundtrip_and_wrong_key() {
        let id = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let recipient = id.to_public().to_string();
        let enc = Encrypt::from_options(std::slice::from_ref(&recipient), None).unwrap();
        let mut w = enc.wrap(Vec::new()).unwrap();
        w.write_all(b"secret value").unwrap();
        let stored = w.finish().unwrap();
        assert!(!stored.windows(6).any(|x| x == b"secret"));

        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, {
            use age::secrecy::ExposeSecret;
            format!("# key\n{}\n", id.to_string().expose_secret())
        })
        .unwrap();
        let bad = dir.path().join("bad");
        std::fs::write(&bad, {
            use age::secrecy::ExposeSecret;
            format!("{}\n", other.to_string().expose_secret())
        })
        .unwrap();
        let how = enc.describe();
        let mut out = String::new();
        Decrypt::from_options(&[good], None)
            .unwrap()
            .reader(&how, &stored[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "secret value");
        let err = Decrypt::from_options(&[bad], None)
            .unwrap()
            .reader(&how, &stored[..])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("none of the given keys matches"), "{err}");
        assert!(!err.contains("AGE-SECRET"), "{err}");
    }

    #[test]
    fn bad_recipient_and_both() {
        assert!(Encrypt::from_options(&["nope".into()], None).is_err());
        std::env::set_var("CK_TEST_PASS_X", "pw");
        assert!(matches!(
            Encrypt::from_options(&["age1x".into()], Some("CK_TEST_PASS_X")),
            Err(CryptoError::Both)
        ));
        assert!(matches!(
            Encrypt::from_options(&[], Some("CK_TEST_PASS_UNSET_Y")),
            Err(CryptoError::PassphraseMissing { .. })
        ));
    }
}
