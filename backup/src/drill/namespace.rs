//! The drill of a namespace backup: download and verify (sha256 of stored and raw bytes),
//! decrypt, decompress and parse every object, and compare the objects per type with the
//! manifest's `resource_counts`. With a scratch cluster's API server, the backup is also applied
//! there under mapped namespace names (`<ns>-drill-<random>`), every object must be applied or
//! deliberately skipped (objects a controller recreates), each restored type must be listed in
//! the mapped namespaces at least as often as it was created, and the mapped namespaces are
//! deleted again.
//!
//! Limits: two downloads (one for the checksums, one to parse); cluster-scoped objects the apply
//! created in the scratch cluster (CRDs the backup carried) stay there; the mapped namespaces are
//! deleted without waiting for their finalizers.

use std::collections::BTreeMap;
use std::time::Instant;

use super::{DrillError, DrillOptions, Run};
use crate::crypto::Decrypt;
use crate::manifest::Manifest;
use crate::namespace::restore::{count_archive, restore, RestoreOptions};
use crate::namespace::{ApiClient, NamespaceError};
use crate::pipeline;
use crate::store::Store;

/// The counts per type the manifest recorded.
fn recorded_counts(m: &Manifest) -> BTreeMap<String, u64> {
    m.details
        .get("resource_counts")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// `a: 3 b: 0` of the types whose counts differ, from `from`'s side.
fn differing(from: &BTreeMap<String, u64>, other: &BTreeMap<String, u64>) -> String {
    let mut keys: Vec<&String> = from.keys().chain(other.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| from.get(*k) != other.get(*k))
        .map(|k| format!("{k}: {}", from.get(k).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) async fn drill(
    store: &dyn Store,
    m: &Manifest,
    decrypt: &Decrypt,
    opts: &DrillOptions,
    run: &mut Run,
) -> Result<(), DrillError> {
    let t = Instant::now();
    let checked = pipeline::read_and_check(store, m, decrypt, None).await;
    let mut rto = run.step("download+verify", t);
    if !run.integrity(checked, "sha256 of stored and raw bytes as recorded")? {
        run.restore_seconds = rto;
        return Ok(());
    }
    let t = Instant::now();
    let counted = count_archive(store, m, decrypt).await;
    rto += run.step("parse", t);
    let counted = match counted {
        Ok(c) => c,
        Err(NamespaceError::Archive { message, .. }) => {
            run.check("parses", false, "every object parses", message);
            run.restore_seconds = rto;
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    run.check(
        "parses",
        counted.header,
        "every object parses, the header first",
        if counted.header {
            format!("{} objects", counted.objects)
        } else {
            "no header entry at the start".to_string()
        },
    );
    run.figure("objects", counted.objects);
    run.figure("types", counted.counts.len());
    let want = recorded_counts(m);
    let want_total = m.details.get("objects").and_then(|v| v.as_u64());
    if let Some(total) = want_total {
        run.check("objects", total == counted.objects, total, counted.objects);
    }
    run.check(
        "resource_counts",
        want == counted.counts,
        if want == counted.counts {
            format!("{} types as recorded", want.len())
        } else {
            differing(&want, &counted.counts)
        },
        if want == counted.counts {
            format!("{} types", counted.counts.len())
        } else {
            differing(&counted.counts, &want)
        },
    );
    if let Some(client) = &opts.scratch_cluster {
        let t = Instant::now();
        apply_in_scratch(client, store, m, decrypt, &counted.counts, run).await?;
        rto += run.step("apply+compare", t);
    }
    run.restore_seconds = rto;
    Ok(())
}

/// Applies the backup under mapped names in the scratch cluster, compares, deletes.
async fn apply_in_scratch(
    client: &ApiClient,
    store: &dyn Store,
    m: &Manifest,
    decrypt: &Decrypt,
    counts: &BTreeMap<String, u64>,
    run: &mut Run,
) -> Result<(), DrillError> {
    let namespaces: Vec<String> = m
        .details
        .get("namespaces")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let suffix = format!("-drill-{:04x}", rand::random::<u16>());
    let mapping: BTreeMap<String, String> = namespaces
        .iter()
        .map(|ns| {
            let keep = 63 - suffix.len();
            let base: String = ns.chars().take(keep).collect();
            (
                ns.clone(),
                format!("{}{suffix}", base.trim_end_matches('-')),
            )
        })
        .collect();
    run.figure(
        "scratch_namespaces",
        mapping.values().cloned().collect::<Vec<_>>(),
    );
    let opts = RestoreOptions {
        namespace_mapping: mapping.clone(),
        decrypt: decrypt.clone(),
        ..RestoreOptions::default()
    };
    let applied = restore(client, store, &m.id, &opts).await;
    let compared = match applied {
        Ok(report) => compare(client, &report, counts, &mapping, run).await,
        Err(e) => Err(e),
    };
    // Whatever happened, the mapped namespaces go.
    for ns in mapping.values() {
        match client.delete("/api/v1/namespaces", ns).await {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(namespace = %ns, error = %e, "could not delete the drill's namespace");
                run.figure("cleanup_error", e.to_string());
            }
        }
    }
    compared.map_err(DrillError::from)
}

async fn compare(
    client: &ApiClient,
    report: &crate::namespace::RestoreReport,
    counts: &BTreeMap<String, u64>,
    mapping: &BTreeMap<String, String>,
    run: &mut Run,
) -> Result<(), NamespaceError> {
    let failed = report.failed();
    run.check(
        "applied",
        failed == 0,
        "every object applied or deliberately skipped",
        if failed == 0 {
            "no failures".to_string()
        } else {
            format!(
                "{failed} failed: {}",
                report
                    .failures
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    );
    let accounted: BTreeMap<String, u64> = report
        .types
        .iter()
        .map(|t| {
            (
                t.resource.clone(),
                t.created + t.updated + t.skipped + t.failed,
            )
        })
        .collect();
    run.check(
        "restored_counts",
        &accounted == counts,
        format!("{} types as in the backup", counts.len()),
        if &accounted == counts {
            format!("{} types", accounted.len())
        } else {
            differing(&accounted, counts)
        },
    );
    // What the apply created must be there to list.
    let (types, _) = client.discover().await?;
    let mut short = Vec::new();
    for t in types.iter().filter(|t| t.namespaced) {
        let Some(c) = report.counts(&t.key()) else {
            continue;
        };
        if c.created == 0 {
            continue;
        }
        let mut listed = 0u64;
        for ns in mapping.values() {
            let v = client.get_path(&t.collection_path(Some(ns))).await?;
            listed += v
                .get("items")
                .and_then(|i| i.as_array())
                .map(|a| a.len() as u64)
                .unwrap_or(0);
        }
        if listed < c.created {
            short.push(format!(
                "{}: {listed} listed, {} created",
                t.key(),
                c.created
            ));
        }
    }
    run.check(
        "listed",
        short.is_empty(),
        "every created object listed in the mapped namespaces",
        if short.is_empty() {
            "all listed".to_string()
        } else {
            short.join(", ")
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_names_only_the_types_that_differ() {
        let a: BTreeMap<String, u64> = [("configmaps".into(), 3), ("secrets".into(), 1)].into();
        let b: BTreeMap<String, u64> = [("configmaps".into(), 3), ("services".into(), 2)].into();
        assert_eq!(differing(&a, &b), "secrets: 1, services: 0");
        assert_eq!(differing(&b, &a), "secrets: 0, services: 2");
    }
}
