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

/// Why the guard refused to connect: every address the host resolves to
/// is off limits. Found in a request error's sources by [`refusal`].
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

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
                    .map(|f| {
                        format!(
                            "the host resolves to a {f} address, which outbound requests may not use unless allow_private_endpoints is on"
                        )
                    })
                    .unwrap_or_else(|| "the host has no address".into());
                return Err(Box::new(Refused(why)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The guard's reason when a request failed because every address of its
/// host is off limits (nothing was sent; nothing tells whether anything
/// listens there).
pub fn refusal(e: &reqwest::Error) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return Some(r.0.clone());
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
pub fn literal_forbidden(url: &reqwest::Url) -> Option<String> {
    literal_reason(url).map(|f| {
        format!(
            "the URL names a {f} address, which outbound requests may not use unless allow_private_endpoints is on"
        )
    })
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
