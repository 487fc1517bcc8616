//! The authorization matrix: for every caller × image state × cache state, the cache answers
//! exactly what the wrapped service alone would (status, and the bytes when 200).

mod common;

use std::sync::Arc;

use common::*;
use tokio::sync::Semaphore;

const CALLERS: [&str; 5] = [ADMIN, OWNER, OTHER, "", "forged-token"];

#[derive(Debug, Clone, Copy, PartialEq)]
enum ImageState {
    Public,
    Private,
    Deactivated,
    Deleted,
    DeletedWhileFilling,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CacheState {
    Cold,
    Filling,
    Cached,
}

/// The same fake API served without the cache, for the reference answers.
async fn serve_direct(api: &Arc<FakeApi>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = api.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn answer(
    client: &reqwest::Client,
    base: &str,
    image: &str,
    token: &str,
) -> (u16, Option<bytes::Bytes>) {
    let mut request = client.get(format!("{base}/v2/images/{image}/file"));
    if !token.is_empty() {
        request = request.header("x-auth-token", token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (status, (status == 200).then_some(body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_answers_as_the_api_would_for_every_caller_image_and_cache_state() {
    let server = TestServer::start().await;
    let direct = serve_direct(&server.api).await;
    let client = reqwest::Client::new();
    let cached_base = server.url("");
    let states = [
        ImageState::Public,
        ImageState::Private,
        ImageState::Deactivated,
        ImageState::Deleted,
        ImageState::DeletedWhileFilling,
    ];
    let mut checked = 0;
    for (n, (image_state, cache_state)) in states
        .iter()
        .flat_map(|i| [CacheState::Cold, CacheState::Filling, CacheState::Cached].map(|c| (*i, c)))
        .enumerate()
    {
        if image_state == ImageState::DeletedWhileFilling && cache_state != CacheState::Filling {
            continue;
        }
        let image = format!("img{n}");
        let data = image_data(300_000 + n);
        let gate = Arc::new(Semaphore::new(if cache_state == CacheState::Filling {
            1
        } else {
            10_000
        }));
        let mut fake = FakeImage::private(data.clone()).behavior(Behavior::Gated(gate.clone()));
        fake.public = image_state == ImageState::Public;
        server.api.add(&image, fake);

        // Bring the cache into its state, as the admin.
        let mut filling = None;
        match cache_state {
            CacheState::Cold => {}
            CacheState::Cached => {
                assert_eq!(answer(&client, &cached_base, &image, ADMIN).await.0, 200);
                server.cache.idle().await;
                assert!(server
                    .cache
                    .is_cached(&tower_image_cache::ImageId::new(&image).unwrap()));
            }
            CacheState::Filling => {
                let leader = server.get(&image, ADMIN).await;
                assert_eq!(cache_status(&leader), "MISS");
                filling = Some(leader);
            }
        }
        match image_state {
            ImageState::Deactivated => server.api.update(&image, |i| i.status = "deactivated"),
            ImageState::Deleted => server.api.update(&image, |i| i.deleted = true),
            ImageState::DeletedWhileFilling => {
                let deleted = client
                    .delete(server.url(&format!("/v2/images/{image}")))
                    .header("x-auth-token", ADMIN)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(deleted.status(), 204);
            }
            ImageState::Public | ImageState::Private => {}
        }

        for caller in CALLERS {
            let (cached, alone) = tokio::join!(
                answer(&client, &cached_base, &image, caller),
                answer(&client, &direct, &image, caller),
                async {
                    tokio::task::yield_now().await;
                    gate.add_permits(10_000);
                }
            )
            .into_tuple2();
            assert_eq!(
                cached.0, alone.0,
                "status for {caller:?} on a {image_state:?} image, cache {cache_state:?}"
            );
            assert_eq!(
                cached.1, alone.1,
                "bytes for {caller:?} on a {image_state:?} image, cache {cache_state:?}"
            );
            checked += 1;
        }
        if let Some(leader) = filling {
            let _ = leader.bytes().await;
        }
        server.cache.idle().await;
        let id = tower_image_cache::ImageId::new(&image).unwrap();
        if image_state == ImageState::DeletedWhileFilling {
            assert!(
                !server.cache.is_cached(&id),
                "a fill of a deleted image never commits"
            );
        }
        if cache_state == CacheState::Cached
            && matches!(image_state, ImageState::Public | ImageState::Private)
        {
            assert_eq!(
                cache_status(&server.get(&image, ADMIN).await),
                "HIT",
                "the cached path was the one tested"
            );
        }
    }
    assert_eq!(checked, 5 * (4 * 3 + 1));
}

/// `tokio::join!` of three gives a triple; the checks want the first two.
trait IntoTuple2<A, B> {
    fn into_tuple2(self) -> (A, B);
}

impl<A, B, C> IntoTuple2<A, B> for (A, B, C) {
    fn into_tuple2(self) -> (A, B) {
        (self.0, self.1)
    }
}
