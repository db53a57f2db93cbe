//! One client connection, driven end to end on its worker: handshake (TLS, startup,
//! token), backend login, then the relay. This is the I/O shell around the sans-I/O pieces
//! (`handshake`, `backend_login`, `walker`); decisions live there.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use monoio::io::{AsyncWriteRent, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use sluice_codecs::backend::{self, BackendMessage, TransactionStatus};
use sluice_codecs::frontend::{self, FrontendMessage};
use sluice_codecs::startup::{self, StartupPacket};
use sluice_codecs::{Decode, DecodeError, Limits};
use tracing::{info, warn};
use uuid::Uuid;

use crate::audit::{Answer, Approval, Pending, PendingStatement, SessionFacts, SessionMeter};
use crate::auth::{Principal, TokenError, TokenVerifier};
use crate::backend_login::{BackendLogin, BackendReady, LoginStep};
use crate::cancel::{self, CancelKey, CancelTarget};
use crate::conn::{read_into, write_all, Conn};
use crate::gate::SessionGate;
use crate::handshake::{
    Authenticated, AwaitingPassword, AwaitingStartup, Refusal, StartupOutcome, Transport,
};
use crate::metrics::{RefusedReason, WorkerMetrics};
use crate::recording::SessionRecording;
use crate::server::{BackendTarget, WorkerContext};
use crate::statements::{Action, Checked, Guard, REFUSED};
use crate::walker::FrameWalker;
use sluice_control::content::{millis, ApprovalScope};
use sluice_control::oidc::unverified_issuer;
use sluice_control::policy::{Decision, Subject};
use sluice_control::service::{ProxyEvent, MAX_EVENT};
use sluice_masker::plan::CatalogColumn;
use sluice_masker::{Masker, SessionMasker};
use sluice_recorder::{
    Approval as RecordedApproval, ApprovalOutcome, RecordKind, SessionEnd as RecordedEnd,
    SessionStart as RecordedStart, TlsInfo,
};

/// Why a session ended, for the log line and the client's last error.
#[derive(Debug)]
enum End {
    /// Client sent Terminate or closed its socket.
    ClientClosed,
    /// Backend closed its socket (normally after a FATAL it already sent).
    BackendClosed,
    /// Refused before reaching a backend.
    Refused(Refusal),
    /// I/O error on one side.
    Io(&'static str, std::io::Error),
    /// A peer broke the protocol.
    Protocol(&'static str, DecodeError),
    /// Handshake took too long.
    HandshakeTimeout,
    /// A cancel request was handled on this connection.
    Cancel,
    /// The client's TLS handshake failed.
    Tls(String),
    /// The gateway ended the session (revocation, grant over, maximum length).
    Terminated(Refusal),
}

/// Per-session counters, shared by the two relay directions on the same thread.
#[derive(Default)]
struct Counters {
    bytes_from_client: Cell<u64>,
    bytes_from_backend: Cell<u64>,
    statements: Cell<u64>,
}

/// Serves one accepted connection until it ends. Never panics on peer input; every
/// failure ends in a log line with the session ID.
pub async fn serve(stream: TcpStream, peer: SocketAddr, ctx: Rc<WorkerContext>) {
    let session_id = Uuid::now_v7();
    let started = Instant::now();
    let _ = stream.set_nodelay(true);
    let counters = Counters::default();
    let handshake = monoio::time::timeout(
        ctx.config.handshake_timeout(),
        client_handshake(Conn::Plain(stream), peer, &ctx),
    )
    .await;
    let metrics = &ctx.metrics;
    let finish = |auth: Option<&Authenticated>, end: &End| {
        log_end(
            session_id,
            peer,
            auth,
            started,
            &counters,
            end,
            &ctx.refusal_log,
        )
    };
    let (client, leftover, auth) = match handshake {
        Err(_) => {
            let end = End::HandshakeTimeout;
            count_refusal(metrics, &end);
            return finish(None, &end);
        }
        Ok(Err((client, end))) => {
            count_refusal(metrics, &end);
            if let Some(mut client) = client {
                if let End::Refused(refusal) = &end {
                    let _ = write_all(&mut client, refusal.to_bytes()).await;
                }
                let _ = client.shutdown().await;
            }
            return finish(None, &end);
        }
        Ok(Ok(done)) => {
            metrics.auth_latency.record(started.elapsed());
            done
        }
    };
    let end = run_authenticated(session_id, client, leftover, &auth, peer, &ctx, &counters).await;
    if let End::Refused(_) = &end {
        count_refusal(metrics, &end);
    }
    finish(Some(&auth), &end);
}

/// Counts a connection that ended before its session started, by why.
fn count_refusal(metrics: &WorkerMetrics, end: &End) {
    match end {
        End::Refused(refusal) => metrics.refused(RefusedReason::of_sqlstate(&refusal.sqlstate)),
        End::Tls(_) => {
            metrics.tls_failures.inc();
            metrics.refused(RefusedReason::Protocol);
        }
        End::Protocol(..) => metrics.refused(RefusedReason::Protocol),
        End::HandshakeTimeout => metrics.refused(RefusedReason::Timeout),
        // A client that went away or a cancel request was not refused.
        End::ClientClosed | End::BackendClosed | End::Io(..) | End::Cancel | End::Terminated(_) => {
        }
    }
}

/// A worker's budget of log lines for connections that end before becoming a session
/// (`logging.refusals_per_second`): a flood of bad connections is summarized instead of
/// logged line by line.
pub struct RefusalLogBudget {
    per_second: u32,
    window_start: Cell<Option<Instant>>,
    used: Cell<u32>,
    suppressed: Cell<u64>,
}

impl RefusalLogBudget {
    /// A budget of `per_second` lines per second.
    pub fn new(per_second: u32) -> RefusalLogBudget {
        RefusalLogBudget {
            per_second,
            window_start: Cell::new(None),
            used: Cell::new(0),
            suppressed: Cell::new(0),
        }
    }

    /// Whether one more line may be written now.
    pub fn allow(&self, now: Instant) -> bool {
        self.roll(now);
        if self.used.get() < self.per_second {
            self.used.set(self.used.get() + 1);
            true
        } else {
            self.suppressed.set(self.suppressed.get() + 1);
            false
        }
    }

    /// Starts a new window when a second has passed, logging what the last one held back
    /// (also called on the worker's tick, so a flood that stops is still reported).
    pub fn roll(&self, now: Instant) {
        let due = self
            .window_start
            .get()
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1));
        if due {
            let suppressed = self.suppressed.replace(0);
            if suppressed > 0 {
                warn!(
                    suppressed,
                    per_second = self.per_second,
                    "connections that ended before a session were not logged one by one (logging.refusals_per_second); sluice_connections_refused_total counts them all"
                );
            }
            self.window_start.set(Some(now));
            self.used.set(0);
        }
    }
}

fn log_end(
    session_id: Uuid,
    peer: SocketAddr,
    auth: Option<&Authenticated>,
    started: Instant,
    counters: &Counters,
    end: &End,
    budget: &RefusalLogBudget,
) {
    let before_session = auth.is_none() || matches!(end, End::Refused(_));
    if before_session && !budget.allow(Instant::now()) {
        return;
    }
    let principal = auth.map(|a| a.principal().subject.as_str()).unwrap_or("-");
    let resource = auth.map(Authenticated::resource).unwrap_or("-");
    let reason = end_reason(end);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let fields = (
        counters.bytes_from_client.get(),
        counters.bytes_from_backend.get(),
        counters.statements.get(),
    );
    match end {
        End::Refused(_)
        | End::Io(..)
        | End::Protocol(..)
        | End::HandshakeTimeout
        | End::Tls(_)
        | End::Terminated(_) => {
            warn!(
                session = %session_id, %peer, principal, resource, duration_ms = elapsed_ms,
                bytes_in = fields.0, bytes_out = fields.1, statements = fields.2,
                reason = %reason, "session end"
            )
        }
        _ => info!(
            session = %session_id, %peer, principal, resource, duration_ms = elapsed_ms,
            bytes_in = fields.0, bytes_out = fields.1, statements = fields.2,
            reason = %reason, "session end"
        ),
    }
}

fn end_reason(end: &End) -> String {
    match end {
        End::ClientClosed => "client closed".to_owned(),
        End::BackendClosed => "backend closed".to_owned(),
        End::Refused(r) => format!("refused {}: {}", r.sqlstate, r.message),
        End::Io(side, e) => format!("{side} I/O error: {e}"),
        End::Protocol(side, e) => format!("{side} protocol error: {e}"),
        End::HandshakeTimeout => "handshake timed out".to_owned(),
        End::Cancel => "cancel request".to_owned(),
        End::Tls(e) => format!("TLS handshake failed: {e}"),
        End::Terminated(r) => format!("terminated {}: {}", r.sqlstate, r.message),
    }
}

/// An authenticated client (with any bytes it already pipelined), or why the handshake
/// ended and the connection, if it still exists, to tell the client on.
type HandshakeResult = Result<(Conn, BytesMut, Authenticated), (Option<Conn>, End)>;

/// Why a whole message could not be read.
enum ReadFailure {
    /// The peer closed before the message was complete.
    Closed,
    /// The socket failed.
    Io(std::io::Error),
    /// The bytes are not a valid message.
    Invalid(DecodeError),
}

/// Reads until `decode` yields one complete message; used for the handshake and login
/// phases, where messages are handled one at a time.
async fn read_message<T>(
    conn: &mut Conn,
    buf: &mut BytesMut,
    limits: &Limits,
    decode: impl Fn(&mut BytesMut, &Limits) -> Result<Decode<T>, DecodeError>,
) -> Result<T, ReadFailure> {
    loop {
        match decode(buf, limits) {
            Ok(Decode::Frame(message)) => return Ok(message),
            Ok(Decode::NeedMore(n)) => {
                let (result, b) = read_into(conn, std::mem::take(buf), n.max(512)).await;
                *buf = b;
                match result {
                    Ok(0) => return Err(ReadFailure::Closed),
                    Ok(_) => {}
                    Err(e) => return Err(ReadFailure::Io(e)),
                }
            }
            Err(e) => return Err(ReadFailure::Invalid(e)),
        }
    }
}

/// Reads one startup packet from the client.
async fn read_startup(
    conn: &mut Conn,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<StartupPacket, End> {
    read_message(conn, buf, limits, startup::decode)
        .await
        .map_err(|failure| match failure {
            ReadFailure::Closed => End::ClientClosed,
            ReadFailure::Io(e) => End::Io("client", e),
            ReadFailure::Invalid(DecodeError::UnsupportedProtocol { major, minor }) => {
                End::Refused(Refusal::new(
                    "0A000",
                    format!("unsupported frontend protocol {major}.{minor}: Sluice speaks 3.0"),
                ))
            }
            ReadFailure::Invalid(e) => End::Refused(Refusal::new(
                "08P01",
                format!("invalid startup packet: {e}"),
            )),
        })
}

/// Reads one regular message from the client during authentication.
async fn read_frontend(
    conn: &mut Conn,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<FrontendMessage, End> {
    read_message(conn, buf, limits, frontend::decode)
        .await
        .map_err(|failure| match failure {
            ReadFailure::Closed => End::ClientClosed,
            ReadFailure::Io(e) => End::Io("client", e),
            ReadFailure::Invalid(e) => End::Refused(Refusal::new(
                "08P01",
                format!("invalid message during authentication: {e}"),
            )),
        })
}

async fn client_handshake(
    mut conn: Conn,
    peer: SocketAddr,
    ctx: &WorkerContext,
) -> HandshakeResult {
    let limits = Limits {
        max_startup_len: ctx.config.limits.max_startup_bytes,
        ..Limits::auth()
    };
    let mut transport = Transport {
        tls: false,
        tls_available: ctx.tls.is_some(),
        loopback: peer.ip().is_loopback(),
        allow_plaintext_non_loopback: ctx.config.listen.allow_plaintext_non_loopback,
    };
    let mut buf = BytesMut::with_capacity(1024);
    let mut state = AwaitingStartup::new();
    loop {
        let packet = match read_startup(&mut conn, &mut buf, &limits).await {
            Ok(packet) => packet,
            Err(end) => return Err((Some(conn), end)),
        };
        match state.handle(packet, transport) {
            StartupOutcome::Reply { next, bytes } => {
                if let Err(e) = write_all(&mut conn, bytes).await {
                    return Err((Some(conn), End::Io("client", e)));
                }
                state = next;
            }
            StartupOutcome::StartTls { next } => {
                // Bytes after SSLRequest and before the TLS handshake would be read as if
                // they had been encrypted (CVE-2021-23222 class): refuse them.
                if !buf.is_empty() {
                    let refusal = Refusal::new("08P01", "unencrypted data after SSL request");
                    return Err((Some(conn), End::Refused(refusal)));
                }
                // The state machine only asks for TLS on a plain stream with an acceptor
                // configured; anything else is a bug, ended without a panic.
                let (Conn::Plain(mut tcp), Some(acceptor)) = (conn, ctx.tls.as_ref()) else {
                    let bug = Refusal::new("XX000", "internal error: TLS upgrade not possible");
                    return Err((None, End::Refused(bug)));
                };
                if let Err(e) = write_all(&mut tcp, Bytes::from_static(b"S")).await {
                    return Err((Some(Conn::Plain(tcp)), End::Io("client", e)));
                }
                match acceptor.accept(tcp).await {
                    Ok(tls) => {
                        ctx.metrics.tls_handshakes.inc();
                        conn = Conn::ServerTls(Box::new(tls));
                    }
                    Err(e) => return Err((None, End::Tls(e.to_string()))),
                }
                transport.tls = true;
                state = next;
            }
            StartupOutcome::Cancel { pid, secret } => {
                forward_cancel(pid, &secret, peer).await;
                return Err((None, End::Cancel));
            }
            StartupOutcome::Refuse(refusal) => return Err((Some(conn), End::Refused(refusal))),
            StartupOutcome::AskPassword { next, bytes } => {
                if let Err(e) = write_all(&mut conn, bytes).await {
                    return Err((Some(conn), End::Io("client", e)));
                }
                let message = match read_frontend(&mut conn, &mut buf, &limits).await {
                    Ok(message) => message,
                    Err(end) => return Err((Some(conn), end)),
                };
                return match verify_token(next, message, ctx).await {
                    Ok(auth) => Ok((conn, buf, auth)),
                    // Logged once, with the session ID, by the session-end line.
                    Err(refusal) => Err((Some(conn), End::Refused(refusal))),
                };
            }
        }
    }
}

/// How long a login waits for control to fetch an OIDC issuer's new keys when a token names
/// a key id the snapshot does not have yet (the issuer rotated its keys).
const KEY_FETCH_WAIT: Duration = Duration::from_secs(3);

/// Verifies the client's token with the current snapshot. A token signed with an OIDC key
/// the snapshot lacks makes control refetch the issuer's keys; the login waits (without
/// blocking the worker) for the next generation and checks the token once more.
async fn verify_token(
    state: AwaitingPassword,
    message: FrontendMessage,
    ctx: &WorkerContext,
) -> Result<Authenticated, Refusal> {
    let view = ctx.gate.borrow_mut().view()?;
    let unknown_key = std::cell::RefCell::new(None);
    let watcher = KidWatcher {
        identity: &view.identity,
        unknown_key: &unknown_key,
    };
    let first = state.clone().handle(
        message.clone(),
        &watcher,
        SystemTime::now(),
        view.require_user_match,
    );
    let Some((issuer, kid)) = unknown_key.take() else {
        return first;
    };
    let epoch = ctx.gate.borrow().epoch();
    let asked = ctx
        .gate
        .borrow()
        .send_event(&ProxyEvent::UnknownKid { issuer, kid });
    if !asked {
        // Control cannot be asked to fetch the key: refuse now rather than wait for nothing.
        return first;
    }
    let deadline = Instant::now() + KEY_FETCH_WAIT;
    while Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
        let pending = ctx.gate.borrow().generation_pending();
        if pending || ctx.gate.borrow().epoch() != epoch {
            let view = ctx.gate.borrow_mut().view()?;
            return state.handle(
                message,
                &view.identity,
                SystemTime::now(),
                view.require_user_match,
            );
        }
    }
    first
}

/// A verifier that notes when a token names an OIDC key the snapshot does not have.
struct KidWatcher<'a> {
    identity: &'a sluice_control::identity::Identity,
    unknown_key: &'a std::cell::RefCell<Option<(String, String)>>,
}

impl TokenVerifier for KidWatcher<'_> {
    fn verify(&self, token: &str, now: SystemTime) -> Result<Principal, TokenError> {
        let result = TokenVerifier::verify(self.identity, token, now);
        if let Err(e) = &result {
            if let (Some(kid), Some(issuer)) = (e.unknown_oidc_key(), unverified_issuer(token)) {
                *self.unknown_key.borrow_mut() = Some((issuer, kid.to_owned()));
            }
        }
        result
    }
}

async fn forward_cancel(pid: u32, secret: &[u8], peer: SocketAddr) {
    let Some(target) = cancel::lookup(pid, secret) else {
        // PostgreSQL says nothing to a wrong key either; a guesser learns nothing.
        warn!(%peer, "cancel request with an unknown key");
        return;
    };
    target
        .cancel_requested
        .store(true, std::sync::atomic::Ordering::Release);
    let mut packet = BytesMut::new();
    StartupPacket::CancelRequest {
        pid: target.pid,
        secret: target.secret.clone(),
    }
    .encode(&mut packet);
    match TcpStream::connect_addr(target.backend).await {
        Ok(mut backend) => {
            if let Err(e) = write_all(&mut backend, packet.freeze()).await {
                warn!(resource = %target.resource, error = %e, "could not send cancel to backend");
            } else {
                info!(resource = %target.resource, %peer, "cancel forwarded to backend");
            }
            let _ = backend.shutdown().await;
        }
        Err(e) => {
            warn!(resource = %target.resource, error = %e, "could not reach backend for cancel")
        }
    }
}

async fn connect_backend(target: &BackendTarget) -> Result<Conn, Refusal> {
    let unreachable = |e: std::io::Error| {
        Refusal::new(
            "08001",
            format!("could not connect to resource \"{}\": {e}", target.name),
        )
        .hint("the database behind this resource is down or unreachable; try again later or tell its operator")
    };
    let tcp = TcpStream::connect_addr(target.addr)
        .await
        .map_err(unreachable)?;
    let _ = tcp.set_nodelay(true);
    let Some(tls) = &target.tls else {
        return Ok(Conn::Plain(tcp));
    };
    let mut tcp = tcp;
    let mut request = BytesMut::new();
    StartupPacket::SslRequest.encode(&mut request);
    write_all(&mut tcp, request.freeze())
        .await
        .map_err(unreachable)?;
    let (result, answer) = monoio::io::AsyncReadRentExt::read_exact(&mut tcp, vec![0u8; 1]).await;
    result.map_err(unreachable)?;
    if answer.first() != Some(&b'S') {
        return Err(Refusal::new(
            "08001",
            format!(
                "resource \"{}\" requires TLS but its server refused it",
                target.name
            ),
        ));
    }
    let connector = monoio_rustls::TlsConnector::from(tls.config.clone());
    let tls_stream = connector
        .connect(tls.server_name.clone(), tcp)
        .await
        .map_err(|e| {
            Refusal::new(
                "08001",
                format!("TLS to resource \"{}\" failed: {e}", target.name),
            )
        })?;
    Ok(Conn::ClientTls(Box::new(tls_stream)))
}

async fn backend_login(
    backend: &mut Conn,
    target: &BackendTarget,
    auth: &Authenticated,
) -> Result<BackendReady, Refusal> {
    let (mut login, startup) = BackendLogin::start(
        &target.user,
        &target.database,
        auth.params(),
        target.password.clone(),
    );
    let lost = |e: std::io::Error| {
        Refusal::new(
            "08006",
            format!(
                "connection to resource \"{}\" lost during login: {e}",
                target.name
            ),
        )
    };
    write_all(backend, startup).await.map_err(lost)?;
    let limits = Limits::auth();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        let message = match read_message(backend, &mut buf, &limits, backend::decode).await {
            Ok(message) => message,
            Err(ReadFailure::Closed) => return Err(lost(std::io::ErrorKind::UnexpectedEof.into())),
            Err(ReadFailure::Io(e)) => return Err(lost(e)),
            Err(ReadFailure::Invalid(e)) => {
                return Err(Refusal::new(
                    "08P01",
                    format!(
                        "resource \"{}\" sent a malformed message during login: {e}",
                        target.name
                    ),
                ))
            }
        };
        match login.handle(message) {
            Ok(LoginStep::Send(bytes)) => write_all(backend, bytes).await.map_err(lost)?,
            Ok(LoginStep::Continue) => {}
            Ok(LoginStep::Ready(ready)) => {
                if !buf.is_empty() {
                    return Err(Refusal::new(
                        "08P01",
                        "backend sent data before the first query",
                    ));
                }
                return Ok(ready);
            }
            Err(e) => {
                warn!(resource = %target.name, error = %e, "backend login failed");
                return Err(Refusal::new(
                    e.sqlstate(),
                    format!("could not log in to resource \"{}\": {e}", target.name),
                ));
            }
        }
    }
}

/// Everything after a valid token.
async fn run_authenticated(
    session_id: Uuid,
    mut client: Conn,
    leftover: BytesMut,
    auth: &Authenticated,
    peer: SocketAddr,
    ctx: &WorkerContext,
    counters: &Counters,
) -> End {
    let refuse = |refusal: Refusal| End::Refused(refusal);
    let Some(target) = ctx.backends.get(auth.resource()) else {
        let refusal = Refusal::new(
            "3D000",
            format!(
                "resource \"{}\" is not configured in Sluice",
                auth.resource()
            ),
        )
        .hint("check dbname; ask the gateway operator which resources you may use");
        let _ = write_all(&mut client, refusal.to_bytes()).await;
        return refuse(refusal);
    };
    let (session_gate, masker) = match admit(session_id, auth, ctx) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let _ = write_all(&mut client, refusal.to_bytes()).await;
            return refuse(refusal);
        }
    };
    let _registered = Registered {
        ctx,
        session: &session_gate,
    };
    let connected = monoio::time::timeout(ctx.config.backend_connect_timeout(), async {
        let mut backend = connect_backend(target).await?;
        let ready = backend_login(&mut backend, target, auth).await?;
        let mut session_masker = masker.map(SessionMasker::new);
        if let Some(session_masker) = session_masker.as_mut() {
            if let Some(sql) = session_masker.masker().catalog_query() {
                let columns = load_catalog(&mut backend, &sql, target).await?;
                session_masker.set_catalog(columns);
            }
        }
        Ok::<_, Refusal>((backend, ready, session_masker))
    })
    .await;
    let (backend, ready, session_masker) = match connected {
        Ok(Ok(done)) => done,
        Ok(Err(refusal)) => {
            let _ = write_all(&mut client, refusal.to_bytes()).await;
            return refuse(refusal);
        }
        Err(_) => {
            let refusal = Refusal::new(
                "08001",
                format!("timed out connecting to resource \"{}\"", target.name),
            );
            let _ = write_all(&mut client, refusal.to_bytes()).await;
            return refuse(refusal);
        }
    };
    let cancel_requested = Arc::new(AtomicBool::new(false));
    let key = ready.key.as_ref().map(|(pid, secret)| {
        CancelKey::register(CancelTarget {
            backend: target.addr,
            pid: *pid,
            secret: secret.clone(),
            resource: target.name.clone(),
            cancel_requested: Arc::clone(&cancel_requested),
        })
    });
    info!(
        session = %session_id, %peer, principal = %auth.principal().subject,
        groups = ?auth.principal().groups, user = auth.user(), resource = auth.resource(),
        tls = client.is_tls(), "session start"
    );
    let mut guard = Guard::new();
    let mut hello = BytesMut::with_capacity(512);
    BackendMessage::Authentication(backend::Authentication::Ok).encode(&mut hello);
    for (name, value) in ready.parameters {
        guard.parameter_status(&name, &value);
        BackendMessage::ParameterStatus { name, value }.encode(&mut hello);
    }
    BackendMessage::ParameterStatus {
        name: Bytes::from_static(b"sluice.session_id"),
        value: Bytes::from(session_id.to_string()),
    }
    .encode(&mut hello);
    for notice in ready.notices {
        BackendMessage::NoticeResponse(notice).encode(&mut hello);
    }
    if let Some(key) = &key {
        BackendMessage::BackendKeyData {
            pid: key.pid(),
            secret: Bytes::copy_from_slice(&key.secret()),
        }
        .encode(&mut hello);
    }
    BackendMessage::ReadyForQuery {
        status: ready.status.unwrap_or(TransactionStatus::Idle),
    }
    .encode(&mut hello);
    if let Err(e) = write_all(&mut client, hello.freeze()).await {
        return End::Io("client", e);
    }
    ctx.gate.borrow().send_event(&ProxyEvent::SessionStart {
        session: session_id.to_string(),
        user: auth.principal().subject.clone(),
        resource: auth.resource().to_owned(),
        peer: peer.to_string(),
    });
    let mut facts = SessionFacts::new(
        session_id.to_string(),
        auth.principal().subject.clone(),
        auth.principal().groups.clone(),
        auth.resource().to_owned(),
    );
    facts.meter = ctx
        .metrics
        .resource_index(auth.resource())
        .map(|resource| SessionMeter {
            metrics: Arc::clone(&ctx.metrics),
            top: Rc::clone(&ctx.top),
            resource,
        });
    ctx.metrics.sessions_started.inc();
    let recording = ctx
        .recorder
        .as_ref()
        .map(|handle| SessionRecording::new(handle.clone(), session_id));
    if let Some(recording) = &recording {
        let start = RecordKind::SessionStart(RecordedStart {
            principal: auth.principal().subject.clone(),
            groups: auth.principal().groups.clone(),
            resource: auth.resource().to_owned(),
            client_addr: peer.to_string(),
            // monoio-rustls does not expose the negotiated version and cipher.
            tls: client.is_tls().then(|| TlsInfo {
                version: "TLS".to_owned(),
                cipher: "not exposed by the TLS stack".to_owned(),
            }),
            masking_profile: session_masker
                .as_ref()
                .map(|m| m.masker().name().to_owned()),
        });
        if let Err(refusal) = recording.append(start) {
            let _ = write_all(&mut client, refusal.to_bytes()).await;
            return End::Terminated(refusal);
        }
    }
    let sample = ctx.config.logging.protocol_trace_sample;
    let trace = sample > 0.0 && rand::random::<f64>() < sample;
    if trace {
        info!(target: "sluice::protocol", session = %session_id, "this session's protocol messages are traced (logging.protocol_trace_sample; no values)");
    }
    let statements = Statements {
        trace,
        guard: RefCell::new(guard),
        facts,
        cancel_requested,
        pending: RefCell::new(Pending::default()),
        masking: session_masker.map(RefCell::new),
        recording,
    };
    let end = relay(
        Link {
            client,
            backend,
            leftover,
        },
        ctx,
        counters,
        &session_gate,
        &statements,
    )
    .await;
    let masking = MaskingTotals::of(statements.masking.as_ref());
    if let Some(profile) = &masking.profile {
        ctx.metrics.add_masked(profile, &masking.counts);
    }
    if let Some(recording) = &statements.recording {
        let _ = recording.append(RecordKind::SessionEnd(RecordedEnd {
            reason: end_reason(&end),
            statements: counters.statements.get(),
            bytes_in: counters.bytes_from_client.get(),
            bytes_out: counters.bytes_from_backend.get(),
            masked: masking.counts.clone(),
        }));
    }
    if !masking.counts.is_empty() {
        info!(session = %session_id, profile = masking.profile.as_deref().unwrap_or(""), masked = ?masking.counts, "values masked in this session");
    }
    if let End::Terminated(_) = &end {
        // The backend may be running a long statement for the terminated principal; cancel
        // it rather than leave it running until it next writes to a closed socket.
        if let Some(key) = &key {
            forward_cancel(key.pid(), &key.secret(), peer).await;
        }
    }
    ctx.gate.borrow().send_event(&ProxyEvent::SessionEnd {
        session: session_id.to_string(),
        user: auth.principal().subject.clone(),
        resource: auth.resource().to_owned(),
        reason: end_reason(&end),
        masking: masking.profile,
        masked: masking.counts,
    });
    drop(key);
    end
}

/// Removes a session from its worker's gate when the session ends, however it ends.
struct Registered<'a> {
    ctx: &'a WorkerContext,
    session: &'a SessionGate,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(gate) = self.ctx.gate.try_borrow() {
            gate.unregister(&self.session.id);
        }
    }
}

/// The policy decision for a new session: admitted (and registered with the worker's gate
/// so later changes reach it), or refused with the reason and how to get access.
fn admit(
    session_id: Uuid,
    auth: &Authenticated,
    ctx: &WorkerContext,
) -> Result<(std::rc::Rc<SessionGate>, Option<Arc<Masker>>), Refusal> {
    let view = ctx.gate.borrow_mut().view()?;
    let principal = auth.principal();
    let subject = Subject {
        user: &principal.subject,
        groups: &principal.groups,
    };
    let now_ms = millis(SystemTime::now());
    let decision = view.decide(
        &subject,
        auth.resource(),
        now_ms,
        millis(principal.issued_at),
    );
    if let Decision::Deny(denied) = &decision {
        let sqlstate = match denied.kind {
            // The token predates a revocation: the credential is what is refused.
            sluice_control::policy::DenyKind::Revoked => "28000",
            _ => "42501",
        };
        return Err(Refusal::new(sqlstate, denied.message.clone()).hint(denied.hint.clone()));
    }
    let masker = match &decision {
        Decision::Allow(allowed) => match allowed.masking {
            None => None,
            Some(profile) => match view.masker(profile) {
                Some(masker) => Some(Arc::clone(masker)),
                // The policy does not compile without the profiles its rules name; if one
                // is missing anyway, nothing unmasked may flow.
                None => {
                    return Err(Refusal::new(
                        "42501",
                        format!("masking profile \"{profile}\" is not available in the gateway's policy snapshot"),
                    )
                    .hint("tell the gateway operator (sluice policy check)"))
                }
            },
        },
        Decision::Deny(_) => None,
    };
    let gate = ctx.gate.borrow();
    let session = gate.register(
        session_id.to_string(),
        &principal.subject,
        &principal.groups,
        auth.resource(),
        &view,
        &decision,
        now_ms,
    );
    Ok((session, masker))
}

/// Frames from the client that end the session once forwarded.
const TERMINATE: u8 = b'X';

/// Client frames that run (or prepare) a statement and so are checked against policy:
/// Query, Parse, Bind, Execute, FunctionCall.
const STATEMENT_TAGS: [u8; 5] = [b'Q', b'P', b'B', b'E', b'F'];

/// What the backend is sent instead of a refused statement: text that cannot parse, so the
/// backend answers with a syntax error (rewritten into the policy error before the client
/// sees it), aborts the transaction it is in, and skips to the next Sync, exactly as it
/// would for a statement of its own that failed. It also shows up, recognisably, in the
/// backend's log.
const SENTINEL_SQL: &str = "SLUICE REFUSED THIS STATEMENT";
/// The SQLSTATE PostgreSQL answers [`SENTINEL_SQL`] with (syntax_error).
const SENTINEL_SQLSTATE: &str = "42601";

/// A refused client frame, cut out of what is forwarded.
struct Replacement {
    offset: usize,
    len: usize,
    tag: u8,
    /// Sync points forwarded before it: its answer comes in this window.
    window: u64,
    refusal: Refusal,
}

/// Rebuilds `out` with each refused frame replaced by the sentinel, and queues the policy
/// error for downstream (before the bytes reach the backend, so the answer cannot overtake
/// it). Refusals are rare; this path copies.
fn substitute_refused(
    out: &[u8],
    replace: Vec<Replacement>,
    refused: &RefCell<VecDeque<(u64, Refusal)>>,
) -> Bytes {
    let mut rebuilt = BytesMut::with_capacity(out.len() + 64);
    let mut at = 0;
    for r in replace {
        rebuilt.extend_from_slice(&out[at..r.offset]);
        at = r.offset + r.len;
        match r.tag {
            // Query and FunctionCall end in ReadyForQuery on their own: a simple query
            // keeps the window structure intact.
            b'Q' | b'F' => FrontendMessage::Query {
                sql: Bytes::from_static(SENTINEL_SQL.as_bytes()),
            }
            .encode(&mut rebuilt),
            // Extended protocol: a Parse that fails; the backend then discards up to Sync.
            _ => FrontendMessage::Parse {
                name: Bytes::new(),
                sql: Bytes::from_static(SENTINEL_SQL.as_bytes()),
                param_types: Vec::new(),
            }
            .encode(&mut rebuilt),
        }
        refused.borrow_mut().push_back((r.window, r.refusal));
    }
    rebuilt.extend_from_slice(&out[at..]);
    rebuilt.freeze()
}

/// The SQLSTATE field of an ErrorResponse body.
fn error_code(body: &[u8]) -> Option<&[u8]> {
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            return None;
        }
        let end = tail.iter().position(|&b| b == 0)?;
        if kind == b'C' {
            return Some(&tail[..end]);
        }
        rest = &tail[end + 1..];
    }
    None
}

/// A backend frame replaced before the client sees it.
struct Patch {
    /// Where the frame starts in the forwarded bytes.
    offset: usize,
    /// Its length, header included.
    len: usize,
    with: PatchWith,
}

/// What replaces a backend frame.
enum PatchWith {
    /// The backend's error for a refused statement: ours goes out instead.
    Refusal(Refusal),
    /// The masker's frames, a range of the relay's masked-output buffer.
    Bytes(std::ops::Range<usize>),
}

/// Rebuilds `out` with each patched frame replaced, patches in stream order. Only reads
/// with a patched frame pay for this copy; everything else is forwarded as it came.
fn apply_patches(out: &[u8], patches: Vec<Patch>, masked: &[u8]) -> Bytes {
    let mut rebuilt = BytesMut::with_capacity(out.len() + 128);
    let mut at = 0;
    for patch in patches {
        rebuilt.extend_from_slice(&out[at..patch.offset]);
        at = patch.offset + patch.len;
        match patch.with {
            PatchWith::Refusal(refusal) => backend::encode_error(
                &mut rebuilt,
                "ERROR",
                &refusal.sqlstate,
                &refusal.message,
                None,
                refusal.hint.as_deref(),
            ),
            PatchWith::Bytes(range) => rebuilt.extend_from_slice(&masked[range]),
        }
    }
    rebuilt.extend_from_slice(&out[at..]);
    rebuilt.freeze()
}

/// How long a session whose client side has ended waits for its backend to close, so
/// the backend's last response still reaches the client whole.
const WIND_DOWN: std::time::Duration = std::time::Duration::from_secs(5);

/// How the backend learns that the client side is over.
enum Farewell {
    /// The client's own Terminate was forwarded.
    AlreadySent,
    /// Send a Terminate on the client's behalf.
    Terminate,
    /// The client stopped mid-message; a Terminate cannot follow a partial frame, so
    /// close our write side and let the backend see EOF.
    CloseWrite,
}

/// Ends the backend session and waits (bounded) for the backend to close, while the
/// downstream loop keeps forwarding whatever the backend still sends. The session ends
/// when downstream sees the backend's EOF, or after [`WIND_DOWN`].
async fn wind_down(backend_tx: &mut OwnedWriteHalf<Conn>, farewell: Farewell) {
    let told = match farewell {
        Farewell::AlreadySent => true,
        Farewell::Terminate => {
            let mut bye = BytesMut::new();
            FrontendMessage::Terminate.encode(&mut bye);
            write_all(backend_tx, bye.freeze()).await.is_ok()
        }
        Farewell::CloseWrite => backend_tx.shutdown().await.is_ok(),
    };
    if told {
        monoio::time::sleep(WIND_DOWN).await;
    }
}

/// The two connections of a session, and what the client sent after its startup.
struct Link {
    client: Conn,
    backend: Conn,
    leftover: BytesMut,
}

/// A session's statement state, shared by the relay's two directions (same task).
struct Statements {
    guard: RefCell<Guard>,
    facts: SessionFacts,
    cancel_requested: Arc<AtomicBool>,
    pending: RefCell<Pending>,
    /// The session's masking, when its policy names a profile. It follows the client's
    /// frames (to know each result's columns and formats) and rewrites the backend's.
    masking: Option<RefCell<SessionMasker>>,
    /// The session's recording, when recording is on.
    recording: Option<SessionRecording>,
    /// Whether this session's protocol messages are logged (sampled).
    trace: bool,
}

/// What a session masked, for its end event and log line.
struct MaskingTotals {
    profile: Option<String>,
    counts: BTreeMap<String, u64>,
}

impl MaskingTotals {
    fn of(masking: Option<&RefCell<SessionMasker>>) -> MaskingTotals {
        match masking {
            None => MaskingTotals {
                profile: None,
                counts: BTreeMap::new(),
            },
            Some(m) => {
                let m = m.borrow();
                MaskingTotals {
                    profile: Some(m.masker().name().to_owned()),
                    counts: m.counts().map(|(rule, n)| (rule.to_owned(), n)).collect(),
                }
            }
        }
    }
}

/// Reads the catalog rows a masking profile's `table` rules need (once per session, before
/// the client's first statement). A profile that names tables cannot be applied without
/// them, so failing here refuses the session.
async fn load_catalog(
    backend: &mut Conn,
    sql: &str,
    target: &BackendTarget,
) -> Result<Vec<CatalogColumn>, Refusal> {
    let failed = |why: String| {
        warn!(resource = %target.name, error = %why, "reading the catalog for masking failed");
        Refusal::new(
            "58000",
            format!(
                "could not read the catalog of resource \"{}\" that masking needs: {why}",
                target.name
            ),
        )
        .hint("masking by table cannot be applied, so the session is refused; tell the gateway operator")
    };
    let mut query = BytesMut::new();
    FrontendMessage::Query {
        sql: Bytes::copy_from_slice(sql.as_bytes()),
    }
    .encode(&mut query);
    write_all(backend, query.freeze())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let limits = Limits::default();
    let mut buf = BytesMut::with_capacity(8192);
    let mut columns = Vec::new();
    let mut error = None;
    loop {
        let message = read_message(backend, &mut buf, &limits, backend::decode)
            .await
            .map_err(|e| {
                failed(match e {
                    ReadFailure::Closed => "the connection closed".to_owned(),
                    ReadFailure::Io(e) => e.to_string(),
                    ReadFailure::Invalid(e) => e.to_string(),
                })
            })?;
        match message {
            BackendMessage::DataRow(row) => {
                let fields: Vec<Option<Bytes>> = row.columns().collect();
                let fields: Vec<Option<&[u8]>> = fields.iter().map(Option::as_deref).collect();
                match CatalogColumn::from_text_row(&fields) {
                    Some(column) => columns.push(column),
                    None => error = Some("a catalog row had an unexpected shape".to_owned()),
                }
            }
            BackendMessage::ErrorResponse(fields) => {
                let message = fields
                    .message()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .unwrap_or_default();
                error = Some(message);
            }
            BackendMessage::ReadyForQuery { .. } => break,
            _ => {}
        }
    }
    if !buf.is_empty() {
        return Err(failed("the backend sent more than was asked".to_owned()));
    }
    match error {
        Some(why) => Err(failed(why)),
        None => Ok(columns),
    }
}

/// The client's write half, shared by the downstream loop (which relays the backend) and
/// the upstream loop (which must tell a client its statement is held). A frame of ours is
/// only ever written between frames of the backend's.
struct ClientWriter {
    tx: RefCell<Option<OwnedWriteHalf<Conn>>>,
    /// Whether everything written so far ends at a frame boundary.
    at_boundary: Cell<bool>,
    waiting: Cell<bool>,
    returned: tokio::sync::Notify,
}

impl ClientWriter {
    fn new(tx: OwnedWriteHalf<Conn>) -> ClientWriter {
        ClientWriter {
            tx: RefCell::new(Some(tx)),
            at_boundary: Cell::new(true),
            waiting: Cell::new(false),
            returned: tokio::sync::Notify::new(),
        }
    }

    async fn take(&self) -> OwnedWriteHalf<Conn> {
        loop {
            if let Some(tx) = self.tx.borrow_mut().take() {
                return tx;
            }
            self.waiting.set(true);
            self.returned.notified().await;
        }
    }

    fn put(&self, tx: OwnedWriteHalf<Conn>) {
        *self.tx.borrow_mut() = Some(tx);
        if self.waiting.replace(false) {
            self.returned.notify_waiters();
        }
    }

    /// Relays backend bytes; `boundary_after` says whether they end between frames.
    async fn relay(&self, bytes: Bytes, boundary_after: bool) -> std::io::Result<()> {
        let mut tx = self.take().await;
        self.at_boundary.set(false);
        let result = write_all(&mut tx, bytes).await;
        self.at_boundary.set(result.is_ok() && boundary_after);
        self.put(tx);
        result
    }

    /// Writes whole frames of the gateway's own once the stream is between frames.
    async fn inject(&self, frames: Bytes) -> std::io::Result<()> {
        loop {
            if !self.at_boundary.get() {
                self.waiting.set(true);
                self.returned.notified().await;
                continue;
            }
            let mut tx = self.take().await;
            if !self.at_boundary.get() {
                self.put(tx);
                continue;
            }
            let result = write_all(&mut tx, frames).await;
            self.at_boundary.set(result.is_ok());
            self.put(tx);
            return result;
        }
    }

    /// Takes the writer for good (the session is ending), if no write is under way.
    fn into_inner(self) -> Option<OwnedWriteHalf<Conn>> {
        self.tx.into_inner()
    }
}

/// Client frames the statement guard judges: Query, Parse, Bind, Execute, FunctionCall,
/// and Close (which only updates its bookkeeping).
const JUDGED_TAGS: [u8; 6] = [b'Q', b'P', b'B', b'E', b'F', b'C'];

/// Judges one client frame: the session-level verdict first (revoked, outside hours,
/// no fresh policy), then the statement rules.
fn judge(
    tag: u8,
    body: &[u8],
    ctx: &WorkerContext,
    session: &SessionGate,
    statements: &Statements,
) -> Checked {
    if STATEMENT_TAGS.contains(&tag) {
        if let Some(refusal) = ctx.gate.borrow_mut().statement_check(session) {
            return Checked::refuse(refusal);
        }
    }
    if cfg!(feature = "bench-no-statement-policy") {
        return Checked::unjudged();
    }
    let rules = session.statement_rules();
    let Some(rules) = rules.as_ref() else {
        return Checked::refuse(
            Refusal::new(REFUSED, "no statement policy is in force for this session")
                .hint("tell the gateway operator (sluice status)"),
        );
    };
    let mut classifier = ctx.classifier.borrow_mut();
    statements
        .guard
        .borrow_mut()
        .check(tag, body, &mut classifier, rules)
}

/// Wall-clock milliseconds from a monotonic instant, so a statement costs one clock read:
/// the wall clock is read once per session and advanced by the monotonic one.
struct WallClock {
    base: Instant,
    base_ms: u64,
}

impl WallClock {
    fn new() -> WallClock {
        WallClock {
            base: Instant::now(),
            base_ms: millis(SystemTime::now()),
        }
    }

    fn wall_ms(&self, now: Instant) -> u64 {
        self.base_ms
            .saturating_add(now.saturating_duration_since(self.base).as_millis() as u64)
    }
}

/// One log line per refused statement, with the rule's explanation (the same words the
/// client got); its audit event follows when the backend has answered.
fn log_refusal(facts: &SessionFacts, checked: &Checked, refusal: &Refusal) {
    let first = checked.audit.first();
    info!(
        session = %facts.session, principal = %facts.user, resource = %facts.resource,
        sqlstate = %refusal.sqlstate,
        class = first.and_then(|a| a.statement()).map_or("-", |s| s.class.as_str()),
        rule = first.and_then(|a| a.decision.rule.as_deref()).unwrap_or("-"),
        fingerprint = %first.map_or(String::new(), |a| a.classification.fingerprint_hex()),
        reason = %refusal.message,
        "statement refused"
    );
}

/// The end of a hold.
enum Held {
    Approved(Approval),
    Refused(Refusal, Option<Approval>),
}

impl Held {
    /// The approval request's decision, when one was made (a refusal before any request,
    /// or a timeout, has none).
    fn approval(&self) -> Option<&Approval> {
        match self {
            Held::Approved(a) => Some(a),
            Held::Refused(_, a) => a.as_ref(),
        }
    }
}

/// Withdraws a request that is still pending when the session stops waiting for it.
struct Outstanding<'a> {
    ctx: &'a WorkerContext,
    id: String,
    reason: &'static str,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if let Ok(gate) = self.ctx.gate.try_borrow() {
            gate.send_event(&ProxyEvent::ApprovalWithdrawn {
                id: std::mem::take(&mut self.id),
                reason: self.reason.to_owned(),
            });
        }
    }
}

/// How often a held statement looks for its approver's decision.
const HOLD_POLL: Duration = Duration::from_millis(100);
/// Approval timeout when the snapshot does not say.
const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(600);

/// Holds a statement until an approver decides, the request times out, or the client
/// cancels. The statement has not been sent; the client is told why it waits.
async fn hold_for_approval(
    checked: &Checked,
    ctx: &WorkerContext,
    statements: &Statements,
    writer: &ClientWriter,
) -> Held {
    let (Action::Hold(decision), Some(audited)) = (&checked.action, checked.audit.first()) else {
        return Held::Refused(
            Refusal::new(
                REFUSED,
                "internal error: a held statement without a decision",
            ),
            None,
        );
    };
    let facts = &statements.facts;
    let fingerprint = format!("{:016x}", audited.classification.fingerprint);
    let view = match ctx.gate.borrow_mut().view() {
        Ok(view) => view,
        Err(refusal) => return Held::Refused(refusal, None),
    };
    if let Some(earlier) = view.fingerprint_approved(&facts.session, &fingerprint) {
        statements
            .guard
            .borrow_mut()
            .approve_fingerprint(audited.classification.fingerprint);
        return Held::Approved(Approval {
            id: earlier.id.clone(),
            approvers: earlier.approvers.clone(),
            approved: true,
        });
    }
    let id = Uuid::now_v7().to_string();
    let command = audited
        .statement()
        .map_or("statement", |s| s.command.as_str());
    let rule = decision.rule.as_deref().unwrap_or("");
    let mut request = ProxyEvent::ApprovalRequested {
        id: id.clone(),
        session: facts.session.clone(),
        user: facts.user.clone(),
        groups: facts.groups.clone(),
        resource: facts.resource.clone(),
        rule: rule.to_owned(),
        statement: audited.classification.normalized.clone(),
        fingerprint: fingerprint.clone(),
        class: audited
            .statement()
            .map_or("unknown", |s| s.class.as_str())
            .to_owned(),
        requested_at_ms: millis(SystemTime::now()),
    };
    // The request travels in one datagram: shorten the statement text (the approver sees
    // the fingerprint and the start) until it fits, escaping included.
    while serde_json::to_vec(&request).map_or(0, |v| v.len()) > MAX_EVENT {
        let ProxyEvent::ApprovalRequested { statement, .. } = &mut request else {
            break;
        };
        if statement.len() <= 8 {
            break;
        }
        let mut cut = statement.len() / 2;
        while !statement.is_char_boundary(cut) {
            cut -= 1;
        }
        statement.truncate(cut);
        statement.push('…');
    }
    let sent = ctx.gate.borrow().send_event(&request);
    if !sent {
        return Held::Refused(
            Refusal::new(
                REFUSED,
                format!(
                    "{} needs approval, but Sluice's approval service (its control process) cannot be reached",
                    decision.message
                ),
            )
            .hint("try again later, or tell the gateway operator (sluice status)"),
            None,
        );
    }
    let mut outstanding = Outstanding {
        ctx,
        id: id.clone(),
        reason: "session ended",
    };
    let timeout = match view.approval_timeout_ms {
        0 => DEFAULT_APPROVAL_TIMEOUT,
        ms => Duration::from_millis(ms),
    };
    drop(view);
    info!(
        session = %facts.session, principal = %facts.user, resource = %facts.resource,
        approval = %id, rule, fingerprint = %fingerprint, command,
        "statement held for approval"
    );
    let mut notice = BytesMut::new();
    backend::encode_notice(
        &mut notice,
        "NOTICE",
        "01000",
        &format!(
            "held for approval: request {id} — an approver runs `sluice approvals approve {id}`"
        ),
        Some(&format!(
            "{}. Approvers: {}. Waiting up to {}; cancel the statement (Ctrl-C) to withdraw the request. Session {}.",
            decision.message,
            decision.approvers.join(", "),
            humanize(timeout),
            facts.session
        )),
    );
    if writer.inject(notice.freeze()).await.is_err() {
        return Held::Refused(Refusal::new("08006", "the client went away"), None);
    }
    statements.cancel_requested.store(false, Ordering::Release);
    let deadline = Instant::now() + timeout;
    loop {
        monoio::time::sleep(HOLD_POLL).await;
        if statements.cancel_requested.swap(false, Ordering::AcqRel) {
            outstanding.reason = "cancelled by the client";
            info!(session = %facts.session, approval = %id, "held statement cancelled by the client; request withdrawn");
            return Held::Refused(
                Refusal::new(
                    "57014",
                    format!(
                        "canceling statement due to user request; approval request {id} withdrawn"
                    ),
                ),
                None,
            );
        }
        if Instant::now() >= deadline {
            outstanding.reason = "timed out";
            warn!(session = %facts.session, approval = %id, "approval request timed out");
            return Held::Refused(
                Refusal::new(
                    REFUSED,
                    format!(
                        "approval request {id} was not decided within {}; the statement was not run",
                        humanize(timeout)
                    ),
                )
                .hint("ask an approver to look at `sluice approvals list`, then run the statement again"),
                None,
            );
        }
        let view = match ctx.gate.borrow_mut().view() {
            Ok(view) => view,
            Err(refusal) => {
                outstanding.reason = "policy snapshot unavailable";
                return Held::Refused(refusal, None);
            }
        };
        let Some(decided) = view.approval(&id) else {
            continue;
        };
        // Decided: nothing to withdraw.
        outstanding.id.clear();
        std::mem::forget(outstanding);
        let approval = Approval {
            id: id.clone(),
            approvers: decided.approvers.clone(),
            approved: decided.approved,
        };
        if decided.approved {
            if decided.scope == ApprovalScope::Fingerprint {
                statements
                    .guard
                    .borrow_mut()
                    .approve_fingerprint(audited.classification.fingerprint);
            }
            info!(session = %facts.session, approval = %id, approvers = ?decided.approvers, "held statement approved; sending it");
            return Held::Approved(approval);
        }
        let reason = decided
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        info!(session = %facts.session, approval = %id, approvers = ?decided.approvers, "held statement refused by an approver");
        return Held::Refused(
            Refusal::new(
                REFUSED,
                format!(
                    "approval request {id} was refused by {}{reason}",
                    decided.approvers.join(", ")
                ),
            )
            .hint("the statement was not run; talk to the approver"),
            Some(approval),
        );
    }
}

fn humanize(d: Duration) -> String {
    humantime_like(d.as_secs())
}

fn humantime_like(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 && s >= 3600 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s >= 60 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Lists the protocol messages in the bytes a session forwards, for a sampled session's
/// trace (`logging.protocol_trace_sample`): type and length only, never a value. Forwarded
/// bytes start at a message boundary or inside a message already listed (a large message
/// goes out in pieces), and never hold half a header.
#[derive(Default)]
struct FrameTrace {
    /// Bytes of a message listed earlier that are still to come.
    rest_of_frame: usize,
}

impl FrameTrace {
    /// The messages that start in `chunk`: type, length (with the type byte) and, for a
    /// backend error or notice held whole, its SQLSTATE.
    fn messages(&mut self, chunk: &[u8], backend: bool) -> Vec<(u8, usize, Option<String>)> {
        let mut out = Vec::new();
        let mut at = self.rest_of_frame.min(chunk.len());
        self.rest_of_frame -= at;
        while let Some(header) = chunk.get(at..at + 5) {
            let tag = header[0];
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize + 1;
            let sqlstate = match chunk.get(at + 5..at + len) {
                Some(body) if backend && matches!(tag, b'E' | b'N') => {
                    error_code(body).map(|c| String::from_utf8_lossy(c).into_owned())
                }
                _ => None,
            };
            out.push((tag, len, sqlstate));
            if at + len > chunk.len() {
                self.rest_of_frame = at + len - chunk.len();
                break;
            }
            at += len;
        }
        out
    }

    fn list(&mut self, chunk: &[u8], session: &str, direction: &'static str) {
        for (tag, len, sqlstate) in self.messages(chunk, direction == "backend") {
            info!(
                target: "sluice::protocol",
                session, direction, kind = %char::from(tag), bytes = len,
                sqlstate = sqlstate.as_deref().unwrap_or(""),
                "protocol message"
            );
        }
    }
}

/// A round trip being timed: when the client's bytes arrived and when they were sent on.
#[derive(Clone, Copy)]
struct RoundTrip {
    read_at: Instant,
    sent: Instant,
    class: sluice_classify::Class,
    fingerprint: u64,
}

/// Counts a statement as held while it waits for an approver, however the wait ends
/// (decided, or the session dropped mid-wait).
struct HeldGauge<'a> {
    metrics: &'a WorkerMetrics,
    since: Instant,
}

impl<'a> HeldGauge<'a> {
    fn start(metrics: &'a WorkerMetrics) -> HeldGauge<'a> {
        metrics.held.inc();
        HeldGauge {
            metrics,
            since: Instant::now(),
        }
    }
}

impl Drop for HeldGauge<'_> {
    fn drop(&mut self) {
        self.metrics.held_settled.inc();
        self.metrics.approval_wait.record(self.since.elapsed());
    }
}

async fn relay(
    link: Link,
    ctx: &WorkerContext,
    counters: &Counters,
    session: &SessionGate,
    statements: &Statements,
) -> End {
    let Link {
        client,
        backend,
        leftover,
    } = link;
    let resource = session.resource();
    let (mut client_rx, client_tx) = client.into_split();
    let (mut backend_rx, mut backend_tx) = backend.into_split();
    let writer = ClientWriter::new(client_tx);
    let buffer = ctx.config.limits.buffer_bytes;
    let max_len = ctx.config.limits.max_message_bytes;

    // When the client side ends first (Terminate, EOF, a protocol error), the reason is
    // kept here while `wind_down` lets the backend finish: the downstream loop forwards
    // whatever the backend still sends and ends at its EOF, so no response is cut in half
    // and a FATAL of ours goes out only after it, between frames.
    let upstream_end: Cell<Option<End>> = Cell::new(None);
    let masking = statements.masking.as_ref();
    // Statements refused by policy, oldest first: the sync window (count of ReadyForQuery
    // the client will have seen before it) whose error is ours to rewrite, and the error.
    let refused: RefCell<VecDeque<(u64, Refusal)>> = RefCell::new(VecDeque::new());
    // The round trip being timed, if any: one at a time, so pipelined statements are
    // sampled rather than each paying for clock reads.
    let timing: Cell<Option<RoundTrip>> = Cell::new(None);
    let meter = statements.facts.meter.as_ref();
    let time_round_trips = ctx.time_round_trips && meter.is_some();
    let trace = statements.trace;
    let session_id = statements.facts.session.as_str();
    let upstream = async {
        let mut walker = FrameWalker::new(max_len);
        let mut frame_trace = FrameTrace::default();
        let mut buf = leftover;
        // Sync points forwarded (Query, FunctionCall, Sync): each yields one ReadyForQuery.
        let mut syncs_sent: u64 = 0;
        // The verdict on the frame at the front of `buf`, once a hold has settled it.
        let mut settled: Option<(Checked, Option<Approval>)> = None;
        let clock = WallClock::new();
        // When the bytes in `buf` arrived (for the added-latency histogram).
        let mut read_at: Option<Instant> = None;
        loop {
            if !buf.is_empty() {
                let mut terminated = false;
                let mut statements_seen = 0;
                // The first statement forwarded in this batch: what a timed round trip
                // is attributed to.
                let mut first_forwarded: Option<(sluice_classify::Class, u64)> = None;
                // A refused frame is held whole (so it can be cut out) and replaced by a
                // statement that fails on the backend: the backend then aborts the
                // transaction and answers in order, and downstream rewrites its error.
                let mut replace: Vec<Replacement> = Vec::new();
                let mut held: Option<Checked> = None;
                let walked = walker.walk_until(
                    &buf,
                    |tag| {
                        JUDGED_TAGS.contains(&tag)
                            || (masking.is_some() && SessionMasker::inspects_client(tag))
                    },
                    |header, offset, body| {
                        let tag = header.tag;
                        if JUDGED_TAGS.contains(&tag) {
                            let (mut checked, approval) = match settled.take() {
                                Some(done) => done,
                                None => (judge(tag, body, ctx, session, statements), None),
                            };
                            let refused_now = match &checked.action {
                                Action::Hold(_) => {
                                    held = Some(checked);
                                    return false;
                                }
                                Action::Refuse(refusal) => {
                                    log_refusal(&statements.facts, &checked, refusal);
                                    replace.push(Replacement {
                                        offset,
                                        len: header.frame_len(),
                                        tag,
                                        window: syncs_sent,
                                        refusal: refusal.clone(),
                                    });
                                    true
                                }
                                Action::Forward => {
                                    if first_forwarded.is_none() {
                                        first_forwarded = checked.audit.first().map(|a| {
                                            (
                                                a.statement()
                                                    .map_or(sluice_classify::Class::Unknown, |s| {
                                                        s.class
                                                    }),
                                                a.classification.fingerprint,
                                            )
                                        });
                                    }
                                    false
                                }
                            };
                            if trace {
                                for audited in &checked.audit {
                                    info!(
                                        target: "sluice::protocol",
                                        session = session_id,
                                        statement = %audited.classification.normalized,
                                        refused = refused_now,
                                        "statement"
                                    );
                                }
                            }
                            if !checked.audit.is_empty() {
                                let raw = session.audit_literals().then(|| {
                                    let text = body
                                        .split(|&b| b == 0)
                                        .nth(usize::from(tag == b'P'))
                                        .unwrap_or(body);
                                    let text = String::from_utf8_lossy(text).into_owned();
                                    // A literal the session's profile would mask in a
                                    // result is masked in its audit trail too.
                                    masking
                                        .and_then(|m| m.borrow().masker().mask_text(&text))
                                        .unwrap_or(text)
                                });
                                let now = Instant::now();
                                let now_ms = clock.wall_ms(now);
                                let mut pending = statements.pending.borrow_mut();
                                for audited in checked.audit.drain(..) {
                                    pending.push(PendingStatement {
                                        window: syncs_sent,
                                        audited,
                                        approval: approval.clone(),
                                        raw: raw.clone(),
                                        sent: now,
                                        sent_ms: now_ms,
                                        refused: refused_now,
                                    });
                                }
                            }
                            statements.guard.borrow_mut().forwarded(checked);
                        }
                        if let Some(masking) = masking {
                            if SessionMasker::inspects_client(tag) {
                                // In the order the backend gets them (a refused frame's
                                // stand-in fails on the backend, which the masker sees as
                                // that frame's error).
                                masking.borrow_mut().client_frame(tag, body);
                            }
                        }
                        match tag {
                            b'Q' | b'F' => {
                                statements_seen += 1;
                                syncs_sent += 1;
                            }
                            b'E' => statements_seen += 1,
                            b'S' => syncs_sent += 1,
                            TERMINATE => terminated = true,
                            _ => {}
                        }
                        true
                    },
                );
                let walked = match walked {
                    Ok(walked) => walked,
                    Err(e) => {
                        upstream_end.set(Some(End::Protocol("client", e.clone())));
                        wind_down(&mut backend_tx, Farewell::Terminate).await;
                        return End::Protocol("client", e);
                    }
                };
                counters
                    .statements
                    .set(counters.statements.get() + statements_seen);
                if walked.forward > 0 {
                    counters
                        .bytes_from_client
                        .set(counters.bytes_from_client.get() + walked.forward as u64);
                    ctx.metrics.bytes_from_client.add(walked.forward as u64);
                    let out = buf.split_to(walked.forward).freeze();
                    if let Some(recording) = &statements.recording {
                        // What the client sent, refused statements included.
                        if let Err(refusal) = recording.client(&out, masking) {
                            upstream_end.set(Some(End::Terminated(refusal.clone())));
                            wind_down(&mut backend_tx, Farewell::Terminate).await;
                            return End::Terminated(refusal);
                        }
                    }
                    let out = if replace.is_empty() {
                        out
                    } else {
                        substitute_refused(&out, replace, &refused)
                    };
                    if let (true, Some((class, fingerprint)), None) =
                        (time_round_trips, first_forwarded, timing.get())
                    {
                        let sent = Instant::now();
                        timing.set(Some(RoundTrip {
                            read_at: read_at.unwrap_or(sent),
                            sent,
                            class,
                            fingerprint,
                        }));
                    }
                    if trace {
                        frame_trace.list(&out, session_id, "client");
                    }
                    if let Err(e) = write_all(&mut backend_tx, out).await {
                        return End::Io("backend", e);
                    }
                }
                if terminated {
                    upstream_end.set(Some(End::ClientClosed));
                    wind_down(&mut backend_tx, Farewell::AlreadySent).await;
                    return End::ClientClosed;
                }
                if let Some(checked) = held {
                    // Everything before the held frame is on its way; the frame itself
                    // (and whatever the client pipelined after it) waits here.
                    let waiting = HeldGauge::start(&ctx.metrics);
                    let outcome = hold_for_approval(&checked, ctx, statements, &writer).await;
                    drop(waiting);
                    if let (Some(recording), Some(approval)) =
                        (&statements.recording, outcome.approval())
                    {
                        let record = RecordKind::Approval(RecordedApproval {
                            request_id: approval.id.clone(),
                            approver: (!approval.approvers.is_empty())
                                .then(|| approval.approvers.join(", ")),
                            outcome: if approval.approved {
                                ApprovalOutcome::Approved
                            } else {
                                ApprovalOutcome::Rejected
                            },
                        });
                        if let Err(refusal) = recording.append(record) {
                            upstream_end.set(Some(End::Terminated(refusal.clone())));
                            wind_down(&mut backend_tx, Farewell::Terminate).await;
                            return End::Terminated(refusal);
                        }
                    }
                    settled = Some(match outcome {
                        Held::Approved(approval) => (checked.settle(None), Some(approval)),
                        Held::Refused(refusal, approval) => {
                            (checked.settle(Some(refusal)), approval)
                        }
                    });
                    continue;
                }
                if let Some(need) = walked.need_capacity {
                    buf.reserve(need.saturating_sub(buf.len()));
                }
            }
            let (result, b) = read_into(&mut client_rx, buf, buffer / 4).await;
            buf = b;
            if time_round_trips {
                read_at = Some(Instant::now());
            }
            match result {
                Ok(0) => {
                    // The client closed (or half-closed) without Terminate: end the backend
                    // session as PostgreSQL's own client would, after what it already sent.
                    upstream_end.set(Some(End::ClientClosed));
                    let farewell = if walker.at_boundary() {
                        Farewell::Terminate
                    } else {
                        Farewell::CloseWrite
                    };
                    wind_down(&mut backend_tx, farewell).await;
                    return End::ClientClosed;
                }
                Ok(_) => {}
                Err(e) => return End::Io("client", e),
            }
        }
    };

    let downstream = async {
        let mut walker = FrameWalker::new(max_len);
        let mut frame_trace = FrameTrace::default();
        let mut buf = BytesMut::with_capacity(buffer);
        let mut windows_seen: u64 = 0;
        // What the masker sends instead of the frames it rewrites (reused per read).
        let mut masked: Vec<u8> = Vec::new();
        loop {
            let (result, b) = read_into(&mut backend_rx, buf, buffer / 4).await;
            buf = b;
            match result {
                Ok(0) if buf.is_empty() && walker.at_boundary() => {
                    return (End::BackendClosed, true)
                }
                Ok(0) => {
                    let cut = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "backend closed in the middle of a message",
                    );
                    return (End::Io("backend", cut), walker.at_boundary());
                }
                Ok(_) => {}
                Err(e) => return (End::Io("backend", e), walker.at_boundary()),
            }
            // The answer to a timed round trip starts here.
            let answered = timing.take().map(|trip| (trip, Instant::now()));
            let mask_started = (time_round_trips && masking.is_some()).then(Instant::now);
            let mut patches: Vec<Patch> = Vec::new();
            masked.clear();
            // Count ReadyForQuery frames (one compare per frame header) so that a refused
            // statement's window is known; while one is in flight, that window's first
            // ErrorResponse is rewritten into the policy error. Answers to statements
            // (CommandComplete, errors) close their audit events.
            let due = |window: u64| refused.borrow().front().is_some_and(|(w, _)| *w == window);
            let windows = Cell::new(windows_seen);
            let walked = walker.walk(
                &buf,
                |tag| {
                    matches!(tag, b'C' | b'E' | b'S')
                        || (masking.is_some() && SessionMasker::inspects_backend(tag))
                },
                |header, offset, body| {
                    let mut ours = false;
                    match header.tag {
                        b'E' => {
                            let mut code = error_code(body)
                                .and_then(|c| std::str::from_utf8(c).ok())
                                .unwrap_or("XX000");
                            let refused_here = if due(windows.get()) {
                                refused.borrow_mut().pop_front()
                            } else {
                                None
                            };
                            let rewritten;
                            if let Some((_, refusal)) = refused_here {
                                if code == SENTINEL_SQLSTATE {
                                    rewritten = refusal.sqlstate.clone();
                                    code = &rewritten;
                                    ours = true;
                                    patches.push(Patch {
                                        offset,
                                        len: header.frame_len(),
                                        with: PatchWith::Refusal(refusal),
                                    });
                                }
                            }
                            statements.pending.borrow_mut().answer(
                                Answer::Error(code),
                                &statements.facts,
                                &ctx.audit,
                            );
                        }
                        b'C' => statements.pending.borrow_mut().answer(
                            Answer::Complete(body),
                            &statements.facts,
                            &ctx.audit,
                        ),
                        b'I' | b's' | b'V' => statements.pending.borrow_mut().answer(
                            Answer::Other,
                            &statements.facts,
                            &ctx.audit,
                        ),
                        b'S' => {
                            let mut fields = body.split(|&b| b == 0);
                            if let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                                statements.guard.borrow_mut().parameter_status(name, value);
                            }
                        }
                        b'Z' => {
                            let closed = windows.get();
                            windows.set(closed + 1);
                            let mut queue = refused.borrow_mut();
                            while queue.front().is_some_and(|(w, _)| *w < windows.get()) {
                                queue.pop_front();
                            }
                            statements.pending.borrow_mut().window_closed(
                                closed,
                                &statements.facts,
                                &ctx.audit,
                            );
                        }
                        _ => {}
                    }
                    if let Some(masking) = masking {
                        if SessionMasker::inspects_backend(header.tag) {
                            // Mask before anything else sees the data. An error of ours (a
                            // refusal) still passes through the masker, which follows the
                            // stream, but what it would send is replaced by the refusal.
                            let start = masked.len();
                            let rewrite =
                                masking
                                    .borrow_mut()
                                    .backend_frame(header.tag, body, &mut masked);
                            if ours {
                                masked.truncate(start);
                            } else if rewrite {
                                patches.push(Patch {
                                    offset,
                                    len: header.frame_len(),
                                    with: PatchWith::Bytes(start..masked.len()),
                                });
                            }
                        }
                    }
                },
            );
            windows_seen = windows.get();
            let walked = match walked {
                Ok(walked) => walked,
                // Everything forwarded so far ends at a frame boundary: the bad
                // header was not released.
                Err(e) => return (End::Protocol("backend", e), true),
            };
            if let Some(started) = mask_started {
                ctx.metrics.masking_bytes.add(walked.forward as u64);
                ctx.metrics
                    .masking_ns
                    .add(started.elapsed().as_nanos() as u64);
            }
            if walked.forward > 0 {
                counters
                    .bytes_from_backend
                    .set(counters.bytes_from_backend.get() + walked.forward as u64);
                ctx.metrics.bytes_from_backend.add(walked.forward as u64);
                let out = buf.split_to(walked.forward).freeze();
                let out = if patches.is_empty() {
                    out
                } else {
                    apply_patches(&out, patches, &masked)
                };
                if let Some(recording) = &statements.recording {
                    // Exactly what the client is shown.
                    if let Err(refusal) = recording.server(&out) {
                        return (End::Terminated(refusal), walker.at_boundary());
                    }
                }
                if let (Some((trip, first_byte)), Some(meter)) = (answered, meter) {
                    let relayed = Instant::now();
                    let added = (trip.sent - trip.read_at) + (relayed - first_byte);
                    let added_ns = added.as_nanos() as u64;
                    let upstream_ns = (first_byte - trip.sent).as_nanos() as u64;
                    if let Some(resource) = meter.resource() {
                        resource.round_trip(trip.class, added_ns, upstream_ns);
                    }
                    meter.top.borrow_mut().added(trip.fingerprint, added_ns);
                }
                if trace {
                    frame_trace.list(&out, session_id, "backend");
                }
                if let Err(e) = writer.relay(out, walker.at_boundary()).await {
                    return (End::Io("client", e), false);
                }
            }
            if let Some(need) = walked.need_capacity {
                buf.reserve(need.saturating_sub(buf.len()));
            }
        }
    };

    // One task, two loops; whichever ends first ends the session and drops the other,
    // which cancels its pending read. No per-I/O select on the hot path.
    let (end, backend_at_boundary) = monoio::select! {
        end = upstream => (end, writer.at_boundary.get()),
        (end, at_boundary) = downstream => (end, at_boundary),
        _ = session.ended.notified() => {
            let refusal = session.termination().unwrap_or_else(|| {
                Refusal::new("57P01", "terminating connection by order of the gateway")
            });
            (End::Terminated(refusal), writer.at_boundary.get())
        }
    };
    statements
        .pending
        .borrow_mut()
        .abandon(&statements.facts, &ctx.audit);
    // When the client side ended first, its reason stands, whatever the backend did while
    // it wound down.
    let end = upstream_end.take().unwrap_or(end);
    let notice = match &end {
        End::Protocol("client", e) => Some(Refusal::new(
            "08P01",
            format!("invalid message from client: {e}"),
        )),
        End::Protocol(_, e) => Some(Refusal::new(
            "08P01",
            format!("resource \"{resource}\" sent an invalid message: {e}"),
        )),
        End::BackendClosed | End::Io("backend", _) => Some(Refusal::new(
            "08006",
            format!("connection to resource \"{resource}\" was lost"),
        )),
        End::Terminated(refusal) => Some(refusal.clone()),
        _ => None,
    };
    // A write cut short when its loop was dropped leaves no writer behind; the client
    // then just sees the connection close.
    if let Some(mut client_tx) = writer.into_inner() {
        if let Some(notice) = notice {
            // A FATAL can only be injected between frames; mid-frame the client will see
            // the connection close instead.
            if backend_at_boundary {
                let _ = write_all(&mut client_tx, notice.to_bytes()).await;
            }
        }
        let _ = client_tx.shutdown().await;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn frames(stream: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = stream;
        while !rest.is_empty() {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            out.push((rest[0], rest[5..1 + len].to_vec()));
            rest = &rest[1 + len..];
        }
        out
    }

    #[test]
    fn the_protocol_trace_lists_messages_across_pieces_and_never_values() {
        let mut stream = frame(b'T', b"\0\x01email\0");
        stream.extend(frame(b'D', &[b'x'; 40]));
        stream.extend(frame(b'E', b"SERROR\0C23505\0Mduplicate key 4242\0\0"));
        stream.extend(frame(b'Z', b"I"));
        let mut trace = FrameTrace::default();
        // The DataRow leaves in two pieces, as a large one would.
        let cut = 13 + 10;
        let first = trace.messages(&stream[..cut], true);
        let second = trace.messages(&stream[cut..], true);
        let tags: Vec<(u8, usize)> = first.iter().chain(&second).map(|m| (m.0, m.1)).collect();
        assert_eq!(tags, vec![(b'T', 13), (b'D', 45), (b'E', 40), (b'Z', 6)]);
        assert_eq!(second[0].2.as_deref(), Some("23505"));
        // Client messages never carry a SQLSTATE.
        assert!(FrameTrace::default()
            .messages(&frame(b'E', b"C23505\0\0"), false)
            .iter()
            .all(|m| m.2.is_none()));
    }

    #[test]
    fn the_refusal_log_budget_summarizes_a_flood() {
        let budget = RefusalLogBudget::new(3);
        let t0 = Instant::now();
        let allowed = (0..10).filter(|_| budget.allow(t0)).count();
        assert_eq!(allowed, 3);
        assert_eq!(budget.suppressed.get(), 7);
        budget.roll(t0 + Duration::from_millis(500));
        assert_eq!(budget.suppressed.get(), 7, "the same second");
        assert!(budget.allow(t0 + Duration::from_secs(1)));
        assert_eq!(budget.suppressed.get(), 0, "a new second starts afresh");
    }

    #[test]
    fn refused_frames_are_replaced_by_the_sentinel_and_queued_by_window() {
        let q1 = frame(b'Q', b"SELECT 1\0");
        let q2 = frame(b'Q', b"DROP TABLE t\0");
        let parse = frame(b'P', b"s\0SELECT 2\0\0\0");
        let sync = frame(b'S', b"");
        let stream = [q1.clone(), q2.clone(), parse.clone(), sync.clone()].concat();
        let refused = RefCell::new(VecDeque::new());
        let deny = Refusal::new("42501", "no");
        let out = substitute_refused(
            &stream,
            vec![
                Replacement {
                    offset: q1.len(),
                    len: q2.len(),
                    tag: b'Q',
                    window: 1,
                    refusal: deny.clone(),
                },
                Replacement {
                    offset: q1.len() + q2.len(),
                    len: parse.len(),
                    tag: b'P',
                    window: 2,
                    refusal: deny.clone(),
                },
            ],
            &refused,
        );
        let seen = frames(&out);
        assert_eq!(seen.len(), 4, "one frame out for each frame in");
        assert_eq!(seen[0], (b'Q', b"SELECT 1\0".to_vec()));
        assert_eq!(seen[1].0, b'Q');
        assert!(seen[1].1.starts_with(SENTINEL_SQL.as_bytes()));
        assert_eq!(
            seen[2].0, b'P',
            "a refused Parse stays a Parse so Sync still ends it"
        );
        assert!(!seen[2].1.windows(4).any(|w| w == b"SELE"));
        assert_eq!(seen[3], (b'S', Vec::new()));
        let queued: Vec<u64> = refused.borrow().iter().map(|(w, _)| *w).collect();
        assert_eq!(queued, vec![1, 2]);
    }

    #[test]
    fn backend_errors_are_recognised_and_rewritten_in_place() {
        let mut error = BytesMut::new();
        backend::encode_error(&mut error, "ERROR", "42601", "syntax error", None, None);
        let error = error.to_vec();
        assert_eq!(error_code(&error[5..]), Some(&b"42601"[..]));
        assert_eq!(error_code(b"\0"), None);
        assert_eq!(error_code(b"Cunterminated"), None);

        let ready = frame(b'Z', b"T");
        let stream = [error.clone(), ready.clone()].concat();
        let refusal = Refusal::new("42501", "access to \"app\" denied").hint("ask");
        let out = apply_patches(
            &stream,
            vec![Patch {
                offset: 0,
                len: error.len(),
                with: PatchWith::Refusal(refusal),
            }],
            &[],
        );
        let seen = frames(&out);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, b'E');
        assert_eq!(error_code(&seen[0].1), Some(&b"42501"[..]));
        assert!(seen[0].1.windows(6).any(|w| w == b"denied"));
        assert_eq!(seen[1], (b'Z', b"T".to_vec()));
    }
}
