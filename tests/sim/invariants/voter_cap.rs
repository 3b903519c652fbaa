//! The voter cap: no voter set of any membership, joint or not, has more than five members.

use hamster_protocol::membership::VOTERS_MAX;

use super::NodeView;

/// `Err` if a config in `view` has more voters than the cap.
pub fn check(id: u64, view: &NodeView) -> Result<(), String> {
    match view.configs.iter().find(|c| c.len() > VOTERS_MAX) {
        Some(c) => Err(format!(
            "voter cap: node {id} holds a configuration of {} voters {c:?} (max {VOTERS_MAX})",
            c.len()
        )),
        None => Ok(()),
    }
}
