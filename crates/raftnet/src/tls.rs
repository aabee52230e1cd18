//! TLS for the peer port (mutual TLS 1.3) and for an application's own client ports, with
//! rustls (no OpenSSL).
//!
//! # Peer identity
//!
//! Every node holds a certificate from the cluster's CA that names its node id as the DNS name
//! [`node_name`] (`raft-node-<id>`), with both the server and the client extended key usage. A
//! dialer checks that the node it dials presents the name of the id it dials; the acceptor
//! requires a client certificate from the CA and, once the dialer's hello claims an id, checks
//! that the certificate names that id. So a node cannot impersonate another, and a machine
//! without a certificate from the CA cannot talk to the cluster at all. The cluster-id check of
//! the hello stays on top.
//!
//! # Reloading
//!
//! [`PeerTls`] and [`ServerTls`] read PEM files named by [`TlsFiles`] and can read them again
//! ([`PeerTls::reload`], [`ServerTls::reload`]) without a restart: new connections use the new
//! certificates, established ones keep theirs. A reload that fails (a missing file, a key that
//! does not match) keeps the previous material and says why.

mod stream;

pub use stream::Stream;

use raftengine::NodeId;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The DNS name a node's certificate carries to prove it is node `id`.
pub fn node_name(id: NodeId) -> String {
    format!("raft-node-{}", id.0)
}

/// Where the PEM files of one TLS identity are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) peers' and clients' certificates must chain to.
    pub ca: PathBuf,
    /// This side's certificate chain, leaf first.
    pub cert: PathBuf,
    /// This side's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed as PEM.
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        /// Which file it is: "certificate", "private key" or "CA file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O or parse error.
        reason: String,
    },
    /// A PEM file holds none of what it should.
    #[error("{what} {path} holds no {expected}")]
    Empty {
        /// Which file it is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What it should hold (e.g. "PEM certificate").
        expected: &'static str,
    },
    /// The CA file holds a certificate rustls will not use as a trust anchor.
    #[error("the CA file {path} holds a certificate rustls refuses: {reason}")]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// rustls' reason.
        reason: String,
    },
    /// rustls refused the assembled configuration (e.g. a key that does not match its
    /// certificate).
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// The crypto provider every configuration here is built with (ring), named rather than taken
/// from the process default so that another crate's choice cannot change or break ours.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates, key and trusted roots, read from [`TlsFiles`].
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

impl Identity {
    fn load(files: &TlsFiles) -> Result<Identity, TlsError> {
        Ok(Identity {
            chain: read_certs("certificate", &files.cert)?,
            key: read_key(&files.key)?,
            roots: Arc::new(read_roots(&files.ca)?),
        })
    }
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Read {
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The CA certificates of `path`, as the roots peers' and clients' certificates must chain to.
fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in read_certs("CA file", path)? {
        roots.add(ca).map_err(|e| TlsError::BadCa {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |reason: String| TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "PEM certificate",
        });
    }
    Ok(certs)
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

/// The configurations of one load of a node's peer identity.
struct PeerConfigs {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl PeerConfigs {
    fn build(files: &TlsFiles) -> Result<PeerConfigs, TlsError> {
        let identity = Identity::load(files)?;
        let tls13 = &[&rustls::version::TLS13];
        let clients =
            WebPkiClientVerifier::builder_with_provider(identity.roots.clone(), provider())
                .build()
                .map_err(config_error)?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(tls13)
            .map_err(config_error)?
            .with_client_cert_verifier(clients)
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(config_error)?;
        let servers = WebPkiServerVerifier::builder_with_provider(identity.roots, provider())
            .build()
            .map_err(config_error)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(tls13)
            .map_err(config_error)?
            .with_webpki_verifier(servers)
            .with_client_auth_cert(identity.chain, identity.key)
            .map_err(config_error)?;
        Ok(PeerConfigs {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }
}

/// A node's identity on the peer port: mutual TLS 1.3 (see the module docs). Shared by the
/// transport's accept loop and its dialing tasks; [`PeerTls::reload`] swaps the material.
pub struct PeerTls {
    files: TlsFiles,
    current: RwLock<Arc<PeerConfigs>>,
}

impl PeerTls {
    /// Reads the files and builds the configurations.
    pub fn load(files: TlsFiles) -> Result<Arc<PeerTls>, TlsError> {
        let current = RwLock::new(Arc::new(PeerConfigs::build(&files)?));
        Ok(Arc::new(PeerTls { files, current }))
    }

    /// Reads the files again; new connections use what they hold now. On an error the previous
    /// material stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(PeerConfigs::build(&self.files)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The files this identity is read from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    fn configs(&self) -> Arc<PeerConfigs> {
        // A poisoned lock only means a thread panicked while swapping an `Arc`: still valid.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.configs().acceptor.clone()
    }

    pub(crate) fn connector(&self) -> TlsConnector {
        self.configs().connector.clone()
    }
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("files", &self.files)
            .finish()
    }
}

/// Two handles are equal when they are the same identity (not merely the same files: a reload
/// of one does not reload the other).
impl PartialEq for PeerTls {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for PeerTls {}

/// The name a dialer expects the acceptor's certificate to carry.
pub(crate) fn server_name_of(id: NodeId) -> ServerName<'static> {
    // `raft-node-<digits>` is always a valid DNS name.
    ServerName::try_from(node_name(id)).expect("raft-node-<id> is a valid DNS name")
}

/// Whether the end-entity certificate `cert` (already verified against the CA by the handshake)
/// names node `id`.
pub fn certificate_names_node(cert: &CertificateDer<'_>, id: NodeId) -> bool {
    let Ok(end_entity) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    end_entity
        .verify_is_valid_for_subject_name(&server_name_of(id))
        .is_ok()
}

/// Whether a client port asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A certificate is asked for; one from the CA is verified, none is accepted too (the
    /// application then authenticates otherwise, e.g. with a password).
    Optional,
    /// A certificate from the CA is required.
    Required,
}

/// TLS on an application's own port (a client port, an admin port): TLS 1.2 or 1.3, the
/// server's certificate from [`TlsFiles`], client certificates per [`ClientAuth`].
pub struct ServerTls {
    files: TlsFiles,
    client_auth: ClientAuth,
    current: RwLock<TlsAcceptor>,
}

impl ServerTls {
    /// Reads the files and builds the configuration.
    pub fn load(files: TlsFiles, client_auth: ClientAuth) -> Result<Arc<ServerTls>, TlsError> {
        let acceptor = RwLock::new(Self::build(&files, client_auth)?);
        Ok(Arc::new(ServerTls {
            files,
            client_auth,
            current: acceptor,
        }))
    }

    fn build(files: &TlsFiles, client_auth: ClientAuth) -> Result<TlsAcceptor, TlsError> {
        let identity = Identity::load(files)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(config_error)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(identity.roots, provider());
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Optional => builder.with_client_cert_verifier(
                verifier
                    .allow_unauthenticated()
                    .build()
                    .map_err(config_error)?,
            ),
            ClientAuth::Required => {
                builder.with_client_cert_verifier(verifier.build().map_err(config_error)?)
            }
        };
        let config = builder
            .with_single_cert(identity.chain, identity.key)
            .map_err(config_error)?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Reads the files again (see [`PeerTls::reload`]).
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Self::build(&self.files, self.client_auth)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    /// The acceptor new connections are handshaken with.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether clients are asked for certificates.
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

/// A client configuration trusting the CA of `ca` and, when given, presenting `identity`
/// (certificate and key files): what a tool dialing a TLS client or admin port uses.
pub fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(config_error)?
        .with_root_certificates(read_roots(ca)?);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs("certificate", cert)?, read_key(key)?)
            .map_err(config_error),
    }
}

/// Development certificates: a CA and per-node certificates, for demos and tests. A
/// production cluster's certificates come from the operator's own CA; any certificate works
/// that carries [`node_name`] as a DNS name and both extended key usages.
#[cfg(feature = "dev-certs")]
pub mod dev {
    use super::node_name;
    use raftengine::NodeId;
    /// The certificate generator's error.
    pub use rcgen::Error;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };

    /// A certificate and its key, PEM-encoded.
    #[derive(Debug, Clone)]
    pub struct Pem {
        /// The certificate, PEM (`-----BEGIN CERTIFICATE-----`).
        pub cert: String,
        /// Its private key, PEM (PKCS#8).
        pub key: String,
    }

    /// A development certificate authority.
    pub struct Authority {
        issuer: CertifiedIssuer<'static, KeyPair>,
        key_pem: String,
    }

    impl std::fmt::Debug for Authority {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Authority")
        }
    }

    impl Authority {
        /// A new self-signed CA named `name`.
        pub fn new(name: &str) -> Result<Authority, rcgen::Error> {
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let key = KeyPair::generate()?;
            let key_pem = key.serialize_pem();
            let issuer = CertifiedIssuer::self_signed(params, key)?;
            Ok(Authority { issuer, key_pem })
        }

        /// The CA's certificate and key.
        pub fn pem(&self) -> Pem {
            Pem {
                cert: self.issuer.pem(),
                key: self.key_pem.clone(),
            }
        }

        /// A certificate for node `id`: [`node_name`] plus `hosts` (DNS names or IP addresses
        /// clients reach the node by), usable as server and as client.
        pub fn node(&self, id: NodeId, hosts: &[String]) -> Result<Pem, rcgen::Error> {
            let mut names = vec![node_name(id)];
            names.extend(hosts.iter().cloned());
            self.leaf(&node_name(id), names)
        }

        /// A client certificate with common name `name` (and that DNS name), usable as client
        /// and as server.
        pub fn client(&self, name: &str) -> Result<Pem, rcgen::Error> {
            self.leaf(name, vec![name.to_string()])
        }

        fn leaf(&self, common_name: &str, names: Vec<String>) -> Result<Pem, rcgen::Error> {
            let mut params = CertificateParams::new(names)?;
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &self.issuer)?;
            Ok(Pem {
                cert: cert.pem(),
                key: key.serialize_pem(),
            })
        }
    }
}
