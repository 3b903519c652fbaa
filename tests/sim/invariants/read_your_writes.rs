//! Read-your-writes (and no stale reads): a read on any node, after it caught up, shows a
//! state the model allows — the last acknowledged write, or a write whose outcome is unknown.

/// `Err` unless `seen` (an ETag, or `None` for absent) is one of `possible`.
pub fn check(
    key: &str,
    possible: &[Option<String>],
    seen: Option<&str>,
    node: u64,
) -> Result<(), String> {
    if possible.iter().any(|p| p.as_deref() == seen) {
        Ok(())
    } else {
        Err(format!(
            "read-your-writes: node {node} showed {key} as {seen:?}, but only {possible:?} \
             are possible after the acknowledged writes"
        ))
    }
}
