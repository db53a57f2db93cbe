//! The client side of a connection before it is allowed to reach a backend, as consumed
//! states (the habit of rustls' `Expect*` handshake states): [`AwaitingStartup`] →
//! [`AwaitingPassword`] → [`Authenticated`]. An `Authenticated` value can only be made by
//! verifying a token, and the relay only starts with one, so "forwarded before
//! authenticated" cannot compile.
//!
//! Sans-I/O: packets and the clock come in, bytes to send and decisions come out.

use std::borrow::Cow;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use sluice_codecs::backend::{self, Authentication, BackendMessage};
use sluice_codecs::frontend::{self, FrontendMessage};
use sluice_codecs::startup::StartupPacket;

use crate::auth::{Principal, TokenVerifier};

/// Facts about the transport that decide what a client may do.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    /// The connection is already inside TLS.
    pub tls: bool,
    /// The gateway has a certificate to offer.
    pub tls_available: bool,
    /// The peer address is loopback.
    pub loopback: bool,
    /// Operator allowed plaintext from other addresses.
    pub allow_plaintext_non_loopback: bool,
}

impl Transport {
    fn may_send_secrets(&self) -> bool {
        self.tls || self.loopback || self.allow_plaintext_non_loopback
    }
}

/// A reason to end the connection before any backend is involved, sent as a FATAL
/// `ErrorResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// SQLSTATE code (usually one of ours; a backend's own code when it refused us for a
    /// reason the client can act on, such as too many connections).
    pub sqlstate: Cow<'static, str>,
    /// Primary message.
    pub message: String,
    /// What the user can do about it.
    pub hint: Option<String>,
}

impl Refusal {
    pub(crate) fn new(sqlstate: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Refusal {
            sqlstate: sqlstate.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The FATAL ErrorResponse for this refusal.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        backend::encode_error(
            &mut out,
            "FATAL",
            &self.sqlstate,
            &self.message,
            None,
            self.hint.as_deref(),
        );
        out.freeze()
    }
}

/// First state: waiting for SSLRequest / GSSENCRequest / CancelRequest / StartupMessage.
#[derive(Debug, Default)]
pub struct AwaitingStartup {
    _private: (),
}

/// What the shell must do after a startup-phase packet.
#[derive(Debug)]
pub enum StartupOutcome {
    /// Send `bytes` and read the next startup packet in `next`.
    Reply {
        /// The same state, still waiting for a startup packet.
        next: AwaitingStartup,
        /// A single-byte `N` answer.
        bytes: Bytes,
    },
    /// Send `S`, run the TLS handshake, then read the next packet in `next`.
    StartTls {
        /// The state to continue in, inside TLS.
        next: AwaitingStartup,
    },
    /// Forward a cancel for the session that owns this key, then close.
    Cancel {
        /// Process ID half of the key Sluice issued.
        pid: u32,
        /// Secret half of the key.
        secret: Bytes,
    },
    /// Send `bytes` (optional NegotiateProtocolVersion + AuthenticationCleartextPassword)
    /// and wait for the token.
    AskPassword {
        /// Waiting for the password message.
        next: AwaitingPassword,
        /// What to send.
        bytes: Bytes,
    },
    /// Send the FATAL error and close.
    Refuse(Refusal),
}

/// Startup parameters that are forwarded to the backend as given. Everything else is
/// either consumed by Sluice (`user`, `database`) or refused (`replication`, `options`).
const FORWARDED_PARAMS: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "extra_float_digits",
    "search_path",
    "datestyle",
    "timezone",
    "intervalstyle",
    "geqo",
    "lc_messages",
];

impl AwaitingStartup {
    /// Starts a fresh client connection.
    pub fn new() -> Self {
        AwaitingStartup::default()
    }

    /// Handles one startup-phase packet.
    pub fn handle(self, packet: StartupPacket, transport: Transport) -> StartupOutcome {
        match packet {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest if transport.tls => {
                StartupOutcome::Refuse(Refusal::new(
                    "08P01",
                    "encryption requested again inside an encrypted connection",
                ))
            }
            StartupPacket::SslRequest if transport.tls_available => {
                StartupOutcome::StartTls { next: self }
            }
            // GSSAPI encryption is not offered: `N` makes libpq fall back to SSL or plain.
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => StartupOutcome::Reply {
                next: self,
                bytes: Bytes::from_static(b"N"),
            },
            StartupPacket::CancelRequest { pid, secret } => StartupOutcome::Cancel { pid, secret },
            StartupPacket::Startup { version, params } => {
                self.startup(version.minor, params, transport)
            }
        }
    }

    fn startup(
        self,
        minor: u16,
        params: Vec<(Bytes, Bytes)>,
        transport: Transport,
    ) -> StartupOutcome {
        if !transport.may_send_secrets() {
            return StartupOutcome::Refuse(
                Refusal::new(
                    "28000",
                    "Sluice accepts tokens only over TLS from non-loopback addresses",
                )
                .hint("connect with sslmode=require (or verify-full)"),
            );
        }
        let mut user = None;
        let mut database = None;
        let mut forwarded = Vec::new();
        let mut unrecognized = Vec::new();
        for (name, value) in params {
            let name = String::from_utf8_lossy(&name).into_owned();
            let value = String::from_utf8_lossy(&value).into_owned();
            match name.as_str() {
                "user" => user = Some(value),
                "database" => database = Some(value),
                "replication" if value != "false" && value != "0" && value != "off" => {
                    return StartupOutcome::Refuse(Refusal::new(
                        "0A000",
                        "replication connections are not supported through Sluice",
                    ));
                }
                "replication" => {}
                "options" if value.trim().is_empty() => {}
                "options" => {
                    return StartupOutcome::Refuse(
                        Refusal::new(
                            "0A000",
                            "the startup parameter \"options\" is not accepted by Sluice",
                        )
                        .hint("unset PGOPTIONS and use SET after connecting, where policy applies"),
                    );
                }
                n if n.starts_with("_pq_.") => unrecognized.push(name),
                n if FORWARDED_PARAMS.contains(&n) => forwarded.push((name, value)),
                _ => {
                    // Unknown GUCs would be applied by the backend without policy; they are
                    // dropped and logged rather than forwarded.
                    tracing::debug!(param = %name, "dropping unrecognized startup parameter");
                }
            }
        }
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return StartupOutcome::Refuse(Refusal::new(
                "28000",
                "no PostgreSQL user name specified in startup packet",
            ));
        };
        let resource = database
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone());

        let mut out = BytesMut::new();
        // Sluice speaks protocol 3.0 to clients (its cancel keys are 3.0-sized); a client
        // asking for a newer minor or for protocol extensions is told so, as PostgreSQL
        // itself does.
        if minor > 0 || !unrecognized.is_empty() {
            BackendMessage::NegotiateProtocolVersion {
                newest_minor: 0,
                unrecognized: unrecognized.into_iter().map(Bytes::from).collect(),
            }
            .encode(&mut out);
        }
        BackendMessage::Authentication(Authentication::CleartextPassword).encode(&mut out);
        StartupOutcome::AskPassword {
            next: AwaitingPassword {
                user,
                resource,
                params: forwarded,
            },
            bytes: out.freeze(),
        }
    }
}

/// Second state: the client was asked for its password (the token). Cloneable so that a
/// token naming an OIDC key control has not fetched yet can be checked again once it has.
#[derive(Debug, Clone)]
pub struct AwaitingPassword {
    user: String,
    resource: String,
    params: Vec<(String, String)>,
}

impl AwaitingPassword {
    /// The user name the client claimed.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The resource (database name) the client asked for.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// Verifies the token in the client's password message.
    pub fn handle(
        self,
        message: FrontendMessage,
        verifier: &dyn TokenVerifier,
        now: SystemTime,
        require_user_match: bool,
    ) -> Result<Authenticated, Refusal> {
        let body = match message {
            FrontendMessage::AuthResponse(body) => body,
            FrontendMessage::Terminate => {
                return Err(Refusal::new("08006", "client closed during authentication"));
            }
            _ => {
                return Err(Refusal::new(
                    "08P01",
                    "expected a password message during authentication",
                ))
            }
        };
        let token = frontend::password(&body)
            .map_err(|e| Refusal::new("08P01", format!("malformed password message: {e}")))?;
        let token = std::str::from_utf8(&token).map_err(|_| {
            Refusal::new(
                "28P01",
                "the password is not a valid Sluice token (not UTF-8)",
            )
        })?;
        if token.is_empty() {
            return Err(
                Refusal::new("28P01", "empty password: a Sluice token is required").hint(
                    "set PGPASSWORD to a token from `sluice token` or your identity provider",
                ),
            );
        }
        let principal = verifier.verify(token, now).map_err(|e| {
            Refusal::new(
                e.sqlstate(),
                format!("authentication failed for user \"{}\": {e}", self.user),
            )
        })?;
        if require_user_match && principal.subject != self.user {
            return Err(Refusal::new(
                "28000",
                format!(
                    "the token belongs to \"{}\", not to user \"{}\"",
                    principal.subject, self.user
                ),
            )
            .hint("connect with user= set to the token's subject"));
        }
        Ok(Authenticated {
            principal,
            user: self.user,
            resource: self.resource,
            params: self.params,
        })
    }
}

/// Proof that a client presented a valid token.
#[derive(Debug)]
pub struct Authenticated {
    principal: Principal,
    user: String,
    resource: String,
    params: Vec<(String, String)>,
}

impl Authenticated {
    /// Verified identity.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
    /// User name the client sent.
    pub fn user(&self) -> &str {
        &self.user
    }
    /// Resource requested.
    pub fn resource(&self) -> &str {
        &self.resource
    }
    /// Startup parameters to forward to the backend.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenError;
    use sluice_codecs::startup::ProtocolVersion;
    use std::time::Duration;

    const LOOPBACK: Transport = Transport {
        tls: false,
        tls_available: true,
        loopback: true,
        allow_plaintext_non_loopback: false,
    };

    struct FixedVerifier;
    impl TokenVerifier for FixedVerifier {
        fn verify(&self, token: &str, now: SystemTime) -> Result<Principal, TokenError> {
            match token {
                "good-alice" => Ok(Principal {
                    subject: "alice".into(),
                    groups: vec!["engineering".into()],
                    expires_at: now + Duration::from_secs(60),
                    issued_at: now,
                    issuer: "sluice".into(),
                }),
                "old" => Err(TokenError::Expired { ago_secs: 5 }),
                _ => Err(TokenError::BadSignature),
            }
        }
    }

    fn startup(params: &[(&str, &str)], minor: u16) -> StartupPacket {
        StartupPacket::Startup {
            version: ProtocolVersion { major: 3, minor },
            params: params
                .iter()
                .map(|(k, v)| {
                    (
                        Bytes::copy_from_slice(k.as_bytes()),
                        Bytes::copy_from_slice(v.as_bytes()),
                    )
                })
                .collect(),
        }
    }

    fn ask_password(outcome: StartupOutcome) -> (AwaitingPassword, Bytes) {
        match outcome {
            StartupOutcome::AskPassword { next, bytes } => (next, bytes),
            other => panic!("expected a password request, got {other:?}"),
        }
    }

    fn password(token: &str) -> FrontendMessage {
        let mut body = token.as_bytes().to_vec();
        body.push(0);
        FrontendMessage::AuthResponse(Bytes::from(body))
    }

    #[test]
    fn ssl_request_upgrades_only_when_a_certificate_exists() {
        let out = AwaitingStartup::new().handle(StartupPacket::SslRequest, LOOPBACK);
        assert!(matches!(out, StartupOutcome::StartTls { .. }));
        let no_tls = Transport {
            tls_available: false,
            ..LOOPBACK
        };
        match AwaitingStartup::new().handle(StartupPacket::SslRequest, no_tls) {
            StartupOutcome::Reply { bytes, .. } => assert_eq!(&bytes[..], b"N"),
            other => panic!("{other:?}"),
        }
        match AwaitingStartup::new().handle(StartupPacket::GssEncRequest, LOOPBACK) {
            StartupOutcome::Reply { bytes, .. } => assert_eq!(&bytes[..], b"N"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plaintext_from_a_remote_address_is_refused_before_the_password() {
        let remote = Transport {
            loopback: false,
            ..LOOPBACK
        };
        match AwaitingStartup::new().handle(startup(&[("user", "alice")], 0), remote) {
            StartupOutcome::Refuse(r) => {
                assert_eq!(r.sqlstate, "28000");
                assert!(r.hint.as_deref().unwrap_or("").contains("sslmode"));
            }
            other => panic!("{other:?}"),
        }
        let remote_tls = Transport {
            tls: true,
            ..remote
        };
        ask_password(AwaitingStartup::new().handle(startup(&[("user", "alice")], 0), remote_tls));
    }

    #[test]
    fn the_token_is_requested_as_a_cleartext_password() {
        let (next, bytes) = ask_password(AwaitingStartup::new().handle(
            startup(
                &[
                    ("user", "alice"),
                    ("database", "shop"),
                    ("application_name", "psql"),
                ],
                0,
            ),
            LOOPBACK,
        ));
        assert_eq!(next.user(), "alice");
        assert_eq!(next.resource(), "shop");
        // 'R', length 8, code 3 (cleartext).
        assert_eq!(&bytes[..], &[b'R', 0, 0, 0, 8, 0, 0, 0, 3]);
    }

    #[test]
    fn newer_minor_and_protocol_options_get_negotiate_protocol_version() {
        let (_, bytes) = ask_password(AwaitingStartup::new().handle(
            startup(&[("user", "alice"), ("_pq_.compression", "on")], 2),
            LOOPBACK,
        ));
        let mut buf = BytesMut::from(&bytes[..]);
        let limits = sluice_codecs::Limits::default();
        match backend::decode(&mut buf, &limits).expect("decodes") {
            sluice_codecs::Decode::Frame(BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized,
            }) => {
                assert_eq!(newest_minor, 0);
                assert_eq!(unrecognized, vec![Bytes::from_static(b"_pq_.compression")]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn database_defaults_to_user_and_replication_or_options_are_refused() {
        let (next, _) =
            ask_password(AwaitingStartup::new().handle(startup(&[("user", "shop")], 0), LOOPBACK));
        assert_eq!(next.resource(), "shop");
        for bad in [("replication", "database"), ("options", "-c work_mem=1GB")] {
            match AwaitingStartup::new().handle(startup(&[("user", "alice"), bad], 0), LOOPBACK) {
                StartupOutcome::Refuse(r) => assert_eq!(r.sqlstate, "0A000", "{bad:?}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        match AwaitingStartup::new().handle(startup(&[("database", "shop")], 0), LOOPBACK) {
            StartupOutcome::Refuse(r) => assert_eq!(r.sqlstate, "28000"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_outcomes_map_to_sqlstates() {
        let now = SystemTime::now();
        let pending = || {
            ask_password(AwaitingStartup::new().handle(startup(&[("user", "alice")], 0), LOOPBACK))
                .0
        };
        let ok = pending()
            .handle(password("good-alice"), &FixedVerifier, now, true)
            .expect("valid token");
        assert_eq!(ok.principal().subject, "alice");

        let bad = pending()
            .handle(password("forged"), &FixedVerifier, now, true)
            .expect_err("bad");
        assert_eq!(bad.sqlstate, "28P01");
        let old = pending()
            .handle(password("old"), &FixedVerifier, now, true)
            .expect_err("old");
        assert_eq!(old.sqlstate, "28000");
        assert!(old.message.contains("expired"), "{}", old.message);
        let empty = pending()
            .handle(password(""), &FixedVerifier, now, true)
            .expect_err("empty");
        assert_eq!(empty.sqlstate, "28P01");
        let wrong = pending()
            .handle(
                FrontendMessage::Query {
                    sql: Bytes::from_static(b"select 1"),
                },
                &FixedVerifier,
                now,
                true,
            )
            .expect_err("not a password");
        assert_eq!(wrong.sqlstate, "08P01");

        let as_bob =
            ask_password(AwaitingStartup::new().handle(startup(&[("user", "bob")], 0), LOOPBACK)).0;
        let mismatch = as_bob
            .handle(password("good-alice"), &FixedVerifier, now, true)
            .expect_err("subject");
        assert_eq!(mismatch.sqlstate, "28000");
    }
}
