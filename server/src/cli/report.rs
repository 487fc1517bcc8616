//! What `image-cache-manage` prints: each node's [`Outcome`], as Glance's tables or as JSON.

use super::answers::{InProgress, Record};
use super::progress::describe;
use super::table::{utc_time, Table};

/// How the answers are printed.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// JSON instead of tables.
    pub json: bool,
    /// Print the lines Glance prints only with `--verbose`.
    pub verbose: bool,
    /// Several nodes were asked: tables get a Node column, lines a node prefix.
    pub several: bool,
    /// Standard output is a terminal: progress is drawn as bars.
    pub terminal: bool,
}

/// What one node answered.
#[derive(Debug)]
pub enum Outcome {
    /// `list-cached`: the cached images, and the fills running.
    Cached(Vec<Record>, Vec<InProgress>),
    /// `list-queued`.
    Queued(Vec<String>),
    /// A delete-all: how many went.
    Deleted(usize),
    /// `prune`: images and bytes.
    Pruned(u64, u64),
    /// `clean`: invalid and stalled files.
    Cleaned(usize, usize),
    /// Anything else that succeeded.
    Done,
}

/// Prints what `command` (on image `id`, when it takes one) did on each node of `done`.
pub fn report(
    style: Style,
    command: &str,
    id: Option<&str>,
    done: &[(&str, Outcome)],
) -> Result<(), String> {
    let several = style.several;
    if style.json {
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
    match command {
        "list-cached" => {
            print_cached(done, several);
            print_in_progress(done, several, style.terminal);
        }
        "list-queued" => print_queued(done, several),
        _ => {
            for (node, outcome) in done {
                let line = summary(command, id.unwrap_or_default(), outcome);
                let verbose_only = matches!(outcome, Outcome::Done | Outcome::Deleted(_));
                if !verbose_only || style.verbose {
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
        Outcome::Cached(records, in_progress) => serde_json::json!({
            "node": node, "cached_images": records, "in_progress": in_progress,
        }),
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
    let records: Vec<(&str, &Record)> = done
        .iter()
        .flat_map(|(node, outcome)| match outcome {
            Outcome::Cached(records, _) => records.iter().map(|r| (*node, r)).collect(),
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

/// The fills running, one line each, after the table of cached images.
fn print_in_progress(done: &[(&str, Outcome)], several: bool, terminal: bool) {
    let fills: Vec<(&str, &InProgress)> = done
        .iter()
        .flat_map(|(node, outcome)| match outcome {
            Outcome::Cached(_, fills) => fills.iter().map(|f| (*node, f)).collect(),
            _ => Vec::new(),
        })
        .collect();
    if fills.is_empty() {
        return;
    }
    println!("Being cached now:");
    for (node, fill) in fills {
        let prefix = if several {
            format!("{node}  ")
        } else {
            String::new()
        };
        println!("  {prefix}{}  {}", fill.image_id, describe(fill, terminal));
    }
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
