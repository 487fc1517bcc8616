//! [`LogOptions`]: oslo.log's options in `[DEFAULT]`, as every OpenStack service reads them.

use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::ini::{read_files, read_section, Setting};

/// Where and how the cache server logs, from oslo.log's options in `[DEFAULT]`:
/// `debug`, `log_file`, `log_dir`, `use_json`, `use_stderr`, `use_journal`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// # let api = dir.path().join("glance-api.conf");
/// std::fs::write(&api, "[DEFAULT]\ndebug = True\nlog_dir = /var/log/glance\nuse_json = true\n")?;
/// let options = tower_image_cache::config::LogOptions::from_files([&api])?;
/// assert!(options.debug && options.use_json);
/// assert_eq!(
///     options.log_path("image-cache-server").as_deref(),
///     Some(std::path::Path::new("/var/log/glance/image-cache-server.log"))
/// );
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogOptions {
    /// `debug`: log at DEBUG (this crate's messages; dependencies stay at WARN).
    pub debug: bool,
    /// `log_file`: the file to log to (relative to `log_dir` when both are set).
    pub log_file: Option<PathBuf>,
    /// `log_dir`: the directory of `log_file`; alone, the log is `<log_dir>/<program>.log`.
    pub log_dir: Option<PathBuf>,
    /// `use_json`: one JSON object a line instead of text.
    pub use_json: bool,
    /// `use_stderr`: also log to standard error when logging to a file or the journal.
    pub use_stderr: bool,
    /// `use_journal`: log to the systemd journal, with its fields.
    pub use_journal: bool,
}

impl LogOptions {
    /// Reads the options from `files` (later files win).
    pub fn from_files<P: AsRef<Path>>(
        files: impl IntoIterator<Item = P>,
    ) -> Result<Self, ConfigError> {
        let texts = read_files(files)?;
        let defaults = read_section(&texts, "DEFAULT")?;
        let boolean = |key: &str| {
            defaults
                .get(key)
                .map(Setting::boolean)
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let path = |key: &str| {
            defaults
                .get(key)
                .map(Setting::text)
                .transpose()
                .map(|p| p.map(PathBuf::from))
        };
        Ok(LogOptions {
            debug: boolean("debug")?,
            log_file: path("log_file")?,
            log_dir: path("log_dir")?,
            use_json: boolean("use_json")?,
            use_stderr: boolean("use_stderr")?,
            use_journal: boolean("use_journal")?,
        })
    }

    /// The file to log to, as oslo.log computes it: `log_dir/log_file`, `log_file`, or
    /// `log_dir/<program>.log`; `None` when neither is set.
    pub fn log_path(&self, program: &str) -> Option<PathBuf> {
        match (&self.log_dir, &self.log_file) {
            (Some(dir), Some(file)) => Some(dir.join(file)),
            (None, Some(file)) => Some(file.clone()),
            (Some(dir), None) => Some(dir.join(format!("{program}.log"))),
            (None, None) => None,
        }
    }
}
