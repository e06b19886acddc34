//! Replays the config fuzz corpus (fuzz/corpus/config_load) on stable, then a seeded mutation
//! run: the loader must report errors, never panic, and whatever it accepts must survive the
//! effective-config round trip.

use std::path::Path;

fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config_load");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn load(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    match remora_config::load_str("fuzz.yaml", &text) {
        Ok(config) => {
            let again = remora_config::to_yaml(&config);
            assert!(
                remora_config::load_str("fuzz.yaml", &again).is_ok(),
                "accepted config does not round-trip:\n{text}\n---\n{again}"
            );
            true
        }
        Err(d) => {
            assert!(!d.0.is_empty(), "an error without diagnostics");
            false
        }
    }
}

/// A small deterministic generator (xorshift), so the run is the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.next(3) {
        let at = rng.next(out.len() + 1);
        match rng.next(5) {
            0 if at < out.len() => out[at] ^= 1 << rng.next(8),
            1 => out.insert(at, b"\n :-[]{}&*!|>'\"#0a"[rng.next(18)]),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 => out.truncate(at),
            _ if !other.is_empty() => {
                let from = rng.next(other.len());
                let to = from + rng.next(other.len() - from + 1);
                out.splice(at..at, other[from..to].iter().copied());
            }
            _ => {}
        }
    }
    out
}

#[test]
fn the_corpus_replays_and_the_examples_load() {
    let corpus = corpus();
    let loaded = corpus.iter().filter(|c| load(c)).count();
    // The examples are in the corpus and all load; the broken seeds do not.
    assert!(loaded >= 10, "only {loaded} corpus files loaded");
    assert!(loaded < corpus.len());
}

#[test]
fn a_seeded_mutation_run_finds_no_panic() {
    let corpus = corpus();
    let mut rng = Rng(0x5eed_c0f1);
    for _ in 0..10_000 {
        let input = &corpus[rng.next(corpus.len())];
        let other = &corpus[rng.next(corpus.len())];
        load(&mutate(&mut rng, input, other));
    }
}
