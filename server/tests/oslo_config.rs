//! The same configuration files read by real Glance's oslo.config (from the test venv) and by
//! this crate: every value compared, with oslo.config's dialect (`:` separators, quotes,
//! backslashes kept, inline `#` kept, continuation lines), `$name` / `${name}` / `$$` / `\$`
//! substitution, `--config-dir`, and an unknown name refused by both.
#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tower_image_cache::config::{with_config_dirs, LogOptions, ServerOptions};
use tower_image_cache::CacheConfig;

/// What Glance's oslo.config reads: Glance's own options (as `glance-api` registers them), the
/// ones Glance 33 no longer registers itself (`bind_host`, `cert_file`, `key_file`) and this
/// crate's `[cache_server]` options as plain strings.
const READ_WITH_OSLO: &str = r#"
import json, sys, warnings
warnings.filterwarnings("ignore")
from oslo_config import cfg
import glance.common.config, glance.image_cache
CONF = cfg.CONF
for name in ["bind_host", "cert_file", "key_file"]:
    if name not in CONF:
        CONF.register_opt(cfg.StrOpt(name))
CONF.register_opts([cfg.StrOpt("upstream"), cfg.StrOpt("manage_token")], group="cache_server")
CONF(args=sys.argv[1:], project="glance", default_config_files=[])
try:
    values = {
        "image_cache_dir": CONF.image_cache_dir,
        "image_cache_sqlite_db": CONF.image_cache_sqlite_db,
        "image_cache_max_size": str(CONF.image_cache_max_size),
        "log_dir": CONF.log_dir,
        "log_file": CONF.log_file,
        "bind_host": CONF.bind_host,
        "cert_file": CONF.cert_file,
        "key_file": CONF.key_file,
        "cache_server.upstream": CONF.cache_server.upstream,
        "cache_server.manage_token": CONF.cache_server.manage_token,
    }
    print(json.dumps({"ok": values}))
except Exception as err:
    print(json.dumps({"error": type(err).__name__ + ": " + str(err)}))
"#;

fn oslo(
    venv: &Path,
    files: &[PathBuf],
    dirs: &[PathBuf],
) -> Result<BTreeMap<String, String>, String> {
    let mut command = Command::new(venv.join("bin/python"));
    command.arg("-c").arg(READ_WITH_OSLO);
    for file in files {
        command.arg("--config-file").arg(file);
    }
    for dir in dirs {
        command.arg("--config-dir").arg(dir);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let answer: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
        panic!(
            "oslo.config said nothing readable ({err}): {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    if let Some(error) = answer.get("error") {
        return Err(error.as_str().unwrap().to_owned());
    }
    Ok(answer["ok"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
        .collect())
}

fn ours(files: &[PathBuf], dirs: &[PathBuf]) -> Result<BTreeMap<String, String>, String> {
    let files = with_config_dirs(files, dirs).map_err(|e| e.to_string())?;
    let cache = CacheConfig::from_files(&files).map_err(|e| e.to_string())?;
    let server = ServerOptions::from_files(&files).map_err(|e| e.to_string())?;
    let log = LogOptions::from_files(&files).map_err(|e| e.to_string())?;
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let values = [
        (
            "image_cache_dir",
            Some(cache.image_cache_dir.display().to_string()),
        ),
        (
            "image_cache_sqlite_db",
            Some(cache.image_cache_sqlite_db.clone()),
        ),
        (
            "image_cache_max_size",
            Some(cache.image_cache_max_size.to_string()),
        ),
        ("log_dir", path(&log.log_dir)),
        ("log_file", path(&log.log_file)),
        ("bind_host", server.bind_host.clone()),
        ("cert_file", path(&server.cert_file)),
        ("key_file", path(&server.key_file)),
        ("cache_server.upstream", server.upstream.clone()),
        ("cache_server.manage_token", server.manage_token.clone()),
    ];
    Ok(values
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), v?)))
        .collect())
}

#[test]
fn glances_oslo_config_and_this_crate_read_the_same_values() {
    let test = "glances_oslo_config_and_this_crate_read_the_same_values";
    let Some(venv) = common::openstack::venv(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let api = dir.path().join("glance-api.conf");
    std::fs::write(
        &api,
        "# Glance's API configuration\n\
         [DEFAULT]\n\
         log_dir = /var/log/glance\n\
         image_cache_dir = $log_dir/../image-cache\n\
         image_cache_sqlite_db = \"cache.db\"\n\
         image_cache_max_size: 1000\n\
         log_file = api.log # not a comment\n\
         bind_host = ${log_dir}-host\n\
         cert_file = /etc/pki/$$weird\n\
         key_file = \\$literal/key.pem\n\
         \n\
         [cache_server]\n\
         manage_token = pa\\ss\\\\word\n\
         upstream = http://glance:9292/\n\
         \x20 continued\n",
    )
    .unwrap();
    let conf_d = dir.path().join("glance-api.conf.d");
    std::fs::create_dir(&conf_d).unwrap();
    std::fs::write(
        conf_d.join("20-size.conf"),
        "[DEFAULT]\nimage_cache_max_size = 3000\n",
    )
    .unwrap();
    std::fs::write(
        conf_d.join("10-size.conf"),
        "[DEFAULT]\nimage_cache_max_size = 2000\n",
    )
    .unwrap();
    std::fs::write(
        conf_d.join("ignored.txt"),
        "[DEFAULT]\nimage_cache_max_size = 9\n",
    )
    .unwrap();

    let files = [api.clone()];
    let theirs = oslo(&venv, &files, &[]).expect("oslo.config reads the file");
    assert_eq!(theirs["image_cache_dir"], "/var/log/glance/../image-cache");
    assert_eq!(theirs["cache_server.manage_token"], "pa\\ss\\\\word");
    assert_eq!(
        ours(&files, &[]).unwrap(),
        theirs,
        "one file: ours, then oslo.config's"
    );

    let dirs = [conf_d.clone()];
    let theirs = oslo(&venv, &files, &dirs).expect("oslo.config reads the directory");
    assert_eq!(theirs["image_cache_max_size"], "3000");
    assert_eq!(
        ours(&files, &dirs).unwrap(),
        theirs,
        "with --config-dir: ours, then oslo.config's"
    );

    // A name neither knows: both refuse the file.
    let unknown = dir.path().join("unknown.conf");
    std::fs::write(&unknown, "[DEFAULT]\nimage_cache_dir = $nosuch/cache\n").unwrap();
    // (oslo.config's attribute access turns its TemplateSubstitutionError into a
    // NoSuchOptError naming the option read, not the name it could not substitute.)
    let theirs = oslo(&venv, std::slice::from_ref(&unknown), &[]).unwrap_err();
    assert!(theirs.contains("image_cache_dir"), "{theirs}");
    let said = ours(std::slice::from_ref(&unknown), &[]).unwrap_err();
    assert!(
        said.contains("image_cache_dir") && said.contains("$nosuch is not an option"),
        "{said}"
    );
}
