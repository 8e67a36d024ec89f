//! The Kubernetes version-skew policy, as an upgrade must keep it at every moment of a roll:
//! given what runs on each host and a target version, the order in which components move, or
//! every reason the move is refused.
//!
//! The rules (kubernetes.io "Version Skew Policy"), in minors:
//! - the control plane moves one minor at a time and never down; before it moves to the next
//!   minor it moves to the newest patch of the current one when that patch is available;
//! - API servers stay within one minor of each other;
//! - controller-manager and scheduler are never newer than any API server and at most one
//!   minor older than the newest;
//! - kubelet and kube-proxy are never newer than any API server and at most 3 minors older than
//!   the newest (2 while the API server is older than v1.25) — so a kubelet that would fall
//!   further behind must move before the control plane may.
//!
//! [`plan`] orders the moves the way a roll makes them (every API server, one host after the
//! other; then controller-manager and scheduler per host; then kubelet and kube-proxy per host)
//! and checks the state after each move, so a refusal names the first moment the policy would
//! break.
//!
//! kubectl is a client, not a component of the roll: it is supported within one minor of every
//! API server it talks to, older or newer. [`kubectl`] says when a kubectl would leave that
//! range now or after the roll; callers warn rather than refuse, since the cluster does not
//! depend on it (the control-plane hosts' own kubectl moves with their API server).
//!
//! Limits: etcd (its own version table) is not a component here; versions are compared as
//! major.minor.patch with major 1.

use std::fmt;

use clusterkit_core::layout::Component;
use clusterkit_core::release::KubeVersion;

/// One component on one host and the version it runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Running {
    pub host: String,
    pub component: Component,
    pub version: KubeVersion,
}

/// One move of a roll: `component` on `host` from one version to the target.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    pub host: String,
    pub component: Component,
    pub from: KubeVersion,
    pub to: KubeVersion,
}

/// Why a move is refused; each says what to do instead where there is something to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no kube-apiserver runs on any host: there is no control plane to upgrade")]
    NoApiserver,
    #[error("{component} on {host} runs {running}, newer than the target {target}: clusterkit does not downgrade")]
    Downgrade {
        host: String,
        component: Component,
        running: KubeVersion,
        target: KubeVersion,
    },
    #[error("the oldest kube-apiserver runs {oldest}; {target} is more than one minor ahead: upgrade to v{}.{}.x first", oldest.major, oldest.minor.saturating_add(1))]
    MoreThanOneMinor {
        oldest: KubeVersion,
        target: KubeVersion,
    },
    #[error("the control plane runs {running} and {newest} is available: move to {newest} before {target}")]
    NewestPatchFirst {
        running: KubeVersion,
        newest: KubeVersion,
        target: KubeVersion,
    },
    #[error("{when}: kube-apiserver runs {oldest} and {newest}, more than one minor apart")]
    ApiserversApart {
        when: When,
        oldest: KubeVersion,
        newest: KubeVersion,
    },
    #[error("{when}: {component} on {host} runs {version}, newer than the kube-apiserver at {apiserver}")]
    NewerThanApiserver {
        when: When,
        host: String,
        component: Component,
        version: KubeVersion,
        apiserver: KubeVersion,
    },
    #[error("{when}: {component} on {host} runs {version}, more than {allowed} minor(s) older than the kube-apiserver at {apiserver}{}", move_first(*component, *apiserver, *allowed))]
    TooOld {
        when: When,
        host: String,
        component: Component,
        version: KubeVersion,
        apiserver: KubeVersion,
        allowed: u32,
    },
}

/// The moment of a roll a refusal is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum When {
    /// What runs now, before anything moved.
    Now,
    /// Right after this step of the plan.
    After(Box<Step>),
}

impl fmt::Display for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            When::Now => write!(f, "as the cluster runs now"),
            When::After(s) => write!(f, "after {} on {} moves to {}", s.component, s.host, s.to),
        }
    }
}

/// What to do about a node component that would fall too far behind: move it first.
fn move_first(component: Component, apiserver: KubeVersion, allowed: u32) -> String {
    match component {
        Component::Kubelet | Component::KubeProxy => format!(
            ": move it to v{}.{}.x before the control plane moves",
            apiserver.major,
            apiserver.minor.saturating_sub(allowed)
        ),
        _ => String::new(),
    }
}

/// How many minors kubelet and kube-proxy may be behind an API server of `apiserver`'s minor.
pub fn node_skew(apiserver: KubeVersion) -> u32 {
    if apiserver.at_least(25) {
        3
    } else {
        2
    }
}

/// The moves that take `running` to `target` in roll order, or every reason the policy refuses
/// them. `newest_patch` is the newest release of the control plane's current minor the bundle
/// carries, if any.
pub fn plan(
    running: &[Running],
    target: KubeVersion,
    newest_patch: Option<KubeVersion>,
) -> Result<Vec<Step>, Vec<Refusal>> {
    let Some((oldest, newest)) = apiserver_range(running) else {
        return Err(vec![Refusal::NoApiserver]);
    };
    let mut refusals: Vec<Refusal> = running
        .iter()
        .filter(|r| r.version > target)
        .map(|r| Refusal::Downgrade {
            host: r.host.clone(),
            component: r.component,
            running: r.version,
            target,
        })
        .collect();
    if target.minor > oldest.minor.saturating_add(1) || target.major != oldest.major {
        refusals.push(Refusal::MoreThanOneMinor { oldest, target });
    }
    if let Some(newest_patch) = newest_patch {
        let same_minor = (newest_patch.major, newest_patch.minor) == (newest.major, newest.minor);
        if target.minor > newest.minor && same_minor && newest_patch > oldest {
            refusals.push(Refusal::NewestPatchFirst {
                running: oldest,
                newest: newest_patch,
                target,
            });
        }
    }
    refusals.extend(violations(running, &When::Now));
    if !refusals.is_empty() {
        return Err(refusals);
    }
    let steps = order(running, target);
    let mut state = running.to_vec();
    for step in &steps {
        if let Some(r) = state
            .iter_mut()
            .find(|r| r.host == step.host && r.component == step.component)
        {
            r.version = step.to;
        }
        let found = violations(&state, &When::After(Box::new(step.clone())));
        if !found.is_empty() {
            return Err(found);
        }
    }
    Ok(steps)
}

/// The oldest and newest kube-apiserver in `state`; `None` when none runs.
fn apiserver_range(state: &[Running]) -> Option<(KubeVersion, KubeVersion)> {
    let versions = of(state, &[Component::KubeApiserver]).map(|r| r.version);
    versions.fold(None, |range, v| match range {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The components of `running` that are one of `components`, in the given order.
fn of<'a>(
    running: &'a [Running],
    components: &'a [Component],
) -> impl Iterator<Item = &'a Running> + 'a {
    running
        .iter()
        .filter(move |r| components.contains(&r.component))
}

/// Every component not at `target`, in roll order: API servers host by host, then
/// controller-manager and scheduler, then kubelet and kube-proxy (each group in the order of
/// `running`, i.e. of cluster.yaml's hosts).
fn order(running: &[Running], target: KubeVersion) -> Vec<Step> {
    let groups: [&[Component]; 3] = [
        &[Component::KubeApiserver],
        &[Component::KubeControllerManager, Component::KubeScheduler],
        &[Component::Kubelet, Component::KubeProxy],
    ];
    groups
        .iter()
        .flat_map(|group| of(running, group))
        .filter(|r| r.version != target)
        .map(|r| Step {
            host: r.host.clone(),
            component: r.component,
            from: r.version,
            to: target,
        })
        .collect()
}

/// What in `state` breaks the policy, said as of `when`.
fn violations(state: &[Running], when: &When) -> Vec<Refusal> {
    let Some((oldest, newest)) = apiserver_range(state) else {
        return vec![Refusal::NoApiserver];
    };
    let mut found = Vec::new();
    if newest.minor > oldest.minor.saturating_add(1) {
        found.push(Refusal::ApiserversApart {
            when: when.clone(),
            oldest,
            newest,
        });
    }
    for r in state
        .iter()
        .filter(|r| r.component != Component::KubeApiserver)
    {
        if r.version.minor > oldest.minor {
            found.push(Refusal::NewerThanApiserver {
                when: when.clone(),
                host: r.host.clone(),
                component: r.component,
                version: r.version,
                apiserver: oldest,
            });
            continue;
        }
        let allowed = match r.component {
            Component::Kubelet | Component::KubeProxy => node_skew(newest),
            _ => 1,
        };
        if r.version.minor.saturating_add(allowed) < newest.minor {
            found.push(Refusal::TooOld {
                when: when.clone(),
                host: r.host.clone(),
                component: r.component,
                version: r.version,
                apiserver: newest,
                allowed,
            });
        }
    }
    found
}

/// A kubectl outside the version-skew policy's range at some moment of a roll.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("kubectl {version} on {place} is more than one minor from kube-apiserver {apiserver} {}: use kubectl v{}.{}.x", if *after_roll { "after the upgrade" } else { "as the cluster runs now" }, target.major, target.minor)]
pub struct KubectlSkew {
    /// Where that kubectl is: a host's name, or this machine.
    pub place: String,
    pub version: KubeVersion,
    /// The API server version it is too far from.
    pub apiserver: KubeVersion,
    /// Too far from the target (after the roll), not from an API server that runs now.
    pub after_roll: bool,
    /// The roll's target, whose minor is within one of every API server during the roll.
    pub target: KubeVersion,
}

/// Whether kubectl `version` at `place` stays within one minor of every API server in
/// `running` and of `target`; the first API server it is too far from otherwise.
pub fn kubectl(
    place: &str,
    version: KubeVersion,
    running: &[Running],
    target: KubeVersion,
) -> Option<KubectlSkew> {
    let apart = |apiserver: KubeVersion| {
        apiserver.major != version.major || apiserver.minor.abs_diff(version.minor) > 1
    };
    let now = of(running, &[Component::KubeApiserver]).map(|r| (r.version, false));
    now.chain([(target, true)])
        .find(|(apiserver, _)| apart(*apiserver))
        .map(|(apiserver, after_roll)| KubectlSkew {
            place: place.to_string(),
            version,
            apiserver,
            after_roll,
            target,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Component::*;

    fn v(s: &str) -> KubeVersion {
        KubeVersion::parse(s).unwrap()
    }

    /// `(host, component, version)` rows as the hosts would report them.
    fn state(rows: &[(&str, Component, &str)]) -> Vec<Running> {
        rows.iter()
            .map(|(host, component, version)| Running {
                host: host.to_string(),
                component: *component,
                version: v(version),
            })
            .collect()
    }

    /// A cluster: `cps` control-plane hosts at `cp` running every component, `workers` at `node`
    /// running kubelet and kube-proxy.
    fn cluster(cps: usize, cp: &str, workers: usize, node: &str) -> Vec<Running> {
        let mut rows = Vec::new();
        for i in 1..=cps {
            for c in Component::ALL {
                rows.push((format!("cp{i}"), c, cp));
            }
        }
        for i in 1..=workers {
            for c in [Kubelet, KubeProxy] {
                rows.push((format!("w{i}"), c, node));
            }
        }
        rows.iter()
            .map(|(h, c, ver)| Running {
                host: h.clone(),
                component: *c,
                version: v(ver),
            })
            .collect()
    }

    fn refused(running: &[Running], target: &str, newest: Option<&str>) -> Vec<String> {
        match plan(running, v(target), newest.map(v)) {
            Ok(steps) => panic!("expected a refusal, got {steps:?}"),
            Err(r) => r.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn a_patch_and_a_minor_upgrade_roll_apiservers_first_then_the_rest_then_the_nodes() {
        let running = cluster(2, "v1.27.4", 1, "v1.27.4");
        let steps = plan(&running, v("v1.28.7"), None).unwrap();
        let order: Vec<(String, Component)> = steps
            .iter()
            .map(|s| (s.host.clone(), s.component))
            .collect();
        let want: Vec<(String, Component)> = [
            ("cp1", KubeApiserver),
            ("cp2", KubeApiserver),
            ("cp1", KubeControllerManager),
            ("cp1", KubeScheduler),
            ("cp2", KubeControllerManager),
            ("cp2", KubeScheduler),
            ("cp1", Kubelet),
            ("cp1", KubeProxy),
            ("cp2", Kubelet),
            ("cp2", KubeProxy),
            ("w1", Kubelet),
            ("w1", KubeProxy),
        ]
        .iter()
        .map(|(h, c)| (h.to_string(), *c))
        .collect();
        assert_eq!(order, want);
        assert!(steps
            .iter()
            .all(|s| s.from == v("v1.27.4") && s.to == v("v1.28.7")));
        // A patch release inside the minor: the same order.
        assert_eq!(plan(&running, v("v1.27.9"), None).unwrap().len(), 12);
    }

    #[test]
    fn what_already_runs_the_target_is_not_moved() {
        let running = cluster(1, "v1.20.2", 2, "v1.20.2");
        assert_eq!(plan(&running, v("v1.20.2"), None).unwrap(), vec![]);
        // Mid-roll (the API server moved, the rest did not): the rest continues.
        let mut mid = cluster(1, "v1.20.2", 1, "v1.20.2");
        mid[0].version = v("v1.21.14");
        let steps = plan(&mid, v("v1.21.14"), None).unwrap();
        assert!(
            steps.iter().all(|s| s.component != KubeApiserver),
            "{steps:?}"
        );
        assert_eq!(steps.len(), 6);
    }

    #[test]
    fn refusals_say_why() {
        let table: Vec<(Vec<Running>, &str, Option<&str>, &str)> = vec![
            // Two minors at once.
            (
                cluster(1, "v1.26.3", 1, "v1.26.3"),
                "v1.28.7",
                None,
                "more than one minor ahead: upgrade to v1.27.x first",
            ),
            // Down.
            (
                cluster(1, "v1.28.7", 1, "v1.28.7"),
                "v1.28.2",
                None,
                "kube-apiserver on cp1 runs v1.28.7, newer than the target v1.28.2",
            ),
            // The newest patch of the current minor first.
            (
                cluster(1, "v1.27.4", 1, "v1.27.4"),
                "v1.28.7",
                Some("v1.27.16"),
                "move to v1.27.16 before v1.28.7",
            ),
            // Kubelets 3 behind an API server before v1.25 may not fall further (2 allowed).
            (
                cluster(1, "v1.22.17", 1, "v1.20.2"),
                "v1.23.17",
                None,
                "after kube-apiserver on cp1 moves to v1.23.17: kubelet on w1 runs v1.20.2, more than 2 minor(s) older than the kube-apiserver at v1.23.17: move it to v1.21.x",
            ),
            // From v1.25 on, 3 are allowed, not 4.
            (
                cluster(1, "v1.28.7", 1, "v1.25.16"),
                "v1.29.2",
                None,
                "kubelet on w1 runs v1.25.16, more than 3 minor(s) older than the kube-apiserver at v1.29.2",
            ),
            // A kubelet newer than the API server: already out of policy.
            (
                state(&[("cp1", KubeApiserver, "v1.27.4"), ("w1", Kubelet, "v1.28.7")]),
                "v1.28.7",
                None,
                "as the cluster runs now: kubelet on w1 runs v1.28.7, newer than the kube-apiserver at v1.27.4",
            ),
            // HA mid-roll gone wrong: API servers two minors apart.
            (
                state(&[("cp1", KubeApiserver, "v1.26.3"), ("cp2", KubeApiserver, "v1.28.7")]),
                "v1.28.7",
                None,
                "kube-apiserver runs v1.26.3 and v1.28.7, more than one minor apart",
            ),
            // A controller manager newer than an API server it may talk to.
            (
                state(&[
                    ("cp1", KubeApiserver, "v1.27.4"),
                    ("cp2", KubeApiserver, "v1.27.4"),
                    ("cp2", KubeControllerManager, "v1.28.7"),
                ]),
                "v1.28.7",
                None,
                "kube-controller-manager on cp2 runs v1.28.7, newer than the kube-apiserver at v1.27.4",
            ),
            (vec![], "v1.28.7", None, "no kube-apiserver runs on any host"),
        ];
        for (running, target, newest, want) in table {
            let got = refused(&running, target, newest);
            assert!(
                got.iter().any(|r| r.contains(want)),
                "{target} from {running:?}: want «{want}», got {got:#?}"
            );
        }
    }

    #[test]
    fn ha_mid_roll_states_that_the_policy_allows_continue() {
        // cp1's API server moved a minor, cp2's not yet: allowed, and the plan continues with
        // cp2's API server before any controller manager.
        let mut running = cluster(2, "v1.27.4", 1, "v1.26.9");
        running[0].version = v("v1.28.7");
        let steps = plan(&running, v("v1.28.7"), None).unwrap();
        assert_eq!(
            (steps[0].host.as_str(), steps[0].component),
            ("cp2", KubeApiserver)
        );
        // Kubelets 3 behind (v1.25 → v1.28) are allowed from v1.25 on.
        let running = cluster(1, "v1.27.4", 1, "v1.25.16");
        assert!(plan(&running, v("v1.28.7"), None).is_ok());
        // The newest patch is only asked for when it is newer than what runs.
        let running = cluster(1, "v1.27.16", 1, "v1.27.16");
        assert!(plan(&running, v("v1.28.7"), Some(v("v1.27.16"))).is_ok());
    }

    #[test]
    fn kubectl_within_one_minor_of_every_api_server_through_the_roll() {
        let running = cluster(2, "v1.27.4", 1, "v1.27.4");
        let target = v("v1.28.7");
        // (kubectl, expected: None = supported, Some((apiserver, after the roll)))
        let table: [(&str, Option<(&str, bool)>); 6] = [
            ("v1.27.4", None),
            ("v1.28.7", None),
            ("v1.26.15", Some(("v1.28.7", true))),
            ("v1.29.0", Some(("v1.27.4", false))),
            ("v1.25.0", Some(("v1.27.4", false))),
            ("v1.30.1", Some(("v1.27.4", false))),
        ];
        for (kubectl_version, want) in table {
            let got = kubectl("this machine", v(kubectl_version), &running, target)
                .map(|s| (s.apiserver.to_string(), s.after_roll));
            assert_eq!(
                got,
                want.map(|(a, w)| (a.to_string(), w)),
                "kubectl {kubectl_version}"
            );
        }
        // Mid-roll, one API server already at the target: a kubectl one minor behind the old
        // ones is two behind the new one.
        let mut mid = cluster(2, "v1.27.4", 0, "v1.27.4");
        mid[0].version = target;
        let s = kubectl("cp1", v("v1.26.3"), &mid, target).unwrap();
        assert_eq!(s.apiserver, target);
        assert_eq!(
            s.to_string(),
            "kubectl v1.26.3 on cp1 is more than one minor from kube-apiserver v1.28.7 as the \
             cluster runs now: use kubectl v1.28.x"
        );
    }
}
