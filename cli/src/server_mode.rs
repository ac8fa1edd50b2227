//! `belay --server URL ...`: the same review commands against belay-server's reviewer
//! service, for hosts whose agents send their requests there. Each command becomes one
//! [`Call`], made on one connection.
use std::path::Path;

use anyhow::Context as _;

use crate::Output;
use crate::review::{self, Decision};
use crate::server_client;

/// The reviewer commands [`run`] understands.
pub enum Call<'a> {
    Watch,
    Policy(crate::policy::Prepared),
    Agents,
    AuditLog { after: u64, limit: Option<u64> },
    Pending,
    Show(&'a str),
    Decide(Decision<'a>),
}

pub fn run(url: &str, ca: Option<&Path>, output: Output, call: Call<'_>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let (mut client, signed_in) = server_client::connect(url, ca).await?;
        match call {
            Call::Watch => review::watch(&mut client, output).await,
            Call::Agents => review::agents(&mut client, output).await,
            Call::Policy(prepared) => crate::policy::run(&mut client, output, prepared).await,
            Call::AuditLog { after, limit } => {
                review::audit_log(&mut client, output, after, limit).await
            }
            Call::Pending => review::pending(&mut client, output).await,
            Call::Show(id) => review::show(&mut client, output, id).await,
            Call::Decide(decision) => {
                review::decide(&mut client, output, signed_in, decision).await
            }
        }
    })
}
