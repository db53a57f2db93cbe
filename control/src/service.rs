//! The control process: loads the config, the keyring and the state store, compiles them
//! into snapshots, publishes them to the proxy, and serves the admin API and the proxy's
//! events.
//!
//! Threads (all plain std threads; control is not on the data path):
//! - the snapshot server's accept thread ([`crate::snapshot::SnapshotServer`]);
//! - `sluice-control-tick`: heartbeat every `control.heartbeat`, periodic JWKS refetch,
//!   pruning of expired grants and requests (publishing when something changed);
//! - `sluice-control-admin`: the admin socket, one request per connection;
//! - `sluice-control-events`: datagrams from proxy workers (unknown OIDC key ids, session
//!   start and end, statements held for approval and withdrawn);
//! - `sluice-control-webhook`: deliveries to `approvals.webhook_url` ([`crate::webhook`]),
//!   which nothing ever waits for.
//!
//! # Statements held for approval
//!
//! When a `[[policy.statements]]` rule says `request`, the proxy holds the statement, tells
//! the client the request ID, and sends [`ProxyEvent::ApprovalRequested`]. Control records
//! it ([`Record::ApprovalRequested`] and an `approval.request` audit event) and announces it
//! to the webhook. Approvers decide with `sluice approvals approve|deny`
//! ([`AdminRequest::ApprovalsApprove`], [`AdminRequest::ApprovalsDeny`]): a member of one of
//! the rule's approver groups, never the requester; `approvals.min_approvals` distinct
//! approvers approve it, one denial denies it. Each decision is published at once (the
//! snapshot's [`SnapshotContent::approvals`]), so the waiting session learns it within one
//! generation. A request nobody decides within `approvals.timeout` expires (checked every
//! tick); the proxy's [`ProxyEvent::ApprovalWithdrawn`] (or the session's end) withdraws it.
//!
//! Every change goes through [`Inner::publish`], under one mutex, so generations are
//! published in the order the changes were made.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{error, info, warn};

use crate::admin::{AdminRequest, AdminResponse, MAX_LINE};
use crate::config::ControlFile;
use crate::content::{millis, ApprovalDecision, SnapshotContent, View, CONTENT_FORMAT};
use crate::identity::{IdentityContent, Keyring, OidcContent, SluiceKeysContent};
use crate::oidc::JwksCache;
use crate::policy::{Policy, Subject};
use crate::saml::{ReplayCache, SamlIdp};
use crate::snapshot::{Publisher, SnapshotServer};
use crate::state::{
    AccessRequest, ApprovalScope, ApprovalStatus, ApprovalVote, AuditEvent, Grant, RequestStatus,
    Revocation, StatementApproval,
};
use crate::store::{LogStore, Record, State, StateStore};
use crate::webhook::{Delivery, WebhookTarget, Webhooks};

/// File names inside the state directory.
pub mod paths {
    use std::path::{Path, PathBuf};

    /// The admin socket.
    pub fn admin_socket(state_dir: &Path) -> PathBuf {
        state_dir.join("admin.sock")
    }
    /// The snapshot socket the proxy subscribes on.
    pub fn snapshot_socket(state_dir: &Path) -> PathBuf {
        state_dir.join("snapshot.sock")
    }
    /// The datagram socket proxy workers send events to.
    pub fn events_socket(state_dir: &Path) -> PathBuf {
        state_dir.join("events.sock")
    }
    /// The Sluice-token keyring.
    pub fn keys_dir(state_dir: &Path) -> PathBuf {
        state_dir.join("keys")
    }
}

/// An event a proxy worker sends to control. Datagrams are fire-and-forget: a worker never
/// waits for control, and counts what it could not send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProxyEvent {
    /// A token named a key id its OIDC issuer's cached key set lacks: refetch (rate-limited).
    UnknownKid {
        /// Issuer.
        issuer: String,
        /// Key id.
        kid: String,
    },
    /// A session started.
    SessionStart {
        /// Session ID.
        session: String,
        /// Principal.
        user: String,
        /// Resource.
        resource: String,
        /// Client address.
        peer: String,
    },
    /// A session ended.
    SessionEnd {
        /// Session ID.
        session: String,
        /// Principal.
        user: String,
        /// Resource.
        resource: String,
        /// Why.
        reason: String,
        /// The masking profile the session ran under, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        masking: Option<String>,
        /// Values masked, per masking rule (rules that masked nothing are left out).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        masked: BTreeMap<String, u64>,
    },
    /// The proxy holds a statement until approvers decide (a `[[policy.statements]]` rule
    /// said `request`); the client was told the request ID.
    ApprovalRequested {
        /// Request ID (UUIDv7, made by the proxy).
        id: String,
        /// Session holding the statement.
        session: String,
        /// The session's principal.
        user: String,
        /// The principal's groups.
        groups: Vec<String>,
        /// Resource.
        resource: String,
        /// The statement rule that said `request`.
        rule: String,
        /// The statement, normalized (literals replaced; the proxy truncates it to 2 KiB).
        statement: String,
        /// Its fingerprint (16 hex digits).
        fingerprint: String,
        /// Its class.
        class: String,
        /// When the proxy held it.
        requested_at_ms: u64,
    },
    /// The proxy stopped waiting for a decision on a held statement.
    ApprovalWithdrawn {
        /// Request ID.
        id: String,
        /// Why: "cancelled by the client", "timed out", "session ended".
        reason: String,
    },
}

/// How often the state log is compacted (and once at every start).
const COMPACT_EVERY: Duration = Duration::from_secs(3600);

/// Largest event datagram.
pub const MAX_EVENT: usize = 8 * 1024;

/// The running control process (its threads stop when this is dropped or stopped).
pub struct Control {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    inner: Mutex<Inner>,
    stop: AtomicBool,
    admin_path: PathBuf,
    events_path: PathBuf,
}

struct Inner {
    config_path: PathBuf,
    file: ControlFile,
    policy: Policy,
    view: View,
    keyring: Keyring,
    /// `masking.key`, hex (published in every snapshot).
    masking_key: String,
    store: LogStore,
    state: State,
    jwks: Vec<Arc<JwksCache>>,
    /// `[[identity.saml]]` IdPs with their certificates (re-read on every reload).
    saml: Vec<SamlIdp>,
    /// SAML assertion IDs already exchanged for tokens.
    saml_replay: ReplayCache,
    server: SnapshotServer,
    /// Deliveries to `approvals.webhook_url`.
    webhooks: Webhooks,
    /// The approval decisions the last published generation carries (to republish when
    /// that set changes with time).
    published_approvals: Vec<ApprovalDecision>,
    last_jwks_refresh: Instant,
    last_prune: Instant,
    last_compact: Instant,
}

fn lock(shared: &Shared) -> MutexGuard<'_, Inner> {
    shared.inner.lock().unwrap_or_else(PoisonError::into_inner)
}

fn compile_policy(file: &ControlFile) -> Result<Policy, String> {
    Policy::compile(&file.policy, &file.resource_names()).map_err(|e| e.to_string())
}

fn load_jwks(file: &ControlFile, now: SystemTime) -> Result<Vec<Arc<JwksCache>>, String> {
    let mut caches = Vec::new();
    for issuer in &file.identity.oidc {
        let mut config = issuer.clone();
        if let Some(path) = &config.jwks_file {
            config.jwks_file = Some(file.resolve(path));
        }
        let cache = JwksCache::new(config).map_err(|e| e.to_string())?;
        if let Err(e) = cache.load(now) {
            // The IdP may be down at start: come up without its keys (its tokens are
            // refused, naming the key) and keep retrying on the refresh schedule.
            warn!(issuer = %issuer.issuer, error = %e, "could not load the OIDC issuer's keys; its tokens are refused until they load");
        }
        caches.push(Arc::new(cache));
    }
    Ok(caches)
}

/// Loads every `[[identity.saml]]` IdP's certificate or metadata file (relative to the
/// config file). A missing or unreadable file refuses the config.
fn load_saml(file: &ControlFile) -> Result<Vec<SamlIdp>, String> {
    file.identity
        .saml
        .iter()
        .map(|idp| SamlIdp::load(idp, &file.base_dir))
        .collect()
}

impl Control {
    /// Starts control from the config file at `config_path`: refuses to start on a bad
    /// config or policy, or when another control already serves this state directory.
    pub fn start(config_path: &Path) -> Result<Control, String> {
        let file = ControlFile::load(config_path)?;
        let policy = compile_policy(&file)?;
        let state_dir = file.state_dir();
        std::fs::create_dir_all(&state_dir)
            .map_err(|e| format!("creating {}: {e}", state_dir.display()))?;
        let _ = std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700));
        let admin_path = paths::admin_socket(&state_dir);
        if UnixStream::connect(&admin_path).is_ok() {
            return Err(format!(
                "another control is already running on {} (its admin socket answers)",
                state_dir.display()
            ));
        }
        let now = SystemTime::now();
        let keyring = Keyring::open_or_create(&paths::keys_dir(&state_dir), now)?;
        let masking_key = masking_key(&paths::keys_dir(&state_dir))?;
        let (store, state, recovery) =
            LogStore::open(&state_dir).map_err(|e| format!("state store: {e}"))?;
        if recovery.torn_tail_bytes > 0 {
            warn!(
                bytes = recovery.torn_tail_bytes,
                "the state log ended in a torn record (control was killed mid-write); it was cut"
            );
        }
        let jwks = load_jwks(&file, now)?;
        let saml = load_saml(&file)?;
        let publisher = Publisher::new().map_err(|e| format!("snapshot header: {e}"))?;
        let server = SnapshotServer::bind(paths::snapshot_socket(&state_dir), publisher)
            .map_err(|e| format!("binding the snapshot socket: {e}"))?;
        let events_path = paths::events_socket(&state_dir);
        let _ = std::fs::remove_file(&events_path);
        let events = UnixDatagram::bind(&events_path)
            .map_err(|e| format!("binding {}: {e}", events_path.display()))?;
        let _ = std::fs::set_permissions(&events_path, std::fs::Permissions::from_mode(0o600));
        let _ = std::fs::remove_file(&admin_path);
        let admin = UnixListener::bind(&admin_path)
            .map_err(|e| format!("binding {}: {e}", admin_path.display()))?;
        std::fs::set_permissions(&admin_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod {}: {e}", admin_path.display()))?;

        let placeholder = View::compile(empty_content()).map_err(|e| e.to_string())?;
        let webhooks = Webhooks::start()?;
        let mut inner = Inner {
            config_path: config_path.to_path_buf(),
            file,
            policy,
            view: placeholder,
            keyring,
            masking_key,
            store,
            state,
            jwks,
            saml,
            saml_replay: ReplayCache::default(),
            server,
            webhooks,
            published_approvals: Vec::new(),
            last_jwks_refresh: Instant::now(),
            last_prune: Instant::now(),
            last_compact: Instant::now(),
        };
        inner.prune(now)?;
        inner.compact()?;
        inner.publish(now)?;
        info!(
            state_dir = %state_dir.display(),
            generation = inner.server.publisher().generation(),
            grants = inner.state.grants.len(),
            records = recovery.records,
            "control started"
        );
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            stop: AtomicBool::new(false),
            admin_path,
            events_path,
        });
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| format!("spawning {name}: {e}"))
        };
        let s = Arc::clone(&shared);
        threads.push(spawn(
            "sluice-control-tick",
            Box::new(move || tick_loop(&s)),
        )?);
        let s = Arc::clone(&shared);
        threads.push(spawn(
            "sluice-control-admin",
            Box::new(move || admin_loop(&s, admin)),
        )?);
        let s = Arc::clone(&shared);
        threads.push(spawn(
            "sluice-control-events",
            Box::new(move || events_loop(&s, events)),
        )?);
        Ok(Control { shared, threads })
    }

    /// Re-reads the config file and publishes (SIGHUP). A bad file is refused and the
    /// running config stays.
    pub fn reload(&self) -> Result<u64, String> {
        lock(&self.shared).reload("operator(signal)")
    }

    /// The generation currently published.
    pub fn generation(&self) -> u64 {
        lock(&self.shared).server.publisher().generation()
    }

    /// Stops the threads and removes the sockets. The proxy keeps its last snapshot
    /// (fail-static) until a new control publishes.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        // Wake the blocking admin accept and events receive.
        let _ = UnixStream::connect(&self.shared.admin_path);
        if let Ok(s) = UnixDatagram::unbound() {
            let _ = s.send_to(b"{}", &self.shared.events_path);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.shared.admin_path);
        let _ = std::fs::remove_file(&self.shared.events_path);
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The masking key (hex) in `keys_dir/masking.key`, made on first use: 32 random bytes,
/// readable by control's user only. Stable across restarts so that `hash` and
/// `format-preserving` masks of a value stay the same; replacing the file changes them all.
fn masking_key(keys_dir: &Path) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = keys_dir.join("masking.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let hex = text.trim();
            match crate::content::decode_hex(hex) {
                Some(bytes) if bytes.len() >= 16 => Ok(hex.to_ascii_lowercase()),
                _ => Err(format!(
                    "{} must hold at least 16 bytes as hexadecimal; delete it to have control make a new one (masked hashes then change)",
                    path.display()
                )),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = rand::random();
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
            std::io::Write::write_all(&mut file, format!("{hex}\n").as_bytes())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok(hex)
        }
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

fn empty_content() -> SnapshotContent {
    SnapshotContent {
        format: CONTENT_FORMAT,
        built_at_ms: 0,
        identity: IdentityContent::default(),
        require_user_match: true,
        resources: vec![],
        policy: Default::default(),
        grants: vec![],
        revocations: vec![],
        approvals: vec![],
        approval_timeout_ms: 0,
        masking_key: String::new(),
    }
}

impl Inner {
    fn content(&mut self, now: SystemTime) -> Result<SnapshotContent, String> {
        let sluice_cfg = &self.file.identity.sluice_tokens;
        let sluice = if sluice_cfg.enabled {
            Some(SluiceKeysContent {
                issuer: sluice_cfg.issuer.clone(),
                clock_skew_secs: sluice_cfg.clock_skew.as_secs(),
                keys: self.keyring.published(now, sluice_cfg.max_ttl)?,
            })
        } else {
            None
        };
        let oidc = self
            .jwks
            .iter()
            .map(|cache| OidcContent {
                config: cache.config().clone(),
                jwks: cache.jwks().to_json(),
            })
            .collect();
        Ok(SnapshotContent {
            format: CONTENT_FORMAT,
            built_at_ms: millis(now),
            identity: IdentityContent { sluice, oidc },
            require_user_match: self.file.identity.require_user_match,
            resources: self.file.resources.keys().cloned().collect(),
            policy: self.file.policy.clone(),
            grants: self.state.grants.values().cloned().collect(),
            revocations: self.state.revocations.clone(),
            approvals: self.approvals_carried(millis(now)),
            approval_timeout_ms: self.approval_timeout_ms(),
            masking_key: self.masking_key.clone(),
        })
    }

    /// Compiles and publishes a new generation. The content is compiled exactly as the proxy
    /// will compile it first, so control never publishes something the proxy would refuse.
    fn publish(&mut self, now: SystemTime) -> Result<u64, String> {
        let content = self.content(now)?;
        let payload = content.encode();
        let view = View::from_payload_after(&payload, Some(&self.view))?;
        let published = self
            .server
            .publish(&payload, now)
            .map_err(|e| format!("publishing the snapshot: {e}"))?;
        self.view = view;
        self.published_approvals = content.approvals;
        if published.dropped > 0 {
            warn!(
                dropped = published.dropped,
                "dropped proxy subscribers that had gone away or were not draining their snapshot socket"
            );
        }
        info!(
            generation = published.generation,
            bytes = payload.len(),
            subscribers = published.delivered,
            "snapshot published"
        );
        Ok(published.generation)
    }

    fn persist(&mut self, record: Record) -> Result<(), String> {
        self.store
            .append(&record)
            .map_err(|e| format!("state store: {e}"))?;
        self.state.apply(&record);
        Ok(())
    }

    fn audit(&mut self, actor: &str, action: &str, target: String, detail: String) {
        let event = AuditEvent {
            at_ms: millis(SystemTime::now()),
            actor: actor.to_owned(),
            action: action.to_owned(),
            target,
            detail,
        };
        info!(actor, action, target = %event.target, detail = %event.detail, "audit");
        if let Err(e) = self.persist(Record::Audit { event }) {
            error!(error = %e, "could not write an audit event");
        }
    }

    fn reload(&mut self, actor: &str) -> Result<u64, String> {
        let result = (|| {
            let file = ControlFile::load(&self.config_path)?;
            let policy = compile_policy(&file)?;
            if file.control.state_dir != self.file.control.state_dir {
                return Err("control.state_dir cannot change on reload; restart control".into());
            }
            let jwks = if file.identity.oidc != self.file.identity.oidc {
                load_jwks(&file, SystemTime::now())?
            } else {
                self.jwks.clone()
            };
            // Always re-read: a certificate file may have changed under the same config.
            let saml = load_saml(&file)?;
            let previous = (
                std::mem::replace(&mut self.file, file),
                std::mem::replace(&mut self.policy, policy),
                std::mem::replace(&mut self.jwks, jwks),
                std::mem::replace(&mut self.saml, saml),
            );
            match self.publish(SystemTime::now()) {
                Ok(generation) => Ok(generation),
                Err(e) => {
                    (self.file, self.policy, self.jwks, self.saml) = previous;
                    Err(e)
                }
            }
        })();
        let detail = match &result {
            Ok(g) => format!("published generation {g}"),
            Err(e) => format!("refused: {e}"),
        };
        self.audit(
            actor,
            "reload",
            self.config_path.display().to_string(),
            detail,
        );
        result
    }

    /// Expires stale requests and drops what no longer matters; publishes if grants or
    /// revocations changed.
    fn prune(&mut self, now: SystemTime) -> Result<bool, String> {
        let keep_ms =
            self.file.identity.sluice_tokens.max_ttl.as_millis() as u64 + 24 * 3600 * 1000;
        let before = (self.state.grants.len(), self.state.revocations.len());
        let records = self.state.prune(
            millis(now),
            keep_ms,
            self.file.control.request_ttl.as_millis() as u64,
        );
        for record in records {
            self.store
                .append(&record)
                .map_err(|e| format!("state store: {e}"))?;
        }
        Ok(before != (self.state.grants.len(), self.state.revocations.len()))
    }

    /// Rewrites the state log as the records of the current state (expired grants and
    /// decided requests that were pruned disappear from it; `audit.log` is untouched).
    fn compact(&mut self) -> Result<(), String> {
        self.store
            .compact(&self.state)
            .map_err(|e| format!("compacting the state log: {e}"))?;
        self.last_compact = Instant::now();
        Ok(())
    }

    /// Verifies a token presented to the admin API with the same view the proxy uses.
    fn principal(&self, token: &str) -> Result<(String, Vec<String>), String> {
        let verified = self
            .view
            .identity
            .verify(token, SystemTime::now())
            .map_err(|e| format!("token refused: {e}"))?;
        Ok((verified.subject, verified.groups))
    }

    fn require_approver(&self, token: &str, resource: &str) -> Result<String, String> {
        let (user, groups) = self.principal(token)?;
        let subject = Subject {
            user: &user,
            groups: &groups,
        };
        if !self.policy.may_approve(&subject, resource) {
            let approvers = self.policy.approvers_for(resource);
            return Err(format!(
                "\"{user}\" may not approve access to \"{resource}\" (approver groups: {})",
                if approvers.is_empty() {
                    "none configured".to_owned()
                } else {
                    approvers.join(", ")
                }
            ));
        }
        Ok(user)
    }

    fn check_resource(&self, resource: &str) -> Result<(), String> {
        if self.file.resources.contains_key(resource) {
            Ok(())
        } else {
            Err(format!(
                "no resource named \"{resource}\" (configured: {})",
                self.file.resource_names().join(", ")
            ))
        }
    }

    fn handle(&mut self, request: AdminRequest, caller: &str) -> Result<serde_json::Value, String> {
        let now = SystemTime::now();
        let now_ms = millis(now);
        match request {
            AdminRequest::Status => Ok(json!({
                "generation": self.server.publisher().generation(),
                "subscribers": self.server.publisher().subscriber_count(),
                "config": self.config_path.display().to_string(),
                "state_dir": self.file.state_dir().display().to_string(),
                "issuers": self.view.identity.issuers(),
                "grants": self.state.grants.len(),
                "pending_requests": self.state.pending_requests().count(),
                "pending_approvals": self.state.pending_approvals().count(),
                "revocations": self.state.revocations.len(),
            })),
            AdminRequest::Reload => {
                let generation = self.reload(caller)?;
                Ok(json!({ "generation": generation }))
            }
            AdminRequest::Token {
                user,
                groups,
                ttl_ms,
            } => {
                let cfg = &self.file.identity.sluice_tokens;
                if !cfg.enabled {
                    return Err(
                        "Sluice tokens are disabled (identity.sluice_tokens.enabled = false)"
                            .into(),
                    );
                }
                let ttl = Duration::from_millis(ttl_ms);
                if ttl > cfg.max_ttl || ttl.is_zero() {
                    return Err(format!(
                        "--ttl must be between 1s and identity.sluice_tokens.max_ttl ({})",
                        humantime::format_duration(cfg.max_ttl)
                    ));
                }
                if user.trim().is_empty() {
                    return Err("--user is empty".into());
                }
                let token = self.keyring.mint(&cfg.issuer, &user, &groups, ttl, now)?;
                let issuer = cfg.issuer.clone();
                self.audit(
                    caller,
                    "token.mint",
                    format!("user={user} groups={}", groups.join(",")),
                    format!("ttl={} issuer={issuer}", humantime::format_duration(ttl)),
                );
                Ok(json!({ "token": token }))
            }
            AdminRequest::KeysRotate => {
                let kid = self.keyring.rotate(now)?;
                let generation = self.publish(now)?;
                self.audit(
                    caller,
                    "keys.rotate",
                    format!("kid={kid}"),
                    format!("generation {generation}"),
                );
                Ok(json!({ "kid": kid, "generation": generation }))
            }
            AdminRequest::KeysList => {
                Ok(serde_json::to_value(self.keyring.keys()).map_err(|e| e.to_string())?)
            }
            AdminRequest::Grant {
                token,
                user,
                resource,
                for_ms,
                reason,
            } => {
                self.check_resource(&resource)?;
                let approver = self.require_approver(&token, &resource)?;
                if approver == user {
                    return Err(
                        "approvers cannot grant access to themselves; ask another approver".into(),
                    );
                }
                let grant =
                    self.make_grant(&user, &resource, for_ms, &approver, &reason, None, now_ms)?;
                Ok(serde_json::to_value(grant).map_err(|e| e.to_string())?)
            }
            AdminRequest::Revoke {
                token,
                user,
                resource,
                reason,
            } => {
                let actor = match token {
                    Some(t) => self.principal(&t)?.0,
                    None => caller.to_owned(),
                };
                if let Some(r) = &resource {
                    self.check_resource(r)?;
                }
                let ended: Vec<String> = self
                    .state
                    .grants
                    .values()
                    .filter(|g| {
                        g.user == user && resource.as_deref().is_none_or(|r| r == g.resource)
                    })
                    .map(|g| g.id.clone())
                    .collect();
                for id in &ended {
                    self.persist(Record::GrantEnded {
                        id: id.clone(),
                        at_ms: now_ms,
                        by: actor.clone(),
                        reason: format!("revoked: {reason}"),
                    })?;
                }
                let revocation = Revocation {
                    user: user.clone(),
                    resource: resource.clone(),
                    at_ms: now_ms,
                    by: actor.clone(),
                    reason: reason.clone(),
                };
                self.persist(Record::Revoked {
                    revocation: revocation.clone(),
                })?;
                let generation = self.publish(now)?;
                self.audit(
                    &actor,
                    "revoke",
                    format!(
                        "user={user} resource={}",
                        resource.as_deref().unwrap_or("*")
                    ),
                    format!(
                        "{reason} (grants ended: {}; generation {generation})",
                        ended.len()
                    ),
                );
                Ok(
                    json!({ "revocation": revocation, "grants_ended": ended, "generation": generation }),
                )
            }
            AdminRequest::GrantsList => {
                let grants: Vec<&Grant> = self.state.active_grants(now_ms).collect();
                Ok(serde_json::to_value(grants).map_err(|e| e.to_string())?)
            }
            AdminRequest::AccessRequest {
                token,
                resource,
                for_ms,
                reason,
            } => {
                self.check_resource(&resource)?;
                let (user, groups) = self.principal(&token)?;
                if reason.trim().is_empty() {
                    return Err("--reason is required: approvers decide on it".into());
                }
                let subject = Subject {
                    user: &user,
                    groups: &groups,
                };
                let max = self.policy.max_grant(&subject, &resource);
                if Duration::from_millis(for_ms) > max || for_ms == 0 {
                    return Err(format!(
                        "--for must be between 1s and {} for \"{resource}\"",
                        humantime::format_duration(max)
                    ));
                }
                if self.policy.approvers_for(&resource).is_empty() {
                    return Err(format!(
                        "nobody can approve access to \"{resource}\": no rule names approvers for it"
                    ));
                }
                let request = AccessRequest {
                    id: uuid::Uuid::now_v7().to_string(),
                    user: user.clone(),
                    groups,
                    resource: resource.clone(),
                    duration_ms: for_ms,
                    reason: reason.clone(),
                    created_at_ms: now_ms,
                    status: RequestStatus::Pending,
                };
                self.persist(Record::RequestCreated {
                    request: request.clone(),
                })?;
                self.audit(
                    &user,
                    "access.request",
                    format!("id={} resource={resource}", request.id),
                    reason,
                );
                Ok(json!({
                    "request": request,
                    "approvers": self.policy.approvers_for(&resource),
                }))
            }
            AdminRequest::AccessApprove { token, id } => {
                let request = self.pending(&id)?;
                let approver = self.require_approver(&token, &request.resource)?;
                if approver == request.user {
                    return Err("a request cannot be approved by the person who made it".into());
                }
                let grant = self.make_grant(
                    &request.user,
                    &request.resource,
                    request.duration_ms,
                    &approver,
                    &request.reason,
                    Some(id.clone()),
                    now_ms,
                )?;
                self.persist(Record::RequestDecided {
                    id: id.clone(),
                    status: RequestStatus::Approved {
                        by: approver.clone(),
                        grant_id: grant.id.clone(),
                        at_ms: now_ms,
                    },
                })?;
                self.audit(
                    &approver,
                    "access.approve",
                    format!("id={id}"),
                    format!("grant {}", grant.id),
                );
                Ok(serde_json::to_value(grant).map_err(|e| e.to_string())?)
            }
            AdminRequest::AccessDeny { token, id, reason } => {
                let request = self.pending(&id)?;
                let approver = self.require_approver(&token, &request.resource)?;
                self.persist(Record::RequestDecided {
                    id: id.clone(),
                    status: RequestStatus::Denied {
                        by: approver.clone(),
                        reason: reason.clone(),
                        at_ms: now_ms,
                    },
                })?;
                self.audit(&approver, "access.deny", format!("id={id}"), reason);
                Ok(json!({ "id": id, "status": "denied" }))
            }
            AdminRequest::AccessList => {
                let mut requests: Vec<&AccessRequest> = self.state.requests.values().collect();
                requests.sort_by_key(|r| {
                    (
                        r.status != RequestStatus::Pending,
                        std::cmp::Reverse(r.created_at_ms),
                    )
                });
                Ok(serde_json::to_value(requests).map_err(|e| e.to_string())?)
            }
            AdminRequest::ApprovalsList { resource, all } => {
                self.expire_approvals(now_ms);
                let mut approvals: Vec<&StatementApproval> = self
                    .state
                    .approvals
                    .values()
                    .filter(|a| all || a.is_pending())
                    .filter(|a| resource.as_deref().is_none_or(|r| r == a.resource))
                    .collect();
                // Pending first, oldest first (the next to expire on top); then the rest,
                // newest first.
                approvals.sort_by_key(|a| {
                    let pending = a.is_pending();
                    (
                        !pending,
                        if pending {
                            a.requested_at_ms
                        } else {
                            u64::MAX - a.requested_at_ms
                        },
                    )
                });
                Ok(serde_json::to_value(approvals).map_err(|e| e.to_string())?)
            }
            AdminRequest::ApprovalsApprove {
                token,
                id,
                reason,
                scope,
            } => self.approve_statement(&token, &id, reason, scope, now_ms),
            AdminRequest::ApprovalsDeny { token, id, reason } => {
                self.deny_statement(&token, &id, reason, now_ms)
            }
            AdminRequest::Audit { limit } => {
                let events: Vec<&AuditEvent> = self
                    .state
                    .audit
                    .iter()
                    .rev()
                    .take(limit)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                Ok(serde_json::to_value(events).map_err(|e| e.to_string())?)
            }
            AdminRequest::SamlLogin { response } => self.saml_login(&response, caller, now),
        }
    }

    /// Validates a SAML Response with the configured IdPs and mints a Sluice token for the
    /// asserted user and groups.
    fn saml_login(
        &mut self,
        response: &str,
        caller: &str,
        now: SystemTime,
    ) -> Result<serde_json::Value, String> {
        let cfg = &self.file.identity.sluice_tokens;
        if !cfg.enabled {
            return Err(
                "SAML login issues Sluice tokens, and they are disabled (identity.sluice_tokens.enabled = false)"
                    .into(),
            );
        }
        if self.saml.is_empty() {
            return Err("no SAML identity provider is configured ([[identity.saml]])".into());
        }
        let refused = |e: crate::saml::SamlError| {
            warn!(caller, error = %e, "SAML login refused");
            format!("SAML login refused: {e}")
        };
        let login = crate::saml::verify_response(&self.saml, response, now).map_err(refused)?;
        self.saml_replay.check(&login).map_err(refused)?;
        let idp = self
            .saml
            .iter()
            .find(|i| i.config().entity_id == login.idp)
            .ok_or("the IdP went away during the login")?
            .config();
        let ttl = login.token_ttl(idp, cfg.max_ttl, now).ok_or(
            "SAML login refused: the IdP session ends in less than a second; sign in at the IdP again",
        )?;
        let (issuer, skew) = (cfg.issuer.clone(), idp.clock_skew);
        let token = self
            .keyring
            .mint(&issuer, &login.user, &login.groups, ttl, now)?;
        self.saml_replay.remember(&login, now);
        let expires_at_ms = millis(now) / 1000 * 1000 + ttl.as_secs() * 1000;
        self.audit(
            &login.user,
            "saml.login",
            format!("user={} groups={}", login.user, login.groups.join(",")),
            format!(
                "idp={} assertion={} ttl={} issuer={issuer} skew={} via {caller}",
                login.idp,
                login.assertion_id,
                humantime::format_duration(ttl),
                humantime::format_duration(skew),
            ),
        );
        Ok(json!({
            "token": token,
            "user": login.user,
            "groups": login.groups,
            "expires_at_ms": expires_at_ms,
            "idp": login.idp,
        }))
    }

    /// `approvals.timeout` in milliseconds.
    fn approval_timeout_ms(&self) -> u64 {
        self.file.approvals.timeout.as_millis() as u64
    }

    /// The approver groups of the statement rule named `rule` (`None`: no such rule).
    fn statement_rule_approvers(&self, rule: &str) -> Option<Vec<String>> {
        self.policy
            .statement_rule_approvers(rule)
            .map(<[String]>::to_vec)
    }

    /// The decisions the snapshot carries at `now_ms` ([`State::carried_decisions`]).
    fn approvals_carried(&self, now_ms: u64) -> Vec<ApprovalDecision> {
        self.state
            .carried_decisions(now_ms, self.approval_timeout_ms())
    }

    /// Queues a webhook delivery about `approval` when a webhook is configured.
    fn announce(&self, event: &'static str, approval: &StatementApproval) {
        let cfg = &self.file.approvals;
        let (Some(url), Some(secret)) = (&cfg.webhook_url, &cfg.webhook_secret) else {
            return;
        };
        let a = approval;
        let approvers = self.statement_rule_approvers(&a.rule).unwrap_or_default();
        let (decided_by, reason, scope) = match &a.status {
            ApprovalStatus::Pending => (vec![], None, None),
            ApprovalStatus::Approved { scope, .. } => (
                a.approvers(),
                a.decision().and_then(|d| d.reason),
                Some(*scope),
            ),
            ApprovalStatus::Denied { by, reason, .. } => (vec![by.clone()], reason.clone(), None),
            ApprovalStatus::Withdrawn { reason, .. } => (vec![], Some(reason.clone()), None),
            ApprovalStatus::Expired { .. } => (vec![], Some("nobody decided in time".into()), None),
        };
        let body = json!({
            "event": event,
            "id": a.id,
            "session": a.session,
            "user": a.user,
            "groups": a.groups,
            "resource": a.resource,
            "rule": a.rule,
            "statement": a.statement,
            "fingerprint": a.fingerprint,
            "class": a.class,
            "requested_at_ms": a.requested_at_ms,
            "expires_at_ms": a.requested_at_ms.saturating_add(self.approval_timeout_ms()),
            "required_approvals": a.required,
            "approvals": a.approvals,
            "approver_groups": approvers,
            "status": a.status.name(),
            "decided_at_ms": a.status.ended_at_ms(),
            "decided_by": decided_by,
            "reason": reason,
            "scope": scope,
            "approve_command": format!("sluice approvals approve {}", a.id),
            "deny_command": format!("sluice approvals deny {} --reason TEXT", a.id),
        });
        self.webhooks.send(Delivery {
            event,
            request_id: a.id.clone(),
            body: serde_json::to_vec(&body).unwrap_or_default(),
            target: WebhookTarget {
                url: url.clone(),
                secret: secret.clone(),
                retries: cfg.webhook_retries,
            },
        });
    }

    /// Records a statement the proxy holds ([`ProxyEvent::ApprovalRequested`]). A request ID
    /// control already knows (a datagram sent twice) is ignored.
    fn approval_requested(&mut self, approval: StatementApproval) -> Result<(), String> {
        if approval.id.trim().is_empty() || self.state.approvals.contains_key(&approval.id) {
            return Ok(());
        }
        let approvers = self.statement_rule_approvers(&approval.rule);
        match &approvers {
            None => warn!(
                id = %approval.id,
                rule = %approval.rule,
                "a statement was held by a rule control's policy does not have; nobody can approve it and it will expire"
            ),
            Some(groups) if groups.is_empty() => warn!(
                id = %approval.id,
                rule = %approval.rule,
                "a statement was held by a rule that names no approvers; nobody can approve it and it will expire"
            ),
            Some(_) => {}
        }
        self.persist(Record::ApprovalRequested {
            approval: approval.clone(),
        })?;
        let a = &approval;
        self.audit(
            &a.user,
            "approval.request",
            format!(
                "id={} session={} resource={} rule={} fingerprint={}",
                a.id, a.session, a.resource, a.rule, a.fingerprint
            ),
            format!(
                "class={} statement={} (needs {} approval{} from: {})",
                a.class,
                a.statement,
                a.required,
                if a.required == 1 { "" } else { "s" },
                approvers
                    .filter(|g| !g.is_empty())
                    .map_or_else(|| "nobody".to_owned(), |g| g.join(", "))
            ),
        );
        self.announce("approval_requested", a);
        Ok(())
    }

    /// Ends a pending request without a decision: withdrawn by the proxy or expired. Does
    /// nothing to a request that is not pending. Returns whether it ended it.
    fn end_approval(&mut self, id: &str, status: ApprovalStatus) -> Result<bool, String> {
        let Some(approval) = self.state.approvals.get(id).filter(|a| a.is_pending()) else {
            return Ok(false);
        };
        let approval = approval.clone();
        let (actor, action, detail) = match &status {
            ApprovalStatus::Withdrawn { reason, .. } => {
                (approval.user.clone(), "approval.withdraw", reason.clone())
            }
            _ => (
                "control".to_owned(),
                "approval.expire",
                format!(
                    "nobody decided within approvals.timeout ({}); {} of {} approvals",
                    humantime::format_duration(self.file.approvals.timeout),
                    approval.approvals.len(),
                    approval.required
                ),
            ),
        };
        self.persist(Record::ApprovalDecided {
            id: id.to_owned(),
            status,
        })?;
        self.audit(
            &actor,
            action,
            format!(
                "id={id} session={} resource={} fingerprint={}",
                approval.session, approval.resource, approval.fingerprint
            ),
            detail,
        );
        if let Some(ended) = self.state.approvals.get(id) {
            self.announce("approval_decided", ended);
        }
        Ok(true)
    }

    /// Expires the pending requests older than `approvals.timeout` at `now_ms`.
    fn expire_approvals(&mut self, now_ms: u64) {
        let timeout_ms = self.approval_timeout_ms();
        let due: Vec<(String, u64)> = self
            .state
            .pending_approvals()
            .filter(|a| now_ms.saturating_sub(a.requested_at_ms) > timeout_ms)
            .map(|a| (a.id.clone(), a.requested_at_ms.saturating_add(timeout_ms)))
            .collect();
        for (id, at_ms) in due {
            if let Err(e) = self.end_approval(&id, ApprovalStatus::Expired { at_ms }) {
                error!(%id, error = %e, "could not expire a held statement's approval request");
            }
        }
    }

    /// A session ended: its pending requests are withdrawn, and its decisions (approvals
    /// with fingerprint scope included) leave the snapshot. Returns whether the snapshot's
    /// content changed.
    fn approval_session_ended(&mut self, session: &str, now_ms: u64) -> Result<bool, String> {
        let pending: Vec<String> = self
            .state
            .pending_approvals()
            .filter(|a| a.session == session)
            .map(|a| a.id.clone())
            .collect();
        for id in pending {
            self.end_approval(
                &id,
                ApprovalStatus::Withdrawn {
                    reason: "session ended".into(),
                    at_ms: now_ms,
                },
            )?;
        }
        let known = self
            .state
            .approvals
            .values()
            .any(|a| a.session == session && a.session_ended_at_ms.is_none());
        if !known {
            return Ok(false);
        }
        self.persist(Record::ApprovalSessionEnded {
            session: session.to_owned(),
            at_ms: now_ms,
        })?;
        Ok(self.approvals_carried(now_ms) != self.published_approvals)
    }

    /// The pending request `id` that `token`'s holder may decide: the token is valid, its
    /// holder is not the requester (when approving) and is in one of the approver groups of
    /// the statement rule, and the request is still pending (expiring it now if its time
    /// ran out).
    fn decidable(
        &mut self,
        token: &str,
        id: &str,
        approving: bool,
        now_ms: u64,
    ) -> Result<(StatementApproval, String), String> {
        let approval = self.state.approvals.get(id).cloned().ok_or_else(|| {
            format!("no held statement with request ID {id} (see `sluice approvals list --all`)")
        })?;
        let (user, groups) = self.principal(token)?;
        if approving && user == approval.user {
            return Err("you cannot approve your own request; ask another approver".into());
        }
        let approvers = self.statement_rule_approvers(&approval.rule).ok_or_else(|| {
            format!(
                "the statement rule {:?} that held request {id} is no longer in the policy; nobody can decide it, and it expires",
                approval.rule
            )
        })?;
        if !groups.iter().any(|g| approvers.contains(g)) {
            return Err(format!(
                "\"{user}\" may not decide statements held by rule \"{}\" (approver groups: {})",
                approval.rule,
                if approvers.is_empty() {
                    "none configured".to_owned()
                } else {
                    approvers.join(", ")
                }
            ));
        }
        if approval.is_pending()
            && now_ms.saturating_sub(approval.requested_at_ms) > self.approval_timeout_ms()
        {
            self.expire_approvals(now_ms);
        }
        let current = self
            .state
            .approvals
            .get(id)
            .map_or(&approval.status, |a| &a.status);
        match current {
            ApprovalStatus::Pending => Ok((approval, user)),
            ApprovalStatus::Approved { .. } => Err(format!(
                "request {id} is already approved (by {})",
                approval.approvers().join(", ")
            )),
            ApprovalStatus::Denied { by, .. } => {
                Err(format!("request {id} is already denied (by {by})"))
            }
            ApprovalStatus::Withdrawn { reason, .. } => Err(format!(
                "request {id} was withdrawn ({reason}); the session no longer waits for it"
            )),
            ApprovalStatus::Expired { .. } => Err(format!(
                "request {id} expired: nobody decided within approvals.timeout ({}), and the proxy refused the statement",
                humantime::format_duration(self.file.approvals.timeout)
            )),
        }
    }

    /// `sluice approvals approve`.
    fn approve_statement(
        &mut self,
        token: &str,
        id: &str,
        reason: Option<String>,
        scope: ApprovalScope,
        now_ms: u64,
    ) -> Result<serde_json::Value, String> {
        let (approval, approver) = self.decidable(token, id, true, now_ms)?;
        let reason = reason.filter(|r| !r.trim().is_empty());
        let required = approval.required.max(1) as usize;
        if approval.approvals.iter().any(|v| v.by == approver) {
            let have = approval.approvals.len();
            return Err(format!(
                "you have already approved request {id}; the same approver counts once: it has {have} of {required} approvals and needs {} more from other approvers",
                required.saturating_sub(have)
            ));
        }
        self.persist(Record::ApprovalVoted {
            id: id.to_owned(),
            vote: ApprovalVote {
                by: approver.clone(),
                at_ms: now_ms,
                scope,
                reason: reason.clone(),
            },
        })?;
        let votes = self
            .state
            .approvals
            .get(id)
            .map_or_else(Vec::new, |a| a.approvals.clone());
        let target = format!(
            "id={id} user={} resource={} fingerprint={}",
            approval.user, approval.resource, approval.fingerprint
        );
        let mut detail = format!(
            "scope={} reason={}; {} of {required} approvals",
            scope.as_str(),
            reason.as_deref().unwrap_or("-"),
            votes.len()
        );
        let mut generation = None;
        if votes.len() >= required {
            let decided = votes
                .iter()
                .map(|v| v.scope)
                .fold(ApprovalScope::Fingerprint, ApprovalScope::narrowest);
            self.persist(Record::ApprovalDecided {
                id: id.to_owned(),
                status: ApprovalStatus::Approved {
                    at_ms: now_ms,
                    scope: decided,
                },
            })?;
            let g = self.publish(SystemTime::now())?;
            detail.push_str(&format!(
                ": approved (scope {}), generation {g}",
                decided.as_str()
            ));
            generation = Some(g);
        } else {
            detail.push_str(": still pending");
        }
        self.audit(&approver, "approval.approve", target, detail);
        let approval = self
            .state
            .approvals
            .get(id)
            .cloned()
            .ok_or("the request went away during the approval")?;
        if generation.is_some() {
            self.announce("approval_decided", &approval);
        }
        Ok(json!({
            "id": id,
            "status": approval.status.name(),
            "scope": match approval.status {
                ApprovalStatus::Approved { scope, .. } => scope,
                _ => scope,
            },
            "approvals": approval.approvals.len(),
            "required": required,
            "approvers": approval.approvers(),
            "generation": generation,
            "approval": approval,
        }))
    }

    /// `sluice approvals deny`.
    fn deny_statement(
        &mut self,
        token: &str,
        id: &str,
        reason: Option<String>,
        now_ms: u64,
    ) -> Result<serde_json::Value, String> {
        let (approval, approver) = self.decidable(token, id, false, now_ms)?;
        let reason = reason.filter(|r| !r.trim().is_empty());
        self.persist(Record::ApprovalDecided {
            id: id.to_owned(),
            status: ApprovalStatus::Denied {
                by: approver.clone(),
                reason: reason.clone(),
                at_ms: now_ms,
            },
        })?;
        let generation = self.publish(SystemTime::now())?;
        self.audit(
            &approver,
            "approval.deny",
            format!(
                "id={id} user={} resource={} fingerprint={}",
                approval.user, approval.resource, approval.fingerprint
            ),
            format!(
                "reason={}; generation {generation}",
                reason.as_deref().unwrap_or("-")
            ),
        );
        let approval = self
            .state
            .approvals
            .get(id)
            .cloned()
            .ok_or("the request went away during the denial")?;
        self.announce("approval_decided", &approval);
        Ok(json!({
            "id": id,
            "status": approval.status.name(),
            "generation": generation,
            "approval": approval,
        }))
    }

    fn pending(&self, id: &str) -> Result<AccessRequest, String> {
        let request = self
            .state
            .requests
            .get(id)
            .ok_or_else(|| format!("no access request with ID {id}"))?;
        if request.status != RequestStatus::Pending {
            return Err(format!(
                "request {id} is not pending ({:?})",
                request.status
            ));
        }
        Ok(request.clone())
    }

    #[allow(clippy::too_many_arguments)]
    fn make_grant(
        &mut self,
        user: &str,
        resource: &str,
        for_ms: u64,
        by: &str,
        reason: &str,
        request_id: Option<String>,
        now_ms: u64,
    ) -> Result<Grant, String> {
        if for_ms == 0 {
            return Err("--for must be positive".into());
        }
        if reason.trim().is_empty() {
            return Err("--reason is required: it is kept in the audit trail".into());
        }
        let grant = Grant {
            id: uuid::Uuid::now_v7().to_string(),
            user: user.to_owned(),
            resource: resource.to_owned(),
            created_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(for_ms),
            granted_by: by.to_owned(),
            reason: reason.to_owned(),
            request_id,
        };
        self.persist(Record::GrantCreated {
            grant: grant.clone(),
        })?;
        let generation = self.publish(SystemTime::now())?;
        self.audit(
            by,
            "grant",
            format!("id={} user={user} resource={resource}", grant.id),
            format!(
                "for {} ({reason}); generation {generation}",
                humantime::format_duration(Duration::from_millis(for_ms))
            ),
        );
        Ok(grant)
    }
}

fn tick_loop(shared: &Shared) {
    while !shared.stop.load(Ordering::Acquire) {
        let interval = {
            let mut inner = lock(shared);
            let now = SystemTime::now();
            inner.server.heartbeat(now);
            let mut changed = false;
            if inner.last_jwks_refresh.elapsed() >= inner.file.control.jwks_refresh {
                inner.last_jwks_refresh = Instant::now();
                for cache in inner.jwks.clone() {
                    let before = cache.jwks().to_json();
                    match cache.load(now) {
                        Ok(_) => changed |= cache.jwks().to_json() != before,
                        Err(e) => {
                            warn!(issuer = %cache.config().issuer, error = %e, "JWKS refresh failed; keeping the previous keys")
                        }
                    }
                }
            }
            let now_ms = millis(now);
            inner.expire_approvals(now_ms);
            changed |= inner.approvals_carried(now_ms) != inner.published_approvals;
            if inner.last_prune.elapsed() >= Duration::from_secs(10) {
                inner.last_prune = Instant::now();
                match inner.prune(now) {
                    Ok(pruned) => changed |= pruned,
                    Err(e) => error!(error = %e, "pruning state failed"),
                }
                if inner.last_compact.elapsed() >= COMPACT_EVERY {
                    if let Err(e) = inner.compact() {
                        error!(error = %e, "compaction failed; the log keeps growing until it succeeds");
                    }
                }
            }
            if changed {
                if let Err(e) = inner.publish(now) {
                    error!(error = %e, "publishing failed");
                }
            }
            inner.file.control.heartbeat
        };
        sleep_unless_stopped(shared, interval);
    }
}

fn sleep_unless_stopped(shared: &Shared, total: Duration) {
    let deadline = Instant::now() + total;
    while !shared.stop.load(Ordering::Acquire) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// The caller's uid, from the kernel (SO_PEERCRED).
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given; the fd is open for
    // the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn admin_loop(shared: &Shared, listener: UnixListener) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else { continue };
        serve_admin(shared, stream);
    }
}

fn serve_admin(shared: &Shared, stream: UnixStream) {
    use std::io::{BufRead, BufReader, Read, Write};
    let timeout = Some(Duration::from_secs(5));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    let caller = match peer_uid(&stream) {
        Some(uid) => format!("operator(uid={uid})"),
        None => "operator".to_owned(),
    };
    let mut line = String::new();
    let Ok(reader_stream) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader_stream.take(MAX_LINE as u64));
    let response = match reader.read_line(&mut line) {
        Ok(0) => return, // a wake-up connect, or a client that gave up
        Ok(_) => match serde_json::from_str::<AdminRequest>(&line) {
            Ok(request) => {
                let result = lock(shared).handle(request, &caller);
                match result {
                    Ok(result) => AdminResponse {
                        ok: true,
                        error: None,
                        result,
                    },
                    Err(e) => AdminResponse {
                        ok: false,
                        error: Some(e),
                        result: serde_json::Value::Null,
                    },
                }
            }
            Err(e) => AdminResponse {
                ok: false,
                error: Some(format!("not an admin request: {e}")),
                result: serde_json::Value::Null,
            },
        },
        Err(e) => AdminResponse {
            ok: false,
            error: Some(format!("reading the request: {e}")),
            result: serde_json::Value::Null,
        },
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let mut stream = stream;
    let _ = stream.write_all(&out);
}

fn events_loop(shared: &Shared, socket: UnixDatagram) {
    let mut buf = vec![0u8; MAX_EVENT];
    loop {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                warn!(error = %e, "events socket");
                std::thread::sleep(Duration::from_millis(100));
                0
            }
        };
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let event: ProxyEvent = match serde_json::from_slice(&buf[..n]) {
            Ok(e) => e,
            // `{}` is the wake-up sent on shutdown.
            Err(_) if &buf[..n] == b"{}" => continue,
            Err(e) => {
                warn!(bytes = n, error = %e, "dropped an event from the proxy that control cannot read (too large, or from another version?)");
                continue;
            }
        };
        match event {
            ProxyEvent::UnknownKid { issuer, kid } => {
                let mut inner = lock(shared);
                let Some(cache) = inner
                    .jwks
                    .iter()
                    .find(|c| c.config().issuer == issuer)
                    .cloned()
                else {
                    continue;
                };
                match cache.refresh_for_unknown_kid(&kid, SystemTime::now()) {
                    Ok(true) => {
                        info!(%issuer, %kid, "fetched the issuer's new keys");
                        if let Err(e) = inner.publish(SystemTime::now()) {
                            error!(error = %e, "publishing failed");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => warn!(%issuer, %kid, error = %e, "JWKS refetch failed"),
                }
            }
            ProxyEvent::SessionStart {
                session,
                user,
                resource,
                peer,
            } => info!(%session, %user, %resource, %peer, "proxy: session start"),
            ProxyEvent::SessionEnd {
                session,
                user,
                resource,
                reason,
                masking,
                masked,
            } => {
                if masked.is_empty() {
                    info!(%session, %user, %resource, %reason, masking = masking.as_deref().unwrap_or(""), "proxy: session end");
                } else {
                    info!(%session, %user, %resource, %reason, masking = masking.as_deref().unwrap_or(""), ?masked, "proxy: session end");
                }
                let mut inner = lock(shared);
                let now = SystemTime::now();
                match inner.approval_session_ended(&session, millis(now)) {
                    Ok(true) => {
                        if let Err(e) = inner.publish(now) {
                            error!(error = %e, "publishing failed");
                        }
                    }
                    Ok(false) => {}
                    Err(e) => {
                        error!(%session, error = %e, "recording the end of a session that held statements failed")
                    }
                }
            }
            ProxyEvent::ApprovalRequested {
                id,
                session,
                user,
                groups,
                resource,
                rule,
                statement,
                fingerprint,
                class,
                requested_at_ms,
            } => {
                info!(%id, %session, %user, %resource, %rule, %fingerprint, "proxy: statement held for approval");
                let mut inner = lock(shared);
                let approval = StatementApproval {
                    id,
                    session,
                    user,
                    groups,
                    resource,
                    rule,
                    statement,
                    fingerprint,
                    class,
                    requested_at_ms,
                    required: inner.file.approvals.min_approvals.max(1),
                    approvals: Vec::new(),
                    status: ApprovalStatus::Pending,
                    session_ended_at_ms: None,
                };
                let id = approval.id.clone();
                if let Err(e) = inner.approval_requested(approval) {
                    error!(%id, error = %e, "recording a held statement failed; it cannot be approved and will time out in the proxy");
                }
            }
            ProxyEvent::ApprovalWithdrawn { id, reason } => {
                info!(%id, %reason, "proxy: approval request withdrawn");
                let mut inner = lock(shared);
                let status = ApprovalStatus::Withdrawn {
                    reason,
                    at_ms: millis(SystemTime::now()),
                };
                if let Err(e) = inner.end_approval(&id, status) {
                    error!(%id, error = %e, "recording a withdrawn approval request failed");
                }
            }
        }
    }
}
