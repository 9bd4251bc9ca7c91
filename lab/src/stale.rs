//! Finding and removing what crashed or killed lab runs left behind. Each
//! lab's bridge carries its owner (pid and process start time) in its alias;
//! a lab whose owner no longer runs is stale. Everything a lab creates has its
//! id in the name, so the leftovers of one id can be collected together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::cgroup;
use crate::error::Result;
use crate::live;
use crate::netns;
use crate::shared::{CGROUP_PREFIX, DIR_PREFIX, KEEP_ENV, require_root};

const ALIAS_PREFIX: &str = "meshdrift-lab";

/// What a sweep removed and what it left alone.
#[derive(Debug, Default, Clone)]
pub struct CleanupReport {
    /// Lab ids whose resources were removed.
    pub removed: Vec<u8>,
    /// Lab ids left alone because their owner (pid) still runs.
    pub live: Vec<(u8, u32)>,
    /// Work directories removed.
    pub dirs: Vec<PathBuf>,
}

/// `meshdrift-lab pid=<pid> start=<start time in ticks>` for this process.
pub(crate) fn own_owner_tag() -> String {
    let pid = std::process::id();
    format!(
        "{ALIAS_PREFIX} pid={pid} start={}",
        start_time(pid).unwrap_or(0)
    )
}

/// Field 22 of `/proc/<pid>/stat`: distinguishes a reused pid from the owner.
/// `None` for a process that is gone or a zombie (dead, merely unreaped).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses; fields resume
    // after the last ')', at field 3 (the state).
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z" | "X" | "x")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

fn parse_owner(alias: &str) -> Option<(u32, u64)> {
    let rest = alias.strip_prefix(ALIAS_PREFIX)?;
    let mut pid = None;
    let mut start = None;
    for field in rest.split_whitespace() {
        if let Some(v) = field.strip_prefix("pid=") {
            pid = v.parse().ok();
        } else if let Some(v) = field.strip_prefix("start=") {
            start = v.parse().ok();
        }
    }
    Some((pid?, start?))
}

fn owner_alive(pid: u32, start: u64) -> bool {
    start_time(pid) == Some(start)
}

/// Removes the resources of labs whose owning process is gone.
pub fn cleanup_stale() -> Result<CleanupReport> {
    sweep(false)
}

/// Removes the resources of every lab not owned by this process, including
/// labs of processes that still run (they lose their network and servers).
pub fn cleanup_all() -> Result<CleanupReport> {
    sweep(true)
}

struct Found {
    netns: BTreeMap<u8, Vec<String>>,
    links: BTreeMap<u8, Vec<String>>,
    owners: BTreeMap<u8, Option<(u32, u64)>>,
    cgroups: BTreeMap<u8, PathBuf>,
}

fn find() -> Result<Found> {
    let mut found = Found {
        netns: BTreeMap::new(),
        links: BTreeMap::new(),
        owners: BTreeMap::new(),
        cgroups: BTreeMap::new(),
    };
    for name in netns::list_netns()? {
        if let Some(id) = netns::id_of_name(&name) {
            found.netns.entry(id).or_default().push(name);
        }
    }
    for (name, alias) in netns::list_links()? {
        if let Some(id) = netns::id_of_name(&name) {
            if name == netns::bridge_name(id) {
                found
                    .owners
                    .insert(id, alias.as_deref().and_then(parse_owner));
            }
            found.links.entry(id).or_default().push(name);
        }
    }
    let root = cgroup::cgroup2_root()?;
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_prefix(CGROUP_PREFIX)
                .and_then(|s| s.parse::<u8>().ok())
            {
                found.cgroups.insert(id, entry.path());
            }
        }
    }
    Ok(found)
}

fn sweep(include_live: bool) -> Result<CleanupReport> {
    require_root()?;
    let mut report = CleanupReport::default();
    let ours: BTreeSet<u8> = live::live_ids().into_iter().collect();
    let mut found = find()?;
    // A bridge without an owner alias is either a crash between creating the
    // bridge and naming its owner, or a lab being created this instant; look
    // again after a moment before calling it stale.
    if found.owners.values().any(Option::is_none) {
        std::thread::sleep(Duration::from_millis(300));
        found = find()?;
    }
    let ids: BTreeSet<u8> = found
        .netns
        .keys()
        .chain(found.links.keys())
        .chain(found.cgroups.keys())
        .copied()
        .collect();
    for id in ids {
        if ours.contains(&id) {
            continue;
        }
        if let Some(Some((pid, start))) = found.owners.get(&id) {
            // Labs of this very process are torn down by their own handles.
            if *pid == std::process::id() {
                continue;
            }
            if owner_alive(*pid, *start) && !include_live {
                report.live.push((id, *pid));
                continue;
            }
        }
        tracing::info!(id, "removing leftover lab resources");
        if let Some(path) = found.cgroups.get(&id)
            && let Err(e) = cgroup::kill_all(path, Duration::from_secs(10))
        {
            tracing::warn!(id, error = %e, "could not empty leftover cgroup");
        }
        for ns in found.netns.get(&id).into_iter().flatten() {
            if let Err(e) = netns::delete_netns(ns) {
                tracing::warn!(id, netns = ns, error = %e, "could not delete leftover netns");
            }
        }
        let bridge = netns::bridge_name(id);
        let links = found.links.get(&id).cloned().unwrap_or_default();
        for link in links.iter().filter(|l| **l != bridge) {
            let _ = netns::delete_link(link);
        }
        if let Some(path) = found.cgroups.get(&id)
            && let Err(e) = cgroup::remove_tree(path, Duration::from_secs(10))
        {
            tracing::warn!(id, error = %e, "could not remove leftover cgroup");
        }
        if links.contains(&bridge)
            && let Err(e) = netns::delete_link(&bridge)
        {
            tracing::warn!(id, error = %e, "could not delete leftover bridge");
        }
        report.removed.push(id);
    }
    if std::env::var(KEEP_ENV).as_deref() != Ok("1") {
        report.dirs = sweep_dirs(include_live);
    }
    Ok(report)
}

/// Work dirs are `mdlab-<id>-<pid>`; removed when that pid no longer runs.
fn sweep_dirs(include_live: bool) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let own_pid = std::process::id();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|s| s.split_once('-'))
            .and_then(|(id, pid)| id.parse::<u8>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        // This process's labs remove their own directories (or keep them
        // on purpose); one may be being created right now.
        if pid == own_pid {
            continue;
        }
        let alive = start_time(pid).is_some();
        if alive && !include_live {
            continue;
        }
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_tag_round_trips() {
        let tag = own_owner_tag();
        let (pid, start) = parse_owner(&tag).expect("own tag parses");
        assert_eq!(pid, std::process::id());
        assert!(owner_alive(pid, start));
        assert!(!owner_alive(pid, start + 1));
        assert_eq!(parse_owner("something else"), None);
    }
}
