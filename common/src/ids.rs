//! Identifiers minted by the coordinator. UUIDv7 sorts by creation time, which keeps
//! store indexes append-mostly and makes "the most recent run" a max().

/// A new run id.
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// A new execution id (one per attempt of a task): 32 lower-case hex digits.
pub fn new_execution_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// What a sidecar accepts as a new execution id, for messages.
pub const EXECUTION_ID_FORM: &str = "a lower-case UUID, as 32 hex digits or hyphenated (8-4-4-4-12), e.g. `0190f2a4c3e17d2a9b1c2d3e4f506172`";

/// True for the canonical forms of an execution id: a UUID in lower case, either simple
/// (32 hex digits, what the coordinator mints) or hyphenated. Anything else is refused
/// because the id names a journal directory: on a case-insensitive file system `ABC` and
/// `abc` would share one, and two executions would write one journal.
pub fn is_canonical_execution_id(id: &str) -> bool {
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    match id.len() {
        32 => id.bytes().all(lower_hex),
        36 => id.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => lower_hex(b),
        }),
        _ => false,
    }
}

/// A canonical execution id spelling `label` (up to 16 bytes) in hex, zero-padded on the
/// left to 32 digits: the same label always gives the same id. For tests, which name
/// their executions readably ("e1" is `00000000000000000000000000006531`).
pub fn execution_id_from_label(label: &str) -> String {
    assert!(label.len() <= 16, "label `{label}` is longer than 16 bytes");
    let hex: String = label.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex:0>32}")
}

/// True for a name that is safe as a file name on the sidecar (`[A-Za-z0-9_-]{1,64}`).
/// The journal loads existing directories by this looser rule, so that what an older
/// sidecar accepted stays readable; new executions must be canonical
/// ([`is_canonical_execution_id`]).
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
        assert!(is_canonical_execution_id(&a), "{a}");
        assert!(!is_valid_execution_id("../etc/passwd"));
        assert!(!is_valid_execution_id(""));
    }

    #[test]
    fn labels_give_stable_canonical_ids() {
        let a = execution_id_from_label("e1");
        assert_eq!(a, execution_id_from_label("e1"));
        assert_ne!(a, execution_id_from_label("e2"));
        assert!(is_canonical_execution_id(&a), "{a}");
    }

    #[test]
    fn only_lower_case_uuids_are_canonical() {
        let uuid = uuid::Uuid::now_v7();
        assert!(is_canonical_execution_id(&uuid.simple().to_string()));
        assert!(is_canonical_execution_id(&uuid.hyphenated().to_string()));
        for bad in [
            uuid.simple().to_string().to_uppercase(),
            uuid.hyphenated().to_string().to_uppercase(),
            "0190F2A4c3e17d2a9b1c2d3e4f506172".into(),
            "e1".into(),
            "".into(),
            "../etc/passwd".into(),
            // 32 characters, not all hex.
            "0190f2a4c3e17d2a9b1c2d3e4f50617g".into(),
            // Hyphens in the wrong places, or a braced / urn form.
            "0190f2a4c-3e1-7d2a-9b1c-2d3e4f506172".into(),
            format!("{{{}}}", uuid.hyphenated()),
            uuid.urn().to_string(),
        ] {
            assert!(!is_canonical_execution_id(&bad), "{bad} was accepted");
        }
    }
}
