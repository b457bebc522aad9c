//! The HTTP client deliveries go out on: rustls (ring), connection reuse, no
//! proxies, no redirects, a request timeout, and — unless private endpoints
//! are allowed — a resolver that refuses every forbidden address at connect
//! time, so a name that later resolves to `127.0.0.1` or the metadata
//! address (DNS rebinding) is still refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::ssrf;

/// Installs the process's TLS crypto provider (ring). Every reqwest client
/// of the workspace needs it; calling it again does nothing.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why an outbound request was refused before anything was sent. The
/// message names the rule, never the URL (it may carry a token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The URL names an IP address (or `localhost`) that is off limits.
    #[error(
        "the URL names a {0} address, which outbound requests may not use unless allow_private_endpoints is on"
    )]
    Named(ssrf::Forbidden),
    /// Every address the host resolves to is off limits.
    #[error(
        "the host resolves to a {0} address, which outbound requests may not use unless allow_private_endpoints is on"
    )]
    Resolved(ssrf::Forbidden),
    /// The host resolves to no address at all.
    #[error("the host has no address")]
    NoAddress,
}

/// Resolves names and drops every address the SSRF guard forbids.
#[derive(Debug, Clone, Copy)]
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| ssrf::forbidden(a.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                let why = found
                    .first()
                    .and_then(|a| ssrf::forbidden(a.ip()))
                    .map_or(Refusal::NoAddress, Refusal::Resolved);
                return Err(Box::new(why) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The guard's reason when a request failed because every address of its
/// host is off limits (nothing was sent; nothing tells whether anything
/// listens there).
pub fn refusal(e: &reqwest::Error) -> Option<Refusal> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refusal>() {
            return Some(*r);
        }
        source = s.source();
    }
    None
}

/// Why a URL's host is off limits as written: an IP literal of a forbidden
/// range, or `localhost` (names are checked when resolved).
pub fn literal_reason(url: &url::Url) -> Option<ssrf::Forbidden> {
    let ip: IpAddr = match url.host()? {
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.');
            return (d.eq_ignore_ascii_case("localhost")
                || d.to_ascii_lowercase().ends_with(".localhost"))
            .then_some(ssrf::Forbidden::Loopback);
        }
    };
    ssrf::forbidden(ip)
}

/// Why a URL's literal IP address is refused (names are checked when resolved).
pub fn literal_forbidden(url: &reqwest::Url) -> Option<Refusal> {
    literal_reason(url).map(Refusal::Named)
}

/// The delivery client.
pub fn client(allow_private: bool, timeout: Duration) -> reqwest::Client {
    install_crypto();
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64)
        .user_agent(concat!("eventflow/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(GuardedResolver));
    }
    builder.build().unwrap_or_else(|_| reqwest::Client::new())
}
