//! Replays the kept fuzz corpus (`tests/vectors/fuzz/<target>/*`) through every fuzz target.
//!
//! The target bodies are the very functions the cargo-fuzz binaries run (`fuzz/src/targets.rs`,
//! compiled into this test), so every input the fuzzer found interesting, and every crash found
//! and fixed, stays a regression test of plain `cargo test` with no fuzzer installed.

#[path = "../fuzz/src/targets.rs"]
mod targets;

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Crash inputs (`<target>/crash-*`) whose panic is not fixed yet: replayed by
/// [`open_crashes_still_panic`] instead, which fails once the core is fixed, so the entry is
/// then removed from this list and the input becomes an ordinary regression test.
const OPEN_CRASHES: &[&str] = &[];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/fuzz")
}

/// `<target>/<file>` of a corpus file.
fn relative(file: &Path) -> String {
    file.strip_prefix(corpus_root())
        .expect("a corpus file")
        .to_string_lossy()
        .replace('\\', "/")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    let names: BTreeSet<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
    let dirs: BTreeSet<String> = std::fs::read_dir(corpus_root())
        .expect("tests/vectors/fuzz")
        .map(|e| e.expect("directory entry"))
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let dirs: BTreeSet<&str> = dirs.iter().map(String::as_str).collect();
    assert_eq!(names, dirs, "fuzz targets and corpus folders differ");
    for name in names {
        let n = inputs(&corpus_root().join(name)).len();
        assert!(n > 0, "{name}: empty corpus");
        assert!(n <= 64, "{name}: {n} inputs; keep the corpus minimised");
    }
}

#[test]
fn corpus_replays_without_a_panic() {
    let mut failures = Vec::new();
    let mut count = 0;
    for (name, target) in targets::TARGETS {
        for file in inputs(&corpus_root().join(name)) {
            if OPEN_CRASHES.contains(&relative(&file).as_str()) {
                continue;
            }
            let data = std::fs::read(&file).expect("read input");
            count += 1;
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| target(&data))) {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!(
                    "{name}/{}: {msg}",
                    file.file_name().unwrap_or_default().to_string_lossy()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} inputs panicked:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(count >= targets::TARGETS.len());
}

#[test]
fn empty_and_tiny_inputs_never_panic() {
    for (_, target) in targets::TARGETS {
        target(&[]);
        for b in 0..=255u8 {
            target(&[b]);
        }
        target(&[0xff; 64]);
    }
}

#[test]
fn open_crashes_still_panic() {
    for entry in OPEN_CRASHES {
        let (name, _) = entry.split_once('/').expect("<target>/<file>");
        let target = targets::TARGETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("{entry}: no such target"));
        let data = std::fs::read(corpus_root().join(entry)).expect("read crash input");
        assert!(
            catch_unwind(AssertUnwindSafe(|| target(&data))).is_err(),
            "{entry} no longer panics: remove it from OPEN_CRASHES (it stays a regression test)"
        );
    }
}
