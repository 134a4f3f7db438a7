//! The saved fuzz corpus as ordinary tests, on stable: every file of
//! `fuzz/corpus/<target>/` and every built-in seed goes through the same
//! function the libFuzzer binary runs, with the same allocation caps (this
//! binary counts allocations like the fuzz binaries do). One test runs the
//! inputs one after the other, because the allocation counters are
//! process-wide.

use std::path::{Path, PathBuf};

use vc_fuzz::{seeds, target, TARGETS};

#[global_allocator]
static ALLOC: vc_fuzz::alloc::Tracking = vc_fuzz::alloc::Tracking;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn names_in(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter_map(|n| n.strip_suffix(suffix).map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[test]
fn every_target_has_a_binary_and_a_corpus_and_nothing_else_does() {
    let mut known: Vec<String> = TARGETS.iter().map(|t| t.name.to_owned()).collect();
    known.sort();
    let binaries = names_in(&fuzz_dir().join("libfuzzer/fuzz_targets"), ".rs");
    assert_eq!(binaries, known, "fuzz/libfuzzer/fuzz_targets/ and TARGETS");
    let corpora = names_in(&fuzz_dir().join("corpus"), "");
    assert_eq!(corpora, known, "fuzz/corpus/ and TARGETS");
    for seed in seeds::seeds() {
        assert!(
            target(seed.target).is_some(),
            "seed {} of {}",
            seed.name,
            seed.target
        );
    }
}

#[test]
fn the_saved_corpus_and_the_seeds_pass_every_check() {
    // The first input of the binary also pays for lazily made statics.
    TARGETS[0].run(b"");
    let mut total = 0;
    for t in TARGETS {
        let dir = fuzz_dir().join("corpus").join(t.name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} has no saved inputs", dir.display());
        for file in &files {
            let data = std::fs::read(file).expect("corpus file");
            eprintln!("{}: {}", t.name, file.display());
            t.run(&data);
        }
        let seeds: Vec<_> = seeds::seeds()
            .into_iter()
            .filter(|s| s.target == t.name)
            .collect();
        assert!(!seeds.is_empty(), "{} has no seeds", t.name);
        for seed in &seeds {
            t.run(&seed.bytes);
        }
        total += files.len() + seeds.len();
    }
    eprintln!("{total} inputs passed");
    let usage = vc_fuzz::alloc::Usage::start().finish();
    assert!(
        usage.tracked,
        "the tracking allocator counts this binary's allocations"
    );
}
