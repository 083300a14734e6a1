//! Identifiers minted by the coordinator. UUIDv7 sorts by creation time, which keeps
//! store indexes append-mostly and makes "the most recent run" a max().

/// A new run id.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A new execution id (one per attempt of a task).
pub fn new_execution_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Execution ids travel in file names on the sidecar: only accept the safe alphabet.
pub fn is_valid_execution_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_unique() {
        let a = new_execution_id();
        let b = new_execution_id();
        assert_ne!(a, b);
        assert!(is_valid_execution_id(&a));
        assert!(!is_valid_execution_id("../etc/passwd"));
        assert!(!is_valid_execution_id(""));
    }
}
