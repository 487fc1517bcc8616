//! `image-cache-prefetcher`: Fetches the queued images into the image cache.
//!
//! Cron-friendly: reads Glance's configuration files, works directly on `image_cache_dir` when
//! no server holds it and through the local server's management API when one does, prints a
//! one-line summary, and exits non-zero on failure.

fn main() -> std::process::ExitCode {
    image_cache_server::cli::tool_main(image_cache_server::cli::Chore::Prefetch)
}
