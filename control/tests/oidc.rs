//! OIDC issuers end to end: real RSA / P-256 / Ed25519 keys, a real JWKS endpoint on
//! loopback that can rotate its key set, and every refusal path.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use sluice_control::oidc::{
    verify_with_refresh, IssuerConfig, Jwks, JwksCache, OidcError, OidcVerifier, SigningAlgorithm,
};
use sluice_pgharness::http::DocumentServer;

const ISSUER: &str = "https://idp.test/realms/prod";
const AUDIENCE: &str = "sluice-gateway";

// ---------- keys ----------

struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// One RSA key per test binary: 2048-bit generation is slow in debug builds.
fn rsa_private() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA keygen")
    })
}

fn rsa_key(kid: &str) -> TestKey {
    let private = rsa_private();
    let pem = private.to_pkcs1_pem(LineEnding::LF).expect("pkcs1 pem");
    TestKey {
        kid: kid.to_owned(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa encoding key"),
        jwk: json!({
            "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
            "n": b64(&private.n().to_bytes_be()),
            "e": b64(&private.e().to_bytes_be()),
        }),
    }
}

fn ec_key(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
    let point = pair.public_key_raw();
    assert_eq!(point.len(), 65);
    TestKey {
        kid: kid.to_owned(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("ec key"),
        jwk: json!({
            "kty": "EC", "kid": kid, "crv": "P-256",
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
        }),
    }
}

fn ed_key(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519");
    TestKey {
        kid: kid.to_owned(),
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("ed key"),
        jwk: json!({
            "kty": "OKP", "kid": kid, "crv": "Ed25519", "use": "sig",
            "x": b64(pair.public_key_raw()),
        }),
    }
}

fn jwks_doc(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

// ---------- tokens ----------

fn now() -> SystemTime {
    // A fixed, whole-second clock keeps the arithmetic in assertions exact.
    UNIX_EPOCH + Duration::from_secs(1_750_000_000)
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs()
}

fn claims() -> Value {
    let now = secs(now());
    json!({
        "iss": ISSUER,
        "aud": ["account", AUDIENCE],
        "sub": "0f8e-alice",
        "preferred_username": "alice",
        "realm_access": { "roles": ["engineering", "oncall"] },
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    })
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).expect("sign")
}

fn with(mut base: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    f(base.as_object_mut().expect("object"));
    base
}

fn config() -> IssuerConfig {
    let mut c = IssuerConfig::new(ISSUER, AUDIENCE);
    c.jwks_uri = Some("https://idp.test/certs".into());
    c.groups_claim = "realm_access.roles".into();
    c
}

fn verifier(keys: &[&TestKey]) -> OidcVerifier {
    verifier_with(config(), keys)
}

fn verifier_with(config: IssuerConfig, keys: &[&TestKey]) -> OidcVerifier {
    config.validate().expect("valid config");
    let jwks = Jwks::from_json(&jwks_doc(keys)).expect("jwks");
    assert_eq!(jwks.len(), keys.len(), "{:?}", jwks.skipped());
    OidcVerifier::new(config, Arc::new(jwks))
}

fn refuse(v: &OidcVerifier, token: &str) -> OidcError {
    let err = v.verify(token, now()).expect_err("must be refused");
    assert!(!err.to_string().is_empty());
    err
}

// ---------- a JWKS endpoint on loopback ----------

fn jwks_server(doc: String) -> DocumentServer {
    DocumentServer::start("/jwks.json", doc).expect("start the JWKS endpoint")
}

// ---------- tests ----------

#[test]
fn valid_tokens_of_each_algorithm_verify_with_groups_from_a_dotted_path() {
    let (rsa, ec, ed) = (rsa_key("rsa-1"), ec_key("ec-1"), ed_key("ed-1"));
    let v = verifier(&[&rsa, &ec, &ed]);
    for key in [&rsa, &ec, &ed] {
        let p = v
            .verify(&sign(key, &claims()), now())
            .unwrap_or_else(|e| panic!("{:?}: {e}", key.alg));
        assert_eq!(p.subject, "0f8e-alice");
        assert_eq!(p.groups, ["engineering", "oncall"]);
        assert_eq!(p.issuer, ISSUER);
        assert_eq!(p.expires_at, now() + Duration::from_secs(600));
    }

    // Other claim layouts: a custom subject claim, a single-string groups claim, a plain
    // string `aud`, and no groups at all.
    let mut c = config();
    c.subject_claim = "preferred_username".into();
    c.groups_claim = "groups".into();
    let v2 = verifier_with(c, &[&ed]);
    let token = sign(
        &ed,
        &with(claims(), |m| {
            m.insert("groups".into(), json!("dba"));
            m.insert("aud".into(), json!(AUDIENCE));
        }),
    );
    let p = v2.verify(&token, now()).expect("valid");
    assert_eq!(p.subject, "alice");
    assert_eq!(p.groups, ["dba"]);
    let p = v2.verify(&sign(&ed, &claims()), now()).expect("valid");
    assert!(p.groups.is_empty());
}

#[test]
fn audience_issuer_time_and_subject_are_checked_with_distinct_messages() {
    let ec = ec_key("ec-1");
    let v = verifier(&[&ec]);
    let mut messages = HashSet::new();
    let mut check = |err: OidcError, sqlstate: &str| {
        assert_eq!(err.sqlstate(), sqlstate, "{err:?}");
        assert!(messages.insert(err.to_string()), "duplicate message: {err}");
        err
    };

    let err = check(
        refuse(
            &v,
            &sign(
                &ec,
                &with(claims(), |m| {
                    m.insert("aud".into(), json!(["account", "grafana"]));
                }),
            ),
        ),
        "28000",
    );
    assert!(
        matches!(&err, OidcError::WrongAudience { found, expected }
        if found == &["account", "grafana"] && expected == AUDIENCE),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("grafana") && msg.contains(AUDIENCE), "{msg}");

    // Expired 100 s ago: beyond the 30 s skew. 20 s ago is within it.
    let t = secs(now());
    let err = check(
        refuse(
            &v,
            &sign(
                &ec,
                &with(claims(), |m| {
                    m.insert("exp".into(), json!(t - 100));
                    m.insert("nbf".into(), json!(t - 700));
                }),
            ),
        ),
        "28000",
    );
    assert_eq!(err, OidcError::Expired { ago_secs: 100 });
    assert!(err.to_string().contains("100 s ago"), "{err}");
    v.verify(
        &sign(
            &ec,
            &with(claims(), |m| {
                m.insert("exp".into(), json!(t - 20));
            }),
        ),
        now(),
    )
    .expect("within skew");

    let err = check(
        refuse(
            &v,
            &sign(
                &ec,
                &with(claims(), |m| {
                    m.insert("nbf".into(), json!(t + 120));
                }),
            ),
        ),
        "28000",
    );
    assert_eq!(err, OidcError::NotYetValid { in_secs: 120 });

    let err = check(
        refuse(
            &v,
            &sign(
                &ec,
                &with(claims(), |m| {
                    m.insert("iss".into(), json!("https://evil.test"));
                }),
            ),
        ),
        "28P01",
    );
    assert!(matches!(&err, OidcError::WrongIssuer { found, .. } if found == "https://evil.test"));
    assert!(err.to_string().contains(ISSUER));

    let err = check(
        refuse(
            &v,
            &sign(
                &ec,
                &with(claims(), |m| {
                    m.remove("sub");
                }),
            ),
        ),
        "28P01",
    );
    assert!(
        matches!(&err, OidcError::MissingClaim { claim, .. } if claim == "sub"),
        "{err:?}"
    );

    // A token without iss, aud or exp is never trusted.
    for claim in ["iss", "aud", "exp"] {
        let err = refuse(
            &v,
            &sign(
                &ec,
                &with(claims(), |m| {
                    m.remove(claim);
                }),
            ),
        );
        assert!(
            matches!(&err, OidcError::MissingClaim { claim: c, .. } if c == claim),
            "{err:?}"
        );
        assert_eq!(err.sqlstate(), "28P01");
    }

    let err = check(
        refuse(
            &v,
            &sign(
                &ec,
                &with(claims(), |m| {
                    m.insert("realm_access".into(), json!({ "roles": [1, 2] }));
                }),
            ),
        ),
        "28P01",
    );
    assert!(matches!(err, OidcError::BadGroupsClaim { .. }), "{err:?}");
}

#[test]
fn forged_and_confused_tokens_are_refused() {
    let (rsa, ec, ed) = (rsa_key("rsa-1"), ec_key("ec-1"), ed_key("ed-1"));
    let v = verifier(&[&rsa, &ec, &ed]);
    let mut messages = HashSet::new();
    let mut check = |err: OidcError| {
        assert_eq!(err.sqlstate(), "28P01", "{err:?}");
        assert!(messages.insert(err.to_string()), "duplicate message: {err}");
        err
    };

    // Bad signature: another key that claims the same kid.
    let impostor = ec_key("ec-1");
    let err = check(refuse(&v, &sign(&impostor, &claims())));
    assert_eq!(err, OidcError::BadSignature { kid: "ec-1".into() });
    // Tampered payload under a genuine signature.
    let genuine = sign(&ed, &claims());
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let evil = b64(&serde_json::to_vec(&with(claims(), |m| {
        m.insert("sub".into(), json!("root"));
    }))
    .expect("json"));
    parts[1] = &evil;
    assert_eq!(
        refuse(&v, &parts.join(".")),
        OidcError::BadSignature { kid: "ed-1".into() }
    );

    // alg: none, crafted by hand (and its case variants).
    let payload = b64(claims().to_string().as_bytes());
    for none in ["none", "None", "NONE"] {
        let header = b64(json!({ "alg": none, "kid": "rsa-1", "typ": "JWT" })
            .to_string()
            .as_bytes());
        let err = refuse(&v, &format!("{header}.{payload}."));
        assert_eq!(err, OidcError::Unsigned, "{none}");
    }
    check(OidcError::Unsigned);

    // Algorithm confusion: HS256 with the RSA public key (PEM and DER) as HMAC secret.
    let public = rsa_private().to_public_key();
    let secrets: Vec<Vec<u8>> = vec![
        public
            .to_public_key_pem(LineEnding::LF)
            .expect("pem")
            .into_bytes(),
        public
            .to_pkcs1_pem(LineEnding::LF)
            .expect("pem")
            .into_bytes(),
        public.to_public_key_der().expect("der").as_bytes().to_vec(),
        public.to_pkcs1_der().expect("der").as_bytes().to_vec(),
    ];
    for secret in &secrets {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("rsa-1".into());
        let token = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret))
            .expect("hs256");
        let err = refuse(&v, &token);
        assert_eq!(
            err,
            OidcError::SymmetricAlgorithm {
                alg: "HS256".into()
            }
        );
    }
    let err = check(OidcError::SymmetricAlgorithm {
        alg: "HS256".into(),
    });
    assert!(err.to_string().contains("confusion"), "{err}");

    // An algorithm the issuer is not allowed to use (EdDSA disabled), and one we never
    // support (RS384 with the same RSA key).
    let mut c = config();
    c.algorithms = vec![SigningAlgorithm::RS256, SigningAlgorithm::ES256];
    let restricted = verifier_with(c, &[&rsa, &ec, &ed]);
    let err = check(refuse(&restricted, &sign(&ed, &claims())));
    assert!(
        matches!(&err, OidcError::AlgorithmNotAllowed { alg, allowed, .. }
        if alg == "EdDSA" && allowed == "RS256, ES256"),
        "{err:?}"
    );
    let rs384 = TestKey {
        alg: Algorithm::RS384,
        ..rsa_key("rsa-1")
    };
    let err = refuse(&v, &sign(&rs384, &claims()));
    assert!(matches!(&err, OidcError::AlgorithmNotAllowed { alg, .. } if alg == "RS384"));

    // alg and key type disagree: ES256 header naming the RSA key.
    let ec_as_rsa = TestKey {
        kid: "rsa-1".into(),
        ..ec_key("x")
    };
    let err = check(refuse(&v, &sign(&ec_as_rsa, &claims())));
    assert!(
        matches!(&err, OidcError::KeyAlgorithmMismatch { kid, alg, .. }
        if kid == "rsa-1" && alg == "ES256"),
        "{err:?}"
    );

    // No kid; unknown kid.
    let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims(), &ed.encoding)
        .expect("sign");
    check(refuse(&v, &token));
    assert!(matches!(refuse(&v, &token), OidcError::MissingKid { .. }));
    let err = check(refuse(&v, &sign(&ed_key("ed-unknown"), &claims())));
    assert_eq!(err, OidcError::UnknownKid("ed-unknown".into()));

    // Garbage.
    for garbage in ["", "hunter2", "a.b.c", "a.b.c.d", "eyJ.eyJ.x"] {
        let err = refuse(&v, garbage);
        assert!(matches!(err, OidcError::Malformed(_)), "{garbage}: {err:?}");
        assert_eq!(err.sqlstate(), "28P01");
    }
    check(refuse(&v, "hunter2"));
}

#[test]
fn an_hmac_key_in_the_jwks_is_never_used() {
    // Even if the IdP (or an attacker who controls the document) publishes an `oct` key,
    // it is skipped, and an HS256 token naming it is refused before any key lookup.
    let secret = b"correct horse battery staple";
    let doc = json!({ "keys": [{ "kty": "oct", "kid": "shared", "k": b64(secret) }] });
    let jwks = Jwks::from_json(&doc.to_string()).expect("parses");
    assert!(jwks.is_empty());
    let v = OidcVerifier::new(config(), Arc::new(jwks));
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("shared".into());
    let token =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret)).expect("hs");
    assert!(matches!(
        refuse(&v, &token),
        OidcError::SymmetricAlgorithm { .. }
    ));
}

#[test]
fn rotation_is_picked_up_over_http_and_refetches_are_rate_limited() {
    let old = ec_key("2024-key");
    let server = jwks_server(jwks_doc(&[&old]));
    let mut c = config();
    c.jwks_uri = Some(server.uri().to_owned());
    c.min_refresh_interval_secs = 60;
    let cache = JwksCache::new(c).expect("cache");

    let t0 = now();
    cache.load(t0).expect("initial fetch");
    assert_eq!(server.requests(), 1);
    assert_eq!(cache.jwks().kids(), ["2024-key"]);
    verify_with_refresh(&cache, &sign(&old, &claims()), t0).expect("old key verifies");
    assert_eq!(server.requests(), 1, "a known kid never refetches");

    // The IdP rotates: publishes a new RSA key next to the old one and signs with it.
    let new = rsa_key("2025-key");
    server.publish(jwks_doc(&[&old, &new]));
    let t1 = t0 + Duration::from_secs(61);
    let p = verify_with_refresh(&cache, &sign(&new, &claims()), t1).expect("new key verifies");
    assert_eq!(p.subject, "0f8e-alice");
    assert_eq!(server.requests(), 2, "exactly one refetch for the new kid");
    assert_eq!(cache.fetch_count(), 2);
    assert_eq!(cache.jwks().kids(), ["2024-key", "2025-key"]);

    // Another unknown kid within the window: no refetch, refused as unknown.
    let random = ed_key("random-kid-1");
    let err = verify_with_refresh(
        &cache,
        &sign(&random, &claims()),
        t1 + Duration::from_secs(5),
    )
    .expect_err("unknown");
    assert_eq!(err, OidcError::UnknownKid("random-kid-1".into()));
    for i in 0..20 {
        let kid = format!("flood-{i}");
        assert!(!cache
            .refresh_for_unknown_kid(&kid, t1 + Duration::from_secs(10))
            .expect("rate-limited, not an error"));
    }
    assert_eq!(
        server.requests(),
        2,
        "a flood of random kids does not hammer the IdP"
    );

    // After the window, the next unknown kid refetches once (and is still unknown).
    let t2 = t1 + Duration::from_secs(61);
    let err = verify_with_refresh(&cache, &sign(&random, &claims()), t2).expect_err("unknown");
    assert_eq!(err, OidcError::UnknownKid("random-kid-1".into()));
    assert_eq!(server.requests(), 3);

    // The IdP retires the old key: tokens with it are refused once the set is refreshed.
    server.publish(jwks_doc(&[&new]));
    cache.load(t2 + Duration::from_secs(1)).expect("reload");
    let err = verify_with_refresh(&cache, &sign(&old, &claims()), t2 + Duration::from_secs(2))
        .expect_err("retired");
    assert_eq!(err, OidcError::UnknownKid("2024-key".into()));

    // A broken or empty document keeps the previous keys.
    server.publish("<html>oops</html>".into());
    assert!(cache.load(t2 + Duration::from_secs(100)).is_err());
    server.publish(r#"{"keys":[]}"#.into());
    assert!(cache.load(t2 + Duration::from_secs(200)).is_err());
    verify_with_refresh(&cache, &sign(&new, &claims()), t2).expect("still verifies");
}

#[test]
fn an_unreachable_idp_is_reported_and_keeps_the_old_keys() {
    // Bind then drop: nothing listens on this loopback port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let ed = ed_key("ed-1");
    let mut c = config();
    c.jwks_uri = Some(format!("http://127.0.0.1:{port}/jwks.json"));
    c.fetch_timeout_secs = 2;
    let jwks = Jwks::from_json(&jwks_doc(&[&ed])).expect("jwks");
    let cache = JwksCache::with_jwks(c, jwks).expect("cache");
    let err = cache.load(now()).expect_err("connection refused");
    assert!(err.to_string().contains("cannot fetch JWKS"), "{err}");
    cache
        .verifier()
        .verify(&sign(&ed, &claims()), now())
        .expect("old keys still work");
    let err = verify_with_refresh(
        &cache,
        &sign(&ed_key("new"), &claims()),
        now() + Duration::from_secs(31),
    )
    .expect_err("unavailable");
    assert_eq!(err, OidcError::KeysUnavailable { kid: "new".into() });
    assert_eq!(err.sqlstate(), "28000");
}

#[test]
fn keys_load_from_a_file() {
    let ed = ed_key("file-key");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks_doc(&[&ed])).expect("write");
    let mut c = config();
    c.jwks_uri = None;
    c.jwks_file = Some(path);
    let cache = JwksCache::new(c).expect("cache");
    assert!(matches!(
        cache.verifier().verify(&sign(&ed, &claims()), now()),
        Err(OidcError::UnknownKid(_))
    ));
    cache.load(now()).expect("load");
    verify_with_refresh(&cache, &sign(&ed, &claims()), now()).expect("verifies");
}

#[test]
fn plain_http_to_a_remote_host_is_refused_by_config() {
    let mut c = config();
    c.jwks_uri = Some("http://idp.test/certs".into());
    assert!(JwksCache::new(c).is_err());
}
