//! rustls client configurations for the URL's `sslmode`.

use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::url::{SslMode, Target};

/// `None` for `sslmode=disable`. Built once per target and shared by every connection.
pub fn client_config(target: &Target) -> Result<Option<Arc<rustls::ClientConfig>>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?;
    let config = match target.sslmode {
        SslMode::Disable => return Ok(None),
        // libpq's `require`: encrypted, server not authenticated; the same client setting
        // the gateway uses toward a `tls = "require"` backend.
        SslMode::Require => return sluice_proxy::tls::backend_unverified().map(Some),
        SslMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            match &target.sslrootcert {
                Some(path) => {
                    for cert in CertificateDer::pem_file_iter(path)
                        .with_context(|| format!("cannot read sslrootcert {}", path.display()))?
                    {
                        let cert = cert.with_context(|| {
                            format!("bad certificate in sslrootcert {}", path.display())
                        })?;
                        roots.add(cert).context("sslrootcert certificate refused")?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

pub fn server_name(target: &Target) -> Result<ServerName<'static>> {
    ServerName::try_from(target.host.clone())
        .with_context(|| format!("{:?} is not a valid TLS server name", target.host))
}
