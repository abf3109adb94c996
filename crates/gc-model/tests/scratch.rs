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

fn rescue_repo() -> Repo {
    Repo {
        packs: vec![(0b001, true), (0b010, true), (0b100, true)],
        index: vec![0b111],
        snaps: vec![0b001, 0b010],
        uncommitted: vec![],
        markers: vec![(-20, 0b110)],
    }
}

fn scenarios() -> Vec<(&'static str, Config)> {
    let mut v = Vec::new();
    let p = ProcSpec::prune(0).no_heartbeat().no_crash().runs(2);
    let w = |wants, o| ProcSpec::writer(wants, o).no_crash();
    let mk = |procs: Vec<ProcSpec>, repo: Repo, adv: Vec<Time>, max_adv: u8, crashes: u8, forgets: u8| {
        let mut c = Config::new(Safeguards::ALL, procs, repo);
        c.env.advances = adv;
        c.env.max_advances = max_adv;
        c.env.max_crashes = crashes;
        c.env.max_forgets = forgets;
        c
    };
    v.push(("std", mk(vec![w(0b110, 0), p], Repo::standard(), vec![10, 75], 2, 0, 0)));
    v.push(("marked", mk(vec![w(0b110, 0), p], Repo::marked(), vec![10, 75], 2, 0, 0)));
    v.push(("w+15", mk(vec![w(0b110, 15), p], Repo::standard(), vec![10, 75], 1, 0, 0)));
    v.push(("p-15", mk(vec![w(0b110, 0), ProcSpec::prune(-15).no_heartbeat().no_crash().runs(2)], Repo::standard(), vec![10, 75], 1, 0, 0)));
    v.push(("p+25", mk(vec![w(0b110, 0).no_heartbeat(), ProcSpec::prune(25).no_heartbeat().no_crash().runs(2)], Repo::standard(), vec![47], 1, 0, 0)));
    v.push(("pp-marked", mk(vec![ProcSpec::prune(0).no_crash(), ProcSpec::prune(0).no_crash()], Repo::marked(), vec![75], 1, 0, 0)));
    v.push(("rescue", mk(vec![w(0b010, 0).no_heartbeat(), ProcSpec::prune(0).no_heartbeat().runs(2)], rescue_repo(), vec![10], 0, 1, 1)));
    v.push(("wcrash", mk(vec![ProcSpec::writer(0b100, 0), p], Repo::standard(), vec![10, 75], 2, 1, 0)));
    v.push(("w+pp", mk(vec![w(0b110, 0).no_heartbeat(), ProcSpec::prune(0).no_crash().no_heartbeat(), ProcSpec::prune(0).no_crash().no_heartbeat()], Repo::standard(), vec![75], 1, 0, 0)));
    v.push(("w+pp-marked", mk(vec![w(0b110, 0).no_heartbeat(), ProcSpec::prune(0).no_crash().no_heartbeat(), ProcSpec::prune(0).no_crash().no_heartbeat()], Repo::marked(), vec![75], 1, 0, 0)));
    v.push(("pp-rescue", mk(vec![ProcSpec::prune(0).no_crash(), ProcSpec::prune(0).no_crash()], rescue_repo(), vec![75], 1, 0, 1)));
    v.push(("w+pp-rescue", mk(vec![w(0b010, 0).no_heartbeat(), ProcSpec::prune(0).no_crash().no_heartbeat(), ProcSpec::prune(0).no_crash().no_heartbeat()], rescue_repo(), vec![75], 1, 0, 1)));
    v.push(("wcrash+w", mk(vec![ProcSpec::writer(0b100, 0).no_heartbeat(), w(0b110, 0).no_heartbeat(), p], Repo::standard(), vec![75], 1, 1, 0)));
    v
}

#[test]
fn scratch_sweep() {
    let only = std::env::var("ONLY").ok();
    let also: Vec<String> = std::env::var("ALSO").ok().map(|x| x.split(',').map(String::from).collect()).unwrap_or_default();
    let scen = std::env::var("SCEN").ok();
    let cap: usize = std::env::var("CAP").ok().map(|x| x.parse().unwrap()).unwrap_or(3_000_000);
    let depth: usize = std::env::var("DEPTH").ok().map(|x| x.parse().unwrap()).unwrap_or(45);
    let i2 = std::env::var("NOI2").is_err();
    for name in Safeguards::NAMES.iter().copied().chain(["BRIEF", "ALL"]) {
        if only.as_deref().is_some_and(|o| !o.split(',').any(|x| x == name)) { continue; }
        let base = if std::env::var("ROBUST").is_ok() { Safeguards::ROBUST } else { Safeguards::ALL };
        let mut sg = match name { "BRIEF" => Safeguards::BRIEF, "ALL" => base, n => base.without(n) };
        for a in &also { sg = sg.without(a); }
        let mut best: Option<(usize, String)> = None;
        for (sn, mut cfg) in scenarios() {
            if scen.as_deref().is_some_and(|o| !o.split(',').any(|x| x == sn)) { continue; }
            cfg.sg = sg;
            cfg.check_i2 = i2;
            cfg.env.prune_check_gap = std::env::var("GAP").is_ok();
            let t = std::time::Instant::now();
            let r = explore(&cfg, depth, cap);
            println!("  {name:35} {sn:12} {r} {:?}", t.elapsed());
            if let Some(f) = r.violation {
                if best.as_ref().is_none_or(|b| f.trace.len() < b.0) { best = Some((f.trace.len(), f.pretty)); }
            }
        }
        match best { Some((n, p)) => println!("{name}: NECESSARY, shortest {n}\n{p}"), None => println!("{name}: no violation found") }
    }
}

#[test]
fn scratch_random_hunt() {
    let n: u64 = std::env::var("N").ok().map(|x| x.parse().unwrap()).unwrap_or(100_000);
    let seed: u64 = std::env::var("SEED").ok().map(|x| x.parse().unwrap()).unwrap_or(1);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut next = move || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
    let sel = |r: u64, v: &[i32]| v[(r % v.len() as u64) as usize];
    let mut quiescent = 0; let mut residual = 0; let mut steps = 0usize; let mut best: Option<(usize, String)> = None;
    for _ in 0..n {
        let nw = 2 + next() % 2; let np = 1 + next() % 3;
        let mut procs = Vec::new();
        for _ in 0..nw {
            let mut w = ProcSpec::writer((1 + next() % 7) as u8, sel(next(), &[-15, -5, 0, 0, 0, 5, 15]));
            w.may_crash = next() % 2 == 0; w.heartbeats = next() % 5 != 0;
            procs.push(w);
        }
        for _ in 0..np {
            let mut p = ProcSpec::prune(sel(next(), &[-15, 0, 0, 15, 25])).runs((1 + next() % 3) as u8);
            p.may_crash = next() % 2 == 0; p.heartbeats = next() % 2 == 0; p.margin = sel(next(), &[0, 0, 0, 30]);
            procs.push(p);
        }
        procs.truncate(6);
        let repo = match next() % 4 { 0 => Repo::standard(), 1 => Repo::marked(), 2 => rescue_repo(), _ => Repo { packs: vec![(1, true), (2, true), (6, true)], index: vec![0b011, 0b100], snaps: vec![3], uncommitted: vec![], markers: vec![(-30, 0b010)] } };
        let base = if std::env::var("ROBUST").is_ok() { Safeguards::ROBUST } else { Safeguards::ALL };
        let sg = match std::env::var("SG").ok().as_deref() { None => base, Some("BRIEF") => Safeguards::BRIEF, Some(n) => base.without(n) };
        let mut cfg = Config::new(sg, procs, repo);
        let all = [1, 5, 10, 20, 45, 47, 55, 75, 130];
        cfg.env = Env { advances: (0..1 + next() % 3).map(|_| sel(next(), &all)).collect(), max_advances: (next() % 6) as u8, max_crashes: (next() % 3) as u8, max_forgets: (next() % 2) as u8, prune_check_gap: std::env::var("GAP").is_ok() };
        let choices: Vec<u32> = (0..400).map(|_| next() as u32).collect();
        let (trace, v, res) = simulate(&cfg, &choices);
        if res { residual += 1; }
        let mut st = cfg.initial(); for &a in &trace { let _ = cfg.step(&mut st, a); }
        if st.world.quiescent() { quiescent += 1; }
        steps += trace.len();
        if let Some(v) = v {
            let (pretty, _) = cfg.replay(&trace);
            if best.as_ref().is_none_or(|b| trace.len() < b.0) { best = Some((trace.len(), format!("{v}\n{:?}\n{:?}\n{pretty}", cfg.procs, cfg.env))); }
        }
    }
    println!("residual at end: {residual}, quiescent {quiescent}, mean steps {}", steps as f64 / n as f64);
    if let Some((_, p)) = best { println!("VIOLATION FOUND\n{p}"); } else { println!("no violation in {n} schedules"); }
}
