//! `image-cache-manage`'s commands: the table of what each takes and asks, and Glance's checks
//! of the image id argument.

/// The command list `help` prints.
pub const COMMANDS: &str = "\
Commands:
  help <command>             Output help for one of the commands below
  list-cached                List all images currently cached
  list-queued                List all images currently queued for caching
  queue-image <ID>           Queue an image for caching (--wait: until it is cached)
  delete-cached-image <ID>   Remove an image from the cache
  delete-all-cached-images   Remove all images from the cache
  delete-queued-image <ID>   Remove an image from the cache queue
  delete-all-queued-images   Remove all images from the cache queue
  prune                      Prune the cache to image_cache_max_size
  clean                      Remove invalid and stalled files from the cache

Fleet commands (image_cache_driver = centralized_db; --all-nodes runs any command above on
every node the central database lists):
  list-nodes <ID>            List the nodes that hold an image in their cache
  forget-node <URL>          Remove a decommissioned node's records from the central database";

/// What a command needs and asks.
#[derive(Debug)]
pub struct Command {
    /// The name typed on the command line.
    pub name: &'static str,
    /// Whether it takes an image id.
    pub takes_id: bool,
    /// Whether it takes a node's URL instead.
    pub takes_url: bool,
    /// The confirmation question, `{id}` standing for the image id.
    pub confirm: Option<&'static str>,
    /// What `help <command>` prints.
    pub help: &'static str,
}

/// Every command, as Glance's `glance-cache-manage` has them.
pub const TABLE: [Command; 11] = [
    Command {
        name: "list-cached",
        takes_id: false,
        takes_url: false,
        confirm: None,
        help: "List all images currently cached.",
    },
    Command {
        name: "list-queued",
        takes_id: false,
        takes_url: false,
        confirm: None,
        help: "List all images currently queued for caching.",
    },
    Command {
        name: "queue-image",
        takes_id: true,
        takes_url: false,
        confirm: Some("Queue image {id} for caching?"),
        help: "Queues an image for caching.",
    },
    Command {
        name: "delete-cached-image",
        takes_id: true,
        takes_url: false,
        confirm: Some("Delete cached image {id}?"),
        help: "Deletes an image from the cache.",
    },
    Command {
        name: "delete-all-cached-images",
        takes_id: false,
        takes_url: false,
        confirm: Some("Delete all cached images?"),
        help: "Remove all images from the cache.",
    },
    Command {
        name: "delete-queued-image",
        takes_id: true,
        takes_url: false,
        confirm: Some("Delete queued image {id}?"),
        help: "Deletes an image from the cache queue.",
    },
    Command {
        name: "delete-all-queued-images",
        takes_id: false,
        takes_url: false,
        confirm: Some("Delete all queued images?"),
        help: "Remove all images from the cache queue.",
    },
    Command {
        name: "prune",
        takes_id: false,
        takes_url: false,
        confirm: None,
        help: "Prunes the cache to image_cache_max_size, least recently accessed first.",
    },
    Command {
        name: "clean",
        takes_id: false,
        takes_url: false,
        confirm: None,
        help: "Removes invalid and stalled files from the cache.",
    },
    Command {
        name: "list-nodes",
        takes_id: true,
        takes_url: false,
        confirm: None,
        help: "Lists the URLs of the nodes whose cache holds the image, from the central \
               database (through the node given with --host, or directly with a --config-file \
               naming [database] connection).",
    },
    Command {
        name: "forget-node",
        takes_id: false,
        takes_url: true,
        confirm: Some("Forget node {id} and its cached image records?"),
        help: "Removes a decommissioned node (its worker_self_reference_url) and its records \
               from the central database named by [database] connection in a --config-file. \
               Its files are not touched; a node still running writes its records again.",
    },
];

impl Command {
    /// The command called `name`.
    pub fn named(name: &str) -> Option<&'static Command> {
        TABLE.iter().find(|c| c.name == name)
    }
}

/// Glance's checks of the id argument.
pub fn image_id<'a>(command: &Command, words: &'a [String]) -> Result<Option<&'a str>, String> {
    if command.takes_url {
        return match words {
            [_, url] if url.starts_with("http://") || url.starts_with("https://") => Ok(Some(url)),
            [_, url] => Err(format!("'{url}' is not a node URL: give the node's worker_self_reference_url, e.g. http://node-1:9292")),
            _ => Err(format!("Please specify the URL of the node for command '{}' as the first and only argument.", command.name)),
        };
    }
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

/// `help [COMMAND]`: prints the commands, or one command's usage.
pub fn help(command: Option<&str>) -> Result<(), String> {
    match command {
        None => {
            println!("usage: image-cache-manage [options] <command> [<image id>]\n\n{COMMANDS}\n\nRun 'image-cache-manage --help' for the options.");
            Ok(())
        }
        Some(name) => match Command::named(name) {
            Some(command) => {
                let id = match (command.takes_id, command.takes_url) {
                    (true, _) => " <IMAGE_ID>",
                    (_, true) => " <NODE_URL>",
                    _ => "",
                };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_as_glance_checks_them() {
        let queue = Command::named("queue-image").unwrap();
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let uuid = "{8A0B0F1C-5D1E-4C4E-9A43-2B1D5F0A9C11}";
        assert_eq!(
            image_id(queue, &words(&["queue-image", uuid])),
            Ok(Some(uuid))
        );
        assert!(image_id(queue, &words(&["queue-image", "nope"]))
            .unwrap_err()
            .contains("not a valid UUID"));
        let prune = Command::named("prune").unwrap();
        assert!(image_id(prune, &words(&["prune", "x"]))
            .unwrap_err()
            .contains("takes no arguments"));
        assert!(is_uuid("urn:uuid:8a0b0f1c5d1e4c4e9a432b1d5f0a9c11"));
    }
}
