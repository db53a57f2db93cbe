//! SAML login end to end with real processes: a test identity provider (an RSA key and a
//! self-signed certificate, Responses signed through xmlsec), `sluice control` and `sluice
//! proxy` trusting it through `[[identity.saml]]`, `sluice login --saml FILE`, PostgreSQL
//! and `psql`.
//!
//! The IdP lives in a process-wide `OnceLock` because the fixture's hooks are plain `fn`s.
//! Deadlines only stop a hang from blocking the run; nothing asserts on speed.

mod support;

use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use sluice_control::saml::testing::{encode, KeyKind, TestIdp};
use sluice_proxy::deployment::Deployment;

use support::{run, run_ok, Gateway, Options};

const MINUTE: Duration = Duration::from_secs(60);
const IDP: &str = "https://idp.test/saml";
const AUDIENCE: &str = "https://sluice.test/sp";

fn idp() -> &'static TestIdp {
    static IDP_KEY: OnceLock<TestIdp> = OnceLock::new();
    IDP_KEY.get_or_init(|| TestIdp::generate(IDP, KeyKind::Rsa2048).expect("test IdP"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `edit_config`: trusts the test IdP.
fn add_idp(config: String) -> String {
    format!(
        r#"{config}
[[identity.saml]]
entity_id = "{IDP}"
certificate = "saml-idp.pem"
audience = "{AUDIENCE}"
groups_attribute = "groups"
token_ttl = "1h"
clock_skew = "30s"
"#
    )
}

/// `before_start`: the IdP's certificate next to the config, where `add_idp` names it.
fn write_certificate(deployment: &Deployment) {
    let dir = deployment.config.parent().expect("config dir");
    std::fs::write(dir.join("saml-idp.pem"), &idp().cert_pem).expect("write certificate");
}

/// Writes `response` to a file and runs `sluice login --saml FILE`.
fn login(gw: &Gateway, name: &str, response: &str) -> Output {
    let path = gw.dir.path().join(format!("{name}.saml"));
    std::fs::write(&path, response).expect("write response");
    gw.sluice(&["login", "--saml", path.to_str().expect("utf-8 path")])
}

/// Runs `login` and returns the token it printed.
fn login_ok(gw: &Gateway, name: &str, response: &str) -> String {
    let out = login(gw, name, response);
    assert!(
        out.status.success(),
        "{name}: sluice login failed:\n{}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "the token alone: {stdout:?}");
    stdout.trim().to_owned()
}

/// Runs `login` expecting a refusal; returns the error line.
fn login_refused(gw: &Gateway, name: &str, response: &str) -> String {
    let out = login(gw, name, response);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
    assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
    assert!(
        stderr.starts_with("error: SAML login refused: "),
        "{name}: {stderr}"
    );
    stderr.trim().to_owned()
}

#[test]
fn saml_responses_become_tokens_and_forged_altered_stale_or_misdirected_ones_are_refused() {
    let gw = Gateway::start(Options {
        edit_config: Some(add_idp),
        before_start: Some(write_certificate),
        ..Options::default()
    });

    // 1. A signed Response for alice (group engineering) becomes a token that opens a
    //    session as alice.
    let response = idp()
        .sign_base64(&idp().spec("alice", &["engineering"], AUDIENCE))
        .expect("sign");
    let out = login(&gw, "alice", &response);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("logged in as alice (groups: engineering)") && stderr.contains(IDP),
        "{stderr}"
    );
    let mut cmd = gw.psql(&token, &gw.conninfo("alice", ""));
    cmd.args(["-A", "-t", "-c", "SELECT 6 * 7"]);
    assert_eq!(run_ok(&mut cmd, MINUTE).trim(), "42");
    // The token is alice's: it does not open a session as someone else.
    let mut cmd = gw.psql(&token, &gw.conninfo("bob", ""));
    cmd.args(["-c", "SELECT 1"]);
    let out = run(&mut cmd, MINUTE);
    assert!(!out.status.success(), "alice's token used as bob");

    // The same Response cannot be exchanged twice.
    let replayed = login_refused(&gw, "replay", &response);
    assert!(replayed.contains("already exchanged"), "{replayed}");

    // The groups come from the assertion: a contractor gets a token, and the policy then
    // asks for a just-in-time grant.
    let dave = login_ok(
        &gw,
        "dave",
        &idp()
            .sign_base64(&idp().spec("dave", &["contractors"], AUDIENCE))
            .expect("sign"),
    );
    let mut cmd = gw.psql(&dave, &gw.conninfo("dave", ""));
    cmd.args(["-c", "SELECT 1"]);
    let out = run(&mut cmd, MINUTE);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("contractors-ask-first"),
        "{}",
        text(&out.stderr)
    );

    // 2. Refusals, each saying what is wrong.
    let stranger = TestIdp::generate(IDP, KeyKind::EcdsaP256).expect("stranger");
    let forged = login_refused(
        &gw,
        "forged",
        &stranger
            .sign_base64(&stranger.spec("alice", &["engineering"], AUDIENCE))
            .expect("sign"),
    );
    assert!(
        forged.contains("signed by a certificate that is not IdP"),
        "{forged}"
    );

    let xml = idp()
        .sign_xml(&idp().spec("mallory", &["support"], AUDIENCE))
        .expect("sign");
    let altered = xml.replace(">mallory<", ">alice<");
    assert_ne!(xml, altered, "the NameID was changed");
    let tampered = login_refused(&gw, "tampered", &encode(&altered));
    assert!(tampered.contains("altered after"), "{tampered}");

    let now = SystemTime::now();
    let mut spec = idp().spec("alice", &["engineering"], AUDIENCE);
    spec.issued = now - Duration::from_secs(900);
    spec.not_before = now - Duration::from_secs(900);
    spec.not_on_or_after = now - Duration::from_secs(600);
    let expired = login_refused(&gw, "expired", &idp().sign_base64(&spec).expect("sign"));
    assert!(expired.contains("expired at"), "{expired}");

    let spec = idp().spec("alice", &["engineering"], "https://another-sp.test");
    let misdirected = login_refused(&gw, "audience", &idp().sign_base64(&spec).expect("sign"));
    assert!(
        misdirected.contains("not this gateway") && misdirected.contains("another-sp.test"),
        "{misdirected}"
    );

    let messages = [&forged, &tampered, &expired, &misdirected, &replayed];
    for (i, a) in messages.iter().enumerate() {
        for b in &messages[i + 1..] {
            assert_ne!(a, b, "refusals must be distinct");
        }
    }

    let garbage = login(&gw, "garbage", "this is not a SAML response");
    assert_eq!(garbage.status.code(), Some(1));
    assert!(text(&garbage.stderr).contains("not base64"));
    let missing = gw.sluice(&["login", "--saml", "/nonexistent/response.saml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("reading the SAML Response"));

    // 3. Each login is in the audit trail with its subject and IdP.
    let audit = gw.sluice(&["audit", "--json"]);
    assert!(audit.status.success(), "{}", text(&audit.stderr));
    let events: serde_json::Value = serde_json::from_slice(&audit.stdout).expect("audit JSON");
    let logins: Vec<&serde_json::Value> = events
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["action"] == "saml.login")
        .collect();
    assert_eq!(logins.len(), 2, "{events:#}");
    assert_eq!(logins[0]["actor"], "alice");
    assert!(
        logins[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("idp={IDP}"))),
        "{:#}",
        logins[0]
    );
}
