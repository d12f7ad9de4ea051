//! [`DnsDiscovery`]: the A/AAAA records of a name, re-resolved at every poll.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Discovery, DiscoveryError, MAX_DISCOVERED_ADDRS};

/// Resolves a host name to socket addresses. [`SystemResolver`] is the real one; tests
/// inject their own into [`DnsDiscovery::with_resolver`] or
/// [`FileDiscovery::with_resolver`](crate::FileDiscovery::with_resolver).
#[async_trait]
pub trait DnsResolver: Send + Sync + 'static {
    /// The addresses of `host` (a name or an IP literal), each with `port`.
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>>;
}

/// The operating system's resolver, through [`tokio::net::lookup_host`] (`getaddrinfo` on a
/// blocking thread: `/etc/hosts`, then DNS, as configured in `/etc/nsswitch.conf` and
/// `/etc/resolv.conf`). A lookup the node stops waiting for (the discovery timeout) still
/// finishes on its blocking thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl DnsResolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        let addrs = tokio::net::lookup_host((host, port)).await?;
        Ok(addrs.take(MAX_DISCOVERED_ADDRS).collect())
    }
}

/// The A/AAAA records of a name, with a port, resolved again at every poll: the addresses
/// follow the name as it changes.
///
/// This is how a Kubernetes headless Service (`clusterIP: None`) lists its pods: the name
/// `<service>.<namespace>.svc.cluster.local` resolves to the IPs of the Service's ready pods
/// (with `publishNotReadyAddresses: true`, of all its pods, which lets the first pods find each
/// other before they are ready).
///
/// ```
/// use datacake_node::{ConnectionConfig, DatacakeNodeBuilder, DnsDiscovery};
///
/// # let config = ConnectionConfig::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap(), Vec::<String>::new());
/// let pods = DnsDiscovery::new("datacake.prod.svc.cluster.local", 7000);
/// let builder = DatacakeNodeBuilder::new(1, config).with_discovery(pods);
/// ```
///
/// A name that does not resolve (for a headless Service: no pod is listed yet) is a
/// [`DiscoveryError::Resolve`]; the node keeps the last set it resolved.
pub struct DnsDiscovery {
    host: String,
    port: u16,
    name: String,
    resolver: Arc<dyn DnsResolver>,
}

impl fmt::Debug for DnsDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsDiscovery")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl DnsDiscovery {
    /// The addresses of `host` with `port`, resolved by the [`SystemResolver`].
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self::with_resolver(host, port, SystemResolver)
    }

    /// The addresses of `host` with `port`, resolved by `resolver`.
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use datacake_node::{DnsDiscovery, DnsResolver};
    ///
    /// /// Always answers with one loopback address.
    /// struct Loopback;
    ///
    /// #[async_trait::async_trait]
    /// impl DnsResolver for Loopback {
    ///     async fn resolve(&self, _host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    ///         Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    ///     }
    /// }
    ///
    /// let source = DnsDiscovery::with_resolver("anything", 7000, Loopback);
    /// ```
    pub fn with_resolver(host: impl Into<String>, port: u16, resolver: impl DnsResolver) -> Self {
        let host = host.into();
        Self {
            name: format!("dns {host}:{port}"),
            host,
            port,
            resolver: Arc::new(resolver),
        }
    }
}

#[async_trait]
impl Discovery for DnsDiscovery {
    fn name(&self) -> &str {
        &self.name
    }

    async fn discover(&self) -> Result<Vec<SocketAddr>, DiscoveryError> {
        self.resolver
            .resolve(&self.host, self.port)
            .await
            .map_err(|source| DiscoveryError::Resolve {
                host: self.host.clone(),
                port: self.port,
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn localhost_resolves_to_loopback() {
        let addrs = DnsDiscovery::new("localhost", 7000)
            .discover()
            .await
            .expect("localhost resolves");
        assert!(!addrs.is_empty());
        for addr in addrs {
            assert!(addr.ip().is_loopback(), "{addr}");
            assert_eq!(addr.port(), 7000);
        }
    }

    /// Fails every lookup.
    struct Down;

    #[async_trait]
    impl DnsResolver for Down {
        async fn resolve(&self, _host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
            Err(io::Error::other("no server"))
        }
    }

    #[tokio::test]
    async fn a_failed_lookup_is_a_typed_error_naming_the_host() {
        let source = DnsDiscovery::with_resolver("db.prod.svc.cluster.local", 7000, Down);
        assert_eq!(source.name(), "dns db.prod.svc.cluster.local:7000");
        let error = source.discover().await.expect_err("the resolver is down");
        assert!(
            matches!(&error, DiscoveryError::Resolve { host, port: 7000, .. } if host == "db.prod.svc.cluster.local"),
            "{error:?}"
        );
    }
}
