//! Facts gathered from a host: OS, kernel, CPUs, memory, swap, cgroups, product_uuid.
//!
//! One remote command (one round trip) prints `key=value` lines that [`parse`] turns into
//! [`Facts`]. The script uses only POSIX sh, coreutils and /proc, /sys, /etc files, so it
//! works on a minimal Debian (no awk, no hostname, no lscpu needed).
//!
//! Limits: Linux only. `product_uuid` is only readable by root and is missing (or shared with
//! the host) in containers; [`Facts::node_uuid`] then falls back to `/etc/machine-id`. The
//! clock skew is measured against the midpoint of the round trip, so it is accurate to about
//! half the command's duration.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::exec::{Command, ExecError, Executor};

/// What clusterkit knows about a host after `gather`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    /// The kernel's hostname (`uname -n`).
    pub hostname: String,
    /// `ID` from /etc/os-release (`debian`, `ubuntu`, `rhel`...).
    pub os_id: String,
    /// `VERSION_ID` from /etc/os-release (`12`, `22.04`...); empty on rolling releases.
    pub os_version: String,
    /// `PRETTY_NAME` from /etc/os-release, for humans.
    pub os_pretty: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// Machine architecture (`uname -m`: `x86_64`, `aarch64`).
    pub arch: String,
    /// Online CPUs.
    pub cpus: u32,
    /// Total memory in bytes (MemTotal).
    pub memory_bytes: u64,
    /// Whether any swap device or file is active (kubelet refuses to start with swap by default).
    pub swap_on: bool,
    /// `v2` when /sys/fs/cgroup is the unified hierarchy, else `v1`.
    pub cgroup_version: String,
    /// /sys/class/dmi/id/product_uuid, lowercased, when readable.
    pub product_uuid: Option<String>,
    /// /etc/machine-id, when present.
    pub machine_id: Option<String>,
    /// Non-loopback network interfaces and their MAC addresses.
    pub interfaces: Vec<Interface>,
    /// The host's clock (Unix seconds, fractional) when it finished answering.
    pub time_epoch: f64,
    /// Host clock minus local clock, in milliseconds (positive: the host is ahead).
    pub clock_skew_ms: i64,
}

/// A network interface and its hardware address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
}

impl Facts {
    /// An identifier unique per machine: product_uuid, else machine-id (containers).
    pub fn node_uuid(&self) -> Option<&str> {
        self.product_uuid.as_deref().or(self.machine_id.as_deref())
    }

    /// Memory in MiB, for tables.
    pub fn memory_mib(&self) -> u64 {
        self.memory_bytes / (1024 * 1024)
    }
}

/// Why facts could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("{host}: cannot read facts: {message}")]
    Parse { host: String, message: String },
}

/// The fact-gathering script: one `key=value` per line.
pub const SCRIPT: &str = r#"
printf 'time_start=%s\n' "$(date +%s.%N)"
printf 'hostname=%s\n' "$(uname -n)"
if [ -r /etc/os-release ]; then
  ( . /etc/os-release; printf 'os_id=%s\nos_version=%s\nos_pretty=%s\n' "$ID" "$VERSION_ID" "$PRETTY_NAME" )
fi
printf 'kernel=%s\narch=%s\n' "$(uname -r)" "$(uname -m)"
printf 'cpus=%s\n' "$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)"
while read -r key value rest; do
  case "$key" in MemTotal:) printf 'mem_kib=%s\n' "$value" ;; esac
done < /proc/meminfo
n=0
while read -r line; do n=$((n + 1)); done < /proc/swaps
printf 'swap_entries=%s\n' "$((n - 1))"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo cgroup=v2; else echo cgroup=v1; fi
printf 'product_uuid=%s\n' "$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)"
printf 'machine_id=%s\n' "$(cat /etc/machine-id 2>/dev/null)"
for dev in /sys/class/net/*; do
  name=${dev##*/}
  [ "$name" = lo ] && continue
  printf 'mac=%s %s\n' "$name" "$(cat "$dev/address" 2>/dev/null)"
done
printf 'time_end=%s\n' "$(date +%s.%N)"
"#;

fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Turns the script's output into facts. `local_mid` is the local clock (Unix seconds) halfway
/// through the round trip; it is compared with the midpoint of the script's own start and end
/// times, so the script's run time does not count as skew.
pub fn parse(host: &str, text: &str, local_mid: f64) -> Result<Facts, FactsError> {
    let bad = |message: String| FactsError::Parse {
        host: host.to_string(),
        message,
    };
    let mut facts = Facts {
        hostname: String::new(),
        os_id: String::new(),
        os_version: String::new(),
        os_pretty: String::new(),
        kernel: String::new(),
        arch: String::new(),
        cpus: 0,
        memory_bytes: 0,
        swap_on: false,
        cgroup_version: String::new(),
        product_uuid: None,
        machine_id: None,
        interfaces: Vec::new(),
        time_epoch: 0.0,
        clock_skew_ms: 0,
    };
    let mut time_start = None;
    let non_empty = |v: &str| Some(v.trim().to_lowercase()).filter(|v| !v.is_empty());
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "hostname" => facts.hostname = value.to_string(),
            "os_id" => facts.os_id = value.to_string(),
            "os_version" => facts.os_version = value.to_string(),
            "os_pretty" => facts.os_pretty = value.to_string(),
            "kernel" => facts.kernel = value.to_string(),
            "arch" => facts.arch = value.to_string(),
            "cpus" => {
                facts.cpus = value
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("CPU count {value:?}")))?
            }
            "mem_kib" => {
                let kib: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("MemTotal {value:?}")))?;
                facts.memory_bytes = kib * 1024;
            }
            "swap_entries" => facts.swap_on = value.trim().parse::<i64>().unwrap_or(0) > 0,
            "cgroup" => facts.cgroup_version = value.to_string(),
            "product_uuid" => facts.product_uuid = non_empty(value),
            "machine_id" => facts.machine_id = non_empty(value),
            "mac" => {
                if let Some((name, mac)) = value.split_once(' ') {
                    facts.interfaces.push(Interface {
                        name: name.to_string(),
                        mac: mac.trim().to_string(),
                    });
                }
            }
            "time_start" => {
                time_start = Some(
                    value
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| bad(format!("time {value:?}")))?,
                )
            }
            "time_end" => {
                let end: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| bad(format!("time {value:?}")))?;
                let start = time_start.unwrap_or(end);
                facts.time_epoch = end;
                facts.clock_skew_ms = (((start + end) / 2.0 - local_mid) * 1000.0).round() as i64;
            }
            _ => {}
        }
    }
    if facts.kernel.is_empty() || facts.cpus == 0 || facts.memory_bytes == 0 {
        return Err(bad(format!(
            "incomplete output (kernel, cpus or memory missing): {}",
            crate::exec::tail(text)
        )));
    }
    Ok(facts)
}

/// Gathers facts with one remote command.
#[tracing::instrument(skip_all, fields(host = %exec.host()))]
pub async fn gather(exec: &dyn Executor) -> Result<Facts, FactsError> {
    let before = SystemTime::now();
    let output = exec.run_checked(&Command::new(SCRIPT)).await?;
    let after = SystemTime::now();
    let mid = (epoch_secs(before) + epoch_secs(after)) / 2.0;
    parse(exec.host(), &output.stdout_str(), mid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::local::LocalExecutor;

    #[test]
    fn parses_script_output() {
        let text = "hostname=node1\nos_id=debian\nos_version=12\nos_pretty=Debian GNU/Linux 12 (bookworm)\n\
                    kernel=6.1.0-9-amd64\narch=x86_64\ncpus=2\nmem_kib=2048000\nswap_entries=0\n\
                    cgroup=v2\nproduct_uuid=\nmachine_id=ABCDEF\nmac=eth0 aa:bb:cc:dd:ee:ff\n\
                    time_start=1000.25\ntime_end=1000.75\n";
        let facts = parse("node1", text, 1000.0).unwrap();
        assert_eq!(facts.os_id, "debian");
        assert_eq!(facts.cpus, 2);
        assert_eq!(facts.memory_bytes, 2048000 * 1024);
        assert!(!facts.swap_on);
        assert_eq!(facts.product_uuid, None);
        assert_eq!(facts.node_uuid(), Some("abcdef"));
        assert_eq!(facts.interfaces[0].mac, "aa:bb:cc:dd:ee:ff");
        assert_eq!(facts.clock_skew_ms, 500);
        assert!(parse("x", "garbage", 0.0).is_err());
    }

    #[tokio::test]
    async fn gathers_from_this_machine() {
        let facts = gather(&LocalExecutor::default()).await.unwrap();
        assert_eq!(
            facts.kernel,
            std::process::Command::new("uname")
                .arg("-r")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap()
        );
        assert!(facts.cpus >= 1);
        assert!(facts.memory_bytes > 0);
        assert!(facts.clock_skew_ms.abs() < 2000, "{}", facts.clock_skew_ms);
        assert!(facts.cgroup_version == "v1" || facts.cgroup_version == "v2");
    }
}
