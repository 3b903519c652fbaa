//! Log matching: if two logs hold an entry with the same index and term, they hold the same
//! entries up to it. Read from the stopped nodes' stores, so entries that were never committed
//! count too.

use std::collections::BTreeMap;

use hamster_actors::raft::db::MetaDb;
use hamster_actors::raft::TypeConfig;

/// One log: index → (term, digest of the entry).
pub type Log = BTreeMap<u64, (u64, [u8; 32])>;

/// Reads node's log from its store.
pub fn read(db: &MetaDb) -> Result<Log, String> {
    let txn = db.env.read_txn().map_err(|e| e.to_string())?;
    let mut log = Log::new();
    for item in db.log.iter(&txn).map_err(|e| e.to_string())? {
        let (k, v) = item.map_err(|e| e.to_string())?;
        let index = u64::from_be_bytes(k.try_into().map_err(|_| "a log key is not 8 bytes")?);
        let entry: openraft::Entry<TypeConfig> =
            serde_json::from_slice(v).map_err(|e| e.to_string())?;
        if entry.log_id.index != index {
            return Err(format!("entry {} stored under index {index}", entry.log_id));
        }
        let digest = *blake3::hash(v).as_bytes();
        log.insert(index, (entry.log_id.leader_id.term, digest));
    }
    Ok(log)
}

/// `Err` if logs `a` (of node `ia`) and `b` (of `ib`) agree on a term at some index but differ
/// at or before it.
pub fn check(ia: u64, a: &Log, ib: u64, b: &Log) -> Result<(), String> {
    let Some(agreed) = a
        .iter()
        .rev()
        .find(|(i, (term, _))| b.get(i).is_some_and(|(t, _)| t == term))
        .map(|(i, _)| *i)
    else {
        return Ok(());
    };
    for (i, ea) in a.range(..=agreed) {
        if let Some(eb) = b.get(i) {
            if ea != eb {
                return Err(format!(
                    "log matching: nodes {ia} and {ib} agree on the term at index {agreed} but \
                     differ at index {i} (terms {} and {})",
                    ea.0, eb.0
                ));
            }
        }
    }
    Ok(())
}
