//! `fake-kube`: serve the fake Kubernetes API on 127.0.0.1 until killed, for trying the agent
//! by hand.
//!
//! ```text
//! fake-kube --port 0 --seed objects.yaml --kubeconfig /tmp/kubeconfig [--bookmark-interval-ms 1000]
//! fake-kube --example-seed 3 > objects.yaml   # a small Rook-Ceph cluster as a seed file
//! fake-kube --demo /tmp/demo --kubeconfig /tmp/demo/kubeconfig   # a seeded 2-node cluster
//!     # and its kubelet trees (/tmp/demo/kubelet/<node>) with a few files in each volume,
//!     # the snapshot API and the CSI simulator on directories (/tmp/demo/storage)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use holdfast_fake_kube::csi::{CsiSim, Storage};
use holdfast_fake_kube::fixtures::ClusterBuilder;
use holdfast_fake_kube::{kubelet, FakeKube};

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
    /// Seed a small 2-node Rook-Ceph cluster and lay out its nodes' kubelet directories under
    /// DIR/kubelet/<node>, with a few files in every filesystem volume, the snapshot API with
    /// Rook's VolumeSnapshotClasses, and the CSI simulator on plain directories
    /// (DIR/storage): a cluster to run `holdfast agent --kubelet-dir DIR/kubelet/<node>`
    /// against by hand, with point-in-time reads.
    #[arg(long, value_name = "DIR", conflicts_with = "seed")]
    demo: Option<PathBuf>,
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
    // Kept alive until the end: it plays the controllers and kubelets of the demo.
    let mut _sim = None;
    if let Some(dir) = &args.demo {
        let cluster = ClusterBuilder::large(2, 4, 6)
            .namespace("holdfast-system", &[])
            .snapshot_classes()
            .seed(&fake);
        let mut layouts = Vec::new();
        for node in &cluster.nodes {
            let root = dir.join("kubelet").join(node);
            layouts.push((
                node.clone(),
                root.clone(),
                kubelet::build(&root, &cluster, node)?,
            ));
        }
        let roots: Vec<(&str, &std::path::Path)> = layouts
            .iter()
            .map(|(n, r, _)| (n.as_str(), r.as_path()))
            .collect();
        let sim = CsiSim::start(&fake, &roots, Storage::dir(&dir.join("storage")))?;
        for (node, _, layout) in &layouts {
            for v in &layout.volumes {
                if let Some(pvc) = cluster.pvc(&v.namespace, &v.claim) {
                    sim.add_source(pvc, &v.path)?;
                }
                if v.block {
                    continue;
                }
                std::fs::create_dir_all(v.path.join("data"))?;
                std::fs::write(
                    v.path.join("data/hello.txt"),
                    format!("volume {}/{} on {node}\n", v.namespace, v.claim),
                )?;
            }
        }
        _sim = Some(sim);
        eprintln!(
            "seeded a {}-node cluster; kubelet directories under {}",
            cluster.nodes.len(),
            dir.join("kubelet").display()
        );
    }
    if let Some(path) = &args.kubeconfig {
        fake.write_kubeconfig(path)?;
        eprintln!("kubeconfig written to {}", path.display());
    }
    println!("{}", fake.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
