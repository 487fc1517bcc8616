//! The digests that verify fills, from the fastest implementation at hand: the system's OpenSSL
//! libcrypto with the `openssl` feature; otherwise ring (assembly) for SHA-256, SHA-384 and
//! SHA-512, and RustCrypto for MD5 (ring has none) and SHA-1 (RustCrypto's uses the CPU's SHA
//! extensions: four times ring's here). `benches/digests.rs` measured the choice.

use md5::{Digest, Md5};

/// The hash algorithms a fill can be verified with: those of Glance's `hashing_algorithm`
/// (`os_hash_algo`) the cache knows, and MD5 (Glance's `checksum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HashAlgorithm {
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    /// The algorithm `os_hash_algo` names (in any case), if the cache knows it.
    pub(crate) fn named(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "md5" => HashAlgorithm::Md5,
            "sha1" => HashAlgorithm::Sha1,
            "sha256" => HashAlgorithm::Sha256,
            "sha384" => HashAlgorithm::Sha384,
            "sha512" => HashAlgorithm::Sha512,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Md5 => "md5",
            HashAlgorithm::Sha1 => "sha1",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    /// A running digest of this algorithm.
    pub(crate) fn hasher(self) -> Hasher {
        #[cfg(feature = "openssl")]
        match openssl::hash::Hasher::new(self.openssl()) {
            Ok(hasher) => return Hasher::OpenSsl(hasher, true),
            // An algorithm the system's libcrypto refuses (MD5 under FIPS): the crates' own.
            Err(err) => {
                tracing::debug!(algorithm = self.name(), %err, "OpenSSL refused a digest");
            }
        }
        match self {
            HashAlgorithm::Md5 => Hasher::Md5(Md5::new()),
            HashAlgorithm::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlgorithm::Sha256 => {
                Hasher::Ring(ring::digest::Context::new(&ring::digest::SHA256))
            }
            HashAlgorithm::Sha384 => {
                Hasher::Ring(ring::digest::Context::new(&ring::digest::SHA384))
            }
            HashAlgorithm::Sha512 => {
                Hasher::Ring(ring::digest::Context::new(&ring::digest::SHA512))
            }
        }
    }

    #[cfg(feature = "openssl")]
    fn openssl(self) -> openssl::hash::MessageDigest {
        use openssl::hash::MessageDigest;
        match self {
            HashAlgorithm::Md5 => MessageDigest::md5(),
            HashAlgorithm::Sha1 => MessageDigest::sha1(),
            HashAlgorithm::Sha256 => MessageDigest::sha256(),
            HashAlgorithm::Sha384 => MessageDigest::sha384(),
            HashAlgorithm::Sha512 => MessageDigest::sha512(),
        }
    }
}

/// One running digest.
pub(crate) enum Hasher {
    Md5(Md5),
    Sha1(sha1::Sha1),
    Ring(ring::digest::Context),
    /// The context, and whether every update went through.
    #[cfg(feature = "openssl")]
    OpenSsl(openssl::hash::Hasher, bool),
}

impl Hasher {
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(chunk),
            Hasher::Sha1(h) => h.update(chunk),
            Hasher::Ring(h) => h.update(chunk),
            #[cfg(feature = "openssl")]
            Hasher::OpenSsl(h, ok) => *ok = *ok && h.update(chunk).is_ok(),
        }
    }

    /// The digest; `None` when the implementation failed.
    pub(crate) fn finalize(self) -> Option<Vec<u8>> {
        match self {
            Hasher::Md5(h) => Some(h.finalize().to_vec()),
            Hasher::Sha1(h) => Some(h.finalize().to_vec()),
            Hasher::Ring(h) => Some(h.finish().as_ref().to_vec()),
            #[cfg(feature = "openssl")]
            Hasher::OpenSsl(mut h, ok) => ok.then(|| h.finish().ok().map(|d| d.to_vec()))?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every backend this build has, against RustCrypto's digests as the reference, over bytes
    /// fed in uneven pieces.
    #[test]
    fn each_backend_gives_the_reference_digest() {
        use sha2::Digest as _;
        let data: Vec<u8> = (0..3_000_017u32).map(|i| (i * 7 % 251) as u8).collect();
        let reference = |algorithm| match algorithm {
            HashAlgorithm::Md5 => Md5::digest(&data).to_vec(),
            HashAlgorithm::Sha1 => sha1::Sha1::digest(&data).to_vec(),
            HashAlgorithm::Sha256 => sha2::Sha256::digest(&data).to_vec(),
            HashAlgorithm::Sha384 => sha2::Sha384::digest(&data).to_vec(),
            HashAlgorithm::Sha512 => sha2::Sha512::digest(&data).to_vec(),
        };
        let ring = |algorithm: &'static ring::digest::Algorithm| {
            Hasher::Ring(ring::digest::Context::new(algorithm))
        };
        let all = [
            HashAlgorithm::Md5,
            HashAlgorithm::Sha1,
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha512,
        ];
        for algorithm in all {
            let mut backends = vec![("chosen", algorithm.hasher())];
            backends.push(match algorithm {
                HashAlgorithm::Md5 => ("rustcrypto", Hasher::Md5(Md5::new())),
                HashAlgorithm::Sha1 => ("rustcrypto", Hasher::Sha1(sha1::Sha1::new())),
                HashAlgorithm::Sha256 => ("ring", ring(&ring::digest::SHA256)),
                HashAlgorithm::Sha384 => ("ring", ring(&ring::digest::SHA384)),
                HashAlgorithm::Sha512 => ("ring", ring(&ring::digest::SHA512)),
            });
            #[cfg(feature = "openssl")]
            backends.push((
                "openssl",
                Hasher::OpenSsl(
                    openssl::hash::Hasher::new(algorithm.openssl()).unwrap(),
                    true,
                ),
            ));
            for (name, mut hasher) in backends {
                for piece in data.chunks(65_521) {
                    hasher.update(piece);
                }
                assert_eq!(
                    hasher.finalize(),
                    Some(reference(algorithm)),
                    "{name} {}",
                    algorithm.name()
                );
            }
        }
    }
}
