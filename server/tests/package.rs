//! The Debian package (`cargo deb -p image-cache-server`): its man pages and completions are the
//! programs' own command lines, and the package installs, runs and goes away cleanly.
//!
//! `UPDATE_PACKAGE_ASSETS=1 cargo test -p image-cache-server --test package` writes `dist/`
//! anew after a change to a program's options.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap_complete::Shell;

const PROGRAMS: [&str; 5] = [
    "image-cache-server",
    "image-cache-manage",
    "image-cache-pruner",
    "image-cache-cleaner",
    "image-cache-prefetcher",
];

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Each file of `dist/` (its path below `dist/`) and what the programs' command lines make it.
fn package_assets() -> Vec<(PathBuf, Vec<u8>)> {
    let mut assets = Vec::new();
    for mut command in image_cache_server::programs() {
        let name = command.get_name().to_owned();
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone())
            .render(&mut page)
            .expect("a man page renders into memory");
        assets.push((PathBuf::from(format!("man/{name}.1")), page));
        for (shell, dir, file) in [
            (Shell::Bash, "bash", name.clone()),
            (Shell::Zsh, "zsh", format!("_{name}")),
            (Shell::Fish, "fish", format!("{name}.fish")),
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, &name, &mut script);
            assets.push((PathBuf::from(format!("completions/{dir}/{file}")), script));
        }
    }
    assets
}

#[test]
fn man_pages_and_completions_are_the_programs_own() {
    let dist = crate_dir().join("dist");
    let update = std::env::var_os("UPDATE_PACKAGE_ASSETS").is_some();
    let assets = package_assets();
    assert_eq!(
        assets.len(),
        PROGRAMS.len() * 4,
        "a man page and three completions each"
    );
    let mut stale = Vec::new();
    for (path, content) in assets {
        let file = dist.join(&path);
        if update {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &content).unwrap();
        } else if std::fs::read(&file).ok().as_deref() != Some(&content[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "server/dist/ is not what the programs' command lines make ({}): run \
         `UPDATE_PACKAGE_ASSETS=1 cargo test -p image-cache-server --test package` and commit it",
        stale.join(", ")
    );
    for program in PROGRAMS {
        let page = std::fs::read_to_string(dist.join(format!("man/{program}.1"))).unwrap();
        assert!(page.contains(".TH image-cache-") && page.contains("\\-\\-version"));
    }
}

/// What is missing to build and install the package here, if anything.
fn missing_tools() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("dpkg -i needs root".into());
    }
    for (tool, install) in [
        ("cargo-deb", "cargo install cargo-deb"),
        ("dpkg", "a Debian system"),
    ] {
        let found = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is missing ({install})"));
        }
    }
    None
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("{command:?} cannot start: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

#[test]
fn the_debian_package_installs_runs_and_is_removed_cleanly() {
    if let Some(why) = missing_tools() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the package test must run in CI: {why}"
        );
        println!("SKIPPED: {why}");
        return;
    }
    assert!(
        !installed("image-cache-server"),
        "image-cache-server is installed on this machine already; this test would replace it"
    );
    // The binaries `cargo test` built, laid out as cargo-deb expects a release build
    // (`target/release/`) in a target directory of the test's own: nothing is compiled again.
    let built = std::env::current_exe().unwrap();
    let profile_dir = built.parent().and_then(Path::parent).unwrap();
    let target = tempfile::tempdir().unwrap();
    std::fs::create_dir(target.path().join("release")).unwrap();
    for program in PROGRAMS {
        let binary = profile_dir.join(program);
        assert!(
            binary.exists(),
            "{} is missing: run `cargo test --all-features` in the workspace's root",
            binary.display()
        );
        std::fs::copy(&binary, target.path().join("release").join(program)).unwrap();
    }
    let deb = target.path().join("image-cache-server.deb");
    run(Command::new("cargo")
        .args(["deb", "-p", "image-cache-server", "--no-build", "--output"])
        .arg(&deb)
        .env("CARGO_TARGET_DIR", target.path())
        .current_dir(crate_dir()));

    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let listing = String::from_utf8_lossy(&listing.stdout);
    let mut expected: Vec<String> = vec![
        "./usr/lib/systemd/system/image-cache-server.service".into(),
        "./usr/lib/sysusers.d/image-cache-server.conf".into(),
        "./etc/image-cache/image-cache-server.conf".into(),
    ];
    for program in PROGRAMS {
        expected.push(format!("./usr/bin/{program}"));
        expected.push(format!("./usr/share/man/man1/{program}.1.gz"));
        expected.push(format!("./usr/share/bash-completion/completions/{program}"));
        expected.push(format!("./usr/share/zsh/vendor-completions/_{program}"));
        expected.push(format!(
            "./usr/share/fish/vendor_completions.d/{program}.fish"
        ));
    }
    for path in &expected {
        assert!(
            listing.lines().any(|line| line.ends_with(path.as_str())),
            "the package lacks {path}:\n{listing}"
        );
    }
    let had_user = user_exists();

    run(Command::new("dpkg").arg("-i").arg(&deb));
    let installed_now = Installed;
    for program in PROGRAMS {
        let version = run(Command::new(format!("/usr/bin/{program}")).arg("--version"));
        let version = String::from_utf8_lossy(&version.stdout);
        assert_eq!(
            version.trim(),
            format!("{program} {}", env!("CARGO_PKG_VERSION"))
        );
    }
    assert!(user_exists(), "the package made its user (sysusers.d)");
    let conf = std::fs::metadata("/etc/image-cache/image-cache-server.conf").unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&conf.permissions()) & 0o777,
        0o640
    );
    // The unit as systemd reads it, where systemd-analyze is installed.
    match Command::new("systemd-analyze")
        .args([
            "verify",
            "/usr/lib/systemd/system/image-cache-server.service",
        ])
        .output()
    {
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "systemd-analyze verify: {stderr}");
            assert!(
                !stderr.contains("image-cache-server.service:"),
                "systemd-analyze verify warns about the unit: {stderr}"
            );
        }
        Err(_) => println!("SKIPPED: the unit's check (systemd-analyze is missing)"),
    }

    drop(installed_now);
    assert!(!installed("image-cache-server"));
    for path in expected {
        let path = Path::new(path.trim_start_matches('.'));
        assert!(!path.exists(), "{} is left after the purge", path.display());
    }
    assert!(!Path::new("/etc/image-cache").exists());
    if !had_user {
        let _ = Command::new("userdel").arg("image-cache").status();
    }
}

fn user_exists() -> bool {
    Command::new("getent")
        .args(["passwd", "image-cache"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The installed package, purged when this is dropped (also when an assertion failed).
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let purged = Command::new("dpkg")
            .args(["--purge", "image-cache-server"])
            .output()
            .expect("dpkg runs");
        assert!(
            purged.status.success() || std::thread::panicking(),
            "dpkg --purge failed: {}",
            String::from_utf8_lossy(&purged.stderr)
        );
    }
}
