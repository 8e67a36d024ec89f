//! A one-off CA and certificate for one scratch etcd, so a drill's member speaks TLS with
//! client-certificate authentication like the cluster's own: whoever can reach its ports still
//! cannot read the restored data (which holds the cluster's Secrets) without the key, which
//! lives in the drill's 0700 directory and is deleted with it.
//!
//! One certificate serves as the member's server, peer and client certificate (both extended
//! key usages); it names the given addresses and is valid for two days.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The PEM texts of one scratch PKI.
pub struct ScratchPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// File names inside a PKI directory.
pub const CA_FILE: &str = "ca.crt";
/// See [`CA_FILE`].
pub const CERT_FILE: &str = "member.crt";
/// See [`CA_FILE`].
pub const KEY_FILE: &str = "member.key";

impl ScratchPki {
    /// A new CA and a member certificate for `ips`.
    pub fn generate(ips: &[IpAddr]) -> Result<ScratchPki, rcgen::Error> {
        let now = time::OffsetDateTime::now_utc();
        let lifetime = time::Duration::days(2);
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "clusterkit restore drill CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
        ca.not_before = now - time::Duration::minutes(5);
        ca.not_after = now + lifetime;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name
            .push(DnType::CommonName, "clusterkit-drill");
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        leaf.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        leaf.not_before = now - time::Duration::minutes(5);
        leaf.not_after = now + lifetime;
        let cert = leaf.signed_by(&key, &issuer)?;
        Ok(ScratchPki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The files and their modes, for writing them anywhere.
    pub fn files(&self) -> [(&'static str, &str, u32); 3] {
        [
            (CA_FILE, self.ca_pem.as_str(), 0o644),
            (CERT_FILE, self.cert_pem.as_str(), 0o644),
            (KEY_FILE, self.key_pem.as_str(), 0o600),
        ]
    }

    /// Writes the files into `dir` (created 0700); returns (ca, cert, key) paths.
    pub fn write(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf, PathBuf)> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        for (name, text, mode) in self.files() {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(dir.join(name))?;
            f.write_all(text.as_bytes())?;
        }
        Ok((dir.join(CA_FILE), dir.join(CERT_FILE), dir.join(KEY_FILE)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_ca_a_member_certificate_and_a_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let pki = ScratchPki::generate(&["127.0.0.1".parse().unwrap()]).unwrap();
        assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(pki.ca_pem, pki.cert_pem);
        let dir = tempfile::tempdir().unwrap();
        let (_, _, key) = pki.write(&dir.path().join("pki")).unwrap();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(dir.path().join("pki"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
    }
}
