//! Validation of `kubernetes`: the version, networks (pod and service CIDRs and their fit for
//! the hosts), the control-plane endpoint and the local API load balancer. Limits: only what
//! cluster.yaml says is checked; whether the endpoint answers is preflight's business.

use super::*;

/// A CIDR field, `default` when absent (a built-in constant the tests resolve).
#[allow(
    clippy::expect_used,
    reason = "`default` is a built-in constant, never user input"
)]
pub(super) fn cidr(
    cx: &mut Ctx<'_>,
    v: &Option<S<String>>,
    field: &str,
    default: &str,
) -> Option<(IpNet, Option<Pos>)> {
    let Some(s) = v else {
        return Some((default.parse().expect("built-in default CIDR"), None));
    };
    let text = s.value.trim();
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => {
            cx.error(
                pos(s),
                field,
                format!("{text:?} has host bits set (did you mean {}?)", net.trunc()),
            );
            None
        }
        Ok(net) => Some((net, Some(pos(s)))),
        Err(_) => {
            cx.error(
                pos(s),
                field,
                format!("{text:?} is not a CIDR like 10.244.0.0/16"),
            );
            None
        }
    }
}

/// A pod network must hold one node-sized slice per host (and, for IPv6,
/// kube-controller-manager allows at most 16 bits between the two masks).
/// A pod network that cannot give every host its node-sized slice.
#[derive(Debug, thiserror::Error)]
pub(super) enum PodCidrError {
    #[error("{net} is smaller than one node's /{node}: use a /{node} or larger")]
    Small { net: IpNet, node: u8 },
    #[error(
        "{net} is larger than kube-controller-manager allows with /{node} node slices: use a \
         /{min} to /{node}"
    )]
    Large { net: IpNet, node: u8, min: u8 },
    #[error("{net} has {slices} /{node} node slices for {hosts} hosts: use a larger pod_cidr")]
    FewSlices {
        net: IpNet,
        node: u8,
        slices: u128,
        hosts: usize,
    },
}

pub(super) fn pod_cidr_fits(net: &IpNet, hosts: usize) -> Result<(), PodCidrError> {
    let (node, min) = match net {
        IpNet::V4(_) => (Kubernetes::NODE_POD_PREFIX_V4, 0),
        IpNet::V6(_) => (
            Kubernetes::NODE_POD_PREFIX_V6,
            Kubernetes::NODE_POD_PREFIX_V6 - 16,
        ),
    };
    let prefix = net.prefix_len();
    if prefix > node {
        return Err(PodCidrError::Small { net: *net, node });
    }
    if prefix < min {
        return Err(PodCidrError::Large {
            net: *net,
            node,
            min,
        });
    }
    let slices = 1u128
        .checked_shl(u32::from(node - prefix))
        .unwrap_or(u128::MAX);
    if slices < u128::try_from(hosts).unwrap_or(u128::MAX) {
        return Err(PodCidrError::FewSlices {
            net: *net,
            node,
            slices,
            hosts,
        });
    }
    Ok(())
}

pub(super) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

pub(super) fn resolve_kubernetes(
    cx: &mut Ctx<'_>,
    raw: &RawCluster,
    hosts: &[HostAt],
    profile: Profile,
) -> Option<Kubernetes> {
    let Some(kraw) = &raw.kubernetes else {
        cx.error(
            TOP,
            "kubernetes",
            "is required but missing (at least kubernetes.version)",
        );
        return None;
    };
    let at = pos(kraw);
    let r = &kraw.value;
    let sandbox = profile == Profile::Sandbox;

    let version = cx
        .required_str(&r.version, at, "kubernetes.version")
        .and_then(|v| {
            match v
                .parse::<KubeVersion>()
                .and_then(|v| v.check_supported().map(|()| v))
            {
                Ok(v) => Some(v),
                Err(e) => {
                    let vat = r.version.as_ref().map_or(at, pos);
                    cx.error(vat, "kubernetes.version", e.to_string());
                    None
                }
            }
        });

    let pod = cidr(cx, &r.pod_cidr, "kubernetes.pod_cidr", "10.244.0.0/16");
    let svc = cidr(
        cx,
        &r.service_cidr,
        "kubernetes.service_cidr",
        "10.96.0.0/12",
    );
    let mut cidrs_ok = pod.is_some() && svc.is_some();
    if let Some((p, p_at)) = &pod {
        let hosts_in_file = raw.hosts.as_ref().map_or(0, |h| h.value.len());
        if let Err(e) = pod_cidr_fits(p, hosts_in_file) {
            cx.error(p_at.unwrap_or(at), "kubernetes.pod_cidr", e.to_string());
            cidrs_ok = false;
        }
    }
    if let Some((s, s_at)) = &svc {
        // kube-apiserver takes at most 20 bits of service addresses; the cluster DNS Service
        // takes the range's tenth address, so it needs at least 16.
        let (lo, hi) = if s.addr().is_ipv4() {
            (12, 28)
        } else {
            (108, 124)
        };
        if !(lo..=hi).contains(&s.prefix_len()) {
            cx.error(
                s_at.unwrap_or(at),
                "kubernetes.service_cidr",
                format!(
                    "{s} has a /{} prefix; a service network is /{lo} to /{hi} (at most 20 bits \
                     for kube-apiserver, room for the DNS Service's tenth address)",
                    s.prefix_len()
                ),
            );
            cidrs_ok = false;
        }
    }
    if let (Some((p, p_at)), Some((s, s_at))) = (&pod, &svc) {
        if overlaps(p, s) {
            cx.error(
                s_at.or(*p_at).unwrap_or(at),
                "kubernetes.service_cidr",
                format!("service CIDR {s} overlaps the pod CIDR {p}"),
            );
            cidrs_ok = false;
        }
    }
    for (field, net) in [("pod_cidr", &pod), ("service_cidr", &svc)] {
        let Some((net, _)) = net else { continue };
        for HostAt {
            host: h,
            index,
            address_at,
        } in hosts
        {
            if net.contains(&h.address) {
                cx.error(
                    *address_at,
                    &format!("hosts[{index}].address"),
                    format!(
                        "{} (host {}) lies inside kubernetes.{field} {net}",
                        h.address, h.name
                    ),
                );
                cidrs_ok = false;
            }
        }
    }

    let dns_domain = cx
        .optional_str(&r.dns_domain, "kubernetes.dns_domain")
        .unwrap_or_else(|| "cluster.local".into());
    if !host_is_valid(&dns_domain) || dns_domain.parse::<IpAddr>().is_ok() {
        let dat = r.dns_domain.as_ref().map_or(at, pos);
        cx.error(
            dat,
            "kubernetes.dns_domain",
            format!("{dns_domain:?} is not a DNS domain"),
        );
    }

    let proxy_mode = cx.choice(
        &r.proxy_mode,
        "kubernetes.proxy_mode",
        &[("ipvs", ProxyMode::Ipvs), ("iptables", ProxyMode::Iptables)],
        if sandbox {
            ProxyMode::Iptables
        } else {
            ProxyMode::Ipvs
        },
    );
    if sandbox && proxy_mode == ProxyMode::Ipvs {
        let pat = r.proxy_mode.as_ref().map_or(at, pos);
        cx.warn(
            pat,
            "kubernetes.proxy_mode",
            "the sandbox kernel has no IPVS; use iptables",
        );
    }

    let control_plane_endpoint = match &r.control_plane_endpoint {
        Some(s) => match s.value.trim().parse::<Endpoint>() {
            // Every node and the operator reach the API server there: the same addresses a
            // node cannot have, it cannot have either.
            Ok(e) => match e
                .host
                .parse::<IpAddr>()
                .ok()
                .and_then(|ip| not_a_node_address(&ip, profile))
            {
                Some(why) => {
                    cx.error(
                        pos(s),
                        "kubernetes.control_plane_endpoint",
                        format!("{e} cannot be the API server's address: it is {why}"),
                    );
                    None
                }
                None => Some(e),
            },
            Err(e) => {
                cx.error(pos(s), "kubernetes.control_plane_endpoint", e.to_string());
                None
            }
        },
        // No host may be resolved when the hosts had errors; those are reported already.
        None => hosts
            .iter()
            .map(|h| &h.host)
            .find(|h| h.has_role(Role::ControlPlane))
            .map(|h| Endpoint {
                host: h.address.to_string(),
                port: crate::layout::Ports::DEFAULT.apiserver,
            }),
    };

    let control_plane_mode = cx.choice(
        &r.control_plane_mode,
        "kubernetes.control_plane_mode",
        &[
            ("static-pod", ControlPlaneMode::StaticPod),
            ("systemd", ControlPlaneMode::Systemd),
        ],
        if sandbox {
            ControlPlaneMode::Systemd
        } else {
            ControlPlaneMode::StaticPod
        },
    );
    let image_repository = match &r.image_repository {
        Some(s) => image_ref(
            cx,
            s,
            "kubernetes.image_repository",
            grammar::image_repository,
        )?,
        None => crate::release::DEFAULT_IMAGE_REPOSITORY.into(),
    };
    let network = cx.choice(
        &r.network,
        "kubernetes.network",
        &[
            ("calico", Network::Calico),
            ("flannel", Network::Flannel),
            ("host-gw", Network::HostGw),
        ],
        if sandbox {
            Network::HostGw
        } else {
            Network::Calico
        },
    );

    if network == Network::HostGw {
        // host-gw routes each node's IPv4 slice via the node's IPv4 address.
        let nat = r.network.as_ref().map_or(at, pos);
        if let Some((p, _)) = pod.as_ref().filter(|(p, _)| !p.addr().is_ipv4()) {
            cx.error(
                nat,
                "kubernetes.network",
                format!("host-gw needs an IPv4 pod_cidr; {p} is IPv6"),
            );
        }
        for h in hosts.iter().filter(|h| !h.host.address.is_ipv4()) {
            cx.error(
                h.address_at,
                &format!("hosts[{}].address", h.index),
                format!(
                    "{} is IPv6; kubernetes.network host-gw routes over IPv4 node addresses",
                    h.host.address
                ),
            );
        }
    }

    let load_balancer = resolve_load_balancer(cx, r.load_balancer.as_ref(), hosts);

    if !cidrs_ok {
        return None;
    }
    Some(Kubernetes {
        version: version?,
        pod_cidr: pod?.0,
        service_cidr: svc?.0,
        dns_domain,
        proxy_mode,
        control_plane_endpoint: control_plane_endpoint?,
        control_plane_mode,
        image_repository,
        network,
        load_balancer,
    })
}

/// Ports clusterkit's own services listen on on nodes; the local load balancer must not take
/// one of them (it binds 127.0.0.1 on every node, control-plane hosts included).
pub(super) fn node_ports() -> impl Iterator<Item = (u16, &'static str)> {
    std::iter::once((22, "sshd")).chain(crate::layout::Ports::DEFAULT.reserved())
}

/// `kubernetes.load_balancer`: off unless `local: true`; the port must be free on every node.
pub(super) fn resolve_load_balancer(
    cx: &mut Ctx<'_>,
    raw: Option<&S<RawLoadBalancer>>,
    hosts: &[HostAt],
) -> LoadBalancer {
    let Some(raw) = raw else {
        return LoadBalancer::default();
    };
    let mut lb = LoadBalancer::default();
    if let Some(local) = &raw.value.local {
        lb.local = local.value;
    }
    if let Some(p) = &raw.value.port {
        let field = "kubernetes.load_balancer.port";
        if p.value == 0 {
            cx.error(pos(p), field, "port 0 is not a valid port");
        } else if let Some((_, who)) = node_ports().find(|(n, _)| *n == p.value) {
            cx.error(
                pos(p),
                field,
                format!(
                    "port {} is taken by {who} on the nodes; pick a free one (default {})",
                    p.value,
                    LoadBalancer::DEFAULT_PORT
                ),
            );
        } else {
            lb.port = p.value;
        }
    }
    let control_planes = hosts
        .iter()
        .filter(|h| h.host.has_role(Role::ControlPlane))
        .count();
    if lb.local && control_planes == 1 {
        cx.warn(
            pos(raw),
            "kubernetes.load_balancer.local",
            "with one control-plane host the local load balancer only adds a hop; it pays off \
             with two or more",
        );
    }
    lb
}
