//! Leak accounting of a runtime used in this process: a baseline taken before
//! any pod exists, and a ledger of what is left beyond it, in eight
//! categories (host processes, open fds of this process, mounts, taps and
//! qdiscs, cgroups, files under the state root, CIDs and lock files,
//! temporary files). Every leftover is named; what persists by design (the
//! boot admission's slot files, one CID lock file per CID ever used, the
//! runtime's parent cgroups) is counted apart, bounded, and never hidden.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _, Result};

use super::net::{ip, run, Netns};
use super::pod::{cgroups_under, pid_gone, TestRuntime};

/// The categories, in the order they are printed.
pub const CATEGORIES: [&str; 8] = [
    "host processes",
    "open fds",
    "mounts",
    "taps and qdiscs",
    "cgroups",
    "files under the state root",
    "CIDs and lock files",
    "temporary files",
];

/// What exists before the first pod: everything counted later is relative to it.
#[derive(Debug)]
pub struct Baseline {
    fds: BTreeMap<String, usize>,
    children: BTreeSet<i32>,
    host_taps: BTreeSet<String>,
    ns_taps: BTreeSet<String>,
    ns_qdiscs: BTreeSet<String>,
    temp: BTreeSet<PathBuf>,
}

/// Where the accounting looks.
#[derive(Debug)]
pub struct Scope<'a> {
    /// The runtime under test.
    pub t: &'a TestRuntime,
    /// The namespace the runtime's pods take their network from.
    pub netns: &'a Netns,
    /// The caller's own scratch directory (volumes), outside the state root.
    pub scratch: &'a Path,
}

/// The result of one accounting: leftovers per category, and what persists by design.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Leftovers, by category (every category present, most empty).
    pub left: BTreeMap<&'static str, Vec<String>>,
    /// What stays by design, with its count.
    pub by_design: Vec<(String, usize)>,
}

impl Scope<'_> {
    /// Takes the baseline; call it before the first pod is created.
    pub fn baseline(&self) -> Result<Baseline> {
        Ok(Baseline {
            fds: open_fds(),
            children: children(),
            host_taps: taps(None)?,
            ns_taps: taps(Some(self.netns))?,
            ns_qdiscs: qdiscs(self.netns)?,
            temp: entries(&std::env::temp_dir()),
        })
    }

    /// Accounts for everything left beyond `base`.
    pub fn account(&self, base: &Baseline) -> Result<Ledger> {
        let root = self.t.root();
        let mut ledger = Ledger::default();
        let mut put = |c: &'static str, items: Vec<String>| {
            ledger.left.insert(c, items);
        };
        let mut by_design = Vec::new();

        // Host processes: children of this process (zombies too: an unreaped
        // child is a leak), anything whose command line names the state root,
        // and whatever is in the runtime's pod cgroups.
        let mut procs = BTreeSet::new();
        for pid in children().difference(&base.children) {
            procs.insert(format!("{pid} (child: {})", describe(*pid)));
        }
        for pid in naming(root) {
            procs.insert(format!("{pid} (names the root: {})", describe(pid)));
        }
        for pid in self.t.cgroup_pids() {
            if !pid_gone(pid) {
                procs.insert(format!("{pid} (in a pod cgroup: {})", describe(pid)));
            }
        }
        put("host processes", procs.into_iter().collect());

        // Open fds: the multiset of this process's descriptors, by target.
        put("open fds", grown(&base.fds, &open_fds()));

        // Mounts under the state root or the scratch directory.
        put(
            "mounts",
            [root, self.scratch]
                .iter()
                .flat_map(|d| vc_host::runtime::share::mounts_under(d))
                .map(|m| m.display().to_string())
                .collect(),
        );

        // Taps (in the host namespace and in the pods' namespace) and qdiscs
        // (in the pods' namespace, where the runtime adds its ingress ones).
        let mut net = Vec::new();
        for t in taps(None)?.difference(&base.host_taps) {
            net.push(format!("tap {t} (host namespace)"));
        }
        for t in taps(Some(self.netns))?.difference(&base.ns_taps) {
            net.push(format!("tap {t} (namespace {})", self.netns.name));
        }
        for q in qdiscs(self.netns)?.difference(&base.ns_qdiscs) {
            net.push(format!("qdisc {q} (namespace {})", self.netns.name));
        }
        put("taps and qdiscs", net);

        // Cgroups: pod cgroups under the runtime's parents. The parents
        // themselves are the runtime's, made with its first pod.
        let parents = self.t.cgroup_parents();
        put(
            "cgroups",
            cgroups_under(&parents)
                .iter()
                .map(|c| c.display().to_string())
                .collect(),
        );
        let kept_parents = parents.iter().filter(|p| p.is_dir()).count();
        by_design.push(("parent cgroups of the runtime".to_owned(), kept_parents));

        // Files under the state root, sorted into three categories.
        let mut files = Vec::new();
        let mut locks = Vec::new();
        let mut temps = Vec::new();
        let mut slots = 0;
        let mut cid_files = BTreeMap::new();
        for path in walk(root) {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_owned();
            let name = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let parent = rel.parent().unwrap_or(Path::new(""));
            if ["pods", "locks", "locks/boot", CID_DIR].contains(&rel.to_str().unwrap_or("")) {
                // The store's skeleton, made once when the root is opened.
            } else if name.starts_with('.') && name.contains(".tmp-") {
                temps.push(format!("{} (a store temporary)", rel.display()));
            } else if parent == Path::new("locks/boot") && name.starts_with("slot-") {
                slots += 1;
            } else if parent == Path::new(CID_DIR) && name.ends_with(".lock") {
                if let Ok(meta) = std::fs::metadata(&path) {
                    cid_files.insert(meta.ino(), rel.display().to_string());
                }
            } else if parent == Path::new("locks") && name.ends_with(".lock") {
                locks.push(format!("{} (a pod's lock file)", rel.display()));
            } else {
                files.push(rel.display().to_string());
            }
        }
        put("files under the state root", files);
        // A CID is held while someone has its lock file flocked.
        let held = flocked_inodes();
        for (ino, file) in &cid_files {
            if held.contains(ino) {
                locks.push(format!("{file} (a CID still leased)"));
            }
        }
        put("CIDs and lock files", locks);
        by_design.push((
            format!(
                "boot admission slot files (locks/boot, width {})",
                self.t.rt.config().boot_width
            ),
            slots,
        ));
        by_design.push((
            format!("CID lock files ({CID_DIR}, one per CID ever used)"),
            cid_files.len(),
        ));

        // Temporary files: store temporaries under the root, new entries in
        // the temporary directory, anything left in the scratch directory.
        for e in entries(&std::env::temp_dir()).difference(&base.temp) {
            if !e.starts_with(self.scratch) && !e.starts_with(root) {
                temps.push(format!("{} (new in the temporary directory)", e.display()));
            }
        }
        for e in entries(self.scratch) {
            temps.push(format!("{} (left in the scratch directory)", e.display()));
        }
        put("temporary files", temps);
        ledger.by_design = by_design;
        Ok(ledger)
    }
}

impl Scope<'_> {
    /// Proves that every category can fail: plants one leftover of each kind
    /// (a child process, an open file, a tmpfs mount, a tap, a cgroup, a file
    /// under the root, a pod lock file, a temporary file), checks that the
    /// accounting names each in its category, removes them, and checks that
    /// it comes out clean again.
    pub fn calibrate(&self, base: &Baseline) -> Result<()> {
        use std::process::{Command, Stdio};
        let root = self.t.root();
        let mut sleeper = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start sleep")?;
        let planted = (|| -> Result<Ledger> {
            let _fd = std::fs::File::open("/dev/null")?;
            let mnt = self.scratch.join("plant");
            std::fs::create_dir(&mnt)?;
            nix::mount::mount(
                Some("tmpfs"),
                &mnt,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )?;
            self.netns
                .ip(&["tuntap", "add", "dev", "vcplant", "mode", "tap"])?;
            let parent = self
                .t
                .cgroup_parents()
                .into_iter()
                .next()
                .context("no cgroup")?;
            std::fs::create_dir_all(parent.join("plant"))?;
            std::fs::write(root.join("plant"), "")?;
            std::fs::write(root.join("locks/plant.lock"), "")?;
            std::fs::write(std::env::temp_dir().join("vcplant"), "")?;
            self.account(base)
        })();
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        let _ = nix::mount::umount(&self.scratch.join("plant"));
        let _ = std::fs::remove_dir(self.scratch.join("plant"));
        let _ = self
            .netns
            .ip(&["tuntap", "del", "dev", "vcplant", "mode", "tap"]);
        for p in self.t.cgroup_parents() {
            let _ = std::fs::remove_dir(p.join("plant"));
        }
        for f in [
            root.join("plant"),
            root.join("locks/plant.lock"),
            std::env::temp_dir().join("vcplant"),
        ] {
            let _ = std::fs::remove_file(f);
        }
        let planted = planted?;
        let blind: Vec<_> = CATEGORIES
            .iter()
            .filter(|c| planted.left[*c].is_empty())
            .collect();
        ensure!(
            blind.is_empty(),
            "the accounting did not see what was planted in {blind:?}:\n{}",
            planted.table()
        );
        self.account(base)?
            .ensure_clean("after removing what the calibration planted")
    }
}

/// Where the CID allocator keeps its lock files, relative to the state root.
const CID_DIR: &str = "vsock-cids";

impl Ledger {
    /// The number of leftovers in all categories.
    pub fn total(&self) -> usize {
        self.left.values().map(Vec::len).sum()
    }

    /// A table: one line per category with its count, the leftovers named
    /// under it, then what persists by design.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for c in CATEGORIES {
            let items = &self.left[c];
            let _ = writeln!(out, "  {c:<28} {}", items.len());
            for i in items {
                let _ = writeln!(out, "      {i}");
            }
        }
        let _ = writeln!(out, "  persistent by design (not leaks, bounded):");
        for (what, n) in &self.by_design {
            let _ = writeln!(out, "    {what:<62} {n}");
        }
        out
    }

    /// Fails naming every category with leftovers, and them.
    pub fn ensure_clean(&self, when: &str) -> Result<()> {
        let leaked: Vec<String> = CATEGORIES
            .iter()
            .filter(|c| !self.left[*c].is_empty())
            .map(|c| format!("{c}: {}", self.left[*c].join(", ")))
            .collect();
        if !leaked.is_empty() {
            bail!("{when}: leaked {}", leaked.join("; "));
        }
        Ok(())
    }
}

/// This process's open descriptors, counted by what they point at.
fn open_fds() -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return out;
    };
    let own = format!("/proc/{}/fd", std::process::id());
    for e in dir.flatten() {
        let target = std::fs::read_link(e.path())
            .map(|t| t.display().to_string())
            .unwrap_or_else(|_| "(gone)".to_owned());
        // The descriptor of the listing itself.
        if target == own || target == "/proc/self/fd" {
            continue;
        }
        *out.entry(kind_of(&target)).or_insert(0) += 1;
    }
    out
}

/// A descriptor target without its instance number (`socket:[123]` is
/// `socket`, `anon_inode:[pidfd]` stays), so that a descriptor closed and
/// another opened count as the same.
fn kind_of(target: &str) -> String {
    if target.starts_with("anon_inode:") {
        return target.to_owned();
    }
    match target.split_once(":[") {
        Some((kind, _)) => kind.to_owned(),
        None => target.to_owned(),
    }
}

/// What `now` has beyond `base`, one line per kind.
fn grown(base: &BTreeMap<String, usize>, now: &BTreeMap<String, usize>) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, n) in now {
        let before = base.get(kind).copied().unwrap_or(0);
        for _ in before..*n {
            out.push(kind.clone());
        }
    }
    out
}

/// The pids of this process's children (threads excluded: they are tasks of the process).
fn children() -> BTreeSet<i32> {
    let me = std::process::id() as i32;
    proc_pids()
        .into_iter()
        .filter(|pid| ppid(*pid) == Some(me))
        .collect()
}

fn proc_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Live processes (not this one) whose command line names `dir`.
fn naming(dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let needle = dir.as_os_str().as_encoded_bytes();
    proc_pids()
        .into_iter()
        .filter(|pid| *pid != me && !pid_gone(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// `comm` and state of a process, for the report.
fn describe(pid: i32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    match (stat.split_once(" ("), stat.rsplit_once(") ")) {
        (Some((_, after)), Some((_, rest))) => {
            let comm = after.rsplit_once(") ").map(|(c, _)| c).unwrap_or(after);
            let state = rest.chars().next().unwrap_or('?');
            format!("{comm}, state {state}")
        }
        _ => "gone".to_owned(),
    }
}

/// Tap devices (`ip -o link show type tun`), by name, in `ns` or the host's namespace.
fn taps(ns: Option<&Netns>) -> Result<BTreeSet<String>> {
    let out = match ns {
        Some(ns) => ns.ip(&["-o", "link", "show", "type", "tun"])?,
        None => ip(&["-o", "link", "show", "type", "tun"])?,
    };
    Ok(out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_owned())
        .collect())
}

/// Qdiscs of a namespace, one line each (`tc qdisc show`).
fn qdiscs(ns: &Netns) -> Result<BTreeSet<String>> {
    Ok(run("tc", &["-n", &ns.name, "qdisc", "show"])?
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect())
}

/// The entries of a directory (not recursive).
fn entries(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Every path under `dir`, directories included, never following links.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in entries(&d) {
            if e.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                todo.push(e.clone());
            }
            out.push(e);
        }
    }
    out.sort();
    out
}

/// Inodes that hold a `flock(2)` lock now (`/proc/locks`).
fn flocked_inodes() -> BTreeSet<u64> {
    // Lines read `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`.
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("FLOCK"))
        .filter_map(|l| {
            l.split_whitespace()
                .nth(5)?
                .rsplit(':')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}
