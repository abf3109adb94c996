//! `holdfast key`: several passwords for one repository.

use anyhow::Result;
use holdfast_repo::backend::FileKind;
use holdfast_repo::keyfile::KdfParams;

use super::{cat::resolve, host_name, now_ns, open, print_json, user_name};
use crate::cli::{Args, KeyAction};
use crate::{exit, password, ui};

pub fn run(args: &Args, action: &KeyAction) -> Result<i32> {
    let mut repo = open(args)?;
    match action {
        KeyAction::List => {
            let keys = repo.keys()?;
            if args.json {
                let v: Vec<_> = keys
                    .iter()
                    .map(|(id, kf)| match kf {
                        Ok(k) => serde_json::json!({"id": id, "current": *id == repo.key_id(), "host": k.host, "user": k.user, "created": ui::time(k.created_ns, 0), "params": k.kdf}),
                        Err(e) => serde_json::json!({"id": id, "error": e.to_string()}),
                    })
                    .collect();
                print_json(&v)?;
            } else {
                println!("  {:<10} {:<16} {:<12} created", "ID", "host", "user");
                for (id, kf) in &keys {
                    let mark = if *id == repo.key_id() { "*" } else { " " };
                    match kf {
                        Ok(k) => println!(
                            "{mark} {:<10} {:<16} {:<12} {}",
                            id.short(),
                            k.host,
                            k.user,
                            ui::time(k.created_ns, 0)
                        ),
                        Err(e) => println!("{mark} {:<10} damaged: {e}", id.short()),
                    }
                }
            }
        }
        KeyAction::Add {
            new_password_file,
            host,
        } => {
            let pw = password::get_new(new_password_file.as_deref())?;
            let kdf = current_kdf(&repo)?;
            let label = host.clone().unwrap_or_else(host_name);
            if label.is_empty() || label.len() > u16::MAX as usize {
                return Err(exit::usage(
                    "--host must be a non-empty name shorter than 65536 bytes",
                ));
            }
            let id = repo.add_key(&pw, kdf, now_ns(), &label, &user_name())?;
            report(args, &format!("added key for host {label}:"), &id)?;
        }
        KeyAction::Remove { id: Some(id), .. } => {
            let id = resolve(&repo, FileKind::Key, id)?;
            repo.remove_key(&id)?;
            report(args, "removed key", &id)?;
        }
        KeyAction::Remove { id: None, host } => {
            let host = host.as_deref().unwrap_or_default();
            let ids: Vec<_> = repo
                .keys()?
                .into_iter()
                .filter(|(_, k)| k.as_ref().is_ok_and(|k| k.host == host))
                .map(|(id, _)| id)
                .collect();
            if ids.is_empty() {
                return Err(exit::usage(&format!(
                    "no key file is labelled with host {host:?}: see `holdfast key list`"
                )));
            }
            // Checked before removing any, so a refusal leaves every key in place.
            if ids.contains(&repo.key_id()) {
                return Err(exit::usage(&format!(
                    "the key this command was opened with is labelled {host:?}: open with \
                     another password to remove the keys of {host:?}"
                )));
            }
            for id in &ids {
                repo.remove_key(id)?;
                report(args, "removed key", id)?;
            }
        }
        KeyAction::Passwd { new_password_file } => {
            let pw = password::get_new(new_password_file.as_deref())?;
            let kdf = current_kdf(&repo)?;
            let id = repo.change_password(&pw, kdf, now_ns(), &host_name(), &user_name())?;
            report(args, "password changed; new key", &id)?;
        }
    }
    Ok(exit::OK)
}

/// New keys get the same cost parameters as the key in use.
fn current_kdf(repo: &holdfast_repo::repository::Repository) -> Result<KdfParams> {
    let bytes = repo.read_checked(FileKind::Key, &repo.key_id())?;
    Ok(holdfast_repo::keyfile::KeyFile::decode(&bytes)
        .map(|k| k.kdf)
        .unwrap_or(KdfParams::DEFAULT))
}

fn report(args: &Args, what: &str, id: &holdfast_repo::Id) -> Result<()> {
    if args.json {
        print_json(&serde_json::json!({"result": what, "id": id}))?;
    } else if !args.quiet {
        println!("{what} {}", id.short());
    }
    Ok(())
}
