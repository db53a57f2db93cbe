//! OIDC sign-in end to end with real processes: a local identity provider (real RSA and
//! P-256 keys, its JWKS served over HTTP on loopback), `sluice control`, `sluice proxy`,
//! PostgreSQL and `psql`.
//!
//! One test function: the JWKS endpoint's address has to reach the config through a plain
//! `fn` (the fixture's `edit_config`), so it lives in a process-wide `OnceLock`.
//! Deadlines only stop a hang from blocking the run; nothing asserts on speed.

mod support;

use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use sluice_pgharness::http::DocumentServer;

use support::{run, run_ok, Gateway, Options};

const MINUTE: Duration = Duration::from_secs(60);
const ISSUER: &str = "https://idp.test/realms/x";
const AUDIENCE: &str = "sluice";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------
// The identity provider: keys, tokens, and a JWKS endpoint
// ---------------------------------------------------------------------------------------

/// A signing key of the test identity provider and its public JWK.
struct IdpKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl IdpKey {
    fn rsa(kid: &str, private: &rsa::RsaPrivateKey) -> IdpKey {
        let pem = private.to_pkcs1_pem(LineEnding::LF).expect("pkcs1 pem");
        IdpKey {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA encoding key"),
            jwk: json!({
                "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
                "n": b64(&private.n().to_bytes_be()),
                "e": b64(&private.e().to_bytes_be()),
            }),
        }
    }

    fn p256(kid: &str) -> IdpKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256");
        let point = pair.public_key_raw();
        assert_eq!(point.len(), 65, "uncompressed P-256 point");
        IdpKey {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())
                .expect("EC encoding key"),
            jwk: json!({
                "kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
                "x": b64(&point[1..33]), "y": b64(&point[33..]),
            }),
        }
    }

    /// Signs `claims` with this key, naming `kid` in the header.
    fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }
}

fn jwks_doc(keys: &[&IdpKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// 2048-bit RSA keys, generated on threads (slow in debug builds).
fn rsa_keys(count: usize) -> Vec<rsa::RsaPrivateKey> {
    let threads: Vec<_> = (0..count)
        .map(|_| {
            std::thread::spawn(|| {
                rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA keygen")
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("keygen thread"))
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after epoch")
        .as_secs()
}

/// Claims of a good token for alice in group `engineering`, valid for 10 minutes.
fn claims() -> Value {
    let now = unix_now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "groups": ["engineering"],
        "iat": now,
        "exp": now + 600,
    })
}

fn with(mut claims: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    f(claims.as_object_mut().expect("claims object"));
    claims
}

/// A JWT with `alg: none` and no signature, built by hand (no library signs these).
fn unsigned_token(claims: &Value) -> String {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

/// The JWKS endpoint (the test changes its document to rotate keys).
fn jwks_server(doc: String) -> DocumentServer {
    DocumentServer::start("/jwks", doc).expect("start the JWKS endpoint")
}

/// The JWKS endpoint's URI, for [`add_issuer`] (a plain `fn`, so it cannot capture it).
static JWKS_URI: OnceLock<String> = OnceLock::new();

/// `edit_config`: trusts the test identity provider.
fn add_issuer(config: String) -> String {
    let uri = JWKS_URI
        .get()
        .expect("the JWKS endpoint starts before the gateway");
    format!(
        r#"{config}
[[identity.oidc]]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks_uri = "{uri}"
groups_claim = "groups"
algorithms = ["RS256", "ES256", "EdDSA"]
min_refresh_interval_secs = 1
"#
    )
}

// ---------------------------------------------------------------------------------------
// psql against the gateway
// ---------------------------------------------------------------------------------------

/// The `sluice control` process (the fixture runs it separately unless `up` is set).
fn control(gw: &Gateway) -> &support::Proc {
    gw.control
        .as_ref()
        .expect("sluice control runs as its own process")
}

/// `psql "dbname=app user=alice sslmode=require" -c "SELECT current_user"` with `token` as
/// the password. (With the default `sslmode=prefer`, libpq retries a refused TLS login in
/// plaintext, so every refusal would be two logins.)
fn login(gw: &Gateway, token: &str) -> Output {
    let mut cmd = gw.psql(token, &gw.conninfo("alice", "sslmode=require"));
    cmd.args(["-A", "-t", "-c", "SELECT current_user"]);
    run(&mut cmd, MINUTE)
}

/// Asserts the login succeeds and runs as the backend role.
fn assert_session(gw: &Gateway, what: &str, token: &str) {
    let out = login(gw, token);
    assert!(
        out.status.success(),
        "{what}: psql failed ({}):\nstderr:\n{}\ncontrol log:\n{}\ngateway log:\n{}",
        out.status,
        text(&out.stderr),
        control(gw).log_text(),
        gw.proc.log_text()
    );
    assert_eq!(text(&out.stdout).trim(), "gw", "{what}");
}

/// Asserts the login is refused by the gateway's authentication with a message containing
/// `expect` and (as the gateway logs it; psql does not show it) SQLSTATE `sqlstate`;
/// returns psql's stderr.
fn assert_refused(gw: &Gateway, what: &str, token: &str, expect: &str, sqlstate: &str) -> String {
    let out = login(gw, token);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: psql must fail to connect; stdout:\n{}\nstderr:\n{stderr}",
        text(&out.stdout)
    );
    assert!(
        stderr.contains("authentication failed for user \"alice\": "),
        "{what}: not an authentication refusal:\n{stderr}"
    );
    assert!(
        stderr.contains(expect),
        "{what}: expected {expect:?} in:\n{stderr}"
    );
    eprintln!("{what}: {}", stderr.trim());
    // The gateway logs the session end right after sending the refusal.
    let logged = format!("refused {sqlstate}: authentication failed for user \"alice\": ");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = gw.proc.log_text();
        if log
            .lines()
            .any(|line| line.contains(&logged) && line.contains(expect))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the gateway did not log {logged:?} with {expect:?}; log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stderr
}

// ---------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------

#[test]
fn oidc_tokens_open_sessions_forgeries_are_refused_and_keys_rotate_without_restart() {
    let mut rsa = rsa_keys(2);
    let other_rsa = rsa.pop().expect("second RSA key");
    let rsa = rsa.pop().expect("first RSA key");
    let k1 = IdpKey::rsa("k1", &rsa);
    // Not published: signs the "bad signature" token under k1's key id.
    let impostor = IdpKey::rsa("k1", &other_rsa);
    let k2 = IdpKey::p256("k2");

    let idp = jwks_server(jwks_doc(&[&k1]));
    JWKS_URI.set(idp.uri().to_owned()).expect("set once");
    let mut gw = Gateway::start(Options {
        edit_config: Some(add_issuer),
        ..Options::default()
    });
    assert!(
        idp.requests() >= 1,
        "control fetches the JWKS over HTTP when it starts"
    );

    // 1. A token from the identity provider opens a session.
    assert_session(&gw, "RS256 token signed with k1", &k1.sign(&claims()));
    let mut cmd = gw.psql(&k1.sign(&claims()), &gw.conninfo("alice", ""));
    cmd.args(["-A", "-t", "-c", "SELECT 6 * 7"]);
    assert_eq!(run_ok(&mut cmd, MINUTE).trim(), "42");

    // 2. Forged, misdirected or stale tokens are refused, each saying what is wrong.
    let public_pem = rsa
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("public key pem");
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some("k1".into());
    let confused = jsonwebtoken::encode(
        &hs256,
        &claims(),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .expect("HS256 with the public key as secret");

    let now = unix_now();
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "wrong audience",
            k1.sign(&with(claims(), |c| {
                c.insert("aud".into(), json!("another-app"));
            })),
            "not for this gateway (\"sluice\")",
            "28000",
        ),
        (
            "expired",
            k1.sign(&with(claims(), |c| {
                c.insert("iat".into(), json!(now - 7200));
                c.insert("exp".into(), json!(now - 3600));
            })),
            "the token expired",
            "28000",
        ),
        (
            "bad signature",
            impostor.sign(&claims()),
            "signature does not verify with the identity provider's key \"k1\"",
            "28P01",
        ),
        (
            "unknown kid",
            k1.sign_as("k-never-published", &claims()),
            "key id \"k-never-published\", which the identity provider does not publish",
            "28P01",
        ),
        (
            "alg none",
            unsigned_token(&claims()),
            "unsigned (alg \"none\")",
            "28P01",
        ),
        (
            "HS256 with the RSA public key as secret",
            confused,
            "HS256, a shared-secret (HMAC) algorithm",
            "28P01",
        ),
    ];
    let refusals: Vec<(&str, String)> = cases
        .iter()
        .map(|(what, token, expect, sqlstate)| {
            (*what, assert_refused(&gw, what, token, expect, sqlstate))
        })
        .collect();
    for (i, (what, stderr)) in refusals.iter().enumerate() {
        for (j, (other, other_stderr)) in refusals.iter().enumerate() {
            if i == j {
                continue;
            }
            assert_ne!(stderr, other_stderr, "{what} and {other} read the same");
            let other_expect = cases[j].2;
            assert!(
                !stderr.contains(other_expect),
                "{what} is refused with the message of {other}:\n{stderr}"
            );
        }
    }

    // 3. Key rotation without restarting anything.
    let proxy_pid = gw.proc.pid();
    let control_pid = control(&gw).pid();
    let k2_token = k2.sign(&claims());
    assert_refused(
        &gw,
        "ES256 token signed with k2 before the identity provider publishes k2",
        &k2_token,
        "key id \"k2\", which the identity provider does not publish",
        "28P01",
    );
    // The refetch for an unknown kid is rate-limited (min_refresh_interval_secs = 1): let
    // the window of the refetch just caused pass, so the next one is not suppressed.
    std::thread::sleep(Duration::from_secs(2));
    let fetched_before = idp.requests();
    idp.publish(jwks_doc(&[&k1, &k2]));
    assert_session(&gw, "ES256 token signed with the new key k2", &k2_token);
    assert!(
        idp.requests() > fetched_before,
        "control refetched the JWKS ({} requests before, {} after)",
        fetched_before,
        idp.requests()
    );
    assert!(
        control(&gw)
            .log_text()
            .contains("fetched the issuer's new keys"),
        "control picked up k2 through the unknown-kid refetch; log:\n{}",
        control(&gw).log_text()
    );
    // k1 stays valid while the identity provider still publishes it.
    assert_session(&gw, "k1 token after the rotation", &k1.sign(&claims()));
    assert_eq!(gw.proc.pid(), proxy_pid);
    assert_eq!(control(&gw).pid(), control_pid);
    assert!(
        gw.proc.try_wait().is_none(),
        "sluice proxy is still running"
    );
    assert!(
        gw.control
            .as_mut()
            .expect("sluice control runs as its own process")
            .try_wait()
            .is_none(),
        "sluice control is still running"
    );
}
