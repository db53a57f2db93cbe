//! Control's sections of `sluice.toml`: `[control]`, `[identity]`, `[policy]` and
//! `[approvals]`.
//!
//! The file is shared with the proxy, which owns `[listen]`, `[tls]`, `[limits]`,
//! `[shutdown]` and the backend secrets in `[resources.*]`. Control reads only its own
//! sections and the resource *names* ([`ControlFile`] ignores everything else), so it never
//! holds a backend password; the proxy's parser embeds these same types and rejects
//! unknown keys for the whole file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::oidc::IssuerConfig;
use crate::policy::PolicyConfig;
use crate::saml::SamlIdpConfig;

/// `[control]`: where control keeps its state and how the proxy treats its snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Directory for control's keys (`keys/`), state log, audit log and sockets
    /// (`admin.sock`, `snapshot.sock`, `events.sock`). Relative to the config file.
    pub state_dir: PathBuf,
    /// Fail-static window: when control has not refreshed its heartbeat for this long, the
    /// proxy refuses new sessions and statements until control is back.
    #[serde(with = "duration_text")]
    pub snapshot_max_age: Duration,
    /// How often control refreshes the heartbeat in the shared header.
    #[serde(with = "duration_text")]
    pub heartbeat: Duration,
    /// How often control refetches every OIDC issuer's JWKS even without an unknown `kid`.
    #[serde(with = "duration_text")]
    pub jwks_refresh: Duration,
    /// A pending access request that nobody decides within this time expires.
    #[serde(with = "duration_text")]
    pub request_ttl: Duration,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            state_dir: PathBuf::from("state"),
            snapshot_max_age: Duration::from_secs(300),
            heartbeat: Duration::from_secs(1),
            jwks_refresh: Duration::from_secs(600),
            request_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// `[approvals]`: statements held for approval (a `[[policy.statements]]` rule that says
/// `request`): how long the proxy waits, how many approvers must agree, and where control
/// announces each request.
///
/// The webhook only announces: an undeliverable webhook never blocks, approves or denies
/// anything by itself; the request stays pending and can be decided with
/// `sluice approvals approve|deny` until it expires.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalsConfig {
    /// How long a held statement waits for a decision. A request nobody decides within this
    /// time expires, and the proxy refuses the statement.
    #[serde(with = "duration_text")]
    pub timeout: Duration,
    /// How many *distinct* approvers must approve before the statement runs (the same
    /// approver approving twice counts once; any one denial denies). At least 1. Taken when
    /// the request is made: a reload does not change requests already pending.
    pub min_approvals: u32,
    /// Where control POSTs each new request and each decision, as JSON (`http://` or
    /// `https://`). None: no webhook.
    pub webhook_url: Option<String>,
    /// The HMAC-SHA-256 key that signs each webhook body (header `X-Sluice-Signature:
    /// sha256=<hex>`); required with `webhook_url`, at least 16 characters.
    pub webhook_secret: Option<String>,
    /// How many times a delivery that failed (connection error, timeout, or a 429 or 5xx
    /// answer) is retried, waiting 1s, 2s, 4s … in between; then control logs that it gave up.
    pub webhook_retries: u32,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        ApprovalsConfig {
            timeout: Duration::from_secs(600),
            min_approvals: 1,
            webhook_url: None,
            webhook_secret: None,
            webhook_retries: 5,
        }
    }
}

impl std::fmt::Debug for ApprovalsConfig {
    /// Like the derived form, but never shows the webhook secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalsConfig")
            .field("timeout", &self.timeout)
            .field("min_approvals", &self.min_approvals)
            .field("webhook_url", &self.webhook_url)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("webhook_retries", &self.webhook_retries)
            .finish()
    }
}

/// Longest `approvals.timeout`: a held session waits this long at most.
pub const MAX_APPROVAL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Most `approvals.webhook_retries` (the last wait is then 2^9 s, about 8.5 minutes).
pub const MAX_WEBHOOK_RETRIES: u32 = 10;
/// Most `approvals.min_approvals`.
pub const MAX_MIN_APPROVALS: u32 = 10;
/// Shortest `approvals.webhook_secret`, characters.
pub const MIN_WEBHOOK_SECRET: usize = 16;

/// `[identity]`: who may present which tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The token's subject must equal the `user` the client connects as. When false the
    /// token alone says who the client is and `user` is only logged.
    pub require_user_match: bool,
    /// Sluice's own tokens (`sluice token`), signed with control's Ed25519 key.
    pub sluice_tokens: SluiceTokensConfig,
    /// Trusted OIDC issuers (`[[identity.oidc]]`).
    pub oidc: Vec<IssuerConfig>,
    /// SAML identity providers (`[[identity.saml]]`) whose signed Responses control
    /// exchanges for Sluice tokens (`sluice login --saml`).
    #[serde(default)]
    pub saml: Vec<SamlIdpConfig>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            require_user_match: true,
            sluice_tokens: SluiceTokensConfig::default(),
            oidc: Vec::new(),
            saml: Vec::new(),
        }
    }
}

/// `[identity.sluice_tokens]`: control as a small token issuer of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SluiceTokensConfig {
    /// Whether the proxy accepts Sluice tokens at all.
    pub enabled: bool,
    /// The `iss` of Sluice tokens; must differ from every OIDC issuer.
    pub issuer: String,
    /// Longest lifetime `sluice token --ttl` may ask for. A rotated key stays trusted this
    /// long after rotation, so every token it signed can run out.
    #[serde(with = "duration_text")]
    pub max_ttl: Duration,
    /// Tolerated clock difference on `exp`/`nbf`.
    #[serde(with = "duration_text")]
    pub clock_skew: Duration,
}

impl Default for SluiceTokensConfig {
    fn default() -> Self {
        SluiceTokensConfig {
            enabled: true,
            issuer: "sluice".to_owned(),
            max_ttl: Duration::from_secs(12 * 3600),
            clock_skew: Duration::from_secs(30),
        }
    }
}

/// What control reads from `sluice.toml`. Other top-level sections are the proxy's and are
/// ignored here (not rejected: the proxy's parser checks them).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ControlFile {
    /// `[control]`.
    #[serde(default)]
    pub control: ControlSection,
    /// `[identity]`.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// `[policy]`.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// `[approvals]`.
    #[serde(default)]
    pub approvals: ApprovalsConfig,
    /// `[resources.*]`: only the names matter to control.
    #[serde(default)]
    pub resources: BTreeMap<String, toml::Value>,
    /// Directory relative paths are resolved against (the file's own); not read from the file.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl ControlFile {
    /// Reads and checks control's sections of `path`.
    pub fn load(path: &Path) -> Result<ControlFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading config {}: {e}", path.display()))?;
        let mut file: ControlFile =
            toml::from_str(&text).map_err(|e| format!("in {}: {e}", path.display()))?;
        file.base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        file.validate()
            .map_err(|e| format!("in {}: {e}", path.display()))?;
        Ok(file)
    }

    /// The resource names, sorted.
    pub fn resource_names(&self) -> Vec<&str> {
        self.resources.keys().map(String::as_str).collect()
    }

    /// `path` relative to the config file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir.join(path)
    }

    /// The state directory, resolved.
    pub fn state_dir(&self) -> PathBuf {
        self.resolve(&self.control.state_dir)
    }

    /// Checks control's sections on their own (the policy is compiled separately, where
    /// every problem is listed at once).
    pub fn validate(&self) -> Result<(), String> {
        check_control(&self.control)?;
        check_identity(&self.identity)?;
        check_approvals(&self.approvals)
    }
}

/// Checks `[approvals]`.
pub fn check_approvals(approvals: &ApprovalsConfig) -> Result<(), String> {
    if approvals.timeout < Duration::from_secs(1) || approvals.timeout > MAX_APPROVAL_TIMEOUT {
        return Err(format!(
            "approvals.timeout ({}) must be between 1s and {}: a held session waits that long",
            humantime::format_duration(approvals.timeout),
            humantime::format_duration(MAX_APPROVAL_TIMEOUT)
        ));
    }
    if approvals.min_approvals == 0 || approvals.min_approvals > MAX_MIN_APPROVALS {
        return Err(format!(
            "approvals.min_approvals ({}) must be between 1 and {MAX_MIN_APPROVALS}",
            approvals.min_approvals
        ));
    }
    if approvals.webhook_retries > MAX_WEBHOOK_RETRIES {
        return Err(format!(
            "approvals.webhook_retries ({}) must be at most {MAX_WEBHOOK_RETRIES}",
            approvals.webhook_retries
        ));
    }
    match (&approvals.webhook_url, &approvals.webhook_secret) {
        (Some(url), secret) => {
            check_webhook_url(url)?;
            match secret {
                None => {
                    return Err(
                        "approvals.webhook_secret is required with approvals.webhook_url: every delivery is signed with it"
                            .into(),
                    )
                }
                Some(secret) if secret.chars().count() < MIN_WEBHOOK_SECRET => {
                    return Err(format!(
                        "approvals.webhook_secret is shorter than {MIN_WEBHOOK_SECRET} characters; use a long random string"
                    ))
                }
                Some(_) => {}
            }
        }
        (None, Some(_)) => {
            return Err(
                "approvals.webhook_secret is set but approvals.webhook_url is not: set both, or neither"
                    .into(),
            )
        }
        (None, None) => {}
    }
    Ok(())
}

/// Checks that `url` is an absolute `http://` or `https://` URL with a host.
fn check_webhook_url(url: &str) -> Result<(), String> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| format!("approvals.webhook_url {url:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "approvals.webhook_url {url:?} must start with https:// (or http://)"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("approvals.webhook_url {url:?} has no host"));
    }
    Ok(())
}

/// Checks `[control]`.
pub fn check_control(control: &ControlSection) -> Result<(), String> {
    if control.snapshot_max_age < Duration::from_secs(1) {
        return Err("control.snapshot_max_age must be at least 1s".into());
    }
    if control.heartbeat.is_zero() || control.heartbeat * 2 > control.snapshot_max_age {
        return Err(format!(
            "control.heartbeat ({}) must be non-zero and at most half of control.snapshot_max_age ({}), or a healthy control would look dead",
            humantime::format_duration(control.heartbeat),
            humantime::format_duration(control.snapshot_max_age)
        ));
    }
    if control.jwks_refresh < Duration::from_secs(1) {
        return Err("control.jwks_refresh must be at least 1s".into());
    }
    Ok(())
}

/// Checks `[identity]`.
pub fn check_identity(identity: &IdentityConfig) -> Result<(), String> {
    let sluice = &identity.sluice_tokens;
    if !identity.saml.is_empty() && !sluice.enabled {
        return Err("[[identity.saml]] needs identity.sluice_tokens.enabled: a SAML login is exchanged for a Sluice token".into());
    }
    if !sluice.enabled && identity.oidc.is_empty() {
        return Err("[identity]: no way to log in: enable identity.sluice_tokens or add an [[identity.oidc]] issuer".into());
    }
    if sluice.enabled {
        if sluice.issuer.trim().is_empty() {
            return Err("identity.sluice_tokens.issuer is empty".into());
        }
        if sluice.max_ttl < Duration::from_secs(1) {
            return Err("identity.sluice_tokens.max_ttl must be at least 1s".into());
        }
        if sluice.clock_skew > Duration::from_secs(300) {
            return Err(
                "identity.sluice_tokens.clock_skew is more than 5m; fix the clocks instead".into(),
            );
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for issuer in &identity.oidc {
        issuer.validate()?;
        if sluice.enabled && issuer.issuer == sluice.issuer {
            return Err(format!(
                "OIDC issuer {:?} has the same name as identity.sluice_tokens.issuer; tokens must say unambiguously who issued them",
                issuer.issuer
            ));
        }
        if !seen.insert(issuer.issuer.as_str()) {
            return Err(format!(
                "OIDC issuer {:?} is configured twice",
                issuer.issuer
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for idp in &identity.saml {
        idp.validate()?;
        if !seen.insert(idp.entity_id.as_str()) {
            return Err(format!("SAML IdP {:?} is configured twice", idp.entity_id));
        }
    }
    Ok(())
}

/// Durations written the way people write them (`"5m"`, `"1h 30m"`, `"250ms"`).
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `"5m"`-style text.
    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    /// Reads `"5m"`-style text.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write e.g. \"30s\", \"5m\", \"8h\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_ignores_proxy_sections_and_reads_its_own() {
        let text = r#"
            [listen]
            address = "127.0.0.1:1"
            [control]
            state_dir = "/var/lib/sluice"
            snapshot_max_age = "2m"
            [identity.sluice_tokens]
            max_ttl = "1h"
            [resources.shop]
            host = "db"
            database = "shop"
            user = "app"
        "#;
        let file: ControlFile = toml::from_str(text).expect("parse");
        assert_eq!(file.control.snapshot_max_age, Duration::from_secs(120));
        assert_eq!(file.control.heartbeat, Duration::from_secs(1));
        assert_eq!(
            file.identity.sluice_tokens.max_ttl,
            Duration::from_secs(3600)
        );
        assert_eq!(file.resource_names(), vec!["shop"]);
        file.validate().expect("valid");
    }

    #[test]
    fn bad_durations_and_dead_configs_are_refused_with_the_field_name() {
        let err = toml::from_str::<ControlFile>("[control]\nsnapshot_max_age = \"soon\"")
            .expect_err("bad duration");
        assert!(err.to_string().contains("not a duration"), "{err}");
        let file: ControlFile =
            toml::from_str("[control]\nsnapshot_max_age = \"2s\"\nheartbeat = \"2s\"")
                .expect("parse");
        assert!(file.validate().unwrap_err().contains("control.heartbeat"));
        let file: ControlFile =
            toml::from_str("[identity.sluice_tokens]\nenabled = false").expect("parse");
        assert!(file.validate().unwrap_err().contains("no way to log in"));
    }

    #[test]
    fn approvals_have_defaults_and_are_checked() {
        let file: ControlFile = toml::from_str("").expect("parse");
        assert_eq!(file.approvals.timeout, Duration::from_secs(600));
        assert_eq!(file.approvals.min_approvals, 1);
        assert_eq!(file.approvals.webhook_url, None);
        assert_eq!(file.approvals.webhook_retries, 5);
        file.validate().expect("valid");

        let text = r#"
            [approvals]
            timeout = "2m"
            min_approvals = 2
            webhook_url = "https://hooks.example.com/sluice"
            webhook_secret = "0123456789abcdef0123"
            webhook_retries = 3
        "#;
        let file: ControlFile = toml::from_str(text).expect("parse");
        file.validate().expect("valid");
        assert_eq!(file.approvals.timeout, Duration::from_secs(120));
        assert_eq!(file.approvals.min_approvals, 2);
        let shown = format!("{:?}", file.approvals);
        assert!(
            !shown.contains("0123456789abcdef0123") && shown.contains("redacted"),
            "{shown}"
        );

        for (bad, needle) in [
            ("timeout = \"0s\"", "approvals.timeout"),
            ("timeout = \"2d\"", "approvals.timeout"),
            ("min_approvals = 0", "approvals.min_approvals"),
            ("webhook_retries = 11", "approvals.webhook_retries"),
            (
                "webhook_url = \"https://h.example.com/\"",
                "webhook_secret is required",
            ),
            (
                "webhook_url = \"ftp://h.example.com/\"\nwebhook_secret = \"0123456789abcdef\"",
                "https://",
            ),
            (
                "webhook_url = \"/relative\"\nwebhook_secret = \"0123456789abcdef\"",
                "webhook_url",
            ),
            (
                "webhook_url = \"https://h.example.com/\"\nwebhook_secret = \"short\"",
                "shorter than 16",
            ),
            ("webhook_secret = \"0123456789abcdef\"", "set both"),
        ] {
            let file: ControlFile = toml::from_str(&format!("[approvals]\n{bad}")).expect("parse");
            let err = file.validate().expect_err(bad);
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert!(
            toml::from_str::<ControlFile>("[approvals]\nwebhook = \"x\"").is_err(),
            "unknown keys are errors"
        );
    }

    #[test]
    fn saml_idps_are_read_with_defaults_and_checked() {
        let text = r#"
            [[identity.saml]]
            entity_id = "https://idp.example.com/saml"
            certificate = "idp.pem"
            audience = "sluice"
            token_ttl = "2h"
        "#;
        let file: ControlFile = toml::from_str(text).expect("parse");
        let idp = &file.identity.saml[0];
        assert_eq!(idp.groups_attribute, "groups");
        assert_eq!(idp.subject_attribute, None);
        assert_eq!(idp.token_ttl, Duration::from_secs(7200));
        assert_eq!(idp.clock_skew, Duration::from_secs(60));
        file.validate().expect("valid");

        let twice = format!(
            "{text}
{text}"
        );
        let file: ControlFile = toml::from_str(&twice).expect("parse");
        assert!(file.validate().unwrap_err().contains("configured twice"));
        let no_key = r#"
            [[identity.saml]]
            entity_id = "x"
            audience = "sluice"
        "#;
        let file: ControlFile = toml::from_str(no_key).expect("parse");
        assert!(file.validate().unwrap_err().contains("metadata_file"));
        let disabled = format!("[identity.sluice_tokens]\nenabled = false\n{text}");
        let file: ControlFile = toml::from_str(&disabled).expect("parse");
        let err = file.validate().unwrap_err();
        assert!(err.contains("identity.sluice_tokens.enabled"), "{err}");
        let unknown = format!("{text}\nsubject = \"uid\"");
        assert!(
            toml::from_str::<ControlFile>(&unknown).is_err(),
            "unknown keys are errors"
        );
    }
}
