//! `hamster bench`: an S3 load generator for any S3 endpoint. It signs its own SigV4 requests
//! with `hamster_protocol::sigv4` (path-style, `UNSIGNED-PAYLOAD` bodies shared from one
//! pattern buffer), keeps one HTTP/1.1 connection per worker, and reports throughput and
//! latency figures: large-object MiB/s at 1 and N streams, 1 MiB and 4 KiB ops/s with
//! p50/p99/p999, LIST keys/s and a mixed workload; for metadata at scale it also fills a bucket
//! with many small objects that it keeps, and times listings of what is already there.
//!
//! Modules: `size` and `credentials` read the command line, `signer` and `s3` talk to the
//! endpoint, `engine` drives workers, `stats` and `output` report, `workloads` is the run.

// The load generator runs outside the simulation and measures real time: it reads the
// monotonic and wall clocks directly. None of this code is reachable from a node.
#![allow(clippy::disallowed_methods)]

pub mod credentials;
pub mod engine;
pub mod output;
pub mod s3;
pub mod signer;
pub mod size;
pub mod stats;
pub mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};

use crate::credentials::Credentials;

/// `hamster bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// S3 endpoint, http://host[:port] (path-style requests)
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    pub endpoint: String,
    /// Region requests are signed for
    #[arg(long, default_value = "us-east-1")]
    pub region: String,
    /// Access key id [env: AWS_ACCESS_KEY_ID]
    #[arg(long)]
    pub access_key: Option<String>,
    /// Secret access key [env: AWS_SECRET_ACCESS_KEY]
    #[arg(long)]
    pub secret_key: Option<String>,
    /// AWS shared-credentials file, e.g. DATA/credentials written by `hamster init`
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,
    /// Profile to read from the credentials file
    #[arg(long, default_value = "default")]
    pub profile: String,
    /// Bucket to work in; created (and removed afterwards) if missing
    #[arg(long, default_value = "hamster-bench")]
    pub bucket: String,
    /// Workloads to run, in order (comma-separated or repeated)
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Workload::LargePut, Workload::LargeGet, Workload::Small])]
    pub workload: Vec<Workload>,
    /// Object size for large-put and large-get, e.g. 64MiB, 1GiB
    #[arg(long, default_value = "64MiB", value_parser = size::parse_size)]
    pub size: u64,
    /// Streams for large objects: figures are taken at 1 stream and at this many
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Requests in flight for the 1 MiB, 4 KiB, list-fill and mixed workloads (small also
    /// runs at 64)
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds each figure runs for at most
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Requests each figure makes at most; for fill, the objects to write (required)
    #[arg(long)]
    pub count: Option<u64>,
    /// Keys the list workload fills the bucket with before listing
    #[arg(long, default_value_t = 10_000)]
    pub list_keys: u64,
    /// Prefix whose existing objects list-existing lists (required for it)
    #[arg(long)]
    pub prefix: Option<String>,
    /// Delimiter for list-existing: keys roll up into common prefixes, and the figure counts
    /// entries (keys and common prefixes) per second
    #[arg(long)]
    pub delimiter: Option<String>,
    /// One JSON object per figure on stdout instead of a table
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr (it is also off when stderr is not a terminal)
    #[arg(long)]
    pub quiet: bool,
    /// Leave the objects written (and a bucket created) in place
    #[arg(long)]
    pub keep: bool,
    /// Acknowledge every received segment at once (Linux TCP_QUICKACK, set again after each
    /// read), so a server that sends a response's head and body in separate small writes
    /// without TCP_NODELAY is not held up by this client's delayed ACK
    #[arg(long)]
    pub quick_ack: bool,
}

/// A workload: one or more figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Workload {
    /// PUT of --size objects, MiB/s at 1 and --streams streams
    LargePut,
    /// GET of --size objects, MiB/s at 1 and --streams streams
    LargeGet,
    /// PUT of 1 MiB objects, ops/s and latency
    #[value(name = "put-1m")]
    Put1m,
    /// GET of 1 MiB objects, ops/s and latency
    #[value(name = "get-1m")]
    Get1m,
    /// 4 KiB PUT, GET, HEAD and DELETE, ops/s and latency
    Small,
    /// ListObjectsV2 keys/s over --list-keys objects
    List,
    /// 70% GET, 20% PUT, 10% DELETE of 4 KiB and 64 KiB objects
    Mixed,
    /// 4 KiB PUT of --count objects under fill/RUN-…, kept (never deleted), ops/s and latency
    Fill,
    /// ListObjectsV2 keys/s over the objects already under --prefix (entries/s with
    /// --delimiter); writes nothing
    ListExisting,
}

/// Validated options with credentials resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The endpoint URL.
    pub endpoint: String,
    /// The signing region.
    pub region: String,
    /// Who signs.
    pub credentials: Credentials,
    /// The bucket.
    pub bucket: String,
    /// Workloads in order, each once.
    pub workloads: Vec<Workload>,
    /// Large-object size.
    pub size: u64,
    /// Large-object streams.
    pub streams: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Time bound per figure.
    pub duration: Duration,
    /// Request bound per figure.
    pub count: Option<u64>,
    /// Keys for the list workload.
    pub list_keys: u64,
    /// The prefix list-existing lists.
    pub prefix: Option<String>,
    /// The delimiter list-existing rolls keys up at.
    pub delimiter: Option<String>,
    /// JSON output.
    pub json: bool,
    /// No progress line.
    pub quiet: bool,
    /// Keep what was written.
    pub keep: bool,
    /// Set TCP_QUICKACK after every read.
    pub quick_ack: bool,
}

/// Connections (and so requests in flight) one run may open for a figure.
const CONCURRENCY_MAX: usize = 4096;

impl Settings {
    /// Checks the options and resolves credentials (`env` reads environment variables).
    pub fn from_args(
        args: BenchArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Settings> {
        let credentials = credentials::resolve(
            args.access_key.as_deref(),
            args.secret_key.as_deref(),
            args.credentials.as_deref(),
            &args.profile,
            env,
        )
        .map_err(|e| anyhow!(e))?;
        if !(args.duration.is_finite() && args.duration > 0.0) {
            bail!("--duration must be a positive number of seconds");
        }
        for (flag, n) in [
            ("--streams", args.streams),
            ("--concurrency", args.concurrency),
        ] {
            if n == 0 || n > CONCURRENCY_MAX {
                bail!("{flag} must be between 1 and {CONCURRENCY_MAX}");
            }
        }
        if args.count == Some(0) || args.list_keys == 0 {
            bail!("--count and --list-keys must be at least 1");
        }
        let mut workloads = Vec::new();
        for w in args.workload {
            if !workloads.contains(&w) {
                workloads.push(w);
            }
        }
        if workloads.contains(&Workload::Fill) && args.count.is_none() {
            bail!("--workload fill needs --count N, the number of objects to write and keep");
        }
        let lists_existing = workloads.contains(&Workload::ListExisting);
        if lists_existing && args.prefix.is_none() {
            bail!("--workload list-existing needs --prefix P, under which the objects are listed");
        }
        if !lists_existing && (args.prefix.is_some() || args.delimiter.is_some()) {
            bail!("--prefix and --delimiter apply only to --workload list-existing");
        }
        if args.delimiter.as_deref() == Some("") {
            bail!("--delimiter must not be empty");
        }
        Ok(Settings {
            endpoint: args.endpoint,
            region: args.region,
            credentials,
            bucket: args.bucket,
            workloads,
            size: args.size,
            streams: args.streams,
            concurrency: args.concurrency,
            duration: Duration::from_secs_f64(args.duration),
            count: args.count,
            list_keys: args.list_keys,
            prefix: args.prefix,
            delimiter: args.delimiter,
            json: args.json,
            quiet: args.quiet,
            keep: args.keep,
            quick_ack: args.quick_ack,
        })
    }

    /// The largest object any chosen workload writes, which sizes the shared body buffer.
    pub fn largest_object(&self) -> u64 {
        let mut largest = 64 << 10;
        for w in &self.workloads {
            let size = match w {
                Workload::LargePut | Workload::LargeGet => self.size,
                Workload::Put1m | Workload::Get1m => 1 << 20,
                Workload::Small
                | Workload::List
                | Workload::Mixed
                | Workload::Fill
                | Workload::ListExisting => 64 << 10,
            };
            largest = largest.max(size);
        }
        largest
    }
}

/// `hamster bench`: runs the workloads on a multi-threaded runtime of its own.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let settings = Settings::from_args(args, |name| std::env::var(name).ok())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let bench = workloads::Bench::new(settings).await?;
        bench.run().await
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn settings(argv: &[&str]) -> anyhow::Result<Settings> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))?;
        Settings::from_args(cli.bench, |_| None)
    }

    /// Defaults: the quick set, 64 MiB, 16 in flight, 10 s; workloads dedupe in order.
    #[test]
    fn defaults_and_workload_lists() {
        let s = settings(&["--access-key", "a", "--secret-key", "s"]).unwrap();
        assert_eq!(
            s.workloads,
            vec![Workload::LargePut, Workload::LargeGet, Workload::Small]
        );
        assert_eq!((s.size, s.concurrency, s.streams), (64 << 20, 16, 4));
        assert_eq!(s.duration, Duration::from_secs(10));
        assert_eq!(s.endpoint, "http://127.0.0.1:9000");
        let s = settings(&[
            "--access-key=a",
            "--secret-key=s",
            "--workload",
            "mixed,put-1m",
            "--workload",
            "mixed",
            "--size",
            "1GiB",
        ])
        .unwrap();
        assert_eq!(s.workloads, vec![Workload::Mixed, Workload::Put1m]);
        assert_eq!(s.largest_object(), 1 << 20);
        let s = settings(&[
            "--access-key=a",
            "--secret-key=s",
            "--workload=large-get,get-1m,list",
            "--size=256MiB",
        ])
        .unwrap();
        assert_eq!(s.largest_object(), 256 << 20);
    }

    /// Nonsense options fail before anything is sent.
    #[test]
    fn refuses_bad_options() {
        let ok = ["--access-key=a", "--secret-key=s"];
        let with = |extra: &str| settings(&[ok[0], ok[1], extra]);
        assert!(with("--duration=0").is_err());
        assert!(with("--duration=-1").is_err());
        assert!(with("--concurrency=0").is_err());
        assert!(with("--streams=0").is_err());
        assert!(with("--count=0").is_err());
        assert!(with("--size=64XB").is_err());
        assert!(with("--workload=huge").is_err());
        assert!(settings(&[])
            .unwrap_err()
            .to_string()
            .contains("no credentials"));
    }

    /// A fill needs its object count; it is what --count means for it.
    #[test]
    fn fill_needs_a_count() {
        let creds = ["--access-key=a", "--secret-key=s"];
        let err = settings(&[creds[0], creds[1], "--workload=fill"]).unwrap_err();
        assert!(err.to_string().contains("--count"), "{err}");
        let err = settings(&[creds[0], creds[1], "--workload=small,fill"]).unwrap_err();
        assert!(err.to_string().contains("fill needs --count"), "{err}");
        let s = settings(&[creds[0], creds[1], "--workload=fill", "--count=1000000"]).unwrap();
        assert_eq!(
            (s.workloads, s.count),
            (vec![Workload::Fill], Some(1_000_000))
        );
        assert!(settings(&[creds[0], creds[1], "--workload=fill", "--count=0"]).is_err());
    }

    /// Listing what exists needs a prefix (the empty one is allowed: the whole bucket); the
    /// prefix and delimiter are refused where nothing would read them.
    #[test]
    fn list_existing_options() {
        let creds = ["--access-key=a", "--secret-key=s"];
        let with = |extra: &[&str]| {
            let mut argv = creds.to_vec();
            argv.extend_from_slice(extra);
            settings(&argv)
        };
        let err = with(&["--workload=list-existing"]).unwrap_err();
        assert!(err.to_string().contains("--prefix"), "{err}");
        let s = with(&["--workload=list-existing", "--prefix=fill/"]).unwrap();
        assert_eq!((s.prefix.as_deref(), s.delimiter), (Some("fill/"), None));
        let s = with(&["--workload=list-existing", "--prefix=", "--delimiter=/"]).unwrap();
        assert_eq!(
            (s.prefix.as_deref(), s.delimiter.as_deref()),
            (Some(""), Some("/"))
        );
        assert!(with(&["--workload=list-existing", "--prefix=a", "--delimiter="]).is_err());
        let err = with(&["--workload=small", "--prefix=fill/"]).unwrap_err();
        assert!(
            err.to_string().contains("only to --workload list-existing"),
            "{err}"
        );
        assert!(with(&["--delimiter=/"]).is_err());
        let s = with(&[
            "--workload=fill,list-existing",
            "--count=10",
            "--prefix=fill/",
        ])
        .unwrap();
        assert_eq!(s.workloads, vec![Workload::Fill, Workload::ListExisting]);
    }
}
