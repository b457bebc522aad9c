//! Prefixed, time-ordered ids: `pat_0193…`. The prefix names the kind, so an
//! id pasted into the wrong place is caught; UUID v7 makes them sort by
//! creation time, which list pagination relies on.

/// A new id with this prefix (`"pat"` → `pat_…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_sort_by_creation() {
        let a = super::new_id("evt");
        let b = super::new_id("evt");
        assert!(a.starts_with("evt_"));
        assert!(a < b);
    }
}
