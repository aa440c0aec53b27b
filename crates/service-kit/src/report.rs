//! One line for a fatal error, as the binaries print it before exiting.

/// `error: cause: cause ...`, like anyhow's `{:#}`, but without a cause whose text its parent
/// already ends with. Error types that both show their source in `Display` and return it
/// from `source()` (thiserror's `#[error("...: {0}")]` on a `#[source]` field, as
/// `workflow_core::StoreError::Backend` does) would otherwise print it twice.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !previous.is_empty() && previous.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
        previous = text;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("storage backend error: {0}")]
    struct Backend(#[source] std::io::Error);

    #[test]
    fn a_cause_already_shown_by_its_parent_is_printed_once() {
        let e = anyhow::Error::new(Backend(std::io::Error::other("file is not a database")))
            .context("while backing up data/dispatcher.db");
        assert_eq!(
            error_chain(&e),
            "while backing up data/dispatcher.db: storage backend error: file is not a database"
        );
        assert_eq!(
            format!("{e:#}").matches("file is not a database").count(),
            2
        );
    }

    #[test]
    fn other_causes_are_all_kept() {
        let e = anyhow::anyhow!("connection refused")
            .context("while opening the database")
            .context("startup failed");
        assert_eq!(
            error_chain(&e),
            "startup failed: while opening the database: connection refused"
        );
    }
}
