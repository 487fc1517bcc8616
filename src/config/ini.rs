//! Reading Glance's INI files: which files, and each option with the file and section it came
//! from, so an error can name them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::ConfigError;
use super::oslo_ini;

/// One option, with the file and section it came from.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    pub(crate) file: PathBuf,
    pub(crate) section: &'static str,
    pub(crate) key: String,
    pub(crate) value: String,
}

impl Setting {
    /// An error naming this option's file, section, key and value.
    pub(crate) fn bad(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: Some(self.file.clone()),
            section: self.section,
            key: Some(self.key.clone()),
            value: Some(self.value.clone()),
            reason: reason.into(),
        }
    }

    pub(crate) fn integer(&self) -> Result<u64, ConfigError> {
        let value = self.value.trim();
        if value.starts_with('-') {
            return Err(self.bad("must not be negative"));
        }
        value
            .parse()
            .map_err(|_| self.bad("must be a whole number"))
    }

    pub(crate) fn seconds(&self) -> Result<Duration, ConfigError> {
        self.integer().map(Duration::from_secs)
    }

    /// oslo.config's booleans: true, yes, on, 1 or false, no, off, 0, in any case.
    pub(crate) fn boolean(&self) -> Result<bool, ConfigError> {
        match self.value.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(self.bad("must be true or false")),
        }
    }

    pub(crate) fn text(&self) -> Result<String, ConfigError> {
        let value = self.value.trim();
        if value.is_empty() {
            return Err(self.bad("must not be empty"));
        }
        Ok(value.to_owned())
    }
}

/// Glance's own configuration files, which every tool and the server read first when present.
pub const GLANCE_FILES: [&str; 2] = [
    "/etc/glance/glance-api.conf",
    "/etc/glance/glance-cache.conf",
];

/// The files to read: Glance's own ([`GLANCE_FILES`]) that exist, then `given`, in order (later
/// files win).
pub fn with_glance_files(given: &[PathBuf]) -> Vec<PathBuf> {
    GLANCE_FILES
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .chain(given.iter().cloned())
        .collect()
}

/// [`with_glance_files`], then the `*.conf` files of each of `dirs` (oslo.config's
/// `--config-dir`), each directory's sorted by name: the later a file, the more it wins.
pub fn with_config_dirs(files: &[PathBuf], dirs: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigError> {
    let mut all = with_glance_files(files);
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|err| {
            ConfigError::in_file(
                dir,
                format!(
                    "cannot be read as a --config-dir ({err}): give a directory of *.conf files"
                ),
            )
        })?;
        let mut confs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "conf") && path.is_file())
            .collect();
        confs.sort();
        all.extend(confs);
    }
    Ok(all)
}

/// Each file's text, with its path.
pub(crate) fn read_files<P: AsRef<Path>>(
    files: impl IntoIterator<Item = P>,
) -> Result<Vec<(PathBuf, String)>, ConfigError> {
    let mut texts = Vec::new();
    for file in files {
        let file = file.as_ref();
        let text = std::fs::read_to_string(file)
            .map_err(|err| ConfigError::in_file(file, format!("cannot be read: {err}")))?;
        texts.push((file.to_path_buf(), text));
    }
    Ok(texts)
}

/// The options of `section` in every file as oslo.config reads them: later files (and later
/// lines) overriding earlier ones, a section given twice being one section, and each value's
/// `$name` substitutions made.
pub(crate) fn read_section(
    texts: &[(PathBuf, String)],
    section: &'static str,
) -> Result<HashMap<String, Setting>, ConfigError> {
    let mut sections: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut settings = HashMap::new();
    for (file, text) in texts {
        for assignment in oslo_ini::parse(file, text)? {
            if assignment.section == section {
                let setting = Setting {
                    file: file.to_path_buf(),
                    section,
                    key: assignment.key.clone(),
                    value: assignment.value.clone(),
                };
                settings.insert(assignment.key.clone(), setting);
            }
            sections
                .entry(assignment.section)
                .or_default()
                .insert(assignment.key, assignment.value);
        }
    }
    let scope = oslo_ini::Scope {
        sections: &sections,
    };
    for setting in settings.values_mut() {
        let value = scope
            .substitute(section, &setting.value)
            .map_err(|reason| setting.bad(reason.to_string()))?;
        setting.value = value;
    }
    Ok(settings)
}
