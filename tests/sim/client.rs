//! The workload and its model. Simulated clients issue S3-level metadata operations (bucket
//! create/delete, object put/delete/get/list) against random running nodes through the same
//! `RaftNode` messages the S3 front sends (`Propose`, `CatchUp`, `GetObject`, `ListObjects`),
//! record every answer, and check reads against the [`Model`] as they go.
//!
//! The model stays exact under ambiguity: a write whose outcome is unknown (timeout, node gone)
//! may still take effect at any later time, so the client *retires* that key or bucket — never
//! writes it again — and the model keeps both the last acknowledged state and the unknown one
//! as possible. A key's possible states are therefore never more than two.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use hamster_actors::clock::Clock;
use std::time::Duration;

use hamster_actors::raft::node::CatchUp;
use hamster_actors::raft::{GetObject, ListObjects};
use hamster_protocol::listing::ListParams;
use hamster_protocol::meta::{BucketRecord, Command, ObjectId, ObjectVersion, Refusal};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cluster::Sim;
use crate::event;
use crate::invariants::read_your_writes;
use crate::world::fork;

/// The bucket every client writes its objects into; created before the workload starts.
pub const BUCKET: &str = "sim";
/// How long a client waits for one answer (simulated).
const OP_WAIT: Duration = Duration::from_secs(10);
/// Keys a client works on at once.
const KEY_SLOTS: usize = 3;

/// What the clients know the cluster must hold.
#[derive(Default)]
pub struct Model {
    /// Object key → the states it may be in (`None` = absent), ETags standing for versions.
    pub keys: RefCell<BTreeMap<String, Vec<Option<String>>>>,
    /// Client bucket → whether it may exist, per possible state.
    pub buckets: RefCell<BTreeMap<String, Vec<bool>>>,
    /// ETag → MD5 of the whole body, for every body the S3 clients sent.
    pub bodies: RefCell<BTreeMap<String, String>>,
    /// Object bodies (and parts) whose shard a disk rotted on purpose: reading them must fail
    /// rather than return other bytes.
    pub rotted: RefCell<BTreeSet<(ObjectId, u32)>>,
    /// Counters for the trace.
    pub stats: RefCell<Stats>,
}

/// What the workload did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Writes acknowledged.
    pub acked: u64,
    /// Writes whose outcome is unknown.
    pub unknown: u64,
    /// Reads checked against the model.
    pub reads: u64,
}

impl Model {
    /// The states `key` may be in.
    pub fn key_states(&self, key: &str) -> Vec<Option<String>> {
        self.keys
            .borrow()
            .get(key)
            .cloned()
            .unwrap_or_else(|| vec![None])
    }

    /// Records a write of `key` to `state`: acknowledged, or of unknown outcome.
    pub fn settle_key(&self, key: &str, state: Option<String>, acked: bool) {
        let mut keys = self.keys.borrow_mut();
        let states = keys.entry(key.to_string()).or_insert_with(|| vec![None]);
        if acked {
            *states = vec![state];
        } else {
            states.push(state);
        }
    }

    /// Records a create (`exists`) or delete of bucket `name`: acknowledged, or unknown.
    pub fn settle_bucket(&self, name: &str, exists: bool, acked: bool) {
        let mut buckets = self.buckets.borrow_mut();
        let states = buckets
            .entry(name.to_string())
            .or_insert_with(|| vec![false]);
        if acked {
            *states = vec![exists];
        } else {
            states.push(exists);
        }
    }
}

/// How a write ended.
enum Outcome {
    Acked,
    Refused,
    Unknown,
}

/// One simulated client.
struct Client {
    id: u64,
    sim: Rc<Sim>,
    model: Rc<Model>,
    rng: ChaCha8Rng,
    keys: Vec<String>,
    bucket: String,
    generation: u64,
    written: u64,
}

impl Client {
    fn fresh_name(&mut self, what: &str) -> String {
        self.generation += 1;
        format!("c{}-{what}{}", self.id, self.generation)
    }

    async fn write(&mut self, node: u64, cmd: Command) -> Outcome {
        let Some(addr) = self.sim.addr(node) else {
            return Outcome::Refused;
        };
        let answer = tokio::time::timeout(OP_WAIT, addr.send(hamster_actors::raft::Propose(cmd)));
        match answer.await {
            Ok(Ok(Ok(applied))) if applied.refused.is_none() => Outcome::Acked,
            Ok(Ok(Ok(_))) => Outcome::Refused,
            _ => Outcome::Unknown,
        }
    }

    async fn put(&mut self, node: u64, slot: usize) {
        self.written += 1;
        let key = self.keys[slot].clone();
        let etag = format!("c{}-v{}", self.id, self.written);
        let mut id = [0u8; 16];
        self.rng.fill(&mut id);
        let version = ObjectVersion {
            version_id: "null".into(),
            object_id: ObjectId(id),
            size: 0,
            etag: etag.clone(),
            last_modified_ms: self.sim.clock.now_ms(),
            content_type: "application/octet-stream".into(),
            headers: BTreeMap::new(),
            user_meta: BTreeMap::new(),
            checksums: BTreeMap::new(),
            parts: Vec::new(),
        };
        let cmd = Command::PutObject {
            bucket: BUCKET.into(),
            key: key.clone(),
            version,
        };
        let outcome = self.write(node, cmd).await;
        self.record(&key, Some(etag), outcome, slot, "put", node);
    }

    async fn delete(&mut self, node: u64, slot: usize) {
        let key = self.keys[slot].clone();
        let cmd = Command::DeleteObject {
            bucket: BUCKET.into(),
            key: key.clone(),
        };
        let outcome = self.write(node, cmd).await;
        self.record(&key, None, outcome, slot, "delete", node);
    }

    fn record(
        &mut self,
        key: &str,
        state: Option<String>,
        outcome: Outcome,
        slot: usize,
        op: &str,
        node: u64,
    ) {
        let mut stats = self.model.stats.borrow_mut();
        match outcome {
            Outcome::Acked => {
                stats.acked += 1;
                self.model.settle_key(key, state.clone(), true);
                event!(
                    self.sim.trace,
                    "client {} {op} {key}={state:?} via {node}: ok",
                    self.id
                );
            }
            Outcome::Refused => {
                event!(
                    self.sim.trace,
                    "client {} {op} {key} via {node}: refused",
                    self.id
                );
            }
            Outcome::Unknown => {
                stats.unknown += 1;
                self.model.settle_key(key, state.clone(), false);
                drop(stats);
                let next = self.fresh_name("k");
                event!(
                    self.sim.trace,
                    "client {} {op} {key}={state:?} via {node}: unknown; retire for {next}",
                    self.id
                );
                self.keys[slot] = next;
            }
        }
    }

    /// Reads one key on `node` after catching up, and checks it against the model.
    async fn get(&mut self, node: u64, slot: usize) {
        let Some(addr) = self.sim.addr(node) else {
            return;
        };
        let key = self.keys[slot].clone();
        if !matches!(
            tokio::time::timeout(OP_WAIT, addr.send(CatchUp)).await,
            Ok(Ok(Ok(())))
        ) {
            return;
        }
        let expected = self.model.key_states(&key);
        let read = GetObject {
            bucket: BUCKET.into(),
            key: key.clone(),
        };
        let Ok(Ok(Ok(versions))) = tokio::time::timeout(OP_WAIT, addr.send(read)).await else {
            return;
        };
        let seen = versions.and_then(|v| v.current().map(|c| c.etag.clone()));
        self.model.stats.borrow_mut().reads += 1;
        event!(
            self.sim.trace,
            "client {} get {key} via {node}: {seen:?}",
            self.id
        );
        if let Err(e) = read_your_writes::check(&key, &expected, seen.as_deref(), node) {
            self.sim.obs.violate(e);
        }
    }

    /// Lists this client's keys on `node` after catching up; each live key must be listed
    /// or not as the model allows.
    async fn list(&mut self, node: u64) {
        let Some(addr) = self.sim.addr(node) else {
            return;
        };
        if !matches!(
            tokio::time::timeout(OP_WAIT, addr.send(CatchUp)).await,
            Ok(Ok(Ok(())))
        ) {
            return;
        }
        let expected: Vec<(String, Vec<Option<String>>)> = self
            .keys
            .iter()
            .map(|k| (k.clone(), self.model.key_states(k)))
            .collect();
        let list = ListObjects {
            bucket: BUCKET.into(),
            params: ListParams {
                prefix: format!("c{}-", self.id),
                delimiter: None,
                after: None,
                max_keys: 1000,
            },
        };
        let Ok(Ok(Ok(page))) = tokio::time::timeout(OP_WAIT, addr.send(list)).await else {
            return;
        };
        let listed: BTreeMap<String, String> =
            page.objects.into_iter().map(|(k, v)| (k, v.etag)).collect();
        event!(
            self.sim.trace,
            "client {} list via {node}: {} keys",
            self.id,
            listed.len()
        );
        for (key, states) in expected {
            self.model.stats.borrow_mut().reads += 1;
            let seen = listed.get(&key).map(String::as_str);
            if let Err(e) = read_your_writes::check(&key, &states, seen, node) {
                self.sim.obs.violate(e);
            }
        }
    }

    /// Creates or deletes this client's bucket, whichever the model says is possible.
    async fn bucket_op(&mut self, node: u64) {
        let name = self.bucket.clone();
        let states = self
            .model
            .buckets
            .borrow()
            .get(&name)
            .cloned()
            .unwrap_or_else(|| vec![false]);
        let exists = states == [true];
        let cmd = if exists {
            Command::DeleteBucket { name: name.clone() }
        } else {
            Command::CreateBucket(BucketRecord {
                name: name.clone(),
                created_ms: self.sim.clock.now_ms(),
                region: "us-east-1".into(),
            })
        };
        let outcome = self.write(node, cmd).await;
        let op = if exists {
            "delete-bucket"
        } else {
            "create-bucket"
        };
        match outcome {
            Outcome::Acked => {
                self.model.stats.borrow_mut().acked += 1;
                self.model.settle_bucket(&name, !exists, true);
                event!(
                    self.sim.trace,
                    "client {} {op} {name} via {node}: ok",
                    self.id
                );
            }
            Outcome::Refused => {
                event!(
                    self.sim.trace,
                    "client {} {op} {name} via {node}: refused",
                    self.id
                );
            }
            Outcome::Unknown => {
                self.model.stats.borrow_mut().unknown += 1;
                self.model.settle_bucket(&name, !exists, false);
                self.bucket = self.fresh_name("b");
                event!(
                    self.sim.trace,
                    "client {} {op} {name} via {node}: unknown; retire for {}",
                    self.id,
                    self.bucket
                );
            }
        }
    }

    async fn run(mut self, ops: u64, pace_ms: u64) {
        for _ in 0..ops {
            let Some(node) = pause_and_pick(&self.sim, &mut self.rng, pace_ms).await else {
                continue;
            };
            let slot = self.rng.gen_range(0..KEY_SLOTS);
            match self.rng.gen_range(0..100) {
                0..45 => self.put(node, slot).await,
                45..60 => self.delete(node, slot).await,
                60..85 => self.get(node, slot).await,
                85..95 => self.list(node).await,
                _ => self.bucket_op(node).await,
            }
        }
    }
}

/// Runs `clients` clients of `ops` operations each, pausing up to `pace_ms` between
/// operations, and returns once all are done.
pub async fn workload(sim: Rc<Sim>, model: Rc<Model>, clients: u64, ops: u64, pace_ms: u64) {
    let mut running = Vec::new();
    for id in 0..clients {
        let mut client = Client {
            id,
            sim: sim.clone(),
            model: model.clone(),
            rng: ChaCha8Rng::seed_from_u64(fork(sim.seed, "client", id, 0)),
            keys: Vec::new(),
            bucket: String::new(),
            generation: 0,
            written: 0,
        };
        client.keys = (0..KEY_SLOTS).map(|_| client.fresh_name("k")).collect();
        client.bucket = client.fresh_name("b");
        running.push(client.run(ops, pace_ms));
    }
    run_all(running).await;
    let stats = *model.stats.borrow();
    event!(sim.trace, "workload done: {stats:?}");
}

/// Pauses up to `pace_ms`, then picks a running node at random (`None` when none runs): the
/// start of every simulated client's step.
pub async fn pause_and_pick(sim: &Sim, rng: &mut ChaCha8Rng, pace_ms: u64) -> Option<u64> {
    let pause = rng.gen_range(0..=pace_ms);
    tokio::time::sleep(Duration::from_millis(pause)).await;
    let up = sim.up();
    (!up.is_empty()).then(|| up[rng.gen_range(0..up.len())])
}

/// Runs every client as its own task and returns once all are done.
pub async fn run_all<F: std::future::Future<Output = ()> + 'static>(clients: Vec<F>) {
    let running: Vec<_> = clients.into_iter().map(actix_rt::spawn).collect();
    for c in running {
        let _ = c.await;
    }
}

/// Creates the shared bucket, retrying through elections.
pub async fn create_bucket(sim: &Sim) -> Result<(), String> {
    let cmd = Command::CreateBucket(BucketRecord {
        name: BUCKET.into(),
        created_ms: sim.clock.now_ms(),
        region: "us-east-1".into(),
    });
    let applied = sim.propose_on_leader(cmd).await?;
    match applied.refused {
        // A retry after an attempt that did commit finds the bucket there.
        None | Some(Refusal::BucketAlreadyOwnedByYou) => Ok(()),
        Some(r) => Err(format!("creating the shared bucket was refused: {r:?}")),
    }
}
