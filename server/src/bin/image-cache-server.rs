//! `image-cache-server`: a caching node in front of an image API (Glance). See
//! `docs/operators.md`.

fn main() -> std::process::ExitCode {
    image_cache_server::node::main()
}
