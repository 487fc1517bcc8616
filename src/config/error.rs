//! [`ConfigError`]: a configuration file that could not be used, in one line naming the file, the
//! option and the value.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration file that could not be used: names the file, and the key and value when
/// one of them is at fault.
#[derive(Debug)]
pub struct ConfigError {
    pub(super) file: Option<PathBuf>,
    pub(super) section: &'static str,
    pub(super) key: Option<String>,
    pub(super) value: Option<String>,
    pub(super) reason: String,
}

impl ConfigError {
    pub(crate) fn in_file(file: &Path, reason: impl Into<String>) -> Self {
        ConfigError {
            file: Some(file.to_path_buf()),
            section: "DEFAULT",
            key: None,
            value: None,
            reason: reason.into(),
        }
    }

    /// The file at fault, if one is.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The option at fault, if one is.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The value at fault, if one is.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        match (&self.key, &self.value) {
            (Some(key), Some(value)) => {
                write!(f, "[{}] {key} = {value:?}: {}", self.section, self.reason)
            }
            (Some(key), None) => write!(f, "{key}: {}", self.reason),
            _ => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}
