//! The cluster's certificate authority, the node certificates it signs, the `<data>/tls`
//! directory that holds them, and the rustls configurations every cluster connection uses.
//!
//! Identity scheme: each node certificate carries two DNS subject alternative names,
//! `<node-id>.node.hamster` (the node id as 16 lowercase hex digits) and `cluster.hamster`.
//! Clients connect with the server name `cluster.hamster`, which every member's certificate holds,
//! so any member can answer on any address; who the peer *is* comes from its
//! `<node-id>.node.hamster` name ([`peer_node_id`]), never from anything the peer says in a
//! message. Trust is the cluster CA alone: no system roots, mutual TLS on every connection, and
//! no way to turn it off (INV-6).
//!
//! Keys are ECDSA P-256 generated from the operating system's randomness. Minting and loading
//! are production-only effects (`hamster init`, join, `serve` start-up); the simulation replaces
//! the peer link and never reaches this module, so its wall-clock reads stay out of the
//! deterministic world.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

/// The TLS server name every node certificate carries and every client asks for.
pub const CLUSTER_SERVER_NAME: &str = "cluster.hamster";
/// Suffix of the DNS name that carries a node's id: `<node-id>.node.hamster`.
pub const NODE_NAME_SUFFIX: &str = ".node.hamster";
/// Length of a node id in hex digits.
pub const NODE_ID_HEX_DIGITS: usize = 16;

/// How long a cluster CA is valid. Rotation is an explicit operator step (`rotate-ca`), so the
/// CA outlives any reasonable deployment without one.
const CA_VALIDITY_DAYS: u64 = 10 * 365;
/// How long a node certificate is valid; as long as the CA so that no node silently expires
/// before the operator rotates.
const NODE_VALIDITY_DAYS: u64 = 10 * 365;
/// Certificates start a day in the past so that a peer whose clock runs behind still accepts a
/// certificate minted moments ago.
const CLOCK_SKEW_DAYS: u64 = 1;
const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const NODE_CERT_FILE: &str = "node.pem";
const NODE_KEY_FILE: &str = "node.key";
/// Private keys are readable by the owner only.
const KEY_MODE: u32 = 0o600;
/// Certificates are public.
const CERT_MODE: u32 = 0o644;
/// The directory holding the keys is private too, so key names are not even listable.
const DIR_MODE: u32 = 0o700;

/// What a node needs to speak mutual TLS: the CA it trusts and its own certificate and key.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The cluster CA certificate, PEM.
    pub ca_cert_pem: String,
    /// This node's certificate, PEM.
    pub cert_pem: String,
    /// This node's private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for TlsMaterial {
    // The key must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The cluster's certificate authority: its certificate and the key that signs node
/// certificates.
#[derive(Clone)]
pub struct ClusterCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for ClusterCa {
    // The key must never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Mints a new self-signed cluster CA (ECDSA P-256, valid for ten years) for `cluster_id`.
pub fn mint_cluster_ca(cluster_id: &str) -> anyhow::Result<ClusterCa> {
    install_ring_provider();
    if cluster_id.is_empty() || cluster_id.chars().any(|c| c.is_control()) {
        bail!("cluster id {cluster_id:?} is empty or has control characters; pass a printable id");
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| anyhow!("cannot generate the cluster CA key: {e}; retry"))?;
    let mut params = ca_params(&format!("hamster cluster {cluster_id}"));
    set_validity(&mut params, CA_VALIDITY_DAYS)?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| anyhow!("cannot sign the cluster CA certificate: {e}; retry"))?;
    Ok(ClusterCa {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Mints a certificate and key for node `node_id`, signed by `ca`, good for both ends of a
/// connection (serverAuth and clientAuth). Returns `(cert_pem, key_pem)`.
///
/// The new certificate is verified against the CA before it is returned, so a CA key that does
/// not match its certificate is caught here rather than at the first failed handshake.
pub fn mint_node_cert(ca: &ClusterCa, node_id: &str) -> anyhow::Result<(String, String)> {
    install_ring_provider();
    check_node_id(node_id)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| anyhow!("cannot generate a node key: {e}; retry"))?;
    let cert_pem = sign_node_key(ca, node_id, &key)?;
    Ok((cert_pem, key.serialize_pem()))
}

/// A joiner's half of getting a certificate: a fresh key that stays with it and a certificate
/// signing request (PEM) naming exactly `<node_id>.node.hamster` and `cluster.hamster`.
/// Returns `(key_pem, csr_pem)`.
pub fn node_key_and_csr(node_id: &str) -> anyhow::Result<(String, String)> {
    install_ring_provider();
    check_node_id(node_id)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| anyhow!("cannot generate a node key: {e}; retry"))?;
    let mut params = CertificateParams::new(node_names(node_id))
        .map_err(|e| anyhow!("cannot build a request for node {node_id}: {e}"))?;
    params.distinguished_name = distinguished_name(&format!("hamster node {node_id}"));
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| anyhow!("cannot build the certificate request: {e}; retry"))?;
    Ok((key.serialize_pem(), csr))
}

/// The CA's half of a join: signs the public key in `csr_pem` (whose self-signature is
/// checked) as node `node_id`'s certificate. The request must name exactly that node's
/// `<node_id>.node.hamster` and `cluster.hamster`; anything else is refused, so a joiner can
/// never obtain another node's identity. Everything but the key is taken from our own recipe,
/// not from the request.
pub fn sign_node_csr(ca: &ClusterCa, csr_pem: &str, node_id: &str) -> anyhow::Result<String> {
    install_ring_provider();
    check_node_id(node_id)?;
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| anyhow!("the certificate request is not a valid signed CSR ({e})"))?;
    let mut asked = Vec::new();
    for san in &csr.params.subject_alt_names {
        match san {
            SanType::DnsName(name) => asked.push(name.as_str().to_string()),
            _ => bail!("the certificate request names something other than DNS names"),
        }
    }
    asked.sort();
    let mut wanted = node_names(node_id);
    wanted.sort();
    if asked != wanted {
        bail!(
            "the certificate request names {asked:?}, not exactly node {node_id}'s names {wanted:?}"
        );
    }
    sign_node_key(ca, node_id, &csr.public_key)
}

/// The DNS names a node certificate carries.
fn node_names(node_id: &str) -> Vec<String> {
    vec![
        format!("{node_id}{NODE_NAME_SUFFIX}"),
        CLUSTER_SERVER_NAME.to_string(),
    ]
}

/// Signs `public_key` as node `node_id`'s certificate with `ca`, and checks the result chains.
fn sign_node_key(
    ca: &ClusterCa,
    node_id: &str,
    public_key: &impl PublicKeyData,
) -> anyhow::Result<String> {
    let ca_der = first_cert(&ca.cert_pem, "the cluster CA certificate")?;
    let ca_fields = der::cert_fields(&ca_der)
        .ok_or_else(|| anyhow!("the cluster CA certificate is malformed; restore ca.pem"))?;
    let ca_cn = der::common_name(ca_fields.subject.content).ok_or_else(|| {
        anyhow!("the cluster CA certificate has no common name; it was not minted by hamster")
    })?;
    let ca_key = KeyPair::from_pem(&ca.key_pem)
        .map_err(|e| anyhow!("cannot read the cluster CA key: {e}; restore ca.key"))?;
    // Without an X.509 parser the issuer is rebuilt from the same recipe that made the CA; the
    // issuer/subject comparison below proves the recipe matched.
    let issuer = Issuer::new(ca_params(ca_cn), ca_key);

    let mut params = CertificateParams::new(node_names(node_id))
        .map_err(|e| anyhow!("cannot build a certificate for node {node_id}: {e}"))?;
    params.distinguished_name = distinguished_name(&format!("hamster node {node_id}"));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, NODE_VALIDITY_DAYS)?;
    let cert = params
        .signed_by(public_key, &issuer)
        .map_err(|e| anyhow!("cannot sign the certificate for node {node_id}: {e}; retry"))?;

    let leaf_fields = der::cert_fields(cert.der()).expect("rcgen emits well-formed DER");
    if leaf_fields.issuer.whole != ca_fields.subject.whole {
        bail!("the cluster CA certificate was not minted by this hamster version; re-run `hamster init`");
    }
    let cert_pem = cert.pem();
    verify_chain(&ca.cert_pem, &cert_pem)
        .context("the cluster CA key does not match ca.pem; restore both from the same backup")?;
    debug_assert_eq!(
        peer_node_id(&[cert.der().clone()]).as_deref(),
        Some(node_id)
    );
    Ok(cert_pem)
}

/// Writes the CA and this node's certificate and key into `dir` (`<data>/tls`): `ca.pem`,
/// `ca.key`, `node.pem`, `node.key`, keys with mode 0600.
///
/// Each file is written crash-safely (temp file, fsync, rename) and the directory is fsynced
/// after the last rename; `node.pem` is renamed last, so its presence means the set is complete.
/// Existing files are replaced.
pub fn write_tls_dir(
    dir: &Path,
    ca: &ClusterCa,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("cannot create {}; check permissions", dir.display()))?;
    write_file(dir, CA_CERT_FILE, &ca.cert_pem, CERT_MODE)?;
    write_file(dir, CA_KEY_FILE, &ca.key_pem, KEY_MODE)?;
    write_file(dir, NODE_KEY_FILE, key_pem, KEY_MODE)?;
    write_file(dir, NODE_CERT_FILE, cert_pem, CERT_MODE)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync {}; check the disk", dir.display()))?;
    Ok(())
}

/// Writes a joined node's `dir` (`<data>/tls`): `ca.pem`, the CA key `ca.key` (0600) when the
/// cluster handed it over, `node.pem` and `node.key` (0600), crash-safely as
/// [`write_tls_dir`] does.
pub fn write_member_tls_dir(
    dir: &Path,
    ca_cert_pem: &str,
    ca_key_pem: Option<&str>,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("cannot create {}; check permissions", dir.display()))?;
    write_file(dir, CA_CERT_FILE, ca_cert_pem, CERT_MODE)?;
    if let Some(ca_key) = ca_key_pem {
        write_file(dir, CA_KEY_FILE, ca_key, KEY_MODE)?;
    }
    write_file(dir, NODE_KEY_FILE, key_pem, KEY_MODE)?;
    write_file(dir, NODE_CERT_FILE, cert_pem, CERT_MODE)?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync {}; check the disk", dir.display()))?;
    Ok(())
}

/// Checks that `key_pem` is the private key of the CA certificate `ca_cert_pem`, by signing a
/// throwaway node certificate with it ([`mint_node_cert`] verifies it against the CA).
pub fn check_ca_key(ca_cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    let ca = ClusterCa {
        cert_pem: ca_cert_pem.to_string(),
        key_pem: key_pem.to_string(),
    };
    mint_node_cert(&ca, "ffffffffffffffff")
        .map(|_| ())
        .context("the CA key the cluster sent does not belong to its CA certificate")
}

/// Checks material a joiner was handed before it is written: the certificate chains to the CA,
/// fits the key, and names exactly node `node_id`.
pub fn check_member_material(m: &TlsMaterial, node_id: &str) -> anyhow::Result<()> {
    install_ring_provider();
    verify_chain(&m.ca_cert_pem, &m.cert_pem)
        .context("the certificate the cluster signed does not chain to its CA")?;
    client_config(m, &[]).context("the certificate the cluster signed does not fit our key")?;
    let leaf = first_cert(&m.cert_pem, "the signed certificate")?;
    if peer_node_id(&[leaf]).as_deref() != Some(node_id) {
        bail!("the certificate the cluster signed does not name node {node_id}");
    }
    Ok(())
}

/// Whether `dir` (`<data>/tls`) holds the cluster CA's key: true on the node that founded the
/// cluster, false on nodes that joined it.
pub fn has_ca_key(dir: &Path) -> bool {
    dir.join(CA_KEY_FILE).exists()
}

/// Loads this node's TLS material from `dir` (`<data>/tls`).
///
/// Refuses a missing file, a key readable by group or others, and a node certificate that the
/// CA did not sign, each with a message saying what to do.
pub fn load_tls_dir(dir: &Path) -> anyhow::Result<TlsMaterial> {
    install_ring_provider();
    let cert_pem = read_file(dir, NODE_CERT_FILE, false)?;
    let key_pem = read_file(dir, NODE_KEY_FILE, true)?;
    let ca_cert_pem = read_file(dir, CA_CERT_FILE, false)?;
    verify_chain(&ca_cert_pem, &cert_pem).with_context(|| {
        format!(
            "{} was not signed by {}; restore the tls directory from one backup",
            dir.join(NODE_CERT_FILE).display(),
            dir.join(CA_CERT_FILE).display()
        )
    })?;
    let material = TlsMaterial {
        ca_cert_pem,
        cert_pem,
        key_pem,
    };
    // Building a config checks that the key parses and belongs to the certificate.
    client_config(&material, &[])
        .with_context(|| format!("{} is unusable", dir.join(NODE_KEY_FILE).display()))?;
    Ok(material)
}

/// Loads the cluster CA (certificate and signing key) from `dir`, for minting certificates for
/// joining nodes. Refuses a CA key readable by group or others.
pub fn load_cluster_ca(dir: &Path) -> anyhow::Result<ClusterCa> {
    Ok(ClusterCa {
        cert_pem: read_file(dir, CA_CERT_FILE, false)?,
        key_pem: read_file(dir, CA_KEY_FILE, true)?,
    })
}

/// SHA-256 of the CA certificate's DER, as lowercase hex: what a join token pins.
pub fn ca_sha256_hex(ca_cert_pem: &str) -> anyhow::Result<String> {
    let der = first_cert(ca_cert_pem, "the cluster CA certificate")?;
    Ok(hex::encode(Sha256::digest(der.as_ref())))
}

/// A server configuration for the cluster port: TLS 1.3, mutual TLS with client certificates
/// required and verified against the cluster CA, offering the `alpn` protocols.
pub fn server_config(m: &TlsMaterial, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
    server_config_with(m, alpn, false)
}

/// Like [`server_config`]; with `anonymous_allowed` a client may also connect *without* a
/// certificate (one that presents a certificate must still chain to the cluster CA). Only the
/// join protocol may serve such a client: the cluster port's router closes every other
/// protocol's connection that carries no verified node certificate.
pub fn server_config_with(
    m: &TlsMaterial,
    alpn: &[&[u8]],
    anonymous_allowed: bool,
) -> anyhow::Result<Arc<ServerConfig>> {
    install_ring_provider();
    let provider = ring_provider();
    let roots = Arc::new(cluster_roots(&m.ca_cert_pem)?);
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if anonymous_allowed {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder
        .build()
        .map_err(|e| anyhow!("cannot build the client verifier: {e}; check ca.pem"))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| anyhow!("cannot select TLS 1.3: {e}; this is a bug, please report it"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(server_chain(m)?, own_key(m)?)
        .map_err(|e| {
            anyhow!("the node key does not fit the node certificate: {e}; re-mint both")
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration for cluster connections: TLS 1.3, trusting only the cluster CA,
/// presenting this node's certificate, asking for the `alpn` protocols. Connect with
/// [`cluster_server_name`].
pub fn client_config(m: &TlsMaterial, alpn: &[&[u8]]) -> anyhow::Result<Arc<ClientConfig>> {
    install_ring_provider();
    let mut config = ClientConfig::builder_with_provider(ring_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| anyhow!("cannot select TLS 1.3: {e}; this is a bug, please report it"))?
        .with_root_certificates(cluster_roots(&m.ca_cert_pem)?)
        .with_client_auth_cert(own_chain(m)?, own_key(m)?)
        .map_err(|e| {
            anyhow!("the node key does not fit the node certificate: {e}; re-mint both")
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration for a node that has no certificate yet (the joiner): TLS 1.3, no
/// client certificate, asking for the `alpn` protocols, and accepting the server only if the
/// chain it presents contains a certificate whose SHA-256 is `ca_sha256` (the join token's pin)
/// and its leaf verifies against that certificate for [`cluster_server_name`]. This runs inside
/// the handshake, so nothing is sent to a server that fails it.
pub fn pinned_client_config(
    ca_sha256: [u8; 32],
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<ClientConfig>> {
    install_ring_provider();
    let provider = ring_provider();
    let verifier = PinnedCaVerifier {
        ca_sha256,
        provider: provider.clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| anyhow!("cannot select TLS 1.3: {e}; this is a bug, please report it"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Trusts a server only through a CA pinned by hash (see [`pinned_client_config`]).
#[derive(Debug)]
struct PinnedCaVerifier {
    ca_sha256: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned =
            |c: &&CertificateDer<'_>| Sha256::digest(c.as_ref()).as_slice() == self.ca_sha256;
        let Some(ca) = intermediates.iter().find(pinned) else {
            return Err(rustls::Error::General(
                "the server presented no CA matching the join token's pin".into(),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("the pinned CA is not usable: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| {
                    rustls::Error::General(format!("cannot verify against the pinned CA: {e}"))
                })?;
        let others: Vec<CertificateDer<'_>> =
            intermediates.iter().filter(|c| *c != ca).cloned().collect();
        inner.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The server name clients verify: every member's certificate carries it.
pub fn cluster_server_name() -> ServerName<'static> {
    ServerName::try_from(CLUSTER_SERVER_NAME).expect("a valid DNS name")
}

/// The node id carried in a verified peer's certificate chain (end-entity first), or `None` if
/// the certificate carries no single well-formed `<node-id>.node.hamster` name.
pub fn peer_node_id(conn_peer_certs: &[CertificateDer<'_>]) -> Option<String> {
    let leaf = conn_peer_certs.first()?;
    let names = der::san_dns_names(leaf)?;
    let mut ids = names.into_iter().filter_map(|name| {
        let id = name.strip_suffix(NODE_NAME_SUFFIX)?;
        check_node_id(id).is_ok().then(|| id.to_string())
    });
    let id = ids.next()?;
    // Two identities in one certificate would be ambiguous; trust neither.
    if ids.next().is_some() {
        return None;
    }
    Some(id)
}

/// Installs ring as the process-wide rustls provider if none is installed yet. Harmless when
/// another provider won the race: our configurations name ring explicitly anyway.
pub fn install_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn check_node_id(node_id: &str) -> anyhow::Result<()> {
    let well_formed = node_id.len() == NODE_ID_HEX_DIGITS
        && node_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        bail!("node id {node_id:?} is not {NODE_ID_HEX_DIGITS} lowercase hex digits; take it from node.json");
    }
    Ok(())
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "hamster");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// The CA's parameters, from its common name alone, so that [`mint_node_cert`] can rebuild the
/// issuer from the CA certificate.
fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    // Node certificates are leaves: no intermediate CA may sit under the cluster CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn set_validity(params: &mut CertificateParams, days: u64) -> anyhow::Result<()> {
    let now = wall_now_unix_secs()?;
    let start = now.saturating_sub(CLOCK_SKEW_DAYS * SECONDS_PER_DAY);
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(start);
    params.not_after = params.not_before + Duration::from_secs(days * SECONDS_PER_DAY);
    Ok(())
}

#[allow(
    clippy::disallowed_methods,
    reason = "certificate validity needs wall time; minting is production-only, never simulated"
)]
fn wall_now_unix_secs() -> anyhow::Result<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| anyhow!("the system clock is before 1970; set the clock and retry"))
}

#[allow(
    clippy::disallowed_methods,
    reason = "chain verification checks validity against wall time; production-only"
)]
fn unix_time_now() -> UnixTime {
    UnixTime::now()
}

/// Checks that `cert_pem` chains to `ca_cert_pem` and is usable as a client certificate.
fn verify_chain(ca_cert_pem: &str, cert_pem: &str) -> anyhow::Result<()> {
    let roots = Arc::new(cluster_roots(ca_cert_pem)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, ring_provider())
        .build()
        .map_err(|e| anyhow!("cannot build a verifier from the CA: {e}"))?;
    let leaf = first_cert(cert_pem, "the node certificate")?;
    verifier
        .verify_client_cert(&leaf, &[], unix_time_now())
        .map_err(|e| anyhow!("certificate check failed: {e}"))?;
    Ok(())
}

fn cluster_roots(ca_cert_pem: &str) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(first_cert(ca_cert_pem, "the cluster CA certificate")?)
        .map_err(|e| {
            anyhow!("the cluster CA certificate is not a usable CA: {e}; restore ca.pem")
        })?;
    Ok(roots)
}

fn own_chain(m: &TlsMaterial) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    Ok(vec![first_cert(&m.cert_pem, "the node certificate")?])
}

/// What the cluster port presents: the leaf and then the CA, so that a joiner can find the CA
/// its token pins in the chain.
fn server_chain(m: &TlsMaterial) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let mut chain = own_chain(m)?;
    chain.push(first_cert(&m.ca_cert_pem, "the cluster CA certificate")?);
    Ok(chain)
}

fn own_key(m: &TlsMaterial) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(m.key_pem.as_bytes())
        .map_err(|e| anyhow!("the node key is not a PEM private key ({e}); restore node.key"))
}

fn first_cert(pem: &str, what: &str) -> anyhow::Result<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| anyhow!("{what} holds no PEM certificate; restore it"))?
        .map_err(|e| anyhow!("{what} is not valid PEM ({e}); restore it"))
}

/// Writes `dir/name` crash-safely with `mode` from the first byte: the mode is set when the
/// file is created, so a key is never readable by others even for an instant.
fn write_file(dir: &Path, name: &str, contents: &str, mode: u32) -> anyhow::Result<()> {
    let path = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp"));
    // A temp file left by a crash may have been created with another mode; start afresh.
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot remove stale {}", temp.display()));
        }
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .with_context(|| format!("cannot create {}; check permissions", temp.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}; check the disk", temp.display()))?;
    drop(file);
    fs::rename(&temp, &path)
        .with_context(|| format!("cannot rename into {}; check permissions", path.display()))?;
    Ok(())
}

fn read_file(dir: &Path, name: &str, private: bool) -> anyhow::Result<String> {
    let path = dir.join(name);
    let metadata = match fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            bail!(
                "{} is missing; is this an initialised data dir? run `hamster init`",
                path.display()
            );
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    let mode = metadata.permissions().mode() & 0o777;
    if private && mode & 0o077 != 0 {
        bail!(
            "{} is readable by group or others (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}; check permissions", path.display()))
}

/// Just enough DER to find a certificate's names: rustls hands over a verified peer's raw DER,
/// and the node id and the CA's subject are all this module needs from it, which does not
/// justify an X.509 parser. Every read is bounds-checked and answers `None` on anything
/// unexpected.
mod der {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const OCTET_STRING: u8 = 0x04;
    /// `[0]` constructed: the version field of a TBSCertificate.
    const VERSION: u8 = 0xa0;
    /// `[3]` constructed: the extensions field of a TBSCertificate.
    const EXTENSIONS: u8 = 0xa3;
    /// `[2]` primitive: the dNSName choice of a GeneralName.
    const DNS_NAME: u8 = 0x82;
    /// 2.5.29.17, subjectAltName.
    const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
    /// 2.5.4.3, commonName.
    const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
    /// Lengths of more than four bytes would describe objects over 4 GiB, which no certificate
    /// is; refusing them keeps the length arithmetic in range.
    const LENGTH_BYTES_MAX: usize = 4;

    /// One encoded value: its tag, its content, and the whole encoding including the header.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Tlv<'a> {
        pub tag: u8,
        pub content: &'a [u8],
        pub whole: &'a [u8],
    }

    /// The fields of a certificate this module reads.
    pub struct CertFields<'a> {
        pub issuer: Tlv<'a>,
        pub subject: Tlv<'a>,
        pub extensions: Option<Tlv<'a>>,
    }

    /// Reads one value off the front of `input`, returning it and what follows.
    pub fn next(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
        let (&tag, rest) = input.split_first()?;
        // High tag numbers never occur in the fields read here.
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > LENGTH_BYTES_MAX || rest.len() < count {
                return None;
            }
            let (bytes, rest) = rest.split_at(count);
            let len = bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, rest)
        };
        if rest.len() < len {
            return None;
        }
        let header = input.len() - rest.len();
        let (content, after) = rest.split_at(len);
        Some((
            Tlv {
                tag,
                content,
                whole: &input[..header + len],
            },
            after,
        ))
    }

    /// All values inside a constructed value's content, or `None` if any is malformed.
    pub fn children(mut content: &[u8]) -> Option<Vec<Tlv<'_>>> {
        let mut out = Vec::new();
        while !content.is_empty() {
            let (tlv, rest) = next(content)?;
            out.push(tlv);
            content = rest;
        }
        Some(out)
    }

    /// Finds issuer, subject and extensions in a DER certificate.
    pub fn cert_fields(cert: &[u8]) -> Option<CertFields<'_>> {
        let (outer, _) = next(cert).filter(|(t, _)| t.tag == SEQUENCE)?;
        let (tbs, _) = next(outer.content).filter(|(t, _)| t.tag == SEQUENCE)?;
        let fields = children(tbs.content)?;
        let skip = usize::from(fields.first()?.tag == VERSION);
        // serialNumber, signature, issuer, validity, subject, then optional fields.
        let issuer = *fields.get(skip + 2).filter(|t| t.tag == SEQUENCE)?;
        let subject = *fields.get(skip + 4).filter(|t| t.tag == SEQUENCE)?;
        let extensions = fields.iter().copied().find(|t| t.tag == EXTENSIONS);
        Some(CertFields {
            issuer,
            subject,
            extensions,
        })
    }

    /// The DNS names in a certificate's subjectAltName extension.
    pub fn san_dns_names(cert: &[u8]) -> Option<Vec<&str>> {
        let extensions = cert_fields(cert)?.extensions?;
        let (list, _) = next(extensions.content).filter(|(t, _)| t.tag == SEQUENCE)?;
        for extension in children(list.content)? {
            let parts = children(extension.content)?;
            let is_san = parts
                .first()
                .is_some_and(|oid| oid.tag == OID && oid.content == OID_SAN);
            if !is_san {
                continue;
            }
            // The value is the last part; a criticality flag may sit between.
            let value = parts.last().filter(|t| t.tag == OCTET_STRING)?;
            let (names, _) = next(value.content).filter(|(t, _)| t.tag == SEQUENCE)?;
            let dns = children(names.content)?
                .into_iter()
                .filter(|name| name.tag == DNS_NAME)
                .map(|name| std::str::from_utf8(name.content).ok())
                .collect::<Option<Vec<_>>>()?;
            return Some(dns);
        }
        Some(Vec::new())
    }

    /// The commonName in an encoded Name's content.
    pub fn common_name(name: &[u8]) -> Option<&str> {
        for set in children(name)? {
            if set.tag != SET {
                return None;
            }
            for attribute in children(set.content)? {
                let parts = children(attribute.content)?;
                if let [oid, value] = parts.as_slice() {
                    if oid.tag == OID && oid.content == OID_CN {
                        return std::str::from_utf8(value.content).ok();
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "0123456789abcdef";

    /// The DER reader finds the names rcgen wrote, in both the CA and a leaf.
    #[test]
    fn der_reader_finds_names() {
        let ca = mint_cluster_ca("c1").unwrap();
        let (cert_pem, _) = mint_node_cert(&ca, NODE).unwrap();
        let leaf = first_cert(&cert_pem, "leaf").unwrap();
        let names = der::san_dns_names(&leaf).unwrap();
        assert_eq!(
            names,
            vec!["0123456789abcdef.node.hamster", "cluster.hamster"]
        );
        let ca_der = first_cert(&ca.cert_pem, "ca").unwrap();
        let fields = der::cert_fields(&ca_der).unwrap();
        assert_eq!(
            der::common_name(fields.subject.content),
            Some("hamster cluster c1")
        );
        assert_eq!(
            der::san_dns_names(&ca_der),
            Some(Vec::new()),
            "the CA has no SAN"
        );
    }

    /// Truncated or corrupted DER never panics and never yields an identity.
    #[test]
    fn der_reader_refuses_garbage() {
        let ca = mint_cluster_ca("c1").unwrap();
        let (cert_pem, _) = mint_node_cert(&ca, NODE).unwrap();
        let leaf = first_cert(&cert_pem, "leaf").unwrap().to_vec();
        for cut in 0..leaf.len() {
            let _ = peer_node_id(&[CertificateDer::from(leaf[..cut].to_vec())]);
        }
        for i in 0..leaf.len() {
            let mut bent = leaf.clone();
            bent[i] ^= 0xff;
            let _ = peer_node_id(&[CertificateDer::from(bent)]);
        }
        assert_eq!(peer_node_id(&[]), None);
        assert_eq!(der::next(&[0x30, 0x85, 1, 1, 1, 1, 1]), None);
        assert_eq!(der::next(&[0x30, 0x80]), None);
    }

    /// Node ids are exactly 16 lowercase hex digits.
    #[test]
    fn node_id_format() {
        assert!(check_node_id(NODE).is_ok());
        for bad in [
            "",
            "0123456789ABCDEF",
            "0123456789abcde",
            "0123456789abcdefa",
            "g123456789abcdef",
        ] {
            assert!(check_node_id(bad).is_err(), "{bad}");
        }
    }

    /// The key never shows in debug output.
    #[test]
    fn debug_hides_keys() {
        let ca = mint_cluster_ca("c1").unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    }
}
