//! etcd backups to an S3 endpoint over https with the store's own CA bundle (`--s3-ca-file`),
//! against the real s3s-fs behind a TLS front end run by the test (s3s-fs itself serves plain
//! http only). The front end also records the requests it forwards, so the test sees what
//! went on the wire: over https parts carry `UNSIGNED-PAYLOAD` (TLS protects them, the
//! manifest's sha256 is checked by `verify`), over plain http they stay signed. Without the
//! CA bundle the https backup is refused and leaves nothing behind.

mod backup_util;
mod common;

use std::sync::{Arc, Mutex};

use backup_util::*;
use common::{run_fail, run_ok, stderr};

/// A loopback front end for s3s-fs: TLS (with the test CA's server certificate) or plain TCP,
/// copying bytes both ways and keeping a copy of what clients sent.
struct FrontEnd {
    port: u16,
    sent: Arc<Mutex<Vec<u8>>>,
    // Dropping the runtime stops the listener and every connection.
    _rt: tokio::runtime::Runtime,
}

impl FrontEnd {
    fn start(upstream: u16, tls: Option<(&std::path::Path, &std::path::Path)>) -> FrontEnd {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let acceptor = tls.map(|(cert, key)| {
            tokio_rustls::TlsAcceptor::from(
                clusterkit_monitor::tls::server_config(cert, key).unwrap(),
            )
        });
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = sent.clone();
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let record = record.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    match acceptor {
                        Some(a) => {
                            if let Ok(client) = a.accept(tcp).await {
                                relay(client, server, record).await;
                            }
                        }
                        None => relay(tcp, server, record).await,
                    }
                });
            }
        });
        FrontEnd {
            port,
            sent,
            _rt: rt,
        }
    }

    /// How many forwarded requests carried `x-amz-content-sha256: UNSIGNED-PAYLOAD`, and how
    /// many were UploadPart requests (`PUT …partNumber=`).
    fn counts(&self) -> (usize, usize) {
        let sent = self.sent.lock().unwrap();
        let text = String::from_utf8_lossy(&sent).to_ascii_lowercase();
        (
            text.matches("x-amz-content-sha256: unsigned-payload")
                .count(),
            text.match_indices("put /")
                .filter(|(i, _)| {
                    text[*i..]
                        .lines()
                        .next()
                        .is_some_and(|l| l.contains("partnumber="))
                })
                .count(),
        )
    }
}

async fn relay<C>(client: C, server: tokio::net::TcpStream, record: Arc<Mutex<Vec<u8>>>)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            record.lock().unwrap().extend_from_slice(&buf[..n]);
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

impl FrontEnd {
    /// `--s3-endpoint` pointing at this front end (the flag wins over `S3::env`'s endpoint).
    fn endpoint(&self, scheme: &str) -> [String; 2] {
        [
            "--s3-endpoint".into(),
            format!("{scheme}://127.0.0.1:{}", self.port),
        ]
    }
}

#[test]
fn https_endpoint_with_own_ca_sends_unsigned_parts_and_http_stays_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = Certs::generate(&dir.join("pki"));
    let etcd = Etcd::start(dir, &certs);
    let s3 = S3::start(dir, "ck-https");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = client(&etcd, &certs).await;
        fill(&mut c, 2_000, |i| format!("value-{i}").into_bytes()).await;
    });
    let tls = FrontEnd::start(s3.port, Some((&certs.server_cert, &certs.server_key)));
    let plain = FrontEnd::start(s3.port, None);
    let store = s3.url("tls");
    let ca = certs.ca.display().to_string();

    let https = tls.endpoint("https");

    // Without the CA bundle the server's certificate is not trusted: refused, nothing stored.
    let mut c = ck_s3(dir, Some(&s3), &["backup", "etcd", "--store", &store]);
    c.args(etcd.backup_flags(&certs)).args(&https);
    let out = run_fail(&mut c);
    let err = stderr(&out).to_ascii_lowercase();
    assert!(
        err.contains("invalid peer certificate"),
        "the refusal does not say why: {err}"
    );
    assert!(
        s3.files().iter().all(|f| !f.contains("manifest")),
        "a refused backup left a manifest: {:?}",
        s3.files()
    );

    // With it: backed up over https, parts unsigned; verified over https.
    let with_ca = [https[0].as_str(), &https[1], "--s3-ca-file", &ca];
    let id = backup(dir, &store, &etcd, &certs, Some(&s3), &with_ca);
    let (unsigned, parts) = tls.counts();
    assert!(parts >= 1, "no UploadPart went through the https front end");
    assert_eq!(
        unsigned, parts,
        "over https every part (and nothing else) goes with UNSIGNED-PAYLOAD"
    );
    let mut c = ck_s3(
        dir,
        Some(&s3),
        &["backup", "verify", &id, "--store", &store],
    );
    c.args(with_ca);
    run_ok(&mut c);

    // Over plain http the same backup keeps every payload signed.
    let http = plain.endpoint("http");
    let http: Vec<&str> = http.iter().map(String::as_str).collect();
    backup(dir, &s3.url("plain"), &etcd, &certs, Some(&s3), &http);
    let (unsigned, parts) = plain.counts();
    assert!(parts >= 1, "no UploadPart went through the http front end");
    assert_eq!(unsigned, 0, "a payload went unsigned over plain http");
}
