//! `clouds.yaml`: named clouds, as the OpenStack clients read them (`--os-cloud NAME`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::error::KeystoneError;
use super::options::AuthOptions;

/// Where the OpenStack clients look for `clouds.yaml`, first found first: `OS_CLIENT_CONFIG_FILE`,
/// the current directory, `~/.config/openstack`, `/etc/openstack`.
fn candidates() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(file) = std::env::var_os("OS_CLIENT_CONFIG_FILE") {
        files.push(PathBuf::from(file));
    }
    files.push(PathBuf::from("clouds.yaml"));
    if let Some(home) = std::env::var_os("HOME") {
        files.push(Path::new(&home).join(".config/openstack/clouds.yaml"));
    }
    files.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    files
}

impl AuthOptions {
    /// The cloud `name` of the first `clouds.yaml` found (see the OpenStack clients' search
    /// order), with the secrets of a `secure.yaml` next to it merged in; `overrides` (the
    /// command line and `OS_*` variables) win over both.
    pub fn from_cloud(
        name: &str,
        overrides: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, KeystoneError> {
        let searched = candidates();
        let file = searched
            .iter()
            .find(|f| f.is_file())
            .ok_or_else(|| KeystoneError::Config {
                origin: format!("--os-cloud {name}"),
                reason: format!(
                    "no clouds.yaml was found (looked for {})",
                    searched
                        .iter()
                        .map(|f| f.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        let mut options = cloud_entry(file, name)?;
        let secure = file.with_file_name("secure.yaml");
        if secure.is_file() {
            if let Ok(extra) = cloud_entry(&secure, name) {
                options.extend(extra);
            }
        }
        let origin = format!("cloud {name} of {}", file.display());
        AuthOptions::from_lookup(&origin, |key| {
            overrides(key).or_else(|| options.get(key).cloned())
        })
    }
}

/// The cloud's options, flattened: its `auth:` keys and its own (`region_name`, `interface`,
/// `auth_type`, `cacert`, `verify`).
fn cloud_entry(file: &Path, name: &str) -> Result<HashMap<String, String>, KeystoneError> {
    let bad = |reason: String| KeystoneError::Config {
        origin: file.display().to_string(),
        reason,
    };
    let text =
        std::fs::read_to_string(file).map_err(|err| bad(format!("cannot be read: {err}")))?;
    let yaml: Value =
        serde_yaml_ng::from_str(&text).map_err(|err| bad(format!("is not valid YAML: {err}")))?;
    let cloud = yaml
        .get("clouds")
        .and_then(|clouds| clouds.get(name))
        .ok_or_else(|| {
            let known: Vec<String> = yaml
                .get("clouds")
                .and_then(Value::as_mapping)
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            bad(format!(
                "has no cloud named {name:?} (it has: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })?;
    let mut options = HashMap::new();
    let mut take = |map: Option<&serde_yaml_ng::Mapping>| {
        for (key, value) in map.into_iter().flatten() {
            let (Some(key), Some(value)) = (key.as_str(), scalar(value)) else {
                continue;
            };
            options.insert(key.to_owned(), value);
        }
    };
    take(cloud.as_mapping());
    take(cloud.get("auth").and_then(Value::as_mapping));
    if let Some(verify) = options.remove("verify") {
        options.insert("insecure".into(), (verify == "false").to_string());
    }
    Ok(options)
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloud_entry_flattens_auth_and_merges_secure_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clouds.yaml");
        std::fs::write(
            &file,
            "clouds:\n  lab:\n    auth:\n      auth_url: http://k:5000/v3\n      username: admin\n\
             \x20     project_name: admin\n    region_name: RegionOne\n    verify: false\n",
        )
        .unwrap();
        let entry = cloud_entry(&file, "lab").unwrap();
        assert_eq!(entry["username"], "admin");
        assert_eq!(entry["region_name"], "RegionOne");
        assert_eq!(entry["insecure"], "true");
        let err = cloud_entry(&file, "prod").unwrap_err().to_string();
        assert!(
            err.contains("no cloud named \"prod\" (it has: lab)"),
            "{err}"
        );
    }
}
