//! `image-cache-server`: a caching node in front of an image API (Glance). See
//! `docs/operators.md`.

/// mimalloc rather than glibc's malloc: under many small hits, glibc's arena locks and
/// consolidation took about a fifth of the node's CPU (`perf record -g`, `wrk -c16` of 4 KiB).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    image_cache_server::node::main()
}
