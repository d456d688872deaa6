//! Where the daemon may fetch archives from, and for how long: the rules every
//! outgoing download follows (recovery from an `http(s)://` URL, a partial pull
//! from a peer, an `s3://` location).
//!
//! The daemon runs as root and fetches what a client names, so without rules it
//! is a confused deputy: it would reach the cloud metadata service, loopback-only
//! admin endpoints and private networks on the client's behalf. The rules here are
//! checked on the addresses a connection is really made to: host names are
//! resolved by [`GuardedResolver`], which drops every refused address before the
//! connector sees it (no gap between the check and the connect); an IP literal in
//! a URL (which is never resolved) is checked by [`FetchPolicy::check_url`] before
//! each request, the first one and every redirect.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// Networks refused unless the configuration says otherwise: link-local, where
/// cloud metadata services (169.254.169.254, fd00:ec2::254 aside) answer.
pub const DEFAULT_DENY: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];
/// How long a server may take to send its response headers.
pub const DEFAULT_HEADER_SECS: f64 = 30.0;
/// How long a whole download (or a peer pull up to its apply) may take.
pub const DEFAULT_TOTAL_SECS: f64 = 86_400.0;
/// The largest JSON answer read from a peer (its root document, collection info,
/// an error body).
pub const DEFAULT_JSON_MAX_BYTES: usize = 1 << 20;

/// One allow or deny entry: a network (`10.0.0.0/8`, `::1`), or a host name
/// (`backups.example.com`, or `*.example.com` for every name under it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Net(IpNet),
    Host(String),
}

impl Rule {
    pub fn parse(text: &str) -> Result<Rule, String> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(Rule::Net(net.trunc()));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Rule::Net(IpNet::from(ip)));
        }
        let name = text.trim_end_matches('.').to_ascii_lowercase();
        let bare = name.strip_prefix("*.").unwrap_or(&name);
        let valid = !bare.is_empty()
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(format!(
                "{text:?} is neither a network (10.0.0.0/8, ::1) nor a host name (example.com, *.example.com)"
            ));
        }
        Ok(Rule::Host(name))
    }

    fn matches_host(&self, host: &str) -> bool {
        match self {
            Rule::Host(pattern) => match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.ends_with('.')),
                None => host == pattern,
            },
            Rule::Net(_) => false,
        }
    }

    fn matches_ip(&self, ip: IpAddr) -> bool {
        matches!(self, Rule::Net(net) if net.contains(&ip))
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Net(net) => write!(f, "{net}"),
            Rule::Host(host) => f.write_str(host),
        }
    }
}

/// The configured rules and deadlines (`storage.fetch_*`).
#[derive(Debug, Clone, PartialEq)]
pub struct FetchPolicy {
    /// When not empty, only these hosts and networks are fetched from.
    pub allow: Vec<Rule>,
    /// Never fetched from, whatever `allow` says.
    pub deny: Vec<Rule>,
    /// Until a server's response headers arrive.
    pub header_timeout: Duration,
    /// For a whole download, or a pull up to its apply.
    pub total_timeout: Duration,
    /// The largest JSON answer read from a peer.
    pub json_max_bytes: usize,
    /// `bucket` or `bucket/prefix` entries `s3://` locations may name with the
    /// daemon's own credentials, besides the configured bucket and prefix.
    pub s3_buckets: Vec<String>,
}

impl Default for FetchPolicy {
    fn default() -> Self {
        FetchPolicy {
            allow: Vec::new(),
            deny: DEFAULT_DENY
                .iter()
                .map(|r| Rule::parse(r).expect("the default rules parse"))
                .collect(),
            header_timeout: Duration::from_secs_f64(DEFAULT_HEADER_SECS),
            total_timeout: Duration::from_secs_f64(DEFAULT_TOTAL_SECS),
            json_max_bytes: DEFAULT_JSON_MAX_BYTES,
            s3_buckets: Vec::new(),
        }
    }
}

/// A destination the rules refuse; its text names the rule and the key to change.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl FetchPolicy {
    /// Why `host` is refused by name, if it is.
    fn host_refused(&self, host: &str) -> Option<Refused> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.deny
            .iter()
            .find(|r| r.matches_host(&host))
            .map(|rule| {
                Refused(format!(
                    "fetching from {host} is refused: it matches {rule} in storage.fetch_deny"
                ))
            })
    }

    /// Why a connection to `ip` (an address of `host`) is refused, if it is.
    pub fn address_refused(&self, host: &str, ip: IpAddr) -> Option<Refused> {
        let ip = ip.to_canonical();
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some(rule) = self.deny.iter().find(|r| r.matches_ip(ip)) {
            return Some(Refused(format!(
                "fetching from {host} ({ip}) is refused: {ip} is in {rule}, listed in storage.fetch_deny"
            )));
        }
        let allowed = self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|r| r.matches_host(&host) || r.matches_ip(ip));
        if !allowed {
            return Some(Refused(format!(
                "fetching from {host} ({ip}) is refused: neither is listed in storage.fetch_allow"
            )));
        }
        None
    }

    /// Check a URL about to be requested (the first or a redirect's): its scheme,
    /// its host by name, and an IP literal (which is never resolved) by address.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!(
                "fetching from a {}:// URL is refused: only http:// and https://",
                url.scheme()
            )));
        }
        match url.host() {
            Some(url::Host::Domain(name)) => self.host_refused(name).map_or(Ok(()), Err),
            Some(url::Host::Ipv4(ip)) => {
                let text = ip.to_string();
                self.address_refused(&text, IpAddr::V4(ip))
                    .map_or(Ok(()), Err)
            }
            Some(url::Host::Ipv6(ip)) => {
                let text = ip.to_string();
                self.address_refused(&text, IpAddr::V6(ip))
                    .map_or(Ok(()), Err)
            }
            None => Err(Refused("the URL names no host".into())),
        }
    }

    /// An HTTP client that connects only where these rules allow: host names go
    /// through [`GuardedResolver`]; no proxy (it would resolve names itself);
    /// redirects are not followed (callers follow them by hand, checking each).
    pub fn client(self: &Arc<Self>) -> reqwest::Result<reqwest::Client> {
        self.client_with(|builder| builder)
    }

    /// [`Self::client`] with more settings of the caller's.
    pub fn client_with(
        self: &Arc<Self>,
        more: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> reqwest::Result<reqwest::Client> {
        let builder = reqwest::Client::builder()
            .user_agent(concat!("snapfs/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.header_timeout.min(Duration::from_secs(30)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver(self.clone())));
        more(builder).build()
    }
}

/// Resolves host names and keeps only the addresses the rules allow; when none
/// is left the connection fails with the reason (a [`Refused`] in its causes).
pub struct GuardedResolver(pub Arc<FetchPolicy>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            if let Some(refused) = policy.host_refused(&host) {
                return Err(Box::new(refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match policy.address_refused(&host, addr.ip()) {
                    Some(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                    None => true,
                })
                .collect();
            if kept.is_empty() {
                let why = refusal.unwrap_or_else(|| Refused(format!("{host} has no address")));
                return Err(Box::new(why) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The rules' refusal among an error's causes (a failed connect carries it).
pub fn refusal_in(err: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = at {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        at = e.source();
    }
    None
}

/// Parse a list of rules (for the configuration).
pub fn parse_rules(key: &str, items: &[String]) -> Result<Vec<Rule>, String> {
    items
        .iter()
        .map(|item| Rule::parse(item).map_err(|e| format!("{key}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> reqwest::Url {
        reqwest::Url::parse(text).unwrap()
    }

    #[test]
    fn link_local_is_refused_by_default_and_loopback_allowed() {
        let policy = FetchPolicy::default();
        for refused in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[fe80::1]/x",
            "http://[::ffff:169.254.169.254]/x",
        ] {
            let err = policy.check_url(&url(refused)).unwrap_err();
            assert!(err.0.contains("storage.fetch_deny"), "{refused}: {err}");
        }
        for allowed in [
            "http://127.0.0.1:1/x",
            "http://[::1]/x",
            "https://example.com/x",
        ] {
            policy.check_url(&url(allowed)).unwrap();
        }
        assert!(policy.check_url(&url("ftp://127.0.0.1/x")).is_err());
    }

    #[test]
    fn allow_lists_narrow_and_deny_wins() {
        let policy = FetchPolicy {
            allow: parse_rules("allow", &["10.0.0.0/8".into(), "*.example.com".into()]).unwrap(),
            deny: parse_rules("deny", &["10.1.0.0/16".into(), "bad.example.com".into()]).unwrap(),
            ..FetchPolicy::default()
        };
        assert!(policy.check_url(&url("http://10.2.3.4/x")).is_ok());
        assert!(policy.check_url(&url("http://10.1.3.4/x")).is_err());
        assert!(policy.check_url(&url("http://127.0.0.1/x")).is_err());
        assert!(policy.check_url(&url("http://bad.example.com/x")).is_err());
        // By name the allow list is checked on the resolved addresses.
        assert!(
            policy
                .address_refused("a.example.com", "192.0.2.1".parse().unwrap())
                .is_none()
        );
        assert!(
            policy
                .address_refused("example.com", "192.0.2.1".parse().unwrap())
                .is_some()
        );
        assert!(
            policy
                .address_refused("other.org", "10.9.9.9".parse().unwrap())
                .is_none()
        );
        assert!(Rule::parse("not a host!").is_err());
    }
}
