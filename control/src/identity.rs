//! Who a client is: Sluice's own tokens and OIDC tokens, verified from public material only.
//!
//! Two halves, split along the crate's I/O line:
//!
//! - [`Keyring`] is control's: the Ed25519 keys that sign Sluice tokens (`sluice token`), kept
//!   in `state_dir/keys/` (directory 0700, private keys 0600). [`Keyring::rotate`] makes a new
//!   key the signing key; the previous ones stay *trusted* (published in the snapshot) until
//!   `max_ttl` after their retirement, so every token they signed can run out but none can be
//!   minted with them any more.
//! - [`Identity`] is pure and is what the proxy runs: built from the public keys and OIDC key
//!   sets carried in the snapshot ([`IdentityContent`]), it dispatches on the token's
//!   (unverified) `iss` to the Sluice verifier or to the matching OIDC issuer, and says
//!   precisely why a token is refused. It never sees a private key, and a token check costs
//!   no round trip.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::oidc::{unverified_issuer, IssuerConfig, Jwks, OidcError, OidcVerifier};

/// Claims of a Sluice token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SluiceClaims {
    /// Issuer (`identity.sluice_tokens.issuer`).
    pub iss: String,
    /// Subject: the user the token is for.
    pub sub: String,
    /// Groups; policy rules name these.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Not before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// A public key the proxy trusts for Sluice tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedKey {
    /// Key ID (the token header's `kid`).
    pub kid: String,
    /// SPKI PEM of the Ed25519 public key.
    pub public_pem: String,
}

/// Sluice-token material in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SluiceKeysContent {
    /// Expected `iss`.
    pub issuer: String,
    /// Tolerated clock difference, seconds.
    pub clock_skew_secs: u64,
    /// Trusted keys (the signing key and recently retired ones).
    pub keys: Vec<PublishedKey>,
}

/// One OIDC issuer in a snapshot: its config and its current key set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcContent {
    /// The issuer's config.
    pub config: IssuerConfig,
    /// Its JWKS document, as control last fetched it.
    pub jwks: String,
}

/// Everything the proxy needs to verify tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityContent {
    /// Sluice tokens, when enabled.
    pub sluice: Option<SluiceKeysContent>,
    /// OIDC issuers.
    pub oidc: Vec<OidcContent>,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Stable subject.
    pub subject: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Who vouched for it.
    pub issuer: String,
    /// When it was issued (for OIDC tokens without `iat`: the Unix epoch, so any revocation
    /// of the subject refuses it).
    pub issued_at: SystemTime,
    /// When it stops being valid.
    pub expires_at: SystemTime,
}

/// Why a token was refused. Each variant names a SQLSTATE and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not a JWT, or one whose issuer cannot be read.
    #[error("the password is not a valid token ({0}); use a token from `sluice token` or your identity provider")]
    Malformed(String),
    /// No configured issuer has this name.
    #[error("the token was issued by {0:?}, which this gateway does not trust")]
    UnknownIssuer(String),
    /// A Sluice token with no `kid` or a `kid` that is not (any longer) trusted.
    #[error("the token is signed with key {0:?}, which this gateway does not trust (the key was rotated out, or the token is from another deployment); get a new token with `sluice token`")]
    UnknownSluiceKey(String),
    /// A Sluice token whose signature does not verify, or a wrong algorithm.
    #[error(
        "the token's signature is not valid for this gateway; get a new token with `sluice token`"
    )]
    BadSignature,
    /// Past its `exp`.
    #[error("the token expired {ago_secs} s ago; get a new one")]
    Expired {
        /// Seconds since expiry.
        ago_secs: u64,
    },
    /// `nbf` in the future.
    #[error("the token is not valid yet (nbf is {in_secs} s from now)")]
    NotYetValid {
        /// Seconds until valid.
        in_secs: u64,
    },
    /// An OIDC issuer refused it.
    #[error("{0}")]
    Oidc(OidcError),
}

impl IdentityError {
    /// SQLSTATE for the client: 28P01 when the token itself is bad, 28000 when a genuine
    /// token is used at the wrong time.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            IdentityError::Expired { .. } | IdentityError::NotYetValid { .. } => "28000",
            IdentityError::Oidc(e) => e.sqlstate(),
            _ => "28P01",
        }
    }

    /// For an OIDC token signed by a key its issuer's cached key set lacks: the issuer and
    /// the `kid`, so control can refetch the key set (key rotation) and the client retry.
    pub fn unknown_oidc_key(&self) -> Option<&str> {
        match self {
            IdentityError::Oidc(OidcError::UnknownKid(kid)) => Some(kid),
            _ => None,
        }
    }
}

/// The pure verifier the proxy runs, built once per snapshot generation.
#[derive(Debug, Clone)]
pub struct Identity {
    sluice: Option<SluiceVerifier>,
    oidc: HashMap<String, Arc<OidcVerifier>>,
}

#[derive(Clone)]
struct SluiceVerifier {
    issuer: String,
    skew_secs: u64,
    keys: HashMap<String, DecodingKey>,
}

impl std::fmt::Debug for SluiceVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SluiceVerifier")
            .field("issuer", &self.issuer)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Identity {
    /// Builds the verifier from snapshot content. A key or key set that cannot be parsed is
    /// an error: the proxy then refuses the whole snapshot and keeps the previous one.
    pub fn from_content(content: &IdentityContent) -> Result<Identity, String> {
        let sluice = match &content.sluice {
            None => None,
            Some(s) => {
                let mut keys = HashMap::new();
                for key in &s.keys {
                    let decoding = DecodingKey::from_ed_pem(key.public_pem.as_bytes())
                        .map_err(|e| format!("Sluice token key {:?}: {e}", key.kid))?;
                    keys.insert(key.kid.clone(), decoding);
                }
                Some(SluiceVerifier {
                    issuer: s.issuer.clone(),
                    skew_secs: s.clock_skew_secs,
                    keys,
                })
            }
        };
        let mut oidc = HashMap::new();
        for issuer in &content.oidc {
            let jwks = Jwks::from_json(&issuer.jwks)
                .map_err(|e| format!("OIDC issuer {:?}: {e}", issuer.config.issuer))?;
            oidc.insert(
                issuer.config.issuer.clone(),
                Arc::new(OidcVerifier::new(issuer.config.clone(), Arc::new(jwks))),
            );
        }
        Ok(Identity { sluice, oidc })
    }

    /// Verifies `token` at `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<VerifiedToken, IdentityError> {
        let token = token.trim();
        let issuer = unverified_issuer(token)
            .ok_or_else(|| IdentityError::Malformed("not a JWT with an `iss` claim".into()))?;
        if let Some(sluice) = self.sluice.as_ref().filter(|s| s.issuer == issuer) {
            return sluice.verify(token, now);
        }
        let Some(verifier) = self.oidc.get(&issuer) else {
            return Err(IdentityError::UnknownIssuer(issuer));
        };
        let principal = verifier.verify(token, now).map_err(IdentityError::Oidc)?;
        Ok(VerifiedToken {
            subject: principal.subject,
            groups: principal.groups,
            issuer: principal.issuer,
            issued_at: principal.issued_at.unwrap_or(UNIX_EPOCH),
            expires_at: principal.expires_at,
        })
    }

    /// Names of the trusted issuers, for status output.
    pub fn issuers(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.oidc.keys().map(String::as_str).collect();
        if let Some(s) = &self.sluice {
            names.push(&s.issuer);
        }
        names.sort_unstable();
        names
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl SluiceVerifier {
    fn verify(&self, token: &str, now: SystemTime) -> Result<VerifiedToken, IdentityError> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| IdentityError::Malformed(format!("bad header: {e}")))?;
        if header.alg != Algorithm::EdDSA {
            return Err(IdentityError::BadSignature);
        }
        let kid = header.kid.unwrap_or_default();
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| IdentityError::UnknownSluiceKey(kid.clone()))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Time checks use the caller's clock below, so the verifier stays pure.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = jsonwebtoken::decode::<SluiceClaims>(token, key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                    IdentityError::BadSignature
                }
                _ => IdentityError::Malformed(e.to_string()),
            })?
            .claims;
        let now_secs = unix_secs(now);
        if now_secs > claims.exp.saturating_add(self.skew_secs) {
            return Err(IdentityError::Expired {
                ago_secs: now_secs - claims.exp,
            });
        }
        if let Some(nbf) = claims.nbf {
            if nbf > now_secs.saturating_add(self.skew_secs) {
                return Err(IdentityError::NotYetValid {
                    in_secs: nbf - now_secs,
                });
            }
        }
        if claims.sub.is_empty() {
            return Err(IdentityError::Malformed("empty subject".into()));
        }
        Ok(VerifiedToken {
            subject: claims.sub,
            groups: claims.groups,
            issuer: claims.iss,
            issued_at: UNIX_EPOCH + Duration::from_secs(claims.iat),
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp),
        })
    }
}

/// What `keys.json` records about each key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Key ID.
    pub kid: String,
    /// When it was made.
    pub created_at_ms: u64,
    /// When it stopped signing (`None`: the signing key).
    pub retired_at_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KeyIndex {
    keys: Vec<KeyInfo>,
}

/// Control's Sluice-token signing keys on disk.
#[derive(Debug)]
pub struct Keyring {
    dir: PathBuf,
    index: KeyIndex,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Refuses a key file or directory that users other than its owner can reach, saying how
/// to fix it (`fix_mode` is the `chmod` mode to suggest).
fn require_private(path: &Path, fix_mode: &str) -> Result<(), String> {
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} is accessible by other users (mode {:o}); run: chmod {fix_mode} {}",
            path.display(),
            mode & 0o777,
            path.display()
        ));
    }
    Ok(())
}

impl Keyring {
    /// Opens `dir` (normally `state_dir/keys`), creating it and a first signing key if it
    /// does not exist. Refuses a directory or key file that others can read.
    pub fn open_or_create(dir: &Path, now: SystemTime) -> Result<Keyring, String> {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        require_private(dir, "700")?;
        let index_path = dir.join("keys.json");
        let index = match std::fs::read_to_string(&index_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| format!("{} is not a key index: {e}", index_path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyIndex::default(),
            Err(e) => return Err(format!("reading {}: {e}", index_path.display())),
        };
        let mut ring = Keyring {
            dir: dir.to_path_buf(),
            index,
        };
        if ring.signing_kid().is_none() {
            ring.rotate(now)?;
        }
        Ok(ring)
    }

    /// The key that signs new tokens.
    pub fn signing_kid(&self) -> Option<&str> {
        self.index
            .keys
            .iter()
            .rev()
            .find(|k| k.retired_at_ms.is_none())
            .map(|k| k.kid.as_str())
    }

    /// Every key on record.
    pub fn keys(&self) -> &[KeyInfo] {
        &self.index.keys
    }

    fn key_path(&self, kid: &str) -> PathBuf {
        self.dir.join(format!("{kid}.pem"))
    }

    /// Makes a new signing key and retires the current one (which stays trusted for
    /// `max_ttl`, see [`Keyring::published`]). Returns the new key ID.
    pub fn rotate(&mut self, now: SystemTime) -> Result<String, String> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| format!("generating an Ed25519 key: {e}"))?;
        let kid = format!("sluice-{}", uuid::Uuid::now_v7().simple());
        let path = self.key_path(&kid);
        write_private(&path, pair.serialize_pem().as_bytes())
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        let now_ms = ms(now);
        for key in &mut self.index.keys {
            key.retired_at_ms.get_or_insert(now_ms);
        }
        self.index.keys.push(KeyInfo {
            kid: kid.clone(),
            created_at_ms: now_ms,
            retired_at_ms: None,
        });
        self.save()?;
        Ok(kid)
    }

    fn save(&self) -> Result<(), String> {
        let path = self.dir.join("keys.json");
        let text = serde_json::to_vec_pretty(&self.index).map_err(|e| e.to_string())?;
        write_private(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    /// Public keys to publish at `now`: the signing key and keys retired less than `max_ttl`
    /// ago. Keys past that are deleted from disk.
    pub fn published(
        &mut self,
        now: SystemTime,
        max_ttl: Duration,
    ) -> Result<Vec<PublishedKey>, String> {
        let now_ms = ms(now);
        let keep = |k: &KeyInfo| {
            k.retired_at_ms
                .is_none_or(|r| now_ms < r.saturating_add(max_ttl.as_millis() as u64))
        };
        let expired: Vec<String> = self
            .index
            .keys
            .iter()
            .filter(|k| !keep(k))
            .map(|k| k.kid.clone())
            .collect();
        if !expired.is_empty() {
            self.index.keys.retain(keep);
            self.save()?;
            for kid in expired {
                let _ = std::fs::remove_file(self.key_path(&kid));
            }
        }
        let mut out = Vec::new();
        for key in &self.index.keys {
            let pair = self.load_pair(&key.kid)?;
            out.push(PublishedKey {
                kid: key.kid.clone(),
                public_pem: pair.public_key_pem(),
            });
        }
        Ok(out)
    }

    fn load_pair(&self, kid: &str) -> Result<rcgen::KeyPair, String> {
        let path = self.key_path(kid);
        require_private(&path, "600")?;
        let pem = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        rcgen::KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Mints a token for `subject` with the signing key.
    pub fn mint(
        &self,
        issuer: &str,
        subject: &str,
        groups: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, String> {
        let kid = self
            .signing_kid()
            .ok_or("no signing key; run `sluice keys rotate`")?;
        let pem = std::fs::read(self.key_path(kid))
            .map_err(|e| format!("reading the signing key: {e}"))?;
        let key = EncodingKey::from_ed_pem(&pem).map_err(|e| format!("signing key: {e}"))?;
        let iat = unix_secs(now);
        let claims = SluiceClaims {
            iss: issuer.to_owned(),
            sub: subject.to_owned(),
            groups: groups.to_vec(),
            exp: iat.saturating_add(ttl.as_secs()),
            iat,
            nbf: None,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| format!("signing: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(ring: &mut Keyring, now: SystemTime) -> IdentityContent {
        IdentityContent {
            sluice: Some(SluiceKeysContent {
                issuer: "sluice".into(),
                clock_skew_secs: 30,
                keys: ring
                    .published(now, Duration::from_secs(3600))
                    .expect("keys"),
            }),
            oidc: vec![],
        }
    }

    #[test]
    fn minted_tokens_verify_from_public_material_and_survive_one_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let mut ring = Keyring::open_or_create(&dir.path().join("keys"), now).expect("ring");
        let groups = vec!["dba".to_owned()];
        let old = ring
            .mint("sluice", "alice", &groups, Duration::from_secs(600), now)
            .expect("mint");
        let identity = Identity::from_content(&content(&mut ring, now)).expect("identity");
        let verified = identity.verify(&old, now).expect("valid");
        assert_eq!(verified.subject, "alice");
        assert_eq!(verified.groups, groups);

        let first = ring.signing_kid().expect("kid").to_owned();
        let second = ring.rotate(now).expect("rotate");
        assert_ne!(first, second);
        let new = ring
            .mint("sluice", "bob", &[], Duration::from_secs(600), now)
            .expect("mint");
        let identity = Identity::from_content(&content(&mut ring, now)).expect("identity");
        assert!(
            identity.verify(&old, now).is_ok(),
            "retired key still trusted"
        );
        assert!(identity.verify(&new, now).is_ok());

        // Past max_ttl the retired key is dropped: its tokens are refused by key id.
        let later = now + Duration::from_secs(3601);
        let identity = Identity::from_content(&content(&mut ring, later)).expect("identity");
        assert_eq!(
            identity.verify(&old, now),
            Err(IdentityError::UnknownSluiceKey(first.clone()))
        );
        assert!(!dir
            .path()
            .join("keys")
            .join(format!("{first}.pem"))
            .exists());
    }

    #[test]
    fn keys_are_private_and_a_readable_key_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        let ring = Keyring::open_or_create(&keys, SystemTime::now()).expect("ring");
        let kid = ring.signing_kid().expect("kid");
        let mode = std::fs::metadata(keys.join(format!("{kid}.pem")))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let err = Keyring::open_or_create(&keys, SystemTime::now()).expect_err("refused");
        assert!(err.contains("chmod 700"), "{err}");
    }

    #[test]
    fn tokens_from_strangers_and_expired_tokens_are_refused_distinctly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let mut ring = Keyring::open_or_create(&dir.path().join("a"), now).expect("ring");
        let other = Keyring::open_or_create(&dir.path().join("b"), now).expect("ring");
        let identity = Identity::from_content(&content(&mut ring, now)).expect("identity");
        let foreign = other
            .mint("sluice", "eve", &[], Duration::from_secs(60), now)
            .expect("mint");
        assert!(matches!(
            identity.verify(&foreign, now),
            Err(IdentityError::UnknownSluiceKey(_))
        ));
        let wrong_issuer = ring
            .mint("elsewhere", "eve", &[], Duration::from_secs(60), now)
            .expect("mint");
        assert_eq!(
            identity.verify(&wrong_issuer, now),
            Err(IdentityError::UnknownIssuer("elsewhere".into()))
        );
        let short = ring
            .mint("sluice", "alice", &[], Duration::from_secs(1), now)
            .expect("mint");
        let err = identity
            .verify(&short, now + Duration::from_secs(100))
            .expect_err("expired");
        assert!(matches!(err, IdentityError::Expired { .. }));
        assert_eq!(err.sqlstate(), "28000");
        assert!(matches!(
            identity.verify("not a token", now),
            Err(IdentityError::Malformed(_))
        ));
    }
}
