//! `fake-kube`: serve the fake Kubernetes API on 127.0.0.1 until killed, for trying the agent
//! by hand.
//!
//! ```text
//! fake-kube --port 0 --seed objects.yaml --kubeconfig /tmp/kubeconfig [--bookmark-interval-ms 1000]
//! fake-kube --example-seed 3 > objects.yaml   # a small Rook-Ceph cluster as a seed file
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use holdfast_fake_kube::fixtures::ClusterBuilder;
use holdfast_fake_kube::FakeKube;

/// Command-line arguments.
#[derive(Parser, Debug)]
#[command(
    name = "fake-kube",
    about = "A fake Kubernetes API server on 127.0.0.1"
)]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// A YAML stream of objects to store before serving.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Where to write a kubeconfig pointing at the server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Interval between watch BOOKMARK events, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    bookmark_interval_ms: u64,
    /// Print a seed file for a Rook-Ceph cluster with this many nodes (2 pods and 3 PVCs per
    /// node) to stdout and exit.
    #[arg(long)]
    example_seed: Option<usize>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(nodes) = args.example_seed {
        let c = ClusterBuilder::large(nodes, nodes * 2, nodes * 3).build();
        print!("{}", c.to_yaml());
        return Ok(());
    }
    let fake = FakeKube::builder()
        .bookmark_interval(Duration::from_millis(args.bookmark_interval_ms.max(1)))
        .start_on(args.port)
        .await?;
    if let Some(seed) = &args.seed {
        let text = std::fs::read_to_string(seed)?;
        let n = fake.insert_yaml(&text)?.len();
        eprintln!("seeded {n} objects from {}", seed.display());
    }
    if let Some(path) = &args.kubeconfig {
        fake.write_kubeconfig(path)?;
        eprintln!("kubeconfig written to {}", path.display());
    }
    println!("{}", fake.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
