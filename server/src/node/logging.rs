//! The server's log, as oslo.log's options say ([`LogOptions`]): to a file (reopened on SIGHUP,
//! for logrotate), the systemd journal and/or standard error, as text or one JSON object a
//! line. Dependencies log at WARN whatever the level; `RUST_LOG`, when set, decides alone.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::sync::lock;
use tower_image_cache::config::LogOptions;

type Output = Box<dyn Layer<Layered<EnvFilter, Registry>> + Send + Sync>;

/// The program's name, for `log_dir` alone (`<log_dir>/image-cache-server.log`).
const PROGRAM: &str = "image-cache-server";

/// The log file, for SIGHUP to reopen.
static LOG_FILE: OnceLock<Arc<LogFile>> = OnceLock::new();

/// The filter: `RUST_LOG` when set; else the node's and the library's lines at INFO (DEBUG with
/// `debug = True`) and everything else at WARN, so sled's and hyper's internals stay out.
fn filter(options: &LogOptions) -> EnvFilter {
    if let Ok(filter) = EnvFilter::try_from_default_env() {
        return filter;
    }
    let level = if options.debug { "debug" } else { "info" };
    EnvFilter::new(format!(
        "warn,tower_image_cache={level},image_cache_server={level}"
    ))
}

fn output<W>(writer: W, json: bool, ansi: bool) -> Output
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    if json {
        // One object a line: time, level, target, the message and fields, the spans.
        Box::new(layer.json().with_current_span(true).with_span_list(false))
    } else {
        Box::new(layer.with_ansi(ansi))
    }
}

/// Sets up the process's log; an error is a sentence naming the file that cannot be opened.
pub(crate) fn init(options: &LogOptions) -> Result<(), String> {
    let mut outputs: Vec<Output> = Vec::new();
    let path = options.log_path(PROGRAM);
    if let Some(path) = &path {
        let file = Arc::new(LogFile::open(path)?);
        let _ = LOG_FILE.set(Arc::clone(&file));
        outputs.push(output(Shared(file), options.use_json, false));
    }
    let mut journal = false;
    if options.use_journal {
        match tracing_journald::layer() {
            Ok(layer) => {
                outputs.push(Box::new(layer.with_syslog_identifier(PROGRAM.to_owned())));
                journal = true;
            }
            Err(err) => eprintln!(
                "{PROGRAM}: use_journal is set but the systemd journal cannot be reached \
                 ({err}); logging to standard error instead"
            ),
        }
    }
    // oslo.log falls back to a console stream when nothing else is configured.
    if options.use_stderr || (path.is_none() && !journal) {
        let ansi = !options.use_json && std::io::IsTerminal::is_terminal(&std::io::stderr());
        outputs.push(output(std::io::stderr, options.use_json, ansi));
    }
    tracing_subscriber::registry()
        .with(filter(options))
        .with(outputs)
        .try_init()
        .map_err(|err| format!("the log cannot be set up: {err}"))
}

/// Reopens the log file (after logrotate moved it), on each SIGHUP, for as long as the
/// runtime runs. Without a log file, SIGHUP is ignored (it no longer stops the process).
pub(crate) fn reopen_on_sighup() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch for SIGHUP; the log file is not reopened on it");
        return;
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match LOG_FILE.get() {
                Some(file) => match file.reopen() {
                    Ok(()) => {
                        tracing::info!(file = %file.path.display(), "SIGHUP: log file reopened")
                    }
                    Err(err) => eprintln!("{PROGRAM}: SIGHUP: {err}"),
                },
                None => tracing::info!("SIGHUP: no log file to reopen"),
            }
        }
    });
}

/// The log file, appended to; reopened by path on SIGHUP.
#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

fn open_append(path: &Path) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|err| {
            format!(
                "cannot open the log file {} ({err}): create its directory, make it writable \
                 by this user, or change log_file/log_dir",
                path.display()
            )
        })
}

impl LogFile {
    fn open(path: &Path) -> Result<Self, String> {
        Ok(LogFile {
            path: path.to_owned(),
            file: Mutex::new(open_append(path)?),
        })
    }

    fn reopen(&self) -> Result<(), String> {
        let file = open_append(&self.path)?;
        *lock(&self.file) = file;
        Ok(())
    }
}

/// The log file as a writer for each event.
struct Shared(Arc<LogFile>);

/// One event's write, holding the file.
struct Locked<'a>(std::sync::MutexGuard<'a, File>);

impl Write for Locked<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> MakeWriter<'a> for Shared {
    type Writer = Locked<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Locked(lock(&self.0.file))
    }
}
