//! TLS material: the client-facing server config, backend client configs, and the
//! self-signed CA + server certificate that `sluice demo` generates.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(provider::default_provider())
}

/// Loads a PEM certificate chain and key into a rustls server config (ring backend).
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    let config = ServerConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(Arc::new(config))
}

/// Client config for a backend with `tls = "verify-full"`.
pub fn backend_verified(ca: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading CA {}", ca.display()))?
    {
        roots.add(cert.with_context(|| format!("parsing CA {}", ca.display()))?)?;
    }
    let config = ClientConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Client config for a backend with `tls = "require"`: encrypted, not authenticated
/// (libpq's `sslmode=require`).
pub fn backend_unverified() -> anyhow::Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder_with_provider(crypto())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(crypto())))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// PEM files of a generated CA and a server certificate it signed.
pub struct GeneratedCerts {
    /// CA certificate: clients put it in `sslrootcert` for `verify-full`.
    pub ca_cert_pem: String,
    /// Server certificate (for `localhost`, `127.0.0.1`, `::1`).
    pub server_cert_pem: String,
    /// Server private key.
    pub server_key_pem: String,
}

/// Generates a throwaway CA and a server certificate for loopback names.
pub fn generate_loopback_certs() -> anyhow::Result<GeneratedCerts> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    // A unique name per CA: with one fixed name, OpenSSL picks whichever "Sluice demo CA"
    // it was given as the issuer and reports a wrong CA as a signature failure ("EVP lib")
    // instead of an unknown issuer.
    let tag: u32 = rand::random();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("Sluice demo CA {tag:08x}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.use_authority_key_identifier_extension = true;
    let server_cert = params.signed_by(&server_key, &issuer)?;
    Ok(GeneratedCerts {
        ca_cert_pem: ca_cert.pem(),
        server_cert_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_into_a_server_config() {
        let certs = generate_loopback_certs().expect("generate");
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, &certs.server_cert_pem).expect("write");
        std::fs::write(&key, &certs.server_key_pem).expect("write");
        server_config(&cert, &key).expect("loads");
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, &certs.ca_cert_pem).expect("write");
        backend_verified(&ca).expect("CA loads");
    }

    #[test]
    fn mismatched_key_is_a_clear_error() {
        let a = generate_loopback_certs().expect("generate");
        let b = generate_loopback_certs().expect("generate");
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("server.crt");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, &a.server_cert_pem).expect("write");
        std::fs::write(&key, &b.server_key_pem).expect("write");
        let err = server_config(&cert, &key).expect_err("mismatch");
        assert!(format!("{err:#}").contains("do not match"), "{err:#}");
    }
}
