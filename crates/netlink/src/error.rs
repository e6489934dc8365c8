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
    /// The kernel refused a request: `source` keeps its errno (or, for a
    /// failure that has none, says what went wrong).
    #[error("namespace {namespace}: {what}: {source}")]
    Request {
        namespace: String,
        what: String,
        #[source]
        source: io::Error,
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
        let source = match &error {
            rtnetlink::Error::NetlinkError(e) => match e.code {
                Some(code) => io::Error::from_raw_os_error(-code.get()),
                None => io::Error::other(e.to_string()),
            },
            other => io::Error::other(other.to_string()),
        };
        NetlinkError::Request {
            namespace: namespace.to_string(),
            what: what.into(),
            source,
        }
    }

    /// The errno the kernel answered with, if the failure has one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Namespace { source, .. } | NetlinkError::Request { source, .. } => {
                source.raw_os_error()
            }
            NetlinkError::NoSuchLink { .. } | NetlinkError::Timeout { .. } => None,
        }
    }

    /// True when the kernel said a resource is taken (`EBUSY`), as for an
    /// interface index in use.
    pub fn is_busy(&self) -> bool {
        matches!(self, NetlinkError::Request { .. }) && self.errno() == Some(libc::EBUSY)
    }

    /// True when the kernel said the object already exists (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        matches!(self, NetlinkError::Request { .. }) && self.errno() == Some(libc::EEXIST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(errno: i32) -> NetlinkError {
        NetlinkError::Request {
            namespace: "lab.node".into(),
            what: "add link eth1".into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    #[test]
    fn a_refused_request_keeps_its_errno() {
        let e = request(libc::EEXIST);
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert!(e.is_exists() && !e.is_busy());
        assert!(request(libc::EBUSY).is_busy());
        assert_eq!(
            e.to_string(),
            format!(
                "namespace lab.node: add link eth1: {}",
                io::Error::from_raw_os_error(libc::EEXIST)
            )
        );
        let source = std::error::Error::source(&e).expect("the errno is the source");
        assert_eq!(
            source.to_string(),
            io::Error::from_raw_os_error(libc::EEXIST).to_string()
        );
        let entering = NetlinkError::namespace(
            "lab.node",
            "enter",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        assert_eq!(entering.errno(), Some(libc::EPERM));
        assert_eq!(
            NetlinkError::NoSuchLink {
                namespace: "n".into(),
                link: "l".into()
            }
            .errno(),
            None
        );
    }
}
