//! The S3 front's questions to the Raft node: proposals (the linearization point, INV-2) and
//! local-replica reads (off the Raft node's mailbox), with mailbox and storage failures mapped to S3 errors.

use hamster_protocol::meta::{Applied, BucketRecord, Command};
use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use tracing::warn;

use super::S3State;
use crate::raft::node::{CatchUp, GetBucket, LocalRead, Propose, ProposeError, ReadError};

/// Reads the local replica on the caller's thread (not through the Raft node's mailbox);
/// storage failures become InternalError, a closed store ServiceUnavailable.
pub async fn read<Q: LocalRead>(state: &S3State, q: Q) -> Result<Q::Output, S3Error> {
    match state.reader.read(&q) {
        Ok(v) => Ok(v),
        Err(ReadError::Closed) => Err(S3Error::new(S3ErrorCode::ServiceUnavailable)),
        Err(e) => {
            warn!(error = %e, "metadata read failed");
            Err(S3Error::new(S3ErrorCode::InternalError))
        }
    }
}

/// Waits until the local replica holds every write committed before now (a read index on a
/// follower; nothing to wait for on the leader). 503 when no leader can be asked.
pub async fn catch_up(state: &S3State) -> Result<(), S3Error> {
    match state.raft.send(CatchUp).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            warn!(error = %e, "cannot confirm the local replica is current");
            Err(S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                "the metadata cluster has no reachable leader right now; retry",
            ))
        }
        Err(_) => Err(S3Error::new(S3ErrorCode::ServiceUnavailable)),
    }
}

/// Proposes a command and waits for it to be committed and applied. A refusal comes back as
/// its S3 error.
pub async fn propose(state: &S3State, cmd: Command) -> Result<Applied, S3Error> {
    // A write that commits a version: the data plane learns which bodies the key now uses, to
    // heal soon any it wrote with fewer than all shards.
    let written = match &cmd {
        Command::PutObject {
            bucket,
            key,
            version,
        }
        | Command::PutObjectIf {
            bucket,
            key,
            version,
            ..
        }
        | Command::CompleteUpload {
            bucket,
            key,
            version,
            ..
        }
        | Command::CompleteUploadIf {
            bucket,
            key,
            version,
            ..
        } => Some((bucket.clone(), key.clone(), version.bodies())),
        _ => None,
    };
    let applied = match state.raft.send(Propose(cmd)).await {
        Ok(Ok(a)) => a,
        Ok(Err(ProposeError::KeyTooLong { .. })) => {
            return Err(S3Error::new(S3ErrorCode::KeyTooLongError))
        }
        Ok(Err(e)) if e.is_retryable() => {
            warn!(error = %e, "proposal not committed");
            return Err(S3Error::with_message(
                S3ErrorCode::ServiceUnavailable,
                "the metadata cluster could not commit the change; retry",
            ));
        }
        Ok(Err(e)) => {
            warn!(error = %e, "proposal failed");
            return Err(S3Error::new(S3ErrorCode::InternalError));
        }
        Err(_) => return Err(S3Error::new(S3ErrorCode::ServiceUnavailable)),
    };
    match applied.refused {
        Some(r) => Err(S3Error::new(r.s3_code())),
        None => {
            if let Some((bucket, key, bodies)) = written {
                state.data.committed(&bucket, &key, &bodies);
            }
            Ok(applied)
        }
    }
}

/// The bucket, or NoSuchBucket.
pub async fn bucket(state: &S3State, name: &str) -> Result<BucketRecord, S3Error> {
    read(state, GetBucket(name.to_string()))
        .await?
        .ok_or_else(|| S3Error::new(S3ErrorCode::NoSuchBucket))
}
