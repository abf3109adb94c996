//! `holdfast ls`.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Result;
use holdfast_engine::listing::NodeEntry;
use holdfast_engine::restorer::lookup;
use holdfast_repo::index::MasterIndex;
use holdfast_repo::repository::Repository;
use holdfast_repo::tree::{Node, NodeKind};
use holdfast_repo::Id;

use super::{filter, open};
use crate::cli::{Args, Filter};
use crate::{exit, ui};

fn kind_char(k: NodeKind) -> char {
    match k {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Socket => 's',
    }
}

struct Lister<'a> {
    repo: &'a Repository,
    index: &'a MasterIndex,
    json: bool,
    long: bool,
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
}

impl Lister<'_> {
    fn print(&mut self, path: &[u8], n: &Node) -> Result<()> {
        if self.json {
            let v = serde_json::to_value(NodeEntry { path, node: n })?;
            writeln!(self.out, "{v}")?;
        } else if self.long {
            writeln!(
                self.out,
                "{}{:04o} {:>8} {:>8} {:>10} {} {}{}",
                kind_char(n.kind),
                n.mode & 0o7777,
                if n.user.is_empty() {
                    n.uid.to_string()
                } else {
                    n.user.clone()
                },
                if n.group.is_empty() {
                    n.gid.to_string()
                } else {
                    n.group.clone()
                },
                ui::size(n.size),
                ui::time(n.mtime_ns, 0),
                String::from_utf8_lossy(path),
                if n.kind == NodeKind::Symlink {
                    format!(" -> {}", String::from_utf8_lossy(&n.link_target))
                } else {
                    String::new()
                }
            )?;
        } else {
            self.out.write_all(path)?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn walk(&mut self, prefix: &[u8], tree: &Id) -> Result<()> {
        let t = self.repo.load_tree(self.index, tree)?;
        for n in &t.nodes {
            let mut p = prefix.to_vec();
            p.push(b'/');
            p.extend_from_slice(&n.name);
            self.print(&p, n)?;
            if let Some(sub) = n.subtree {
                self.walk(&p, &sub)?;
            }
        }
        Ok(())
    }
}

pub fn run(args: &Args, spec: &str, path: Option<&Path>, long: bool, f: &Filter) -> Result<i32> {
    let repo = open(args)?;
    let (_, snap) = repo.find_snapshot(spec, &filter(f)?)?;
    let index = repo.load_index()?;
    let mut l = Lister {
        repo: &repo,
        index: &index,
        json: args.json,
        long,
        out: std::io::BufWriter::new(std::io::stdout().lock()),
    };
    match path
        .map(|p| p.as_os_str().as_bytes())
        .filter(|p| p.iter().any(|&b| b != b'/'))
    {
        None => l.walk(b"", &snap.tree)?,
        Some(p) => {
            let p = p.strip_suffix(b"/").unwrap_or(p);
            let node = lookup(&repo, &index, &snap.tree, p)?.expect("non-empty path");
            l.print(p, &node)?;
            if let Some(sub) = node.subtree {
                l.walk(p, &sub)?;
            }
        }
    }
    l.out.flush()?;
    Ok(exit::OK)
}
