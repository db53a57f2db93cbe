//! Loopback HTTP endpoints for the tests, with just enough HTTP/1.1 for a client that sends
//! one request per connection:
//!
//! * [`DocumentServer`] serves one JSON document (an identity provider's JWKS), which a test
//!   can replace at any time and whose requests it can count;
//! * [`WebhookReceiver`] records every request posted to it (method, path, headers, body)
//!   and can be told to answer the next few with `500`, to exercise a sender's retries.
//!
//! Test support only; they never listen beyond 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

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

/// Largest request body a [`WebhookReceiver`] reads.
const MAX_BODY: usize = 1 << 20;

/// One request a [`WebhookReceiver`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request target, e.g. `/hook`.
    pub path: String,
    /// Header names (lowercase) and values, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
    /// The status the receiver answered with.
    pub status: u16,
}

impl ReceivedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, Default)]
struct Received {
    requests: Vec<ReceivedRequest>,
    /// How many of the next requests get a 500.
    fail_next: u64,
}

/// A loopback endpoint that records what is posted to it, answering `200` (or `500` while
/// told to fail), for testing webhook senders. It serves until the process exits.
#[derive(Debug)]
pub struct WebhookReceiver {
    uri: String,
    received: Arc<(Mutex<Received>, Condvar)>,
}

impl WebhookReceiver {
    /// Listens on `http://127.0.0.1:PORT{path}`. Requests to any path are recorded; those to
    /// another path are answered `404`.
    pub fn start(path: &str) -> std::io::Result<WebhookReceiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let uri = format!("http://{}{path}", listener.local_addr()?);
        let received = Arc::new((Mutex::new(Received::default()), Condvar::new()));
        let shared = Arc::clone(&received);
        let path = path.to_owned();
        std::thread::Builder::new()
            .name("pgharness-webhook".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    serve_one(stream, &path, &shared);
                }
            })?;
        Ok(WebhookReceiver { uri, received })
    }

    /// The URI to post to.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Answers the next `n` requests with `500 Internal Server Error` (still recording them).
    pub fn fail_next(&self, n: u64) {
        self.lock().fail_next = n;
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.lock().requests.clone()
    }

    /// Waits until at least `n` requests have arrived (or `timeout` passes) and returns all
    /// received so far.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedRequest> {
        let deadline = Instant::now() + timeout;
        let (lock, arrived) = &*self.received;
        let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while guard.requests.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            guard = arrived
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        guard.requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads one request from `stream`, records it and answers it.
fn serve_one(stream: TcpStream, path: &str, shared: &(Mutex<Received>, Condvar)) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Ok(reading) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reading);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
        }
    }
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_BODY);
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (lock, arrived) = shared;
    let status = {
        let mut received = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let status = if target != path {
            404
        } else if received.fail_next > 0 {
            received.fail_next -= 1;
            500
        } else {
            200
        };
        received.requests.push(ReceivedRequest {
            method,
            path: target,
            headers,
            body,
            status,
        });
        status
    };
    arrived.notify_all();
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = stream.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn post(uri: &str, body: &str) -> String {
        let rest = uri.trim_start_matches("http://");
        let (addr, path) = rest.split_at(rest.find('/').expect("path"));
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: x\r\nX-Test: yes\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        answer
    }

    #[test]
    fn webhook_receiver_records_posts_and_fails_when_told() {
        let receiver = WebhookReceiver::start("/hook").expect("start");
        receiver.fail_next(1);
        assert!(post(receiver.uri(), "{\"a\":1}").starts_with("HTTP/1.1 500"));
        assert!(post(receiver.uri(), "{\"a\":2}").starts_with("HTTP/1.1 200"));
        let missing = post(&receiver.uri().replace("/hook", "/other"), "x");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let got = receiver.wait_for(3, Duration::from_secs(5));
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].method, "POST");
        assert_eq!(got[0].path, "/hook");
        assert_eq!(got[0].status, 500);
        assert_eq!(got[1].status, 200);
        assert_eq!(got[1].body_text(), "{\"a\":2}");
        assert_eq!(got[1].header("x-test"), Some("yes"));
        assert_eq!(got[1].header("X-TEST"), Some("yes"));
        assert_eq!(got[2].status, 404);
    }
}
