//! The one error type of the profiles crate.
//!
//! Every variant carries what an operator needs to act on it without a debugger: the sled
//! tree and key that failed, the baseline field that is wrong and why, the line and column of
//! a syntax error. Learning itself never fails: limits are states
//! ([`crate::profile::Observed::LimitReached`]), not errors.

/// An error of the profiles crate.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// A sled operation failed (I/O error, corruption detected by sled, or the database was
    /// opened by another process).
    #[error("store: {op} on tree `{tree}` (key {key:?}) failed")]
    Store {
        /// What was being done (`open`, `get`, `insert`, `transaction`, `flush`, …).
        op: &'static str,
        /// The sled tree (`workloads`, `profiles`, `baselines`, or `-` for the whole db).
        tree: &'static str,
        /// The key involved, empty when none.
        key: String,
        /// The sled error.
        #[source]
        source: sled::Error,
    },
    /// A value could not be encoded as JSON (a non-finite float slipped into a statistic).
    #[error("could not encode {what} for {key:?} as JSON")]
    Encode {
        /// What was being encoded (`profile`, `workload record`, `baseline`).
        what: &'static str,
        /// The workload key it belongs to.
        key: String,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },
    /// A value stored in sled is not readable (written by an incompatible version, or damaged).
    #[error("stored {what} in tree `{tree}` for key {key:?} is unreadable")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// The sled tree.
        tree: &'static str,
        /// The key.
        key: String,
        /// The serde_json error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A baseline stored in sled does not validate any more.
    #[error("stored baseline for {key:?} is invalid")]
    StoredBaseline {
        /// The workload key.
        key: String,
        /// Why it is invalid.
        #[source]
        source: Box<ProfileError>,
    },
    /// A baseline file is not well-formed JSON of the baseline format. `message` is serde's,
    /// which names the unexpected or missing field.
    #[error("baseline file, line {line}, column {column}: {message}")]
    BaselineSyntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// A baseline file parses but its content is wrong or inconsistent.
    #[error("baseline file, field `{field}`: {reason}")]
    BaselineInvalid {
        /// A path to the field, such as `dimensions.file.items["/etc/x"].count`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A baseline was given for a different workload than the one it is filed under.
    #[error("baseline is for workload {found:?}, not {expected:?}")]
    WorkloadMismatch {
        /// The workload it was meant for.
        expected: String,
        /// The workload the baseline names.
        found: String,
    },
    /// Two baselines cannot be merged because a setting that gives their numbers meaning
    /// differs.
    #[error("cannot merge baselines: `{field}` differs ({left} vs {right})")]
    MergeConflict {
        /// The differing field.
        field: &'static str,
        /// Its value in the left baseline.
        left: String,
        /// Its value in the right baseline.
        right: String,
    },
    /// A syscall-count interval had a length that is not a positive finite number of seconds.
    #[error("syscall count interval of {secs} s is not a positive duration")]
    InvalidInterval {
        /// The interval length given.
        secs: f64,
    },
}

impl ProfileError {
    /// A `BaselineInvalid` error.
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ProfileError::BaselineInvalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A file that parses as JSON but not as a baseline names the field (`BaselineInvalid`, its
    /// path as `dimensions.exec.items`, with the position); broken JSON is `BaselineSyntax`.
    pub(crate) fn at_path(error: &serde_path_to_error::Error<serde_json::Error>) -> Self {
        let inner = error.inner();
        let path = error.path().to_string();
        if !inner.is_data() || path == "." {
            return Self::syntax(inner);
        }
        let message = inner.to_string();
        let message = message
            .rfind(" at line ")
            .map_or(message.as_str(), |at| &message[..at]);
        Self::invalid(
            path,
            format!(
                "{message} (line {}, column {})",
                inner.line(),
                inner.column()
            ),
        )
    }

    /// A `BaselineSyntax` error from serde_json's.
    pub(crate) fn syntax(error: &serde_json::Error) -> Self {
        // serde_json appends " at line L column C" to its message; the variant shows the
        // position itself, so strip it.
        let message = error.to_string();
        let message = match message.rfind(" at line ") {
            Some(at) => message[..at].to_owned(),
            None => message,
        };
        ProfileError::BaselineSyntax {
            line: error.line(),
            column: error.column(),
            message,
        }
    }
}
