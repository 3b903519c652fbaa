//! `hamster token`: mints a single-use, TTL-bound join token. The CLI half asks the local
//! running node over the control protocol; the node half, [`TokenAdmin`], draws the secret from
//! the node's seeded `IdSource`, commits the secret's hash through Raft (so every member can
//! later check and consume it) and answers with the encoded token, which pins the cluster CA's
//! hash and lists the members' cluster addresses.

use std::path::Path;
use std::sync::Arc;

use actix::Addr;
use anyhow::{bail, Context};
use clap::Args;
use hamster_actors::clock::{Clock, IdSource};
use hamster_actors::node::NodeFile;
use hamster_actors::raft::node::{Propose, ProposeError, RaftNode, RaftStatus};
use hamster_actors::tls::{self, TlsMaterial};
use hamster_protocol::meta::Command;
use hamster_protocol::time::iso8601_ms;
use hamster_protocol::token::{check_ttl, format_ttl, parse_ttl, JoinToken, TTL_DEFAULT_MS};
use hamster_protocol::wire::{ControlRequest, ControlResponse};

use crate::local::ask;
use crate::{cli_data_dir, DataArg};

/// `hamster token` options.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// How long the token stays valid, e.g. 30m, 1h, 24h (at most 7d) [default: 1h]
    #[arg(long)]
    ttl: Option<String>,
    #[command(flatten)]
    data: DataArg,
}

/// Runs `hamster token`: prints the token alone on stdout (so `T=$(hamster token)` works) and
/// how to use it on stderr.
pub fn run(a: TokenArgs) -> anyhow::Result<()> {
    let ttl_ms = match &a.ttl {
        Some(t) => parse_ttl(t)?,
        None => TTL_DEFAULT_MS,
    };
    let (token, expires_ms) = mint(&cli_data_dir(&a.data)?, ttl_ms)?;
    println!("{token}");
    eprintln!(
        "single use, valid for {} (until {}); on the new machine, with an empty data dir, run:\n  hamster serve --data /var/lib/hamster --cluster-addr ADDRESS:9400 --token '{token}'\nwhere ADDRESS is that machine's address every member can reach (the default, 127.0.0.1, only works on this machine)",
        format_ttl(ttl_ms),
        iso8601_ms(expires_ms)
    );
    Ok(())
}

fn mint(dir: &Path, ttl_ms: u64) -> anyhow::Result<(String, u64)> {
    match ask(dir, &ControlRequest::MintJoinToken { ttl_ms })? {
        ControlResponse::JoinToken { token, expires_ms } => {
            // A token this binary cannot read would fail only later, on the joiner.
            JoinToken::decode(&token)
                .context("the node minted a token this CLI cannot read; run the same hamster version as the node")?;
            Ok((token, expires_ms))
        }
        _ => bail!("the node gave an answer this CLI does not expect; run the same hamster version as the node"),
    }
}

/// The node's side: answers `MintJoinToken` by committing the token's hash through the serving
/// node's Raft member.
pub struct TokenAdmin {
    raft: Addr<RaftNode>,
    ids: Arc<IdSource>,
    clock: Arc<dyn Clock>,
    cluster_id: String,
    ca_sha256: [u8; 32],
    own_addr: String,
}

impl TokenAdmin {
    /// Answers for the node described by `node`, whose Raft member is `raft` and whose cluster
    /// CA is in `material`; secrets come from `ids`, expiry from `clock`.
    pub fn new(
        raft: Addr<RaftNode>,
        ids: Arc<IdSource>,
        clock: Arc<dyn Clock>,
        node: &NodeFile,
        material: &TlsMaterial,
    ) -> anyhow::Result<Self> {
        let ca_sha256 = hex32(&tls::ca_sha256_hex(&material.ca_cert_pem)?)
            .context("the cluster CA hash is not 64 hex digits; check <data>/tls/ca.pem")?;
        Ok(TokenAdmin {
            raft,
            ids,
            clock,
            cluster_id: node.cluster_id.clone(),
            ca_sha256,
            own_addr: node.cluster_addr.clone(),
        })
    }

    /// `MintJoinToken`: a fresh secret whose hash is committed before the token is answered.
    pub async fn mint(&self, ttl_ms: u64) -> ControlResponse {
        self.try_mint(ttl_ms)
            .await
            .unwrap_or_else(|message| ControlResponse::Error { message })
    }

    async fn try_mint(&self, ttl_ms: u64) -> Result<ControlResponse, String> {
        let ttl_ms = check_ttl(ttl_ms).map_err(|e| e.to_string())?;
        let addrs = self.member_addrs().await?;
        let mut secret = [0u8; 32];
        self.ids.fill(&mut secret);
        let now = self.clock.now_ms();
        let token = JoinToken::new(
            self.cluster_id.clone(),
            self.ca_sha256,
            addrs,
            secret,
            now.saturating_add(ttl_ms),
        );
        let cmd = Command::AddJoinToken {
            secret_sha256: token.secret_hash_hex(),
            expires_ms: token.expires_ms,
            created_ms: now,
        };
        match self.raft.send(Propose(cmd)).await {
            Ok(Ok(applied)) => match applied.refused {
                None => Ok(ControlResponse::JoinToken {
                    token: token.encode(),
                    expires_ms: token.expires_ms,
                }),
                Some(r) => Err(format!(
                    "the cluster refused the new token ({r:?}); run `hamster token` again"
                )),
            },
            Ok(Err(ProposeError::NotLeader { .. })) => Err(
                "no metadata leader is known right now (an election may be under way); run `hamster token` again in a few seconds"
                    .to_string(),
            ),
            Ok(Err(e)) => Err(format!("the token did not commit: {e}")),
            Err(_) => Err("the Raft node is not running; check the node's log".to_string()),
        }
    }

    /// Where a joiner may knock: this node first, then every other member it knows of.
    async fn member_addrs(&self) -> Result<Vec<String>, String> {
        let status = self
            .raft
            .send(RaftStatus)
            .await
            .map_err(|_| "the Raft node is not running; check the node's log".to_string())?;
        let mut addrs = vec![self.own_addr.clone()];
        for (_, n) in status.voters.iter().chain(&status.learners) {
            if !addrs.contains(&n.cluster_addr) {
                addrs.push(n.cluster_addr.clone());
            }
        }
        Ok(addrs)
    }
}

/// 64 hex digits as 32 bytes.
fn hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex32_reads_exactly_64_digits() {
        let h = "00ff".repeat(16);
        let mut want = [0u8; 32];
        for pair in want.chunks_mut(2) {
            pair[1] = 0xff;
        }
        assert_eq!(hex32(&h), Some(want));
        assert_eq!(hex32(&h[..62]), None);
        assert_eq!(hex32(&"zz".repeat(32)), None);
        assert_eq!(hex32(&"é".repeat(32)), None);
    }
}
