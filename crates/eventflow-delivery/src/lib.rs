//! Webhook delivery: the dispatcher that makes the attempts, the retry
//! policy, the circuit breaker, the HTTP client and the SSRF guard.
//!
//! # Layout
//! - [`dispatcher`]: takes deliveries from the store, attempts them, records the outcome.
//! - [`http`]: the client (rustls, no redirects, the connect-time SSRF check).
//! - [`policy`]: the retry schedule with jitter, `Retry-After`, giving up at 72 h.
//! - [`ssrf`]: which IP addresses are off limits, and why.
//! - [`verifier`]: endpoint verification by challenge (a FHIR subscription's
//!   handshake).
//! - [`fhir`]: a FHIR subscription's handshake and notification Bundles.
//! - [`heartbeat`]: a FHIR subscription's heartbeats.
//! - [`EndpointUrl`]: a parsed, checked endpoint URL.

pub mod dispatcher;
pub mod fhir;
pub mod heartbeat;
pub mod http;
pub mod policy;
pub mod ssrf;
pub mod verifier;

pub use policy::{Next, RetryPolicy, parse_retry_after};
pub use ssrf::{Forbidden, forbidden};

/// Whether private addresses and plain `http://` are allowed: the one
/// guard of every outbound request a tenant can aim (a webhook endpoint, a
/// workflow's `http` step, a claim). [`UrlPolicy::check`] refuses a URL
/// before any request (scheme, `https://` in production, credentials, an
/// IP literal or `localhost` that is off limits); the client of
/// [`UrlPolicy::client`] refuses every resolved address that is, when it
/// connects ([`http::refusal`] tells that refusal from a network error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
        "points at a {0} address, which outbound requests may not use unless allow_private_endpoints is on"
    )]
    Forbidden(Forbidden),
}

impl UrlPolicy {
    /// Checks a URL before a request to it; the error names the rule, never
    /// the URL.
    pub fn check(&self, s: &str) -> Result<url::Url, UrlError> {
        EndpointUrl::parse(s, *self).map(|u| u.0)
    }

    /// The client for requests to checked URLs: no redirects, no proxies,
    /// and, unless private addresses are allowed, every resolved address
    /// checked when it connects.
    pub fn client(&self, timeout: std::time::Duration) -> reqwest::Client {
        http::client(self.allow_private, timeout)
    }
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
        url.host().ok_or(UrlError::NoHost)?;
        if !policy.allow_private
            && let Some(reason) = http::literal_reason(&url)
        {
            return Err(UrlError::Forbidden(reason));
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
