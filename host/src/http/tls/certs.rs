//! The certificate a TLS listener presents: loaded from PEM files, checked
//! (the key must match the certificate), and swapped atomically on reload
//! while the old one stays in use when a new pair is refused.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate/key pair was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM section of the kind expected.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key is not one rustls can sign with, or does not belong to the
    /// certificate.
    #[error("{} does not go with {}: {reason}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        reason: String,
    },
}

/// The PEM files a listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), PEM.
    pub key: PathBuf,
}

/// The raw bytes of both files, as last read.
type Contents = (Vec<u8>, Vec<u8>);

/// The certificate a TLS listener presents, replaceable while it serves.
/// Each handshake takes the current one; a connection keeps the one it
/// started with, so a swap drops nothing.
pub struct Certificates {
    files: CertFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    // What was last tried (loaded or refused): a change poll retries only
    // when the files differ from it, so a refused pair is logged once.
    last_tried: Mutex<Contents>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Load `files`; an error names the file at fault.
    pub fn load(files: CertFiles, provider: Arc<CryptoProvider>) -> Result<Self, TlsError> {
        let contents = read(&files)?;
        let key = parse(&files, &contents, &provider)?;
        Ok(Certificates {
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
            last_tried: Mutex::new(contents),
        })
    }

    /// Read the files again and present the new pair from the next
    /// handshake on. A pair that does not load is refused, the old one kept,
    /// and the reason logged and returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let result = read(&self.files).and_then(|contents| self.try_swap(contents));
        self.log(&result, "reload requested");
        result
    }

    /// [`Certificates::reload`] if either file differs from what was last
    /// tried; `None` when nothing changed. An unreadable file (being
    /// replaced) is not a change: the next poll looks again.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let contents = read(&self.files).ok()?;
        if *self
            .last_tried
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            == contents
        {
            return None;
        }
        let result = self.try_swap(contents);
        self.log(&result, "files changed");
        Some(result)
    }

    fn try_swap(&self, contents: Contents) -> Result<(), TlsError> {
        let parsed = parse(&self.files, &contents, &self.provider);
        *self
            .last_tried
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = contents;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(parsed?);
        Ok(())
    }

    fn log(&self, result: &Result<(), TlsError>, why: &str) {
        let cert = self.files.cert.display();
        match result {
            Ok(()) => tracing::info!(%cert, why, "TLS certificate reloaded"),
            Err(e) => tracing::error!(
                %cert,
                why,
                error = %e,
                "new TLS certificate refused; still presenting the previous one"
            ),
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read(files: &CertFiles) -> Result<Contents, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    Ok((read(&files.cert)?, read(&files.key)?))
}

/// The chain and key of `contents`, checked to belong together.
fn parse(
    files: &CertFiles,
    (cert, key): &Contents,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let pem = |path: &Path, reason: String| TlsError::Pem {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(&files.cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(pem(&files.cert, "no CERTIFICATE section".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        pem(
            &files.key,
            format!("no PEM private key (PKCS#8, RSA or EC): {e}"),
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })
}
