//! A worker's view of control: the snapshot subscription, the compiled [`View`] of the
//! current generation, the fail-static clock, and the live sessions this worker must
//! re-check when the view or the time changes.
//!
//! Per statement a session asks [`Gate::statement_check`]: one atomic load of the shared
//! generation word (a new generation is picked up right there, without blocking), then a
//! compare of plain integers; only when the view changed since the session's last decision
//! is the policy evaluated again. A worker-local tick ([`Gate::tick`], every
//! [`TICK`]) reconnects to control when it is gone, refreshes the fail-static flag, and
//! ends sessions whose access was revoked or ran out (a revoked principal's `pg_sleep`
//! ends within one tick after control publishes).
//!
//! Never: block on control, let a worker without a fresh snapshot admit a session or a
//! statement, or share anything with another worker.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use sluice_control::content::{millis, View};
use sluice_control::policy::{Decision, DenyKind, SessionStatementRules, Subject, Via};
use sluice_control::service::{paths, ProxyEvent};
use sluice_control::snapshot::{SnapshotError, Subscriber};
use tracing::{error, info, warn};

use crate::handshake::Refusal;

/// How often each worker checks control's heartbeat, reconnects, and re-checks sessions
/// whose access may have ended.
pub const TICK: Duration = Duration::from_millis(100);

/// SQLSTATE for "no current policy" (cannot_connect_now): control is gone for longer than
/// the fail-static window, or never published.
const NO_POLICY: &str = "57P03";

/// What a live session must do after a re-check.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Carry on.
    Allowed,
    /// Refuse statements with this error, keep the session (policy no longer allows it).
    RefuseStatements(Refusal),
    /// End the session with this FATAL (revoked, grant over, session too long).
    Terminate(Refusal),
}

/// A live session as the gate sees it. Shared between the session task and the worker's
/// registry (same thread).
#[derive(Debug)]
pub struct SessionGate {
    /// Session ID (logs).
    pub id: String,
    subject: String,
    groups: Vec<String>,
    resource: String,
    started_ms: u64,
    /// The session ran on a just-in-time grant (its end ends the session).
    via_grant: Cell<bool>,
    max_session_end_ms: Cell<Option<u64>>,
    /// Epoch of the view the last decision was made with.
    epoch: Cell<u64>,
    /// When the last decision must be made again (grant expiry, end of allowed hours).
    recheck_at_ms: Cell<u64>,
    /// Set while statements are refused.
    statement_refusal: RefCell<Option<Refusal>>,
    /// The statement rules that apply to this principal on this resource, from the view
    /// of the last decision.
    rules: RefCell<Option<SessionStatementRules>>,
    /// Whether audit events keep statement literals (policy `audit_literals`).
    audit_literals: Cell<bool>,
    /// Set when the session must end; the relay wakes on `ended`.
    termination: RefCell<Option<Refusal>>,
    /// Wakes the relay when the session must end.
    pub ended: tokio::sync::Notify,
}

impl SessionGate {
    /// Why the session must end, if it must.
    pub fn termination(&self) -> Option<Refusal> {
        self.termination.borrow().clone()
    }

    /// The statement rules in force for this session (`None` until a view allowed it).
    pub fn statement_rules(&self) -> std::cell::Ref<'_, Option<SessionStatementRules>> {
        self.rules.borrow()
    }

    /// Whether audit events keep statement literals.
    pub fn audit_literals(&self) -> bool {
        self.audit_literals.get()
    }

    /// The principal.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The principal's groups.
    pub fn groups(&self) -> &[String] {
        &self.groups
    }

    /// The resource.
    pub fn resource(&self) -> &str {
        &self.resource
    }
}

/// The worker's gate.
pub struct Gate {
    socket: PathBuf,
    events_path: PathBuf,
    max_age: Duration,
    /// Heartbeat silence after which the gate looks for a new control.
    reconnect_after: Duration,
    subscriber: Option<Subscriber>,
    connecting: Option<std::thread::JoinHandle<Result<Subscriber, SnapshotError>>>,
    last_connect_attempt: Option<Instant>,
    view: Option<Rc<View>>,
    /// Bumped on every view swap (control's generation numbers restart with control, this
    /// does not).
    epoch: Cell<u64>,
    stale: Cell<bool>,
    events: Option<UnixDatagram>,
    events_dropped: Cell<u64>,
    sessions: RefCell<HashMap<String, Rc<SessionGate>>>,
    worker: usize,
    /// Snapshots installed and refused, for the metrics.
    installs: u64,
    install_failures: u64,
}

fn connect_in_background(
    socket: PathBuf,
) -> std::io::Result<std::thread::JoinHandle<Result<Subscriber, SnapshotError>>> {
    std::thread::Builder::new()
        .name("sluice-snapshot-connect".into())
        .spawn(move || Subscriber::connect(socket))
}

impl Gate {
    /// A gate for worker `worker`, subscribing to control in `state_dir`. Tries to connect
    /// at once (control normally runs already); otherwise the tick keeps trying.
    pub fn new(
        state_dir: &std::path::Path,
        max_age: Duration,
        heartbeat: Duration,
        worker: usize,
    ) -> Gate {
        let events = UnixDatagram::unbound()
            .and_then(|s| s.set_nonblocking(true).map(|_| s))
            .map_err(|e| warn!(worker, error = %e, "no events socket; control will not see this worker's events"))
            .ok();
        let mut gate = Gate {
            socket: paths::snapshot_socket(state_dir),
            events_path: paths::events_socket(state_dir),
            max_age,
            reconnect_after: heartbeat * 2 + Duration::from_secs(1),
            subscriber: None,
            connecting: None,
            last_connect_attempt: None,
            view: None,
            epoch: Cell::new(0),
            stale: Cell::new(true),
            events,
            events_dropped: Cell::new(0),
            sessions: RefCell::new(HashMap::new()),
            worker,
            installs: 0,
            install_failures: 0,
        };
        match Subscriber::connect(&gate.socket) {
            Ok(sub) => gate.adopt(sub),
            Err(e) => {
                warn!(worker, socket = %gate.socket.display(), error = %e, "control is not reachable yet; sessions are refused until it publishes")
            }
        }
        gate.last_connect_attempt = Some(Instant::now());
        gate.update_stale(SystemTime::now());
        gate
    }

    fn adopt(&mut self, sub: Subscriber) {
        if let Some(snapshot) = sub.current().cloned() {
            self.install(snapshot.payload(), snapshot.generation());
        }
        info!(
            worker = self.worker,
            generation = sub.loaded_generation(),
            "subscribed to control's snapshots"
        );
        self.subscriber = Some(sub);
    }

    fn install(&mut self, payload: &[u8], generation: u64) {
        match View::from_payload_after(payload, self.view.as_deref()) {
            Ok(view) => {
                self.view = Some(Rc::new(view));
                self.epoch.set(self.epoch.get() + 1);
                self.installs += 1;
            }
            Err(e) => {
                self.install_failures += 1;
                error!(worker = self.worker, generation, error = %e, "snapshot refused; keeping the previous one")
            }
        }
    }

    /// Picks up a generation control announced since the last look. Never blocks.
    fn refresh(&mut self) {
        let Some(sub) = self.subscriber.as_mut() else {
            return;
        };
        match sub.refresh() {
            Ok(Some(snapshot)) => {
                let generation = snapshot.generation();
                self.install(snapshot.payload(), generation);
            }
            Ok(None) => {}
            Err(SnapshotError::Disconnected { .. }) => {}
            Err(e) => {
                error!(worker = self.worker, error = %e, "snapshot refused; keeping the previous one")
            }
        }
    }

    fn update_stale(&self, now: SystemTime) {
        let fresh = self.view.is_some()
            && self
                .subscriber
                .as_ref()
                .is_some_and(|s| s.is_fresh(now, self.max_age));
        if self.stale.get() == fresh {
            if fresh {
                info!(
                    worker = self.worker,
                    "policy snapshot is current; admitting sessions"
                );
            } else if self.view.is_some() {
                warn!(worker = self.worker, max_age = ?self.max_age, "control has not published within snapshot_max_age; refusing sessions and statements until it is back");
            }
            self.stale.set(!fresh);
            self.epoch.set(self.epoch.get() + 1);
        }
    }

    /// The periodic work: reconnect, refresh, fail-static, and re-check sessions.
    pub fn tick(&mut self, now: SystemTime) {
        // A control that stopped heartbeating may have been replaced by a new one (its
        // header and socket are new): look for it. A live subscription whose control is
        // healthy is never touched.
        let silent = self.subscriber.as_ref().is_none_or(|s| {
            !s.is_connected() || s.age(now).is_none_or(|age| age > self.reconnect_after)
        });
        if silent {
            self.reconnect();
        }
        self.refresh();
        self.update_stale(now);
        let now_ms = millis(now);
        let epoch = self.epoch.get();
        let due: Vec<Rc<SessionGate>> = self
            .sessions
            .borrow()
            .values()
            .filter(|s| s.epoch.get() != epoch || now_ms >= s.recheck_at_ms.get())
            .cloned()
            .collect();
        for session in due {
            self.recheck(&session, now_ms);
        }
    }

    fn reconnect(&mut self) {
        if let Some(handle) = self.connecting.take() {
            if !handle.is_finished() {
                self.connecting = Some(handle);
                return;
            }
            if let Ok(Ok(sub)) = handle.join() {
                self.adopt(sub);
                return;
            }
        }
        if self
            .last_connect_attempt
            .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        self.last_connect_attempt = Some(Instant::now());
        // The connect waits for control's greeting; never on the worker thread.
        match connect_in_background(self.socket.clone()) {
            Ok(handle) => self.connecting = Some(handle),
            Err(e) => {
                warn!(worker = self.worker, error = %e, "could not start a snapshot reconnect")
            }
        }
    }

    /// Copies the snapshot's state into the worker's metrics (on each tick).
    pub fn publish_metrics(&self, metrics: &crate::metrics::WorkerMetrics, now: SystemTime) {
        let generation = self
            .subscriber
            .as_ref()
            .map_or(0, |s| s.loaded_generation());
        metrics.snapshot_generation.set(generation);
        metrics.snapshot_installs.set(self.installs);
        metrics.snapshot_failures.set(self.install_failures);
        let heard_ms = self
            .subscriber
            .as_ref()
            .and_then(|s| s.age(now))
            .and_then(|age| now.checked_sub(age))
            .map_or(0, millis);
        metrics.snapshot_heard_ms.set(heard_ms);
        metrics
            .snapshot_fresh
            .set(u64::from(self.view.is_some() && !self.stale.get()));
        metrics.last_tick_ms.set(millis(now));
    }

    /// The current view for a new session, or why there is none.
    pub fn view(&mut self) -> Result<Rc<View>, Refusal> {
        if self.subscriber.as_ref().is_some_and(|s| s.needs_refresh()) {
            self.refresh();
        }
        match (&self.view, self.stale.get()) {
            (Some(view), false) => Ok(Rc::clone(view)),
            (None, _) => Err(Refusal::new(
                NO_POLICY,
                "Sluice has no policy snapshot from its control process yet",
            )
            .hint("the gateway's control process is not running or not reachable; tell the operator (sluice status)")),
            (Some(_), true) => Err(self.stale_refusal()),
        }
    }

    fn stale_refusal(&self) -> Refusal {
        let age = self
            .subscriber
            .as_ref()
            .and_then(|s| s.age(SystemTime::now()))
            .map(|a| format!("{} s", a.as_secs()))
            .unwrap_or_else(|| "too long".to_owned());
        Refusal::new(
            NO_POLICY,
            format!(
                "Sluice's policy is out of date: its control process has not been heard from for {age} (limit {} s)",
                self.max_age.as_secs()
            ),
        )
        .hint("the gateway refuses access until its control process is back; tell the operator (sluice status)")
    }

    /// Registers an admitted session.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &self,
        id: String,
        subject: &str,
        groups: &[String],
        resource: &str,
        view: &View,
        decision: &Decision<'_>,
        now_ms: u64,
    ) -> Rc<SessionGate> {
        let rules = view.policy.statement_rules(
            &Subject {
                user: subject,
                groups,
            },
            resource,
        );
        let session = Rc::new(SessionGate {
            id: id.clone(),
            subject: subject.to_owned(),
            groups: groups.to_vec(),
            resource: resource.to_owned(),
            started_ms: now_ms,
            via_grant: Cell::new(false),
            max_session_end_ms: Cell::new(None),
            epoch: Cell::new(self.epoch.get()),
            recheck_at_ms: Cell::new(u64::MAX),
            statement_refusal: RefCell::new(None),
            rules: RefCell::new(Some(rules)),
            audit_literals: Cell::new(view.policy.audit_literals()),
            termination: RefCell::new(None),
            ended: tokio::sync::Notify::new(),
        });
        if let Decision::Allow(allowed) = decision {
            session
                .via_grant
                .set(matches!(allowed.via, Via::Grant { .. }));
            let max_end = allowed
                .max_session
                .map(|d| now_ms.saturating_add(d.as_millis() as u64));
            session.max_session_end_ms.set(max_end);
            session.recheck_at_ms.set(
                allowed
                    .valid_until_ms
                    .unwrap_or(u64::MAX)
                    .min(max_end.unwrap_or(u64::MAX)),
            );
        }
        self.sessions.borrow_mut().insert(id, Rc::clone(&session));
        session
    }

    /// Forgets an ended session.
    pub fn unregister(&self, id: &str) {
        self.sessions.borrow_mut().remove(id);
    }

    /// **Per statement.** `None`: forward it. `Some(refusal)`: refuse it (the session stays).
    #[inline]
    pub fn statement_check(&mut self, session: &SessionGate) -> Option<Refusal> {
        if self.subscriber.as_ref().is_some_and(|s| s.needs_refresh()) {
            self.refresh();
        }
        if session.epoch.get() != self.epoch.get() {
            self.recheck(session, millis(SystemTime::now()));
        }
        session.statement_refusal.borrow().clone()
    }

    /// Decides again for a live session and records what it must do.
    fn recheck(&self, session: &SessionGate, now_ms: u64) {
        session.epoch.set(self.epoch.get());
        if session.termination.borrow().is_some() {
            return;
        }
        let verdict = self.verdict(session, now_ms);
        match verdict {
            Verdict::Allowed => {
                if session.statement_refusal.borrow_mut().take().is_some() {
                    info!(session = %session.id, principal = %session.subject, resource = %session.resource, "policy allows this session's statements again");
                }
            }
            Verdict::RefuseStatements(refusal) => {
                let mut current = session.statement_refusal.borrow_mut();
                if current.is_none() {
                    warn!(session = %session.id, principal = %session.subject, resource = %session.resource, reason = %refusal.message, "policy no longer allows this session's statements");
                }
                *current = Some(refusal);
            }
            Verdict::Terminate(refusal) => {
                warn!(session = %session.id, principal = %session.subject, resource = %session.resource, reason = %refusal.message, "terminating session");
                *session.termination.borrow_mut() = Some(refusal);
                session.ended.notify_one();
            }
        }
    }

    fn verdict(&self, session: &SessionGate, now_ms: u64) -> Verdict {
        if let Some(end) = session.max_session_end_ms.get() {
            if now_ms >= end {
                return Verdict::Terminate(
                    Refusal::new(
                        "57P01",
                        format!(
                        "terminating connection: the session reached its maximum length for \"{}\"",
                        session.resource
                    ),
                    )
                    .hint("connect again to start a new session"),
                );
            }
        }
        let view = match (&self.view, self.stale.get()) {
            (Some(view), false) => view,
            _ => return Verdict::RefuseStatements(self.stale_refusal()),
        };
        let subject = Subject {
            user: &session.subject,
            groups: &session.groups,
        };
        let decision = view.decide(&subject, &session.resource, now_ms, session.started_ms);
        match decision {
            Decision::Allow(allowed) => {
                *session.rules.borrow_mut() =
                    Some(view.policy.statement_rules(&subject, &session.resource));
                session.audit_literals.set(view.policy.audit_literals());
                session.recheck_at_ms.set(
                    allowed
                        .valid_until_ms
                        .unwrap_or(u64::MAX)
                        .min(session.max_session_end_ms.get().unwrap_or(u64::MAX)),
                );
                Verdict::Allowed
            }
            Decision::Deny(denied) => {
                session.recheck_at_ms.set(u64::MAX);
                match denied.kind {
                    DenyKind::Revoked => Verdict::Terminate(
                        Refusal::new("57P01", format!("terminating connection: {}", denied.message))
                            .hint(denied.hint),
                    ),
                    _ if session.via_grant.get() => Verdict::Terminate(
                        Refusal::new(
                            "57P01",
                            format!(
                                "terminating connection: the grant that allowed \"{}\" on \"{}\" has ended ({})",
                                session.subject, session.resource, denied.message
                            ),
                        )
                        .hint(denied.hint),
                    ),
                    _ => Verdict::RefuseStatements(
                        Refusal::new("42501", denied.message).hint(denied.hint),
                    ),
                }
            }
        }
    }

    /// Sends an event to control without waiting; counts what could not be sent. Returns
    /// whether it was sent: a caller that needed control to act on it fails closed when not.
    pub fn send_event(&self, event: &ProxyEvent) -> bool {
        let sent = match (&self.events, serde_json::to_vec(event)) {
            (Some(socket), Ok(bytes)) => socket.send_to(&bytes, &self.events_path).is_ok(),
            _ => false,
        };
        if !sent {
            let dropped = self.events_dropped.get() + 1;
            self.events_dropped.set(dropped);
            if dropped.is_power_of_two() {
                warn!(
                    worker = self.worker,
                    dropped, "events to control dropped (control gone or not keeping up)"
                );
            }
        }
        sent
    }

    /// Events that could not be sent so far.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.get()
    }

    /// Whether a generation newer than the current view is announced (one atomic load).
    pub fn generation_pending(&self) -> bool {
        self.subscriber.as_ref().is_some_and(|s| s.needs_refresh())
    }

    /// The view's epoch (changes on every swap).
    pub fn epoch(&self) -> u64 {
        self.epoch.get()
    }
}
