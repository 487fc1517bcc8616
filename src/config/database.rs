//! [`DatabaseUrl`]: the central database of `image_cache_driver = centralized_db`, written as
//! Glance writes it in `[database] connection` (an SQLAlchemy URL).

use std::fmt;
use std::path::PathBuf;

/// Which SQL server holds the central index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseKind {
    /// PostgreSQL (`postgresql://`, `postgresql+psycopg2://`, `postgres://`).
    Postgres,
    /// MySQL or MariaDB, Galera included (`mysql://`, `mysql+pymysql://`, `mariadb://`).
    MySql,
    /// An SQLite file (`sqlite:////abs/path.sqlite`, `sqlite:///relative.sqlite`): for
    /// development setups and several nodes on one machine.
    Sqlite,
}

impl DatabaseKind {
    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            DatabaseKind::Postgres => "PostgreSQL",
            DatabaseKind::MySql => "MySQL/MariaDB",
            DatabaseKind::Sqlite => "SQLite",
        }
    }
}

/// A parsed `[database] connection` URL.
///
/// The SQLAlchemy forms are accepted as Glance writes them; the `+driver` part (`+pymysql`,
/// `+psycopg2`) names a Python library and is ignored. Query parameters: `sslmode` (PostgreSQL)
/// is kept; `charset` and the other Python-only ones are ignored.
///
/// ```
/// use tower_image_cache::config::{DatabaseKind, DatabaseUrl};
///
/// let url = DatabaseUrl::parse("mysql+pymysql://glance:secret@db.example/glance?charset=utf8")?;
/// assert_eq!(url.kind(), DatabaseKind::MySql);
/// assert_eq!(url.to_string(), "mysql://glance:***@db.example/glance");
///
/// let url = DatabaseUrl::parse("sqlite:////var/lib/glance/glance.sqlite")?;
/// assert_eq!(url.kind(), DatabaseKind::Sqlite);
/// assert!(DatabaseUrl::parse("oracle://db/glance").is_err());
/// # Ok::<(), tower_image_cache::config::InvalidDatabaseUrl>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    kind: DatabaseKind,
    /// The URL in the form the SQL client takes.
    client_url: String,
    /// The same with any password hidden, for messages.
    shown: String,
}

/// A `[database] connection` URL the central index cannot use: what is wrong with it, as the
/// end of a sentence naming the URL ("is not a database URL: write it as Glance does, ...").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDatabaseUrl(String);

impl fmt::Display for InvalidDatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidDatabaseUrl {}

impl DatabaseUrl {
    /// Parses an SQLAlchemy URL; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<DatabaseUrl, InvalidDatabaseUrl> {
        let text = text.trim();
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(InvalidDatabaseUrl(
                "is not a database URL: write it as Glance does, for example \
                 mysql+pymysql://glance:PASSWORD@HOST/glance"
                    .into(),
            ));
        };
        let dialect = scheme
            .split('+')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let kind = match dialect.as_str() {
            "postgresql" | "postgres" => DatabaseKind::Postgres,
            "mysql" | "mariadb" => DatabaseKind::MySql,
            "sqlite" => DatabaseKind::Sqlite,
            _ => {
                return Err(InvalidDatabaseUrl(format!(
                    "names the database {dialect:?}, which the central cache index does not \
                     support: use postgresql://, mysql:// (MariaDB too) or sqlite://"
                )))
            }
        };
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        if kind == DatabaseKind::Sqlite {
            return Self::sqlite(location);
        }
        let (authority, database) = location.split_once('/').unwrap_or((location, ""));
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        if host.is_empty() || host.starts_with(':') {
            return Err(InvalidDatabaseUrl(
                "has no host: write user:password@HOST/database".into(),
            ));
        }
        if database.is_empty() || database.contains('/') {
            return Err(InvalidDatabaseUrl(
                "has no database name: write user:password@host/DATABASE".into(),
            ));
        }
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| kind == DatabaseKind::Postgres && pair.starts_with("sslmode="))
            .collect();
        let scheme = match kind {
            DatabaseKind::Postgres => "postgres",
            _ => "mysql",
        };
        let mut client_url = format!("{scheme}://{authority}/{database}");
        if !kept.is_empty() {
            client_url = format!("{client_url}?{}", kept.join("&"));
        }
        let shown = format!("{scheme}://{}/{database}", hide_password(authority));
        Ok(DatabaseUrl {
            kind,
            client_url,
            shown,
        })
    }

    fn sqlite(location: &str) -> Result<DatabaseUrl, InvalidDatabaseUrl> {
        // sqlite:////abs/path → "/abs/path"; sqlite:///rel → "rel" (SQLAlchemy's rule).
        let Some(path) = location.strip_prefix('/') else {
            return Err(InvalidDatabaseUrl(
                "is not an SQLite URL: write sqlite:////absolute/path.sqlite".into(),
            ));
        };
        if path.is_empty() || path == ":memory:" {
            return Err(InvalidDatabaseUrl(
                "names no SQLite file (an in-memory database cannot be shared): write \
                 sqlite:////absolute/path.sqlite"
                    .into(),
            ));
        }
        let path = PathBuf::from(path);
        Ok(DatabaseUrl {
            kind: DatabaseKind::Sqlite,
            client_url: format!("sqlite://{}?mode=rwc", path.display()),
            shown: format!("sqlite:///{}", path.display()),
        })
    }

    /// Which server this is.
    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// The URL in the form the SQL client library takes (with the password).
    #[cfg_attr(not(feature = "centralized-db"), allow(dead_code))]
    pub(crate) fn client_url(&self) -> &str {
        &self.client_url
    }
}

fn hide_password(authority: &str) -> String {
    match authority.rsplit_once('@') {
        Some((user_info, host)) => match user_info.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{user_info}@{host}"),
        },
        None => authority.to_owned(),
    }
}

/// Shows the URL with its password hidden.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glance_url_forms_are_read() {
        for (text, kind, client, shown) in [
            (
                "mysql+pymysql://glance:pw@db:3306/glance?charset=utf8",
                DatabaseKind::MySql,
                "mysql://glance:pw@db:3306/glance",
                "mysql://glance:***@db:3306/glance",
            ),
            (
                "mysql://root@127.0.0.1/test",
                DatabaseKind::MySql,
                "mysql://root@127.0.0.1/test",
                "mysql://root@127.0.0.1/test",
            ),
            (
                "postgresql+psycopg2://glance:pw@db/glance?sslmode=disable&connect_timeout=3",
                DatabaseKind::Postgres,
                "postgres://glance:pw@db/glance?sslmode=disable",
                "postgres://glance:***@db/glance",
            ),
            (
                "postgresql://postgres@127.0.0.1:5432/test",
                DatabaseKind::Postgres,
                "postgres://postgres@127.0.0.1:5432/test",
                "postgres://postgres@127.0.0.1:5432/test",
            ),
            (
                "sqlite:////var/lib/glance/glance.sqlite",
                DatabaseKind::Sqlite,
                "sqlite:///var/lib/glance/glance.sqlite?mode=rwc",
                "sqlite:////var/lib/glance/glance.sqlite",
            ),
            (
                "sqlite:///glance.sqlite",
                DatabaseKind::Sqlite,
                "sqlite://glance.sqlite?mode=rwc",
                "sqlite:///glance.sqlite",
            ),
        ] {
            let url = DatabaseUrl::parse(text).unwrap();
            assert_eq!(url.kind(), kind, "{text}");
            assert_eq!(url.client_url(), client, "{text}");
            assert_eq!(url.to_string(), shown, "{text}");
            assert!(!format!("{url:?}").contains(":pw@"), "{url:?}");
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (text, says) in [
            ("db.example/glance", "not a database URL"),
            ("oracle://db/glance", "does not support"),
            ("mysql://glance:pw@/glance", "no host"),
            ("postgresql://db", "no database name"),
            ("sqlite://", "SQLite"),
            ("sqlite:///:memory:", "in-memory"),
        ] {
            let err = DatabaseUrl::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
