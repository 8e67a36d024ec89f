//! Gives back the memory only the exporter's start-up needed: the executable's pages that
//! start-up touched and the serving loop never will, and freed heap. `exporter::run` calls it
//! twice: before the collectors start (the loader's and the command line's pages, so they are
//! not part of the start-up peak) and once every collector has run once (their first-run code).
//!
//! Why: the `clusterkit` binary carries the installer, the backup tool and the Kubernetes client.
//! Starting it touches pages the exporter never uses again — the dynamic loader reads the whole
//! relocation table (`.rela.dyn`, ~3 MiB), clap walks every subcommand — and those pages stay
//! resident, so they were most of `monitor serve`'s RSS (bench/monitor/RESULTS.md).
//!
//! How: every mapping of the executable that is not writable and holds no anonymous
//! (copy-on-write) page is made of clean file pages only, which the kernel may already drop at
//! any time under memory pressure and reads back from the file on the next access.
//! `madvise(MADV_DONTNEED)` drops them from this process now; the ones the serving loop uses
//! come back on their first access (minor faults: the file stays in the page cache), so what
//! stays resident is the loop's working set. Writable mappings and the RELRO segment (written by
//! the loader's relocations, so it has anonymous pages) are never touched: dropping them would
//! lose data. `malloc_trim` then returns the heap start-up freed.
//!
//! The heap itself stays small with one malloc arena ([`use_one_malloc_arena`]): glibc gives
//! each thread that allocates concurrently an arena of its own, up to eight per core, and each
//! keeps its free memory. Over a 25-minute soak those arenas grew `monitor serve` by 1.4 MiB
//! more than one arena did (bench/monitor/RESULTS.md); the exporter's threads allocate little
//! and rarely at the same time, so sharing one costs nothing measurable.

/// Makes every thread started from now on allocate from the main malloc arena. Call it before
/// the async runtime starts its worker threads: arenas already made are kept.
pub fn use_one_malloc_arena() {
    // SAFETY: mallopt only changes a glibc allocator setting; M_ARENA_MAX takes any positive
    // value. It fails (returns 0) only for an unknown parameter, and then nothing changed.
    #[allow(unsafe_code)]
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    if ok == 0 {
        tracing::debug!("working set: mallopt(M_ARENA_MAX, 1) refused; default arenas kept");
    }
}

/// Drops the executable's clean pages from this process and trims the heap; returns how many
/// bytes of mappings were advised. Best effort: on any error (no /proc, an unexpected smaps
/// line) it does nothing more and says so at debug level.
pub fn release_startup_pages() -> usize {
    let released = match release_clean_exe_mappings() {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!("working set: executable pages kept: {e}");
            0
        }
    };
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
    released
}

fn release_clean_exe_mappings() -> std::io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for m in clean_mappings_of(&smaps, &exe.to_string_lossy()) {
        // SAFETY: the range is a whole mapping of the executable that is read-only and has no
        // anonymous page, i.e. only clean pages of the file: after MADV_DONTNEED the next access
        // reads the same bytes back from the file, as after the kernel's own reclaim. Nothing
        // can write to it in between without an mprotect, which this process does not do.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        released += m.end - m.start;
    }
    Ok(released)
}

#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
}

/// The mappings in `smaps` of the file `path` that are not writable and have no anonymous
/// pages. A mapping whose `Anonymous:` line is missing is not returned.
fn clean_mappings_of(smaps: &str, path: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    // (range, candidate) of the mapping whose fields are being read.
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-').and_then(|(s, e)| {
            Some((
                usize::from_str_radix(s, 16).ok()?,
                usize::from_str_radix(e, 16).ok()?,
            ))
        }) {
            // A header: "start-end perms offset dev inode path".
            let perms = fields.next().unwrap_or("");
            let file = fields.nth(3).unwrap_or("");
            current = (file == path && !perms.contains('w') && fields.next().is_none())
                .then_some(Mapping { start, end });
        } else if first == "Anonymous:" {
            let kb = fields.next().and_then(|v| v.parse::<u64>().ok());
            if let (Some(0), Some(m)) = (kb, current.take()) {
                out.push(m);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0400000 r--p 00000000 08:01 1234 /usr/bin/clusterkit
Size:               4096 kB
Rss:                2048 kB
Anonymous:             0 kB
55d0a0400000-55d0a2000000 r-xp 00400000 08:01 1234 /usr/bin/clusterkit
Size:              28672 kB
Anonymous:             0 kB
55d0a2000000-55d0a2200000 r--p 02000000 08:01 1234 /usr/bin/clusterkit
Anonymous:          2048 kB
55d0a2200000-55d0a2210000 rw-p 02200000 08:01 1234 /usr/bin/clusterkit
Anonymous:             0 kB
55d0a3000000-55d0a3010000 r--p 00000000 08:01 9999 /usr/bin/clusterkit (deleted)
Anonymous:             0 kB
7f0000000000-7f0000100000 r-xp 00000000 08:01 42 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Anonymous:          1024 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_executable_are_chosen() {
        let got = clean_mappings_of(SMAPS, "/usr/bin/clusterkit");
        assert_eq!(
            got,
            vec![
                Mapping {
                    start: 0x55d0a0000000,
                    end: 0x55d0a0400000
                },
                Mapping {
                    start: 0x55d0a0400000,
                    end: 0x55d0a2000000
                },
            ],
            "the RELRO mapping (anonymous pages), the writable one, a replaced file and \
             other files are left alone"
        );
    }

    /// Resident kB of the executable's mappings, from /proc/self/smaps.
    fn exe_rss_kb() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe = exe.to_string_lossy();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut ours = false;
        let mut kb = 0;
        for line in smaps.lines() {
            let mut f = line.split_whitespace();
            match f.next() {
                Some("Rss:") if ours => kb += f.next().unwrap().parse::<u64>().unwrap(),
                Some(h) if h.contains('-') && !h.ends_with(':') => {
                    ours = f.nth(4) == Some(exe.as_ref())
                }
                _ => {}
            }
        }
        kb
    }

    #[test]
    fn releasing_keeps_this_process_working() {
        let before = exe_rss_kb();
        let released = release_startup_pages();
        let after = exe_rss_kb();
        assert!(released > 0, "nothing was released");
        assert!(
            after < before,
            "the executable's resident pages did not shrink: {before} kB -> {after} kB"
        );
        // Code and read-only data come back from the file: run some of both.
        let v: Vec<String> = (0..1000).map(|i| format!("{i:x}")).collect();
        assert_eq!(v[255], "ff");
        assert_eq!(clean_mappings_of(SMAPS, "/usr/bin/clusterkit").len(), 2);
    }
}
