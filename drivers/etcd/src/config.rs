//! How to reach etcd, and the fleet's settings.

use std::fmt;
use std::fs;
use std::path::Path;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::error::EtcdError;
use crate::layout::DEFAULT_PREFIX;
use crate::seal::SealingKey;

/// TLS to etcd: the CA that signs etcd's server certificates, and optionally a client
/// certificate and key (etcd's `--client-cert-auth`). The endpoints must be `https://`.
#[derive(Clone)]
pub struct EtcdTls {
    pub(crate) ca_pem: Vec<u8>,
    pub(crate) client: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    pub(crate) domain_name: Option<String>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.client.is_some())
            .field("domain_name", &self.domain_name)
            .finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, EtcdError> {
    fs::read(path).map_err(|e| EtcdError::File { what, path: path.to_owned(), reason: e.to_string() })
}

impl EtcdTls {
    /// Trusts the CA certificates in `ca_pem` (PEM) for etcd's server certificates.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        Self { ca_pem: ca_pem.into(), client: None, domain_name: None }
    }

    /// Reads the CA certificate file (PEM).
    ///
    /// # Errors
    ///
    /// [`EtcdError::File`] if the file cannot be read.
    pub fn from_ca_file(ca: impl AsRef<Path>) -> Result<Self, EtcdError> {
        Ok(Self::new(read("etcd CA certificate", ca.as_ref())?))
    }

    /// Presents a client certificate (PEM, with its chain) and its private key (PEM).
    pub fn with_client_identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: Zeroizing<Vec<u8>>) -> Self {
        self.client = Some((cert_pem.into(), key_pem));
        self
    }

    /// Reads the client certificate and key files (PEM).
    ///
    /// # Errors
    ///
    /// [`EtcdError::File`] if a file cannot be read.
    pub fn with_client_identity_files(self, cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, EtcdError> {
        let cert = read("etcd client certificate", cert.as_ref())?;
        let key = Zeroizing::new(read("etcd client key", key.as_ref())?);
        Ok(self.with_client_identity(cert, key))
    }

    /// Checks etcd's certificate against this name instead of the endpoint's host.
    pub fn with_domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }
}

/// Everything [`crate::EtcdStore::connect`] needs.
#[derive(Clone)]
pub struct EtcdConfig {
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) sealing_key: SealingKey,
    pub(crate) tls: Option<EtcdTls>,
    pub(crate) user: Option<(String, Zeroizing<String>)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) expiry_grace: Duration,
    pub(crate) runtime_threads: usize,
    pub(crate) existing_fleet: bool,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("sealing_key", &self.sealing_key)
            .field("tls", &self.tls)
            .field("user", &self.user.as_ref().map(|(name, _)| name))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_attempts", &self.max_attempts)
            .field("expiry_grace", &self.expiry_grace)
            .field("runtime_threads", &self.runtime_threads)
            .field("existing_fleet", &self.existing_fleet)
            .finish()
    }
}

impl EtcdConfig {
    /// The store at these endpoints (`http://host:port` or `https://host:port`), sealing
    /// values with `sealing_key`, under the prefix `/boarding/default/`.
    pub fn new<E: Into<String>>(endpoints: impl IntoIterator<Item = E>, sealing_key: SealingKey) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_owned(),
            sealing_key,
            tls: None,
            user: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(10),
            max_attempts: 1024,
            expiry_grace: Duration::from_secs(3600),
            runtime_threads: 2,
            existing_fleet: false,
        }
    }

    /// The fleet's key prefix (a `/` is appended if missing). One etcd serves several
    /// fleets under prefixes that are not prefixes of one another, such as
    /// `/boarding/fleet-a/` and `/boarding/fleet-b/`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// TLS to etcd (the endpoints must be `https://`).
    pub fn with_tls(mut self, tls: EtcdTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// etcd user and password authentication.
    pub fn with_user(mut self, name: impl Into<String>, password: Zeroizing<String>) -> Self {
        self.user = Some((name.into(), password));
        self
    }

    /// How long [`crate::EtcdStore::connect`] waits for etcd before failing (default 5 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The deadline of each etcd request (default 3 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The deadline of one store operation, retries included (default 10 s).
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Most transaction attempts for one operation before it fails with
    /// [`EtcdError::Contention`] (default 1,024, so that in practice the operation
    /// deadline bounds a contended redemption: a join that waits its turn is slow, not
    /// refused). Only writers of one key compete: joins with one limited token (its use
    /// count is in its record), or a confirmation racing a retry of the same client.
    /// Joins with an unlimited token do not.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long an expiring token's record stays in etcd after its expiry before its
    /// lease deletes it (default 1 hour). Expiry itself is decided by the storage rule
    /// at the token's `expires_at`; the lease only clears expired records away, so the
    /// grace absorbs clock differences between the replicas and etcd and keeps recently
    /// expired tokens visible in listings.
    pub fn with_expiry_grace(mut self, grace: Duration) -> Self {
        self.expiry_grace = grace;
        self
    }

    /// Threads of the store's own tokio runtime, which carries the etcd client (default 2).
    pub fn with_runtime_threads(mut self, threads: usize) -> Self {
        self.runtime_threads = threads.max(1);
        self
    }

    /// Opens only a fleet that exists already: [`crate::EtcdStore::connect`] then fails
    /// with [`EtcdError::NoFleet`] instead of starting a new fleet under the prefix (for
    /// operator tools, so that a mistyped prefix is an error rather than an empty fleet).
    pub fn with_existing_fleet(mut self) -> Self {
        self.existing_fleet = true;
        self
    }

    /// The endpoints, comma-separated (for messages).
    pub fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }
}
