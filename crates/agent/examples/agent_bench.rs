//! Helpers for the agent's memory measurements (issue 10; `benches/agent_idle.sh`), run by
//! hand:
//!
//! ```text
//! agent_bench seed DIR [NODE]  # DIR/seed.yaml: ClusterBuilder::large(10, 500, 1000);
//!                              # DIR/kubelet: NODE's (default node-3) kubelet tree
//! agent_bench list [NODE]      # one inventory (NODE's pods, or every pod) from the API
//!                              # server in KUBECONFIG; prints VmRSS/VmHWM before and after
//! ```

use holdfast_agent::kube_api;
use holdfast_fake_kube::fixtures::ClusterBuilder;
use holdfast_fake_kube::kubelet;

fn status(label: &str) {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_default()
    };
    println!(
        "{label}: VmRSS {} VmHWM {}",
        field("VmRSS:"),
        field("VmHWM:")
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("seed") => {
            let dir = std::path::PathBuf::from(args.get(1).ok_or("seed DIR [NODE]")?);
            let node = args.get(2).map(String::as_str).unwrap_or("node-3");
            let cluster = ClusterBuilder::large(10, 500, 1000).build();
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join("seed.yaml"), cluster.to_yaml())?;
            let layout = kubelet::build(&dir.join("kubelet"), &cluster, node)?;
            println!(
                "{} objects; {node}: {} pods, {} volume directories",
                cluster.objects.len(),
                cluster.pods_on(node).count(),
                layout.volumes.len()
            );
        }
        Some("list") => {
            let node = args.get(1).map(String::as_str);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            status("before");
            let client = rt.block_on(kube::Client::try_default())?;
            let t = std::time::Instant::now();
            let inv = rt.block_on(kube_api::inventory(&client, node))?;
            let took = t.elapsed();
            status("after");
            println!(
                "listed {} pods, {} PVCs, {} PVs, {} namespaces in {took:?}",
                inv.pods.len(),
                inv.pvcs.len(),
                inv.pvs.len(),
                inv.namespaces.len()
            );
        }
        _ => return Err("usage: agent_bench seed DIR [NODE] | agent_bench list [NODE]".into()),
    }
    Ok(())
}
