//! openraft reports every failed RPC to a peer that is down — a WARN and an ERROR per retry,
//! several a second per peer — which buried everything else in the log during a failover or
//! while a member was stopped. This layer holds those lines back (they say nothing `hamster
//! status` does not) and counts them; [`flush`] reports the count at WARN at most once per
//! [`RAFT_NOISE_EVERY`]. Any other openraft line passes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// How often the held-back count is reported.
pub const RAFT_NOISE_EVERY: Duration = Duration::from_secs(60);

static HELD: AtomicU64 = AtomicU64::new(0);

/// The layer; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnreachablePeerNoise;

impl<S: Subscriber> Layer<S> for UnreachablePeerNoise {
    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || !meta.target().starts_with("openraft") {
            return true;
        }
        let mut text = Fields::default();
        event.record(&mut text);
        if about_an_unreachable_peer(&text.0) {
            HELD.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Whether an openraft line only says that a peer could not be reached (down, restarting, or
/// its connection cut): errors of our peer link, which openraft retries by itself.
fn about_an_unreachable_peer(fields: &str) -> bool {
    fields.contains("Unreachable node")
        || fields.contains("is unreachable")
        || fields.contains("peer::PeerError")
        || fields.contains("timeout while confirming leadership")
        // openraft's replication to a peer it backs off from (only an unreachable peer makes
        // it back off) says so at every pause, five times a second.
        || fields.contains("backoff mode: drain events")
}

/// Reports how many lines were held back since the last report, if any.
pub fn flush() {
    let held = HELD.swap(0, Ordering::Relaxed);
    if held > 0 {
        tracing::warn!(
            held_back = held,
            "Raft could not reach a member: {held} retry lines held back in the last {} s (`hamster status` shows which member is unreachable)",
            RAFT_NOISE_EVERY.as_secs()
        );
    }
}

#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreachable_peer_lines_are_held_back() {
        assert!(about_an_unreachable_peer(
            "message=RPCError err=Unreachable node: node 12 at 127.0.0.1:1 is unreachable"
        ));
        assert!(about_an_unreachable_peer(
            "message=error replication to target=3 error=Unreachable node: peer error"
        ));
        assert!(about_an_unreachable_peer(
            "message=RPCError err=NetworkError: hamster_actors::peer::PeerError: the peer closed the connection"
        ));
        assert!(about_an_unreachable_peer(
            "message=timeout while confirming leadership for read request target=3 error=timeout"
        ));
        assert!(about_an_unreachable_peer(
            "message=openraft::replication::ReplicationCore<_, _, _>::backoff_drain_events backoff mode: drain events without processing them interval=199.99ms"
        ));
        assert!(!about_an_unreachable_peer(
            "message=A message will be ignored because vote changed"
        ));
        assert!(!about_an_unreachable_peer(
            "message=storage error: lmdb: No space left"
        ));
    }
}
