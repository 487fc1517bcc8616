//! Hostile input against the caching proxy (`image-cache-server`), over real sockets: the
//! library's suite (`tests/common/hostile.rs`), run against the node.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::example::{start, start_proxy};
use common::hostile::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caching_proxy_refuses_hostile_input() {
    let (upstream_dir, proxy_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let upstream = start(upstream_dir.path(), &["--no-cache"]);
    let proxy = start_proxy(&upstream.url, proxy_dir.path());
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 241) as u8).collect();
    let image = cached_image(&proxy, &upstream.url, &data).await;
    let target = Target {
        name: "caching_proxy",
        addr: addr_of(&proxy),
        server: proxy,
        image,
        data,
    };
    suite(&target, proxy_dir.path(), proxy_dir.path()).await;
    drop(upstream);
}
