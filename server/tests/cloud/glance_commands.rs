//! Glance's own commands, unchanged, against a real Glance 33 and against this crate's example
//! server: `glance cache-*` (python-glanceclient, the cache API) and `glance-cache-manage` (the
//! legacy routes), success and error cases, in one sequence. Each command must exit the same
//! way and print the same thing on both, once ids, times and addresses are replaced by names.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::example;
use crate::common::openstack::{self, create_image, create_image_record, log_in, Glance, Keystone};
use crate::common::openstack::{ADMIN_PASSWORD, DEMO_PASSWORD};

/// One image API under test, with the ids of the same images on it.
struct Target {
    name: &'static str,
    url: String,
    admin: String,
    member: String,
    /// (id, the name it is printed as)
    ids: Vec<(String, &'static str)>,
}

const UNKNOWN: &str = "6f0e8d4c-3b2a-4c1d-9e8f-7a6b5c4d3e2f";

impl Target {
    async fn with_images(name: &'static str, url: String, admin: String, member: String) -> Self {
        let active = create_image(&url, &admin, b"the cached image's bytes").await;
        let other = create_image(&url, &admin, b"another image, never cached").await;
        let inactive = create_image_record(&url, &admin).await;
        Target {
            name,
            url,
            admin,
            member,
            ids: vec![
                (active, "ACTIVE"),
                (other, "OTHER"),
                (inactive, "INACTIVE"),
                (UNKNOWN.to_owned(), "UNKNOWN"),
            ],
        }
    }

    fn id(&self, name: &str) -> &str {
        &self.ids.iter().find(|(_, n)| *n == name).unwrap().0
    }

    fn port(&self) -> &str {
        self.url.rsplit(':').next().unwrap()
    }

    /// Runs one command line, with the image names in `args` replaced by this target's ids;
    /// whether it succeeded and what it printed, normalised.
    fn run(&self, venv: &Path, as_member: bool, args: &[&str]) -> (bool, String) {
        let token = if as_member { &self.member } else { &self.admin };
        let args: Vec<&str> = args
            .iter()
            .map(|a| {
                self.ids
                    .iter()
                    .find(|(_, name)| name == a)
                    .map_or(*a, |(id, _)| id)
            })
            .collect();
        let mut command = if args[0] == "glance-cache-manage" {
            let mut command = Command::new(venv.join("bin/glance-cache-manage"));
            command.args([
                "-H",
                "127.0.0.1",
                "-p",
                self.port(),
                "--os-auth-token",
                token,
            ]);
            command.args(&args[1..]);
            command
        } else {
            let mut command = Command::new(venv.join("bin/glance"));
            command.args(["--os-image-url", &self.url, "--os-auth-token", token]);
            command.args(&args);
            command
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("PYTHONWARNINGS", "ignore")
            .env("OS_IDENTITY_API_VERSION", "none");
        let (ok, text) = openstack::run_output(&mut command);
        (ok, self.normalise(&text))
    }

    fn normalise(&self, text: &str) -> String {
        let mut text = text.replace(&self.url, "URL");
        for (id, name) in &self.ids {
            text = text.replace(id.as_str(), name);
        }
        replace_times(&text)
    }

    /// Waits until `GET /v2/cache` lists the image called `name` as cached.
    async fn wait_cached(&self, name: &str) {
        let context = format!(" ({})", self.name);
        let within = Duration::from_secs(30);
        example::wait_listed(&self.url, &self.admin, self.id(name), within, &context).await;
    }
}

/// Replaces ISO 8601 times (`2026-11-30T19:47:24.476502`, as the tables print them) by `TIME`,
/// padded to the same width so the tables' columns still line up.
fn replace_times(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let looks_like_time = bytes.len() - i >= 19
            && bytes[i..i + 19].iter().enumerate().all(|(k, b)| match k {
                4 | 7 => *b == b'-',
                10 => *b == b'T',
                13 | 16 => *b == b':',
                _ => b.is_ascii_digit(),
            });
        if looks_like_time {
            let mut end = i + 19;
            if bytes.get(end) == Some(&b'.') {
                end += 1;
                while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                    end += 1;
                }
            }
            out.push_str(&format!("{:<width$}", "TIME", width = end - i));
            i = end;
        } else {
            let c = text[i..].chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The steps where the node answers otherwise than Glance on purpose: what each prints.
/// A member deleting a cached image of another project is told by Glance that it may not (403),
/// which tells it the image is cached (it is told 404 when it is not); the node says "not
/// found" either way.
fn deliberately_apart(as_member: bool, args: &[&str]) -> Option<(&'static str, &'static str)> {
    (as_member && args == ["cache-delete", "ACTIVE"]).then_some((
        "You are not permitted to delete the image 'ACTIVE' from cache.",
        "HTTP 404 Not Found: Image ACTIVE not found.",
    ))
}

/// What each step runs: whether as the member, and the command line (image names for ids).
const STEPS: &[(bool, &[&str])] = &[
    (false, &["cache-list"]),
    (true, &["cache-list"]),
    (false, &["glance-cache-manage", "list-cached"]),
    (false, &["glance-cache-manage", "list-queued"]),
    (true, &["glance-cache-manage", "list-cached"]),
    (false, &["image-download", "ACTIVE", "--file", "/dev/null"]),
    // (the listing after a download waits for the image to be committed here)
    (false, &["cache-list"]),
    (false, &["glance-cache-manage", "list-cached"]),
    (false, &["cache-queue", "UNKNOWN"]),
    (false, &["cache-queue", "INACTIVE"]),
    (true, &["cache-queue", "OTHER"]),
    (false, &["cache-delete", "OTHER"]),
    (false, &["cache-delete", "UNKNOWN"]),
    (true, &["cache-delete", "ACTIVE"]),
    (false, &["cache-clear", "--target", "queue"]),
    (false, &["cache-list"]),
    (false, &["cache-delete", "ACTIVE"]),
    (false, &["cache-list"]),
    (false, &["image-download", "ACTIVE", "--file", "/dev/null"]),
    (false, &["cache-clear", "--target", "cache"]),
    (false, &["cache-list"]),
    (false, &["glance-cache-manage", "queue-image", "not-a-uuid"]),
    (
        false,
        &["glance-cache-manage", "-f", "delete-queued-image", "OTHER"],
    ),
    (
        false,
        &["glance-cache-manage", "-f", "delete-all-queued-images"],
    ),
    (
        false,
        &[
            "glance-cache-manage",
            "-f",
            "delete-cached-image",
            "UNKNOWN",
        ],
    ),
    (false, &["image-download", "ACTIVE", "--file", "/dev/null"]),
    (
        false,
        &["glance-cache-manage", "-f", "delete-cached-image", "ACTIVE"],
    ),
    (false, &["glance-cache-manage", "list-cached"]),
    (false, &["image-download", "ACTIVE", "--file", "/dev/null"]),
    (
        false,
        &["glance-cache-manage", "-f", "delete-all-cached-images"],
    ),
    (false, &["glance-cache-manage", "list-cached"]),
    (false, &["cache-clear"]),
    (false, &["cache-list"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glances_commands_print_the_same_against_glance_and_the_example_server() {
    let test = "glances_commands_print_the_same_against_glance_and_the_example_server";
    // A Glance of its own: the other tests' downloads fill the shared one's cache.
    let Some(keystone) = Keystone::shared(test) else {
        return;
    };
    let venv = openstack::venv(test).unwrap();
    let glance = Glance::start(&venv, keystone, "close");
    let keystone = &glance.keystone.url;
    let admin = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;
    let demo = log_in(keystone, "demo", DEMO_PASSWORD, "demo").await;
    let data_dir = tempfile::tempdir().unwrap();
    let server = example::start(data_dir.path(), &[]);
    let mut targets = [
        Target::with_images("Glance", glance.url.clone(), admin, demo).await,
        Target::with_images(
            "the example server",
            server.url.clone(),
            "admin-secret".into(),
            "u1".into(),
        )
        .await,
    ];

    let mut differences = Vec::new();
    let mut logged_in = Instant::now();
    for (step, (as_member, args)) in STEPS.iter().enumerate() {
        // The test Keystone's tokens live 60 s; the sequence takes longer.
        if logged_in.elapsed() > Duration::from_secs(30) {
            targets[0].admin = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;
            targets[0].member = log_in(keystone, "demo", DEMO_PASSWORD, "demo").await;
            logged_in = Instant::now();
        }
        let step_started = Instant::now();
        let listing = args[0] == "cache-list" || args.get(1) == Some(&"list-cached");
        let after_download = step > 0 && STEPS[step - 1].1[0] == "image-download";
        if listing && after_download {
            for target in &targets {
                target.wait_cached("ACTIVE").await;
            }
        }
        // Both at once: each command is a Python start-up of a second or two.
        let printed: Vec<(bool, String)> = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let runs: Vec<_> = targets
                    .iter()
                    .map(|target| scope.spawn(|| target.run(&venv, *as_member, args)))
                    .collect();
                runs.into_iter().map(|run| run.join().unwrap()).collect()
            })
        });
        let who = if *as_member { "member" } else { "admin" };
        eprintln!(
            "{who}: {} ({:.1} s)\n  exit ok: {}\n{}",
            args.join(" "),
            step_started.elapsed().as_secs_f64(),
            printed[0].0,
            printed[0].1
        );
        if let Some((glance_says, node_says)) = deliberately_apart(*as_member, args) {
            // Glance's oracle, on purpose not copied: what the node says depends on the caller
            // alone, never on what the cache holds.
            assert!(printed[0].1.contains(glance_says), "{}", printed[0].1);
            assert!(printed[1].1.contains(node_says), "{}", printed[1].1);
            continue;
        }
        if printed[0] != printed[1] {
            differences.push(format!(
                "{who}: {}\n--- Glance (ok: {}):\n{}\n--- the example server (ok: {}):\n{}",
                args.join(" "),
                printed[0].0,
                printed[0].1,
                printed[1].0,
                printed[1].1
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} commands differ:\n\n{}",
        differences.len(),
        STEPS.len(),
        differences.join("\n\n")
    );

    // A queued image is fetched at once, by Glance's cache worker as here.
    targets[0].admin = log_in(keystone, "admin", ADMIN_PASSWORD, "admin").await;
    let mut listings = Vec::new();
    for target in &targets {
        let (ok, text) =
            tokio::task::block_in_place(|| target.run(&venv, false, &["cache-queue", "OTHER"]));
        assert!(ok && text.is_empty(), "{}: {text}", target.name);
        target.wait_cached("OTHER").await;
        listings.push(tokio::task::block_in_place(|| {
            target.run(&venv, false, &["cache-list"])
        }));
    }
    assert_eq!(
        listings[0], listings[1],
        "cache-list after cache-queue: Glance, then ours"
    );
    assert!(
        listings[0].1.contains("| OTHER | cached |"),
        "{}",
        listings[0].1
    );
}
