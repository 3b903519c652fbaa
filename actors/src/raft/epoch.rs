//! The cluster epoch: a number every Raft RPC carries, raised only by `hamster recover`.
//!
//! `recover` rewrites a survivor's membership outside of Raft, so the members it dropped still
//! hold the old membership and, if they come back, could elect a leader of their own and
//! overwrite the survivor's log (which openraft answers with a panic). The epoch fences them:
//! the recovered node starts in a higher epoch; a node refuses every Raft RPC from a lower
//! epoch with [`RaftResponse::Fenced`](super::network::RaftResponse::Fenced), and adopts a
//! higher epoch from a request (a kept member learning of the recovery from the new leader).
//! A node told it is fenced learns that it was removed and stops (see [`Epoch::fenced`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

/// Persists a newly adopted epoch before the node acts on it.
pub type PersistEpoch = Arc<dyn Fn(u64) -> std::io::Result<()> + Send + Sync>;

/// This node's epoch, shared by its Raft member (inbound checks) and its network (outbound
/// requests). Cloning shares it.
#[derive(Clone)]
pub struct Epoch {
    value: Arc<AtomicU64>,
    persist: Option<PersistEpoch>,
    fenced: Arc<watch::Sender<Option<u64>>>,
    removed: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch").field("value", &self.get()).finish()
    }
}

/// What to do with a request from a peer in epoch `theirs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Same epoch (or a newer one, now adopted): serve it.
    Serve,
    /// The peer is of an older epoch: refuse it, telling it ours.
    Fence {
        /// Our epoch.
        ours: u64,
    },
}

impl Epoch {
    /// Epoch `value`; `persist` (if any) records an adopted epoch durably.
    pub fn new(value: u64, persist: Option<PersistEpoch>) -> Self {
        Epoch {
            value: Arc::new(AtomicU64::new(value)),
            persist,
            fenced: Arc::new(watch::channel(None).0),
            removed: Arc::new(watch::channel(false).0),
        }
    }

    /// The current epoch.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::SeqCst)
    }

    /// Decides about a request from epoch `theirs`, adopting it if it is newer. An epoch that
    /// cannot be persisted is not adopted (the request is refused as if fenced, so the sender
    /// retries).
    pub fn admit(&self, theirs: u64) -> Admission {
        let ours = self.get();
        if theirs < ours {
            return Admission::Fence { ours };
        }
        if theirs > ours {
            if let Err(e) = self.adopt(theirs) {
                tracing::warn!(epoch = theirs, error = %e, "cannot record the cluster's new epoch");
                return Admission::Fence { ours };
            }
        }
        Admission::Serve
    }

    /// Moves to epoch `epoch` (never back), persisting it first.
    pub fn adopt(&self, epoch: u64) -> std::io::Result<()> {
        if epoch <= self.get() {
            return Ok(());
        }
        if let Some(persist) = &self.persist {
            persist(epoch)?;
        }
        self.value.fetch_max(epoch, Ordering::SeqCst);
        tracing::info!(
            epoch,
            "this node follows the cluster into a new epoch (after a recover)"
        );
        Ok(())
    }

    /// A peer answered that it is in epoch `theirs`, newer than ours: this node was dropped by
    /// a `hamster recover` and must stop. Only the first report is kept.
    pub fn fenced_by(&self, theirs: u64) {
        if theirs > self.get() {
            self.fenced.send_if_modified(|f| {
                let first = f.is_none();
                if first {
                    *f = Some(theirs);
                }
                first
            });
        }
    }

    /// A peer answered that this node was removed from the cluster for good: it must stop.
    pub fn removed_by_cluster(&self) {
        self.removed
            .send_if_modified(|r| !std::mem::replace(r, true));
    }

    /// Turns true once a peer said this node was removed for good.
    pub fn removed(&self) -> watch::Receiver<bool> {
        self.removed.subscribe()
    }

    /// Fires with the newer epoch once a peer fenced this node.
    pub fn fenced(&self) -> watch::Receiver<Option<u64>> {
        self.fenced.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_peers_are_fenced_and_newer_epochs_adopted() {
        let e = Epoch::new(2, None);
        assert_eq!(e.admit(1), Admission::Fence { ours: 2 });
        assert_eq!(e.admit(2), Admission::Serve);
        assert_eq!(e.admit(3), Admission::Serve);
        assert_eq!(e.get(), 3);
        assert_eq!(e.admit(2), Admission::Fence { ours: 3 });
    }

    #[test]
    fn an_epoch_that_cannot_be_recorded_is_not_adopted() {
        let failing: PersistEpoch = Arc::new(|_| Err(std::io::Error::other("disk full")));
        let e = Epoch::new(1, Some(failing));
        assert_eq!(e.admit(2), Admission::Fence { ours: 1 });
        assert_eq!(e.get(), 1);
    }

    #[test]
    fn only_a_newer_epoch_fences() {
        let e = Epoch::new(4, None);
        let rx = e.fenced();
        e.fenced_by(3);
        assert_eq!(*rx.borrow(), None);
        e.fenced_by(5);
        e.fenced_by(6);
        assert_eq!(*rx.borrow(), Some(5));
    }
}
