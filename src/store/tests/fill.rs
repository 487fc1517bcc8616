//! The fill cycle: verification, rollback, one fill per image, deletes during a fill.

use super::*;

#[test]
fn open_creates_the_layout_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "img", b"some bytes");
    assert_eq!(
        names(dir.path()),
        ["cache.db", "img", "incomplete", "invalid"]
    );
    assert!(names(&dir.path().join("incomplete")).is_empty());
}

#[test]
fn a_verified_fill_is_committed_with_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let record = fill(&cache, "img", b"hello world");
    assert_eq!(record.size, 11);
    assert_eq!(record.hits, 0);
    assert_eq!(record.last_accessed, record.last_modified);
    assert_eq!(
        record.checksum.as_deref(),
        Some(md5_hex(b"hello world").as_str())
    );
    assert!(cache.is_cached(&id("img")));
    assert_eq!(
        std::fs::read(dir.path().join("img")).unwrap(),
        b"hello world"
    );
    assert_eq!(cache.size(), 11);
    assert_eq!(cache.cached_images(), vec![record]);
}

#[test]
fn checksum_mismatch_moves_the_file_to_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let mut writer = cache
        .begin_fill(&id("img"), Expected::default().md5_hex(md5_hex(b"other")))
        .unwrap();
    writer.write(b"data").unwrap();
    let err = writer.finish().unwrap_err();
    assert!(
        matches!(
            err,
            FillError::Verification(Verification { what: "md5", .. })
        ),
        "{err}"
    );
    assert!(!cache.is_cached(&id("img")));
    assert!(!dir.path().join("img").exists());
    assert_eq!(
        std::fs::read(dir.path().join("invalid/img")).unwrap(),
        b"data"
    );
    assert!(!dir.path().join("incomplete/img").exists());
}

#[test]
fn wrong_length_is_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let mut writer = cache
        .begin_fill(&id("img"), Expected::default().size(10))
        .unwrap();
    writer.write(b"short").unwrap();
    let err = writer.finish().unwrap_err();
    assert!(
        matches!(
            err,
            FillError::Verification(Verification { what: "size", .. })
        ),
        "{err}"
    );
    assert!(!cache.is_cached(&id("img")));
    assert!(dir.path().join("invalid/img").exists());
}

#[test]
fn sha512_is_verified_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let good = hex::encode(sha2::Sha512::digest(b"data"));
    let mut writer = cache
        .begin_fill(
            &id("good"),
            Expected::default().sha512_hex(good.to_uppercase()),
        )
        .unwrap();
    writer.write(b"data").unwrap();
    writer.finish().unwrap();
    assert!(cache.is_cached(&id("good")));

    let bad = hex::encode(sha2::Sha512::digest(b"atad"));
    let mut writer = cache
        .begin_fill(&id("bad"), Expected::default().sha512_hex(bad))
        .unwrap();
    writer.write(b"data").unwrap();
    let err = writer.finish().unwrap_err();
    assert!(
        matches!(
            err,
            FillError::Verification(Verification { what: "sha512", .. })
        ),
        "{err}"
    );
    assert!(!cache.is_cached(&id("bad")));
}

/// Fills `bytes` as `name` expecting `expected`; whether it was committed, or the verification
/// that failed.
fn fill_expecting(
    cache: &ImageCache,
    name: &str,
    expected: Expected,
    bytes: &[u8],
) -> Result<CachedImage, FillError> {
    let mut writer = cache.begin_fill(&id(name), expected)?;
    writer.write(bytes).unwrap();
    writer.finish()
}

#[test]
fn each_multihash_algorithm_verifies_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let digests: [(&str, Vec<u8>, Vec<u8>); 5] = [
        (
            "sha512",
            sha2::Sha512::digest(b"data").to_vec(),
            sha2::Sha512::digest(b"atad").to_vec(),
        ),
        (
            "SHA384",
            sha2::Sha384::digest(b"data").to_vec(),
            sha2::Sha384::digest(b"atad").to_vec(),
        ),
        (
            "sha256",
            sha2::Sha256::digest(b"data").to_vec(),
            sha2::Sha256::digest(b"atad").to_vec(),
        ),
        (
            "sha1",
            sha1::Sha1::digest(b"data").to_vec(),
            sha1::Sha1::digest(b"atad").to_vec(),
        ),
        (
            "md5",
            md5::Md5::digest(b"data").to_vec(),
            md5::Md5::digest(b"atad").to_vec(),
        ),
    ];
    let md5 = md5_hex(b"data");
    for (algorithm, good, bad) in digests {
        let good_name = format!("good-{}", algorithm.to_lowercase());
        let expected = Expected::default().os_hash(algorithm, hex::encode(good));
        let record = fill_expecting(&cache, &good_name, expected.md5_hex(&md5), b"data").unwrap();
        assert_eq!(
            record.checksum.as_deref(),
            Some(md5.as_str()),
            "{algorithm}"
        );

        let bad_name = format!("bad-{}", algorithm.to_lowercase());
        let expected = Expected::default().os_hash(algorithm, hex::encode(bad));
        let err = fill_expecting(&cache, &bad_name, expected, b"data").unwrap_err();
        let FillError::Verification(mismatch) = err else {
            panic!("{algorithm}: {err}");
        };
        assert_eq!(mismatch.what, algorithm.to_lowercase());
        assert!(!cache.is_cached(&id(&bad_name)));
        assert!(dir.path().join("invalid").join(&bad_name).exists());
    }
}

#[test]
fn with_a_multihash_and_an_md5_the_multihash_decides() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let sha512 = hex::encode(sha2::Sha512::digest(b"data"));
    let wrong_sha512 = hex::encode(sha2::Sha512::digest(b"atad"));
    let md5 = md5_hex(b"data");

    // A right MD5 does not save a wrong multihash.
    let expected = Expected::default().md5_hex(&md5).sha512_hex(wrong_sha512);
    let err = fill_expecting(&cache, "wrong-multihash", expected, b"data").unwrap_err();
    assert!(
        matches!(
            err,
            FillError::Verification(Verification { what: "sha512", .. })
        ),
        "{err}"
    );
    // The multihash verifies the bytes; the MD5 is only the checksum the record keeps.
    let expected = Expected::default().md5_hex(&md5).sha512_hex(&sha512);
    let record = fill_expecting(&cache, "both-right", expected, b"data").unwrap();
    assert_eq!(record.checksum.as_deref(), Some(md5.as_str()));
    // Without any MD5 given, the record has no checksum rather than one computed for nothing.
    let record = fill_expecting(
        &cache,
        "no-md5",
        Expected::default().sha512_hex(&sha512),
        b"data",
    )
    .unwrap();
    assert_eq!(record.checksum, None);
}

#[test]
fn an_unknown_multihash_algorithm_is_not_filled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let expected = Expected::default()
        .md5_hex(md5_hex(b"data"))
        .os_hash("blake3", "00");
    let err = fill_expecting(&cache, "img", expected, b"data").unwrap_err();
    assert!(
        matches!(&err, FillError::UnknownHashAlgorithm(a) if a == "blake3"),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("\"blake3\" is not one the cache can verify"));
    assert!(!cache.is_cached(&id("img")));
    assert!(!cache.is_filling(&id("img")));
    assert!(names(&dir.path().join("incomplete")).is_empty());
}

#[test]
fn a_dropped_fill_rolls_back_and_frees_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let mut writer = cache.begin_fill(&id("img"), Expected::default()).unwrap();
    writer.write(b"part").unwrap();
    assert!(cache.is_filling(&id("img")));
    assert_eq!(
        cache.fills_in_progress(),
        vec![FillProgress {
            image_id: id("img"),
            bytes_written: 4,
            expected_size: None
        }]
    );
    drop(writer);
    assert!(!cache.is_filling(&id("img")));
    assert!(!cache.is_cached(&id("img")));
    assert!(dir.path().join("invalid/img").exists());
    assert!(!dir.path().join("incomplete/img").exists());
    fill(&cache, "img", b"whole");
    assert!(cache.is_cached(&id("img")));
}

#[test]
fn only_one_fill_per_image_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let _first = cache.begin_fill(&id("img"), Expected::default()).unwrap();
    let second = cache.begin_fill(&id("img"), Expected::default());
    assert!(matches!(second, Err(FillError::AlreadyFilling)));
    assert!(cache.begin_fill(&id("other"), Expected::default()).is_ok());
}

#[test]
fn a_cached_image_is_not_filled_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "img", b"x");
    assert!(matches!(
        cache.begin_fill(&id("img"), Expected::default()),
        Err(FillError::AlreadyCached)
    ));
}

#[test]
fn an_image_larger_than_the_cache_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ImageCache::open(CacheConfig::new(dir.path()).image_cache_max_size(10)).unwrap();
    let err = cache
        .begin_fill(&id("img"), Expected::default().size(11))
        .unwrap_err();
    assert!(matches!(
        err,
        FillError::TooLarge {
            size: 11,
            max_size: 10
        }
    ));
    assert!(names(&dir.path().join("incomplete")).is_empty());
}

#[test]
fn a_delete_during_a_fill_stops_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    let mut writer = cache.begin_fill(&id("img"), Expected::default()).unwrap();
    writer.write(b"part").unwrap();
    assert!(!cache.delete_cached_image(&id("img")).unwrap());
    assert!(matches!(writer.finish(), Err(FillError::Cancelled)));
    assert!(!cache.is_cached(&id("img")));
    assert!(!dir.path().join("img").exists());
    assert!(!dir.path().join("incomplete/img").exists());
}

#[test]
fn delete_removes_file_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path());
    fill(&cache, "a", b"aaa");
    fill(&cache, "b", b"bbb");
    assert!(cache.delete_cached_image(&id("a")).unwrap());
    assert!(!cache.delete_cached_image(&id("a")).unwrap());
    assert!(!dir.path().join("a").exists());
    assert_eq!(cache.delete_all_cached_images().unwrap(), 1);
    assert!(cache.cached_images().is_empty());
    assert_eq!(names(dir.path()), ["cache.db", "incomplete", "invalid"]);
    drop(cache);
    assert!(open(dir.path()).cached_images().is_empty());
}
