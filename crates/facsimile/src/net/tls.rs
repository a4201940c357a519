//! TLS settings of a relay connection.

use std::io;
use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// TLS for a relay connection: which certificates to trust and the name to
/// check the relay's certificate against.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: Option<String>,
}

impl TlsOptions {
    /// Uses a rustls client configuration as it is.
    pub fn new(config: Arc<ClientConfig>) -> TlsOptions {
        TlsOptions {
            config,
            server_name: None,
        }
    }

    /// Trusts the certificate authorities in a PEM file (the relay's own
    /// certificate, when it is self-signed).
    ///
    /// # Errors
    /// When the file cannot be read or holds no certificate.
    pub fn from_ca_file(path: impl AsRef<Path>) -> io::Result<TlsOptions> {
        let path = path.as_ref();
        let bad = |e: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        };
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in the file".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        Ok(TlsOptions::new(Arc::new(config)))
    }

    /// The name the relay's certificate must carry (default: the host part
    /// of the address connected to).
    pub fn server_name(mut self, name: impl Into<String>) -> TlsOptions {
        self.server_name = Some(name.into());
        self
    }
}
