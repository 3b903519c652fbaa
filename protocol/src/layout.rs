//! The cluster's life as replicated state (DESIGN §6, INV-7): layout transitions (grow, drain,
//! undrain, replace, optimize), nodes that were drained or removed for good, and the pure rules
//! that open, advance and close a transition. The layout manager on the leader proposes these
//! commands; [`crate::meta::apply`] runs the rules here on every node.
//!
//! A transition is opened by [`Command::BeginTransition`](crate::meta::Command): the stored
//! layout becomes the new one at once (new writes place by it), and the old node set is kept in
//! the transition for status. Existing parts keep their recorded homes (ADR-0005), so they stay
//! readable; the manager moves each part whose homes differ from what the new layout gives and
//! commits the new homes with a compare-and-set ([`rehome`]). The shards a commit unlinked stay
//! listed as stale (a table of their own, [`StaleShard`]) until their old homes confirm the
//! delete, so a coordinator that crashes between the commit and the delete leaves no orphan
//! behind, and a node that is down keeps its list until it answers again.
//!
//! A write placed by the old layout can commit after the walk passed its key (it began before
//! the transition opened, or went through a member that applied the new layout late). While a
//! transition is open such a commit is listed for a revisit ([`Revisit`]) and the transition
//! cannot close until the walker has moved it; once no transition is open, a commit naming a
//! node outside the layout is refused ([`placement_check`]) and the client retries onto the
//! current layout.
//!
//! Only one transition is open at a time; the guard lives here, in the replicated state, so it
//! holds across leader changes. The one exception is `undrain`, which replaces the drain of the
//! same node that is still open (a drain is reversible until it is done).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::meta::{MetaStore, ObjectId, PartLayout, Refusal, VersionList};
use crate::placement::{Layout, LayoutNode};

/// What a layout transition does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LayoutOp {
    /// Members joined (or changed zone, host or capacity): existing data spreads onto them.
    Grow {
        /// The nodes the new layout adds.
        added: Vec<u64>,
    },
    /// New writes steer off `node` and its shards move away.
    Drain {
        /// The node being emptied.
        node: u64,
    },
    /// `node` takes shards again (it replaces an open drain of the same node).
    Undrain {
        /// The node coming back.
        node: u64,
    },
    /// `new` takes the place of `old` at the same cluster size.
    Replace {
        /// The node leaving.
        old: u64,
        /// The node arriving.
        new: u64,
    },
    /// Parts are re-encoded up to the profile the current node count gives.
    Optimize,
    /// Nodes that left the metadata group without a drain (`hamster recover` dropped them):
    /// new writes stop going to them at once, and what they held is rebuilt from the others
    /// where enough survives.
    Forget {
        /// The nodes gone.
        nodes: Vec<u64>,
    },
}

impl LayoutOp {
    /// The node this operation empties, if any.
    pub fn emptied(&self) -> Option<u64> {
        match self {
            LayoutOp::Drain { node } => Some(*node),
            LayoutOp::Replace { old, .. } => Some(*old),
            _ => None,
        }
    }

    /// A short human description, e.g. `drain 00000000000000ab`.
    pub fn describe(&self) -> String {
        match self {
            LayoutOp::Grow { added } if added.is_empty() => "reweigh".to_string(),
            LayoutOp::Grow { added } => {
                let ids: Vec<String> = added.iter().map(|n| format!("{n:016x}")).collect();
                format!("grow (+{})", ids.join(", +"))
            }
            LayoutOp::Drain { node } => format!("drain {node:016x}"),
            LayoutOp::Undrain { node } => format!("undrain {node:016x}"),
            LayoutOp::Replace { old, new } => format!("replace {old:016x} by {new:016x}"),
            LayoutOp::Optimize => "optimize".to_string(),
            LayoutOp::Forget { nodes } => {
                let ids: Vec<String> = nodes.iter().map(|n| format!("{n:016x}")).collect();
                format!("forget {}", ids.join(", "))
            }
        }
    }
}

/// Where the migration walk has got to: the last key it finished, in (bucket, key) order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Bucket of the last finished key.
    pub bucket: String,
    /// The last finished key.
    pub key: String,
}

/// How far a transition has got. The walk fields are checkpointed by the walker; the moved
/// counters are added by each committed [`rehome`], so they are exact across crashes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Walks over the keyspace started so far (a transition ends after a walk that moved
    /// nothing and failed nothing).
    pub pass: u32,
    /// Where this pass has got; `None` at its start.
    pub cursor: Option<Cursor>,
    /// Parts looked at in this pass.
    pub parts_seen: u64,
    /// Parts this pass could not move yet (too few readable shards, a target down).
    pub parts_failed: u64,
    /// Parts this pass found beyond saving: fewer than `k` shards verify and every other one
    /// was on a node that is leaving and down. They do not hold the transition open.
    #[serde(default)]
    pub parts_lost: u64,
    /// Parts in the store when the transition opened (the objects' part count, estimated).
    pub parts_total: u64,
    /// Parts whose homes were moved (all passes).
    pub parts_moved: u64,
    /// Parts re-encoded to another profile (all passes).
    pub parts_reencoded: u64,
    /// Shards written to new homes (all passes).
    pub shards_moved: u64,
    /// Bytes of shard data written to new homes (all passes).
    pub bytes_moved: u64,
    /// Unix milliseconds of the last checkpoint.
    pub updated_ms: u64,
}

/// A shard that a committed move unlinked: still on its old home until deleted there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StaleShard {
    /// The node holding the old copy.
    pub node: u64,
    /// The body.
    pub body: ObjectId,
    /// The part number.
    pub part: u32,
    /// The shard index.
    pub index: u16,
}

/// An open layout transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The layout version it opened (its id).
    pub id: u64,
    /// What it does.
    pub op: LayoutOp,
    /// Who asked (the CLI's description, or `layout manager` for automatic growth).
    pub asked_by: String,
    /// When it opened, Unix milliseconds.
    pub started_ms: u64,
    /// The layout's nodes before it opened.
    pub from: BTreeMap<u64, LayoutNode>,
    /// How far it has got.
    pub progress: Progress,
}

/// A member that no longer takes shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Retired {
    /// Emptied by a finished drain; `undrain` brings it back, `remove` evicts it.
    Drained {
        /// When the drain finished, Unix milliseconds.
        at_ms: u64,
    },
    /// Removed for good: it can never come back under this id.
    Tombstoned {
        /// When it was removed, Unix milliseconds.
        at_ms: u64,
        /// Where it listened, for status and for refusing its certificate.
        cluster_addr: String,
    },
}

/// Where a part lives in the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "in", rename_all = "snake_case")]
pub enum PartAt {
    /// A part of a stored object version.
    Object {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// The version id.
        version_id: String,
    },
    /// A part of a multipart upload in progress.
    Upload {
        /// Bucket name.
        bucket: String,
        /// Object key.
        key: String,
        /// Upload id.
        upload_id: String,
    },
}

/// The arguments of a [`rehome`]: compare-and-set one part's layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rehome {
    /// Where the part is recorded.
    pub at: PartAt,
    /// What the part must still be: its body and homes as the mover read them.
    pub expect_body: ObjectId,
    /// The homes the mover read.
    pub expect_homes: Vec<u64>,
    /// The part's new layout: new homes (a move) or a new body and profile (a re-encode).
    pub layout: PartLayout,
    /// The transition this move belongs to (its counters are credited).
    pub transition: u64,
    /// Shards written for this move.
    pub shards: u64,
    /// Bytes of shard data written for this move.
    pub bytes: u64,
}

/// Whether `next` may replace the open transition `open` rather than wait for it: an undrain
/// ends the drain of the same node (a drain is reversible until done), and an operator's drain
/// takes over from an automatic grow (so a member that joined and never came up can be drained
/// without waiting for a grow that cannot finish).
pub fn may_replace(open: &LayoutOp, next: &LayoutOp) -> bool {
    match (open, next) {
        (LayoutOp::Drain { node: d }, LayoutOp::Undrain { node: u }) => d == u,
        (LayoutOp::Grow { .. }, LayoutOp::Drain { .. }) => true,
        _ => false,
    }
}

/// Opens a transition to `nodes` (layout `version`), or refuses: another transition is open
/// (unless this undrains the node an open drain is emptying), the version is not the next one,
/// or it would place on a tombstoned node.
pub fn begin<S: MetaStore>(
    store: &mut S,
    version: u64,
    nodes: &BTreeMap<u64, LayoutNode>,
    op: &LayoutOp,
    asked_by: &str,
    now_ms: u64,
) -> Result<Option<Refusal>, S::Error> {
    let mut layout = store.layout()?.unwrap_or_default();
    if version != layout.version + 1 {
        return Ok(Some(Refusal::LayoutStale));
    }
    if nodes.is_empty() {
        return Ok(Some(Refusal::LayoutStale));
    }
    // The replaced transition's stale shards and revisits stay listed: the next walk deletes
    // and moves them.
    if let Some(open) = &layout.transition {
        if !may_replace(&open.op, op) {
            return Ok(Some(Refusal::TransitionOpen));
        }
    }
    if nodes
        .keys()
        .any(|id| matches!(layout.retired.get(id), Some(Retired::Tombstoned { .. })))
    {
        return Ok(Some(Refusal::NodeTombstoned));
    }
    if let LayoutOp::Undrain { node } = op {
        layout.retired.remove(node);
    }
    let from = std::mem::replace(&mut layout.nodes, nodes.clone());
    layout.version = version;
    layout.transition = Some(Transition {
        id: version,
        op: op.clone(),
        asked_by: asked_by.to_string(),
        started_ms: now_ms,
        from,
        progress: Progress {
            updated_ms: now_ms,
            ..Progress::default()
        },
    });
    store.put_layout(&layout)?;
    Ok(None)
}

/// Records the walker's checkpoint for transition `id` and forgets the stale shards it has
/// deleted.
pub fn checkpoint<S: MetaStore>(
    store: &mut S,
    id: u64,
    walk: &Progress,
    dropped: &[StaleShard],
) -> Result<Option<Refusal>, S::Error> {
    let Some(mut layout) = store.layout()? else {
        return Ok(Some(Refusal::NoTransition));
    };
    let Some(t) = layout.transition.as_mut().filter(|t| t.id == id) else {
        return Ok(Some(Refusal::NoTransition));
    };
    let p = &mut t.progress;
    p.pass = walk.pass;
    p.cursor = walk.cursor.clone();
    p.parts_seen = walk.parts_seen;
    p.parts_failed = walk.parts_failed;
    p.parts_lost = walk.parts_lost;
    p.parts_total = walk.parts_total;
    p.updated_ms = walk.updated_ms;
    store.put_layout(&layout)?;
    for s in dropped {
        store.drop_stale(s)?;
    }
    Ok(None)
}

/// Closes transition `id`: a drain's node becomes drained (a replace's old node likewise).
/// Refused with `RevisitPending` while parts committed during the transition still wait to be
/// moved. Stale shards still listed are on nodes that could not be reached; they stay listed,
/// deleted when their node answers again (or forgotten when it is removed).
pub fn end<S: MetaStore>(store: &mut S, id: u64, now_ms: u64) -> Result<Option<Refusal>, S::Error> {
    let Some(mut layout) = store.layout()? else {
        return Ok(Some(Refusal::NoTransition));
    };
    if layout.transition.as_ref().is_some_and(|t| t.id == id) && store.has_revisit()? {
        return Ok(Some(Refusal::RevisitPending));
    }
    let Some(mut t) = layout.transition.take().filter(|t| t.id == id) else {
        if let Some(open) = layout.transition {
            // Not the open one: put it back untouched.
            layout.transition = Some(open);
        }
        return Ok(Some(Refusal::NoTransition));
    };
    if let Some(node) = t.op.emptied() {
        layout
            .retired
            .insert(node, Retired::Drained { at_ms: now_ms });
    }
    t.progress.updated_ms = now_ms;
    layout.last = Some(t);
    store.put_layout(&layout)?;
    Ok(None)
}

/// Removes `node` for good. Refused unless it is drained, or never took shards (a member that
/// joined and never entered the layout), and no open transition still empties it.
pub fn tombstone<S: MetaStore>(
    store: &mut S,
    node: u64,
    cluster_addr: &str,
    now_ms: u64,
) -> Result<Option<Refusal>, S::Error> {
    let mut layout = store.layout()?.unwrap_or_default();
    if matches!(layout.retired.get(&node), Some(Retired::Tombstoned { .. })) {
        return Ok(None);
    }
    let drained = matches!(layout.retired.get(&node), Some(Retired::Drained { .. }));
    let emptying = layout
        .transition
        .as_ref()
        .is_some_and(|t| t.op.emptied() == Some(node) || t.from.contains_key(&node));
    let never_placed = !layout.retired.contains_key(&node);
    if !(drained || never_placed) || emptying || layout.nodes.contains_key(&node) {
        return Ok(Some(Refusal::NotDrained));
    }
    // Its disk is wiped before any reuse: nothing left there to delete.
    store.drop_stale_of(node)?;
    layout.retired.insert(
        node,
        Retired::Tombstoned {
            at_ms: now_ms,
            cluster_addr: cluster_addr.to_string(),
        },
    );
    store.put_layout(&layout)?;
    // Its admission must not bring it back as a learner.
    for mut t in store.join_tokens()? {
        if t.used_by == Some(node) && t.joined.take().is_some() {
            store.put_join_token(&t)?;
        }
    }
    Ok(None)
}

/// Forgets stale shards now deleted on their nodes.
pub fn drop_stale<S: MetaStore>(store: &mut S, dropped: &[StaleShard]) -> Result<(), S::Error> {
    for s in dropped {
        store.drop_stale(s)?;
    }
    Ok(())
}

/// Forgets revisits the walker has dealt with (moved, or found gone or already in place).
pub fn drop_revisits<S: MetaStore>(store: &mut S, seqs: &[u64]) -> Result<(), S::Error> {
    for seq in seqs {
        store.drop_revisit(*seq)?;
    }
    Ok(())
}

/// A part committed during an open transition with a home the new layout no longer has: the
/// walk may have passed its key already, so the walker moves it before the transition closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revisit {
    /// Where the part is recorded.
    pub at: PartAt,
    /// The part number.
    pub part: u32,
}

/// What [`placement_check`] decided about a part being committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Its homes are all in the layout (or no layout is stored yet).
    Fine,
    /// A transition is open and a home is a node the new layout dropped: list it for a revisit.
    Revisit,
    /// No transition is open and a home is outside the layout: it was placed by a layout that
    /// is gone, and committing it would leave a shard on a node nothing walks any more.
    Refuse,
}

/// Judges the homes of a part about to be committed against the stored layout.
pub fn placement_check(layout: Option<&Layout>, homes: &[u64]) -> Placed {
    let Some(layout) = layout else {
        return Placed::Fine;
    };
    if homes.iter().all(|h| layout.nodes.contains_key(h)) {
        return Placed::Fine;
    }
    if layout.transition.is_some() {
        Placed::Revisit
    } else {
        Placed::Refuse
    }
}

/// Whether `node` was removed for good.
pub fn is_tombstoned(layout: Option<&Layout>, node: u64) -> bool {
    layout.is_some_and(|l| matches!(l.retired.get(&node), Some(Retired::Tombstoned { .. })))
}

/// What [`rehome`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rehomed {
    /// Why nothing changed, if nothing did.
    pub refused: Option<Refusal>,
    /// A body no longer referenced (a re-encode replaced it).
    pub freed: Option<ObjectId>,
}

/// Replaces one part's layout if it is still what the mover read (same body, same homes);
/// otherwise refuses with `PartMoved` (an overwrite, delete or completion won, and the mover
/// discards its copies). Credits the open transition `r.transition` and lists the shards the
/// move unlinked as stale.
pub fn rehome<S: MetaStore>(store: &mut S, r: &Rehome) -> Result<Rehomed, S::Error> {
    let moved = Rehomed {
        refused: Some(Refusal::PartMoved),
        freed: None,
    };
    // A move made for a transition that was replaced or has ended must not land: its stale
    // copy would go unlisted, and the part would follow a layout no longer wanted.
    let open = store.layout()?.and_then(|l| l.transition.map(|t| t.id));
    if open != Some(r.transition) {
        return Ok(Rehomed {
            refused: Some(Refusal::NoTransition),
            freed: None,
        });
    }
    let old = match &r.at {
        PartAt::Object {
            bucket,
            key,
            version_id,
        } => {
            let Some(mut list) = store.versions(bucket, key)? else {
                return Ok(moved);
            };
            let Some(old) = swap_in_version(&mut list, version_id, r) else {
                return Ok(moved);
            };
            store.put_versions(bucket, key, &list)?;
            old
        }
        PartAt::Upload {
            bucket,
            key,
            upload_id,
        } => {
            let Some(mut upload) = store.upload(bucket, key, upload_id)? else {
                return Ok(moved);
            };
            let Some(slot) = upload.parts.get_mut(&r.layout.part) else {
                return Ok(moved);
            };
            let body = slot.layout.body.unwrap_or(ObjectId([0; 16]));
            if body != r.expect_body || slot.layout.homes != r.expect_homes {
                return Ok(moved);
            }
            let old = std::mem::replace(&mut slot.layout, r.layout.clone());
            store.put_upload(&upload)?;
            (old, body)
        }
    };
    let (old, old_body) = old;
    let new_body = match &r.at {
        PartAt::Object { .. } => r.layout.body.unwrap_or(old_body),
        PartAt::Upload { .. } => r.layout.body.unwrap_or(ObjectId([0; 16])),
    };
    let reencoded = new_body != old_body;
    let mut layout = store.layout()?.unwrap_or_default();
    let mut unlinked = Vec::new();
    if let Some(t) = layout.transition.as_mut().filter(|t| t.id == r.transition) {
        let p = &mut t.progress;
        p.shards_moved += r.shards;
        p.bytes_moved += r.bytes;
        if reencoded {
            p.parts_reencoded += 1;
        } else {
            p.parts_moved += 1;
            for (index, (was, now)) in old.homes.iter().zip(&r.layout.homes).enumerate() {
                if was != now {
                    let index = u16::try_from(index).unwrap_or(u16::MAX);
                    // A copy moved back onto a node that still lists its old copy as stale is
                    // live again there: it must not be deleted.
                    unlinked.push((
                        StaleShard {
                            node: *now,
                            body: old_body,
                            part: old.part,
                            index,
                        },
                        StaleShard {
                            node: *was,
                            body: old_body,
                            part: old.part,
                            index,
                        },
                    ));
                }
            }
        }
        store.put_layout(&layout)?;
    }
    for (live_again, old) in unlinked {
        store.drop_stale(&live_again)?;
        store.add_stale(&old)?;
    }
    Ok(Rehomed {
        refused: None,
        freed: reencoded.then_some(old_body),
    })
}

/// Swaps `r.layout` into the version's matching part; returns the old part and its body, or
/// `None` if the version or part is gone or no longer what the mover read.
fn swap_in_version(
    list: &mut VersionList,
    version_id: &str,
    r: &Rehome,
) -> Option<(PartLayout, ObjectId)> {
    let v = list
        .versions
        .iter_mut()
        .find(|v| v.version_id == version_id)?;
    let object_id = v.object_id;
    let slot = v.parts.iter_mut().find(|p| p.part == r.layout.part)?;
    let body = slot.body.unwrap_or(object_id);
    if body != r.expect_body || slot.homes != r.expect_homes {
        return None;
    }
    let mut new = r.layout.clone();
    // A part that keeps its body keeps how it names it.
    if new.body == Some(object_id) {
        new.body = None;
    }
    let old = std::mem::replace(slot, new);
    Some((old, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{apply, Command, MemStore, ObjectVersion};

    fn node() -> LayoutNode {
        LayoutNode {
            zone: String::new(),
            host: String::new(),
            weight: 1,
        }
    }

    fn nodes(ids: &[u64]) -> BTreeMap<u64, LayoutNode> {
        ids.iter().map(|id| (*id, node())).collect()
    }

    fn begin_cmd(version: u64, ids: &[u64], op: LayoutOp) -> Command {
        Command::BeginTransition {
            version,
            nodes: nodes(ids),
            op,
            asked_by: "test".into(),
            now_ms: 5,
        }
    }

    fn refused(s: &mut MemStore, cmd: Command) -> Option<Refusal> {
        apply(s, &cmd).unwrap().refused
    }

    fn part(homes: Vec<u64>) -> PartLayout {
        PartLayout {
            part: 1,
            size: 10,
            k: 1,
            m: 1,
            block_bytes: 1024,
            shard_blake3: vec!["a".into(), "a".into()],
            md5: String::new(),
            body: None,
            homes,
        }
    }

    fn object(s: &mut MemStore, id: u8, homes: Vec<u64>) {
        let v = version(id, homes);
        s.objects
            .insert(("b".into(), "k".into()), VersionList { versions: vec![v] });
    }

    /// Version `null` of body `[id; 16]`, one part on `homes`.
    fn version(id: u8, homes: Vec<u64>) -> ObjectVersion {
        ObjectVersion {
            version_id: "null".into(),
            object_id: ObjectId([id; 16]),
            size: 10,
            etag: String::new(),
            last_modified_ms: 0,
            content_type: String::new(),
            headers: BTreeMap::new(),
            user_meta: BTreeMap::new(),
            checksums: BTreeMap::new(),
            parts: vec![part(homes)],
        }
    }

    fn rehome_cmd(id: u8, expect: Vec<u64>, to: Vec<u64>, transition: u64) -> Command {
        Command::Rehome(Rehome {
            at: PartAt::Object {
                bucket: "b".into(),
                key: "k".into(),
                version_id: "null".into(),
            },
            expect_body: ObjectId([id; 16]),
            expect_homes: expect,
            layout: part(to),
            transition,
            shards: 1,
            bytes: 10,
        })
    }

    #[test]
    fn one_transition_at_a_time_and_undrain_replaces_its_drain() {
        let mut s = MemStore::default();
        assert_eq!(
            refused(
                &mut s,
                Command::SetLayout(Box::new(Layout {
                    version: 1,
                    nodes: nodes(&[1, 2, 3]),
                    ..Layout::default()
                }))
            ),
            None
        );
        assert_eq!(
            refused(&mut s, begin_cmd(2, &[1, 2], LayoutOp::Drain { node: 3 })),
            None
        );
        let open = s.layout.clone().unwrap();
        assert_eq!(open.nodes, nodes(&[1, 2]));
        assert_eq!(open.transition.as_ref().unwrap().from, nodes(&[1, 2, 3]));
        // Any other change is refused while the drain is open, whoever proposes it.
        assert_eq!(
            refused(
                &mut s,
                begin_cmd(3, &[1, 2, 3, 4], LayoutOp::Grow { added: vec![4] })
            ),
            Some(Refusal::TransitionOpen)
        );
        assert_eq!(
            refused(
                &mut s,
                Command::SetLayout(Box::new(Layout {
                    version: 3,
                    nodes: nodes(&[1]),
                    ..Layout::default()
                }))
            ),
            Some(Refusal::TransitionOpen)
        );
        assert_eq!(
            refused(&mut s, begin_cmd(3, &[1, 2], LayoutOp::Drain { node: 1 })),
            Some(Refusal::TransitionOpen)
        );
        // A stale version is refused even for the undrain.
        assert_eq!(
            refused(
                &mut s,
                begin_cmd(2, &[1, 2, 3], LayoutOp::Undrain { node: 3 })
            ),
            Some(Refusal::LayoutStale)
        );
        assert_eq!(
            refused(
                &mut s,
                begin_cmd(3, &[1, 2, 3], LayoutOp::Undrain { node: 3 })
            ),
            None
        );
        let t = s.layout.as_ref().unwrap().transition.clone().unwrap();
        assert_eq!((t.id, t.op), (3, LayoutOp::Undrain { node: 3 }));
        assert_eq!(
            refused(&mut s, Command::EndTransition { id: 2, now_ms: 9 }),
            Some(Refusal::NoTransition)
        );
        assert_eq!(
            refused(&mut s, Command::EndTransition { id: 3, now_ms: 9 }),
            None
        );
        assert!(s.layout.as_ref().unwrap().retired.is_empty());
        // The closed transition stays readable, with when it closed.
        let last = s.layout.as_ref().unwrap().last.clone().unwrap();
        assert_eq!((last.id, last.progress.updated_ms), (3, 9));
        assert!(s.layout.as_ref().unwrap().transition.is_none());
    }

    #[test]
    fn a_drain_takes_over_from_an_automatic_grow() {
        let mut s = MemStore::default();
        refused(
            &mut s,
            Command::SetLayout(Box::new(Layout {
                version: 1,
                nodes: nodes(&[1, 2, 3]),
                ..Layout::default()
            })),
        );
        assert_eq!(
            refused(
                &mut s,
                begin_cmd(2, &[1, 2, 3, 4], LayoutOp::Grow { added: vec![4] })
            ),
            None
        );
        // An optimize waits for the grow; a drain (of the newcomer that never came up) does not.
        assert_eq!(
            refused(&mut s, begin_cmd(3, &[1, 2, 3, 4], LayoutOp::Optimize)),
            Some(Refusal::TransitionOpen)
        );
        assert_eq!(
            refused(
                &mut s,
                begin_cmd(3, &[1, 2, 3], LayoutOp::Drain { node: 4 })
            ),
            None
        );
        let t = s.layout.as_ref().unwrap().transition.clone().unwrap();
        assert_eq!((t.id, t.op), (3, LayoutOp::Drain { node: 4 }));
        // But a grow never takes over from a drain.
        assert_eq!(
            refused(
                &mut s,
                begin_cmd(4, &[1, 2, 3, 4], LayoutOp::Grow { added: vec![4] })
            ),
            Some(Refusal::TransitionOpen)
        );
    }

    #[test]
    fn a_drained_node_is_removed_for_good() {
        let mut s = MemStore::default();
        refused(
            &mut s,
            Command::SetLayout(Box::new(Layout {
                version: 1,
                nodes: nodes(&[1, 2, 3]),
                ..Layout::default()
            })),
        );
        let tomb = |node| Command::Tombstone {
            node,
            cluster_addr: "x:1".into(),
            now_ms: 7,
        };
        // Not drained: refused.
        assert_eq!(refused(&mut s, tomb(3)), Some(Refusal::NotDrained));
        // A member that never entered the layout held no shards: it may go at once.
        assert_eq!(refused(&mut s, tomb(9)), None);
        refused(&mut s, begin_cmd(2, &[1, 2], LayoutOp::Drain { node: 3 }));
        // Still draining: refused.
        assert_eq!(refused(&mut s, tomb(3)), Some(Refusal::NotDrained));
        assert_eq!(
            refused(&mut s, Command::EndTransition { id: 2, now_ms: 8 }),
            None
        );
        assert_eq!(
            s.layout.as_ref().unwrap().retired.get(&3),
            Some(&Retired::Drained { at_ms: 8 })
        );
        assert_eq!(refused(&mut s, tomb(3)), None);
        assert!(is_tombstoned(s.layout.as_ref(), 3));
        // It can never be placed on again, nor join under its old id.
        assert_eq!(
            refused(
                &mut s,
                begin_cmd(3, &[1, 2, 3], LayoutOp::Undrain { node: 3 })
            ),
            Some(Refusal::NodeTombstoned)
        );
        let hash = "a".repeat(64);
        refused(
            &mut s,
            Command::AddJoinToken {
                secret_sha256: hash.clone(),
                expires_ms: 100,
                created_ms: 1,
            },
        );
        assert_eq!(
            refused(
                &mut s,
                Command::ConsumeJoinToken {
                    secret_sha256: hash.clone(),
                    now_ms: 2,
                    node_id: 3,
                    joined: None
                }
            ),
            Some(Refusal::NodeTombstoned)
        );
        // The token was not used up by the refusal.
        assert_eq!(
            refused(
                &mut s,
                Command::ConsumeJoinToken {
                    secret_sha256: hash,
                    now_ms: 2,
                    node_id: 4,
                    joined: None
                }
            ),
            None
        );
    }

    #[test]
    fn a_move_commits_only_over_what_the_mover_read() {
        let mut s = MemStore::default();
        refused(
            &mut s,
            Command::SetLayout(Box::new(Layout {
                version: 1,
                nodes: nodes(&[1, 2, 3]),
                ..Layout::default()
            })),
        );
        refused(&mut s, begin_cmd(2, &[1, 2], LayoutOp::Drain { node: 3 }));
        object(&mut s, 9, vec![1, 3]);
        // A move for a transition that is not the open one never lands.
        assert_eq!(
            refused(&mut s, rehome_cmd(9, vec![1, 3], vec![1, 2], 7)),
            Some(Refusal::NoTransition)
        );
        // Homes read before a concurrent change: refused, nothing changes.
        assert_eq!(
            refused(&mut s, rehome_cmd(9, vec![3, 1], vec![2, 1], 2)),
            Some(Refusal::PartMoved)
        );
        // A different body (the key was overwritten): refused.
        assert_eq!(
            refused(&mut s, rehome_cmd(8, vec![1, 3], vec![1, 2], 2)),
            Some(Refusal::PartMoved)
        );
        assert_eq!(
            refused(&mut s, rehome_cmd(9, vec![1, 3], vec![1, 2], 2)),
            None
        );
        let stored = s.objects.values().next().unwrap().versions[0].parts[0].clone();
        assert_eq!(stored.homes, vec![1, 2]);
        let t = s.layout.as_ref().unwrap().transition.clone().unwrap();
        assert_eq!(
            (
                t.progress.parts_moved,
                t.progress.shards_moved,
                t.progress.bytes_moved
            ),
            (1, 1, 10)
        );
        let stale = StaleShard {
            node: 3,
            body: ObjectId([9; 16]),
            part: 1,
            index: 1,
        };
        assert_eq!(s.stale.iter().copied().collect::<Vec<_>>(), vec![stale]);
        // A repeat of the same move is refused (the homes changed), so nothing counts twice.
        assert_eq!(
            refused(&mut s, rehome_cmd(9, vec![1, 3], vec![1, 2], 2)),
            Some(Refusal::PartMoved)
        );
        // The walker's checkpoint forgets the shard it deleted and keeps the exact counters.
        let walk = Progress {
            pass: 1,
            parts_seen: 4,
            parts_moved: 99,
            ..Progress::default()
        };
        assert_eq!(
            refused(
                &mut s,
                Command::TransitionCheckpoint {
                    id: 2,
                    walk,
                    dropped: vec![stale]
                }
            ),
            None
        );
        let t = s.layout.as_ref().unwrap().transition.clone().unwrap();
        assert!(s.stale.is_empty());
        assert_eq!((t.progress.parts_seen, t.progress.parts_moved), (4, 1));
    }

    #[test]
    fn moved_shards_left_on_a_down_node_outlive_their_transition() {
        let mut s = MemStore::default();
        refused(
            &mut s,
            Command::SetLayout(Box::new(Layout {
                version: 1,
                nodes: nodes(&[1, 2, 3]),
                ..Layout::default()
            })),
        );
        refused(&mut s, begin_cmd(2, &[1, 2], LayoutOp::Drain { node: 3 }));
        object(&mut s, 9, vec![1, 3]);
        assert_eq!(
            refused(&mut s, rehome_cmd(9, vec![1, 3], vec![1, 2], 2)),
            None
        );
        // Node 3 was down: the stale copy could not be deleted before the drain closed.
        assert_eq!(
            refused(&mut s, Command::EndTransition { id: 2, now_ms: 9 }),
            None
        );
        let stale = StaleShard {
            node: 3,
            body: ObjectId([9; 16]),
            part: 1,
            index: 1,
        };
        assert_eq!(s.stale.iter().copied().collect::<Vec<_>>(), vec![stale]);
        // Deleted once node 3 answers again.
        assert_eq!(
            refused(
                &mut s,
                Command::DropStale {
                    dropped: vec![stale]
                }
            ),
            None
        );
        assert!(s.stale.is_empty());
        // Or forgotten when the node is removed for good (its disk is wiped), with no other
        // node's list touched.
        let elsewhere = StaleShard { node: 4, ..stale };
        s.stale.insert(stale);
        s.stale.insert(elsewhere);
        let tomb = Command::Tombstone {
            node: 3,
            cluster_addr: "x:1".into(),
            now_ms: 10,
        };
        assert_eq!(refused(&mut s, tomb), None);
        assert_eq!(s.stale.iter().copied().collect::<Vec<_>>(), vec![elsewhere]);
    }

    #[test]
    fn a_reencode_swaps_the_body_and_frees_the_old_one() {
        let mut s = MemStore::default();
        refused(
            &mut s,
            Command::SetLayout(Box::new(Layout {
                version: 1,
                nodes: nodes(&[1, 2, 3]),
                ..Layout::default()
            })),
        );
        refused(&mut s, begin_cmd(2, &[1, 2, 3], LayoutOp::Optimize));
        object(&mut s, 9, vec![1, 3]);
        let mut cmd = rehome_cmd(9, vec![1, 3], vec![1, 2, 3], 2);
        if let Command::Rehome(r) = &mut cmd {
            r.layout.body = Some(ObjectId([5; 16]));
            r.layout.k = 2;
        }
        let a = apply(&mut s, &cmd).unwrap();
        assert_eq!((a.refused, a.freed), (None, vec![ObjectId([9; 16])]));
        let v = &s.objects.values().next().unwrap().versions[0];
        assert_eq!(v.part_body(&v.parts[0]), ObjectId([5; 16]));
        let t = s.layout.as_ref().unwrap().transition.clone().unwrap();
        assert_eq!((t.progress.parts_reencoded, s.stale.len()), (1, 0));
    }
    #[test]
    fn a_write_placed_by_the_old_layout_is_revisited_while_open_and_refused_after() {
        let mut s = MemStore::default();
        s.buckets.insert(
            "b".into(),
            crate::meta::BucketRecord {
                name: "b".into(),
                created_ms: 0,
                region: String::new(),
            },
        );
        refused(
            &mut s,
            Command::SetLayout(Box::new(Layout {
                version: 1,
                nodes: nodes(&[1, 2, 3]),
                ..Layout::default()
            })),
        );
        let put = |id: u8, homes: Vec<u64>| Command::PutObject {
            bucket: "b".into(),
            key: "k".into(),
            version: version(id, homes),
        };
        // Before any change, a write on the layout's nodes is stored with nothing listed.
        assert_eq!(refused(&mut s, put(7, vec![1, 3])), None);
        assert!(s.revisits.is_empty());
        refused(&mut s, begin_cmd(2, &[1, 2], LayoutOp::Drain { node: 3 }));
        // Placed by layout 1, committed while the drain of node 3 is open: listed.
        assert_eq!(refused(&mut s, put(8, vec![1, 3])), None);
        let listed: Vec<Revisit> = s.revisits.values().cloned().collect();
        assert_eq!(
            listed,
            vec![Revisit {
                at: PartAt::Object {
                    bucket: "b".into(),
                    key: "k".into(),
                    version_id: "null".into()
                },
                part: 1
            }]
        );
        // A write placed by the new layout is not.
        assert_eq!(refused(&mut s, put(9, vec![1, 2])), None);
        assert_eq!(s.revisits.len(), 1);
        // The drain cannot close while the revisit waits.
        let end = Command::EndTransition { id: 2, now_ms: 9 };
        assert_eq!(refused(&mut s, end.clone()), Some(Refusal::RevisitPending));
        let seq = *s.revisits.keys().next().unwrap();
        assert_eq!(
            refused(&mut s, Command::DropRevisits { seqs: vec![seq] }),
            None
        );
        assert_eq!(refused(&mut s, end), None);
        // Once closed, a write placed by the old layout is refused, to be retried.
        assert_eq!(
            refused(&mut s, put(10, vec![1, 3])),
            Some(Refusal::PlacedOffLayout)
        );
        let current = s.objects.values().next().unwrap().versions[0].object_id;
        assert_eq!(current, ObjectId([9; 16]));
    }
}
