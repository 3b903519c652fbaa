//! `SimNet`: the simulated network that replaces the mTLS peer link. Each node's `PeerLink` is
//! built on a [`SimTransport`]; a request's fate is decided synchronously from the seeded
//! stream when it is sent (STYLE rule 6) — delay, loss, duplication — and only its delivery is
//! deferred, on the paused clock. Concurrent requests with different delays arrive reordered.
//!
//! Failures reach openraft as the real link reports them (rule 7): a partitioned or crashed
//! peer is *unreachable*, a lost request is a *network* error after its delay. Payloads are the
//! production frames, answered by each node's own `RaftService` (Raft RPC) or `ShardService`
//! (shard transfer): each node has one link per channel, as in production.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hamster_actors::peer::{
    BoxFuture, PeerError, PeerLink, PeerRequest, PeerTransport, RaftService,
};
use hamster_actors::transfer::ShardService;
use hamster_protocol::wire::FRAME_HEADER_BYTES;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::event;
use crate::world::{fork, Entropy, Trace};

/// What the network does to messages; per mille probabilities, delays in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Faults {
    /// Chance a request is lost.
    pub loss_per_mille: u32,
    /// Chance a request is delivered twice.
    pub dup_per_mille: u32,
    /// One-way delay range.
    pub delay_ms_min: u64,
    /// Upper end of the delay range.
    pub delay_ms_max: u64,
}

impl Faults {
    /// A quiet LAN: 1–3 ms, nothing lost.
    pub const CALM: Faults = Faults {
        loss_per_mille: 0,
        dup_per_mille: 0,
        delay_ms_min: 1,
        delay_ms_max: 3,
    };

    /// A bad day: delays up to 40 ms, 2% lost, 1% duplicated.
    pub const ROUGH: Faults = Faults {
        loss_per_mille: 20,
        dup_per_mille: 10,
        delay_ms_min: 1,
        delay_ms_max: 40,
    };
}

struct Endpoint {
    service: RaftService,
    /// The node's shard service, once it has one.
    shards: Option<ShardService>,
    incarnation: u64,
    up: bool,
}

/// Which of a node's services a link talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Raft,
    Shard,
}

/// The service that answers a delivered request.
#[derive(Clone)]
enum Receiver {
    Raft(RaftService),
    Shard(ShardService),
}

impl Receiver {
    async fn answer_frame(&self, from: u64, payload: &[u8]) -> Option<Vec<u8>> {
        match self {
            Receiver::Raft(s) => s.answer_frame(from, payload).await,
            Receiver::Shard(s) => s.answer_frame(from, payload).await,
        }
    }
}

struct NetState {
    rng: ChaCha8Rng,
    faults: Faults,
    endpoints: BTreeMap<u64, Endpoint>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(u64, u64)>,
    /// Directed links cut for Raft messages only (shard traffic still flows).
    raft_cut: BTreeSet<(u64, u64)>,
    next_message: u64,
}

impl NetState {
    /// Whether messages on `channel` from `from` to `to` are cut.
    fn is_cut(&self, from: u64, to: u64, channel: Channel) -> bool {
        self.cut.contains(&(from, to))
            || (channel == Channel::Raft && self.raft_cut.contains(&(from, to)))
    }
}

/// The network all simulated nodes share.
#[derive(Clone)]
pub struct SimNet {
    state: Arc<Mutex<NetState>>,
    trace: Trace,
}

/// What happens to one request, decided when it is sent.
enum Fate {
    Unreachable(&'static str),
    Lost {
        delay: Duration,
    },
    Delivered {
        there: Duration,
        back: Duration,
        twice: bool,
        to_incarnation: u64,
    },
}

impl SimNet {
    /// A network drawing its faults from `seed` (or, for the negative control, the OS).
    pub fn new(seed: u64, trace: Trace, entropy: Entropy) -> Self {
        let rng = match entropy {
            Entropy::Seeded => ChaCha8Rng::seed_from_u64(fork(seed, "net", 0, 0)),
            Entropy::Os => os_seeded(),
        };
        SimNet {
            state: Arc::new(Mutex::new(NetState {
                rng,
                faults: Faults::CALM,
                endpoints: BTreeMap::new(),
                cut: BTreeSet::new(),
                raft_cut: BTreeSet::new(),
                next_message: 0,
            })),
            trace,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().expect("net lock")
    }

    /// Sets what the network does to messages from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
        event!(self.trace, "net faults {faults:?}");
    }

    /// Plugs in a (re)started node; returns its incarnation number and its link.
    pub fn attach(&self, id: u64, service: RaftService) -> (u64, PeerLink) {
        let mut s = self.lock();
        let incarnation = s.endpoints.get(&id).map_or(0, |e| e.incarnation + 1);
        s.endpoints.insert(
            id,
            Endpoint {
                service,
                shards: None,
                incarnation,
                up: true,
            },
        );
        let transport = SimTransport {
            net: self.clone(),
            from: id,
            incarnation,
            channel: Channel::Raft,
        };
        (incarnation, PeerLink::with_transport(Arc::new(transport)))
    }

    /// Gives the running incarnation of `id` its shard service; returns its shard link.
    pub fn attach_shards(&self, id: u64, incarnation: u64, service: ShardService) -> PeerLink {
        if let Some(e) = self.lock().endpoints.get_mut(&id) {
            if e.incarnation == incarnation {
                e.shards = Some(service);
            }
        }
        let transport = SimTransport {
            net: self.clone(),
            from: id,
            incarnation,
            channel: Channel::Shard,
        };
        PeerLink::with_transport(Arc::new(transport))
    }

    /// Unplugs a crashed node: nothing reaches it or comes from it any more.
    pub fn crash(&self, id: u64) {
        if let Some(e) = self.lock().endpoints.get_mut(&id) {
            e.up = false;
        }
    }

    /// Cuts every link between nodes of different groups, both ways.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        let mut s = self.lock();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for &x in a {
                        for &y in b {
                            s.cut.insert((x, y));
                        }
                    }
                }
            }
        }
        drop(s);
        event!(self.trace, "net partition {groups:?}");
    }

    /// Cuts the link from `from` to `to` only (answers from `to` still come back on the
    /// requests `to` sends).
    pub fn cut_one_way(&self, from: u64, to: u64) {
        self.lock().cut.insert((from, to));
        event!(self.trace, "net cut {from}->{to}");
    }

    /// Cuts Raft messages from `from` to `to` (answers included) while shard traffic between
    /// them still flows: a member whose consensus traffic is lost one way.
    pub fn cut_raft_one_way(&self, from: u64, to: u64) {
        self.lock().raft_cut.insert((from, to));
        event!(self.trace, "net cut raft {from}->{to}");
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        let mut s = self.lock();
        s.cut.clear();
        s.raft_cut.clear();
        drop(s);
        event!(self.trace, "net heal");
    }

    fn is_up(&self, id: u64, incarnation: u64) -> bool {
        self.lock()
            .endpoints
            .get(&id)
            .is_some_and(|e| e.up && e.incarnation == incarnation)
    }

    fn decide(&self, from: u64, from_incarnation: u64, to: u64, channel: Channel) -> (u64, Fate) {
        let mut s = self.lock();
        let n = s.next_message;
        s.next_message += 1;
        let sender_up = s
            .endpoints
            .get(&from)
            .is_some_and(|e| e.up && e.incarnation == from_incarnation);
        if !sender_up {
            return (n, Fate::Unreachable("sender is down"));
        }
        let Some((to_up, to_incarnation)) = s.endpoints.get(&to).map(|e| (e.up, e.incarnation))
        else {
            return (n, Fate::Unreachable("no such node"));
        };
        if !to_up {
            return (n, Fate::Unreachable("peer is down"));
        }
        if s.is_cut(from, to, channel) {
            return (n, Fate::Unreachable("partitioned"));
        }
        let f = s.faults;
        let delay = |rng: &mut ChaCha8Rng| {
            Duration::from_millis(rng.gen_range(f.delay_ms_min..=f.delay_ms_max))
        };
        let there = delay(&mut s.rng);
        if s.rng.gen_range(0..1000) < f.loss_per_mille {
            return (n, Fate::Lost { delay: there });
        }
        let back = delay(&mut s.rng);
        let twice = s.rng.gen_range(0..1000) < f.dup_per_mille;
        (
            n,
            Fate::Delivered {
                there,
                back,
                twice,
                to_incarnation,
            },
        )
    }

    /// Whether an answer on `channel` from `from` gets back to incarnation `incarnation` of
    /// `to` (up, and the link back not cut).
    fn answer_reaches(&self, from: u64, to: u64, incarnation: u64, channel: Channel) -> bool {
        let s = self.lock();
        let Some(e) = s.endpoints.get(&to) else {
            return false;
        };
        e.up && e.incarnation == incarnation && !s.is_cut(from, to, channel)
    }

    /// The service of `to` if it is still the incarnation the request was sent to, up, and
    /// reachable from `from`.
    fn receiver(&self, from: u64, to: u64, incarnation: u64, channel: Channel) -> Option<Receiver> {
        let s = self.lock();
        let e = s.endpoints.get(&to)?;
        let reachable = !s.is_cut(from, to, channel);
        if !(e.up && e.incarnation == incarnation && reachable) {
            return None;
        }
        match channel {
            Channel::Raft => Some(Receiver::Raft(e.service.clone())),
            Channel::Shard => e.shards.clone().map(Receiver::Shard),
        }
    }
}

/// Seeds the negative control's network from the operating system, so that two runs of one
/// seed must differ.
// The one deliberate entropy source: the negative control must diverge.
#[allow(clippy::disallowed_methods)]
fn os_seeded() -> ChaCha8Rng {
    ChaCha8Rng::from_entropy()
}

/// One node's (one incarnation's) way onto the network.
struct SimTransport {
    net: SimNet,
    from: u64,
    incarnation: u64,
    channel: Channel,
}

/// The request kind, for the trace: the first key of a Raft payload, or the op of a shard
/// request (whose JSON head follows a 4-byte length).
fn kind(channel: Channel, payload: &[u8]) -> String {
    let (skip, prefix) = match channel {
        Channel::Raft => (0, "{\""),
        Channel::Shard => (4, "{\"op\":\""),
    };
    let head = payload.get(skip..).unwrap_or(&[]);
    let text = std::str::from_utf8(&head[..head.len().min(40)]).unwrap_or("");
    let name = text
        .trim_start_matches(prefix)
        .split('"')
        .next()
        .unwrap_or("?");
    match channel {
        Channel::Raft => name.to_string(),
        Channel::Shard => format!("shard-{name}"),
    }
}

impl PeerTransport for SimTransport {
    fn send(&self, req: PeerRequest) -> BoxFuture<'static, Result<Vec<u8>, PeerError>> {
        let net = self.net.clone();
        let (from, from_incarnation, to) = (self.from, self.incarnation, req.to);
        let (n, fate) = net.decide(from, from_incarnation, to, self.channel);
        let what = kind(self.channel, &req.payload);
        let channel = self.channel;
        let unreachable = move |reason: &str| PeerError::Unreachable {
            to,
            addr: req.addr.clone(),
            reason: reason.to_string(),
        };
        Box::pin(async move {
            match fate {
                Fate::Unreachable(reason) => {
                    event!(
                        net.trace,
                        "msg {n} {from}->{to} {what} unreachable: {reason}"
                    );
                    Err(unreachable(reason))
                }
                Fate::Lost { delay } => {
                    event!(net.trace, "msg {n} {from}->{to} {what} lost");
                    tokio::time::sleep(delay).await;
                    Err(PeerError::Network {
                        to,
                        reason: "the message was lost".into(),
                    })
                }
                Fate::Delivered {
                    there,
                    back,
                    twice,
                    to_incarnation,
                } => {
                    event!(
                        net.trace,
                        "msg {n} {from}->{to} {what} +{}ms/+{}ms{}",
                        there.as_millis(),
                        back.as_millis(),
                        if twice { " twice" } else { "" }
                    );
                    let work = deliver(
                        net.clone(),
                        channel,
                        (from, from_incarnation),
                        (to, to_incarnation),
                        req.payload,
                        (there, back, twice),
                    );
                    match tokio::time::timeout(req.timeout, work).await {
                        Ok(Some(answer)) => Ok(answer),
                        Ok(None) => Err(unreachable("the peer went away")),
                        Err(_) => Err(unreachable("no answer in time")),
                    }
                }
            }
        })
    }
}

/// Carries a request there, has it answered, and carries the answer back; `None` when the
/// receiver or the sender went away (crash, partition) on the way.
async fn deliver(
    net: SimNet,
    channel: Channel,
    (from, from_incarnation): (u64, u64),
    (to, to_incarnation): (u64, u64),
    payload: Vec<u8>,
    (there, back, twice): (Duration, Duration, bool),
) -> Option<Vec<u8>> {
    tokio::time::sleep(there).await;
    let service = net.receiver(from, to, to_incarnation, channel)?;
    if twice {
        // The copy arrives a little later and its answer is dropped, as a retransmission's
        // would be.
        let (net2, service2, payload2) = (net.clone(), service.clone(), payload.clone());
        tokio::spawn(async move {
            tokio::time::sleep(there).await;
            if net2.receiver(from, to, to_incarnation, channel).is_some() {
                let _ = service2.answer_frame(from, &payload2).await;
            }
        });
    }
    let frame = service.answer_frame(from, &payload).await?;
    tokio::time::sleep(back).await;
    if !net.is_up(from, from_incarnation)
        || !net.answer_reaches(to, from, from_incarnation, channel)
    {
        return None;
    }
    Some(frame[FRAME_HEADER_BYTES..].to_vec())
}
