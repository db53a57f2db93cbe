//! Test fixture: a throwaway PostgreSQL cluster, a deployment written by the same code the
//! demo uses, and control plus a gateway running in-process (the gateway on an ephemeral
//! port, subscribed to control's snapshots).
//!
//! Dropping a [`Fixture`] stops the gateway (fast stop, then `join`) before the cluster is
//! dropped, so a failing test leaves neither worker threads nor postgres processes behind
//! (pgharness stops and removes the cluster on drop and has a watchdog for hard kills).

#![allow(dead_code)] // each test binary uses a different part of the fixture

pub mod raw;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sluice_control::identity::Keyring;
use sluice_control::service::{paths, Control};
use sluice_pgharness::{ClusterOptions, PgCluster};
use sluice_proxy::config::Driver;
use sluice_proxy::deployment::{self, BackendSpec, Deployment};
use sluice_proxy::{Config, Gateway};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

/// Resource name clients put in `dbname`; also the backend database's name.
pub const RESOURCE: &str = "app";
/// Backend role the gateway logs in as.
pub const BACKEND_USER: &str = "gw";

/// Guard for anything that talks to the gateway: a hang fails the test instead of blocking
/// the suite. Generous on purpose; it is not a timing assertion.
pub const GUARD: Duration = Duration::from_secs(20);

/// How to build a fixture.
pub struct Options {
    /// Cluster options (auth method, extra `postgresql.conf` settings).
    pub cluster: ClusterOptions,
    /// Edits the loaded configuration before the gateway starts.
    pub tweak: Box<dyn FnOnce(&mut Config)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cluster: ClusterOptions::default(),
            tweak: Box::new(|_| {}),
        }
    }
}

/// A running cluster + gateway pair.
pub struct Fixture {
    // Field order matters for the drop order; `Drop` stops the gateway explicitly first.
    gateway: Option<Gateway>,
    /// Control, in-process; `pub` so tests can stop (and restart) it.
    pub control: Option<Control>,
    addr: SocketAddr,
    /// The deployment files (config, CA, token signing key).
    pub deployment: Deployment,
    /// The configuration the gateway was started with.
    pub config: Config,
    /// Password of the backend role `gw` (held by the gateway only).
    pub backend_password: String,
    /// The throwaway cluster; `pub` so tests can stop/start it or change its auth.
    pub cluster: PgCluster,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Default fixture: SCRAM backend, TLS on, two workers.
    pub fn start() -> Fixture {
        Fixture::with(Options::default())
    }

    /// Fixture with a config tweak.
    pub fn with_config(tweak: impl FnOnce(&mut Config) + 'static) -> Fixture {
        Fixture::with(Options {
            tweak: Box::new(tweak),
            ..Options::default()
        })
    }

    /// Fixture from options.
    pub fn with(options: Options) -> Fixture {
        let cluster = PgCluster::start(options.cluster).expect("start PostgreSQL cluster");
        let backend_password = format!("gw-{:032x}", rand::random::<u128>());
        cluster
            .create_role(BACKEND_USER, &backend_password, false)
            .expect("create backend role");
        cluster
            .psql(
                "postgres",
                &format!("CREATE DATABASE {RESOURCE} OWNER {BACKEND_USER};"),
            )
            .expect("create backend database");

        let dir = tempfile::tempdir().expect("deployment tempdir");
        let deployment = deployment::write(
            dir.path(),
            0,
            Driver::IoUring,
            &BackendSpec {
                resource: RESOURCE.into(),
                host: cluster.host().into(),
                port: cluster.port(),
                database: RESOURCE.into(),
                user: BACKEND_USER.into(),
                password: backend_password.clone(),
            },
        )
        .expect("write deployment");
        let mut config = Config::load(&deployment.config).expect("load the written config");
        config.listen.workers = 2;
        // Tests run in parallel; pinning every gateway's workers to cores 0 and 1 would
        // only make them fight.
        config.listen.pin_workers = false;
        (options.tweak)(&mut config);
        let control = Control::start(&deployment.config).expect("start control");
        let gateway = Gateway::start(config.clone()).expect("start gateway");
        let addr = gateway.local_addr();
        assert_ne!(addr.port(), 0, "port 0 must resolve to a real port");
        Fixture {
            gateway: Some(gateway),
            control: Some(control),
            addr,
            deployment,
            config,
            backend_password,
            cluster,
            _dir: dir,
        }
    }

    /// Where the gateway listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The deployment's CA certificate (clients' `sslrootcert`).
    pub fn ca(&self) -> PathBuf {
        self.deployment.ca.clone()
    }

    /// The gateway, while it runs.
    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().expect("gateway already joined")
    }

    /// Takes the gateway out (for shutdown tests). The returned guard still stops and
    /// joins it if the test panics before joining it itself.
    pub fn take_gateway(&mut self) -> OwnedGateway {
        OwnedGateway(Some(self.gateway.take().expect("gateway already taken")))
    }

    /// A valid one-hour token for `user`, in group `dba` (the demo policy lets it run any
    /// statement; tests of statement policy mint their own).
    pub fn token(&self, user: &str) -> String {
        self.deployment
            .mint(user, &["dba"], Duration::from_secs(3600))
            .expect("mint token")
    }

    /// A token signed with control's key, issued at `issued_at` with `ttl`.
    pub fn token_at(&self, user: &str, ttl: Duration, issued_at: SystemTime) -> String {
        let ring = Keyring::open_or_create(&paths::keys_dir(&self.deployment.state_dir), issued_at)
            .expect("keyring");
        ring.mint("sluice", user, &["dba".to_owned()], ttl, issued_at)
            .expect("mint token")
    }

    /// A token signed by a key this deployment never trusted (another keyring).
    pub fn foreign_token(&self, user: &str) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let ring =
            Keyring::open_or_create(&dir.path().join("keys"), SystemTime::now()).expect("keyring");
        ring.mint(
            "sluice",
            user,
            &["engineering".to_owned()],
            Duration::from_secs(600),
            SystemTime::now(),
        )
        .expect("mint token")
    }

    /// Client configuration for the gateway (plain TCP, `sslmode=disable`).
    pub fn pg_config(&self, user: &str, token: &str, dbname: &str) -> tokio_postgres::Config {
        let mut config = self.config_without_host(user, token, dbname);
        config.host(self.addr.ip().to_string());
        config
    }

    fn config_without_host(&self, user: &str, token: &str, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .port(self.addr.port())
            .user(user)
            .password(token)
            .dbname(dbname)
            .application_name("sluice-proxy-tests")
            .ssl_mode(SslMode::Disable)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Connects without TLS; errors are returned (for refusal tests).
    pub async fn try_connect(
        &self,
        user: &str,
        token: &str,
        dbname: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        connect_with(self.pg_config(user, token, dbname), NoTls).await
    }

    /// Connects without TLS to the default resource; panics on failure.
    pub async fn connect(&self, user: &str, token: &str) -> Client {
        match self.try_connect(user, token, RESOURCE).await {
            Ok(client) => client,
            Err(e) => panic!("connect as {user} failed: {}", describe(&e)),
        }
    }

    /// A connected client for `user` with a fresh token.
    pub async fn client(&self, user: &str) -> Client {
        let token = self.token(user);
        self.connect(user, &token).await
    }

    /// Client configuration for TLS with `verify-full` semantics: host name `localhost`
    /// (what the certificate names), address 127.0.0.1, `sslmode=require` plus a rustls
    /// config that verifies the chain against the CA and the host name.
    pub fn tls_pg_config(&self, user: &str, token: &str) -> tokio_postgres::Config {
        self.tls_pg_config_for_name("localhost", user, token)
    }

    /// Like [`Fixture::tls_pg_config`] with another TLS host name (same address).
    pub fn tls_pg_config_for_name(
        &self,
        name: &str,
        user: &str,
        token: &str,
    ) -> tokio_postgres::Config {
        let mut config = self.config_without_host(user, token, RESOURCE);
        config
            .host(name)
            .hostaddr(self.addr.ip())
            .ssl_mode(SslMode::Require);
        config
    }

    /// Connects over TLS, verifying the gateway's certificate against `ca_pem`.
    pub async fn try_connect_tls(
        &self,
        config: tokio_postgres::Config,
        ca_pem: &[u8],
    ) -> Result<Client, tokio_postgres::Error> {
        connect_with(config, tls_connector(ca_pem)).await
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown_handle().stop();
            if let Err(e) = gateway.join() {
                // Not a panic inside drop (that would abort a test that is already
                // unwinding); the message still shows in the test output.
                eprintln!("gateway join failed: {e:#}");
            }
        }
        drop(self.control.take());
        // `cluster` drops after this, stopping PostgreSQL and removing its directory.
    }
}

/// A gateway taken out of its fixture: stopped and joined on drop unless joined first.
pub struct OwnedGateway(Option<Gateway>);

impl OwnedGateway {
    /// Handle for `drain()`/`stop()`.
    pub fn shutdown_handle(&self) -> sluice_proxy::ShutdownHandle {
        self.0.as_ref().expect("gateway present").shutdown_handle()
    }

    /// Waits for every worker (blocking).
    pub fn join(mut self) -> anyhow::Result<()> {
        self.0.take().expect("gateway present").join()
    }
}

impl Drop for OwnedGateway {
    fn drop(&mut self) {
        if let Some(gateway) = self.0.take() {
            gateway.shutdown_handle().stop();
            let _ = gateway.join();
        }
    }
}

/// A rustls connector trusting only `ca_pem` (ring provider), with host-name checks.
pub fn tls_connector(ca_pem: &[u8]) -> tokio_postgres_rustls::MakeRustlsConnect {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("CA PEM parses")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Connects and spawns the connection future; the task ends when the client is dropped.
pub async fn connect_with<T>(
    config: tokio_postgres::Config,
    tls: T,
) -> Result<Client, tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = guard("connect", config.connect(tls)).await?;
    tokio::spawn(async move {
        // Errors after the test is done with the client (e.g. the gateway stopping) are
        // expected and carry no assertion.
        let _ = connection.await;
    });
    Ok(client)
}

/// Awaits `future` under [`GUARD`]; a hang panics with `what`.
pub async fn guard<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(GUARD, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: no answer within {GUARD:?}"),
    }
}

/// SQLSTATE of a server (or gateway) error, if any.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|db| db.code().code())
}

/// Full description of an error, DB fields included.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} {}: {} (hint: {:?})",
            db.severity(),
            db.code().code(),
            db.message(),
            db.hint()
        ),
        None => format!("{e} ({e:?})"),
    }
}

/// Asserts that `result` is a server error with `code`; returns the error.
#[track_caller]
pub fn expect_sqlstate<T>(
    result: Result<T, tokio_postgres::Error>,
    code: &str,
) -> tokio_postgres::Error {
    match result {
        Ok(_) => panic!("expected SQLSTATE {code}, got success"),
        Err(e) => {
            assert_eq!(sqlstate(&e), Some(code), "{}", describe(&e));
            e
        }
    }
}

/// Runs a trivial query on `client` and checks its answer (the "still alive" probe).
pub async fn assert_alive(client: &Client, context: &str) {
    let row = guard(context, client.query_one("SELECT 41 + 1", &[]))
        .await
        .unwrap_or_else(|e| panic!("{context}: session broken: {}", describe(&e)));
    assert_eq!(row.get::<_, i32>(0), 42, "{context}");
}

/// Loopback address helper for raw sockets.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}
