//! The gateway logging in to a backend with the credentials only it holds, as a sans-I/O
//! state machine: feed it backend messages, it answers with bytes to send, until the
//! backend is ready for queries. SCRAM-SHA-256 uses `postgres-protocol`'s primitives.

use bytes::{Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use sluice_codecs::backend::{Authentication, BackendMessage, Fields, TransactionStatus};
use sluice_codecs::frontend;
use sluice_codecs::startup::{ProtocolVersion, StartupPacket};

/// Why the login failed; mapped to what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The backend refused us with an ErrorResponse.
    #[error("backend refused the login: {message}")]
    Refused {
        /// The backend's SQLSTATE.
        sqlstate: String,
        /// The backend's message.
        message: String,
    },
    /// The backend asked for a method the gateway does not implement.
    #[error("backend asks for an unsupported authentication method ({0})")]
    UnsupportedMethod(&'static str),
    /// A password is needed but none is configured for this resource.
    #[error("backend asks for a password but none is configured for this resource")]
    NoPassword,
    /// SCRAM exchange failed (bad server proof, malformed message).
    #[error("SCRAM authentication with the backend failed: {0}")]
    Scram(String),
    /// A message that makes no sense at this point.
    #[error("unexpected message from backend during login: {0}")]
    Protocol(String),
}

impl LoginError {
    /// SQLSTATE for the client. A refused gateway credential is the operator's problem, not
    /// the client's token, so 28xxx from the backend becomes 08001.
    pub fn sqlstate(&self) -> String {
        match self {
            LoginError::Refused { sqlstate, .. } if !sqlstate.starts_with("28") => sqlstate.clone(),
            _ => "08001".to_owned(),
        }
    }
}

enum State {
    Authenticating,
    Scram(Box<ScramSha256>),
    AwaitingSaslFinal(Box<ScramSha256>),
    Authenticated,
}

/// What the backend left us with once it is ready.
#[derive(Debug, Default)]
pub struct BackendReady {
    /// ParameterStatus messages, in order, to replay to the client.
    pub parameters: Vec<(Bytes, Bytes)>,
    /// The backend's cancel key.
    pub key: Option<(u32, Bytes)>,
    /// Notices raised during login, to forward as they are (already encoded frames).
    pub notices: Vec<Fields>,
    /// Transaction status from the first ReadyForQuery.
    pub status: Option<TransactionStatus>,
}

/// Next step of the login.
#[derive(Debug)]
pub enum LoginStep {
    /// Send these bytes to the backend and keep reading.
    Send(Bytes),
    /// Keep reading.
    Continue,
    /// The backend is ready for queries.
    Ready(BackendReady),
}

/// A login in progress.
pub struct BackendLogin {
    user: String,
    password: Option<String>,
    state: State,
    ready: BackendReady,
}

impl BackendLogin {
    /// Starts a login and returns the StartupMessage to send.
    pub fn start(
        user: &str,
        database: &str,
        params: &[(String, String)],
        password: Option<String>,
    ) -> (BackendLogin, Bytes) {
        let mut all = vec![
            (Bytes::from_static(b"user"), Bytes::from(user.to_owned())),
            (
                Bytes::from_static(b"database"),
                Bytes::from(database.to_owned()),
            ),
        ];
        for (name, value) in params {
            all.push((Bytes::from(name.clone()), Bytes::from(value.clone())));
        }
        let mut out = BytesMut::new();
        StartupPacket::Startup {
            version: ProtocolVersion { major: 3, minor: 0 },
            params: all,
        }
        .encode(&mut out);
        (
            BackendLogin {
                user: user.to_owned(),
                password,
                state: State::Authenticating,
                ready: BackendReady::default(),
            },
            out.freeze(),
        )
    }

    fn password(&self) -> Result<&str, LoginError> {
        self.password.as_deref().ok_or(LoginError::NoPassword)
    }

    /// Handles one backend message.
    pub fn handle(&mut self, message: BackendMessage) -> Result<LoginStep, LoginError> {
        let state = std::mem::replace(&mut self.state, State::Authenticating);
        match (state, message) {
            (_, BackendMessage::ErrorResponse(fields)) => Err(LoginError::Refused {
                sqlstate: fields
                    .sqlstate()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_else(|| "08001".into()),
                message: fields
                    .message()
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .unwrap_or_default(),
            }),
            (State::Authenticating, BackendMessage::Authentication(auth)) => {
                self.authenticate(auth)
            }
            (
                State::Scram(mut scram),
                BackendMessage::Authentication(Authentication::SaslContinue(data)),
            ) => {
                scram
                    .update(&data)
                    .map_err(|e| LoginError::Scram(e.to_string()))?;
                let mut out = BytesMut::new();
                frontend::encode_sasl_response(&mut out, scram.message());
                self.state = State::AwaitingSaslFinal(scram);
                Ok(LoginStep::Send(out.freeze()))
            }
            (
                State::AwaitingSaslFinal(mut scram),
                BackendMessage::Authentication(Authentication::SaslFinal(data)),
            ) => {
                scram
                    .finish(&data)
                    .map_err(|e| LoginError::Scram(e.to_string()))?;
                self.state = State::Authenticating;
                Ok(LoginStep::Continue)
            }
            (State::Authenticated, BackendMessage::ParameterStatus { name, value }) => {
                self.state = State::Authenticated;
                self.ready.parameters.push((name, value));
                Ok(LoginStep::Continue)
            }
            (State::Authenticated, BackendMessage::BackendKeyData { pid, secret }) => {
                self.state = State::Authenticated;
                self.ready.key = Some((pid, secret));
                Ok(LoginStep::Continue)
            }
            (state, BackendMessage::NoticeResponse(fields)) => {
                self.state = state;
                self.ready.notices.push(fields);
                Ok(LoginStep::Continue)
            }
            (State::Authenticated, BackendMessage::NegotiateProtocolVersion { .. }) => {
                self.state = State::Authenticated;
                Ok(LoginStep::Continue)
            }
            (State::Authenticated, BackendMessage::ReadyForQuery { status }) => {
                self.ready.status = Some(status);
                Ok(LoginStep::Ready(std::mem::take(&mut self.ready)))
            }
            (_, other) => Err(LoginError::Protocol(format!(
                "tag {:?}",
                char::from(other.tag())
            ))),
        }
    }

    fn authenticate(&mut self, auth: Authentication) -> Result<LoginStep, LoginError> {
        let mut out = BytesMut::new();
        match auth {
            Authentication::Ok => {
                self.state = State::Authenticated;
                Ok(LoginStep::Continue)
            }
            Authentication::CleartextPassword => {
                frontend::encode_password(&mut out, self.password()?.as_bytes());
                Ok(LoginStep::Send(out.freeze()))
            }
            Authentication::Md5Password { salt } => {
                let hash = md5_hash(self.user.as_bytes(), self.password()?.as_bytes(), salt);
                frontend::encode_password(&mut out, hash.as_bytes());
                Ok(LoginStep::Send(out.freeze()))
            }
            Authentication::Sasl { mechanisms } => {
                if !mechanisms
                    .iter()
                    .any(|m| &m[..] == SCRAM_SHA_256.as_bytes())
                {
                    return Err(LoginError::UnsupportedMethod("SASL without SCRAM-SHA-256"));
                }
                // Channel binding to the backend is not offered ("n"), which PostgreSQL
                // accepts even when it advertises SCRAM-SHA-256-PLUS.
                let scram =
                    ScramSha256::new(self.password()?.as_bytes(), ChannelBinding::unsupported());
                frontend::encode_sasl_initial_response(&mut out, SCRAM_SHA_256, scram.message());
                self.state = State::Scram(Box::new(scram));
                Ok(LoginStep::Send(out.freeze()))
            }
            Authentication::KerberosV5 => Err(LoginError::UnsupportedMethod("Kerberos V5")),
            Authentication::Gss | Authentication::GssContinue(_) => {
                Err(LoginError::UnsupportedMethod("GSSAPI"))
            }
            Authentication::Sspi => Err(LoginError::UnsupportedMethod("SSPI")),
            Authentication::SaslContinue(_) | Authentication::SaslFinal(_) => Err(
                LoginError::Protocol("SASL message outside a SASL exchange".into()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_login_collects_parameters_and_key() {
        let (mut login, startup) = BackendLogin::start(
            "app",
            "shop",
            &[("application_name".into(), "psql".into())],
            None,
        );
        let text = String::from_utf8_lossy(&startup);
        assert!(
            text.contains("user\0app\0database\0shop\0application_name\0psql\0"),
            "{text:?}"
        );
        assert!(matches!(
            login.handle(BackendMessage::Authentication(Authentication::Ok)),
            Ok(LoginStep::Continue)
        ));
        login
            .handle(BackendMessage::ParameterStatus {
                name: Bytes::from_static(b"server_version"),
                value: Bytes::from_static(b"15"),
            })
            .expect("param");
        login
            .handle(BackendMessage::BackendKeyData {
                pid: 7,
                secret: Bytes::from_static(&[1, 2, 3, 4]),
            })
            .expect("key");
        match login.handle(BackendMessage::ReadyForQuery {
            status: TransactionStatus::Idle,
        }) {
            Ok(LoginStep::Ready(ready)) => {
                assert_eq!(ready.parameters.len(), 1);
                assert_eq!(ready.key, Some((7, Bytes::from_static(&[1, 2, 3, 4]))));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn password_methods_need_a_password() {
        let (mut login, _) = BackendLogin::start("app", "shop", &[], None);
        let err = login
            .handle(BackendMessage::Authentication(
                Authentication::Md5Password { salt: [1, 2, 3, 4] },
            ))
            .expect_err("no password");
        assert_eq!(err, LoginError::NoPassword);
        assert_eq!(err.sqlstate(), "08001");
    }

    #[test]
    fn md5_answer_is_postgres_md5_hash() {
        let (mut login, _) = BackendLogin::start("app", "shop", &[], Some("secret".into()));
        match login.handle(BackendMessage::Authentication(
            Authentication::Md5Password { salt: [1, 2, 3, 4] },
        )) {
            Ok(LoginStep::Send(bytes)) => {
                let expected = md5_hash(b"app", b"secret", [1, 2, 3, 4]);
                assert_eq!(bytes[0], b'p');
                assert_eq!(&bytes[5..bytes.len() - 1], expected.as_bytes());
            }
            other => panic!("{other:?}"),
        }
    }

    fn error_fields(pairs: &[(u8, &'static [u8])]) -> Fields {
        Fields(
            pairs
                .iter()
                .map(|(c, v)| (*c, Bytes::from_static(v)))
                .collect(),
        )
    }

    #[test]
    fn backend_auth_failure_is_not_blamed_on_the_client_token() {
        let (mut login, _) = BackendLogin::start("app", "shop", &[], Some("x".into()));
        let fields = error_fields(&[
            (b'S', b"FATAL".as_slice()),
            (b'C', b"28P01"),
            (b'M', b"password authentication failed"),
        ]);
        let err = login
            .handle(BackendMessage::ErrorResponse(fields))
            .expect_err("refused");
        assert_eq!(err.sqlstate(), "08001");
        let fields = error_fields(&[
            (b'S', b"FATAL".as_slice()),
            (b'C', b"53300"),
            (b'M', b"too many clients"),
        ]);
        let (mut login, _) = BackendLogin::start("app", "shop", &[], None);
        assert_eq!(
            login
                .handle(BackendMessage::ErrorResponse(fields))
                .expect_err("full")
                .sqlstate(),
            "53300"
        );
    }

    #[test]
    fn unsupported_methods_are_named() {
        let (mut login, _) = BackendLogin::start("app", "shop", &[], Some("x".into()));
        let err = login
            .handle(BackendMessage::Authentication(Authentication::Gss))
            .expect_err("gss");
        assert!(err.to_string().contains("GSSAPI"));
    }
}
