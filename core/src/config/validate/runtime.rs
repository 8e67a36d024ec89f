//! Validation of `runtime`, `packages` and `sysctls`: image references, registries, mirrors,
//! package pins and kernel parameters. Limits: references are checked by grammar, never
//! looked up in a registry.

use super::*;

/// An image reference or repository, checked by `grammar` (the OCI reference grammar).
pub(super) fn image_ref(
    cx: &mut Ctx<'_>,
    s: &S<String>,
    field: &str,
    grammar: fn(&str) -> Result<(), grammar::GrammarError>,
) -> Option<String> {
    let v = cx.non_blank(s, field)?;
    match grammar(&v) {
        Ok(()) => Some(v),
        Err(e) => {
            cx.error(pos(s), field, e.to_string());
            None
        }
    }
}

pub(super) fn resolve_runtime(
    cx: &mut Ctx<'_>,
    raw: Option<&S<RawRuntime>>,
    k8s: Option<&Kubernetes>,
) -> Option<Runtime> {
    let default_image = |k: &Kubernetes| {
        format!(
            "{}/pause:{}",
            k.image_repository,
            default_pause_tag(&k.version)
        )
    };
    let Some(raw) = raw else {
        return Some(Runtime {
            registry_mirrors: BTreeMap::new(),
            insecure_registries: Vec::new(),
            sandbox_image: default_image(k8s?),
        });
    };
    let r = &raw.value;
    let mut ok = true;
    let mut registry_mirrors = BTreeMap::new();
    for (registry, urls) in &r.registry_mirrors {
        let field = format!("runtime.registry_mirrors.{registry}");
        if !is_registry(registry) {
            cx.error(
                pos(urls),
                &field,
                format!("{registry:?} is not a registry host[:port]"),
            );
            ok = false;
        }
        let mut list = Vec::new();
        for (j, u) in urls.value.iter().enumerate() {
            match cx.url(u, &format!("{field}[{j}]")) {
                Some(u) => list.push(u),
                None => ok = false,
            }
        }
        registry_mirrors.insert(registry.clone(), list);
    }
    let mut insecure_registries = Vec::new();
    for (j, reg) in r.insecure_registries.iter().enumerate() {
        let v = reg.value.trim();
        if is_registry(v) {
            insecure_registries.push(v.to_string());
        } else {
            cx.error(
                pos(reg),
                &format!("runtime.insecure_registries[{j}]"),
                format!("{v:?} is not a registry host[:port] (no scheme)"),
            );
            ok = false;
        }
    }
    let sandbox_image = match &r.sandbox_image {
        Some(s) => image_ref(cx, s, "runtime.sandbox_image", grammar::image_reference),
        None => k8s.map(default_image),
    };
    if !ok {
        return None;
    }
    Some(Runtime {
        registry_mirrors,
        insecure_registries,
        sandbox_image: sandbox_image?,
    })
}

/// `host[:port]` as containerd names registries (`docker.io`, `10.0.0.1:5000`, `_default`).
pub(super) fn is_registry(s: &str) -> bool {
    if s == "_default" {
        return true;
    }
    let host = match s.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => h,
        _ => s,
    };
    host_is_valid(host)
}

pub(super) fn resolve_packages(cx: &mut Ctx<'_>, raw: Option<&S<RawPackages>>) -> Option<Packages> {
    let Some(raw) = raw else {
        return Some(Packages::Online {
            repositories: BTreeMap::new(),
            mirror: None,
        });
    };
    let r = &raw.value;
    if let Some(b) = &r.bundle {
        if r.repositories.is_some() || r.mirror.is_some() {
            cx.error(
                pos(b),
                "packages.bundle",
                "an offline bundle excludes repositories and mirror: give one or the other",
            );
            return None;
        }
        let dir = cx.non_blank(b, "packages.bundle")?;
        return Some(Packages::Bundle { dir: cx.path(&dir) });
    }
    let mut ok = true;
    let mut repositories = BTreeMap::new();
    if let Some(repos) = &r.repositories {
        for (name, url) in &repos.value {
            match cx.url(url, &format!("packages.repositories.{name}")) {
                Some(u) => {
                    repositories.insert(name.clone(), u);
                }
                None => ok = false,
            }
        }
    }
    let mirror = match &r.mirror {
        Some(m) => {
            let u = cx.url(m, "packages.mirror");
            ok &= u.is_some();
            u
        }
        None => None,
    };
    ok.then_some(Packages::Online {
        repositories,
        mirror,
    })
}

pub(super) fn resolve_sysctls(
    cx: &mut Ctx<'_>,
    raw: &BTreeMap<String, S<String>>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let field = format!("sysctls.{k}");
        // What the sysctl module writes under /proc/sys: dotted names, no path tricks.
        let key_ok = k.contains('.')
            && !k.contains("..")
            && !k.starts_with('.')
            && !k.ends_with('.')
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !key_ok {
            cx.error(
                pos(v),
                &field,
                format!("{k:?} is not a sysctl name like net.core.somaxconn"),
            );
        } else if v.value.trim().is_empty() || v.value.contains(|c: char| c.is_control()) {
            cx.error(
                pos(v),
                &field,
                "needs a one-line, non-empty value without control characters",
            );
        } else {
            out.insert(k.clone(), v.value.trim().to_string());
        }
    }
    out
}
