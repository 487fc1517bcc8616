//! `image-cache-server`: a caching node in front of an image API (Glance). See
//! `docs/operators.md`.

fn main() -> std::process::ExitCode {
    tower_image_cache::server::main()
}
