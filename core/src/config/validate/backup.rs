//! Validation of `backup`: the store URL, S3 settings, retention, schedule and encryption.
//! Limits: secrets are named (environment variables), never read here; the store is not
//! contacted.

use super::*;

pub(super) fn resolve_backup(cx: &mut Ctx<'_>, raw: Option<&S<RawBackup>>) -> Option<Backup> {
    let default_s3 = || S3 {
        endpoint: None,
        region: None,
        path_style: None,
        access_key_id: None,
        secret_access_key: None,
        ca_file: None,
        checksums: Checksums::WhenRequired,
        part_size_mib: 5,
        parts_in_flight: 2,
    };
    let Some(raw) = raw else {
        return Some(Backup {
            store: None,
            s3: default_s3(),
            encryption: Encryption::default(),
            retention: Retention::default(),
            schedule: None,
            compression_level: 3,
        });
    };
    let r = &raw.value;
    let mut ok = true;

    let store = match &r.store {
        Some(s) => {
            let st = parse_store(cx, s);
            ok &= st.is_some();
            st
        }
        None => None,
    };

    let s3 = match &r.s3 {
        None => Some(default_s3()),
        Some(s3raw) => resolve_s3(cx, s3raw),
    };

    let encryption = match &r.encryption {
        None => Some(Encryption::default()),
        Some(e) => {
            let mut eok = true;
            let mut age_recipients = Vec::new();
            for (j, rcp) in e.value.age_recipients.iter().enumerate() {
                let v = rcp.value.trim();
                if v.starts_with("age1")
                    && v.len() > 10
                    && v.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    age_recipients.push(v.to_string());
                } else {
                    cx.error(
                        pos(rcp),
                        &format!("backup.encryption.age_recipients[{j}]"),
                        format!("{v:?} is not an age public key (age1…)"),
                    );
                    eok = false;
                }
            }
            let age_identity_file = e.value.age_identity_file.as_ref().and_then(|f| {
                let p = cx.readable_file(f, "backup.encryption.age_identity_file");
                eok &= p.is_some();
                p
            });
            if let (false, Some(p)) = (e.value.age_recipients.is_empty(), &e.value.passphrase_env) {
                cx.error(
                    pos(p),
                    "backup.encryption.passphrase_env",
                    "give age_recipients or passphrase_env, not both: a backup is encrypted one \
                     way",
                );
                eok = false;
            }
            let passphrase = match &e.value.passphrase_env {
                Some(p) => {
                    let f = "backup.encryption.passphrase_env";
                    let s = cx.env(p, f, f);
                    eok &= s.is_some();
                    s
                }
                None => None,
            };
            eok.then_some(Encryption {
                age_recipients,
                age_identity_file,
                passphrase,
            })
        }
    };

    let retention = match &r.retention {
        None => Some(Retention::default()),
        Some(rt) => {
            let rr = &rt.value;
            let mut rok = true;
            let mut get = |v: &Option<S<u32>>, name: &str| -> Option<u32> {
                let s = v.as_ref()?;
                if let Err(e) = grammar::RETENTION_COUNT.check(u64::from(s.value)) {
                    cx.error(
                        pos(s),
                        &format!("backup.retention.{name}"),
                        format!("{e}; leave it out to not use this rule"),
                    );
                    rok = false;
                    return None;
                }
                Some(s.value)
            };
            let retention = Retention {
                keep_last: get(&rr.keep_last, "keep_last"),
                hourly: get(&rr.hourly, "hourly"),
                daily: get(&rr.daily, "daily"),
                weekly: get(&rr.weekly, "weekly"),
                monthly: get(&rr.monthly, "monthly"),
            };
            rok.then_some(retention)
        }
    };

    let schedule = match &r.schedule {
        None => None,
        Some(s) => {
            let v = s.value.trim();
            match grammar::parse_cron(v) {
                Ok(_) => Some(v.to_string()),
                Err(e) => {
                    cx.error(
                        pos(s),
                        "backup.schedule",
                        format!("{e} (like \"0 */6 * * *\" or @daily)"),
                    );
                    ok = false;
                    None
                }
            }
        }
    };

    let compression_level = match &r.compression_level {
        None => 3,
        Some(c) => {
            // A negative level is reported like any other value outside the range.
            let level = u64::try_from(c.value).unwrap_or(0);
            match grammar::COMPRESSION_LEVEL
                .check(level)
                .map(|v| i32::try_from(v).unwrap_or(3))
            {
                Ok(v) => v,
                Err(_) => {
                    let r = &grammar::COMPRESSION_LEVEL;
                    cx.error(
                        pos(c),
                        "backup.compression_level",
                        format!(
                            "{} is outside {}..={} ({})",
                            c.value,
                            r.bounds.start(),
                            r.bounds.end(),
                            r.why
                        ),
                    );
                    ok = false;
                    3
                }
            }
        }
    };

    if !ok {
        return None;
    }
    Some(Backup {
        store,
        s3: s3?,
        encryption: encryption?,
        retention: retention?,
        schedule,
        compression_level,
    })
}

pub(super) fn parse_store(cx: &mut Ctx<'_>, s: &S<String>) -> Option<Store> {
    let v = s.value.trim();
    if let Some(rest) = v.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric());
        if !bucket_ok {
            cx.error(
                pos(s),
                "backup.store",
                format!("{bucket:?} is not an S3 bucket name (3-63 of lowercase letters, digits, '.', '-')"),
            );
            return None;
        }
        return Some(Store::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        });
    }
    if let Some(rest) = v.strip_prefix("file://") {
        if rest.is_empty() {
            cx.error(
                pos(s),
                "backup.store",
                "file:// needs a directory, e.g. file:///var/backups/k8s",
            );
            return None;
        }
        return Some(Store::File {
            path: cx.path(rest),
        });
    }
    cx.error(
        pos(s),
        "backup.store",
        format!("{v:?} is not a store URL: use s3://bucket/prefix or file:///path"),
    );
    None
}

pub(super) fn resolve_s3(cx: &mut Ctx<'_>, raw: &S<RawS3>) -> Option<S3> {
    let r = &raw.value;
    let mut ok = true;
    let endpoint = match &r.endpoint {
        Some(e) => {
            let u = cx.url(e, "backup.s3.endpoint");
            ok &= u.is_some();
            u
        }
        None => None,
    };
    let region = cx.optional_str(&r.region, "backup.s3.region");
    let path_style = r.path_style.as_ref().map(|b| b.value);
    let access_key_id = cx.optional_env(
        &r.access_key_id_env,
        "backup.s3.access_key_id_env",
        "backup.s3.access_key_id_env",
    );
    let secret_access_key = cx.optional_env(
        &r.secret_access_key_env,
        "backup.s3.secret_access_key_env",
        "backup.s3.secret_access_key_env",
    );
    ok &= r.access_key_id_env.is_none() || access_key_id.is_some();
    ok &= r.secret_access_key_env.is_none() || secret_access_key.is_some();
    if r.access_key_id_env.is_some() != r.secret_access_key_env.is_some() {
        cx.error(
            pos(raw),
            "backup.s3",
            "give both access_key_id_env and secret_access_key_env, or neither (SDK default credentials)",
        );
        ok = false;
    }
    let ca_file = r.ca_file.as_ref().and_then(|f| {
        let p = cx.readable_file(f, "backup.s3.ca_file");
        ok &= p.is_some();
        p
    });
    let checksums = cx.choice(
        &r.checksums,
        "backup.s3.checksums",
        &[
            ("when_required", Checksums::WhenRequired),
            ("when_supported", Checksums::WhenSupported),
        ],
        Checksums::WhenRequired,
    );
    // 5 MiB x 2 in flight: the streamed etcd backup's peak RSS stays near 50 MiB and upload
    // waits are negligible (bench/backup); bigger parts only cost memory.
    let part_size_mib = cx.ranged(
        &r.part_size_mib,
        "backup.s3.part_size_mib",
        &grammar::PART_SIZE_MIB,
        5,
    );
    let parts_in_flight = cx.ranged(
        &r.parts_in_flight,
        "backup.s3.parts_in_flight",
        &grammar::PARTS_IN_FLIGHT,
        2,
    );
    let parts_in_flight = usize::try_from(parts_in_flight).unwrap_or(2);
    ok.then_some(S3 {
        endpoint,
        region,
        path_style,
        access_key_id,
        secret_access_key,
        ca_file,
        checksums,
        part_size_mib,
        parts_in_flight,
    })
}
