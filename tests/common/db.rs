//! The real database servers of the central index, one fresh database per test: PostgreSQL on
//! 127.0.0.1:5432 and MariaDB on 127.0.0.1:3306 (as on the development and CI machines), and
//! SQLite files. Where a server does not answer, [`TestDb::create`] prints `SKIPPED: <why>` and
//! returns `None`, unless `CI` is set, where it fails the test.

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Postgres,
    MariaDb,
    Sqlite,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Postgres => "PostgreSQL",
            Server::MariaDb => "MariaDB",
            Server::Sqlite => "SQLite",
        }
    }

    pub fn port(self) -> u16 {
        match self {
            Server::Postgres => 5432,
            Server::MariaDb => 3306,
            Server::Sqlite => 0,
        }
    }
}

/// One test's database, dropped with it.
pub struct TestDb {
    pub server: Server,
    pub name: String,
    /// The SQLAlchemy URL a node is configured with.
    pub url: String,
    pool: AnyPool,
    _dir: Option<tempfile::TempDir>,
}

fn admin_url(server: Server) -> &'static str {
    match server {
        Server::Postgres => "postgres://postgres@127.0.0.1:5432/test?sslmode=disable",
        Server::MariaDb => "mysql://root@127.0.0.1:3306/test",
        Server::Sqlite => unreachable!(),
    }
}

impl TestDb {
    /// A fresh database on `server`, or `None` (after printing why) when the server does not
    /// answer and `CI` is not set.
    pub async fn create(server: Server) -> Option<TestDb> {
        sqlx::any::install_default_drivers();
        let name = format!("tic_{}", uuid::Uuid::new_v4().simple());
        if server == Server::Sqlite {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("glance.sqlite");
            let url = format!("sqlite:///{}", path.display());
            let pool = AnyPoolOptions::new()
                .max_connections(2)
                .connect(&format!("sqlite://{}?mode=rwc", path.display()))
                .await
                .unwrap();
            return Some(TestDb {
                server,
                name,
                url,
                pool,
                _dir: Some(dir),
            });
        }
        let admin = match AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(admin_url(server))
            .await
        {
            Ok(admin) => admin,
            Err(err) => {
                let why = format!(
                    "{} on 127.0.0.1:{} does not answer ({err})",
                    server.name(),
                    server.port()
                );
                assert!(std::env::var_os("CI").is_none(), "CI is set and {why}");
                println!("SKIPPED: {why}");
                return None;
            }
        };
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let (url, direct) = match server {
            Server::Postgres => (
                format!("postgresql+psycopg2://postgres@127.0.0.1:5432/{name}?sslmode=disable"),
                format!("postgres://postgres@127.0.0.1:5432/{name}?sslmode=disable"),
            ),
            _ => (
                format!("mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8"),
                format!("mysql://root@127.0.0.1:3306/{name}"),
            ),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(2)
            .connect(&direct)
            .await
            .unwrap();
        Some(TestDb {
            server,
            name,
            url,
            pool,
            _dir: None,
        })
    }

    /// The node URL for this database through a proxy listening on `port`.
    pub fn url_via(&self, port: u16) -> String {
        self.url
            .replace(&format!(":{}/", self.server.port()), &format!(":{port}/"))
    }

    /// `(node url, image id, hits, size)` of every row, sorted.
    pub async fn rows(&self) -> Vec<(String, String, i64, i64)> {
        let hits = match self.server {
            Server::MariaDb => "CAST(c.hits AS SIGNED)",
            _ => "CAST(c.hits AS BIGINT)",
        };
        let sql = format!(
            "SELECT n.node_reference_url, c.image_id, {hits}, c.size FROM cached_images c \
             JOIN node_reference n ON n.node_reference_id = c.node_reference_id \
             ORDER BY n.node_reference_url, c.image_id"
        );
        match sqlx::query(&sql).fetch_all(&self.pool).await {
            Ok(rows) => rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect(),
            // The tables are made by the first node that connects.
            Err(_) => Vec::new(),
        }
    }

    /// The node URLs of `node_reference`, sorted.
    pub async fn nodes(&self) -> Vec<String> {
        let sql = "SELECT node_reference_url FROM node_reference ORDER BY node_reference_url";
        match sqlx::query(sql).fetch_all(&self.pool).await {
            Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Runs a statement of the test's own (to seed rows another node would have written).
    pub async fn execute(&self, sql: &str) {
        sqlx::query(sql).execute(&self.pool).await.unwrap();
    }

    /// Waits (up to 10 s) until a count of the test's own reaches `expected`, and returns the
    /// last count. A query that fails counts as 0: the nodes create their own tables as they
    /// start, so a table may not exist yet when the test first asks.
    pub async fn wait_count(&self, sql: &str, expected: i64) -> i64 {
        let mut last = 0;
        for _ in 0..200 {
            last = match sqlx::query(sql).fetch_one(&self.pool).await {
                Ok(row) => sqlx::Row::try_get::<i64, _>(&row, 0).unwrap(),
                Err(_) => 0,
            };
            if last == expected {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        last
    }

    /// Waits (up to 15 s) until `rows()` equals `expected`.
    pub async fn wait_rows(&self, expected: &[(&str, &str, i64, i64)]) {
        let expected = expected
            .iter()
            .map(|(n, i, h, s)| (n.to_string(), i.to_string(), *h, *s))
            .collect();
        self.wait_for_rows(expected).await;
    }

    /// [`wait_rows`](Self::wait_rows) with owned, sorted rows.
    pub async fn wait_for_rows(&self, expected: Vec<(String, String, i64, i64)>) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let rows = self.rows().await;
            if rows == expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "rows {rows:?}, expected {expected:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.server == Server::Sqlite {
            return;
        }
        let (server, name) = (self.server, self.name.clone());
        // Dropped on a runtime or not: a thread of its own does the async work.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let Ok(admin) = AnyPoolOptions::new()
                    .max_connections(1)
                    .connect(admin_url(server))
                    .await
                else {
                    return;
                };
                let drop = match server {
                    Server::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    _ => format!("DROP DATABASE IF EXISTS {name}"),
                };
                let _ = sqlx::query(&drop).execute(&admin).await;
            });
        })
        .join();
    }
}

/// One test of `scenario` per database server, each named (the including crate has this file
/// as its module `db`).
#[allow(unused_macros)] // the fleet bench includes this file too
macro_rules! on_servers {
    ($scenario:ident { $($server:ident => $name:ident),+ $(,)? }) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $scenario($crate::db::Server::$server).await;
            }
        )+
    };
}
#[allow(unused_imports)]
pub(crate) use on_servers;
