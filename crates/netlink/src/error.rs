use std::io;

/// Why a namespace or link operation failed; every variant names what it
/// was working on.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("namespace {namespace}: {what}: {source}")]
    Namespace {
        namespace: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("namespace {namespace}: {what}: {message}")]
    Request {
        namespace: String,
        what: String,
        message: String,
    },
    #[error("namespace {namespace}: no link named {link}")]
    NoSuchLink { namespace: String, link: String },
    /// The kernel did not answer within the caller's deadline.
    #[error("namespace {namespace}: {what}: no answer from the kernel within {} s", after.as_secs_f64())]
    Timeout {
        namespace: String,
        what: String,
        after: std::time::Duration,
    },
}

impl NetlinkError {
    pub(crate) fn namespace(namespace: &str, what: &'static str, source: io::Error) -> Self {
        NetlinkError::Namespace {
            namespace: namespace.to_string(),
            what,
            source,
        }
    }

    pub(crate) fn request(
        namespace: &str,
        what: impl Into<String>,
        error: rtnetlink::Error,
    ) -> Self {
        let message = match &error {
            rtnetlink::Error::NetlinkError(e) => match e.code {
                Some(code) => io::Error::from_raw_os_error(-code.get()).to_string(),
                None => e.to_string(),
            },
            other => other.to_string(),
        };
        NetlinkError::Request {
            namespace: namespace.to_string(),
            what: what.into(),
            message,
        }
    }

    /// True when the kernel said a resource is taken (`EBUSY`), as for an
    /// interface index in use.
    pub fn is_busy(&self) -> bool {
        matches!(self, NetlinkError::Request { message, .. }
            if *message == io::Error::from_raw_os_error(libc::EBUSY).to_string())
    }

    /// True when the kernel said the object already exists (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        matches!(self, NetlinkError::Request { message, .. }
            if *message == io::Error::from_raw_os_error(libc::EEXIST).to_string())
    }
}
