//! A loopback HTTP endpoint serving one JSON document (an identity provider's JWKS in the
//! tests), which a test can replace at any time and whose requests it can count: enough
//! HTTP/1.1 for a client that sends one `GET` per connection. Test support only; it never
//! listens beyond 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A running endpoint; it serves until the process exits.
#[derive(Debug)]
pub struct DocumentServer {
    uri: String,
    doc: Arc<Mutex<String>>,
    requests: Arc<AtomicU64>,
}

impl DocumentServer {
    /// Serves `doc` at `http://127.0.0.1:PORT{path}` (404 for any other path).
    pub fn start(path: &str, doc: String) -> std::io::Result<DocumentServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let uri = format!("http://{}{path}", listener.local_addr()?);
        let doc = Arc::new(Mutex::new(doc));
        let requests = Arc::new(AtomicU64::new(0));
        let (served, counted) = (Arc::clone(&doc), Arc::clone(&requests));
        let wanted = format!("GET {path} ");
        std::thread::Builder::new()
            .name("pgharness-http".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let Ok(reading) = stream.try_clone() else {
                        continue;
                    };
                    let mut reader = BufReader::new(reading);
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).is_err() {
                        continue;
                    }
                    // Skip the headers up to the blank line.
                    loop {
                        let mut line = String::new();
                        match reader.read_line(&mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if line == "\r\n" || line == "\n" => break,
                            Ok(_) => {}
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = if request_line.starts_with(&wanted) {
                        let body = served.lock().unwrap_or_else(PoisonError::into_inner).clone();
                        ("200 OK", body)
                    } else {
                        ("404 Not Found", String::new())
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.flush();
                }
            })?;
        Ok(DocumentServer { uri, doc, requests })
    }

    /// The document's URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Replaces the document served from now on.
    pub fn publish(&self, doc: String) {
        *self.doc.lock().unwrap_or_else(PoisonError::into_inner) = doc;
    }

    /// Requests received so far (any path).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn get(uri: &str) -> String {
        let rest = uri.trim_start_matches("http://");
        let (addr, path) = rest.split_at(rest.find('/').expect("path"));
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        answer
    }

    #[test]
    fn serves_the_current_document_and_counts_requests() {
        let server = DocumentServer::start("/jwks", "{\"keys\":[]}".into()).expect("start");
        assert!(get(server.uri()).ends_with("{\"keys\":[]}"));
        server.publish("{\"keys\":[1]}".into());
        let answer = get(server.uri());
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("{\"keys\":[1]}"));
        let missing = get(&server.uri().replace("/jwks", "/other"));
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        assert_eq!(server.requests(), 3);
    }
}
