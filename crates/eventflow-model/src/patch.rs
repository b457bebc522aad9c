//! RFC 7396 JSON merge patch, and the `previous` member of an `updated` event.

use serde_json::Value;

use crate::Object;

/// Applies a merge patch to `target` (RFC 7396 §2): `null` removes a member,
/// an object merges recursively, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Object::new());
    }
    let Value::Object(map) = target else {
        unreachable!("target was just made an object")
    };
    for (key, value) in patch {
        if value.is_null() {
            map.remove(key);
        } else {
            merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The prior value of each top-level member that differs between `before`
/// and `after`; a member absent before appears as `null`. Members named in
/// `ignore` (server bookkeeping such as `version`) are left out.
pub fn changed_fields(before: &Object, after: &Object, ignore: &[&str]) -> Object {
    let mut previous = Object::new();
    for (key, old) in before {
        if ignore.contains(&key.as_str()) {
            continue;
        }
        if after.get(key) != Some(old) {
            previous.insert(key.clone(), old.clone());
        }
    }
    for key in after.keys() {
        if ignore.contains(&key.as_str()) || before.contains_key(key) {
            continue;
        }
        previous.insert(key.clone(), Value::Null);
    }
    previous
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7396_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want);
        }
    }

    #[test]
    fn previous_holds_prior_values_and_nulls_for_new_fields() {
        let before = json!({"status": "booked", "reason": "x", "version": 1});
        let after = json!({"status": "cancelled", "end": "y", "version": 2});
        let prev = changed_fields(
            before.as_object().unwrap(),
            after.as_object().unwrap(),
            &["version"],
        );
        assert_eq!(
            Value::Object(prev),
            json!({"status": "booked", "reason": "x", "end": null})
        );
    }
}
