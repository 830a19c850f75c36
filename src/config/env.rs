//! Environment overrides, applied to the parsed TOML document before it is
//! validated: `TWINCERT_<SECTION>_<KEY>` sets `[section] key`, and
//! `TWINCERT_CA_<ID>_<KEY>` sets a key of the `[[cas]]` entry with that id.
//! Variables that carry secrets or select the process's mode are not
//! overrides and are left alone.

use super::{ConfigError, SECTIONS, SUBTABLES, invalid};

/// Environment variables that are not `[section] key` overrides.
const RESERVED_ENV: &[&str] = &[
    "TWINCERT_MASTER_KEY",
    "TWINCERT_ADMIN_TOKEN",
    "TWINCERT_CONFIG",
    "TWINCERT_URL",
    "TWINCERT_TOKEN",
    "TWINCERT_LOG",
    "TWINCERT_ROLE",
    // `bench idle`'s serving process's log level (it inherits it).
    "TWINCERT_BENCH_LOG",
];

/// Test hooks, known only to builds with the `failpoints` feature; the
/// product refuses them as unknown overrides.
#[cfg(feature = "failpoints")]
const TEST_HOOK_ENV: &[&str] = &["TWINCERT_FAILPOINT"];
#[cfg(not(feature = "failpoints"))]
const TEST_HOOK_ENV: &[&str] = &[];

fn env_value(text: &str) -> toml::Value {
    if let Ok(i) = text.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = text.parse::<f64>() {
        return toml::Value::Float(f);
    }
    match text {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(text.to_string()),
    }
}

/// Applies the overrides in `env`; returns which key each variable set
/// (`(key, variable)`), so an error about that key can name the variable.
pub(super) fn apply_env(
    doc: &mut toml::Table,
    env: &[(String, String)],
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut set = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("TWINCERT_") else {
            continue;
        };
        if RESERVED_ENV.contains(&name.as_str())
            || TEST_HOOK_ENV.contains(&name.as_str())
            || name.starts_with("TWINCERT_TEST_")
        {
            continue;
        }
        if let Some(ca_rest) = rest.strip_prefix("CA_") {
            let cas = doc
                .get_mut("cas")
                .and_then(|v| v.as_array_mut())
                .ok_or_else(|| invalid(name, "…", "no [[cas]] entries to override"))?;
            let mut applied = false;
            for ca in cas.iter_mut() {
                let Some(table) = ca.as_table_mut() else {
                    continue;
                };
                let id = table.get("id").and_then(|v| v.as_str()).unwrap_or_default();
                let prefix = format!("{}_", id.to_ascii_uppercase().replace('-', "_"));
                if let Some(key) = ca_rest.strip_prefix(&prefix) {
                    let key = key.to_ascii_lowercase();
                    let v = if key == "contact" || key == "crl_urls" {
                        toml::Value::Array(vec![toml::Value::String(value.clone())])
                    } else {
                        env_value(value)
                    };
                    set.push((key.clone(), name.clone()));
                    table.insert(key, v);
                    applied = true;
                    break;
                }
            }
            if !applied {
                return Err(invalid(name, "…", "names no configured CA id"));
            }
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some(section) = SECTIONS
            .iter()
            .find(|s| lower.starts_with(&format!("{s}_")))
        else {
            if lower == "providers_dir" {
                doc.insert(lower, toml::Value::String(value.clone()));
                continue;
            }
            return Err(invalid(
                name,
                "…",
                format!(
                    "unknown override (an environment variable); expected \
                     TWINCERT_<SECTION>_<KEY> with SECTION one of {}, or TWINCERT_CA_<ID>_<KEY>",
                    SECTIONS.join(", ")
                ),
            ));
        };
        let mut key = lower[section.len() + 1..].to_string();
        let table = doc
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(mut table) = table.as_table_mut() else {
            return Err(invalid(section, "…", "must be a table"));
        };
        if let Some((_, sub)) = SUBTABLES
            .iter()
            .find(|(s, sub)| s == section && key.starts_with(&format!("{sub}_")))
        {
            key = key[sub.len() + 1..].to_string();
            let inner = table
                .entry(sub.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(inner) = inner.as_table_mut() else {
                return Err(invalid(&format!("{section}.{sub}"), "…", "must be a table"));
            };
            table = inner;
        }
        let v = if key == "ca_preference" {
            toml::Value::Array(
                value
                    .split(',')
                    .map(|s| toml::Value::String(s.trim().to_string()))
                    .collect(),
            )
        } else if key == "url"
            || key.ends_with("_url")
            || key.ends_with("_file")
            || key.ends_with("_listen")
            || key.ends_with("_dir")
        {
            toml::Value::String(value.clone())
        } else {
            env_value(value)
        };
        set.push((key.clone(), name.clone()));
        table.insert(key, v);
    }
    Ok(set)
}

/// A parse error about a key an environment variable set says so: a
/// misspelt `TWINCERT_DEPLOY_CONCURENCY` is reported as coming from the
/// environment, not from the file.
pub(super) fn attribute(message: String, set: &[(String, String)]) -> String {
    for (key, var) in set {
        if message.contains(&format!("`{key}`")) {
            return format!("{message} (set by the environment variable {var})");
        }
    }
    message
}
