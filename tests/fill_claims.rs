//! The fleet's fill claims and zones (`tower_image_cache_fill_claims`,
//! `tower_image_cache_node_zones`) against the real servers: PostgreSQL and MariaDB on this
//! machine, and SQLite files. Without a server (and without `CI`), a test prints `SKIPPED`.
#![cfg(feature = "centralized-db")]

#[path = "common/db.rs"]
#[allow(dead_code)] // the helpers of the other central tests
mod db;

use std::collections::HashMap;
use std::path::Path;

use db::{on_servers, Server, TestDb};
use tower_image_cache::config::DatabaseUrl;
use tower_image_cache::store::{FillClaim, FillScope, Fleet};
use tower_image_cache::{CacheConfig, ImageCache, ImageId};

fn node(dir: &Path, url: &str, node_url: &str) -> ImageCache {
    let config = CacheConfig::new(dir)
        .worker_self_reference_url(node_url)
        .centralized_db(DatabaseUrl::parse(url).unwrap());
    ImageCache::open(config).unwrap()
}

fn zone(name: &str) -> FillScope {
    FillScope::Zone(name.into())
}

async fn claim(fleet: &Fleet, id: &ImageId, scope: &FillScope) -> FillClaim {
    fleet.claim_fill(id, scope).await.unwrap()
}

async fn claims_are_per_scope_and_zones_are_kept(server: Server) {
    let Some(db) = TestDb::create(server).await else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (a_url, b_url) = ("http://10.0.0.1:9292", "http://10.0.1.1:9292");
    let a = node(&work.path().join("a"), &db.url, a_url);
    let b = node(&work.path().join("b"), &db.url, b_url);
    let (a, b) = (a.fleet().unwrap(), b.fleet().unwrap());
    let img = ImageId::new("img").unwrap();
    let theirs = |url: &str| FillClaim::Theirs(url.to_owned());

    // The fleet's read of the backend: one claimant, whoever asks.
    assert_eq!(claim(&a, &img, &FillScope::Fleet).await, FillClaim::Ours);
    assert_eq!(claim(&b, &img, &FillScope::Fleet).await, theirs(a_url));
    assert_eq!(claim(&a, &img, &FillScope::Fleet).await, FillClaim::Ours);
    // A zone's read is claimed apart from it, and apart from other zones'.
    assert_eq!(claim(&b, &img, &zone("edge")).await, FillClaim::Ours);
    assert_eq!(claim(&a, &img, &zone("edge")).await, theirs(b_url));
    assert_eq!(claim(&a, &img, &zone("core")).await, FillClaim::Ours);
    assert_eq!(a.nodes_filling(&img).await.unwrap(), [a_url, b_url]);
    b.renew_fill(&img, &zone("edge")).await.unwrap();

    // Released, a claim is another node's to take; another node's release takes nothing.
    b.release_fill(&img, &FillScope::Fleet).await.unwrap();
    assert_eq!(claim(&b, &img, &FillScope::Fleet).await, theirs(a_url));
    a.release_fill(&img, &FillScope::Fleet).await.unwrap();
    a.release_fill(&img, &zone("core")).await.unwrap();
    assert_eq!(b.nodes_filling(&img).await.unwrap(), [b_url]);
    assert_eq!(claim(&b, &img, &FillScope::Fleet).await, FillClaim::Ours);

    // Zones: set, moved, cleared; a name the table cannot keep is refused with a sentence.
    a.set_zone(Some("core")).await.unwrap();
    b.set_zone(Some("edge")).await.unwrap();
    b.set_zone(Some("edge-2")).await.unwrap();
    let expected: HashMap<String, String> = [(a_url, "core"), (b_url, "edge-2")]
        .into_iter()
        .map(|(url, zone)| (url.to_owned(), zone.to_owned()))
        .collect();
    assert_eq!(a.zones().await.unwrap(), expected);
    b.set_zone(None).await.unwrap();
    assert_eq!(b.zones().await.unwrap().len(), 1);
    let refused = a.set_zone(Some("two words")).await.unwrap_err().to_string();
    assert!(refused.contains("cannot name a zone"), "{refused}");

    // A tool's handle reads, but cannot claim.
    let tool = Fleet::connect(&DatabaseUrl::parse(&db.url).unwrap()).unwrap();
    assert_eq!(tool.nodes_filling(&img).await.unwrap(), [b_url]);
    let refused = tool.claim_fill(&img, &FillScope::Fleet).await.unwrap_err();
    assert!(refused.to_string().contains("a tool cannot"), "{refused}");
}

on_servers!(claims_are_per_scope_and_zones_are_kept {
    Postgres => claims_and_zones_on_postgresql,
    MariaDb => claims_and_zones_on_mariadb,
    Sqlite => claims_and_zones_on_sqlite,
});
