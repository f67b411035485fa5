//! `weft cluster status|add-node|remove-node`: inspect and change the placement cluster through
//! any of its nodes. Every flag can also be given as a `WEFT_*` environment variable.

mod query;

pub use query::{cluster_status, cluster_status_with};

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use weft_placement::proto::placement::{
    AddNodeRequest, MembershipResponse, RemoveNodeRequest,
    placement_client::PlacementClient as PbClient,
};
use weft_tls::{Dial, Expect, TlsArgs};

/// `weft cluster`: inspect and change the placement cluster.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ClusterCommand {
    /// Leader, raft members, table version and sidecar hosts.
    Status(StatusArgs),
    /// Add a placement node (start it first with `weft placement --join`), as learner, then
    /// voter once it caught up.
    AddNode(AddNodeArgs),
    /// Remove a placement node from the raft voters.
    RemoveNode(RemoveNodeArgs),
}

/// Where the placement cluster is.
#[derive(Args, Debug, Clone)]
pub struct PlacementAddrs {
    /// Placement node addresses, comma-separated (`host:port`).
    #[arg(
        long,
        env = "WEFT_PLACEMENT_ADDRESSES",
        value_delimiter = ',',
        default_value = "127.0.0.1:50005"
    )]
    pub placement: Vec<String>,
    /// add-node/remove-node: give up retrying (no leader, unreachable) after this long.
    #[arg(long, env = "WEFT_CLUSTER_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// An operator's certificate (spiffe://TD/ns/NS/weft-admin) when placement runs with TLS.
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl PlacementAddrs {
    fn dial(&self) -> anyhow::Result<Dial> {
        Ok(Dial::new(self.tls.load()?, Expect::Placement))
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct StatusArgs {
    #[command(flatten)]
    pub addrs: PlacementAddrs,
    #[arg(long, env = "WEFT_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Args, Debug, Clone)]
pub struct AddNodeArgs {
    #[command(flatten)]
    pub addrs: PlacementAddrs,
    /// Raft id of the new node (never reuse a removed node's id).
    #[arg(long, env = "WEFT_CLUSTER_NODE_ID")]
    pub id: u64,
    /// Advertised address of the new node.
    #[arg(long, env = "WEFT_CLUSTER_NODE_ADDRESS")]
    pub address: String,
}

#[derive(Args, Debug, Clone)]
pub struct RemoveNodeArgs {
    #[command(flatten)]
    pub addrs: PlacementAddrs,
    #[arg(long, env = "WEFT_CLUSTER_NODE_ID")]
    pub id: u64,
}

pub async fn run_cluster(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        ClusterCommand::Status(a) => {
            let status = cluster_status_with(&a.addrs.placement, &a.addrs.dial()?).await?;
            match a.output {
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                OutputFormat::Text => query::print_status(&status),
            }
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::AddNode(a) => {
            let req = AddNodeRequest {
                id: a.id,
                address: a.address.clone(),
            };
            let voters = admin_retry(&a.addrs, |mut c| {
                let req = req.clone();
                async move { c.add_node(req).await }
            })
            .await?;
            println!("node {} added; voters: {voters:?}", a.id);
            Ok(ExitCode::SUCCESS)
        }
        ClusterCommand::RemoveNode(a) => {
            let req = RemoveNodeRequest { id: a.id };
            let voters =
                admin_retry(&a.addrs, |mut c| async move { c.remove_node(req).await }).await?;
            println!("node {} removed; voters: {voters:?}", a.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Tries every address until one accepts (any node forwards to the leader), retrying while
/// there is no leader.
async fn admin_retry<F, Fut>(addrs: &PlacementAddrs, call: F) -> anyhow::Result<Vec<u64>>
where
    F: Fn(PbClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<MembershipResponse>, tonic::Status>>,
{
    let dial = addrs.dial()?;
    let deadline = Instant::now() + Duration::from_millis(addrs.timeout_ms);
    let mut last = String::from("no address given");
    loop {
        for addr in &addrs.placement {
            match query::connect(addr, &dial).await {
                Ok(c) => match call(c).await {
                    Ok(r) => return Ok(r.into_inner().voters),
                    Err(s) if s.code() == tonic::Code::Unavailable => last = s.message().into(),
                    Err(s) => bail!("{addr}: {:?}: {}", s.code(), s.message()),
                },
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        if Instant::now() >= deadline {
            bail!("gave up: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
