//! [`CentralError`]: what failed between a `centralized_db` node and its central database.

use std::fmt;

use super::driver::IndexError;

/// A failure of the central mirror: the database refused or could not be reached, or the
/// node's own index (which the mirror reads its records from) failed.
#[derive(Debug)]
pub(crate) enum CentralError {
    /// The connection URL cannot be used (no pool can be made from it).
    Unusable {
        /// The database, without its password.
        url: String,
        source: sqlx::Error,
    },
    /// A statement failed (the database down, a connection dropped, a deadlock, a refusal).
    Statement {
        /// The database, without its password.
        url: String,
        /// What the statement was for, as words after "failed": "to write this node's rows".
        doing: &'static str,
        source: sqlx::Error,
    },
    /// The node's own index failed while the mirror read or kept something in it.
    Local(IndexError),
    /// The mirror's own thread could not start.
    Thread(std::io::Error),
    /// A fleet query was stopped before it finished (the node stopping).
    Stopped(String),
    /// A fleet query was asked outside a tokio runtime.
    NoRuntime,
}

impl fmt::Display for CentralError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CentralError::Unusable { url, source } => {
                write!(f, "cannot use the central database {url}: {source}")
            }
            CentralError::Statement { url, doing, source } => {
                write!(f, "the central database {url} failed {doing}: {source}")
            }
            CentralError::Local(err) => write!(
                f,
                "the central mirror could not use this node's own index: {err}"
            ),
            CentralError::Thread(err) => {
                write!(f, "cannot start the central index's thread: {err}")
            }
            CentralError::Stopped(reason) => write!(
                f,
                "the fleet query was stopped before it finished ({reason}): is the node stopping?"
            ),
            CentralError::NoRuntime => {
                f.write_str("Fleet::connect must be called on a tokio runtime")
            }
        }
    }
}

impl std::error::Error for CentralError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CentralError::Unusable { source, .. } | CentralError::Statement { source, .. } => {
                Some(source)
            }
            CentralError::Local(err) => Some(err),
            CentralError::Thread(err) => Some(err),
            CentralError::Stopped(_) | CentralError::NoRuntime => None,
        }
    }
}

impl From<IndexError> for CentralError {
    fn from(err: IndexError) -> Self {
        CentralError::Local(err)
    }
}
