//! SAML 2.0 login: a base64 SAML Response from a configured identity provider
//! (`[[identity.saml]]`) is validated here and, when it holds, control exchanges it for a
//! Sluice token (`sluice login --saml FILE`, admin request `saml_login`).
//!
//! What it owns: reading an IdP's signing certificates (a PEM file or the IdP's metadata
//! XML), and deciding whether one Response is acceptable — the signature (the Response or
//! its Assertion must be signed by a configured certificate, with SHA-256 or stronger), then,
//! on the signed content only, the `Issuer`, the `Conditions` (`NotBefore`/`NotOnOrAfter`
//! with the IdP's `clock_skew`, an `AudienceRestriction` naming this gateway), a bearer
//! `SubjectConfirmation` that has not run out (and whose `Recipient` is `acs_url` when that
//! is configured), a `Success` status, and who the subject is and which groups it is in. A
//! small [`ReplayCache`] refuses an assertion ID that was already exchanged (SAML's bearer
//! profile requires one-time use). Verification is pure with the clock passed in.
//!
//! What it must never do: check an XML signature itself, read anything that the signature
//! did not cover (the unsigned parse is used only to find the IdP, to refuse early, and to
//! explain a refusal), accept an unsigned Response, trust a certificate carried in the
//! message (`KeyInfo`) instead of the configured one, accept SHA-1, expand a DOCTYPE or
//! entity, quietly drop a group it cannot represent (a deny rule may name it), or panic on
//! anything the message contains.
//!
//! Why `samael` with `xmlsec` rather than a hand-rolled XML-DSig: verifying an enveloped
//! signature correctly means exclusive canonicalization, ID resolution, transforms and
//! signature-wrapping defences; the history of SAML is a list of SPs that got one of these
//! wrong (wrapping attacks, comment truncation, algorithm confusion). samael hands the
//! document to xmlsec1 (the C reference implementation used by most SAML stacks), requires
//! every signature in it to verify against the configured certificates, and returns a
//! document reduced to exactly the verified content, which is the only thing read here.
//! The price is C dependencies (xmlsec1, libxml2, OpenSSL) and samael's 0.0.x versioning.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};
use quick_xml::NsReader;
use samael::crypto::{
    AllowedSignatureAlgorithm, CertificateDer, CryptoProvider, ReduceMode, XmlSec,
};
use samael::schema::{Assertion, Response};
use samael::signature::Signature;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::duration_text;

/// Largest base64 Response accepted, in bytes (IdP responses are a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Longest `clock_skew` an IdP may be given.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

const PROTOCOL_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:protocol";
const ASSERTION_NS: &[u8] = b"urn:oasis:names:tc:SAML:2.0:assertion";
const STATUS_SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

/// Signature algorithms accepted (their digests: SHA-256, SHA-384, SHA-512). SHA-1 and
/// SHA-224 are refused.
const ALLOWED: &[AllowedSignatureAlgorithm] = &[
    AllowedSignatureAlgorithm::RsaSha256,
    AllowedSignatureAlgorithm::RsaSha384,
    AllowedSignatureAlgorithm::RsaSha512,
    AllowedSignatureAlgorithm::EcdsaSha256,
    AllowedSignatureAlgorithm::EcdsaSha384,
    AllowedSignatureAlgorithm::EcdsaSha512,
];

/// One `[[identity.saml]]` identity provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlIdpConfig {
    /// The IdP's entity ID; the Response's and the Assertion's `Issuer` must equal it.
    pub entity_id: String,
    /// PEM file with the IdP's signing certificate(s) (several during a rollover), relative
    /// to the config file. One of `certificate` and `metadata_file` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    /// The IdP's SAML metadata (an `EntityDescriptor`); its signing certificates are used
    /// and its `entityID` must equal `entity_id`. Relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_file: Option<PathBuf>,
    /// The entity ID this gateway is registered under at the IdP: the Assertion's
    /// `AudienceRestriction` must contain it.
    pub audience: String,
    /// The assertion consumer URL registered at the IdP. When set, the bearer
    /// `SubjectConfirmationData`'s `Recipient` and the Response's `Destination` (if any) must
    /// equal it; when unset they are not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acs_url: Option<String>,
    /// Attribute whose (single) value is the user name; default: the Subject's `NameID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_attribute: Option<String>,
    /// Attribute whose values are the user's groups (`Name` must match exactly).
    #[serde(default = "default_groups_attribute")]
    pub groups_attribute: String,
    /// Lifetime of the Sluice token issued for a login (capped by
    /// `identity.sluice_tokens.max_ttl` and by the IdP's `SessionNotOnOrAfter`).
    #[serde(default = "default_token_ttl", with = "duration_text")]
    pub token_ttl: Duration,
    /// Tolerated clock difference on `NotBefore`/`NotOnOrAfter`/`IssueInstant` (at most 5m).
    #[serde(default = "default_clock_skew", with = "duration_text")]
    pub clock_skew: Duration,
}

fn default_groups_attribute() -> String {
    "groups".to_owned()
}

fn default_token_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

fn default_clock_skew() -> Duration {
    Duration::from_secs(60)
}

impl SamlIdpConfig {
    /// A config with defaults for everything but the entity ID, audience and certificate.
    pub fn new(entity_id: &str, audience: &str, certificate: &Path) -> SamlIdpConfig {
        SamlIdpConfig {
            entity_id: entity_id.to_owned(),
            certificate: Some(certificate.to_path_buf()),
            metadata_file: None,
            audience: audience.to_owned(),
            acs_url: None,
            subject_attribute: None,
            groups_attribute: default_groups_attribute(),
            token_ttl: default_token_ttl(),
            clock_skew: default_clock_skew(),
        }
    }

    /// Checks the config on its own (the files are read by [`SamlIdp::load`]).
    pub fn validate(&self) -> Result<(), String> {
        let id = &self.entity_id;
        if id.trim().is_empty() {
            return Err("[[identity.saml]]: entity_id is empty".into());
        }
        if self.audience.trim().is_empty() {
            return Err(format!("SAML IdP {id:?}: audience is empty (the entity ID this gateway is registered as at the IdP)"));
        }
        match (&self.certificate, &self.metadata_file) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "SAML IdP {id:?}: set one of certificate and metadata_file, not both"
                ))
            }
            (None, None) => {
                return Err(format!(
                    "SAML IdP {id:?}: set certificate (the IdP's signing certificate, PEM) or metadata_file"
                ))
            }
            _ => {}
        }
        if self.acs_url.as_deref().is_some_and(|u| u.trim().is_empty()) {
            return Err(format!("SAML IdP {id:?}: acs_url is empty; remove it or name the URL registered at the IdP"));
        }
        if self
            .subject_attribute
            .as_deref()
            .is_some_and(|a| a.trim().is_empty())
        {
            return Err(format!(
                "SAML IdP {id:?}: subject_attribute is empty; remove it to use the NameID"
            ));
        }
        if self.groups_attribute.trim().is_empty() {
            return Err(format!("SAML IdP {id:?}: groups_attribute is empty"));
        }
        if self.token_ttl < Duration::from_secs(1) {
            return Err(format!("SAML IdP {id:?}: token_ttl must be at least 1s"));
        }
        if self.clock_skew > MAX_CLOCK_SKEW {
            return Err(format!(
                "SAML IdP {id:?}: clock_skew is more than 5m; fix the clocks instead"
            ));
        }
        Ok(())
    }
}

/// A configured IdP with its signing certificates loaded.
#[derive(Debug, Clone)]
pub struct SamlIdp {
    config: SamlIdpConfig,
    certs: Vec<CertificateDer>,
}

impl SamlIdp {
    /// Reads the IdP's certificate file or metadata (relative paths against `base_dir`).
    pub fn load(config: &SamlIdpConfig, base_dir: &Path) -> Result<SamlIdp, String> {
        config.validate()?;
        let read = |path: &Path| {
            let path = base_dir.join(path);
            std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "SAML IdP {:?}: reading {}: {e}",
                    config.entity_id,
                    path.display()
                )
            })
        };
        if let Some(path) = &config.certificate {
            SamlIdp::from_pem(config, &read(path)?)
        } else if let Some(path) = &config.metadata_file {
            SamlIdp::from_metadata(config, &read(path)?)
        } else {
            Err(format!(
                "SAML IdP {:?}: no certificate or metadata_file",
                config.entity_id
            ))
        }
    }

    /// The IdP with the certificates in `pem` (one or more `CERTIFICATE` blocks).
    pub fn from_pem(config: &SamlIdpConfig, pem: &str) -> Result<SamlIdp, String> {
        use rustls_pki_types::pem::PemObject;
        let mut certs = Vec::new();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| {
                format!(
                    "SAML IdP {:?}: the certificate file is not PEM: {e}",
                    config.entity_id
                )
            })?;
            certs.push(CertificateDer::from(cert.as_ref().to_vec()));
        }
        SamlIdp::new(config, certs)
    }

    /// The IdP with the signing certificates of its metadata `xml` (`EntityDescriptor`).
    pub fn from_metadata(config: &SamlIdpConfig, xml: &str) -> Result<SamlIdp, String> {
        let id = &config.entity_id;
        let entity: samael::metadata::EntityDescriptor = xml.parse().map_err(|e| {
            format!("SAML IdP {id:?}: the metadata is not an EntityDescriptor: {e}")
        })?;
        if entity.entity_id.as_deref() != Some(id.as_str()) {
            return Err(format!(
                "SAML IdP {id:?}: the metadata describes entityID {:?}",
                entity.entity_id.unwrap_or_default()
            ));
        }
        let descriptors = entity.idp_sso_descriptors.unwrap_or_default();
        if descriptors.is_empty() {
            return Err(format!(
                "SAML IdP {id:?}: the metadata has no IDPSSODescriptor"
            ));
        }
        let mut certs = Vec::new();
        for descriptor in &descriptors {
            for key in &descriptor.key_descriptors {
                // Keys marked for signing, or for any use; never encryption-only keys.
                if matches!(key.key_use.as_deref(), Some("encryption")) {
                    continue;
                }
                for text in key
                    .key_info
                    .x509_data
                    .iter()
                    .flat_map(|d| d.certificates.iter())
                {
                    let cert = samael::crypto::decode_x509_cert(text).map_err(|e| {
                        format!("SAML IdP {id:?}: a metadata certificate is not base64: {e}")
                    })?;
                    certs.push(cert);
                }
            }
        }
        SamlIdp::new(config, certs)
    }

    /// The IdP with the given DER certificates.
    pub fn new(config: &SamlIdpConfig, certs: Vec<CertificateDer>) -> Result<SamlIdp, String> {
        config.validate()?;
        if certs.is_empty() {
            return Err(format!(
                "SAML IdP {:?}: no signing certificate found",
                config.entity_id
            ));
        }
        Ok(SamlIdp {
            config: config.clone(),
            certs,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &SamlIdpConfig {
        &self.config
    }

    /// SHA-256 fingerprints of its certificates (hex), for messages and status.
    pub fn fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| fingerprint(c.der_data()))
            .collect()
    }
}

/// Who a validated Response says logged in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SamlLogin {
    /// The IdP's entity ID.
    pub idp: String,
    /// The user (the NameID, or `subject_attribute`).
    pub user: String,
    /// Groups from `groups_attribute`, in order, without duplicates.
    pub groups: Vec<String>,
    /// The Assertion's ID (one-time use).
    pub assertion_id: String,
    /// When the assertion stops being acceptable (latest NotOnOrAfter plus skew), Unix ms.
    pub valid_until_ms: u64,
    /// The IdP's `SessionNotOnOrAfter`, Unix ms, if it gave one.
    pub session_not_on_or_after_ms: Option<u64>,
}

impl SamlLogin {
    /// Lifetime of the Sluice token for this login: the IdP's `token_ttl`, capped by
    /// `max_ttl` and by the IdP session's end. `None` when nothing is left.
    pub fn token_ttl(
        &self,
        idp: &SamlIdpConfig,
        max_ttl: Duration,
        now: SystemTime,
    ) -> Option<Duration> {
        let mut ttl = idp.token_ttl.min(max_ttl);
        if let Some(end) = self.session_not_on_or_after_ms {
            let left = end.saturating_sub(unix_ms(now));
            ttl = ttl.min(Duration::from_millis(left));
        }
        (ttl >= Duration::from_secs(1)).then_some(ttl)
    }
}

/// Why a SAML Response was refused. Every message says what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamlError {
    /// No input.
    #[error("the SAML Response is empty")]
    Empty,
    /// Too large.
    #[error("the SAML Response is larger than {} KiB", MAX_RESPONSE_BYTES / 1024)]
    TooLarge,
    /// Not base64.
    #[error(
        "the SAML Response is not base64 ({0}); pass the SAMLResponse form value the IdP posted"
    )]
    NotBase64(String),
    /// Not UTF-8.
    #[error("the decoded SAML Response is not UTF-8 text")]
    NotUtf8,
    /// A DOCTYPE or entity declaration.
    #[error(
        "the SAML Response contains a DOCTYPE or entity declaration, which SAML forbids; refused"
    )]
    Doctype,
    /// Unreadable XML.
    #[error("the SAML Response is not readable XML: {0}")]
    NotXml(String),
    /// Another root element.
    #[error("not a SAML 2.0 Response (the document is a {0}); pass the whole samlp:Response")]
    NotAResponse(String),
    /// Non-success status.
    #[error("the IdP reported a failed login (status {code}{}); sign in at the IdP again", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        /// The StatusCode value.
        code: String,
        /// The StatusMessage, if any.
        message: Option<String>,
    },
    /// Encrypted assertions.
    #[error("the assertion is encrypted; Sluice has no decryption key: turn off assertion encryption for this SP at the IdP")]
    Encrypted,
    /// No assertion.
    #[error("the SAML Response holds no Assertion")]
    NoAssertion,
    /// No issuer.
    #[error("the SAML Response names no Issuer")]
    NoIssuer,
    /// The issuer is not configured.
    #[error("no [[identity.saml]] IdP has entity_id {issuer:?} (configured: {configured})")]
    UnknownIdp {
        /// The Response's issuer.
        issuer: String,
        /// The configured entity IDs.
        configured: String,
    },
    /// Unsigned.
    #[error("the SAML Response is not signed (neither the Response nor its Assertion carries a signature); configure IdP {idp:?} to sign responses or assertions")]
    Unsigned {
        /// Entity ID.
        idp: String,
    },
    /// A weak or unknown signature algorithm.
    #[error("the SAML Response is signed with {algorithm}, which is refused; configure IdP {idp:?} to sign with RSA-SHA256 (or ECDSA / SHA-384 / SHA-512)")]
    WeakAlgorithm {
        /// Entity ID.
        idp: String,
        /// The refused signature or digest algorithm.
        algorithm: String,
    },
    /// Signed with a key other than the configured certificate.
    #[error("the SAML Response is signed by a certificate that is not IdP {idp:?}'s configured certificate (message carries SHA-256 {presented}; configured: {configured}): signed by another key, or the IdP rotated its certificate")]
    UntrustedSigner {
        /// Entity ID.
        idp: String,
        /// Fingerprint of the certificate in the message's KeyInfo.
        presented: String,
        /// Fingerprints of the configured certificates.
        configured: String,
    },
    /// The content does not match its signature.
    #[error("the SAML Response's signature does not match its content: it was altered after IdP {idp:?} signed it")]
    Tampered {
        /// Entity ID.
        idp: String,
    },
    /// Anything else xmlsec refused.
    #[error("the SAML Response's signature does not verify with IdP {idp:?}'s configured certificate (signed by another key, or altered after signing)")]
    BadSignature {
        /// Entity ID.
        idp: String,
    },
    /// The verified part could not be read.
    #[error("the signed part of the SAML Response is not a readable Response or Assertion: {0}")]
    UnreadableSigned(String),
    /// Issuer of the signed content differs.
    #[error("the signed {what} names Issuer {found:?}, not {expected:?}")]
    IssuerMismatch {
        /// Response or Assertion.
        what: &'static str,
        /// Found.
        found: String,
        /// Expected.
        expected: String,
    },
    /// SAML version.
    #[error("unsupported SAML version {0:?} (only 2.0)")]
    Version(String),
    /// Before NotBefore / IssueInstant in the future.
    #[error("the SAML assertion is not valid before {at} ({what}, with {skew} clock skew allowed); check the clocks of this host and the IdP")]
    NotYetValid {
        /// Which field.
        what: &'static str,
        /// RFC 3339.
        at: String,
        /// Skew.
        skew: String,
    },
    /// After NotOnOrAfter.
    #[error("the SAML assertion expired at {at} ({what}, with {skew} clock skew allowed); sign in at the IdP again for a fresh response")]
    Expired {
        /// Which field.
        what: &'static str,
        /// RFC 3339.
        at: String,
        /// Skew.
        skew: String,
    },
    /// No AudienceRestriction.
    #[error("the SAML assertion has no AudienceRestriction, so it could be meant for any service; configure IdP {idp:?} to restrict it to {expected:?}")]
    NoAudience {
        /// Entity ID.
        idp: String,
        /// Our audience.
        expected: String,
    },
    /// Wrong audience.
    #[error("the SAML assertion is for audience {found}, not this gateway ({expected:?}): it was issued to another service provider")]
    WrongAudience {
        /// Our audience.
        expected: String,
        /// The audiences it names.
        found: String,
    },
    /// No usable bearer confirmation.
    #[error("the SAML assertion has no bearer SubjectConfirmation{0}")]
    NoBearer(String),
    /// Recipient or destination.
    #[error("the SAML {what} is {found:?}, not acs_url {expected:?}")]
    WrongRecipient {
        /// Recipient or Destination.
        what: &'static str,
        /// Found.
        found: String,
        /// Configured.
        expected: String,
    },
    /// No subject.
    #[error("the SAML assertion names no subject: {0}")]
    NoSubject(String),
    /// A name Sluice cannot carry.
    #[error("the SAML assertion's {what} {value:?} contains a control character; refused rather than altered")]
    BadName {
        /// User or group.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// The IdP session already ended.
    #[error("the IdP session ended at {0} (SessionNotOnOrAfter); sign in at the IdP again")]
    SessionEnded(String),
    /// The XML libraries failed (panicked) on this input.
    #[error("the SAML libraries failed on this Response (a bug worth reporting); refused")]
    Internal,
    /// Already used.
    #[error("this SAML assertion ({id}) was already exchanged for a token; assertions are single-use: sign in at the IdP again")]
    Replayed {
        /// Assertion ID.
        id: String,
    },
}

/// Validates a base64 SAML Response against the configured IdPs at `now`. Pure apart from
/// xmlsec's work; does not consult or update the [`ReplayCache`]. A panic inside the XML
/// libraries on hostile input becomes a refusal rather than taking control's admin thread.
pub fn verify_response(
    idps: &[SamlIdp],
    encoded: &str,
    now: SystemTime,
) -> Result<SamlLogin, SamlError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        verify_unguarded(idps, encoded, now)
    }))
    .unwrap_or(Err(SamlError::Internal))
}

fn verify_unguarded(
    idps: &[SamlIdp],
    encoded: &str,
    now: SystemTime,
) -> Result<SamlLogin, SamlError> {
    if encoded.len() > MAX_RESPONSE_BYTES {
        return Err(SamlError::TooLarge);
    }
    let compact: String = encoded
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(SamlError::Empty);
    }
    let bytes = STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| SamlError::NotBase64(e.to_string()))?;
    let xml = String::from_utf8(bytes).map_err(|_| SamlError::NotUtf8)?;
    if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") {
        return Err(SamlError::Doctype);
    }
    match root_element(&xml)? {
        Root::Response => {}
        Root::Assertion => return Err(SamlError::NotAResponse("bare saml:Assertion".into())),
        Root::Other(name) => return Err(SamlError::NotAResponse(name)),
    }

    // The unverified parse: only to route to an IdP, refuse early, and explain refusals.
    let unverified: Response = xml
        .parse()
        .map_err(|e: quick_xml::DeError| SamlError::NotXml(e.to_string()))?;
    check_status(&unverified)?;
    if unverified.encrypted_assertion.is_some() {
        return Err(SamlError::Encrypted);
    }
    let unverified_assertion = unverified
        .assertion
        .as_ref()
        .ok_or(SamlError::NoAssertion)?;
    let issuer = unverified
        .issuer
        .as_ref()
        .and_then(|i| i.value.clone())
        .or_else(|| unverified_assertion.issuer.value.clone())
        .ok_or(SamlError::NoIssuer)?;
    let idp = idps
        .iter()
        .find(|i| i.config.entity_id == issuer.trim())
        .ok_or_else(|| SamlError::UnknownIdp {
            issuer: issuer.clone(),
            configured: if idps.is_empty() {
                "none".to_owned()
            } else {
                idps.iter()
                    .map(|i| format!("{:?}", i.config.entity_id))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        })?;
    let entity_id = idp.config.entity_id.clone();
    let signatures: Vec<&Signature> = unverified
        .signature
        .iter()
        .chain(unverified_assertion.signature.iter())
        .collect();
    if signatures.is_empty() {
        return Err(SamlError::Unsigned { idp: entity_id });
    }
    for signature in &signatures {
        check_algorithms(signature, &entity_id)?;
    }

    // xmlsec: every signature must verify with a configured certificate; the result holds
    // only what the signatures covered.
    let verified = XmlSec::reduce_xml_to_signed_with_allowed_algorithms(
        &xml,
        &idp.certs,
        ReduceMode::ValidateAndMarkNoAncestors,
        Some(ALLOWED),
    )
    .map_err(|_| diagnose_signature(idp, &signatures))?;

    let (response, assertion) =
        match root_element(&verified).map_err(|e| SamlError::UnreadableSigned(e.to_string()))? {
            Root::Response => {
                let response: Response = verified
                    .parse()
                    .map_err(|e: quick_xml::DeError| SamlError::UnreadableSigned(e.to_string()))?;
                check_status(&response)?;
                if response.encrypted_assertion.is_some() {
                    return Err(SamlError::Encrypted);
                }
                let assertion = response.assertion.clone().ok_or(SamlError::NoAssertion)?;
                (Some(response), assertion)
            }
            Root::Assertion => {
                let assertion: Assertion =
                    verified.parse().map_err(|e: Box<dyn std::error::Error>| {
                        SamlError::UnreadableSigned(e.to_string())
                    })?;
                (None, assertion)
            }
            Root::Other(name) => return Err(SamlError::UnreadableSigned(name)),
        };
    validate(&idp.config, response.as_ref(), &assertion, now)
}

enum Root {
    Response,
    Assertion,
    Other(String),
}

/// The document's root element, namespace-aware.
fn root_element(xml: &str) -> Result<Root, SamlError> {
    let mut reader = NsReader::from_str(xml);
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| SamlError::NotXml(e.to_string()))?;
        match event {
            Event::Start(start) | Event::Empty(start) => {
                let local = start.local_name();
                let local = String::from_utf8_lossy(local.as_ref()).into_owned();
                let namespace = match ns {
                    ResolveResult::Bound(Namespace(n)) => n.to_vec(),
                    _ => Vec::new(),
                };
                return Ok(match (namespace.as_slice(), local.as_str()) {
                    (PROTOCOL_NS, "Response") => Root::Response,
                    (ASSERTION_NS, "Assertion") => Root::Assertion,
                    _ => Root::Other(format!(
                        "{{{}}}{local}",
                        String::from_utf8_lossy(&namespace)
                    )),
                });
            }
            Event::Eof => return Err(SamlError::NotXml("no root element".into())),
            _ => {}
        }
    }
}

fn check_status(response: &Response) -> Result<(), SamlError> {
    let status = response.status.as_ref();
    let code = status.and_then(|s| s.status_code.value.clone());
    if code.as_deref() == Some(STATUS_SUCCESS) {
        return Ok(());
    }
    Err(SamlError::Status {
        code: code.unwrap_or_else(|| "missing".to_owned()),
        message: status
            .and_then(|s| s.status_message.as_ref())
            .and_then(|m| m.value.clone()),
    })
}

fn check_algorithms(signature: &Signature, idp: &str) -> Result<(), SamlError> {
    let method = signature.signed_info.signature_method.algorithm.value();
    if !ALLOWED.iter().any(|a| a.signature_uri() == method) {
        return Err(SamlError::WeakAlgorithm {
            idp: idp.to_owned(),
            algorithm: format!("signature method {method}"),
        });
    }
    for reference in &signature.signed_info.reference {
        let digest = reference.digest_method.algorithm.value();
        if !ALLOWED.iter().any(|a| a.digest_uri() == digest) {
            return Err(SamlError::WeakAlgorithm {
                idp: idp.to_owned(),
                algorithm: format!("digest {digest}"),
            });
        }
    }
    Ok(())
}

/// Explains why xmlsec refused, from the (untrusted) certificate the message carries. It
/// only chooses the words of a refusal; it never accepts anything.
fn diagnose_signature(idp: &SamlIdp, signatures: &[&Signature]) -> SamlError {
    let entity_id = idp.config.entity_id.clone();
    let configured: BTreeSet<String> = idp.fingerprints().into_iter().collect();
    let presented: Vec<String> = signatures
        .iter()
        .flat_map(|s| s.key_info.iter().flatten())
        .flat_map(|k| k.x509_data.iter())
        .flat_map(|d| d.certificates.iter())
        .filter_map(|c| samael::crypto::decode_x509_cert(c).ok())
        .map(|c| fingerprint(c.der_data()))
        .collect();
    if let Some(other) = presented.iter().find(|p| !configured.contains(*p)) {
        return SamlError::UntrustedSigner {
            idp: entity_id,
            presented: other.clone(),
            configured: configured.into_iter().collect::<Vec<_>>().join(", "),
        };
    }
    if !presented.is_empty() {
        return SamlError::Tampered { idp: entity_id };
    }
    SamlError::BadSignature { idp: entity_id }
}

fn validate(
    idp: &SamlIdpConfig,
    response: Option<&Response>,
    assertion: &Assertion,
    now: SystemTime,
) -> Result<SamlLogin, SamlError> {
    let now_ms = i64::try_from(unix_ms(now)).unwrap_or(i64::MAX);
    let skew_ms = i64::try_from(idp.clock_skew.as_millis()).unwrap_or(i64::MAX);
    let skew = humantime::format_duration(idp.clock_skew).to_string();
    let not_before = |what: &'static str, at: i64| -> Result<(), SamlError> {
        if now_ms.saturating_add(skew_ms) < at {
            return Err(SamlError::NotYetValid {
                what,
                at: rfc3339(at),
                skew: skew.clone(),
            });
        }
        Ok(())
    };
    let not_on_or_after = |what: &'static str, at: i64| -> Result<(), SamlError> {
        if now_ms >= at.saturating_add(skew_ms) {
            return Err(SamlError::Expired {
                what,
                at: rfc3339(at),
                skew: skew.clone(),
            });
        }
        Ok(())
    };
    let expected = &idp.entity_id;

    if let Some(response) = response {
        if response.version != "2.0" {
            return Err(SamlError::Version(response.version.clone()));
        }
        if let Some(found) = response.issuer.as_ref().and_then(|i| i.value.as_ref()) {
            if found.trim() != expected {
                return Err(SamlError::IssuerMismatch {
                    what: "Response",
                    found: found.clone(),
                    expected: expected.clone(),
                });
            }
        }
        if let (Some(acs), Some(destination)) = (&idp.acs_url, &response.destination) {
            if destination != acs {
                return Err(SamlError::WrongRecipient {
                    what: "Response Destination",
                    found: destination.clone(),
                    expected: acs.clone(),
                });
            }
        }
        not_before(
            "Response IssueInstant",
            response.issue_instant.timestamp_millis(),
        )?;
    }

    if assertion.version != "2.0" {
        return Err(SamlError::Version(assertion.version.clone()));
    }
    let found = assertion.issuer.value.clone().unwrap_or_default();
    if found.trim() != expected {
        return Err(SamlError::IssuerMismatch {
            what: "Assertion",
            found,
            expected: expected.clone(),
        });
    }
    not_before(
        "Assertion IssueInstant",
        assertion.issue_instant.timestamp_millis(),
    )?;

    // Conditions: validity window and audience.
    let conditions = assertion
        .conditions
        .as_ref()
        .ok_or_else(|| SamlError::NoAudience {
            idp: expected.clone(),
            expected: idp.audience.clone(),
        })?;
    let mut valid_until = i64::MIN;
    if let Some(at) = conditions.not_before {
        not_before("Conditions NotBefore", at.timestamp_millis())?;
    }
    if let Some(at) = conditions.not_on_or_after {
        not_on_or_after("Conditions NotOnOrAfter", at.timestamp_millis())?;
        valid_until = valid_until.max(at.timestamp_millis());
    }
    let restrictions = conditions
        .audience_restrictions
        .as_deref()
        .unwrap_or_default();
    if restrictions.is_empty() {
        return Err(SamlError::NoAudience {
            idp: expected.clone(),
            expected: idp.audience.clone(),
        });
    }
    // Every AudienceRestriction must hold (SAML core 2.5.1.4); within one, any audience.
    for restriction in restrictions {
        if !restriction
            .audience
            .iter()
            .any(|a| a.trim() == idp.audience)
        {
            let found: Vec<String> = restrictions
                .iter()
                .flat_map(|r| r.audience.iter())
                .map(|a| format!("{a:?}"))
                .collect();
            return Err(SamlError::WrongAudience {
                expected: idp.audience.clone(),
                found: if found.is_empty() {
                    "(none)".to_owned()
                } else {
                    found.join(", ")
                },
            });
        }
    }

    // A bearer SubjectConfirmation that holds now.
    let subject = assertion
        .subject
        .as_ref()
        .ok_or_else(|| SamlError::NoSubject("no Subject element".into()))?;
    let bearers: Vec<_> = subject
        .subject_confirmations
        .iter()
        .flatten()
        .filter(|c| c.method.as_deref() == Some(BEARER))
        .collect();
    if bearers.is_empty() {
        return Err(SamlError::NoBearer(String::new()));
    }
    let mut first_error = None;
    let mut confirmed_until = None;
    for bearer in bearers {
        let check = (|| {
            let data = bearer
                .subject_confirmation_data
                .as_ref()
                .ok_or_else(|| SamlError::NoBearer(" with SubjectConfirmationData".into()))?;
            if let Some(at) = data.not_before {
                not_before("SubjectConfirmationData NotBefore", at.timestamp_millis())?;
            }
            let until = data.not_on_or_after.ok_or_else(|| {
                SamlError::NoBearer(" with a NotOnOrAfter (the bearer profile requires one)".into())
            })?;
            not_on_or_after(
                "SubjectConfirmationData NotOnOrAfter",
                until.timestamp_millis(),
            )?;
            if let Some(acs) = &idp.acs_url {
                let recipient = data.recipient.clone().unwrap_or_default();
                if &recipient != acs {
                    return Err(SamlError::WrongRecipient {
                        what: "SubjectConfirmationData Recipient",
                        found: recipient,
                        expected: acs.clone(),
                    });
                }
            }
            Ok(until.timestamp_millis())
        })();
        match check {
            Ok(until) => {
                confirmed_until = Some(until);
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let Some(confirmed_until) = confirmed_until else {
        return Err(first_error.unwrap_or_else(|| SamlError::NoBearer(String::new())));
    };
    valid_until = valid_until.max(confirmed_until);

    // Who, and in which groups.
    let attribute_values = |name: &str| -> Vec<String> {
        assertion
            .attribute_statements
            .iter()
            .flatten()
            .flat_map(|s| s.attributes.iter())
            .filter(|a| a.name.as_deref() == Some(name))
            .flat_map(|a| a.values.iter())
            .filter_map(|v| v.value.as_deref())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect()
    };
    let user = match &idp.subject_attribute {
        Some(name) => {
            let mut values = attribute_values(name);
            if values.len() > 1 {
                return Err(SamlError::NoSubject(format!(
                    "attribute {name:?} has {} values; it must have exactly one",
                    values.len()
                )));
            }
            values.pop().ok_or_else(|| {
                SamlError::NoSubject(format!(
                    "attribute {name:?} (subject_attribute) is missing or empty"
                ))
            })?
        }
        None => {
            let name_id = subject
                .name_id
                .as_ref()
                .ok_or_else(|| SamlError::NoSubject("no NameID; set subject_attribute".into()))?;
            if name_id.format.as_deref() == Some(TRANSIENT) {
                return Err(SamlError::NoSubject(
                    "the NameID is transient (a one-time random ID); have the IdP send a persistent or email NameID, or set subject_attribute".into(),
                ));
            }
            let value = name_id.value.trim().to_owned();
            if value.is_empty() {
                return Err(SamlError::NoSubject("the NameID is empty".into()));
            }
            value
        }
    };
    check_name("user", &user)?;
    let mut groups: Vec<String> = Vec::new();
    for group in attribute_values(&idp.groups_attribute) {
        check_name("group", &group)?;
        if !groups.contains(&group) {
            groups.push(group);
        }
    }

    // The IdP session's end, if it gave one.
    let session_end = assertion
        .authn_statements
        .iter()
        .flatten()
        .filter_map(|s| s.session_not_on_or_after)
        .map(|t| t.timestamp_millis())
        .min();
    if let Some(end) = session_end {
        if now_ms >= end {
            return Err(SamlError::SessionEnded(rfc3339(end)));
        }
    }

    Ok(SamlLogin {
        idp: expected.clone(),
        user,
        groups,
        assertion_id: assertion.id.clone(),
        valid_until_ms: u64::try_from(valid_until.saturating_add(skew_ms)).unwrap_or(0),
        session_not_on_or_after_ms: session_end.map(|e| u64::try_from(e).unwrap_or(0)),
    })
}

fn check_name(what: &'static str, value: &str) -> Result<(), SamlError> {
    if value.chars().any(char::is_control) {
        return Err(SamlError::BadName {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// Assertion IDs already exchanged, until they could no longer be accepted anyway. Kept in
/// control's memory: a restart forgets them (the validity windows are minutes).
#[derive(Debug, Default)]
pub struct ReplayCache {
    seen: HashMap<(String, String), u64>,
}

impl ReplayCache {
    /// Refuses an assertion that was already exchanged.
    pub fn check(&self, login: &SamlLogin) -> Result<(), SamlError> {
        if self
            .seen
            .contains_key(&(login.idp.clone(), login.assertion_id.clone()))
        {
            return Err(SamlError::Replayed {
                id: login.assertion_id.clone(),
            });
        }
        Ok(())
    }

    /// Records an exchanged assertion and forgets the ones that have run out.
    pub fn remember(&mut self, login: &SamlLogin, now: SystemTime) {
        let now_ms = unix_ms(now);
        self.seen.retain(|_, until| *until > now_ms);
        self.seen.insert(
            (login.idp.clone(), login.assertion_id.clone()),
            login.valid_until_ms,
        );
    }

    /// How many assertions it remembers.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether it remembers none.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn rfc3339(ms: i64) -> String {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

/// SHA-256 of a DER certificate, as colon-less lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A throwaway identity provider that signs SAML Responses, for tests and demos only:
/// control never uses it, and it can only sign with the key it generated itself. Lives in
/// the library so the end-to-end tests build responses with the same samael/xmlsec.
#[doc(hidden)]
pub mod testing {
    use std::time::{Duration, SystemTime};

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use samael::crypto::{CryptoProvider, XmlSec};

    /// The IdP's key type.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum KeyKind {
        /// ECDSA P-256 (rcgen), signing with ecdsa-sha256.
        EcdsaP256,
        /// RSA 2048 (OpenSSL through samael), signing with rsa-sha256.
        Rsa2048,
    }

    /// What is signed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Signed {
        /// Only the Response (covers the Assertion inside it).
        Response,
        /// Only the Assertion.
        Assertion,
        /// The Assertion, then the Response around it.
        Both,
        /// Nothing.
        Neither,
    }

    /// A test IdP: its key and self-signed certificate.
    pub struct TestIdp {
        /// Its entity ID.
        pub entity_id: String,
        /// The certificate, PEM.
        pub cert_pem: String,
        cert_der: Vec<u8>,
        key_der: Vec<u8>,
        kind: KeyKind,
    }

    /// The Response to build; [`TestIdp::spec`] fills in a valid one.
    #[derive(Debug, Clone)]
    pub struct Spec {
        /// Response and Assertion `Issuer`.
        pub issuer: String,
        /// Subject `NameID`.
        pub name_id: String,
        /// Its `Format`.
        pub name_id_format: String,
        /// Attributes: name and values.
        pub attributes: Vec<(String, Vec<String>)>,
        /// `Audience` values (empty: no AudienceRestriction).
        pub audiences: Vec<String>,
        /// `Recipient` and `Destination`.
        pub recipient: String,
        /// `IssueInstant`.
        pub issued: SystemTime,
        /// Conditions `NotBefore`.
        pub not_before: SystemTime,
        /// Conditions and SubjectConfirmationData `NotOnOrAfter`.
        pub not_on_or_after: SystemTime,
        /// AuthnStatement `SessionNotOnOrAfter`.
        pub session_not_on_or_after: Option<SystemTime>,
        /// StatusCode.
        pub status: String,
        /// What to sign.
        pub signed: Signed,
    }

    fn esc(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }

    fn time(t: SystemTime) -> String {
        humantime::format_rfc3339_seconds(t).to_string()
    }

    impl TestIdp {
        /// A new IdP with a fresh key and self-signed certificate.
        pub fn generate(entity_id: &str, kind: KeyKind) -> Result<TestIdp, String> {
            let (cert_der, key_der) = match kind {
                KeyKind::EcdsaP256 => {
                    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                        .map_err(|e| e.to_string())?;
                    let cert = rcgen::CertificateParams::new(vec!["idp.test".to_owned()])
                        .and_then(|p| p.self_signed(&key))
                        .map_err(|e| e.to_string())?;
                    (cert.der().to_vec(), key.serialize_der())
                }
                KeyKind::Rsa2048 => {
                    use samael::idp::{CertificateParams, IdentityProvider, KeyType, Rsa};
                    let idp = IdentityProvider::generate_new(KeyType::Rsa(Rsa::Rsa2048))
                        .map_err(|e| e.to_string())?;
                    let cert = idp
                        .create_certificate(&CertificateParams {
                            common_name: "idp.test",
                            issuer_name: "idp.test",
                            days_until_expiration: 2,
                        })
                        .map_err(|e| e.to_string())?;
                    let key = idp.export_private_key_der().map_err(|e| e.to_string())?;
                    (cert.der_data().to_vec(), key)
                }
            };
            let body = STANDARD.encode(&cert_der);
            let lines: Vec<&str> = body
                .as_bytes()
                .chunks(64)
                .filter_map(|c| std::str::from_utf8(c).ok())
                .collect();
            let cert_pem = format!(
                "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                lines.join("\n")
            );
            Ok(TestIdp {
                entity_id: entity_id.to_owned(),
                cert_pem,
                cert_der,
                key_der,
                kind,
            })
        }

        /// A valid Response for `user` in `groups`, for `audience`, issued now.
        pub fn spec(&self, user: &str, groups: &[&str], audience: &str) -> Spec {
            let now = SystemTime::now();
            Spec {
                issuer: self.entity_id.clone(),
                name_id: user.to_owned(),
                name_id_format: "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified".into(),
                attributes: vec![(
                    "groups".into(),
                    groups.iter().map(|g| (*g).to_owned()).collect(),
                )],
                audiences: vec![audience.to_owned()],
                recipient: "https://sluice.test/saml/acs".into(),
                issued: now,
                not_before: now - Duration::from_secs(30),
                not_on_or_after: now + Duration::from_secs(300),
                session_not_on_or_after: None,
                status: super::STATUS_SUCCESS.into(),
                signed: Signed::Response,
            }
        }

        fn signature_template(&self, reference: &str) -> String {
            let method = match self.kind {
                KeyKind::EcdsaP256 => "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
                KeyKind::Rsa2048 => "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            };
            format!(
                concat!(
                    r#"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>"#,
                    r#"<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>"#,
                    r##"<ds:SignatureMethod Algorithm="{method}"/><ds:Reference URI="#{reference}"><ds:Transforms>"##,
                    r#"<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>"#,
                    r#"<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>"#,
                    r#"<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>"#,
                    r#"<ds:DigestValue></ds:DigestValue></ds:Reference></ds:SignedInfo>"#,
                    r#"<ds:SignatureValue></ds:SignatureValue><ds:KeyInfo><ds:X509Data>"#,
                    r#"<ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>"#
                ),
                method = method,
                reference = reference,
                cert = STANDARD.encode(&self.cert_der),
            )
        }

        /// The Response XML, signed as `spec.signed` says.
        pub fn sign_xml(&self, spec: &Spec) -> Result<String, String> {
            let id = uuid::Uuid::now_v7().simple().to_string();
            let (response_id, assertion_id) = (format!("_r{id}"), format!("_a{id}"));
            let attributes: String = spec
                .attributes
                .iter()
                .map(|(name, values)| {
                    let values: String = values
                        .iter()
                        .map(|v| format!("<saml:AttributeValue>{}</saml:AttributeValue>", esc(v)))
                        .collect();
                    format!(
                        r#"<saml:Attribute Name="{}">{values}</saml:Attribute>"#,
                        esc(name)
                    )
                })
                .collect();
            let audiences = if spec.audiences.is_empty() {
                String::new()
            } else {
                let list: String = spec
                    .audiences
                    .iter()
                    .map(|a| format!("<saml:Audience>{}</saml:Audience>", esc(a)))
                    .collect();
                format!("<saml:AudienceRestriction>{list}</saml:AudienceRestriction>")
            };
            let session = spec
                .session_not_on_or_after
                .map(|t| format!(r#" SessionNotOnOrAfter="{}""#, time(t)))
                .unwrap_or_default();
            let assertion_sig = if matches!(spec.signed, Signed::Assertion | Signed::Both) {
                self.signature_template(&assertion_id)
            } else {
                String::new()
            };
            let build = |response_sig: &str, assertion: &str| {
                format!(
                    concat!(
                        r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{rid}" Version="2.0" IssueInstant="{issued}" Destination="{recipient}">"#,
                        "<saml:Issuer>{issuer}</saml:Issuer>{response_sig}",
                        r#"<samlp:Status><samlp:StatusCode Value="{status}"/></samlp:Status>{assertion}</samlp:Response>"#
                    ),
                    rid = response_id,
                    issued = time(spec.issued),
                    recipient = esc(&spec.recipient),
                    issuer = esc(&spec.issuer),
                    response_sig = response_sig,
                    status = esc(&spec.status),
                    assertion = assertion,
                )
            };
            let assertion = format!(
                concat!(
                    r#"<saml:Assertion ID="{aid}" Version="2.0" IssueInstant="{issued}">"#,
                    "<saml:Issuer>{issuer}</saml:Issuer>{assertion_sig}",
                    r#"<saml:Subject><saml:NameID Format="{format}">{name_id}</saml:NameID>"#,
                    r#"<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">"#,
                    r#"<saml:SubjectConfirmationData NotOnOrAfter="{until}" Recipient="{recipient}"/>"#,
                    "</saml:SubjectConfirmation></saml:Subject>",
                    r#"<saml:Conditions NotBefore="{from}" NotOnOrAfter="{until}">{audiences}</saml:Conditions>"#,
                    r#"<saml:AuthnStatement AuthnInstant="{issued}" SessionIndex="_s{aid}"{session}>"#,
                    "<saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport</saml:AuthnContextClassRef></saml:AuthnContext>",
                    "</saml:AuthnStatement><saml:AttributeStatement>{attributes}</saml:AttributeStatement></saml:Assertion>"
                ),
                aid = assertion_id,
                issued = time(spec.issued),
                issuer = esc(&spec.issuer),
                assertion_sig = assertion_sig,
                format = esc(&spec.name_id_format),
                name_id = esc(&spec.name_id),
                until = time(spec.not_on_or_after),
                recipient = esc(&spec.recipient),
                from = time(spec.not_before),
                audiences = audiences,
                session = session,
                attributes = attributes,
            );
            match spec.signed {
                Signed::Neither => Ok(build("", &assertion)),
                Signed::Response => {
                    self.sign(&build(&self.signature_template(&response_id), &assertion))
                }
                Signed::Assertion => self.sign(&build("", &assertion)),
                Signed::Both => {
                    // Sign the Assertion first (the only template), then add the Response's
                    // template after its Issuer and sign that (xmlsec signs the first one).
                    let inner = self.sign(&build("", &assertion))?;
                    let issuer_end = "</saml:Issuer>";
                    let at = inner
                        .find(issuer_end)
                        .ok_or("no Issuer in the signed response")?
                        + issuer_end.len();
                    let mut outer = inner.clone();
                    outer.insert_str(at, &self.signature_template(&response_id));
                    self.sign(&outer)
                }
            }
        }

        /// [`TestIdp::sign_xml`], base64 as an IdP posts it.
        pub fn sign_base64(&self, spec: &Spec) -> Result<String, String> {
            Ok(encode(&self.sign_xml(spec)?))
        }

        fn sign(&self, xml: &str) -> Result<String, String> {
            XmlSec::sign_xml(xml, &self.key_der).map_err(|e| format!("signing: {e}"))
        }
    }

    /// Base64 of `xml`.
    pub fn encode(xml: &str) -> String {
        STANDARD.encode(xml.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{encode, KeyKind, Signed, TestIdp};
    use super::*;

    const IDP: &str = "https://idp.test/saml";
    const AUDIENCE: &str = "https://sluice.test/sp";

    fn idp(kind: KeyKind) -> (TestIdp, Vec<SamlIdp>) {
        let test = TestIdp::generate(IDP, kind).expect("test IdP");
        let config = SamlIdpConfig::new(IDP, AUDIENCE, Path::new("idp.pem"));
        let idps = vec![SamlIdp::from_pem(&config, &test.cert_pem).expect("load")];
        (test, idps)
    }

    fn verify(idps: &[SamlIdp], xml: &str) -> Result<SamlLogin, SamlError> {
        verify_response(idps, &encode(xml), SystemTime::now())
    }

    #[test]
    fn a_signed_response_yields_the_subject_and_its_groups() {
        let (test, idps) = idp(KeyKind::EcdsaP256);
        let mut spec = test.spec("alice", &["engineering", " dba ", "engineering"], AUDIENCE);
        spec.attributes
            .push(("mail".into(), vec!["alice@example.com".into()]));
        let login = verify_response(
            &idps,
            &test.sign_base64(&spec).expect("sign"),
            SystemTime::now(),
        )
        .expect("accepted");
        assert_eq!(login.idp, IDP);
        assert_eq!(login.user, "alice");
        assert_eq!(login.groups, vec!["engineering", "dba"]);
        assert!(login.assertion_id.starts_with("_a"));
        // Line-wrapped base64, as some IdPs and tools produce, is fine.
        let wrapped: String = test
            .sign_base64(&spec)
            .expect("sign")
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
            .collect();
        verify_response(&idps, &wrapped, SystemTime::now()).expect("wrapped base64");
    }

    #[test]
    fn rsa_keys_and_signed_assertions_or_both_are_accepted() {
        let (test, idps) = idp(KeyKind::Rsa2048);
        for signed in [Signed::Response, Signed::Assertion, Signed::Both] {
            let mut spec = test.spec("bob", &["support"], AUDIENCE);
            spec.signed = signed;
            let xml = test.sign_xml(&spec).expect("sign");
            let login = verify(&idps, &xml).unwrap_or_else(|e| panic!("{signed:?}: {e}"));
            assert_eq!(
                (login.user.as_str(), login.groups.as_slice()),
                ("bob", &["support".to_owned()][..])
            );
        }
    }

    #[test]
    fn certificates_can_come_from_idp_metadata() {
        let test = TestIdp::generate(IDP, KeyKind::EcdsaP256).expect("test IdP");
        let body: String = test
            .cert_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let metadata = format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{IDP}">
                 <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
                   <md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
                     <ds:X509Data><ds:X509Certificate>{body}</ds:X509Certificate></ds:X509Data>
                   </ds:KeyInfo></md:KeyDescriptor>
                   <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.test/sso"/>
                 </md:IDPSSODescriptor>
               </md:EntityDescriptor>"#
        );
        let mut config = SamlIdpConfig::new(IDP, AUDIENCE, Path::new("x"));
        config.certificate = None;
        config.metadata_file = Some("idp-metadata.xml".into());
        let idps = vec![SamlIdp::from_metadata(&config, &metadata).expect("metadata")];
        assert_eq!(idps[0].fingerprints().len(), 1);
        let xml = test
            .sign_xml(&test.spec("carol", &[], AUDIENCE))
            .expect("sign");
        assert_eq!(verify(&idps, &xml).expect("accepted").user, "carol");

        let other = SamlIdpConfig::new("https://other.test", AUDIENCE, Path::new("x"));
        let err = SamlIdp::from_metadata(&other, &metadata).unwrap_err();
        assert!(err.contains("describes entityID"), "{err}");
        let err = SamlIdp::from_pem(&other, "not a certificate").unwrap_err();
        assert!(err.contains("no signing certificate"), "{err}");
    }

    #[test]
    fn unsigned_foreign_and_altered_responses_are_refused_distinctly() {
        let (test, idps) = idp(KeyKind::EcdsaP256);
        let mut spec = test.spec("alice", &["engineering"], AUDIENCE);
        spec.signed = Signed::Neither;
        let err = verify(&idps, &test.sign_xml(&spec).expect("xml")).unwrap_err();
        assert!(matches!(err, SamlError::Unsigned { .. }), "{err}");
        assert!(err.to_string().contains("not signed"), "{err}");

        let (stranger, _) = idp(KeyKind::EcdsaP256);
        let forged = stranger
            .sign_xml(&stranger.spec("alice", &["dba"], AUDIENCE))
            .expect("sign");
        let err = verify(&idps, &forged).unwrap_err();
        assert!(matches!(err, SamlError::UntrustedSigner { .. }), "{err}");
        assert!(err.to_string().contains("not IdP"), "{err}");

        for signed in [Signed::Response, Signed::Assertion] {
            let mut spec = test.spec("mallory", &["engineering"], AUDIENCE);
            spec.signed = signed;
            let xml = test.sign_xml(&spec).expect("sign");
            let altered = xml.replace(">mallory<", ">alice<");
            assert_ne!(xml, altered);
            let err = verify(&idps, &altered).unwrap_err();
            assert!(
                matches!(err, SamlError::Tampered { .. }),
                "{signed:?}: {err}"
            );
            assert!(err.to_string().contains("altered after"), "{err}");
        }

        // Without a certificate in KeyInfo the refusal is the generic one.
        let xml = test
            .sign_xml(&test.spec("mallory", &[], AUDIENCE))
            .expect("sign");
        let start = xml.find("<ds:KeyInfo>").expect("KeyInfo");
        let end = xml.find("</ds:KeyInfo>").expect("KeyInfo end") + "</ds:KeyInfo>".len();
        let bare = format!("{}{}", &xml[..start], &xml[end..]).replace(">mallory<", ">alice<");
        let err = verify(&idps, &bare).unwrap_err();
        assert!(matches!(err, SamlError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn sha1_signatures_are_refused_by_name() {
        let (test, idps) = idp(KeyKind::EcdsaP256);
        let xml = test
            .sign_xml(&test.spec("alice", &[], AUDIENCE))
            .expect("sign");
        let sha1 = xml.replace(
            "http://www.w3.org/2001/04/xmlenc#sha256",
            "http://www.w3.org/2000/09/xmldsig#sha1",
        );
        let err = verify(&idps, &sha1).unwrap_err();
        assert!(matches!(err, SamlError::WeakAlgorithm { .. }), "{err}");
        assert!(err.to_string().contains("xmldsig#sha1"), "{err}");
    }

    #[test]
    fn wrapped_and_commented_copies_are_refused() {
        let (test, idps) = idp(KeyKind::EcdsaP256);
        // Signature wrapping: an unsigned Assertion for "admin" next to, or instead of, the
        // signed one (moved into Extensions), with or without a copy of its Signature.
        let mut spec = test.spec("alice", &["engineering"], AUDIENCE);
        spec.signed = Signed::Assertion;
        let xml = test.sign_xml(&spec).expect("sign");
        let at = xml.find("<saml:Assertion").expect("assertion");
        let end = xml.rfind("</samlp:Response>").expect("end");
        let (head, signed, tail) = (&xml[..at], &xml[at..end], &xml[end..]);
        let sig_start = signed.find("<ds:Signature").expect("signature");
        let sig_end =
            signed.find("</ds:Signature>").expect("signature end") + "</ds:Signature>".len();
        let signature = &signed[sig_start..sig_end];
        let evil = format!("{}{}", &signed[..sig_start], &signed[sig_end..])
            .replace(">alice<", ">admin<")
            .replace("ID=\"_a", "ID=\"_evil");
        let issuer_end = evil.find("</saml:Issuer>").expect("issuer") + "</saml:Issuer>".len();
        let evil_signed = format!("{}{signature}{}", &evil[..issuer_end], &evil[issuer_end..]);
        let hidden = format!("<samlp:Extensions>{signed}</samlp:Extensions>");
        for (name, wrapped) in [
            ("duplicate", format!("{head}{evil}{signed}{tail}")),
            ("hidden", format!("{head}{hidden}{evil}{tail}")),
            (
                "hidden, copied signature",
                format!("{head}{hidden}{evil_signed}{tail}"),
            ),
        ] {
            let result = verify(&idps, &wrapped);
            assert!(result.is_err(), "{name}: {result:?}");
        }
        verify(&idps, &xml).expect("the original still verifies");

        // Comment truncation: a comment inside the NameID leaves the canonical form (and so
        // the digest) unchanged, but would shorten the name a naive reader sees. samael only
        // keeps nodes that match the verified pre-digest, so it is refused.
        let xml = test
            .sign_xml(&test.spec("alice.evil.example", &["engineering"], AUDIENCE))
            .expect("sign");
        let commented = xml.replace(">alice.evil.example<", ">alice<!---->.evil.example<");
        assert_ne!(xml, commented);
        let result = verify(&idps, &commented);
        assert!(result.is_err(), "{result:?}");
        // Nor can a processing instruction hide part of the name.
        let xml = test
            .sign_xml(&test.spec("not-an-admin", &["engineering"], AUDIENCE))
            .expect("sign");
        let hidden = xml.replace(">not-an-admin<", "><?p not-an-?>admin<");
        assert_ne!(xml, hidden);
        let result = verify(&idps, &hidden);
        assert!(result.is_err(), "{result:?}");
        let xml = test
            .sign_xml(&test.spec("alice.evil.example", &["engineering"], AUDIENCE))
            .expect("sign");
        // A comment between elements changes nothing that is read.
        let between = xml.replace("<saml:Subject>", "<saml:Subject><!-- x -->");
        assert_eq!(
            verify(&idps, &between).expect("accepted").user,
            "alice.evil.example"
        );
    }

    #[test]
    fn time_limits_hold_with_the_configured_skew() {
        let (test, idps) = idp(KeyKind::EcdsaP256);
        let now = SystemTime::now();
        let mut spec = test.spec("alice", &[], AUDIENCE);
        spec.issued = now - Duration::from_secs(600);
        spec.not_before = now - Duration::from_secs(600);
        spec.not_on_or_after = now - Duration::from_secs(120);
        let err = verify(&idps, &test.sign_xml(&spec).expect("sign")).unwrap_err();
        assert!(matches!(err, SamlError::Expired { .. }), "{err}");
        assert!(err.to_string().contains("expired at"), "{err}");

        // 30 s past NotOnOrAfter is within the default 60 s skew.
        spec.not_on_or_after = now - Duration::from_secs(30);
        verify(&idps, &test.sign_xml(&spec).expect("sign")).expect("within skew");

        let mut spec = test.spec("alice", &[], AUDIENCE);
        spec.issued = now + Duration::from_secs(600);
        spec.not_before = now + Duration::from_secs(600);
        spec.not_on_or_after = now + Duration::from_secs(900);
        let err = verify(&idps, &test.sign_xml(&spec).expect("sign")).unwrap_err();
        assert!(matches!(err, SamlError::NotYetValid { .. }), "{err}");

        let mut spec = test.spec("alice", &[], AUDIENCE);
        spec.session_not_on_or_after = Some(now - Duration::from_secs(1));
        let err = verify(&idps, &test.sign_xml(&spec).expect("sign")).unwrap_err();
        assert!(matches!(err, SamlError::SessionEnded(_)), "{err}");
    }

    #[test]
    fn the_audience_issuer_status_and_recipient_must_be_ours() {
        let (test, idps) = idp(KeyKind::EcdsaP256);
        let spec = test.spec("alice", &[], "https://other-sp.test");
        let err = verify(&idps, &test.sign_xml(&spec).expect("sign")).unwrap_err();
        assert!(matches!(err, SamlError::WrongAudience { .. }), "{err}");
        assert!(err.to_string().contains("other-sp.test"), "{err}");

        let mut spec = test.spec("alice", &[], AUDIENCE);
        spec.audiences.clear();
        let err = verify(&idps, &test.sign_xml(&spec).expect("sign")).unwrap_err();
        assert!(matches!(err, SamlError::NoAudience { .. }), "{err}");

        let mut spec = test.spec("alice", &[], AUDIENCE);
        spec.issuer = "https://evil.test".into();
        let err = verify(&idps, &test.sign_xml(&spec).expect("sign")).unwrap_err();
        assert!(matches!(err, SamlError::UnknownIdp { .. }), "{err}");

        let mut spec = test.spec("alice", &[], AUDIENCE);
        spec.status = "urn:oasis:names:tc:SAML:2.0:status:Requester".into();
        let err = verify(&idps, &test.sign_xml(&spec).expect("sign")).unwrap_err();
        assert!(matches!(err, SamlError::Status { .. }), "{err}");

        let mut config = idps[0].config().clone();
        config.acs_url = Some("https://sluice.test/elsewhere".into());
        let strict = vec![SamlIdp::from_pem(&config, &test.cert_pem).expect("load")];
        let xml = test
            .sign_xml(&test.spec("alice", &[], AUDIENCE))
            .expect("sign");
        let err = verify(&strict, &xml).unwrap_err();
        assert!(matches!(err, SamlError::WrongRecipient { .. }), "{err}");
        config.acs_url = Some("https://sluice.test/saml/acs".into());
        let strict = vec![SamlIdp::from_pem(&config, &test.cert_pem).expect("load")];
        verify(&strict, &xml).expect("matching acs_url");
    }

    #[test]
    fn subjects_come_from_the_name_id_or_an_attribute_and_are_checked() {
        let (test, idps) = idp(KeyKind::EcdsaP256);
        let mut spec = test.spec("_8f3a1c", &["engineering"], AUDIENCE);
        spec.name_id_format = TRANSIENT.into();
        let xml = test.sign_xml(&spec).expect("sign");
        let err = verify(&idps, &xml).unwrap_err();
        assert!(err.to_string().contains("transient"), "{err}");

        spec.attributes.push(("uid".into(), vec!["dave".into()]));
        let xml = test.sign_xml(&spec).expect("sign");
        let mut config = idps[0].config().clone();
        config.subject_attribute = Some("uid".into());
        let by_uid = vec![SamlIdp::from_pem(&config, &test.cert_pem).expect("load")];
        assert_eq!(verify(&by_uid, &xml).expect("accepted").user, "dave");

        let spec = test.spec("alice", &["ok", "evil\u{9b}31m"], AUDIENCE);
        let err = verify(&idps, &test.sign_xml(&spec).expect("sign")).unwrap_err();
        assert!(
            matches!(err, SamlError::BadName { what: "group", .. }),
            "{err}"
        );
    }

    #[test]
    fn malformed_input_is_refused_without_panicking() {
        let (test, idps) = idp(KeyKind::EcdsaP256);
        let now = SystemTime::now();
        assert_eq!(verify_response(&idps, "  ", now), Err(SamlError::Empty));
        assert!(matches!(
            verify_response(&idps, "not base64!", now),
            Err(SamlError::NotBase64(_))
        ));
        let big = "A".repeat(MAX_RESPONSE_BYTES + 1);
        assert_eq!(verify_response(&idps, &big, now), Err(SamlError::TooLarge));
        assert!(matches!(
            verify_response(&idps, &STANDARD.encode([0xff, 0xfe]), now),
            Err(SamlError::NotUtf8)
        ));
        let xml = test
            .sign_xml(&test.spec("alice", &[], AUDIENCE))
            .expect("sign");
        let doctype = format!("<!DOCTYPE r [<!ENTITY x \"alice\">]>{xml}");
        assert_eq!(verify(&idps, &doctype), Err(SamlError::Doctype));
        let start = xml.find("<saml:Assertion").expect("assertion");
        let end = xml.rfind("</samlp:Response>").expect("end");
        let bare = &xml[start..end];
        assert!(matches!(
            verify(&idps, bare),
            Err(SamlError::NotAResponse(_))
        ));
        for cut in [10, xml.len() / 3, xml.len() / 2, xml.len() - 5] {
            assert!(verify(&idps, &xml[..cut]).is_err());
        }
        assert!(matches!(
            verify(&idps, "<a:Response xmlns:a=\"urn:x\"/>"),
            Err(SamlError::NotAResponse(_))
        ));
    }

    #[test]
    fn mutated_responses_never_panic_and_never_change_who_logs_in() {
        let (test, idps) = idp(KeyKind::EcdsaP256);
        let mut spec = test.spec("alice", &["engineering"], AUDIENCE);
        spec.signed = Signed::Assertion;
        let xml = test.sign_xml(&spec).expect("sign").into_bytes();
        let mut seed: u64 = 0x5eed;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize
        };
        for _ in 0..400 {
            let mut mutated = xml.clone();
            for _ in 0..1 + next() % 3 {
                let at = next() % mutated.len();
                match next() % 3 {
                    0 => mutated[at] = b"<>/\"= x-1"[next() % 9],
                    1 => {
                        mutated.remove(at);
                    }
                    _ => mutated.insert(at, b"<!->?&;"[next() % 7]),
                }
            }
            let result = verify_response(&idps, &STANDARD.encode(&mutated), SystemTime::now());
            assert_ne!(result, Err(SamlError::Internal));
            if let Ok(login) = result {
                assert_eq!((login.user.as_str(), login.groups.len()), ("alice", 1));
            }
        }
    }

    #[test]
    fn assertions_are_single_use_and_token_lifetimes_are_capped() {
        let (test, idps) = idp(KeyKind::EcdsaP256);
        let now = SystemTime::now();
        let mut spec = test.spec("alice", &[], AUDIENCE);
        spec.session_not_on_or_after = Some(now + Duration::from_secs(1800));
        let encoded = test.sign_base64(&spec).expect("sign");
        let login = verify_response(&idps, &encoded, now).expect("accepted");
        let mut cache = ReplayCache::default();
        cache.check(&login).expect("first use");
        cache.remember(&login, now);
        let again = verify_response(&idps, &encoded, now).expect("still valid on its own");
        assert!(matches!(
            cache.check(&again),
            Err(SamlError::Replayed { .. })
        ));
        // Forgotten once it could no longer be accepted anyway.
        let later = UNIX_EPOCH + Duration::from_millis(login.valid_until_ms + 1);
        let other = verify_response(
            &idps,
            &test
                .sign_base64(&test.spec("bob", &[], AUDIENCE))
                .expect("sign"),
            now,
        )
        .expect("accepted");
        cache.remember(&other, later);
        assert_eq!(cache.len(), 1);

        let config = idps[0].config();
        let ttl = login
            .token_ttl(config, Duration::from_secs(12 * 3600), now)
            .expect("ttl");
        assert!(
            ttl <= Duration::from_secs(1800) && ttl > Duration::from_secs(1790),
            "{ttl:?}"
        );
        let plain = SamlLogin {
            session_not_on_or_after_ms: None,
            ..login.clone()
        };
        assert_eq!(
            plain.token_ttl(config, Duration::from_secs(3600), now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            plain.token_ttl(config, Duration::from_secs(12 * 3600), now),
            Some(Duration::from_secs(8 * 3600))
        );
    }
}
