//! `gather_facts`: what a playbook needs to know about a host, in one remote command.
//!
//! The facts are a JSON object visible to tera as `facts` (`facts.os.family`, `facts.cpus`,
//! `facts.memory_mib`, …) and used by preflight checks: OS, kernel, CPUs, memory, swap,
//! product_uuid, MAC addresses (from netlink, so a container sees its own network namespace's,
//! not the sysfs of the machine it runs on), cgroup version, init system, listening TCP ports, IPVS support,
//! time sync and the host's clock (with the round trip that bounds its error).
//!
//! Limits: Linux only; values a host cannot provide are empty strings or `null`, never errors —
//! the checks that need them decide.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{json, Value};

use super::{ModuleError, Outcome, TaskCx};
use crate::exec::Executor;

/// Arguments of `gather_facts` (none).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatherArgs {}

const SCRIPT: &str = r#"
t0=$(date +%s.%N)
[ -r /etc/os-release ] && . /etc/os-release
echo "os_id=${ID:-}"; echo "os_like=${ID_LIKE:-}"; echo "os_version=${VERSION_ID:-}"; echo "os_pretty=${PRETTY_NAME:-}"
echo "kernel=$(uname -r)"; echo "arch=$(uname -m)"; echo "hostname=$(hostname)"
echo "cpus=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)"
awk '/^MemTotal:/ {print "mem_kib=" $2} /^SwapTotal:/ {print "swap_kib=" $2}' /proc/meminfo
echo "product_uuid=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)"
echo "machine_id=$(cat /etc/machine-id 2>/dev/null)"
ip -o link show 2>/dev/null | while read -r _ dev rest; do case "$rest" in *link/ether*) d=${dev%:}; m=${rest#*link/ether }; echo "mac=${d%%@*} ${m%% *}";; esac; done
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then echo cgroup=2; else echo cgroup=1; fi
if [ -d /run/systemd/system ]; then echo init=systemd; else echo "init=$(cat /proc/1/comm 2>/dev/null)"; fi
[ -e /proc/net/ip_vs ] && echo ipvs=1 || echo ipvs=0
[ -d /sys/fs/selinux ] || [ -f /etc/selinux/config ] && echo selinux=1 || echo selinux=0
echo "ntp=$(timedatectl show -p NTPSynchronized --value 2>/dev/null)"
command -v ss >/dev/null && ss -Htlnp 2>/dev/null | while read -r _ _ _ local _ proc; do echo "listen=$local $proc"; done
ip -o -4 addr show scope global 2>/dev/null | while read -r _ dev _ addr _; do echo "addr=$dev $addr"; done
command -v dpkg >/dev/null && echo pm=apt || { command -v dnf >/dev/null && echo pm=dnf || echo pm=; }
echo "time=$t0"
"#;

/// Gathers facts with one command.
pub async fn gather(exec: &dyn Executor) -> Result<Value, ModuleError> {
    let before = now();
    let out = exec.sh(SCRIPT).await?;
    let after = now();
    Ok(parse(&out, before, after))
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Turns the script's `key=value` lines into the facts object.
pub fn parse(out: &str, before: f64, after: f64) -> Value {
    let mut one: BTreeMap<&str, &str> = BTreeMap::new();
    let mut macs = serde_json::Map::new();
    let mut listen = Vec::new();
    let mut addrs = Vec::new();
    for line in out.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "mac" => {
                if let Some((dev, mac)) = v.split_once(' ') {
                    if mac != "00:00:00:00:00:00" && !mac.is_empty() {
                        macs.insert(dev.to_string(), json!(mac));
                    }
                }
            }
            "listen" => {
                let (local, proc_) = v.split_once(' ').unwrap_or((v, ""));
                let port = local.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                // `users:(("etcd",pid=12,fd=7))` → etcd
                let process = proc_.split('"').nth(1).unwrap_or("").to_string();
                if let Some(port) = port {
                    listen.push(json!({"address": local, "port": port, "process": process}));
                }
            }
            "addr" => {
                if let Some((dev, cidr)) = v.split_once(' ') {
                    addrs.push(json!({"device": dev, "address": cidr.split('/').next().unwrap_or(cidr), "cidr": cidr}));
                }
            }
            _ => {
                one.insert(k, v);
            }
        }
    }
    let get = |k: &str| one.get(k).copied().unwrap_or("").to_string();
    let num = |k: &str| one.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let id = get("os_id");
    let like = get("os_like");
    let family = if [&id, &like]
        .iter()
        .any(|s| s.contains("debian") || s.contains("ubuntu"))
    {
        "debian"
    } else if [&id, &like]
        .iter()
        .any(|s| s.contains("rhel") || s.contains("fedora") || s.contains("centos"))
    {
        "rhel"
    } else {
        "unknown"
    };
    let remote_time = one.get("time").and_then(|t| t.parse::<f64>().ok());
    // The remote clock was read between `before` and `after`: the skew is known to ± half the
    // round trip.
    let skew = remote_time.map(|t| t - (before + after) / 2.0);
    json!({
        "os": {"id": id, "like": like, "family": family, "version_id": get("os_version"), "pretty_name": get("os_pretty")},
        "kernel": get("kernel"),
        "arch": get("arch"),
        "hostname": get("hostname"),
        "cpus": num("cpus"),
        "memory_mib": num("mem_kib").map(|k| k / 1024),
        "swap_mib": num("swap_kib").map(|k| k / 1024),
        "product_uuid": get("product_uuid"),
        "machine_id": get("machine_id"),
        "macs": Value::Object(macs),
        "cgroup_version": num("cgroup"),
        "init": get("init"),
        "ipvs": get("ipvs") == "1",
        "selinux": get("selinux") == "1",
        "ntp_synchronized": get("ntp"),
        "listening": listen,
        "addresses": addrs,
        "package_manager": get("pm"),
        "clock": {"skew_secs": skew, "uncertainty_secs": (after - before) / 2.0},
    })
}

pub async fn run(_args: GatherArgs, cx: &TaskCx<'_>) -> Result<Outcome, ModuleError> {
    let facts = gather(cx.exec).await?;
    Ok(Outcome::ok("facts gathered").with_result(facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_script_output() {
        let out = "os_id=debian\nos_like=\nos_version=12\nos_pretty=Debian GNU/Linux 12 (bookworm)\n\
                   kernel=6.1.0\narch=x86_64\nhostname=n1\ncpus=2\nmem_kib=2048000\nswap_kib=0\n\
                   product_uuid=abc\nmac=host0 aa:bb:cc:dd:ee:ff\ncgroup=1\ninit=systemd\nipvs=0\n\
                   listen=0.0.0.0:22 users:((\"sshd\",pid=1,fd=3))\naddr=host0 10.0.0.2/24\ntime=100.5\n";
        let f = parse(out, 100.0, 100.2);
        assert_eq!(f["os"]["family"], "debian");
        assert_eq!(f["cpus"], 2);
        assert_eq!(f["memory_mib"], 2000);
        assert_eq!(f["macs"]["host0"], "aa:bb:cc:dd:ee:ff");
        assert_eq!(f["listening"][0]["port"], 22);
        assert_eq!(f["listening"][0]["process"], "sshd");
        assert_eq!(f["addresses"][0]["address"], "10.0.0.2");
        assert!((f["clock"]["skew_secs"].as_f64().unwrap() - 0.4).abs() < 1e-6);
    }
}
