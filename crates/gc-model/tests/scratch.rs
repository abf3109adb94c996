use holdfast_gc_model::*;

fn bug_cfg(sg: Safeguards) -> Config {
    Config::new(
        sg,
        vec![ProcSpec::writer(0b100, 0), ProcSpec::prune(0), ProcSpec::prune(0)],
        Repo::standard(),
    )
}

#[test]
fn scratch_bug() {
    use Script::*;
    let script = [
        RunUntil(0, Pc::IndexCheck),
        Do(Action::Advance(75)),
        Run(1),
        Run(2),
        Do(Action::Heartbeat(0)),
        Do(Action::Heartbeat(0)),
        Do(Action::Heartbeat(0)),
        Run(0),
    ];
    for sg in [Safeguards::ALL, Safeguards::ALL.without("lease_sticky")] {
        let cfg = bug_cfg(sg);
        let (trace, v) = run_script(&cfg, &script);
        let (pretty, _) = cfg.replay(&trace);
        println!("{pretty}\n{v:?}\n");
    }
}

#[test]
fn scratch_explore() {
    let v = |k: &str, d: u32| std::env::var(k).ok().map(|x| x.parse().unwrap()).unwrap_or(d);
    let mut w = ProcSpec::writer(0b100, 0);
    if v("WHB", 1) == 0 { w = w.no_heartbeat(); }
    if v("WCR", 1) == 0 { w = w.no_crash(); }
    let mut p = ProcSpec::prune(0);
    if v("PHB", 1) == 0 { p = p.no_heartbeat(); }
    if v("PCR", 1) == 0 { p = p.no_crash(); }
    let procs = if v("RUNS", 0) == 1 { vec![w, p.runs(2)] } else { vec![w, p, p] };
    let mut cfg = Config::new(Safeguards::ALL, procs, Repo::standard());
    cfg.env.max_advances = v("ADV", 2) as u8;
    cfg.env.max_crashes = v("CR", 1) as u8;
    if v("ONE", 0) == 1 { cfg.env.advances = vec![75]; }
    for depth in [10, 15, 20, 25, 30, 35, 40] {
        let t = std::time::Instant::now();
        let r = explore(&cfg, depth, 20_000_000);
        println!("depth {depth}: {r} in {:?}", t.elapsed());
        if let Some(f) = &r.violation { println!("{}", f.pretty); break; }
        if r.exhausted || t.elapsed().as_secs() > 20 { break; }
    }
}
