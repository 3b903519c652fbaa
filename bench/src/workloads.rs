//! The run: checks the endpoint and the bucket once (one clear error when something is
//! wrong), then runs each chosen workload as a series of figures, cleaning up what it wrote.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;

use crate::engine::{drive, pattern, Limits, Op, Worker, BODY_SKEW_BYTES, LIST_PAGE_KEYS};
use crate::output::Output;
use crate::s3::{Conn, Endpoint, OpError};
use crate::signer::Signer;
use crate::size::format_size;
use crate::stats::{FigureSpec, Metric, Tally};
use crate::{Settings, Workload};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The small-object size.
const SMALL_BYTES: u64 = 4 * KIB;
/// The larger of the two mixed-workload sizes.
const MIXED_LARGE_BYTES: u64 = 64 * KIB;
/// The second concurrency the small workload always reports, for comparison across runs.
const SMALL_HIGH_CONCURRENCY: usize = 64;
/// Objects each worker reads in turn in the 1 MiB GET workload.
const GET_1M_OBJECTS_PER_WORKER: u64 = 4;
/// Objects each worker starts the mixed workload with.
const MIXED_OBJECTS_PER_WORKER: u64 = 32;
/// Where the fill workload's objects go: `fill/RUN-WORKER-BLOCK/N`.
const FILL_PREFIX: &str = "fill/";

/// One run of `hamster bench`.
pub struct Bench {
    settings: Settings,
    endpoint: Endpoint,
    addr: SocketAddr,
    bucket: Arc<str>,
    /// Prefix of every key this run writes, unique per run.
    run_prefix: String,
    body: Bytes,
    out: Output,
    cancel: Arc<AtomicBool>,
    /// Figures that saw failed requests.
    figures_with_errors: usize,
    /// Objects cleanup could not delete.
    leftovers: u64,
    /// Objects the fill wrote and kept (and those of unknown state after a failed PUT).
    filled: u64,
}

impl Bench {
    /// Resolves the endpoint and prepares the shared body; nothing is sent yet.
    pub async fn new(settings: Settings) -> anyhow::Result<Bench> {
        let endpoint = Endpoint::parse(&settings.endpoint).map_err(|e| anyhow!(e))?;
        let addr = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
            .await
            .with_context(|| format!("cannot resolve {}", endpoint.host))?
            .next()
            .ok_or_else(|| anyhow!("{} resolves to no address", endpoint.host))?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let body_len = settings.largest_object() + BODY_SKEW_BYTES as u64;
        let body = pattern(
            usize::try_from(body_len).context("--size does not fit in memory")?,
            now_ms,
        );
        Ok(Bench {
            bucket: settings.bucket.as_str().into(),
            out: Output::new(settings.json, settings.quiet),
            run_prefix: format!("bench-{now_ms:x}"),
            settings,
            endpoint,
            addr,
            body,
            cancel: Arc::new(AtomicBool::new(false)),
            figures_with_errors: 0,
            leftovers: 0,
            filled: 0,
        })
    }

    fn conn(&self) -> Conn {
        let c = &self.settings.credentials;
        let signer = Signer::new(
            &c.access_key,
            &c.secret_key,
            &self.settings.region,
            &self.endpoint.authority,
        );
        Conn::new(self.addr, signer).quick_ack(self.settings.quick_ack)
    }

    /// Runs every chosen workload; an error is one line for the operator.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let created = self.preflight().await?;
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: stopping and cleaning up (Ctrl-C again to quit now)");
                cancel.store(true, Ordering::Relaxed);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        let mut outcome = Ok(());
        for workload in self.settings.workloads.clone() {
            if self.cancelled() {
                break;
            }
            outcome = self.workload(workload).await;
            if outcome.is_err() {
                break;
            }
        }
        self.finish(created).await;
        outcome?;
        if self.cancelled() {
            bail!("interrupted; the figures above were completed");
        }
        if self.figures_with_errors > 0 {
            bail!(
                "{} figure(s) had failed requests (see the errors column)",
                self.figures_with_errors
            );
        }
        Ok(())
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Checks the endpoint answers, the credentials are accepted and the bucket may be read
    /// and written, creating the bucket if it is missing. Returns whether it was created.
    async fn preflight(&mut self) -> anyhow::Result<bool> {
        let url = self.endpoint.url();
        let bucket = self.bucket.clone();
        let mut conn = self.conn();
        conn.connect()
            .await
            .map_err(|e| anyhow!("cannot reach {url}: {e}"))?;
        let created = match conn.probe_bucket(&bucket).await {
            Ok(()) => false,
            Err(OpError::Status { status: 404, .. }) => {
                conn.create_bucket(&bucket, &self.settings.region)
                    .await
                    .map_err(|e| self.refused(&format!("may not create bucket {bucket}"), e))?;
                true
            }
            Err(e) => return Err(self.refused(&format!("may not read bucket {bucket}"), e)),
        };
        let probe = format!("{}/probe", self.run_prefix);
        conn.put_object(&bucket, &probe, self.body.slice(0..SMALL_BYTES as usize))
            .await
            .map_err(|e| self.refused(&format!("may not write to bucket {bucket}"), e))?;
        conn.delete_object(&bucket, &probe)
            .await
            .map_err(|e| self.refused(&format!("may not delete in bucket {bucket}"), e))?;
        Ok(created)
    }

    /// The one-line error for a refused preflight request, naming the likely fix.
    fn refused(&self, what: &str, e: OpError) -> anyhow::Error {
        let url = self.endpoint.url();
        let key = &self.settings.credentials.access_key;
        match &e {
            OpError::Status { code, .. } if code == "InvalidAccessKeyId" => anyhow!(
                "{url} does not know access key {key} ({e}); check --access-key, --credentials or AWS_ACCESS_KEY_ID"
            ),
            OpError::Status { code, .. } if code == "SignatureDoesNotMatch" => anyhow!(
                "{url} refused the signature ({e}); the secret key is wrong for access key {key}"
            ),
            OpError::Status { status: 403, .. } => {
                anyhow!("access key {key} {what} at {url} ({e}); grant it access or choose another --bucket")
            }
            OpError::Transport(_) => anyhow!("lost {url}: {e}"),
            OpError::Status { code, .. } if code.is_empty() => {
                anyhow!("{url}: {e} without an S3 error document; is this an S3 endpoint?")
            }
            _ => anyhow!("{url}: {e}"),
        }
    }

    /// Deletes the bucket if this run created it, and says what was left behind.
    async fn finish(&mut self, created: bool) {
        if self.filled > 0 {
            eprintln!(
                "kept: {} filled object(s) under s3://{}/{FILL_PREFIX}{}-*",
                self.filled, self.bucket, self.run_prefix
            );
        }
        if self.settings.keep {
            eprintln!(
                "kept: objects under s3://{}/{}/",
                self.bucket, self.run_prefix
            );
            return;
        }
        if self.leftovers > 0 {
            eprintln!(
                "warning: {} object(s) under s3://{}/{}/ could not be deleted",
                self.leftovers, self.bucket, self.run_prefix
            );
        }
        if created && self.leftovers == 0 && self.filled == 0 {
            if let Err(e) = self.conn().delete_bucket(&self.bucket).await {
                eprintln!(
                    "warning: cannot delete bucket {} created for this run: {e}",
                    self.bucket
                );
            }
        }
    }

    async fn workload(&mut self, workload: Workload) -> anyhow::Result<()> {
        match workload {
            Workload::LargePut => self.large_put().await,
            Workload::LargeGet => self.large_get().await,
            Workload::Put1m => self.put_1m().await,
            Workload::Get1m => self.get_1m().await,
            Workload::Small => self.small().await,
            Workload::List => self.list().await,
            Workload::Mixed => self.mixed().await,
            Workload::Fill => self.fill().await,
            Workload::ListExisting => self.list_existing().await,
        }
    }

    // -- building blocks ------------------------------------------------------------------------

    /// `n` connected workers writing under `RUN/NAME/ID`.
    async fn workers(&self, name: &str, n: usize) -> anyhow::Result<Vec<Worker>> {
        self.workers_under(name, n, |id| format!("{}/{name}/{id}", self.run_prefix))
            .await
    }

    /// `n` connected workers of workload `name`, worker `ID` writing under `prefix(ID)`.
    async fn workers_under(
        &self,
        name: &str,
        n: usize,
        prefix: impl Fn(usize) -> String,
    ) -> anyhow::Result<Vec<Worker>> {
        let mut workers = Vec::with_capacity(n);
        for id in 0..n {
            let prefix = prefix(id);
            let seed = (id as u64) << 32 ^ name.len() as u64;
            let mut w = Worker::new(
                self.conn(),
                self.bucket.clone(),
                self.body.clone(),
                prefix,
                seed,
            );
            w.connect()
                .await
                .map_err(|e| anyhow!("cannot reach {}: {e}", self.endpoint.url()))?;
            workers.push(w);
        }
        Ok(workers)
    }

    /// Limits of a timed figure: `--duration`, `--count`, Ctrl-C.
    fn timed(&self) -> Limits {
        Limits {
            duration: Some(self.settings.duration),
            count_max: self.settings.count,
            per_worker_max: None,
            cancel: Some(self.cancel.clone()),
        }
    }

    /// Runs one timed figure and prints it.
    async fn figure(&mut self, workers: Vec<Worker>, op: Op, spec: FigureSpec) -> Vec<Worker> {
        let limits = self.timed();
        self.figure_within(workers, op, spec, limits).await.0
    }

    /// Runs one figure within `limits` and prints it; returns the workers and what they
    /// counted (also when Ctrl-C cut the figure short and it was not printed).
    async fn figure_within(
        &mut self,
        workers: Vec<Worker>,
        op: Op,
        spec: FigureSpec,
        limits: Limits,
    ) -> (Vec<Worker>, Tally) {
        let progress = self.out.progress(&spec.label);
        let (workers, tally, elapsed) = drive(workers, op, limits, progress.counters.clone()).await;
        drop(progress);
        if self.cancelled() {
            // A figure cut short by Ctrl-C is not a measurement of anything.
            eprintln!("{}: cut short, not reported", spec.label);
            return (workers, tally);
        }
        let figure = spec.figure(&tally, elapsed);
        if figure.errors > 0 {
            self.figures_with_errors += 1;
        }
        self.out.figure(&figure);
        (workers, tally)
    }

    /// Untimed writes that a figure reads from; any failure stops the workload.
    async fn seed(
        &mut self,
        workers: Vec<Worker>,
        op: Op,
        limits: Limits,
        what: &str,
    ) -> anyhow::Result<Vec<Worker>> {
        let limits = Limits {
            cancel: Some(self.cancel.clone()),
            ..limits
        };
        let progress = self.out.progress(&format!("seeding {what}"));
        let (workers, tally, _) = drive(workers, op, limits, progress.counters.clone()).await;
        drop(progress);
        if tally.errors > 0 {
            self.cleanup(workers).await;
            bail!(
                "seeding {what} failed ({} of {} writes): {}",
                tally.errors,
                tally.errors + tally.ops,
                tally
                    .error_samples
                    .first()
                    .map(String::as_str)
                    .unwrap_or("")
            );
        }
        Ok(workers)
    }

    /// Deletes what `workers` wrote unless `--keep`; never cut short by Ctrl-C.
    async fn cleanup(&mut self, workers: Vec<Worker>) {
        if self.settings.keep {
            return;
        }
        let objects: usize = workers.iter().map(Worker::object_count).sum();
        if objects == 0 {
            return;
        }
        let progress = self.out.progress(&format!("deleting {objects} objects"));
        let (workers, tally, _) = drive(
            workers,
            Op::Cleanup,
            Limits::default(),
            progress.counters.clone(),
        )
        .await;
        drop(progress);
        self.leftovers += workers.iter().map(|w| w.object_count() as u64).sum::<u64>();
        if tally.errors > 0 {
            if let Some(e) = tally.error_samples.first() {
                eprintln!("warning: cleanup: {e}");
            }
        }
    }

    fn stream_counts(&self) -> Vec<usize> {
        let mut counts = vec![1];
        if self.settings.streams > 1 {
            counts.push(self.settings.streams);
        }
        counts
    }

    // -- workloads ------------------------------------------------------------------------------

    async fn large_put(&mut self) -> anyhow::Result<()> {
        let size = self.settings.size;
        for streams in self.stream_counts() {
            let workers = self.workers("large-put", streams).await?;
            let spec = spec(
                "large-put",
                format!("PUT {} x{streams}", format_size(size)),
                Some(size),
                streams,
                Metric::MibPerSec,
                false,
            );
            let workers = self.figure(workers, Op::put(size), spec).await;
            self.cleanup(workers).await;
            if self.cancelled() {
                break;
            }
        }
        Ok(())
    }

    async fn large_get(&mut self) -> anyhow::Result<()> {
        let size = self.settings.size;
        let counts = self.stream_counts();
        let most = *counts.iter().max().expect("at least one stream count");
        let workers = self.workers("large-get", most).await?;
        let one_each = Limits {
            per_worker_max: Some(1),
            ..Limits::default()
        };
        let mut workers = self
            .seed(workers, Op::put(size), one_each, "large-get")
            .await?;
        for streams in counts {
            if self.cancelled() {
                break;
            }
            let rest = workers.split_off(streams);
            let spec = spec(
                "large-get",
                format!("GET {} x{streams}", format_size(size)),
                Some(size),
                streams,
                Metric::MibPerSec,
                false,
            );
            workers = self.figure(workers, Op::Get, spec).await;
            workers.extend(rest);
        }
        self.cleanup(workers).await;
        Ok(())
    }

    async fn put_1m(&mut self) -> anyhow::Result<()> {
        let c = self.settings.concurrency;
        let workers = self.workers("put-1m", c).await?;
        let spec = spec(
            "put-1m",
            format!("PUT 1MiB c={c}"),
            Some(MIB),
            c,
            Metric::OpsPerSec,
            true,
        );
        let workers = self.figure(workers, Op::put(MIB), spec).await;
        self.cleanup(workers).await;
        Ok(())
    }

    async fn get_1m(&mut self) -> anyhow::Result<()> {
        let c = self.settings.concurrency;
        let workers = self.workers("get-1m", c).await?;
        let each = Limits {
            per_worker_max: Some(GET_1M_OBJECTS_PER_WORKER),
            ..Limits::default()
        };
        let workers = self.seed(workers, Op::put(MIB), each, "get-1m").await?;
        let spec = spec(
            "get-1m",
            format!("GET 1MiB c={c}"),
            Some(MIB),
            c,
            Metric::OpsPerSec,
            true,
        );
        let workers = if self.cancelled() {
            workers
        } else {
            self.figure(workers, Op::Get, spec).await
        };
        self.cleanup(workers).await;
        Ok(())
    }

    /// 4 KiB PUT, then GET and HEAD of what was put, then DELETE of it, at the chosen
    /// concurrency and at 64.
    async fn small(&mut self) -> anyhow::Result<()> {
        let mut levels = vec![self.settings.concurrency];
        if self.settings.concurrency != SMALL_HIGH_CONCURRENCY {
            levels.push(SMALL_HIGH_CONCURRENCY);
        }
        for c in levels {
            let mut workers = self.workers(&format!("small-c{c}"), c).await?;
            let phases = [
                ("put", "PUT", Op::put(SMALL_BYTES)),
                ("get", "GET", Op::Get),
                ("head", "HEAD", Op::Head),
                ("delete", "DELETE", Op::Delete),
            ];
            for (name, verb, op) in phases {
                if self.cancelled() {
                    break;
                }
                let spec = spec(
                    &format!("small-{name}"),
                    format!("{verb} 4KiB c={c}"),
                    Some(SMALL_BYTES),
                    c,
                    Metric::OpsPerSec,
                    true,
                );
                workers = self.figure(workers, op, spec).await;
            }
            self.cleanup(workers).await;
            if self.cancelled() {
                break;
            }
        }
        Ok(())
    }

    /// LIST keys/s with one client paging through `--list-keys` 4 KiB objects.
    async fn list(&mut self) -> anyhow::Result<()> {
        let c = self.settings.concurrency;
        let n = self.settings.list_keys;
        let writers = self.workers("list", c).await?;
        let fill = Limits {
            count_max: Some(n),
            ..Limits::default()
        };
        let writers = self
            .seed(
                writers,
                Op::put(SMALL_BYTES),
                fill,
                &format!("list ({n} keys)"),
            )
            .await?;
        if !self.cancelled() {
            let lister = self.workers("list-reader", 1).await?;
            let op = Op::List {
                prefix: format!("{}/list/", self.run_prefix),
                delimiter: None,
                expect_keys: Some(n),
            };
            let spec = spec(
                "list",
                format!("LIST {n} keys, {LIST_PAGE_KEYS}/page"),
                None,
                1,
                Metric::KeysPerSec,
                true,
            );
            self.figure(lister, op, spec).await;
        }
        self.cleanup(writers).await;
        Ok(())
    }

    /// `--count` 4 KiB PUTs at the chosen concurrency, kept: worker `W` writes
    /// `fill/RUN-W-BLOCK/N`, [`crate::engine::FILL_DIR_OBJECTS`] objects to a block, so that a listing of
    /// `fill/` with delimiter `/` has one common prefix per that many objects. Workers keep no
    /// keys, so the count may run to millions; `--duration` does not cut a fill short.
    async fn fill(&mut self) -> anyhow::Result<()> {
        let c = self.settings.concurrency;
        let n = self
            .settings
            .count
            .expect("Settings refuses fill without --count");
        let run = self.run_prefix.clone();
        let workers = self
            .workers_under("fill", c, |id| format!("{FILL_PREFIX}{run}-{id}"))
            .await?;
        let spec = spec(
            "fill",
            format!("FILL {n} x 4KiB c={c}"),
            Some(SMALL_BYTES),
            c,
            Metric::OpsPerSec,
            true,
        );
        let limits = Limits {
            count_max: Some(n),
            cancel: Some(self.cancel.clone()),
            ..Limits::default()
        };
        let (_, tally) = self
            .figure_within(workers, Op::Fill { size: SMALL_BYTES }, spec, limits)
            .await;
        self.filled += tally.ops + tally.errors;
        Ok(())
    }

    /// LIST throughput of one client paging through what is already under `--prefix`
    /// (written by a fill or anything else), rolled up at `--delimiter` when given.
    async fn list_existing(&mut self) -> anyhow::Result<()> {
        let prefix = self
            .settings
            .prefix
            .clone()
            .expect("Settings refuses list-existing without --prefix");
        let delimiter = self.settings.delimiter.clone();
        let lister = self.workers("list-existing", 1).await?;
        let (label, metric) = match &delimiter {
            None => (
                format!("LIST '{prefix}', {LIST_PAGE_KEYS}/page"),
                Metric::KeysPerSec,
            ),
            Some(d) => (
                format!("LIST '{prefix}' by '{d}', {LIST_PAGE_KEYS}/page"),
                Metric::EntriesPerSec,
            ),
        };
        let name = if delimiter.is_some() {
            "list-existing-delimited"
        } else {
            "list-existing"
        };
        let op = Op::List {
            prefix,
            delimiter,
            expect_keys: None,
        };
        self.figure(lister, op, spec(name, label, None, 1, metric, true))
            .await;
        Ok(())
    }

    /// 70% GET, 20% PUT, 10% DELETE of 4 KiB and 64 KiB objects.
    async fn mixed(&mut self) -> anyhow::Result<()> {
        let c = self.settings.concurrency;
        let sizes = [SMALL_BYTES, MIXED_LARGE_BYTES];
        let workers = self.workers("mixed", c).await?;
        let each = Limits {
            per_worker_max: Some(MIXED_OBJECTS_PER_WORKER),
            ..Limits::default()
        };
        let workers = self.seed(workers, Op::Put { sizes }, each, "mixed").await?;
        let spec = spec(
            "mixed",
            format!("MIXED 4KiB/64KiB c={c}"),
            None,
            c,
            Metric::OpsPerSec,
            true,
        );
        let workers = if self.cancelled() {
            workers
        } else {
            self.figure(workers, Op::Mixed { sizes }, spec).await
        };
        self.cleanup(workers).await;
        Ok(())
    }
}

fn spec(
    name: &str,
    label: String,
    object_bytes: Option<u64>,
    concurrency: usize,
    metric: Metric,
    latency: bool,
) -> FigureSpec {
    FigureSpec {
        name: name.to_string(),
        label,
        object_bytes,
        concurrency,
        metric,
        latency,
    }
}
