//! The central index (`image_cache_driver = centralized_db`) against the real servers:
//! PostgreSQL and MariaDB on this machine, and SQLite files. Each test makes its own database
//! and drops it; without a server (and without `CI`), its tests print `SKIPPED` and pass.
#![cfg(feature = "centralized-db")]

mod common;
#[path = "common/db.rs"]
#[allow(dead_code)] // helpers of the other central tests too
mod db;
#[path = "common/proxy.rs"]
mod proxy;

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::Captured;
use db::{on_servers, Server, TestDb};
use proxy::DbProxy;
use tower_image_cache::config::DatabaseUrl;
use tower_image_cache::store::{Expected, Fleet};
use tower_image_cache::{CacheConfig, ImageCache, ImageId};

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| Captured::install_global("tower_image_cache=info"))
}

struct PrintOnPanic(&'static Captured);
impl Drop for PrintOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- logs ---\n{}", self.0.text());
        }
    }
}

fn id(name: &str) -> ImageId {
    ImageId::new(name).unwrap()
}

fn node(dir: &Path, url: &str, node_url: &str) -> ImageCache {
    let config = CacheConfig::new(dir)
        .worker_self_reference_url(node_url)
        .centralized_db(DatabaseUrl::parse(url).unwrap());
    ImageCache::open(config).unwrap()
}

fn fill(cache: &ImageCache, name: &str, len: usize) {
    let mut fill = cache
        .begin_fill(&id(name), Expected::default().size(len as u64))
        .unwrap();
    fill.write(&vec![7u8; len]).unwrap();
    fill.finish().unwrap();
}

/// The value of the unlabelled gauge `name` in a metrics text.
fn gauge(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in:\n{metrics}"))
        .parse()
        .unwrap()
}

async fn hit(cache: &ImageCache, name: &str) {
    let mut reader = cache.open_for_read(&id(name)).unwrap().expect("cached");
    while let Some(chunk) = reader.next_chunk().await {
        chunk.unwrap();
    }
}

/// Waits until each node has finished a round with the database: each then knows where the
/// fleet's evictions start, so it hears of every deletion announced after this.
async fn rounds_done(nodes: &[&ImageCache]) {
    eventually("every node's first round with the database", async || {
        nodes
            .iter()
            .all(|node| node.fleet_reachable() == Some(true))
    })
    .await;
}

/// The rounds with the database that `cache` saw fail, from its metrics.
fn failed_rounds(cache: &ImageCache) -> f64 {
    let metrics = cache.render_metrics().unwrap();
    gauge(&metrics, "image_cache_central_database_failed_rounds_total")
}

async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Commits, hits and deletes reach the node's rows; a row of another node (a Glance API node
/// sharing the database) is never touched; a stale row of this node is removed at start.
async fn rows_follow_the_node(server: Server) {
    let Some(db) = TestDb::create(server).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The tables as Glance's migration makes them, with a Glance node's row and a row this node
    // left behind (its image is gone from its disk).
    let first = node(&dir.path().join("seed"), &db.url, "http://seed:1");
    eventually("the tables", async || db.nodes().await.len() == 1).await;
    drop(first);
    let t = "'2026-01-01 00:00:00'";
    db.execute("INSERT INTO node_reference (node_reference_url) VALUES ('http://glance:9292')")
        .await;
    db.execute("INSERT INTO node_reference (node_reference_url) VALUES ('http://node-a:9292')")
        .await;
    for (image, node) in [
        ("theirs", "http://glance:9292"),
        ("stale", "http://node-a:9292"),
    ] {
        db.execute(&format!(
            "INSERT INTO cached_images (image_id, last_accessed, last_modified, size, hits, \
             checksum, node_reference_id) SELECT '{image}', {t}, {t}, 5, 2, NULL, \
             node_reference_id FROM node_reference WHERE node_reference_url = '{node}'"
        ))
        .await;
    }

    let a = node(&dir.path().join("a"), &db.url, "http://node-a:9292");
    db.wait_rows(&[("http://glance:9292", "theirs", 2, 5)])
        .await;
    fill(&a, "one", 10);
    fill(&a, "two", 20);
    db.wait_rows(&[
        ("http://glance:9292", "theirs", 2, 5),
        ("http://node-a:9292", "one", 0, 10),
        ("http://node-a:9292", "two", 0, 20),
    ])
    .await;
    hit(&a, "one").await;
    hit(&a, "one").await;
    a.delete_cached_image(&id("two")).unwrap();
    db.wait_rows(&[
        ("http://glance:9292", "theirs", 2, 5),
        ("http://node-a:9292", "one", 2, 10),
    ])
    .await;

    // The fleet view, from the node.
    let fleet = a.fleet().expect("a centralized node has a fleet");
    assert_eq!(fleet.this_node(), Some("http://node-a:9292"));
    assert_eq!(
        fleet.nodes_caching(&id("one")).await.unwrap(),
        ["http://node-a:9292"]
    );
    assert_eq!(
        fleet.nodes_caching(&id("theirs")).await.unwrap(),
        ["http://glance:9292"]
    );
    assert!(fleet.nodes_caching(&id("nobody")).await.unwrap().is_empty());
    let listed: Vec<(String, String)> = fleet
        .cached_images()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.node_url, i.image_id))
        .collect();
    assert_eq!(
        listed,
        [
            ("http://glance:9292".into(), "theirs".into()),
            ("http://node-a:9292".into(), "one".into())
        ]
    );
    // Delete-all and prune leave other nodes' rows.
    a.delete_all_cached_images().unwrap();
    db.wait_rows(&[("http://glance:9292", "theirs", 2, 5)])
        .await;

    // A decommissioned node is forgotten, its rows with it.
    let removed = fleet.forget_node("http://glance:9292").await.unwrap();
    assert_eq!(removed, Some(1));
    assert_eq!(fleet.forget_node("http://glance:9292").await.unwrap(), None);
    assert_eq!(db.nodes().await, ["http://node-a:9292", "http://seed:1"]);
}

on_servers!(rows_follow_the_node {
    Postgres => rows_follow_the_node_on_postgresql,
    MariaDb => rows_follow_the_node_on_mariadb,
    Sqlite => rows_follow_the_node_on_sqlite,
});

/// A node moved from `sled` to `centralized_db` brings its entries, hits and times along.
async fn a_sled_node_moves_onto_the_central_index(server: Server) {
    let logs = logs();
    let _print = PrintOnPanic(logs);
    let Some(db) = TestDb::create(server).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let cache = ImageCache::open(CacheConfig::new(dir.path())).unwrap();
        fill(&cache, "kept", 100);
        fill(&cache, "also", 50);
        for _ in 0..3 {
            hit(&cache, "kept").await;
        }
        cache.flush_hits().unwrap();
        cache.cached_images()
    };
    let cache = node(dir.path(), &db.url, "http://moved:9292");
    assert_eq!(
        cache.cached_images(),
        before,
        "the local entries are kept as they were"
    );
    db.wait_rows(&[
        ("http://moved:9292", "also", 0, 50),
        ("http://moved:9292", "kept", 3, 100),
    ])
    .await;
    let fleet = cache.fleet().unwrap();
    let rows = fleet.cached_images().await.unwrap();
    for (row, local) in rows.iter().zip(&before) {
        assert_eq!(row.image_id, local.image_id);
        // MySQL's DATETIME keeps whole seconds.
        assert!(
            (row.last_accessed - local.last_accessed).abs() < 1.0,
            "{row:?} {local:?}"
        );
        assert!(
            (row.last_modified - local.last_modified).abs() < 1.0,
            "{row:?} {local:?}"
        );
    }
}

on_servers!(a_sled_node_moves_onto_the_central_index {
    Postgres => a_sled_node_moves_onto_postgresql,
    MariaDb => a_sled_node_moves_onto_mariadb,
    Sqlite => a_sled_node_moves_onto_sqlite,
});

/// The database goes away (every connection cut, new ones refused) while the node works: hits,
/// fills and deletes go on, the outage is logged once, and once the database is back the rows
/// equal what the node holds.
async fn an_outage_is_survived_and_converged(server: Server) {
    let logs = logs();
    let Some(db) = TestDb::create(server).await else {
        return;
    };
    let proxy = DbProxy::start(server).await;
    let url = db.url_via(proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let cache = node(dir.path(), &url, "http://outage:9292");
    fill(&cache, "before", 10);
    fill(&cache, "doomed", 10);
    db.wait_rows(&[
        ("http://outage:9292", "before", 0, 10),
        ("http://outage:9292", "doomed", 0, 10),
    ])
    .await;

    let failed_before = failed_rounds(&cache);
    proxy.cut();
    fill(&cache, "during", 30);
    hit(&cache, "before").await;
    hit(&cache, "during").await;
    hit(&cache, "during").await;
    cache.delete_cached_image(&id("doomed")).unwrap();
    cache.flush_hits().unwrap();
    // Several rounds fail meanwhile (with backoff: 1 s, then 2 s, ...), and the changes wait.
    eventually("three failed rounds and 3 s of lag", async || {
        let metrics = cache.render_metrics().unwrap();
        failed_rounds(&cache) >= failed_before + 3.0
            && gauge(&metrics, "image_cache_replication_lag_seconds") >= 3.0
    })
    .await;
    assert!(cache.is_cached(&id("during")));
    assert_eq!(cache.fleet_reachable(), Some(false));
    // The metrics an alert reads: the database down, the changes waiting for seconds.
    let metrics = cache.render_metrics().unwrap();
    assert!(
        metrics.contains("image_cache_central_database_up 0\n"),
        "{metrics}"
    );
    let lag = gauge(&metrics, "image_cache_replication_lag_seconds");
    assert!(
        lag >= 3.0,
        "lag {lag} s after three failed rounds:\n{metrics}"
    );
    let port = format!(":{}/", proxy.port);
    let said = logs.text();
    let outages = said
        .lines()
        .filter(|line| line.contains("unreachable") && line.contains(&port))
        .count();
    assert_eq!(outages, 1, "the outage is logged once:\n{said}");
    // Rows as they were before the outage.
    assert_eq!(db.rows().await.len(), 2);

    proxy.restore();
    db.wait_rows(&[
        ("http://outage:9292", "before", 1, 10),
        ("http://outage:9292", "during", 2, 30),
    ])
    .await;
    eventually("reachable again", async || {
        cache.fleet_reachable() == Some(true)
    })
    .await;
    eventually("the lag back to zero", async || {
        let metrics = cache.render_metrics().unwrap();
        metrics.contains("image_cache_central_database_up 1\n")
            && gauge(&metrics, "image_cache_replication_lag_seconds") == 0.0
    })
    .await;
    let said = logs.text();
    assert!(
        said.lines().any(|line| line.contains("reachable again")),
        "the return is logged:\n{said}"
    );
}

on_servers!(an_outage_is_survived_and_converged {
    Postgres => an_outage_of_postgresql_is_survived_and_converged,
    MariaDb => an_outage_of_mariadb_is_survived_and_converged,
});

/// A node started while its database is down serves at once, and joins when it comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_while_the_database_is_down() {
    let Some(db) = TestDb::create(Server::Postgres).await else {
        return;
    };
    let proxy = DbProxy::start(Server::Postgres).await;
    proxy.cut();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let cache = node(dir.path(), &db.url_via(proxy.port), "http://early:9292");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the start waited on the database"
    );
    fill(&cache, "early", 10);
    hit(&cache, "early").await;
    proxy.restore();
    db.wait_rows(&[("http://early:9292", "early", 1, 10)]).await;
}

/// A node asked about its fleet before its first round has reached a fresh database makes the
/// tables itself: the answer is an empty list, not a missing table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_query_before_the_first_round_finds_the_tables() {
    let Some(db) = TestDb::create(Server::Postgres).await else {
        return;
    };
    let proxy = DbProxy::start(Server::Postgres).await;
    proxy.cut();
    let dir = tempfile::tempdir().unwrap();
    let cache = node(dir.path(), &db.url_via(proxy.port), "http://early:9292");
    // The node's attempts fail at once (the proxy drops them), at about 0 s, 1 s and 3 s; the
    // next one waits 4 s. Restore right after the third, and ask.
    eventually("three failed rounds", async || failed_rounds(&cache) >= 3.0).await;
    proxy.restore();
    let fleet = cache.fleet().unwrap();
    assert_eq!(fleet.nodes_caching(&id("any")).await, Ok(vec![]));
    assert_eq!(
        cache.fleet_reachable(),
        Some(false),
        "the node's own round came first: this test proves nothing on this machine"
    );
    // The tables are there (this fails on a missing one); the node is not registered yet.
    db.execute("SELECT 1 FROM cached_images WHERE 1 = 0").await;
    assert!(db.nodes().await.is_empty());
    eventually("the node registers", async || {
        db.nodes().await == ["http://early:9292"]
    })
    .await;
}

/// An image deleted through one node leaves every other node, files and rows.
async fn deleted_images_leave_every_node(server: Server) {
    let Some(db) = TestDb::create(server).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let one = node(&dir.path().join("1"), &db.url, "http://n1:9292");
    let two = node(&dir.path().join("2"), &db.url, "http://n2:9292");
    let three = node(&dir.path().join("3"), &db.url, "http://n3:9292");
    fill(&one, "x", 10);
    fill(&two, "x", 10);
    fill(&two, "y", 10);
    db.wait_rows(&[
        ("http://n1:9292", "x", 0, 10),
        ("http://n2:9292", "x", 0, 10),
        ("http://n2:9292", "y", 0, 10),
    ])
    .await;
    rounds_done(&[&one, &two, &three]).await;
    let deleted = Instant::now();
    assert!(
        !three.image_deleted(&id("x")).unwrap(),
        "node 3 did not hold it"
    );
    db.wait_rows(&[("http://n2:9292", "y", 0, 10)]).await;
    let took = deleted.elapsed();
    assert!(!one.is_cached(&id("x")) && !two.is_cached(&id("x")));
    // A node removes the record, then the file; its row may leave the database in between.
    eventually("the files of the deleted image go", async || {
        !dir.path().join("1/x").exists() && !dir.path().join("2/x").exists()
    })
    .await;
    assert!(two.is_cached(&id("y")));
    println!(
        "{}: evicted from the other nodes in {took:?}",
        server.name()
    );
}

on_servers!(deleted_images_leave_every_node {
    Postgres => deleted_images_leave_every_node_on_postgresql,
    MariaDb => deleted_images_leave_every_node_on_mariadb,
    Sqlite => deleted_images_leave_every_node_on_sqlite,
});

/// A tool connects to the fleet's database by URL; an unreachable one is an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_reads_the_fleet_by_url() {
    let Some(db) = TestDb::create(Server::Sqlite).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = node(dir.path(), &db.url, "http://tool:9292");
    fill(&cache, "seen", 10);
    db.wait_rows(&[("http://tool:9292", "seen", 0, 10)]).await;
    let fleet = Fleet::connect(&DatabaseUrl::parse(&db.url).unwrap()).unwrap();
    assert_eq!(fleet.nodes().await.unwrap(), ["http://tool:9292"]);
    assert_eq!(fleet.cached_images().await.unwrap().len(), 1);

    let nowhere = DatabaseUrl::parse("postgresql://postgres@127.0.0.1:1/none").unwrap();
    let err = Fleet::connect(&nowhere)
        .unwrap()
        .nodes()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("postgres://postgres@127.0.0.1:1/none") && err.contains("failed"),
        "{err}"
    );
}

/// 200 downloads a second from one node's cache for 10 s: the database sees a few batched
/// statements a second, not one per hit, and the final `hits` equals the deliveries.
async fn hits_are_written_in_batches(server: Server) {
    use common::{cache_status, image_data, FakeImage, TestServer, OWNER};

    let Some(db) = TestDb::create(server).await else {
        return;
    };
    let proxy = DbProxy::start(server).await;
    let url = db.url_via(proxy.port);
    let node_url = "http://busy:9292";
    let test = TestServer::start_with(|dir| node(dir, &url, node_url)).await;
    test.api.add("hot", FakeImage::private(image_data(4096)));
    let filled = test.get("hot", OWNER).await;
    assert_eq!(cache_status(&filled), "MISS");
    filled.bytes().await.unwrap();
    db.wait_rows(&[(node_url, "hot", 0, 4096)]).await;

    let before = proxy.statements();
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(5));
    let mut downloads = Vec::with_capacity(2000);
    for _ in 0..2000 {
        ticks.tick().await;
        let (client, target) = (test.client.clone(), test.url("/v2/images/hot/file"));
        downloads.push(tokio::spawn(async move {
            let response = client
                .get(target)
                .header("x-auth-token", OWNER)
                .send()
                .await
                .ok()?;
            let hit = cache_status(&response) == "HIT";
            let body = response.bytes().await.ok()?;
            Some(hit && body.len() == 4096)
        }));
    }
    let mut delivered = 0i64;
    for download in downloads {
        if download.await.unwrap() == Some(true) {
            delivered += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let statements = proxy.statements() - before;
    db.wait_rows(&[(node_url, "hot", delivered, 4096)]).await;
    println!(
        "{}: {delivered} hits in {elapsed:.1} s ({:.0}/s); the database received {statements} \
         statements ({:.1}/s)",
        server.name(),
        delivered as f64 / elapsed,
        statements as f64 / elapsed
    );
    assert!(
        delivered >= 1900,
        "only {delivered} of 2000 downloads were whole hits"
    );
    // About a write a second and an eviction poll a second; one per hit would be 2,000.
    assert!(
        (statements as f64) < 8.0 * elapsed,
        "{statements} statements in {elapsed:.1} s"
    );
}

on_servers!(hits_are_written_in_batches {
    Postgres => hits_are_written_in_batches_to_postgresql,
    MariaDb => hits_are_written_in_batches_to_mariadb,
});

/// A write the database refuses (here: the node's table dropped under it, as an operator's
/// mistake or a failed migration would) is an outage like any other: the node keeps serving,
/// and its next round makes the table again and converges its rows.
async fn a_failed_write_is_retried_and_converged(server: Server) {
    let Some(db) = TestDb::create(server).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = node(dir.path(), &db.url, "http://refused:9292");
    fill(&cache, "first", 10);
    db.wait_rows(&[("http://refused:9292", "first", 0, 10)])
        .await;

    db.execute("DROP TABLE cached_images").await;
    fill(&cache, "second", 20);
    hit(&cache, "first").await;
    cache.flush_hits().unwrap();
    assert!(cache.is_cached(&id("second")));
    db.wait_rows(&[
        ("http://refused:9292", "first", 1, 10),
        ("http://refused:9292", "second", 0, 20),
    ])
    .await;
}

on_servers!(a_failed_write_is_retried_and_converged {
    Postgres => a_failed_write_to_postgresql_is_retried_and_converged,
    MariaDb => a_failed_write_to_mariadb_is_retried_and_converged,
});

/// One id longer than Glance's tables hold (ids up to 255 characters are valid here) never
/// stops replication: the other rows are written, and deletions announced.
async fn a_long_id_never_stops_replication(server: Server) {
    let Some(db) = TestDb::create(server).await else {
        return;
    };
    let _print = PrintOnPanic(logs());
    let dir = tempfile::tempdir().unwrap();
    let one = node(&dir.path().join("1"), &db.url, "http://n1:9292");
    let two = node(&dir.path().join("2"), &db.url, "http://n2:9292");
    let long = "l".repeat(200);
    fill(&one, &long, 10);
    fill(&one, "ok", 10);
    fill(&two, "gone", 10);
    db.wait_rows(&[
        ("http://n1:9292", "ok", 0, 10),
        ("http://n2:9292", "gone", 0, 10),
    ])
    .await;
    assert!(one.is_cached(&id(&long)), "cached here all the same");
    rounds_done(&[&one, &two]).await;
    // The node holding the long id announces a deletion: the other node hears of it.
    one.image_deleted(&id("gone")).unwrap();
    one.image_deleted(&id(&long)).unwrap();
    db.wait_rows(&[("http://n1:9292", "ok", 0, 10)]).await;
    eventually("node 2 evicts the deleted image", async || {
        !two.is_cached(&id("gone"))
    })
    .await;
    assert!(logs()
        .text()
        .contains("longer than Glance's central tables hold"));
}

on_servers!(a_long_id_never_stops_replication {
    Postgres => a_long_id_never_stops_replication_on_postgresql,
    MariaDb => a_long_id_never_stops_replication_on_mariadb,
});

/// A delete announced by another node voids the access decisions this node remembered for the
/// image: the next download asks the image API again instead of trusting the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_announced_by_the_fleet_voids_remembered_decisions() {
    use common::{image_data, metric, FakeImage, TestServer, OWNER};
    let Some(db) = TestDb::create(Server::Sqlite).await else {
        return;
    };
    let url = db.url.clone();
    let a = TestServer::start_with_layer(
        move |dir| node(dir, &url, "http://a:9292"),
        tower_image_cache::InnerMetadata::new(),
        |layer| layer.authorization_cache_time(Some(Duration::from_secs(300))),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let b = node(dir.path(), &db.url, "http://b:9292");
    a.api.add("img", FakeImage::private(image_data(50_000)));
    let decided = |text: &str, how: &str| {
        metric(
            text,
            &format!("image_cache_authorization_decisions_total{{decision=\"{how}\"}}"),
        )
    };
    a.get("img", OWNER).await.bytes().await.unwrap();
    a.cache.idle().await;
    assert_eq!(common::cache_status(&a.get("img", OWNER).await), "HIT");
    let text = a.cache.render_metrics().unwrap();
    assert_eq!(
        (decided(&text, "asked"), decided(&text, "remembered")),
        (1, 1),
        "{text}"
    );
    db.wait_rows(&[("http://a:9292", "img", 1, 50_000)]).await;
    rounds_done(&[&a.cache, &b]).await;

    b.image_deleted(&id("img")).unwrap();
    eventually("node a evicts the image", async || {
        !a.cache.is_cached(&id("img"))
    })
    .await;
    a.get("img", OWNER).await.bytes().await.unwrap();
    let text = a.cache.render_metrics().unwrap();
    assert_eq!(
        (decided(&text, "asked"), decided(&text, "remembered")),
        (2, 1),
        "the decision made before the fleet's delete was used: {text}"
    );
}
