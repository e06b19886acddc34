//! Replays the request-head fuzz corpus (fuzz/corpus/request_head) on stable, then a seeded
//! mutation run over it, so every CI run checks that no request head panics the proxy's
//! parsing, framing checks, routing or header rewriting.

use std::path::Path;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/request_head");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// One to four random edits: byte flips, inserts, deletions, truncation, or a slice of another
/// input spliced in (which is how CL/TE/Host lines end up in new places).
fn mutate(rng: &mut SmallRng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let at = rng.random_range(0..=out.len());
        match rng.random_range(0..5) {
            0 if at < out.len() => out[at] ^= 1 << rng.random_range(0..8),
            1 => out.insert(at, rng.random()),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 => out.truncate(at),
            _ if !other.is_empty() => {
                let from = rng.random_range(0..other.len());
                let to = rng.random_range(from..=other.len());
                out.splice(at..at, other[from..to].iter().copied());
            }
            _ => {}
        }
    }
    out
}

#[test]
fn the_corpus_replays_without_panics() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "the corpus lost its seeds");
    for input in &corpus {
        remora_proxy::fuzzing::request_head(input);
    }
}

#[test]
fn a_seeded_mutation_run_finds_no_panic() {
    let corpus = corpus();
    let mut rng = SmallRng::seed_from_u64(0x5eed_f00d);
    for _ in 0..20_000 {
        let input = &corpus[rng.random_range(0..corpus.len())];
        let other = &corpus[rng.random_range(0..corpus.len())];
        remora_proxy::fuzzing::request_head(&mutate(&mut rng, input, other));
    }
}
