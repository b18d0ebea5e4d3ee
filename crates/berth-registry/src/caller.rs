//! Who asks: every write and every pull names its caller, so what it causes
//! (events, audit lines, metrics) can say who did what, from where.

use std::net::IpAddr;

/// The caller of a registry operation, as the edge identified it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The authenticated name; None for an anonymous caller or with no
    /// authentication configured.
    pub identity: Option<String>,
    /// The request's id (`X-Request-Id` of the answer); empty for work the
    /// registry does on its own.
    pub request_id: String,
    /// The client's address: the peer, or the address a trusted proxy
    /// forwarded (`http.trustedproxies`).
    pub remote_addr: Option<IpAddr>,
    /// The `Host` the request was sent to.
    pub host: Option<String>,
    pub user_agent: Option<String>,
}

impl Caller {
    /// The registry itself, or a maintenance command (`berth repo delete`),
    /// named for what it is.
    pub fn internal(what: &str) -> Caller {
        Caller { identity: Some(what.to_owned()), ..Caller::default() }
    }

    /// The name to show: the identity, or `anonymous`.
    pub fn name(&self) -> &str {
        self.identity.as_deref().unwrap_or("anonymous")
    }
}

impl Caller {
    /// Records what the caller did (at debug level, target `berth::activity`):
    /// the seam where events and audit lines attach.
    pub(crate) fn did(&self, action: &'static str, repo: &berth_types::RepoName, target: &dyn std::fmt::Display) {
        tracing::debug!(
            target: "berth::activity",
            action,
            repository = %repo,
            target = %target,
            user = self.name(),
            request_id = %self.request_id,
            remote = ?self.remote_addr,
            host = ?self.host,
            useragent = ?self.user_agent,
            "done"
        );
    }
}
