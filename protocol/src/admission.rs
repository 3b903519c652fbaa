//! Who may hold a connection on the cluster port: the pure admission rule the listener applies
//! (DESIGN §4), so that a flood of idle or stalled connections cannot lock members out.
//!
//! A connection passes through three pools, each with its own cap:
//!
//! - **pending**: accepted, TLS handshake not finished. Nothing is known about the client yet,
//!   so a newcomer is always let in; when its source already holds `pending_per_source_max`
//!   handshakes, or the pool holds `pending_max`, one pending handshake is evicted instead:
//!   from the newcomer's own source in the first case, from the source holding the most in the
//!   second, and within that source the oldest one that has not even sent a whole ClientHello,
//!   else the oldest. A client that completes its handshake promptly therefore survives any
//!   number of idle or stalled connections, and a flood from one address evicts its own
//!   connections before anyone else's.
//! - **members**: the handshake verified a node certificate of this cluster (a peer, or the
//!   local CLI, which uses its node's certificate). Capped at `members_max`; past it a newcomer
//!   is refused, since only holders of cluster certificates can fill this pool.
//! - **joiners**: the handshake finished without a certificate, on the join protocol. Anyone
//!   can get here, so the pool has its own cap (`joiners_max`) and evicts like the pending one,
//!   which keeps anonymous clients from ever taking a member's slot.
//!
//! Connection ids are given in arrival order, so a smaller id is an older connection.

use std::collections::BTreeMap;

/// A connection's id on the port: a counter in arrival order.
pub type ConnectionId = u64;

/// The caps of the three pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections still in their TLS handshake.
    pub pending_max: usize,
    /// Most handshakes one source address may have pending.
    pub pending_per_source_max: usize,
    /// Most connections authenticated by a cluster node certificate.
    pub members_max: usize,
    /// Most anonymous connections on the join protocol after their handshake.
    pub joiners_max: usize,
}

/// What a finished handshake showed the client to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// It presented a node certificate of this cluster.
    Member,
    /// It presented no certificate and asked for the join protocol.
    Joiner,
}

/// The answer to a finished handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; if `evict` names a connection, close that one first.
    Admit {
        /// A connection of the same pool to close to make room.
        evict: Option<ConnectionId>,
    },
    /// Close it: its pool is full, or it was already evicted while finishing its handshake.
    Refuse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry<S> {
    source: S,
    /// Whether a whole ClientHello has arrived (always true for finished handshakes).
    hello: bool,
}

/// The admission table of one cluster port, generic over the source address type `S`.
#[derive(Debug, Clone)]
pub struct PortAdmission<S> {
    limits: Limits,
    pending: BTreeMap<ConnectionId, Entry<S>>,
    members: BTreeMap<ConnectionId, S>,
    joiners: BTreeMap<ConnectionId, Entry<S>>,
}

impl<S: Ord + Clone> PortAdmission<S> {
    /// An empty table with `limits`; every cap must be at least 1.
    pub fn new(limits: Limits) -> Self {
        assert!(limits.pending_max >= 1 && limits.pending_per_source_max >= 1);
        assert!(limits.members_max >= 1 && limits.joiners_max >= 1);
        PortAdmission {
            limits,
            pending: BTreeMap::new(),
            members: BTreeMap::new(),
            joiners: BTreeMap::new(),
        }
    }

    /// A new connection `id` from `source` starts its handshake. It is always let in; the
    /// answer names the pending connection evicted to make room for it, if any. `id` must be
    /// newer than every connection the table has seen.
    pub fn arrive(&mut self, id: ConnectionId, source: S) -> Option<ConnectionId> {
        assert!(
            self.newest().is_none_or(|newest| id > newest),
            "connection ids are given in arrival order"
        );
        let from_source = self.pending.values().filter(|e| e.source == source).count();
        let victim = if from_source >= self.limits.pending_per_source_max {
            pick_victim(&self.pending, &source)
        } else if self.pending.len() >= self.limits.pending_max {
            heaviest_source(&self.pending, &source).and_then(|s| pick_victim(&self.pending, &s))
        } else {
            None
        };
        if let Some(v) = victim {
            self.pending.remove(&v);
        }
        self.pending.insert(
            id,
            Entry {
                source,
                hello: false,
            },
        );
        assert!(self.pending.len() <= self.limits.pending_max);
        victim
    }

    /// The whole ClientHello of `id` has arrived: it is now evicted only after every pending
    /// connection of its source that has not got this far.
    pub fn hello(&mut self, id: ConnectionId) {
        if let Some(entry) = self.pending.get_mut(&id) {
            entry.hello = true;
        }
    }

    /// The handshake of `id` finished and showed it to be of `class`.
    pub fn authenticate(&mut self, id: ConnectionId, class: Class) -> Verdict {
        let Some(entry) = self.pending.remove(&id) else {
            return Verdict::Refuse;
        };
        match class {
            Class::Member => {
                if self.members.len() >= self.limits.members_max {
                    return Verdict::Refuse;
                }
                self.members.insert(id, entry.source);
                Verdict::Admit { evict: None }
            }
            Class::Joiner => {
                let evict = if self.joiners.len() >= self.limits.joiners_max {
                    heaviest_source(&self.joiners, &entry.source)
                        .and_then(|s| pick_victim(&self.joiners, &s))
                } else {
                    None
                };
                if let Some(v) = evict {
                    self.joiners.remove(&v);
                }
                self.joiners.insert(
                    id,
                    Entry {
                        source: entry.source,
                        hello: true,
                    },
                );
                assert!(self.joiners.len() <= self.limits.joiners_max);
                Verdict::Admit { evict }
            }
        }
    }

    /// Connection `id` ended (or was closed); it no longer holds a slot. Unknown ids are
    /// ignored, since an evicted connection reports its end too.
    pub fn close(&mut self, id: ConnectionId) {
        self.pending.remove(&id);
        self.members.remove(&id);
        self.joiners.remove(&id);
    }

    /// Connections still in their handshake.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Connections authenticated as members.
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// Anonymous join connections past their handshake.
    pub fn joiners(&self) -> usize {
        self.joiners.len()
    }

    fn newest(&self) -> Option<ConnectionId> {
        [
            self.pending.keys().next_back(),
            self.members.keys().next_back(),
            self.joiners.keys().next_back(),
        ]
        .into_iter()
        .flatten()
        .max()
        .copied()
    }
}

/// The source holding the most entries; on a tie the newcomer's own source, else the smallest.
fn heaviest_source<S: Ord + Clone>(
    entries: &BTreeMap<ConnectionId, Entry<S>>,
    newcomer: &S,
) -> Option<S> {
    let mut counts: BTreeMap<&S, usize> = BTreeMap::new();
    for e in entries.values() {
        *counts.entry(&e.source).or_default() += 1;
    }
    let most = counts.values().copied().max()?;
    if counts.get(newcomer) == Some(&most) {
        return Some(newcomer.clone());
    }
    counts
        .into_iter()
        .find(|(_, n)| *n == most)
        .map(|(s, _)| s.clone())
}

/// The oldest entry of `source` that has not sent a whole ClientHello, else its oldest.
fn pick_victim<S: Ord>(
    entries: &BTreeMap<ConnectionId, Entry<S>>,
    source: &S,
) -> Option<ConnectionId> {
    let mut of_source = entries.iter().filter(|(_, e)| &e.source == source);
    let oldest = of_source.clone().next().map(|(id, _)| *id);
    of_source
        .find(|(_, e)| !e.hello)
        .map(|(id, _)| *id)
        .or(oldest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        pending_max: 8,
        pending_per_source_max: 4,
        members_max: 3,
        joiners_max: 2,
    };

    /// Source addresses as small numbers: 0 plays the flooder, others honest clients.
    fn table() -> PortAdmission<u8> {
        PortAdmission::new(LIMITS)
    }

    #[test]
    fn below_the_caps_nothing_is_evicted() {
        let mut t = table();
        for id in 0..4 {
            assert_eq!(t.arrive(id, 0), None);
        }
        for id in 4..8 {
            assert_eq!(t.arrive(id, 1), None);
        }
        assert_eq!(t.pending(), 8);
    }

    #[test]
    fn a_source_over_its_share_evicts_its_own_oldest_idle_handshake() {
        let mut t = table();
        t.arrive(0, 1);
        for id in 1..5 {
            t.arrive(id, 0);
        }
        t.hello(1);
        // Source 0 holds four; its fifth evicts 2, the oldest of its own without a ClientHello
        // (1 has sent one), and never source 1's connection.
        assert_eq!(t.arrive(5, 0), Some(2));
        assert_eq!(t.arrive(6, 0), Some(3));
        assert_eq!(t.arrive(7, 0), Some(4));
        assert_eq!(t.arrive(8, 0), Some(5));
        assert_eq!(t.pending(), 5);
    }

    #[test]
    fn a_full_pool_evicts_from_the_heaviest_source() {
        let mut t = table();
        // Source 0 holds its full share of four, sources 1 and 2 two each: the pool is full.
        for id in 0..4 {
            t.arrive(id, 0);
        }
        for id in 4..8u64 {
            t.arrive(id, 1 + (id % 2) as u8);
        }
        // A newcomer from anywhere else costs the heaviest source its oldest handshake.
        assert_eq!(t.arrive(8, 3), Some(0));
        assert_eq!(t.arrive(9, 4), Some(1));
        // Now sources 0, 1 and 2 tie at two: the smallest pays for a fresh source...
        assert_eq!(t.arrive(10, 5), Some(2));
        // ...and on a tie with the newcomer's own source, that source pays.
        assert_eq!(t.arrive(11, 2), Some(5));
        assert_eq!(t.pending(), 8);
    }

    #[test]
    fn an_honest_handshake_survives_a_flood_of_idle_connections() {
        let mut t = table();
        for id in 0..4 {
            t.arrive(id, 0);
        }
        // The honest client shares the flooder's address (loopback) and sends its ClientHello
        // at once, as every TLS client does.
        t.arrive(4, 0);
        t.hello(4);
        for id in 5..10_000 {
            let evicted = t.arrive(id, 0);
            assert_ne!(evicted, Some(4), "the honest handshake was evicted at {id}");
            // The flooder reopens whatever was closed; each reopen is a new idle connection.
        }
        assert_eq!(
            t.authenticate(4, Class::Member),
            Verdict::Admit { evict: None }
        );
        assert_eq!(t.members(), 1);
    }

    #[test]
    fn members_have_their_own_pool_and_a_full_one_refuses() {
        let mut t = table();
        for id in 0..4 {
            t.arrive(id, 1);
            assert_eq!(t.pending(), 1);
            if id < 3 {
                assert_eq!(
                    t.authenticate(id, Class::Member),
                    Verdict::Admit { evict: None }
                );
            }
        }
        assert_eq!(t.authenticate(3, Class::Member), Verdict::Refuse);
        assert_eq!(t.members(), 3);
        // A flood of pending handshakes leaves the members where they are.
        for id in 4..100 {
            t.arrive(id, 0);
        }
        assert_eq!(t.members(), 3);
        t.close(0);
        t.arrive(100, 1);
        assert_eq!(
            t.authenticate(100, Class::Member),
            Verdict::Admit { evict: None }
        );
    }

    #[test]
    fn joiners_never_take_a_member_slot_and_evict_their_oldest() {
        let mut t = table();
        for id in 0..3 {
            t.arrive(id, 0);
        }
        assert_eq!(
            t.authenticate(0, Class::Joiner),
            Verdict::Admit { evict: None }
        );
        assert_eq!(
            t.authenticate(1, Class::Joiner),
            Verdict::Admit { evict: None }
        );
        assert_eq!(
            t.authenticate(2, Class::Joiner),
            Verdict::Admit { evict: Some(0) }
        );
        assert_eq!((t.joiners(), t.members()), (2, 0));
        t.arrive(3, 0);
        assert_eq!(
            t.authenticate(3, Class::Member),
            Verdict::Admit { evict: None }
        );
    }

    #[test]
    fn an_evicted_handshake_that_finishes_is_refused_and_its_end_is_harmless() {
        let mut t = table();
        for id in 0..4 {
            t.arrive(id, 0);
        }
        assert_eq!(t.arrive(4, 0), Some(0));
        assert_eq!(t.authenticate(0, Class::Member), Verdict::Refuse);
        t.close(0);
        t.close(4);
        assert_eq!((t.pending(), t.members(), t.joiners()), (3, 0, 0));
    }

    #[test]
    #[should_panic(expected = "arrival order")]
    fn ids_must_come_in_arrival_order() {
        let mut t = table();
        t.arrive(5, 0);
        t.arrive(5, 1);
    }
}
