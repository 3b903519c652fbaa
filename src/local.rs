//! The CLI's channel to the node serving a data directory: the control protocol over the
//! cluster port, with mutual TLS using that node's own certificate from `<data>/tls`.

use std::path::Path;

use anyhow::bail;
use hamster_actors::node::{load_node, DataDir};
use hamster_actors::{control, tls};
use hamster_protocol::wire::{ControlRequest, ControlResponse};

/// Sends one request to the node serving `dir`; an error answer becomes an error.
pub fn ask(dir: &Path, req: &ControlRequest) -> anyhow::Result<ControlResponse> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = DataDir::new(dir);
    let node = load_node(&dir)?;
    let material = tls::load_tls_dir(&dir.tls())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(control::control_request(&node.cluster_addr, &material, req))? {
        ControlResponse::Error { message } => bail!("{message}"),
        other => Ok(other),
    }
}
