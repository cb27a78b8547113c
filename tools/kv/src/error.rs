//! Why a replica could not start or stopped, or an endpoint could not be built: what failed, with
//! the cause (the file system's, raft-engine's, raft-rs's or the endpoint's error) as
//! [`source()`](std::error::Error::source), so a program can match on it and a command line can
//! print the chain.

use erpc_dataplane::InitError;
use std::fmt;
use std::sync::Arc;

/// A cause from another crate, shared so that [`Error`] is `Clone` (a replica that stopped
/// keeps reporting why).
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// The store's error.
#[derive(Clone, Debug)]
pub enum Error {
    /// A setting is out of range or inconsistent; the message says which, and what is allowed.
    Config(String),
    /// The log store failed: what it was doing, and where (the log directory).
    Storage { what: String, cause: Cause },
    /// The log, or a snapshot, does not hold what it must (a gap in a recovered log, an append
    /// before the log's start, a malformed snapshot): a damaged log directory, or a bug.
    Corrupt(String),
    /// raft-rs refused the replica's configuration or state.
    Raft(Arc<raft::Error>),
    /// An endpoint (`"replica"` or `"client"`) could not be built.
    Endpoint { what: &'static str, cause: InitError },
    /// No transport for an endpoint (the cluster's `new_nic` failed).
    Transport(Cause),
}

impl Error {
    pub(crate) fn storage(what: impl Into<String>, cause: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Storage { what: what.into(), cause: Arc::new(cause) }
    }

    pub(crate) fn raft(e: raft::Error) -> Error {
        Error::Raft(Arc::new(e))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(m) | Error::Corrupt(m) => f.write_str(m),
            Error::Storage { what, .. } => f.write_str(what),
            Error::Raft(_) => f.write_str("raft-rs refused the replica"),
            Error::Endpoint { what, .. } => write!(f, "building the {what} endpoint"),
            Error::Transport(_) => f.write_str("no transport for the endpoint"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(_) | Error::Corrupt(_) => None,
            Error::Storage { cause, .. } | Error::Transport(cause) => Some(&**cause),
            Error::Raft(e) => Some(&**e),
            Error::Endpoint { cause, .. } => Some(cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn every_error_says_what_failed_and_keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied");
        let e = Error::storage("cannot create the log directory /x", io);
        assert_eq!(e.to_string(), "cannot create the log directory /x");
        assert_eq!(e.source().unwrap().to_string(), "Permission denied");
        let e = Error::raft(raft::Error::ConfigInvalid("election tick must be greater than heartbeat tick".into()));
        assert_eq!(e.to_string(), "raft-rs refused the replica");
        assert!(e.source().unwrap().to_string().contains("election tick"), "{:?}", e.source());
        let e = Error::Endpoint { what: "replica", cause: InitError::RegionTooSmall };
        assert_eq!(e.to_string(), "building the replica endpoint");
        assert_eq!(e.source().unwrap().to_string(), InitError::RegionTooSmall.to_string());
        let e = Error::Config("--id must be 1..=3".into());
        assert!(e.source().is_none() && e.clone().to_string() == "--id must be 1..=3");
    }
}
