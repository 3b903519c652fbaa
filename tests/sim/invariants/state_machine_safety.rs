//! State-machine safety: every node that applies index i applies the same entry there.

use std::collections::BTreeMap;

use hamster_actors::raft::state_machine::AppliedEntry;

/// Notes that `id` applied `entry`; `Err` if another node applied something else there.
pub fn check(
    applied: &mut BTreeMap<u64, (AppliedEntry, u64)>,
    id: u64,
    entry: &AppliedEntry,
) -> Result<(), String> {
    match applied.get(&entry.index) {
        Some((first, by)) if first != entry => Err(format!(
            "state-machine safety: at index {} node {by} applied an entry of term {} \
             but node {id} one of term {} (digests differ: {})",
            entry.index,
            first.term,
            entry.term,
            first.digest != entry.digest
        )),
        Some(_) => Ok(()),
        None => {
            applied.insert(entry.index, (*entry, id));
            Ok(())
        }
    }
}
