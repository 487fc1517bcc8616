//! A TCP proxy of the test's own between a node and its database: it counts the statements the
//! node sends (parsing PostgreSQL's and MySQL's wire protocols; TLS is off on the proxied
//! connections) and can cut every connection and refuse new ones, to make an outage without
//! touching the shared server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::db::Server;

pub struct DbProxy {
    pub port: u16,
    statements: Arc<AtomicU64>,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl DbProxy {
    /// A proxy on an ephemeral port of 127.0.0.1 to `server`'s port.
    pub async fn start(server: Server) -> DbProxy {
        Self::start_on([127, 0, 0, 1].into(), server).await
    }

    /// [`DbProxy::start`] on an ephemeral port of `address`.
    pub async fn start_on(address: std::net::IpAddr, server: Server) -> DbProxy {
        let listener = TcpListener::bind((address, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target: SocketAddr = ([127, 0, 0, 1], server.port()).into();
        let statements = Arc::new(AtomicU64::new(0));
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let task = {
            let (statements, cut, generation) =
                (statements.clone(), cut.clone(), generation.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let statements = statements.clone();
                    let mut cut_now = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(upstream) = TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = relay(client, upstream, server, statements) => {}
                            _ = cut_now.changed() => {}
                        }
                    });
                }
            })
        };
        DbProxy {
            port,
            statements,
            cut,
            generation,
            task,
        }
    }

    /// Closes every connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Statements executed through the proxy so far.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::SeqCst)
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn relay(client: TcpStream, upstream: TcpStream, server: Server, statements: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let to_server = async {
        let mut counter = Counter::new(server);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            statements.fetch_add(counter.feed(&buf[..n]), Ordering::SeqCst);
            if upstream_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = upstream_write.shutdown().await;
    };
    let to_client = async {
        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(to_server, to_client);
}

/// Finds the statements in what a client sends: PostgreSQL `Query` and `Execute` messages after
/// the startup message; MySQL `COM_QUERY` and `COM_STMT_EXECUTE` commands.
struct Counter {
    server: Server,
    pending: Vec<u8>,
    started: bool,
}

impl Counter {
    fn new(server: Server) -> Self {
        Counter {
            server,
            pending: Vec::new(),
            started: false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> u64 {
        self.pending.extend_from_slice(bytes);
        let mut counted = 0;
        loop {
            let buf = &self.pending;
            let (len, statement) = match self.server {
                Server::Postgres if !self.started => {
                    if buf.len() < 4 {
                        break;
                    }
                    (
                        u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize,
                        false,
                    )
                }
                Server::Postgres => {
                    if buf.len() < 5 {
                        break;
                    }
                    let len = 1 + u32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
                    (len, matches!(buf[0], b'Q' | b'E'))
                }
                _ => {
                    if buf.len() < 5 {
                        break;
                    }
                    let len =
                        4 + (buf[0] as usize | (buf[1] as usize) << 8 | (buf[2] as usize) << 16);
                    (len, buf[3] == 0 && matches!(buf[4], 0x03 | 0x17))
                }
            };
            if buf.len() < len {
                break;
            }
            self.started = true;
            counted += u64::from(statement);
            self.pending.drain(..len);
        }
        counted
    }
}
