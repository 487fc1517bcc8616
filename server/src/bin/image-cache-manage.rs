//! `image-cache-manage`: Glance's `glance-cache-manage`, against the `/v2/cache` API, for one
//! node or several at once.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use clap::Parser;
use image_cache_server::cli::commands::{help, image_id, Command, COMMANDS};
use image_cache_server::cli::progress::wait_until_cached;
use image_cache_server::cli::report::{report, Outcome, Style};
use image_cache_server::cli::ManageArgs as Args;
use image_cache_server::cli::{ClientError, ManageClient, Table};
use image_cache_server::placement::nodes_for;
use tower_image_cache::config::{database_connection, with_config_dirs, ServerOptions};
use tower_image_cache::store::Fleet;
use tower_image_cache::ImageId;

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
                eprintln!("{reason}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    image_cache_server::cli::set_debug(args.debug);
    let name = args.command[0].as_str();
    if name == "help" {
        return help(args.command.get(1).map(String::as_str));
    }
    let Some(command) = Command::named(name) else {
        return Err(format!("Unknown command: {name}\n{COMMANDS}"));
    };
    let id = image_id(command, &args.command)?;
    if let Some(question) = command.confirm {
        if !args.force && !confirm(&question.replace("{id}", id.unwrap_or_default())) {
            return Ok(());
        }
    }
    let files =
        with_config_dirs(&args.config_files, &args.config_dirs).map_err(|err| err.to_string())?;
    let port = match args.port {
        Some(port) => port,
        None => ServerOptions::from_files(&files)
            .map_err(|err| err.to_string())?
            .port(),
    };
    let fleet = match database_connection(&files).map_err(|err| err.to_string())? {
        Some(url) => Some(Fleet::connect(&url).map_err(|err| err.to_string())?),
        None => None,
    };
    if command.name == "forget-node" {
        return forget_node(fleet.as_ref(), id.unwrap_or_default()).await;
    }
    let auth = args.os.auth()?;
    let tls = auth.tls(args.os.tls());
    let catalog = match &args.hosts[..] {
        [] => auth.image_endpoint().await?,
        _ => None,
    };
    let mut hosts = match (&args.hosts[..], &catalog) {
        ([], Some(endpoint)) => vec![endpoint.clone()],
        ([], None) => vec!["localhost".to_owned()],
        (given, _) => given.to_vec(),
    };
    let first = ManageClient::with_auth(&hosts[0], port, auth.clone(), &tls)?;
    if let (Some(endpoint), false) = (&catalog, args.all_nodes || command.name == "list-nodes") {
        one_node(&first, endpoint).await?;
    }
    if command.name == "list-nodes" {
        return list_nodes(fleet.as_ref(), &first, id.unwrap_or_default(), args.json).await;
    }
    if args.all_nodes || args.nodes.is_some() {
        hosts = match &fleet {
            Some(fleet) => fleet.nodes().await.map_err(|err| err.to_string())?,
            None => first.fleet_nodes().await.map_err(|err| {
                format!(
                    "cannot learn the fleet's nodes from {}: {err}",
                    first.node()
                )
            })?,
        };
        if hosts.is_empty() {
            return Err("the central database lists no cache nodes".to_owned());
        }
    }
    if let Some(k) = args.nodes {
        let (Some(id), "queue-image") = (id, command.name) else {
            return Err(
                "--nodes K goes with queue-image: it picks the K nodes an image is queued on"
                    .to_owned(),
            );
        };
        hosts = nodes_for(&hosts, id, k as usize);
    }
    let clients = hosts
        .iter()
        .map(|host| ManageClient::with_auth(host, port, auth.clone(), &tls))
        .collect::<Result<Vec<_>, _>>()?;
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
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let style = Style {
        json: args.json,
        verbose: args.verbose,
        several: hosts.len() > 1 || args.all_nodes || args.nodes.is_some(),
        terminal,
    };
    report(style, command.name, id, &done)?;
    if let (true, "queue-image", Some(id)) = (args.wait, command.name, id) {
        let timeout = std::time::Duration::from_secs(args.wait_timeout);
        for client in clients
            .iter()
            .filter(|c| done.iter().any(|(n, _)| *n == c.node()))
        {
            match wait_until_cached(client, id, timeout, terminal && !args.json).await {
                Ok(()) if hosts.len() > 1 => {
                    println!("{}: image {id} is cached", client.node())
                }
                Ok(()) => println!("Image {id} is cached"),
                Err(reason) => failures.push(reason),
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// Refuses the catalog's image endpoint unless the node answering there names itself with that
/// very URL: behind a load balancer each request reaches a random node, so a listing would show
/// one node's cache and a delete would act on one node (python-glanceclient refuses the same).
async fn one_node(client: &ManageClient, endpoint: &str) -> Result<(), String> {
    let answering = client
        .answering_node()
        .await
        .map_err(|err| err.to_string())?;
    let same = |a: &str, b: &str| {
        a.trim_end_matches('/')
            .eq_ignore_ascii_case(b.trim_end_matches('/'))
    };
    match answering {
        Some(node) if same(&node, client.base_url()) || same(&node, endpoint) => Ok(()),
        answering => Err(format!(
            "the catalog's image endpoint {endpoint} is not one cache node ({}): through a load \
             balancer every request reaches a random node. Give each node with -H (repeatable), \
             or use --all-nodes",
            match answering {
                Some(node) => format!("node {node} answered there"),
                None => "the node answering there does not name itself; set \
                         worker_self_reference_url on the node to its URL"
                    .to_owned(),
            }
        )),
    }
}

/// `list-nodes ID`: from the central database when the configuration names it, else through the
/// node.
async fn list_nodes(
    fleet: Option<&Fleet>,
    node: &ManageClient,
    id: &str,
    json: bool,
) -> Result<(), String> {
    let nodes = match (fleet, ImageId::new(id)) {
        (Some(fleet), Ok(image)) => fleet
            .nodes_caching(&image)
            .await
            .map_err(|e| e.to_string())?,
        _ => node
            .nodes_caching(id)
            .await
            .map_err(|err| err.to_string())?,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&nodes).unwrap_or_default()
        );
    } else if nodes.is_empty() {
        println!("No node has image {id} in its cache");
    } else {
        let mut table = Table::new(&["Node"]);
        for node in &nodes {
            table.row(vec![node.clone()]);
        }
        println!("{}", table.render());
    }
    Ok(())
}

/// `forget-node URL`: on the central database only.
async fn forget_node(fleet: Option<&Fleet>, url: &str) -> Result<(), String> {
    let Some(fleet) = fleet else {
        return Err(
            "forget-node works on the central database: pass --config-file with the \
                    [database] connection of the fleet's nodes"
                .to_owned(),
        );
    };
    match fleet
        .forget_node(url)
        .await
        .map_err(|err| err.to_string())?
    {
        Some(rows) => {
            println!("Forgot node {url} and its {rows} cached image records");
            Ok(())
        }
        None => Err(format!(
            "no node {url} in the central database {}",
            fleet.database()
        )),
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

fn confirm(question: &str) -> bool {
    print!("{question} [y/N]: ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
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
            "list-cached" => {
                let listing = client.list().await?;
                Outcome::Cached(listing.cached_images, listing.in_progress)
            }
            "list-queued" => Outcome::Queued(client.list().await?.queued_images),
            "queue-image" => client.queue(id).await.map(|()| Outcome::Done)?,
            "delete-cached-image" => client.uncache(id).await.map(|()| Outcome::Done)?,
            "delete-queued-image" => client.dequeue(id).await.map(|()| Outcome::Done)?,
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
