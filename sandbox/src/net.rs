//! The sandbox's network: one host bridge per sandbox with its own /24 in 10.213.0.0/16, and
//! per node a network namespace joined to the bridge by a veth pair.
//!
//! Names (all ≤ 15 characters, the kernel's limit for interfaces): bridge `ckbr-<sandbox>`,
//! host end of a node's veth `ckv-<sandbox>-<index>` (the node end is `eth0`), network
//! namespace `ck-<sandbox>-node<index>`. The host gets `.1` on the bridge, node *i* gets
//! `.(10+i)`. Nodes have a default route via the host so Kubernetes components that look for
//! one find it; the host does not forward (`net.ipv4.ip_forward` stays as it is, 0 here) and
//! there is no NAT, so no node traffic leaves the machine.
//!
//! Limits: IPv4 only; at most 99 nodes per sandbox.

use std::net::Ipv4Addr;

use crate::error::{Result, SandboxError};
use crate::sys::ip;

/// The first two octets of every sandbox subnet.
const RANGE: [u8; 2] = [10, 213];

/// Bridge of a sandbox.
pub fn bridge_name(sandbox: &str) -> String {
    format!("ckbr-{sandbox}")
}

/// Host end of node `index`'s veth pair.
pub fn veth_name(sandbox: &str, index: usize) -> String {
    format!("ckv-{sandbox}-{index}")
}

/// Network namespace of node `index`.
pub fn netns_name(sandbox: &str, index: usize) -> String {
    format!("ck-{sandbox}-node{index}")
}

/// The /24 `10.213.<octet>.0/24`.
pub fn subnet(octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(RANGE[0], RANGE[1], octet, 0)
}

/// The host's address on the bridge.
pub fn gateway(octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(RANGE[0], RANGE[1], octet, 1)
}

/// Node `index`'s address (index starts at 1).
pub fn node_address(octet: u8, index: usize) -> Ipv4Addr {
    Ipv4Addr::new(RANGE[0], RANGE[1], octet, 10 + index as u8)
}

/// Which sandbox a namespace name belongs to (exact match, so `a` never claims `a-b`'s).
pub fn netns_owner(netns: &str) -> Option<(&str, usize)> {
    let rest = netns.strip_prefix("ck-")?;
    let (name, index) = rest.rsplit_once("-node")?;
    Some((name, index.parse().ok()?))
}

/// Which sandbox a host veth name belongs to.
pub fn veth_owner(veth: &str) -> Option<(&str, usize)> {
    let rest = veth.strip_prefix("ckv-")?;
    let (name, index) = rest.rsplit_once('-')?;
    Some((name, index.parse().ok()?))
}

/// A starting point for the subnet search derived from the name (FNV-1a), so a sandbox tends
/// to get the same subnet every time it is recreated.
fn preferred_octet(name: &str) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % 256) as u8
}

/// Picks the /24 for a new sandbox: the first one from the name's preferred octet on that
/// overlaps no IPv4 route or address on the host and none in `taken` (other sandboxes).
/// The caller holds the global sandbox lock, so two new sandboxes never pick the same one.
pub fn choose_subnet(name: &str, taken: &[u8]) -> Result<u8> {
    let used = host_prefixes()?;
    let start = preferred_octet(name);
    for step in 0..=255u16 {
        let octet = start.wrapping_add(step as u8);
        if taken.contains(&octet) {
            continue;
        }
        let net = u32::from(subnet(octet));
        if used.iter().any(|(p, len)| overlaps(net, 24, *p, *len)) {
            continue;
        }
        return Ok(octet);
    }
    Err(SandboxError::NoFreeSubnet { name: name.into() })
}

/// Every IPv4 prefix in the host's routes (all tables) and addresses, except default routes.
fn host_prefixes() -> Result<Vec<(u32, u8)>> {
    let mut text = ip(&["-4", "route", "show", "table", "all"])?;
    text.push_str(&ip(&["-4", "-o", "addr", "show"])?);
    Ok(text
        .split_whitespace()
        .filter_map(parse_prefix)
        .filter(|(_, len)| *len > 0)
        .collect())
}

/// `a.b.c.d/n` or a bare address (a /32).
fn parse_prefix(token: &str) -> Option<(u32, u8)> {
    let (addr, len) = match token.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().ok().filter(|l| *l <= 32)?),
        None => (token, 32),
    };
    let addr: Ipv4Addr = addr.parse().ok()?;
    Some((u32::from(addr), len))
}

fn overlaps(a: u32, alen: u8, b: u32, blen: u8) -> bool {
    let len = alen.min(blen);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a & mask == b & mask
}

/// Names of the host's links (`ip -o link show`), without the `@peer` suffix.
pub fn links() -> Result<Vec<String>> {
    Ok(ip(&["-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect())
}

/// Names of the network namespaces (`ip netns list`).
pub fn netns_list() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// PIDs of the processes in a network namespace (`ip netns pids`); none when it is absent.
pub fn netns_pids(ns: &str) -> Vec<u32> {
    ip(&["netns", "pids", ns])
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Creates the sandbox bridge with the host address, or leaves the existing one as it is.
pub fn ensure_bridge(sandbox: &str, octet: u8) -> Result<()> {
    let br = bridge_name(sandbox);
    if !links()?.contains(&br) {
        ip(&["link", "add", &br, "type", "bridge"])?;
    }
    let addr = format!("{}/24", gateway(octet));
    ip(&["addr", "replace", &addr, "dev", &br])?;
    ip(&["link", "set", &br, "up"])?;
    Ok(())
}

/// Creates node `index`'s namespace and veth pair and configures them; idempotent.
pub fn ensure_node_net(sandbox: &str, octet: u8, index: usize) -> Result<()> {
    let ns = netns_name(sandbox, index);
    let veth = veth_name(sandbox, index);
    if !netns_list()?.contains(&ns) {
        ip(&["netns", "add", &ns])?;
    }
    if !links()?.contains(&veth) {
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
    }
    ip(&["link", "set", &veth, "master", &bridge_name(sandbox), "up"])?;
    let addr = format!("{}/24", node_address(octet, index));
    ip(&["-n", &ns, "addr", "replace", &addr, "dev", "eth0"])?;
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
    ip(&[
        "-n",
        &ns,
        "route",
        "replace",
        "default",
        "via",
        &gateway(octet).to_string(),
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit() {
        assert!(bridge_name("abcdefgh").len() <= 15);
        assert!(veth_name("abcdefgh", 99).len() <= 15);
    }

    #[test]
    fn owners_match_exactly() {
        assert_eq!(netns_owner("ck-a-b-node2"), Some(("a-b", 2)));
        assert_eq!(netns_owner("ck-a-node1"), Some(("a", 1)));
        assert_eq!(netns_owner("other"), None);
        assert_eq!(veth_owner("ckv-a-1-2"), Some(("a-1", 2)));
        assert_eq!(veth_owner("ckv-a-12"), Some(("a", 12)));
        assert_eq!(veth_owner("ckbr-a"), None);
    }

    #[test]
    fn prefixes_overlap() {
        let (n, l) = parse_prefix("10.213.5.0/24").unwrap();
        assert!(overlaps(u32::from(subnet(5)), 24, n, l));
        assert!(!overlaps(u32::from(subnet(6)), 24, n, l));
        let (n, l) = parse_prefix("10.0.0.0/8").unwrap();
        assert!(overlaps(u32::from(subnet(6)), 24, n, l));
        assert_eq!(
            parse_prefix("10.213.5.7"),
            Some((u32::from(Ipv4Addr::new(10, 213, 5, 7)), 32))
        );
        assert_eq!(parse_prefix("dev"), None);
    }
}
