//! Prefixed, time-ordered ids: `pat_0193…`. The prefix names the kind, so an
//! id pasted into the wrong place is caught; UUID v7 makes them sort by
//! creation time, which list pagination relies on.

/// A new id with this prefix (`"pat"` → `pat_…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Longest id accepted anywhere (a made id is at most 37 bytes).
pub const MAX_ID_LEN: usize = 100;

/// Whether `id` has the shape of an id: a lowercase prefix, `_`, then ASCII
/// letters and digits. Anything else names no record and is answered without
/// asking the database (PostgreSQL refuses text with a NUL byte outright).
pub fn is_well_formed(id: &str) -> bool {
    let Some((prefix, rest)) = id.split_once('_') else {
        return false;
    };
    id.len() <= MAX_ID_LEN
        && !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_lowercase())
        && !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_sort_by_creation() {
        let a = super::new_id("evt");
        let b = super::new_id("evt");
        assert!(a.starts_with("evt_"));
        assert!(a < b);
        assert!(super::is_well_formed(&a));
    }

    #[test]
    fn malformed_ids() {
        for bad in [
            "", "pat", "pat_", "_x", "pat_a\0", "pat_a-b", "Pat_x", "pat_é",
        ] {
            assert!(!super::is_well_formed(bad), "{bad:?}");
        }
        assert!(!super::is_well_formed(&format!("pat_{}", "0".repeat(100))));
        assert!(super::is_well_formed("pat_doesnotexist"));
    }
}
