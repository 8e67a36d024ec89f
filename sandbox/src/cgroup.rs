//! Cgroups of one node: every node boots in a cgroup of its own in every hierarchy.
//!
//! Without a host systemd, systemd-nspawn puts its payload in `<its own cgroup>/payload`. Nodes
//! started from one cgroup therefore shared a single `/payload` in the `name=systemd` and
//! unified hierarchies and a single root in every controller hierarchy: each node's systemd
//! and kubelet managed the other nodes' cgroups too. kubelet removes pod cgroups it does not
//! know as orphans, so a pod on one node lost its cgroup to another node's kubelet, and exec
//! into it failed with "cgroup.procs: no such file or directory". Giving each node its own
//! cgroup (which nspawn's cgroup namespace then makes the node's root) keeps nodes apart.
//!
//! The created directories are recorded in `<node dir>/cgroups`, so `down` removes exactly
//! them, from any process, once the node's processes are gone.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{io, Result};

/// File in the node directory listing the node's cgroup directories, one per line.
pub(crate) const RECORD: &str = "cgroups";

/// This process's directory in every mounted hierarchy.
fn own_cgroup_dirs() -> Result<Vec<PathBuf>> {
    let cgroups =
        fs::read_to_string("/proc/self/cgroup").map_err(io("read", "/proc/self/cgroup"))?;
    let mounts =
        fs::read_to_string("/proc/self/mountinfo").map_err(io("read", "/proc/self/mountinfo"))?;
    Ok(cgroups
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            hierarchy_dir(&mounts, controllers, path)
        })
        .collect())
}

/// Where the hierarchy of `controllers` (empty for cgroup v2) is mounted, joined with `path`,
/// a line's cgroup from /proc/self/cgroup. None when that hierarchy is not mounted.
fn hierarchy_dir(mountinfo: &str, controllers: &str, path: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fields: Vec<&str> = left.split(' ').collect();
        let (root, mount_point) = (*fields.get(3)?, *fields.get(4)?);
        let mut right = right.split(' ');
        let (fstype, super_opts) = (right.next()?, right.nth(1)?);
        let ours = if controllers.is_empty() {
            fstype == "cgroup2"
        } else {
            let opts: Vec<&str> = super_opts.split(',').collect();
            fstype == "cgroup" && controllers.split(',').all(|c| opts.contains(&c))
        };
        let rel = Path::new(path).strip_prefix(root).ok()?;
        let mount_point = PathBuf::from(crate::sys::unescape_mount_path(mount_point));
        ours.then(|| {
            if rel.as_os_str().is_empty() {
                mount_point
            } else {
                mount_point.join(rel)
            }
        })
    })
}

/// Creates cgroup `name` below this process's own in every mounted hierarchy and records the
/// directories in the node directory. Returns the record file, whose directories the boot
/// script joins.
pub(crate) fn create(node_dir: &Path, name: &str) -> Result<PathBuf> {
    let mut created = Vec::new();
    for parent in own_cgroup_dirs()? {
        let dir = parent.join(name);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create cgroup", &dir)(e)),
        }
        // A new cpuset cgroup has no CPUs or memory nodes, and no process may join it.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let (from, to) = (parent.join(file), dir.join(file));
            if to.exists() && fs::read_to_string(&to).is_ok_and(|v| v.trim().is_empty()) {
                let value = fs::read_to_string(&from).map_err(io("read", &from))?;
                fs::write(&to, value.trim()).map_err(io("write", &to))?;
            }
        }
        created.push(dir.display().to_string());
    }
    let record = node_dir.join(RECORD);
    crate::sys::write_atomic(&record, (created.join("\n") + "\n").as_bytes(), 0o644)?;
    Ok(record)
}

/// Removes the node's recorded cgroups, deepest first (systemd, containerd and kubelet inside
/// the node made sub-cgroups). Call once the node's processes are gone; a cgroup whose last
/// processes are still exiting is retried briefly. Returns descriptions of what is left.
pub(crate) fn remove(node_dir: &Path) -> Vec<String> {
    let record = node_dir.join(RECORD);
    let Ok(text) = fs::read_to_string(&record) else {
        return Vec::new();
    };
    let mut left = Vec::new();
    for top in text.lines().filter(|l| !l.is_empty()).map(PathBuf::from) {
        let mut dirs = Vec::new();
        subdirs(&top, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            if let Err(e) = rmdir_patiently(&dir) {
                left.push(format!("cgroup {}: {e}", dir.display()));
            }
        }
    }
    if left.is_empty() {
        let _ = fs::remove_file(&record);
    }
    left
}

/// `dir` and every directory below it (cgroup control files are plain files).
fn subdirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    out.push(dir.to_path_buf());
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            subdirs(&entry.path(), out);
        }
    }
}

fn rmdir_patiently(dir: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 /outer /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_each_hierarchy_by_its_controllers() {
        let dir = |c, p| hierarchy_dir(MOUNTINFO, c, p).map(|d| d.display().to_string());
        assert_eq!(dir("cpu", "/"), Some("/sys/fs/cgroup/cpu".into()));
        assert_eq!(
            dir("cpuacct", "/a/b"),
            Some("/sys/fs/cgroup/cpuacct/a/b".into())
        );
        assert_eq!(
            dir("name=systemd", "/supervisor"),
            Some("/sys/fs/cgroup/systemd/supervisor".into())
        );
        assert_eq!(dir("", "/x"), Some("/sys/fs/cgroup/unified/x".into()));
        // A mount of a sub-tree: the path is relative to the mount's root.
        assert_eq!(
            dir("memory", "/outer/p"),
            Some("/sys/fs/cgroup/memory/p".into())
        );
        // Not mounted, or mounted for another controller set only.
        assert_eq!(dir("pids", "/"), None);
        assert_eq!(dir("cpu,cpuacct", "/"), None);
    }
}
