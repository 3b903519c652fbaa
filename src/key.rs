//! `hamster key`: S3 access keys and their per-bucket grants. The CLI half asks the local
//! running node over the control protocol (mTLS with the node's own certificate, as `status`
//! does); the node half, [`KeyAdmin`], answers by proposing the change through Raft, so keys
//! are replicated metadata like buckets.

use std::sync::Arc;

use actix::Addr;
use anyhow::bail;
use clap::{Args, Subcommand};
use hamster_actors::clock::{Clock, IdSource};
use hamster_actors::node::mint_credentials;
use hamster_actors::raft::node::{GetBucket, ListAccessKeys, Propose, RaftNode};
use hamster_protocol::meta::{AccessKey, Command, Grant};
use hamster_protocol::wire::{ControlRequest, ControlResponse, KeySummary, NewKey};

use crate::local::ask;
use crate::{cli_data_dir, DataArg};

/// Longest key name.
pub const KEY_NAME_CHARS_MAX: usize = 64;

/// `hamster key` options.
#[derive(Debug, Args)]
pub struct KeyArgs {
    #[command(subcommand)]
    action: KeyAction,
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Mint a new access key; its secret is printed once, now
    Create(NameArgs),
    /// List access keys with their grants (never secrets)
    List(ListArgs),
    /// Remove an access key (the last root key cannot be removed)
    Delete(NameArgs),
    /// Add permissions on a bucket to a key
    Allow(GrantArgs),
    /// Take permissions on a bucket away from a key (no flag: all of them)
    Deny(GrantArgs),
}

#[derive(Debug, Args)]
struct NameArgs {
    /// The key's name (or its access key id)
    name: String,
    #[command(flatten)]
    data: DataArg,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    data: DataArg,
}

#[derive(Debug, Args)]
struct GrantArgs {
    /// The key's name (or its access key id)
    name: String,
    /// The bucket the permissions are for
    #[arg(long)]
    bucket: String,
    /// List and read objects
    #[arg(long)]
    read: bool,
    /// Write and delete objects
    #[arg(long)]
    write: bool,
    /// Manage the bucket itself (delete it, its settings)
    #[arg(long)]
    owner: bool,
    #[command(flatten)]
    data: DataArg,
}

impl GrantArgs {
    fn grant(&self) -> Grant {
        Grant {
            read: self.read,
            write: self.write,
            owner: self.owner,
        }
    }
}

/// Runs `hamster key …`.
pub fn run(a: KeyArgs) -> anyhow::Result<()> {
    match a.action {
        KeyAction::Create(n) => {
            let req = ControlRequest::CreateKey { name: n.name };
            match ask(&cli_data_dir(&n.data)?, &req)? {
                ControlResponse::KeyCreated(k) => print_new(&k),
                other => unexpected(other)?,
            }
        }
        KeyAction::List(l) => match ask(&cli_data_dir(&l.data)?, &ControlRequest::ListKeys)? {
            ControlResponse::Keys { keys } => print_table(&keys),
            other => unexpected(other)?,
        },
        KeyAction::Delete(n) => {
            let req = ControlRequest::DeleteKey { name: n.name };
            match ask(&cli_data_dir(&n.data)?, &req)? {
                ControlResponse::KeyDeleted(k) => {
                    println!("deleted key {} ({})", k.name, k.access_key)
                }
                other => unexpected(other)?,
            }
        }
        KeyAction::Allow(g) => {
            if g.grant() == Grant::default() {
                bail!("nothing to allow; pass at least one of --read, --write, --owner");
            }
            let req = ControlRequest::AllowKey {
                name: g.name.clone(),
                bucket: g.bucket.clone(),
                grant: g.grant(),
            };
            updated(ask(&cli_data_dir(&g.data)?, &req)?)?;
        }
        KeyAction::Deny(g) => {
            // No flag takes away everything on the bucket.
            let grant = if g.grant() == Grant::default() {
                Grant {
                    read: true,
                    write: true,
                    owner: true,
                }
            } else {
                g.grant()
            };
            let req = ControlRequest::DenyKey {
                name: g.name.clone(),
                bucket: g.bucket.clone(),
                grant,
            };
            updated(ask(&cli_data_dir(&g.data)?, &req)?)?;
        }
    }
    Ok(())
}

fn unexpected(_: ControlResponse) -> anyhow::Result<()> {
    bail!("the node gave an answer this CLI does not expect; run the same hamster version as the node")
}

fn updated(resp: ControlResponse) -> anyhow::Result<()> {
    match resp {
        ControlResponse::KeyUpdated(k) => {
            println!("key {} ({}): {}", k.name, k.access_key, grants_text(&k));
            Ok(())
        }
        other => unexpected(other),
    }
}

fn print_new(k: &NewKey) {
    println!("created key {}", k.name);
    println!("access key:    {}", k.access_key);
    println!("secret key:    {}", k.secret_key);
    println!("the secret is shown only now; store it safely");
    println!(
        "the key has no permissions yet; grant some with `hamster key allow {} --bucket B --read`",
        k.name
    );
}

/// `bucket:rwo` per grant, a dash for each bit not held.
fn grants_text(k: &KeySummary) -> String {
    if k.root {
        return "(all buckets)".to_string();
    }
    if k.grants.is_empty() {
        return "(none)".to_string();
    }
    k.grants
        .iter()
        .map(|(b, g)| {
            let bit = |on: bool, c: char| if on { c } else { '-' };
            format!(
                "{b}:{}{}{}",
                bit(g.read, 'r'),
                bit(g.write, 'w'),
                bit(g.owner, 'o')
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_table(keys: &[KeySummary]) {
    let width = keys.iter().map(|k| k.name.len()).max().unwrap_or(0).max(4);
    println!(
        "{:<width$}  {:<20}  {:<4}  grants",
        "name", "access key", "root"
    );
    for k in keys {
        println!(
            "{:<width$}  {:<20}  {:<4}  {}",
            k.name,
            k.access_key,
            if k.root { "yes" } else { "no" },
            grants_text(k)
        );
    }
}

/// The node's side: answers the key requests of the control protocol by proposing through the
/// serving node's Raft member.
pub struct KeyAdmin {
    raft: Addr<RaftNode>,
    ids: Arc<IdSource>,
    clock: Arc<dyn Clock>,
    /// Serialises this node's key changes, so "name is free" stays true until the key that
    /// takes it is committed.
    changes: tokio::sync::Mutex<()>,
}

/// A value, or the one-line message of the error answer that replaces it.
type Answer<T> = Result<T, String>;

fn refuse(message: impl Into<String>) -> String {
    message.into()
}

/// The answer itself, or the error answer carrying its message.
fn answer(a: Answer<ControlResponse>) -> ControlResponse {
    a.unwrap_or_else(|message| ControlResponse::Error { message })
}

impl KeyAdmin {
    /// Answers for the node whose Raft member is `raft`; ids and secrets come from `ids`.
    pub fn new(raft: Addr<RaftNode>, ids: Arc<IdSource>, clock: Arc<dyn Clock>) -> Self {
        KeyAdmin {
            raft,
            ids,
            clock,
            changes: tokio::sync::Mutex::new(()),
        }
    }

    /// `CreateKey`: a fresh id and secret under a name no other key has.
    pub async fn create(&self, name: &str) -> ControlResponse {
        let _turn = self.changes.lock().await;
        answer(self.try_create(name).await)
    }

    async fn try_create(&self, name: &str) -> Answer<ControlResponse> {
        check_name(name)?;
        let keys = self.keys().await?;
        if keys.iter().any(|k| k.name == name) {
            return Err(refuse(format!(
                "a key named {name} exists already; pick another name or delete it first"
            )));
        }
        let minted = loop {
            let c = mint_credentials(&self.ids);
            if !keys.iter().any(|k| k.access_key == c.access_key) {
                break c;
            }
        };
        let key = AccessKey {
            access_key: minted.access_key,
            secret_key: minted.secret_key,
            name: name.to_string(),
            root: false,
            grants: Default::default(),
            created_ms: self.clock.now_ms(),
        };
        self.propose(Command::PutAccessKey(key.clone())).await?;
        Ok(ControlResponse::KeyCreated(NewKey {
            name: key.name,
            access_key: key.access_key,
            secret_key: key.secret_key,
        }))
    }

    /// `ListKeys`: every key in name order, without secrets.
    pub async fn list(&self) -> ControlResponse {
        answer(self.keys().await.map(|keys| {
            let mut keys: Vec<KeySummary> = keys.iter().map(KeySummary::from).collect();
            keys.sort_by(|a, b| (&a.name, &a.access_key).cmp(&(&b.name, &b.access_key)));
            ControlResponse::Keys { keys }
        }))
    }

    /// `DeleteKey`: removes a key, but never the last root key.
    pub async fn delete(&self, name: &str) -> ControlResponse {
        let _turn = self.changes.lock().await;
        answer(self.try_delete(name).await)
    }

    async fn try_delete(&self, name: &str) -> Answer<ControlResponse> {
        let keys = self.keys().await?;
        let key = find(&keys, name)?;
        if key.root && keys.iter().filter(|k| k.root).count() == 1 {
            return Err(refuse(format!(
                "key {} is the last root key; the cluster would have no key able to manage it, so it stays",
                key.name
            )));
        }
        self.propose(Command::DeleteAccessKey {
            access_key: key.access_key.clone(),
        })
        .await?;
        Ok(ControlResponse::KeyDeleted(KeySummary::from(key)))
    }

    /// `AllowKey` (`add` true) and `DenyKey` (`add` false): change the set bits of `change`
    /// on `bucket`, keeping the others as they are.
    pub async fn grant(
        &self,
        name: &str,
        bucket: &str,
        change: Grant,
        add: bool,
    ) -> ControlResponse {
        let _turn = self.changes.lock().await;
        answer(self.try_grant(name, bucket, change, add).await)
    }

    async fn try_grant(
        &self,
        name: &str,
        bucket: &str,
        change: Grant,
        add: bool,
    ) -> Answer<ControlResponse> {
        let keys = self.keys().await?;
        let key = find(&keys, name)?;
        if key.root {
            return Err(refuse(format!(
                "key {} is a root key and may already do everything; grants apply to other keys",
                key.name
            )));
        }
        let held = key.grants.get(bucket).copied().unwrap_or_default();
        // Taking away a grant on a bucket that is gone is allowed (cleaning up); giving one
        // is not.
        if (add || held == Grant::default()) && !self.bucket_exists(bucket).await? {
            return Err(refuse(format!(
                "no bucket named {bucket}; create it first (or check the name)"
            )));
        }
        let grant = merge(held, change, add);
        self.propose(Command::SetGrant {
            access_key: key.access_key.clone(),
            bucket: bucket.to_string(),
            grant,
        })
        .await?;
        let mut now = key.clone();
        if grant == Grant::default() {
            now.grants.remove(bucket);
        } else {
            now.grants.insert(bucket.to_string(), grant);
        }
        Ok(ControlResponse::KeyUpdated(KeySummary::from(&now)))
    }

    async fn keys(&self) -> Answer<Vec<AccessKey>> {
        match self.raft.send(ListAccessKeys).await {
            Ok(Ok(keys)) => Ok(keys),
            Ok(Err(e)) => Err(refuse(format!("cannot read the access keys: {e}"))),
            Err(_) => Err(refuse("the Raft node is not running; check the node's log")),
        }
    }

    async fn bucket_exists(&self, bucket: &str) -> Answer<bool> {
        match self.raft.send(GetBucket(bucket.to_string())).await {
            Ok(Ok(b)) => Ok(b.is_some()),
            Ok(Err(e)) => Err(refuse(format!("cannot read bucket {bucket}: {e}"))),
            Err(_) => Err(refuse("the Raft node is not running; check the node's log")),
        }
    }

    async fn propose(&self, cmd: Command) -> Answer<()> {
        match self.raft.send(Propose(cmd)).await {
            Ok(Ok(applied)) => match applied.refused {
                None => Ok(()),
                Some(r) => Err(refuse(format!(
                    "the change was refused ({r:?}); list the keys and retry"
                ))),
            },
            Ok(Err(e)) => Err(refuse(format!("the change did not commit: {e}"))),
            Err(_) => Err(refuse("the Raft node is not running; check the node's log")),
        }
    }
}

/// The key with this name, else the key with this access key id.
fn find<'k>(keys: &'k [AccessKey], name: &str) -> Answer<&'k AccessKey> {
    keys.iter()
        .find(|k| k.name == name)
        .or_else(|| keys.iter().find(|k| k.access_key == name))
        .ok_or_else(|| refuse(format!("no key named {name}; see `hamster key list`")))
}

/// Key names: 1 to [`KEY_NAME_CHARS_MAX`] letters, digits, `.`, `_`, `-`, so they print in a
/// table and type on a command line.
fn check_name(name: &str) -> Answer<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > KEY_NAME_CHARS_MAX || !name.chars().all(ok_char) {
        return Err(refuse(format!(
            "key name {name:?} is not valid; use 1 to {KEY_NAME_CHARS_MAX} letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}

/// `held` with the set bits of `change` turned on (`add`) or off.
fn merge(held: Grant, change: Grant, add: bool) -> Grant {
    let set = |h: bool, c: bool| if add { h || c } else { h && !c };
    Grant {
        read: set(held.read, change.read),
        write: set(held.write, change.write),
        owner: set(held.owner, change.owner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: Grant = Grant {
        read: true,
        write: false,
        owner: false,
    };
    const W: Grant = Grant {
        read: false,
        write: true,
        owner: false,
    };
    const ALL: Grant = Grant {
        read: true,
        write: true,
        owner: true,
    };

    /// Allow adds to what is held; deny takes away only what it names.
    #[test]
    fn merge_adds_and_removes_bits() {
        let rw = merge(R, W, true);
        assert_eq!(
            rw,
            Grant {
                read: true,
                write: true,
                owner: false
            }
        );
        assert_eq!(merge(rw, W, false), R);
        assert_eq!(merge(rw, ALL, false), Grant::default());
        assert_eq!(merge(Grant::default(), W, false), Grant::default());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("backup-2024.nightly_job").is_ok());
        for bad in [
            "",
            "has space",
            "tab\t",
            "sl/ash",
            &"x".repeat(KEY_NAME_CHARS_MAX + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grants_print_as_bits() {
        let mut k = KeySummary {
            name: "app".into(),
            access_key: "HKX".into(),
            root: false,
            grants: Default::default(),
            created_ms: 0,
        };
        assert_eq!(grants_text(&k), "(none)");
        k.grants.insert("a".into(), R);
        k.grants.insert("b".into(), ALL);
        assert_eq!(grants_text(&k), "a:r-- b:rwo");
        k.root = true;
        assert_eq!(grants_text(&k), "(all buckets)");
    }

    #[test]
    fn find_by_name_then_id() {
        let key = |id: &str, name: &str| AccessKey {
            access_key: id.into(),
            secret_key: "s".into(),
            name: name.into(),
            root: false,
            grants: Default::default(),
            created_ms: 0,
        };
        let keys = [key("HK1", "one"), key("HK2", "two")];
        assert_eq!(find(&keys, "two").unwrap().access_key, "HK2");
        assert_eq!(find(&keys, "HK1").unwrap().name, "one");
        assert!(find(&keys, "three").is_err());
    }
}
