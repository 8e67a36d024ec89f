//! Benchmark helper (bench/backup): drains etcd's `Maintenance::snapshot` stream and throws
//! the bytes away, to measure how fast etcd delivers a snapshot to a Rust (tonic/hyper) client
//! with no hashing, compression or upload behind it, and whether HTTP/2 flow-control windows
//! change that.
//!
//! Usage: `snapshot_drain ENDPOINT CACERT CERT KEY [MODE]` where MODE is one of
//! `etcd-client` (the connection clusterkit uses: etcd-client's defaults, i.e. hyper's 2 MiB
//! stream / 5 MiB connection windows), `wide` (16 MiB / 32 MiB windows), `adaptive` (hyper's
//! BDP-based adaptive window), `small` (64 KiB windows, the HTTP/2 protocol default).
//! Prints one line: mode, bytes, seconds, MB/s, chunk count. Limits: a measuring tool, not
//! part of the product; one endpoint, TLS only.

use std::time::Instant;

use etcd_client::{Certificate, Channel, Client, ConnectOptions, Identity, TlsOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        anyhow::bail!(
            "usage: snapshot_drain ENDPOINT CACERT CERT KEY [etcd-client|wide|adaptive|small]"
        );
    }
    let (endpoint, ca, cert, key) = (&args[1], &args[2], &args[3], &args[4]);
    let mode = args.get(5).map(String::as_str).unwrap_or("etcd-client");
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
        .identity(Identity::from_pem(
            std::fs::read(cert)?,
            std::fs::read(key)?,
        ));
    let mut client = if mode == "etcd-client" {
        Client::connect([endpoint], Some(ConnectOptions::new().with_tls(tls))).await?
    } else {
        let mut ep = tonic::transport::Endpoint::from_shared(endpoint.clone())?.tls_config(tls)?;
        ep = match mode {
            "wide" => ep
                .initial_stream_window_size(16 << 20)
                .initial_connection_window_size(32 << 20),
            "adaptive" => ep.http2_adaptive_window(true),
            "small" => ep
                .initial_stream_window_size(65_535)
                .initial_connection_window_size(65_535),
            other => anyhow::bail!("unknown mode {other}"),
        };
        let channel = ep.connect().await?;
        Client::from_channel(Channel::Tonic(channel), None).await?
    };
    let started = Instant::now();
    let mut stream = client.snapshot().await?;
    let (mut bytes, mut chunks) = (0u64, 0u64);
    while let Some(msg) = stream.message().await? {
        bytes += msg.blob().len() as u64;
        chunks += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{mode}: {bytes} bytes in {secs:.2} s = {:.1} MB/s, {chunks} chunks",
        bytes as f64 / secs / 1e6
    );
    Ok(())
}
