//! An image API on a raw socket that misbehaves as told: it never answers, stalls after the
//! head, cuts the body (honouring `Range` afterwards, or not, or with the wrong bytes), and
//! records the headers of every request it gets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the download route answers (the metadata route always answers right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every byte, every time.
    Polite,
    /// Every byte, every time, trickled: 64 KiB every 20 ms (a backend slower than the nodes).
    Slow,
    /// Reads the request, never answers, keeps the connection open.
    Hang,
    /// The head and 40% of the body, then nothing, the connection open. Ranges honoured.
    StallAt40,
    /// The head and 40% of the body, then the connection closes. Ranges honoured.
    CutAt40,
    /// Cut at 40%; a ranged request gets the whole image with `200`.
    CutIgnoringRange,
    /// Cut at 40%; a ranged request gets its `206` with other bytes.
    CutWrongBytes,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct RawUpstream {
    pub addr: SocketAddr,
    pub data: Bytes,
    pub mode: Arc<Mutex<Mode>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl RawUpstream {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The requests for the download route so far, the access check's probes aside.
    pub fn downloads(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.ends_with("/file") && s.header("range") != Some("bytes=0-0"))
            .cloned()
            .collect()
    }

    /// Serves `data` as every image's bytes, misbehaving as `mode` says.
    pub async fn start(data: Bytes, mode: Mode) -> RawUpstream {
        Self::start_on([127, 0, 0, 1].into(), data, mode).await
    }

    /// [`RawUpstream::start`] on an ephemeral port of `address`.
    pub async fn start_on(address: std::net::IpAddr, data: Bytes, mode: Mode) -> RawUpstream {
        let listener = TcpListener::bind((address, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = RawUpstream {
            addr,
            data: data.clone(),
            mode: Arc::new(Mutex::new(mode)),
            seen: Arc::default(),
        };
        let (mode, seen) = (upstream.mode.clone(), upstream.seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (data, mode, seen) = (data.clone(), mode.clone(), seen.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, addr, data, mode, seen).await;
                });
            }
        });
        upstream
    }
}

async fn serve(
    mut stream: TcpStream,
    addr: SocketAddr,
    data: Bytes,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_owned();
    let path = first.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let request = Seen {
        method,
        path: path.clone(),
        headers,
    };
    seen.lock().unwrap().push(request.clone());
    let mode = *mode.lock().unwrap();
    let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(&data));
    let sha512 = hex::encode(<sha2::Sha512 as sha2::Digest>::digest(&data));
    if path == "/" || path == "/versions" {
        let doc = format!(
            r#"{{"versions": [{{"id": "v2.16", "status": "CURRENT", "links": [{{"rel": "self", "href": "http://{addr}/v2/"}}]}}]}}"#
        );
        return answer(&mut stream, "300 Multiple Choices", &[], doc.as_bytes()).await;
    }
    if path.starts_with("/v2/moved") {
        let location = format!("Location: http://{addr}/v2/images");
        return answer(&mut stream, "302 Found", &[&location], b"").await;
    }
    if !path.ends_with("/file") {
        let doc = format!(
            r#"{{"id": "img", "status": "active", "size": {}, "checksum": "{md5}", "os_hash_algo": "sha512", "os_hash_value": "{sha512}"}}"#,
            data.len()
        );
        return answer(
            &mut stream,
            "200 OK",
            &["Content-Type: application/json"],
            doc.as_bytes(),
        )
        .await;
    }
    let total = data.len();
    // `bytes=N-` (a resumed fill) or `bytes=N-M` (the access check's probe, `bytes=0-0`).
    let range = request
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(from, to)| {
            let from = from.parse::<usize>().ok()?;
            let to = if to.is_empty() {
                total - 1
            } else {
                to.parse::<usize>().ok()?
            };
            Some((from, to.min(total - 1)))
        });
    if request.header("range") == Some("bytes=0-0") && mode != Mode::Hang {
        let range = format!("Content-Range: bytes 0-0/{total}");
        return answer(&mut stream, "206 Partial Content", &[&range], &data[..1]).await;
    }
    match (mode, range) {
        (Mode::Slow, None) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            for piece in data.chunks(64 * 1024) {
                stream.write_all(piece).await?;
                stream.flush().await?;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Ok(())
        }
        (Mode::Hang, _) => {
            std::future::pending::<()>().await;
            Ok(())
        }
        (Mode::CutIgnoringRange, Some(_)) | (Mode::Polite, _) => {
            answer(
                &mut stream,
                "200 OK",
                &["Content-Type: application/octet-stream"],
                &data,
            )
            .await
        }
        (_, Some((from, to))) => {
            let mut part = data.slice(from..to + 1).to_vec();
            if mode == Mode::CutWrongBytes {
                part.iter_mut().for_each(|b| *b ^= 0xff);
            }
            let range = format!("Content-Range: bytes {from}-{to}/{total}");
            answer(&mut stream, "206 Partial Content", &[&range], &part).await
        }
        (_, None) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&data[..total * 2 / 5]).await?;
            stream.flush().await?;
            if mode == Mode::StallAt40 {
                std::future::pending::<()>().await;
            }
            // CutAt40 and the others: the connection closes mid-body.
            Ok(())
        }
    }
}

async fn answer(
    stream: &mut TcpStream,
    status: &str,
    headers: &[&str],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.flush().await
}
