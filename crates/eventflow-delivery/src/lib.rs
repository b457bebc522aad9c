//! Webhook delivery: the dispatcher that makes the attempts, the retry
//! policy, the circuit breaker, the HTTP client and the SSRF guard.
//!
//! # Layout
//! - [`dispatcher`]: takes deliveries from the store, attempts them, records the outcome.
//! - [`http`]: the client (rustls, no redirects, the connect-time SSRF check).
//! - [`policy`]: the retry schedule with jitter, `Retry-After`, giving up at 72 h.
//! - [`ssrf`]: which IP addresses are off limits, and why.
//! - [`EndpointUrl`]: a parsed, checked endpoint URL.

pub mod dispatcher;
pub mod http;
pub mod policy;
pub mod ssrf;

pub use policy::{Next, RetryPolicy, parse_retry_after};
pub use ssrf::{Forbidden, forbidden};

/// Whether private addresses and plain `http://` are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlPolicy {
    /// `allow_private_endpoints`: on in the default local configuration.
    pub allow_private: bool,
    /// `--production`: only `https://`.
    pub https_only: bool,
}

/// An endpoint URL that passed [`EndpointUrl::parse`]. Host names are
/// checked again on the resolved address when a delivery connects (a name
/// can resolve elsewhere later: DNS rebinding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(url::Url);

/// Why a URL was refused. The message names the rule, never the URL (it may
/// carry a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("must be an absolute http:// or https:// URL")]
    NotHttp,
    #[error("must use https:// in production")]
    NotHttps,
    #[error("must name a host")]
    NoHost,
    #[error("must not carry a user name or password; send credentials in headers")]
    Credentials,
    #[error("must be at most 2000 characters")]
    TooLong,
    #[error(
        "points at a {0} address, which endpoints may not use unless allow_private_endpoints is on"
    )]
    Forbidden(Forbidden),
}

impl EndpointUrl {
    pub fn parse(s: &str, policy: UrlPolicy) -> Result<EndpointUrl, UrlError> {
        if s.len() > 2000 {
            return Err(UrlError::TooLong);
        }
        let url = url::Url::parse(s).map_err(|_| UrlError::NotHttp)?;
        match url.scheme() {
            "https" => {}
            "http" if policy.https_only => return Err(UrlError::NotHttps),
            "http" => {}
            _ => return Err(UrlError::NotHttp),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        let host = url.host().ok_or(UrlError::NoHost)?;
        if !policy.allow_private {
            let ip = match host {
                url::Host::Ipv4(ip) => Some(std::net::IpAddr::V4(ip)),
                url::Host::Ipv6(ip) => Some(std::net::IpAddr::V6(ip)),
                url::Host::Domain(d)
                    if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") =>
                {
                    return Err(UrlError::Forbidden(Forbidden::Loopback));
                }
                url::Host::Domain(_) => None,
            };
            if let Some(reason) = ip.and_then(forbidden) {
                return Err(UrlError::Forbidden(reason));
            }
        }
        Ok(EndpointUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: UrlPolicy = UrlPolicy {
        allow_private: true,
        https_only: false,
    };
    const PRODUCTION: UrlPolicy = UrlPolicy {
        allow_private: false,
        https_only: true,
    };

    #[test]
    fn local_configuration_accepts_loopback_receivers() {
        assert!(EndpointUrl::parse("http://127.0.0.1:9000/hook", LOCAL).is_ok());
        assert!(EndpointUrl::parse("http://localhost/hook", LOCAL).is_ok());
    }

    #[test]
    fn production_refuses_http_private_addresses_and_credentials() {
        let refuse = |u: &str| EndpointUrl::parse(u, PRODUCTION).unwrap_err();
        assert_eq!(refuse("http://example.com/hook"), UrlError::NotHttps);
        assert_eq!(
            refuse("https://127.0.0.1/"),
            UrlError::Forbidden(Forbidden::Loopback)
        );
        assert_eq!(
            refuse("https://localhost/"),
            UrlError::Forbidden(Forbidden::Loopback)
        );
        assert_eq!(
            refuse("https://10.1.2.3/"),
            UrlError::Forbidden(Forbidden::Private)
        );
        assert_eq!(
            refuse("https://169.254.169.254/latest/meta-data"),
            UrlError::Forbidden(Forbidden::Metadata)
        );
        assert_eq!(
            refuse("https://[::1]/"),
            UrlError::Forbidden(Forbidden::Loopback)
        );
        assert_eq!(
            refuse("https://[::ffff:192.168.1.1]/"),
            UrlError::Forbidden(Forbidden::Private)
        );
        assert_eq!(
            refuse("https://user:pw@example.com/"),
            UrlError::Credentials
        );
        assert_eq!(refuse("ftp://example.com/"), UrlError::NotHttp);
        assert_eq!(refuse("not a url"), UrlError::NotHttp);
        // Decimal and hex spellings of 127.0.0.1 are normalised by the parser.
        assert_eq!(
            refuse("https://2130706433/"),
            UrlError::Forbidden(Forbidden::Loopback)
        );
        assert_eq!(
            refuse("https://0x7f.1/"),
            UrlError::Forbidden(Forbidden::Loopback)
        );
        assert!(EndpointUrl::parse("https://hooks.example.com/clinic?token=x", PRODUCTION).is_ok());
    }

    #[test]
    fn errors_never_repeat_the_url() {
        let e = EndpointUrl::parse("https://user:s3cret@example.com/", PRODUCTION).unwrap_err();
        assert!(!e.to_string().contains("s3cret"));
    }
}
