//! `image-cache-manage`: Glance's `glance-cache-manage`, against the `/v2/cache` API, for one
//! node or several at once.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Parser;
use tower_image_cache::cli::{utc_time, ClientError, ManageClient, Table};

const COMMANDS: &str = "\
Commands:
  help <command>             Output help for one of the commands below
  list-cached                List all images currently cached
  list-queued                List all images currently queued for caching
  queue-image <ID>           Queue an image for caching
  delete-cached-image <ID>   Remove an image from the cache
  delete-all-cached-images   Remove all images from the cache
  delete-queued-image <ID>   Remove an image from the cache queue
  delete-all-queued-images   Remove all images from the cache queue
  prune                      Prune the cache to image_cache_max_size
  clean                      Remove invalid and stalled files from the cache";

#[derive(Parser, Debug)]
#[command(name = "image-cache-manage", version, about = "Manage the image cache of one or more API nodes", after_help = COMMANDS)]
struct Args {
    /// The command to execute, and its image id where it takes one.
    #[arg(value_name = "COMMAND", default_value = "help")]
    command: Vec<String>,
    /// Address of the API host; give it several times to act on every node.
    #[arg(
        short = 'H',
        long = "host",
        value_name = "ADDRESS",
        default_value = "localhost"
    )]
    hosts: Vec<String>,
    /// Port the API host listens on.
    #[arg(short, long, default_value_t = 9292)]
    port: u16,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
    /// Print more verbose output.
    #[arg(short, long)]
    verbose: bool,
    /// The token to authenticate with.
    #[arg(long, env = "OS_AUTH_TOKEN", hide_env_values = true)]
    os_auth_token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// What a command needs and asks.
struct Command {
    name: &'static str,
    takes_id: bool,
    /// The confirmation question, `{id}` standing for the image id.
    confirm: Option<&'static str>,
    help: &'static str,
}

const TABLE: [Command; 9] = [
    Command {
        name: "list-cached",
        takes_id: false,
        confirm: None,
        help: "List all images currently cached.",
    },
    Command {
        name: "list-queued",
        takes_id: false,
        confirm: None,
        help: "List all images currently queued for caching.",
    },
    Command {
        name: "queue-image",
        takes_id: true,
        confirm: Some("Queue image {id} for caching?"),
        help: "Queues an image for caching.",
    },
    Command {
        name: "delete-cached-image",
        takes_id: true,
        confirm: Some("Delete cached image {id}?"),
        help: "Deletes an image from the cache.",
    },
    Command {
        name: "delete-all-cached-images",
        takes_id: false,
        confirm: Some("Delete all cached images?"),
        help: "Remove all images from the cache.",
    },
    Command {
        name: "delete-queued-image",
        takes_id: true,
        confirm: Some("Delete queued image {id}?"),
        help: "Deletes an image from the cache queue.",
    },
    Command {
        name: "delete-all-queued-images",
        takes_id: false,
        confirm: Some("Delete all queued images?"),
        help: "Remove all images from the cache queue.",
    },
    Command {
        name: "prune",
        takes_id: false,
        confirm: None,
        help: "Prunes the cache to image_cache_max_size, least recently accessed first.",
    },
    Command {
        name: "clean",
        takes_id: false,
        confirm: None,
        help: "Removes invalid and stalled files from the cache.",
    },
];

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime starts");
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            if !reason.is_empty() {
                println!("{reason}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let name = args.command[0].as_str();
    if name == "help" {
        return help(args.command.get(1).map(String::as_str));
    }
    let Some(command) = TABLE.iter().find(|c| c.name == name) else {
        return Err(format!("Unknown command: {name}\n{COMMANDS}"));
    };
    let id = image_id(command, &args.command)?;
    if let Some(question) = command.confirm {
        if !args.force && !confirm(&question.replace("{id}", id.unwrap_or_default())) {
            return Ok(());
        }
    }
    let clients: Vec<ManageClient> = args
        .hosts
        .iter()
        .map(|host| ManageClient::new(host, args.port, args.os_auth_token.clone()))
        .collect();
    let outcomes = futures_join(clients.iter().map(|client| act(client, command.name, id))).await;

    let mut failures = Vec::new();
    let mut done = Vec::new();
    for (client, outcome) in clients.iter().zip(outcomes) {
        match outcome {
            Ok(result) => done.push((client.node(), result)),
            Err(err) if clients.len() == 1 => return Err(err.to_string()),
            Err(err @ ClientError::Unreachable { .. }) => failures.push(err.to_string()),
            Err(err) => failures.push(format!("host {}: {err}", client.node())),
        }
    }
    report(args, command, id, &done)?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// Runs the futures concurrently (one per node) and returns their outputs in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("a node's request does not panic"));
    }
    outputs
}

/// Glance's checks of the id argument.
fn image_id<'a>(command: &Command, words: &'a [String]) -> Result<Option<&'a str>, String> {
    if !command.takes_id {
        return if words.len() > 1 {
            Err(format!(
                "The command '{}' takes no arguments.",
                command.name
            ))
        } else {
            Ok(None)
        };
    }
    match words {
        [_, id] if is_uuid(id) => Ok(Some(id)),
        [_, id] => Err(format!("Image ID '{id}' is not a valid UUID.")),
        [_] => Err(format!("Please specify the ID of the image you wish for command '{}' as the first and only argument.", command.name)),
        _ => Err(format!(
            "Please specify the ID of the image you wish for command '{}' from the cache as the first and only argument.",
            command.name
        )),
    }
}

/// A UUID in any of the forms Python's `uuid.UUID` accepts (hyphens optional, braces, `urn:uuid:`).
fn is_uuid(text: &str) -> bool {
    let text = text.strip_prefix("urn:uuid:").unwrap_or(text);
    let text = text.trim_start_matches('{').trim_end_matches('}');
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

fn confirm(question: &str) -> bool {
    print!("{question} [y/N]: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn help(command: Option<&str>) -> Result<(), String> {
    match command {
        None => {
            println!("usage: image-cache-manage [options] <command> [<image id>]\n\n{COMMANDS}\n\nRun 'image-cache-manage --help' for the options.");
            Ok(())
        }
        Some(name) => match TABLE.iter().find(|c| c.name == name) {
            Some(command) => {
                let id = if command.takes_id { " <IMAGE_ID>" } else { "" };
                println!(
                    "image-cache-manage {}{id} [options]\n\n{}",
                    command.name, command.help
                );
                Ok(())
            }
            None => Err(format!("Unknown command: {name}")),
        },
    }
}

/// What one node answered.
enum Outcome {
    Cached(Vec<tower_image_cache::cli::Record>),
    Queued(Vec<String>),
    Deleted(usize),
    Pruned(u64, u64),
    Cleaned(usize, usize),
    Done,
}

fn act(
    client: &ManageClient,
    command: &'static str,
    id: Option<&str>,
) -> impl std::future::Future<Output = Result<Outcome, ClientError>> + Send + 'static {
    let (client, id) = (client.clone(), id.map(str::to_owned));
    async move {
        let id = id.as_deref().unwrap_or_default();
        Ok(match command {
            "list-cached" => Outcome::Cached(client.list().await?.cached_images),
            "list-queued" => Outcome::Queued(client.list().await?.queued_images),
            "queue-image" => client.queue(id).await.map(|()| Outcome::Done)?,
            "delete-cached-image" | "delete-queued-image" => {
                client.delete(id).await.map(|()| Outcome::Done)?
            }
            "delete-all-cached-images" => {
                let count = client.list().await?.cached_images.len();
                client.clear("cache").await?;
                Outcome::Deleted(count)
            }
            "delete-all-queued-images" => {
                let count = client.list().await?.queued_images.len();
                client.clear("queue").await?;
                Outcome::Deleted(count)
            }
            "prune" => {
                let pruned = client.prune().await?;
                Outcome::Pruned(pruned.total_files_pruned as u64, pruned.total_bytes_pruned)
            }
            "clean" => {
                let cleaned = client.clean().await?;
                Outcome::Cleaned(cleaned.invalid_removed, cleaned.stalled_removed)
            }
            other => unreachable!("{other} is in the command table"),
        })
    }
}

fn report(
    args: &Args,
    command: &Command,
    id: Option<&str>,
    done: &[(&str, Outcome)],
) -> Result<(), String> {
    let several = args.hosts.len() > 1;
    if args.json {
        let value: Vec<serde_json::Value> = done
            .iter()
            .map(|(node, outcome)| outcome_json(node, outcome))
            .collect();
        let value = if several {
            serde_json::Value::Array(value)
        } else {
            value.into_iter().next().unwrap_or_default()
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    match command.name {
        "list-cached" => print_cached(done, several),
        "list-queued" => print_queued(done, several),
        _ => {
            for (node, outcome) in done {
                let line = summary(command.name, id.unwrap_or_default(), outcome);
                let verbose_only = matches!(outcome, Outcome::Done | Outcome::Deleted(_));
                if !verbose_only || args.verbose {
                    if several {
                        println!("{node}: {line}");
                    } else {
                        println!("{line}");
                    }
                }
            }
        }
    }
    Ok(())
}

fn summary(command: &str, id: &str, outcome: &Outcome) -> String {
    match (command, outcome) {
        ("queue-image", _) => format!("Queued image {id} for caching"),
        ("delete-cached-image", _) => format!("Deleted cached image {id}"),
        ("delete-queued-image", _) => format!("Deleted queued image {id}"),
        ("delete-all-cached-images", Outcome::Deleted(n)) => format!("Deleted {n} cached images"),
        ("delete-all-queued-images", Outcome::Deleted(n)) => format!("Deleted {n} queued images"),
        (_, Outcome::Pruned(files, bytes)) => format!("pruned {files} images, {bytes} bytes"),
        (_, Outcome::Cleaned(invalid, stalled)) => {
            format!("cleaned {invalid} invalid and {stalled} stalled files")
        }
        _ => "done".into(),
    }
}

fn outcome_json(node: &str, outcome: &Outcome) -> serde_json::Value {
    match outcome {
        Outcome::Cached(records) => serde_json::json!({ "node": node, "cached_images": records }),
        Outcome::Queued(ids) => serde_json::json!({ "node": node, "queued_images": ids }),
        Outcome::Deleted(n) => serde_json::json!({ "node": node, "num_deleted": n }),
        Outcome::Pruned(files, bytes) => {
            serde_json::json!({ "node": node, "total_files_pruned": files, "total_bytes_pruned": bytes })
        }
        Outcome::Cleaned(invalid, stalled) => {
            serde_json::json!({ "node": node, "invalid_removed": invalid, "stalled_removed": stalled })
        }
        Outcome::Done => serde_json::json!({ "node": node, "ok": true }),
    }
}

fn print_cached(done: &[(&str, Outcome)], several: bool) {
    let records: Vec<(&str, &tower_image_cache::cli::Record)> = done
        .iter()
        .flat_map(|(node, outcome)| match outcome {
            Outcome::Cached(records) => records.iter().map(|r| (*node, r)).collect(),
            _ => Vec::new(),
        })
        .collect();
    if records.is_empty() {
        println!("No cached images.");
        return;
    }
    let mut headers = vec![
        "ID",
        "Last Accessed (UTC)",
        "Last Modified (UTC)",
        "Size",
        "Hits",
    ];
    if several {
        headers.insert(0, "Node");
        println!(
            "Found {} cached images on {} nodes...",
            records.len(),
            done.len()
        );
    } else {
        println!("Found {} cached images...", records.len());
    }
    let mut table = Table::new(&headers).align_right("Size").align_right("Hits");
    for (node, record) in records {
        let mut row = vec![
            record.image_id.clone(),
            utc_time(record.last_accessed),
            utc_time(record.last_modified),
            record.size.to_string(),
            record.hits.to_string(),
        ];
        if several {
            row.insert(0, node.to_owned());
        }
        table.row(row);
    }
    println!("{}", table.render());
}

fn print_queued(done: &[(&str, Outcome)], several: bool) {
    let ids: Vec<(&str, &String)> = done
        .iter()
        .flat_map(|(node, outcome)| match outcome {
            Outcome::Queued(ids) => ids.iter().map(|id| (*node, id)).collect(),
            _ => Vec::new(),
        })
        .collect();
    if ids.is_empty() {
        println!("No queued images.");
        return;
    }
    println!("Found {} queued images...", ids.len());
    let mut table = Table::new(if several {
        &["Node", "ID"][..]
    } else {
        &["ID"][..]
    });
    for (node, id) in ids {
        table.row(if several {
            vec![node.to_owned(), id.clone()]
        } else {
            vec![id.clone()]
        });
    }
    println!("{}", table.render());
}
