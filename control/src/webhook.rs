//! Webhook deliveries: control announces each statement held for approval, and each
//! decision on one, by POSTing JSON to `approvals.webhook_url` (a chat bot, a ticketing
//! system), signed so that the receiver can tell it came from this control.
//!
//! Every delivery carries:
//! * `Content-Type: application/json` and the JSON body;
//! * `X-Sluice-Event`: the body's `event` (`approval_requested` or `approval_decided`);
//! * `X-Sluice-Signature: sha256=<hex>`: HMAC-SHA-256 of the exact body bytes under
//!   `approvals.webhook_secret` (compare it in constant time before trusting the body);
//! * `X-Sluice-Delivery`: an ID that stays the same across retries of one delivery, so a
//!   receiver can drop duplicates.
//!
//! Deliveries run on one background thread, `sluice-control-webhook`, fed through a bounded
//! queue: the event loop and the admin socket only enqueue ([`Webhooks::send`] never
//! blocks; when the queue is full the delivery is dropped and logged). A connection error,
//! a timeout, a `429` or a `5xx` answer is retried `approvals.webhook_retries` times,
//! waiting 1 s, 2 s, 4 s … in between; any other non-2xx answer (the receiver refused the
//! request: a wrong secret, a wrong path) is not retried. Each failure is logged, and so is
//! giving up.
//!
//! A webhook only *announces*: one that cannot be delivered never blocks, approves or
//! denies anything. The request stays pending and can be decided with `sluice approvals`
//! until it expires.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tracing::{error, info, warn};

/// Deliveries waiting for the webhook thread; more are dropped (and logged).
pub const QUEUE: usize = 256;
/// The wait before the first retry; each further retry waits twice as long.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How long one attempt (connect, send, read the answer's head) may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where one delivery goes, as configured when it was made (a reload does not change a
/// delivery already queued).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    /// `approvals.webhook_url`.
    pub url: String,
    /// `approvals.webhook_secret`.
    pub secret: String,
    /// `approvals.webhook_retries`.
    pub retries: u32,
}

impl std::fmt::Debug for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookTarget")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("retries", &self.retries)
            .finish()
    }
}

/// One POST to make.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `X-Sluice-Event` (the body's `event`).
    pub event: &'static str,
    /// The approval request it is about (for the logs).
    pub request_id: String,
    /// The JSON body, signed as is.
    pub body: Vec<u8>,
    /// Where to.
    pub target: WebhookTarget,
}

/// `sha256=<lowercase hex of HMAC-SHA-256(secret, body)>`: the `X-Sluice-Signature` value.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The handle control enqueues deliveries through. Dropping it stops the thread after the
/// attempt in progress (what is still queued is dropped, and logged).
#[derive(Debug)]
pub struct Webhooks {
    tx: SyncSender<Delivery>,
    stop: Arc<AtomicBool>,
}

impl Webhooks {
    /// Starts the delivery thread. It is not joined on shutdown: an attempt in progress may
    /// outlive control by at most [`ATTEMPT_TIMEOUT`], and nothing waits for it.
    pub fn start() -> Result<Webhooks, String> {
        Webhooks::start_with_backoff(FIRST_BACKOFF)
    }

    /// [`Webhooks::start`] with another first backoff (tests).
    pub fn start_with_backoff(first_backoff: Duration) -> Result<Webhooks, String> {
        let (tx, rx) = sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("sluice-control-webhook".into())
            .spawn(move || run(&rx, &flag, first_backoff))
            .map_err(|e| format!("spawning sluice-control-webhook: {e}"))?;
        Ok(Webhooks { tx, stop })
    }

    /// Queues a delivery; never blocks. A full queue drops it (logged).
    pub fn send(&self, delivery: Delivery) {
        match self.tx.try_send(delivery) {
            Ok(()) => {}
            Err(TrySendError::Full(d)) => error!(
                event = d.event,
                request = %d.request_id,
                queued = QUEUE,
                "webhook queue is full (the receiver is down or slow); this delivery is dropped: decide with `sluice approvals`"
            ),
            Err(TrySendError::Disconnected(d)) => error!(
                event = d.event,
                request = %d.request_id,
                "the webhook thread has stopped; this delivery is dropped"
            ),
        }
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn run(rx: &Receiver<Delivery>, stop: &AtomicBool, first_backoff: Duration) {
    loop {
        let delivery = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(d) => d,
            Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Acquire) => continue,
            Err(_) => break,
        };
        if stop.load(Ordering::Acquire) {
            break;
        }
        deliver(&delivery, stop, first_backoff);
    }
    let left = rx.try_iter().count();
    if left > 0 {
        warn!(
            deliveries = left,
            "control is stopping: queued webhook deliveries are dropped"
        );
    }
}

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    /// Worth another try (connection error, timeout, 429, 5xx).
    Retry(String),
    /// The receiver refused it; trying again would not help.
    Refused(u16),
}

/// Makes the attempts of one delivery, with exponential backoff in between.
fn deliver(d: &Delivery, stop: &AtomicBool, first_backoff: Duration) {
    let agent = agent(&d.target.url);
    let signature = signature(d.target.secret.as_bytes(), &d.body);
    let delivery_id = uuid::Uuid::now_v7().to_string();
    let attempts = d.target.retries.saturating_add(1);
    for attempt in 1..=attempts {
        match post(&agent, d, &signature, &delivery_id) {
            Outcome::Delivered(status) => {
                info!(event = d.event, request = %d.request_id, status, attempt, "webhook delivered");
                return;
            }
            Outcome::Refused(status) => {
                error!(
                    event = d.event,
                    request = %d.request_id,
                    url = %d.target.url,
                    status,
                    "the webhook receiver refused the delivery (check approvals.webhook_url and the secret); not retried"
                );
                return;
            }
            Outcome::Retry(why) if attempt < attempts => {
                let wait = backoff(first_backoff, attempt);
                warn!(
                    event = d.event,
                    request = %d.request_id,
                    url = %d.target.url,
                    attempt,
                    of = attempts,
                    error = %why,
                    retry_in = %humantime::format_duration(wait),
                    "webhook delivery failed; retrying"
                );
                if !sleep_unless_stopped(stop, wait) {
                    warn!(event = d.event, request = %d.request_id, "control is stopping: webhook delivery abandoned");
                    return;
                }
            }
            Outcome::Retry(why) => error!(
                event = d.event,
                request = %d.request_id,
                url = %d.target.url,
                attempts,
                error = %why,
                "gave up delivering the webhook; the request stays pending and can be decided with `sluice approvals`"
            ),
        }
    }
}

/// The wait after failed attempt `attempt` (1-based): `first`, `2 × first`, `4 × first` …
fn backoff(first: Duration, attempt: u32) -> Duration {
    first.saturating_mul(1u32 << (attempt - 1).min(16))
}

fn post(agent: &ureq::Agent, d: &Delivery, signature: &str, delivery_id: &str) -> Outcome {
    let result = agent
        .post(&d.target.url)
        .header("Content-Type", "application/json")
        .header("X-Sluice-Event", d.event)
        .header("X-Sluice-Signature", signature)
        .header("X-Sluice-Delivery", delivery_id)
        .send(&d.body[..]);
    match result {
        Ok(response) => {
            let status = response.status().as_u16();
            match status {
                200..=299 => Outcome::Delivered(status),
                429 | 500..=599 => Outcome::Retry(format!("HTTP {status}")),
                _ => Outcome::Refused(status),
            }
        }
        Err(e) => Outcome::Retry(e.to_string()),
    }
}

/// An agent for `url`: bounded in time, no redirects (a POST is not replayed elsewhere),
/// no proxy for a loopback receiver.
fn agent(url: &str) -> ureq::Agent {
    let uri: Option<ureq::http::Uri> = url.parse().ok();
    let https = uri.as_ref().and_then(|u| u.scheme_str()) == Some("https");
    let loopback = uri.as_ref().and_then(|u| u.host()).is_some_and(is_loopback);
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(ATTEMPT_TIMEOUT))
        .http_status_as_error(false)
        .https_only(https)
        .max_redirects(0)
        .user_agent("sluice-control");
    if loopback {
        config = config.proxy(None);
    }
    config.build().into()
}

/// `localhost` or a loopback address (`[::1]` included).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Sleeps `total` unless `stop` is set first; whether it slept the whole time.
fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) -> bool {
    let deadline = Instant::now() + total;
    loop {
        if stop.load(Ordering::Acquire) {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_from_the_first_wait() {
        let first = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=5).map(|a| backoff(first, a).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16]);
        assert!(backoff(first, 100) >= Duration::from_secs(65_536));
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in ["localhost", "127.0.0.1", "[::1]", "LOCALHOST"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let target = WebhookTarget {
            url: "https://h.example.com/".into(),
            secret: "0123456789abcdef-secret".into(),
            retries: 1,
        };
        let shown = format!("{target:?}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
