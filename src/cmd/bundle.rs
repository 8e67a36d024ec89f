//! `clusterkit bundle`: build and verify offline bundles of packages and binaries.
//!
//! `bundle build --out DIR` (`-d DIR`; `-o` is the global output format) puts the node packages the install needs (containerd, runc and their
//! dependencies missing from a minimal Debian 12) and any binaries (`--binaries DIR`, default
//! `$CLUSTERKIT_KUBE_BIN_DIR` when set) into DIR with a checksummed manifest.json. Point
//! cluster.yaml at it with `packages: { bundle: DIR }`; installs then upload from it over SSH.
//! `bundle verify DIR` checks every file against the manifest.

use std::path::PathBuf;

use anyhow::Context;
use clusterkit_installer::bundle::{self, BuildOptions, Bundle};
use clusterkit_installer::phases::network::NETWORK_PACKAGES;
use clusterkit_installer::phases::RUNTIME_PACKAGES;

use super::{Global, OutputFormat};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: BundleCommand,
}

#[derive(clap::Subcommand)]
enum BundleCommand {
    /// Download the packages (with dependencies) and collect the binaries into a directory.
    Build {
        /// The bundle directory (created or refreshed).
        #[arg(short = 'd', long = "out")]
        out: PathBuf,
        /// dpkg status file of the nodes' base system (default: the sandbox's cached rootfs).
        #[arg(long)]
        base_status: Option<PathBuf>,
        /// Directory of binaries to include (repeatable).
        #[arg(long = "binaries", env = "CLUSTERKIT_KUBE_BIN_DIR")]
        binaries: Vec<PathBuf>,
        /// Extra packages beyond the ones the install phases need.
        #[arg(long = "package")]
        packages: Vec<String>,
    },
    /// Check every file of a bundle against its manifest.
    Verify { dir: PathBuf },
}

impl Args {
    pub async fn run(self, global: Global) -> anyhow::Result<()> {
        match self.command {
            BundleCommand::Build {
                out,
                base_status,
                binaries,
                packages,
            } => {
                // Everything the install phases install from packages: the runtime, Debian's
                // etcd for the etcd phase, and the CNI plugins for the host-gw network.
                let mut all: Vec<String> = RUNTIME_PACKAGES
                    .iter()
                    .chain(["etcd-server"].iter())
                    .chain(NETWORK_PACKAGES)
                    .map(|s| s.to_string())
                    .collect();
                for p in packages {
                    if !all.contains(&p) {
                        all.push(p);
                    }
                }
                let opts = BuildOptions {
                    out: out.clone(),
                    packages: all,
                    base_status: base_status.unwrap_or_else(bundle::default_base_status),
                    binary_dirs: binaries.into_iter().filter(|d| d.is_dir()).collect(),
                };
                let manifest = tokio::task::spawn_blocking(move || bundle::build(&opts))
                    .await?
                    .with_context(|| format!("building the bundle in {}", out.display()))?;
                match global.output {
                    OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&manifest)?),
                    _ => {
                        for p in &manifest.packages {
                            println!("{:<24} {:<32} {}", p.name, p.version, p.file);
                        }
                        for b in &manifest.binaries {
                            println!("{:<24} {:<32} {}", b.name, "(binary)", b.file);
                        }
                        println!("{}", out.join("manifest.json").display());
                    }
                }
                Ok(())
            }
            BundleCommand::Verify { dir } => {
                let b = Bundle::load(&dir).map_err(anyhow::Error::msg)?;
                b.verify().map_err(anyhow::Error::msg)?;
                println!(
                    "{}: {} packages and {} binaries match the manifest",
                    dir.display(),
                    b.manifest.packages.len(),
                    b.manifest.binaries.len()
                );
                Ok(())
            }
        }
    }
}
