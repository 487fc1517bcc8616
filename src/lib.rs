//! A local image cache for image APIs, as tower middleware.
#![deny(unsafe_code, unreachable_pub)]
#![warn(missing_docs, rust_2018_idioms)]

pub mod config;
mod image_id;
pub mod store;

pub use config::CacheConfig;
pub use image_id::{ImageId, InvalidImageId};
