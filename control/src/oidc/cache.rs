//! Control's I/O for OIDC: loading and refreshing an issuer's key set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use super::config::{is_loopback_host, IssuerConfig};
use super::error::{JwksError, OidcError};
use super::jwks::Jwks;
use super::verifier::{OidcPrincipal, OidcVerifier};

/// Largest JWKS document accepted, in bytes.
const MAX_JWKS_BYTES: u64 = 1024 * 1024;

/// One issuer's current key set, and the means to reload it.
///
/// Control keeps one per configured issuer. [`verifier`](JwksCache::verifier) hands out
/// the current pure [`OidcVerifier`]; [`load`](JwksCache::load) reads `jwks_file` or
/// fetches `jwks_uri`; [`refresh_for_unknown_kid`](JwksCache::refresh_for_unknown_kid)
/// refetches, at most once per `min_refresh_interval_secs`, when a token names a key id
/// the set does not have (key rotation). A failed fetch keeps the previous keys.
/// Safe to share between threads; concurrent refreshes are serialized, so a burst of
/// tokens with the same new kid causes one fetch.
#[derive(Debug)]
pub struct JwksCache {
    config: IssuerConfig,
    current: RwLock<Arc<OidcVerifier>>,
    /// When the last load or refresh was attempted (successful or not).
    last_attempt: Mutex<Option<SystemTime>>,
    fetches: AtomicU64,
}

impl JwksCache {
    /// A cache for `config` with no keys yet (no I/O). Call [`load`](JwksCache::load).
    pub fn new(config: IssuerConfig) -> Result<JwksCache, JwksError> {
        JwksCache::with_jwks(config, Jwks::empty())
    }

    /// A cache for `config` starting from `jwks` (e.g. keys from a snapshot).
    pub fn with_jwks(config: IssuerConfig, jwks: Jwks) -> Result<JwksCache, JwksError> {
        config.validate().map_err(JwksError::Config)?;
        Ok(JwksCache {
            current: RwLock::new(Arc::new(OidcVerifier::new(config.clone(), Arc::new(jwks)))),
            config,
            last_attempt: Mutex::new(None),
            fetches: AtomicU64::new(0),
        })
    }

    /// The issuer config.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// The current verifier (pure; holds the current key set).
    pub fn verifier(&self) -> Arc<OidcVerifier> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The current key set.
    pub fn jwks(&self) -> Arc<Jwks> {
        self.verifier().jwks().clone()
    }

    /// How many times the key set was read from its source (file or HTTP), successful or
    /// not. For metrics and tests.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Reads the key set from its source now and installs it (not rate-limited: for
    /// startup and periodic refresh). On error, or if the new document has no usable key,
    /// the previous keys stay in place.
    pub fn load(&self, now: SystemTime) -> Result<Arc<Jwks>, JwksError> {
        let mut last = self
            .last_attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.load_locked(&mut last, now)
    }

    fn load_locked(
        &self,
        last: &mut Option<SystemTime>,
        now: SystemTime,
    ) -> Result<Arc<Jwks>, JwksError> {
        *last = Some(now);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let doc = self.read_source()?;
        let jwks = Jwks::from_json(&doc)?;
        if jwks.is_empty() {
            return Err(JwksError::Parse(format!(
                "no usable signing key in the document (skipped: {:?}); keeping the previous keys",
                jwks.skipped()
            )));
        }
        let jwks = Arc::new(jwks);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(OidcVerifier::new(self.config.clone(), jwks.clone()));
        Ok(jwks)
    }

    /// Called when a token names `kid` and the current set lacks it. Refetches the key set
    /// unless another refresh already found `kid` or the last attempt was less than
    /// `min_refresh_interval_secs` before `now`. Returns whether `kid` is known afterwards.
    pub fn refresh_for_unknown_kid(&self, kid: &str, now: SystemTime) -> Result<bool, JwksError> {
        let mut last = self
            .last_attempt
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Another thread may have refreshed while we waited for the lock.
        if self.jwks().contains(kid) {
            return Ok(true);
        }
        if let Some(prev) = *last {
            let interval = Duration::from_secs(self.config.min_refresh_interval_secs);
            // A clock that went backwards does not block refreshes forever.
            if let Ok(elapsed) = now.duration_since(prev) {
                if elapsed < interval {
                    return Ok(false);
                }
            }
        }
        let jwks = self.load_locked(&mut last, now)?;
        Ok(jwks.contains(kid))
    }

    fn read_source(&self) -> Result<String, JwksError> {
        if let Some(path) = &self.config.jwks_file {
            let file_err = |detail: String| JwksError::File {
                path: path.display().to_string(),
                detail,
            };
            let meta = std::fs::metadata(path).map_err(|e| file_err(e.to_string()))?;
            if meta.len() > MAX_JWKS_BYTES {
                return Err(file_err(format!(
                    "{} bytes is larger than {MAX_JWKS_BYTES}",
                    meta.len()
                )));
            }
            return std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()));
        }
        let uri = self
            .config
            .jwks_uri
            .as_deref()
            .ok_or_else(|| JwksError::Config("no jwks_uri or jwks_file".into()))?;
        fetch(uri, Duration::from_secs(self.config.fetch_timeout_secs))
    }
}

/// GET `uri` (https, or http on loopback, as validated) with an overall timeout.
fn fetch(uri: &str, timeout: Duration) -> Result<String, JwksError> {
    let fetch_err = |detail: String| JwksError::Fetch {
        uri: uri.to_owned(),
        detail,
    };
    let https = uri.len() >= 8 && uri[..8].eq_ignore_ascii_case("https://");
    let host = uri
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
        .unwrap_or("");
    let loopback = is_loopback_host(host);
    if !https && !loopback {
        return Err(fetch_err(
            "plain http is only allowed for a loopback host".into(),
        ));
    }
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .https_only(https)
        .http_status_as_error(true)
        .user_agent("sluice-control")
        .accept("application/jwk-set+json, application/json");
    if !https {
        // Loopback over plain http: never follow a redirect off the machine.
        config = config.max_redirects(0);
    }
    if loopback {
        config = config.proxy(None);
    }
    let agent: ureq::Agent = config.build().into();
    let mut response = agent
        .get(uri)
        .call()
        .map_err(|e| fetch_err(e.to_string()))?;
    response
        .body_mut()
        .with_config()
        .limit(MAX_JWKS_BYTES)
        .read_to_string()
        .map_err(|e| fetch_err(e.to_string()))
}

/// Verifies `token` with the cache's current keys; if it names an unknown `kid`, refreshes
/// the key set (rate-limited) and verifies once more. This is how a rotated IdP key is
/// picked up without a restart.
pub fn verify_with_refresh(
    cache: &JwksCache,
    token: &str,
    now: SystemTime,
) -> Result<OidcPrincipal, OidcError> {
    match cache.verifier().verify(token, now) {
        Err(OidcError::UnknownKid(kid)) => match cache.refresh_for_unknown_kid(&kid, now) {
            Ok(true) => cache.verifier().verify(token, now),
            Ok(false) => Err(OidcError::UnknownKid(kid)),
            Err(_) => Err(OidcError::KeysUnavailable { kid }),
        },
        other => other,
    }
}
