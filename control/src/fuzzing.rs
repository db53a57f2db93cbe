//! Bodies of the fuzz targets in `control/fuzz` (cargo-fuzz, nightly), kept here so that the
//! ordinary test run exercises them too.
//!
//! The untrusted input control's code parses on the data path is the password a client
//! sends: every token goes through [`Identity::verify`] (issuer sniffing, JWT header and
//! claims, signatures) in a proxy worker. The snapshot payload is written by control and
//! checksummed, but a proxy still must never crash on one, so it is fuzzed as well.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::content::View;
use crate::identity::{Identity, IdentityContent, OidcContent, PublishedKey, SluiceKeysContent};
use crate::oidc::IssuerConfig;

/// An identity with a Sluice key and an OIDC issuer with EC and Ed25519 keys, built once.
fn identity() -> &'static Identity {
    static IDENTITY: OnceLock<Identity> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let make = |alg| rcgen::KeyPair::generate_for(alg).expect("key generation works");
        let sluice = make(&rcgen::PKCS_ED25519);
        let ec = make(&rcgen::PKCS_ECDSA_P256_SHA256);
        let ed = make(&rcgen::PKCS_ED25519);
        let point = ec.public_key_raw();
        let (x, y) = point[1..].split_at(32);
        let jwks = serde_json::json!({ "keys": [
            { "kty": "EC", "kid": "ec", "crv": "P-256", "alg": "ES256",
              "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y) },
            { "kty": "OKP", "kid": "ed", "crv": "Ed25519",
              "x": URL_SAFE_NO_PAD.encode(ed.public_key_raw()) },
        ]});
        let mut issuer = IssuerConfig::new("https://idp.fuzz", "sluice");
        issuer.jwks_file = Some("unused".into());
        let content = IdentityContent {
            sluice: Some(SluiceKeysContent {
                issuer: "sluice".into(),
                clock_skew_secs: 30,
                keys: vec![PublishedKey {
                    kid: "s1".into(),
                    public_pem: sluice.public_key_pem(),
                }],
            }),
            oidc: vec![OidcContent {
                config: issuer,
                jwks: jwks.to_string(),
            }],
        };
        Identity::from_content(&content).expect("fuzz identity builds")
    })
}

/// Verifies `data` as a token (lossily as UTF-8, and, when it is three dot-separated
/// parts of raw bytes, with each part base64url-encoded so that header and claims parsing
/// is reached quickly). Must never panic.
pub fn token(data: &[u8]) {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let identity = identity();
    let _ = identity.verify(&String::from_utf8_lossy(data), now);
    let parts: Vec<&[u8]> = data.splitn(3, |&b| b == b'\n').collect();
    if let [header, claims, signature] = parts.as_slice() {
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims),
            URL_SAFE_NO_PAD.encode(signature)
        );
        let _ = identity.verify(&token, now);
    }
}

/// Decodes and compiles `data` as a snapshot payload. Must never panic.
pub fn snapshot_payload(data: &[u8]) {
    let _ = View::from_payload(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_body_survives_crafted_inputs() {
        let header = br#"{"alg":"ES256","kid":"ec","typ":"JWT"}"#;
        let claims = br#"{"iss":"https://idp.fuzz","aud":"sluice","sub":"a","exp":99999999999}"#;
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"...".to_vec(),
            b"a.b.c.d".to_vec(),
            vec![0xff; 64],
            [&header[..], b"\n", &claims[..], b"\nsig"].concat(),
            [&b"{\"alg\":\"none\"}"[..], b"\n", &claims[..], b"\n"].concat(),
            [
                &b"{\"alg\":\"HS256\",\"kid\":\"ec\"}"[..],
                b"\n",
                &claims[..],
                b"\nx",
            ]
            .concat(),
            [
                &b"{\"alg\":\"EdDSA\",\"kid\":\"s1\"}"[..],
                b"\n{\"iss\":\"sluice\"}\n",
            ]
            .concat(),
            [&header[..], b"\n{\"iss\":[1,2]}\n"].concat(),
        ];
        cases.push("\u{1F600}.\u{0}.x".as_bytes().to_vec());
        for case in cases {
            token(&case);
        }
    }

    #[test]
    fn snapshot_body_survives_crafted_inputs() {
        for case in [
            &b""[..],
            b"{}",
            b"{\"format\":1}",
            b"{\"format\":99}",
            b"{\"format\":1,\"built_at_ms\":0,\"identity\":{\"sluice\":{\"issuer\":\"s\",\"clock_skew_secs\":0,\"keys\":[{\"kid\":\"k\",\"public_pem\":\"garbage\"}]},\"oidc\":[]},\"require_user_match\":true,\"resources\":[],\"policy\":{\"rules\":[]},\"grants\":[],\"revocations\":[]}",
            &[0xff, 0xfe, 0x00],
        ] {
            snapshot_payload(case);
        }
    }
}
