//! S3 clients: signed S3 requests run through each node's real `S3Exchange` — the actor the
//! HTTP front hands every request to — with SigV4 authentication, forwarding, read index and
//! shard files included; only the socket is left out. Bodies are random; the model keeps each
//! acknowledged ETag and the MD5 of its body, and a GET must return exactly those bytes.
//!
//! Until objects are erasure-coded across nodes, an object's bytes live on the node that took
//! the PUT; a GET elsewhere may fail, and then checks nothing. Metadata (HEAD, LIST, DELETE,
//! bucket create and delete, multipart completion) works through any node and is checked
//! everywhere.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::Method;
use actix_web::test::TestRequest;
use hamster_actors::clock::Clock;
use hamster_actors::s3::S3Exchange;
use hamster_bench::signer::Signer;
use hamster_protocol::meta::{AccessKey, Command};
use hamster_protocol::sigv4::UNSIGNED_PAYLOAD;
use md5::{Digest, Md5};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::client::{pause_and_pick, run_all, Model, BUCKET};
use crate::cluster::Sim;
use crate::event;
use crate::invariants::read_your_writes;
use crate::world::fork;

/// The region the simulated fronts serve.
pub const REGION: &str = "us-east-1";
const ACCESS_KEY: &str = "SIMKEY0000000000000";
const SECRET_KEY: &str = "sim-secret-key-0000000000000000000000000";
/// How long a client waits for one answer (simulated).
const OP_WAIT: Duration = Duration::from_secs(15);
/// Largest random body.
const BODY_BYTES_MAX: usize = 48 * 1024;
/// Keys one client works on at once.
const KEY_SLOTS: usize = 2;

/// Registers the clients' root access key, retrying through elections.
pub async fn enable(sim: &Sim) -> Result<(), String> {
    let key = AccessKey {
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
        name: "sim".into(),
        root: true,
        grants: BTreeMap::new(),
        created_ms: sim.clock.now_ms(),
    };
    sim.propose_on_leader(Command::PutAccessKey(key)).await?;
    Ok(())
}

/// One answer.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The ETag header, unquoted.
    pub etag: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

/// Sends one signed request to node `node`'s S3 front; `None` if the node is down or the
/// answer did not come in time.
pub async fn send(
    sim: &Sim,
    node: u64,
    method: &str,
    path: &str,
    query: &str,
    body: Vec<u8>,
) -> Option<Answer> {
    send_with(sim, node, method, path, query, body, &[]).await
}

/// [`send`] with extra (unsigned) headers, such as `range`.
pub async fn send_with(
    sim: &Sim,
    node: u64,
    method: &str,
    path: &str,
    query: &str,
    body: Vec<u8>,
    headers: &[(&str, String)],
) -> Option<Answer> {
    let state = sim.s3(node)?;
    let host = format!("sim-{node}:9000");
    let mut signer = Signer::new(ACCESS_KEY, SECRET_KEY, REGION, &host);
    let signed = signer.sign(method, path, query, UNSIGNED_PAYLOAD, sim.clock.now_ms());
    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut req = TestRequest::default()
        .method(Method::from_bytes(method.as_bytes()).expect("a method"))
        .uri(&uri)
        .insert_header(("host", host))
        .insert_header(("x-amz-date", signed.amz_date))
        .insert_header(("x-amz-content-sha256", signed.content_sha256))
        .insert_header(("authorization", signed.authorization))
        .insert_header(("content-length", body.len().to_string()));
    for (name, value) in headers {
        req = req.insert_header((*name, value.as_str()));
    }
    let (req, payload) = req.set_payload(body).to_http_parts();
    let work = async {
        let resp = S3Exchange::run(Arc::clone(&state), req, payload).await;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_string());
        let body = actix_web::body::to_bytes(resp.into_body()).await.ok()?;
        Some(Answer {
            status,
            etag,
            body: body.to_vec(),
        })
    };
    tokio::time::timeout(OP_WAIT, work).await.ok().flatten()
}

pub fn md5_hex(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

/// One S3 client.
struct S3Client {
    id: u64,
    sim: Rc<Sim>,
    model: Rc<Model>,
    rng: ChaCha8Rng,
    keys: Vec<String>,
    /// The client's own bucket (created and deleted; retired on an unknown outcome).
    bucket: String,
    generation: u64,
}

impl S3Client {
    fn fresh_key(&mut self) -> String {
        self.generation += 1;
        format!("s{}-k{}", self.id, self.generation)
    }

    fn body(&mut self) -> Vec<u8> {
        let len = self.rng.gen_range(0..=BODY_BYTES_MAX);
        let mut b = vec![0u8; len];
        self.rng.fill(&mut b[..]);
        b
    }

    /// Settles the model after a write of `key` to `state` that ended with `status` (or got
    /// no answer); an unknown outcome retires the key.
    fn settle(&mut self, slot: usize, state: Option<String>, answer: Option<u16>, op: &str) {
        let key = self.keys[slot].clone();
        let node_says = answer.map_or("no answer".to_string(), |s| s.to_string());
        match answer {
            Some(200..=299) => {
                self.model.stats.borrow_mut().acked += 1;
                self.model.settle_key(&key, state.clone(), true);
            }
            Some(400..=499) => {}
            _ => {
                self.model.stats.borrow_mut().unknown += 1;
                self.model.settle_key(&key, state.clone(), false);
                self.keys[slot] = self.fresh_key();
            }
        }
        event!(
            self.sim.trace,
            "s3 client {} {op} {key}={state:?}: {node_says}",
            self.id
        );
    }

    async fn put(&mut self, node: u64, slot: usize) {
        let body = self.body();
        let etag = md5_hex(&[&body]);
        self.model
            .bodies
            .borrow_mut()
            .insert(etag.clone(), etag.clone());
        let path = format!("/{BUCKET}/{}", self.keys[slot]);
        let answer = send(&self.sim, node, "PUT", &path, "", body).await;
        if let Some(a) = &answer {
            if a.status == 200 && a.etag.as_deref() != Some(etag.as_str()) {
                let e = format!("PUT answered ETag {:?} for a body with MD5 {etag}", a.etag);
                self.sim.obs.violate(e);
            }
        }
        self.settle(slot, Some(etag), answer.map(|a| a.status), "put");
    }

    /// A two-part multipart upload: create, two parts, complete.
    async fn multipart(&mut self, node: u64, slot: usize) {
        let key = self.keys[slot].clone();
        let path = format!("/{BUCKET}/{key}");
        let Some(created) = send(&self.sim, node, "POST", &path, "uploads=", Vec::new()).await
        else {
            return;
        };
        let text = String::from_utf8_lossy(&created.body).to_string();
        let Some(upload_id) = between(&text, "<UploadId>", "</UploadId>") else {
            return;
        };
        let first = {
            let mut b = vec![0u8; 5 * 1024 * 1024];
            self.rng.fill(&mut b[..1024]);
            b
        };
        let second = self.body();
        let mut etags = Vec::new();
        for (n, part) in [(1, &first), (2, &second)] {
            let query = format!("partNumber={n}&uploadId={upload_id}");
            let Some(a) = send(&self.sim, node, "PUT", &path, &query, part.clone()).await else {
                return;
            };
            if a.status != 200 {
                return;
            }
            etags.push(a.etag.unwrap_or_default());
        }
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (i, e) in etags.iter().enumerate() {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>\"{e}\"</ETag></Part>",
                i + 1
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let query = format!("uploadId={upload_id}");
        let answer = send(&self.sim, node, "POST", &path, &query, xml.into_bytes()).await;
        let raw: Vec<u8> = etags
            .iter()
            .flat_map(|e| hex::decode(e).unwrap_or_default())
            .collect();
        let etag = format!("{}-2", md5_hex(&[&raw]));
        self.model
            .bodies
            .borrow_mut()
            .insert(etag.clone(), md5_hex(&[&first, &second]));
        // S3 answers errors of a complete inside a 200; only an ETag in the body is success.
        let done = answer.as_ref().map(|a| {
            let ok = a.status == 200 && String::from_utf8_lossy(&a.body).contains("<ETag>");
            if ok {
                200
            } else if a.status == 200 {
                500
            } else {
                a.status
            }
        });
        self.settle(slot, Some(etag), done, "multipart");
    }

    async fn delete(&mut self, node: u64, slot: usize) {
        let path = format!("/{BUCKET}/{}", self.keys[slot]);
        let answer = send(&self.sim, node, "DELETE", &path, "", Vec::new()).await;
        self.settle(slot, None, answer.map(|a| a.status), "delete");
    }

    /// GET (or HEAD) after the front caught up: the ETag must be a possible one, and a GET's
    /// body must hash to what was sent.
    async fn read(&mut self, node: u64, slot: usize, method: &str) {
        let key = self.keys[slot].clone();
        let expected = self.model.key_states(&key);
        let path = format!("/{BUCKET}/{key}");
        let Some(a) = send(&self.sim, node, method, &path, "", Vec::new()).await else {
            return;
        };
        let seen = match a.status {
            200 => a.etag.clone(),
            404 => None,
            // Unavailable (no leader, or the bytes live elsewhere): nothing to check.
            _ => return,
        };
        self.model.stats.borrow_mut().reads += 1;
        event!(
            self.sim.trace,
            "s3 client {} {method} {key} via {node}: {seen:?}",
            self.id
        );
        if let Err(e) = read_your_writes::check(&key, &expected, seen.as_deref(), node) {
            self.sim.obs.violate(e);
            return;
        }
        if method == "GET" {
            if let Some(etag) = &seen {
                let want = self.model.bodies.borrow().get(etag).cloned();
                let got = md5_hex(&[&a.body]);
                if want.as_ref() != Some(&got) {
                    self.sim.obs.violate(format!(
                        "GET {key} via {node} returned {} bytes with MD5 {got}, not the body \
                         of ETag {etag}",
                        a.body.len()
                    ));
                }
            }
        }
    }

    /// ListObjectsV2 of this client's keys: each key it works on must be listed (with a
    /// possible ETag) or not, as the model allows.
    async fn list(&mut self, node: u64) {
        let query = format!("list-type=2&prefix=s{}-", self.id);
        let path = format!("/{BUCKET}");
        let Some(a) = send(&self.sim, node, "GET", &path, &query, Vec::new()).await else {
            return;
        };
        if a.status != 200 {
            return;
        }
        let text = String::from_utf8_lossy(&a.body).to_string();
        let mut listed = BTreeMap::new();
        for entry in text.split("<Contents>").skip(1) {
            let (Some(key), Some(etag)) = (
                between(entry, "<Key>", "</Key>"),
                between(entry, "<ETag>", "</ETag>"),
            ) else {
                continue;
            };
            let etag = etag.replace("&quot;", "").replace('"', "");
            listed.insert(key.to_string(), etag);
        }
        event!(
            self.sim.trace,
            "s3 client {} LIST via {node}: {} keys",
            self.id,
            listed.len()
        );
        for key in self.keys.clone() {
            self.model.stats.borrow_mut().reads += 1;
            let expected = self.model.key_states(&key);
            let seen = listed.get(&key).map(String::as_str);
            if let Err(e) = read_your_writes::check(&key, &expected, seen, node) {
                self.sim.obs.violate(e);
            }
        }
    }

    /// Creates this client's own bucket, or deletes it, whichever the model says it can.
    async fn bucket_op(&mut self, node: u64) {
        let name = self.bucket.clone();
        let exists = self.model.buckets.borrow().get(&name).cloned() == Some(vec![true]);
        let method = if exists { "DELETE" } else { "PUT" };
        let answer = send(&self.sim, node, method, &format!("/{name}"), "", Vec::new()).await;
        let status = answer.map(|a| a.status);
        match status {
            Some(200..=299) => {
                self.model.stats.borrow_mut().acked += 1;
                self.model.settle_bucket(&name, !exists, true);
            }
            Some(400..=499) => {}
            _ => {
                self.model.stats.borrow_mut().unknown += 1;
                self.model.settle_bucket(&name, !exists, false);
                self.generation += 1;
                self.bucket = format!("s{}-b{}", self.id, self.generation);
            }
        }
        event!(
            self.sim.trace,
            "s3 client {} {method} bucket {name}: {status:?}",
            self.id
        );
    }

    async fn run(mut self, ops: u64, pace_ms: u64) {
        for _ in 0..ops {
            let Some(node) = pause_and_pick(&self.sim, &mut self.rng, pace_ms).await else {
                continue;
            };
            let slot = self.rng.gen_range(0..KEY_SLOTS);
            match self.rng.gen_range(0..100) {
                0..35 => self.put(node, slot).await,
                35..42 => self.multipart(node, slot).await,
                42..55 => self.delete(node, slot).await,
                55..75 => self.read(node, slot, "GET").await,
                75..87 => self.read(node, slot, "HEAD").await,
                87..95 => self.list(node).await,
                _ => self.bucket_op(node).await,
            }
        }
    }
}

/// The text between `open` and `close`.
fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end])
}

/// Runs `clients` S3 clients of `ops` operations each, pausing up to `pace_ms` between them.
pub async fn workload(sim: Rc<Sim>, model: Rc<Model>, clients: u64, ops: u64, pace_ms: u64) {
    let mut running = Vec::new();
    for id in 0..clients {
        let mut client = S3Client {
            id,
            sim: sim.clone(),
            model: model.clone(),
            rng: ChaCha8Rng::seed_from_u64(fork(sim.seed, "s3client", id, 0)),
            keys: Vec::new(),
            bucket: format!("s{id}-b0"),
            generation: 0,
        };
        client.keys = (0..KEY_SLOTS).map(|_| client.fresh_key()).collect();
        running.push(client.run(ops, pace_ms));
    }
    run_all(running).await;
    event!(sim.trace, "s3 workload done: {:?}", *model.stats.borrow());
}
