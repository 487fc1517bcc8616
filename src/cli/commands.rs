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
  clean                      Remove invalid and stalled files from the cache";

/// What a command needs and asks.
#[derive(Debug)]
pub struct Command {
    /// The name typed on the command line.
    pub name: &'static str,
    /// Whether it takes an image id.
    pub takes_id: bool,
    /// The confirmation question, `{id}` standing for the image id.
    pub confirm: Option<&'static str>,
    /// What `help <command>` prints.
    pub help: &'static str,
}

/// Every command, as Glance's `glance-cache-manage` has them.
pub const TABLE: [Command; 9] = [
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

impl Command {
    /// The command called `name`.
    pub fn named(name: &str) -> Option<&'static Command> {
        TABLE.iter().find(|c| c.name == name)
    }
}

/// Glance's checks of the id argument.
pub fn image_id<'a>(command: &Command, words: &'a [String]) -> Result<Option<&'a str>, String> {
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

pub fn help(command: Option<&str>) -> Result<(), String> {
    match command {
        None => {
            println!("usage: image-cache-manage [options] <command> [<image id>]\n\n{COMMANDS}\n\nRun 'image-cache-manage --help' for the options.");
            Ok(())
        }
        Some(name) => match Command::named(name) {
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
