//! The node's configuration: a TOML file whose every key is also a flag; flags win over the
//! file, and the file wins over the built-in defaults.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Keys of `hamster.toml` (see config/hamster.example.toml).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data: Option<PathBuf>,
    /// S3 listen address.
    pub s3: Option<String>,
    /// Run without the S3 front.
    pub no_s3: Option<bool>,
    /// Admin HTTP listen address.
    pub admin: Option<String>,
    /// Cluster port address (used at init; afterwards node.json holds it).
    pub cluster_addr: Option<String>,
    /// S3 region to sign for.
    pub region: Option<String>,
    /// Domain for virtual-host-style bucket addressing.
    pub domain: Option<String>,
    /// Failure domain: zone (used at init).
    pub zone: Option<String>,
    /// Failure domain: host (used at init).
    pub host: Option<String>,
    /// Capacity weight, e.g. "500GiB" (used at init).
    pub capacity: Option<String>,
    /// Log filter, e.g. "info" or "hamster=debug".
    pub log: Option<String>,
    /// `--log-format`: "text" or "json".
    pub log_format: Option<String>,
    /// `--voter-down-after`.
    pub voter_down_after: Option<String>,
    /// `--body-idle-timeout`.
    pub body_idle_timeout: Option<String>,
    /// `--upload-memory-max`.
    pub upload_memory_max: Option<String>,
    /// `--min-free`.
    pub min_free: Option<String>,
    /// `--migrate-rate`.
    pub migrate_rate: Option<String>,
    /// `--scrub-rate`.
    pub scrub_rate: Option<String>,
    /// `--scrub-every`.
    pub scrub_every: Option<String>,
}

/// Reads a config file, naming the file and the problem on error.
pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {} is invalid", path.display()))
}

/// Parses a size such as `1073741824`, `500GiB`, `2T`, `100 MB` into bytes.
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    Ok(hamster_protocol::size::parse_size(s)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("3 TB").unwrap(), 3_000_000_000_000);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<FileConfig>("s3 = \"127.0.0.1:1\"\nbogus = 1").is_err());
        let c: FileConfig = toml::from_str("s3 = \"127.0.0.1:1\"").unwrap();
        assert_eq!(c.s3.as_deref(), Some("127.0.0.1:1"));
    }
}
