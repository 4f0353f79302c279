//! A minimal HTTP/1.1 file server with `Range` support on 127.0.0.1, for import tests.
//! One request per connection; serves files of one directory; 404 for anything else.

use std::path::PathBuf;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A running server; stops when the test's runtime ends.
#[derive(Debug)]
pub struct FileServer {
    port: u16,
}

impl FileServer {
    /// Serves the files of `dir`.
    pub async fn start(dir: PathBuf) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let dir = dir.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, dir).await;
                });
            }
        });
        FileServer { port }
    }

    /// The URL of a file name.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, name)
    }
}

async fn serve(stream: TcpStream, dir: PathBuf) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).await?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("range") {
                range = value.trim().strip_prefix("bytes=").map(str::to_string);
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    // A query (a pre-signed URL's signature) names no other file.
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    let name = path.trim_start_matches('/');
    let file = (!name.contains(".."))
        .then(|| dir.join(name))
        .filter(|p| p.is_file());
    let mut stream = reader.into_inner();
    let Some(file) = file else {
        stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    };
    let data = tokio::fs::read(&file).await?;
    let total = data.len() as u64;
    let (status, start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
        Some((a, b)) => {
            let start: u64 = a.parse().unwrap_or(0);
            let end: u64 = b.parse::<u64>().map(|e| e + 1).unwrap_or(total).min(total);
            ("206 Partial Content", start, end)
        }
        None => ("200 OK", 0, total),
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nAccept-Ranges: bytes\r\nContent-Length: {}\r\nConnection: close\r\n",
        end - start
    );
    if status.starts_with("206") {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{total}\r\n",
            end - 1
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream
            .write_all(&data[start as usize..end as usize])
            .await?;
    }
    stream.shutdown().await
}
