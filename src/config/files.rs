//! Loading [`CacheConfig`] from Glance's own files: `glance-api.conf`, then `glance-cache.conf`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::database::DatabaseUrl;
use super::error::ConfigError;
use super::ini::{read_files, read_section, Setting};
use super::options::{db_name_problem, CacheConfig, IndexDriverKind};

impl CacheConfig {
    /// Reads the cache options from the `[DEFAULT]` section of each file in turn, a later
    /// file's value winning: pass `glance-api.conf` then `glance-cache.conf`, so an existing
    /// Glance node's files work unchanged. Unknown options are ignored.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # let api = dir.path().join("glance-api.conf");
    /// # let cache = dir.path().join("glance-cache.conf");
    /// std::fs::write(&api, "[DEFAULT]\nimage_cache_dir = /var/lib/glance/image-cache\nbind_port = 9292\n")?;
    /// std::fs::write(&cache, "[DEFAULT]\nimage_cache_max_size = 1073741824\n")?;
    /// let config = tower_image_cache::CacheConfig::from_files([&api, &cache])?;
    /// assert_eq!(config.image_cache_max_size, 1 << 30);
    /// # Ok(()) }
    /// ```
    pub fn from_files<P: AsRef<Path>>(
        files: impl IntoIterator<Item = P>,
    ) -> Result<Self, ConfigError> {
        Self::from_texts(&read_files(files)?, None)
    }

    /// [`CacheConfig::from_files`] with `image_cache_dir` given on a command line, which wins
    /// over the files (as a command-line option does with oslo.config); the files then need
    /// not name one.
    pub fn from_files_with_dir<P: AsRef<Path>>(
        files: impl IntoIterator<Item = P>,
        image_cache_dir: impl Into<PathBuf>,
    ) -> Result<Self, ConfigError> {
        Self::from_texts(&read_files(files)?, Some(image_cache_dir.into()))
    }

    /// [`CacheConfig::from_files`] on texts already read, each with the file it came from.
    pub(crate) fn from_texts(
        texts: &[(PathBuf, String)],
        given_dir: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let settings = read_section(texts, "DEFAULT")?;
        let from_files = settings
            .get("image_cache_dir")
            .map(Setting::text)
            .transpose()?;
        let Some(dir) = given_dir.or(from_files.map(PathBuf::from)) else {
            return Err(ConfigError {
                file: None,
                section: "DEFAULT",
                key: Some("image_cache_dir".into()),
                value: None,
                reason: "is required: set it in the [DEFAULT] section".into(),
            });
        };
        let mut config = CacheConfig::new(dir);
        if let Some(driver) = settings.get("image_cache_driver") {
            config.image_cache_driver = driver_kind(driver)?;
        }
        if let Some(db) = settings.get("image_cache_sqlite_db") {
            let name = db.text()?;
            if let Some(problem) = db_name_problem(&name) {
                return Err(db.bad(problem));
            }
            config.image_cache_sqlite_db = name;
        }
        if let Some(size) = settings.get("image_cache_max_size") {
            config.image_cache_max_size = size.integer()?;
        }
        if let Some(stall) = settings.get("image_cache_stall_time") {
            config.image_cache_stall_time = stall.seconds()?;
        }
        if let Some(interval) = settings.get("cache_prefetcher_interval") {
            config.cache_prefetcher_interval = interval.seconds()?;
        }
        if let Some(url) = settings.get("worker_self_reference_url") {
            config.worker_self_reference_url = Some(url.text()?);
        }
        if config.image_cache_driver == IndexDriverKind::Centralized {
            config.database_connection = Some(central_database(texts, &settings)?);
            if config.worker_self_reference_url.is_none() {
                let driver = &settings["image_cache_driver"];
                return Err(driver.bad(
                    "needs worker_self_reference_url in [DEFAULT]: this node's URL as the \
                     other nodes and operators reach it (Glance refuses to start without it)",
                ));
            }
        }
        Ok(config)
    }
}

/// `[database] connection` in `files`, when they name one: how a tool reaches a fleet's central
/// database from the nodes' own configuration files.
pub fn database_connection<P: AsRef<Path>>(
    files: impl IntoIterator<Item = P>,
) -> Result<Option<DatabaseUrl>, ConfigError> {
    let texts = read_files(files)?;
    let database = read_section(&texts, "database")?;
    let Some(connection) = database.get("connection") else {
        return Ok(None);
    };
    DatabaseUrl::parse(&connection.text()?)
        .map(Some)
        .map_err(|reason| connection.bad(reason.to_string()))
}

/// `[database] connection`, required by `centralized_db`.
fn central_database(
    texts: &[(PathBuf, String)],
    defaults: &HashMap<String, Setting>,
) -> Result<DatabaseUrl, ConfigError> {
    let database = read_section(texts, "database")?;
    let Some(connection) = database.get("connection") else {
        let driver = &defaults["image_cache_driver"];
        return Err(driver.bad(
            "needs the central database: set connection in the [database] section (the same \
             URL as Glance's, for example mysql+pymysql://glance:PASSWORD@HOST/glance)",
        ));
    };
    DatabaseUrl::parse(&connection.text()?).map_err(|reason| connection.bad(reason.to_string()))
}

fn driver_kind(driver: &Setting) -> Result<IndexDriverKind, ConfigError> {
    match driver.value.trim() {
        // Glance's embedded driver is SQLite; here the embedded index is sled, in the directory
        // image_cache_sqlite_db names.
        "sled" | "sqlite" => Ok(IndexDriverKind::Sled),
        "centralized_db" => Ok(IndexDriverKind::Centralized),
        "xattr" => Err(driver.bad(
            "is refused: the xattr driver keeps records in extended file attributes, which many \
             filesystems lack and which cannot be listed or shared across nodes; use sled (one \
             node) or centralized_db (a fleet)",
        )),
        _ => Err(driver
            .bad("is not a cache driver: use sled (or sqlite, its Glance name) or centralized_db")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn later_files_win_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let api = write(
            dir.path(),
            "glance-api.conf",
            "[DEFAULT]\n# a comment\nimage_cache_dir = /srv/cache\nimage_cache_max_size = 100\nbind_port = 9292\n\n[glance_store]\nimage_cache_max_size = 7\n",
        );
        let cache = write(
            dir.path(),
            "glance-cache.conf",
            "[DEFAULT]\nimage_cache_max_size = 200\nimage_cache_stall_time = 60\n",
        );
        let config = CacheConfig::from_files([&api, &cache]).unwrap();
        assert_eq!(config.image_cache_dir, Path::new("/srv/cache"));
        assert_eq!(config.image_cache_max_size, 200);
        assert_eq!(config.image_cache_stall_time, Duration::from_secs(60));
        assert_eq!(config.image_cache_sqlite_db, "cache.db");
        assert_eq!(config.cache_prefetcher_interval, Duration::from_secs(300));
        assert_eq!(config.worker_self_reference_url, None);

        let reversed = CacheConfig::from_files([&cache, &api]).unwrap();
        assert_eq!(reversed.image_cache_max_size, 100);
    }

    #[test]
    fn a_section_given_twice_in_a_file_is_one_section() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "glance-api.conf",
            "[DEFAULT]\nimage_cache_dir = /c\n[glance_store]\nx = 1\n[DEFAULT]\nimage_cache_max_size = 9\n",
        );
        let config = CacheConfig::from_files([file]).unwrap();
        assert_eq!(config.image_cache_dir, Path::new("/c"));
        assert_eq!(config.image_cache_max_size, 9);
    }

    #[test]
    fn every_option_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "glance-api.conf",
            "[DEFAULT]\nimage_cache_dir=/c\nimage_cache_sqlite_db = index.db\nimage_cache_driver = sled\ncache_prefetcher_interval = 5\nworker_self_reference_url = http://node-a:9292\n",
        );
        let config = CacheConfig::from_files([file]).unwrap();
        assert_eq!(config.image_cache_sqlite_db, "index.db");
        assert_eq!(config.cache_prefetcher_interval, Duration::from_secs(5));
        assert_eq!(
            config.worker_self_reference_url.as_deref(),
            Some("http://node-a:9292")
        );
    }

    #[test]
    fn bad_values_name_file_key_and_value() {
        let dir = tempfile::tempdir().unwrap();
        for (text, key, value, says) in [
            (
                "image_cache_max_size = -1",
                "image_cache_max_size",
                "-1",
                "negative",
            ),
            (
                "image_cache_max_size = ten gigabytes",
                "image_cache_max_size",
                "ten gigabytes",
                "whole number",
            ),
            (
                "image_cache_stall_time = soon",
                "image_cache_stall_time",
                "soon",
                "whole number",
            ),
            (
                "cache_prefetcher_interval = 1.5",
                "cache_prefetcher_interval",
                "1.5",
                "whole number",
            ),
            (
                "image_cache_driver = xattr",
                "image_cache_driver",
                "xattr",
                "extended file attributes",
            ),
            (
                "image_cache_driver = centralized_db",
                "image_cache_driver",
                "centralized_db",
                "[database] section",
            ),
            (
                "image_cache_driver = centralized_db\n[database]\nconnection = mysql://db/glance",
                "image_cache_driver",
                "centralized_db",
                "needs worker_self_reference_url",
            ),
            (
                "image_cache_driver = centralized_db\nworker_self_reference_url = http://a\n[database]\nconnection = oracle://db/glance",
                "connection",
                "oracle://db/glance",
                "does not support",
            ),
            (
                "image_cache_driver = redis",
                "image_cache_driver",
                "redis",
                "not a cache driver",
            ),
            (
                "image_cache_sqlite_db = ../escape",
                "image_cache_sqlite_db",
                "../escape",
                "plain directory name",
            ),
        ] {
            let file = write(
                dir.path(),
                "glance-cache.conf",
                &format!("[DEFAULT]\nimage_cache_dir = /c\n{text}\n"),
            );
            let err = CacheConfig::from_files([&file]).unwrap_err();
            assert_eq!(err.file(), Some(file.as_path()), "{text}");
            assert_eq!(err.key(), Some(key), "{text}");
            assert_eq!(err.value(), Some(value), "{text}");
            let message = err.to_string();
            assert!(
                message.contains("glance-cache.conf")
                    && message.contains(key)
                    && message.contains(value),
                "{message}"
            );
            assert!(message.contains(says), "{message}");
        }
    }

    #[test]
    fn each_driver_name_selects_its_index() {
        let dir = tempfile::tempdir().unwrap();
        for (lines, kind) in [
            ("", IndexDriverKind::Sled),
            ("image_cache_driver = sled", IndexDriverKind::Sled),
            ("image_cache_driver = sqlite", IndexDriverKind::Sled),
            (
                "image_cache_driver = centralized_db\nworker_self_reference_url = http://n1:9292\n\
                 [database]\nconnection = postgresql+psycopg2://glance:pw@db/glance",
                IndexDriverKind::Centralized,
            ),
        ] {
            let file = write(
                dir.path(),
                "glance-api.conf",
                &format!("[DEFAULT]\nimage_cache_dir = /c\n{lines}\n"),
            );
            let config = CacheConfig::from_files([&file]).unwrap();
            assert_eq!(config.image_cache_driver, kind, "{lines}");
            assert_eq!(config.problem(), None, "{lines}");
            let url = config.database_connection.map(|url| url.to_string());
            let expected = (kind == IndexDriverKind::Centralized)
                .then(|| "postgres://glance:***@db/glance".to_owned());
            assert_eq!(url, expected, "{lines}");
        }
    }

    #[test]
    fn a_missing_dir_or_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "glance-api.conf",
            "[DEFAULT]\nimage_cache_max_size = 1\n",
        );
        let err = CacheConfig::from_files([&file]).unwrap_err();
        assert_eq!(err.key(), Some("image_cache_dir"));
        assert!(err.to_string().contains("required"), "{err}");

        let missing = dir.path().join("nope.conf");
        let err = CacheConfig::from_files([&missing]).unwrap_err();
        assert_eq!(err.file(), Some(missing.as_path()));
        assert!(err.to_string().contains("cannot be read"), "{err}");
    }
}
