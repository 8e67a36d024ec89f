//! Facts gathered from a host: OS, kernel, CPUs, memory, swap, cgroups, identity (product_uuid,
//! machine-id, MACs), init system, listening ports, addresses, IPVS/SELinux presence, time sync
//! and the host's clock.
//!
//! This is the one implementation: `clusterkit ping` shows [`Facts`], and the playbook engine
//! (`gather_facts`, preflight, tera's `facts`) sees the same facts as JSON through
//! [`Facts::to_value`].
//!
//! One remote command (one round trip) prints `key=value` lines that [`parse`] turns into
//! [`Facts`]. It forks as few processes as it can (shell builtins read the files): on a loaded
//! host every process costs milliseconds. The script needs only POSIX sh, coreutils and /proc,
//! /sys, /etc files; `ip`, `ss` and `timedatectl` add to it where present (MACs come from `ip`
//! first: it reads netlink, so a container sees its own network namespace, not the sysfs of the
//! machine it runs on).
//!
//! Limits: Linux only. `product_uuid` is only readable by root and is missing (or shared with
//! the host) in containers; [`Facts::node_uuid`] then falls back to `/etc/machine-id`. The
//! clock skew is measured against the midpoint of the round trip, so it is accurate to about
//! half the command's duration ([`Facts::clock_uncertainty_ms`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{json, Value};

use crate::exec::{Command, ExecError, Executor};

/// What clusterkit knows about a host after `gather`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    /// The kernel's hostname (`uname -n`).
    pub hostname: String,
    /// `ID` from /etc/os-release (`debian`, `ubuntu`, `rhel`...).
    pub os_id: String,
    /// `ID_LIKE` from /etc/os-release (`debian`, `rhel fedora`...), may be empty.
    pub os_like: String,
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
    /// Total swap in bytes (SwapTotal).
    pub swap_bytes: u64,
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
    /// `systemd` when systemd is PID 1, else the name of PID 1.
    pub init: String,
    /// /proc/net/ip_vs exists (IPVS loaded or built in).
    pub ipvs: bool,
    /// SELinux exists on this host (/sys/fs/selinux or /etc/selinux/config).
    pub selinux: bool,
    /// `timedatectl`'s NTPSynchronized (`yes`/`no`), empty without timedatectl.
    pub ntp_synchronized: String,
    /// Listening TCP sockets (needs `ss`; empty without it).
    pub listening: Vec<Listener>,
    /// Global IPv4 addresses (needs `ip`).
    pub addresses: Vec<Address>,
    /// `apt`, `dnf` or empty.
    pub package_manager: String,
    /// The host's clock (Unix seconds, fractional) when it finished answering.
    pub time_epoch: f64,
    /// Host clock minus local clock, in milliseconds (positive: the host is ahead).
    pub clock_skew_ms: i64,
    /// How far off `clock_skew_ms` may be: half the round trip, in milliseconds.
    pub clock_uncertainty_ms: u64,
}

/// A network interface and its hardware address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    pub mac: String,
}

/// A listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// `0.0.0.0:22`, `[::]:22`, `*:10250`.
    pub address: String,
    pub port: u16,
    /// The owning process name (`sshd`), empty when `ss` cannot tell.
    pub process: String,
}

/// An IPv4 address on an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub device: String,
    pub address: String,
    /// With the prefix length (`10.0.0.2/24`).
    pub cidr: String,
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

    /// `debian`, `rhel` or `unknown`, from `ID` and `ID_LIKE`.
    pub fn os_family(&self) -> &'static str {
        let ids = [&self.os_id, &self.os_like];
        if ids
            .iter()
            .any(|s| s.contains("debian") || s.contains("ubuntu"))
        {
            "debian"
        } else if ids
            .iter()
            .any(|s| s.contains("rhel") || s.contains("fedora") || s.contains("centos"))
        {
            "rhel"
        } else {
            "unknown"
        }
    }

    /// The facts as playbooks see them (`facts.os.family`, `facts.memory_mib`,
    /// `facts.clock.skew_secs`, …): what tera templates, `when` conditions and preflight use.
    pub fn to_value(&self) -> Value {
        let macs: serde_json::Map<String, Value> = self
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), json!(i.mac)))
            .collect();
        json!({
            "os": {
                "id": self.os_id,
                "like": self.os_like,
                "family": self.os_family(),
                "version_id": self.os_version,
                "pretty_name": self.os_pretty,
            },
            "kernel": self.kernel,
            "arch": self.arch,
            "hostname": self.hostname,
            "cpus": self.cpus,
            "memory_mib": self.memory_mib(),
            "swap_mib": self.swap_bytes / (1024 * 1024),
            "swap_on": self.swap_on,
            "product_uuid": self.product_uuid.clone().unwrap_or_default(),
            "machine_id": self.machine_id.clone().unwrap_or_default(),
            "macs": macs,
            "cgroup_version": if self.cgroup_version == "v2" { 2 } else { 1 },
            "init": self.init,
            "ipvs": self.ipvs,
            "selinux": self.selinux,
            "ntp_synchronized": self.ntp_synchronized,
            "listening": self.listening,
            "addresses": self.addresses,
            "package_manager": self.package_manager,
            "clock": {
                "skew_secs": self.clock_skew_ms as f64 / 1000.0,
                "uncertainty_secs": self.clock_uncertainty_ms as f64 / 1000.0,
            },
        })
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
set -- $(uname -n -r -m)
printf 'hostname=%s\nkernel=%s\narch=%s\n' "$1" "$2" "$3"
if [ -r /etc/os-release ]; then
  ( . /etc/os-release; printf 'os_id=%s\nos_like=%s\nos_version=%s\nos_pretty=%s\n' "$ID" "$ID_LIKE" "$VERSION_ID" "$PRETTY_NAME" )
fi
printf 'cpus=%s\n' "$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)"
while read -r key value rest; do
  case "$key" in MemTotal:) printf 'mem_kib=%s\n' "$value" ;; SwapTotal:) printf 'swap_kib=%s\n' "$value" ;; esac
done < /proc/meminfo
n=0
while read -r line; do n=$((n + 1)); done < /proc/swaps
printf 'swap_entries=%s\n' "$((n - 1))"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo cgroup=v2; else echo cgroup=v1; fi
v=; { read -r v < /sys/class/dmi/id/product_uuid; } 2>/dev/null; printf 'product_uuid=%s\n' "$v"
v=; { read -r v < /etc/machine-id; } 2>/dev/null; printf 'machine_id=%s\n' "$v"
if command -v ip >/dev/null; then
  ip -o link show 2>/dev/null | while read -r _ dev rest; do
    case "$rest" in *link/ether*) d=${dev%:}; m=${rest#*link/ether }; printf 'mac=%s %s\n' "${d%%@*}" "${m%% *}" ;; esac
  done
  ip -o -4 addr show scope global 2>/dev/null | while read -r _ dev _ addr _; do printf 'addr=%s %s\n' "$dev" "$addr"; done
else
  for dev in /sys/class/net/*; do
    name=${dev##*/}
    [ "$name" = lo ] && continue
    printf 'mac=%s %s\n' "$name" "$(cat "$dev/address" 2>/dev/null)"
  done
fi
if [ -d /run/systemd/system ]; then echo init=systemd; else printf 'init=%s\n' "$(cat /proc/1/comm 2>/dev/null)"; fi
[ -e /proc/net/ip_vs ] && echo ipvs=1 || echo ipvs=0
{ [ -d /sys/fs/selinux ] || [ -f /etc/selinux/config ]; } && echo selinux=1 || echo selinux=0
printf 'ntp=%s\n' "$(timedatectl show -p NTPSynchronized --value 2>/dev/null)"
command -v ss >/dev/null && ss -Htlnp 2>/dev/null | while read -r _ _ _ local _ proc; do printf 'listen=%s %s\n' "$local" "$proc"; done
if command -v dpkg >/dev/null; then echo pm=apt; elif command -v dnf >/dev/null; then echo pm=dnf; else echo pm=; fi
printf 'time_end=%s\n' "$(date +%s.%N)"
"#;

fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Turns the script's output into facts. `local_mid` is the local clock (Unix seconds) halfway
/// through the round trip; it is compared with the midpoint of the script's own start and end
/// times, so the script's run time does not count as skew. `round_trip` bounds the skew's error.
pub fn parse(
    host: &str,
    text: &str,
    local_mid: f64,
    round_trip: Duration,
) -> Result<Facts, FactsError> {
    let bad = |message: String| FactsError::Parse {
        host: host.to_string(),
        message,
    };
    let mut facts = Facts {
        hostname: String::new(),
        os_id: String::new(),
        os_like: String::new(),
        os_version: String::new(),
        os_pretty: String::new(),
        kernel: String::new(),
        arch: String::new(),
        cpus: 0,
        memory_bytes: 0,
        swap_bytes: 0,
        swap_on: false,
        cgroup_version: String::new(),
        product_uuid: None,
        machine_id: None,
        interfaces: Vec::new(),
        init: String::new(),
        ipvs: false,
        selinux: false,
        ntp_synchronized: String::new(),
        listening: Vec::new(),
        addresses: Vec::new(),
        package_manager: String::new(),
        time_epoch: 0.0,
        clock_skew_ms: 0,
        clock_uncertainty_ms: (round_trip.as_millis() / 2) as u64,
    };
    let mut time_start = None;
    let non_empty = |v: &str| Some(v.trim().to_lowercase()).filter(|v| !v.is_empty());
    let kib = |what: &str, value: &str| {
        value
            .trim()
            .parse::<u64>()
            .map(|k| k * 1024)
            .map_err(|_| bad(format!("{what} {value:?}")))
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key {
            "hostname" => facts.hostname = value.to_string(),
            "os_id" => facts.os_id = value.to_string(),
            "os_like" => facts.os_like = value.to_string(),
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
            "mem_kib" => facts.memory_bytes = kib("MemTotal", value)?,
            "swap_kib" => facts.swap_bytes = kib("SwapTotal", value)?,
            "swap_entries" => facts.swap_on = value.trim().parse::<i64>().unwrap_or(0) > 0,
            "cgroup" => facts.cgroup_version = value.to_string(),
            "product_uuid" => facts.product_uuid = non_empty(value),
            "machine_id" => facts.machine_id = non_empty(value),
            "mac" => {
                if let Some((name, mac)) = value.split_once(' ') {
                    let mac = mac.trim();
                    if !mac.is_empty() && mac != "00:00:00:00:00:00" {
                        facts.interfaces.push(Interface {
                            name: name.to_string(),
                            mac: mac.to_string(),
                        });
                    }
                }
            }
            "addr" => {
                if let Some((device, cidr)) = value.split_once(' ') {
                    facts.addresses.push(Address {
                        device: device.to_string(),
                        address: cidr.split('/').next().unwrap_or(cidr).to_string(),
                        cidr: cidr.to_string(),
                    });
                }
            }
            "listen" => {
                let (local, owner) = value.split_once(' ').unwrap_or((value, ""));
                // `users:(("etcd",pid=12,fd=7))` → etcd
                let process = owner.split('"').nth(1).unwrap_or("").to_string();
                if let Some(port) = local.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    facts.listening.push(Listener {
                        address: local.to_string(),
                        port,
                        process,
                    });
                }
            }
            "init" => facts.init = value.to_string(),
            "ipvs" => facts.ipvs = value == "1",
            "selinux" => facts.selinux = value == "1",
            "ntp" => facts.ntp_synchronized = value.to_string(),
            "pm" => facts.package_manager = value.to_string(),
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
    let round_trip = after.duration_since(before).unwrap_or(Duration::ZERO);
    parse(exec.host(), &output.stdout_str(), mid, round_trip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::local::LocalExecutor;

    const OUTPUT: &str = "hostname=node1\nos_id=debian\nos_like=\nos_version=12\nos_pretty=Debian GNU/Linux 12 (bookworm)\n\
                    kernel=6.1.0-9-amd64\narch=x86_64\ncpus=2\nmem_kib=2048000\nswap_kib=1024\nswap_entries=0\n\
                    cgroup=v2\nproduct_uuid=\nmachine_id=ABCDEF\nmac=eth0 aa:bb:cc:dd:ee:ff\nmac=lo 00:00:00:00:00:00\n\
                    addr=eth0 10.0.0.2/24\ninit=systemd\nipvs=0\nselinux=0\nntp=yes\n\
                    listen=0.0.0.0:22 users:((\"sshd\",pid=1,fd=3))\npm=apt\n\
                    time_start=1000.25\ntime_end=1000.75\n";

    #[test]
    fn parses_script_output() {
        let facts = parse("node1", OUTPUT, 1000.0, Duration::from_millis(200)).unwrap();
        assert_eq!(facts.os_id, "debian");
        assert_eq!(facts.os_family(), "debian");
        assert_eq!(facts.cpus, 2);
        assert_eq!(facts.memory_bytes, 2048000 * 1024);
        assert!(!facts.swap_on);
        assert_eq!(facts.product_uuid, None);
        assert_eq!(facts.node_uuid(), Some("abcdef"));
        assert_eq!(facts.interfaces.len(), 1, "loopback's zero MAC is left out");
        assert_eq!(facts.interfaces[0].mac, "aa:bb:cc:dd:ee:ff");
        assert_eq!(facts.listening[0].port, 22);
        assert_eq!(facts.listening[0].process, "sshd");
        assert_eq!(facts.addresses[0].address, "10.0.0.2");
        assert_eq!(facts.clock_skew_ms, 500);
        assert_eq!(facts.clock_uncertainty_ms, 100);
        assert!(parse("x", "garbage", 0.0, Duration::ZERO).is_err());
    }

    #[test]
    fn playbook_view() {
        let v = parse("node1", OUTPUT, 1000.0, Duration::from_millis(200))
            .unwrap()
            .to_value();
        assert_eq!(v["os"]["family"], "debian");
        assert_eq!(v["os"]["version_id"], "12");
        assert_eq!(v["memory_mib"], 2000);
        assert_eq!(v["swap_mib"], 1);
        assert_eq!(v["cgroup_version"], 2);
        assert_eq!(v["macs"]["eth0"], "aa:bb:cc:dd:ee:ff");
        assert_eq!(v["listening"][0]["process"], "sshd");
        assert_eq!(v["init"], "systemd");
        assert_eq!(v["ntp_synchronized"], "yes");
        assert_eq!(v["machine_id"], "abcdef");
        assert!((v["clock"]["skew_secs"].as_f64().unwrap() - 0.5).abs() < 1e-9);
        assert!((v["clock"]["uncertainty_secs"].as_f64().unwrap() - 0.1).abs() < 1e-9);
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
