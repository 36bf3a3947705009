//! `collections`: one thread whose time goes into building and dropping the
//! standard collections, the allocation pattern of most Rust programs (the
//! role `alloc-test` and `espresso` play in mimalloc-bench).
//!
//! Each round formats a vector of strings, indexes them in a `HashMap` from
//! key to a growing `Vec` of positions, keeps a `BTreeMap` of random keys,
//! removes half of it, and drops everything: many small blocks, many
//! reallocations (growing vectors and strings), and frees in another order
//! than the allocations.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use super::Scale;
use crate::Rng;

fn one_round(n: usize, rng: &mut Rng) -> u64 {
    let words: Vec<String> = (0..n)
        .map(|i| format!("item-{}-{}", i % 1000, rng.below(100)))
        .collect();

    let mut index: HashMap<&str, Vec<u32>> = HashMap::new();
    for (i, w) in words.iter().enumerate() {
        index.entry(w.as_str()).or_default().push(i as u32);
    }

    let mut tree: BTreeMap<u64, String> = BTreeMap::new();
    for _ in 0..n {
        let k = rng.below(n as u64 * 4);
        let mut s = String::new();
        let _ = write!(s, "{k:x}");
        tree.insert(k, s);
    }
    let keys: Vec<u64> = tree.keys().copied().step_by(2).collect();
    for k in &keys {
        tree.remove(k);
    }

    let mut text = String::new();
    for w in words.iter().step_by(16) {
        text.push_str(w);
        text.push(' ');
    }

    let positions: u64 = index
        .values()
        .map(|v| v.iter().map(|&p| u64::from(p)).sum::<u64>())
        .sum();
    assert_eq!(
        positions,
        n as u64 * (n as u64 - 1) / 2,
        "collections: the index lost or duplicated positions"
    );
    let tree_bytes: u64 = tree.values().map(|s| s.len() as u64).sum();
    index.len() as u64 + positions + tree_bytes + text.len() as u64
}

/// Runs the rounds; the checksum sums what each round computed (each round
/// checks that every position was indexed exactly once).
pub(super) fn run(scale: Scale) -> u64 {
    let n = scale.pick(2_000, 50_000, 100_000);
    let rounds = scale.pick(2, 6, 20);
    let mut rng = Rng::new(0xc011);
    let mut sum = 0u64;
    for _ in 0..rounds {
        sum = sum.wrapping_add(one_round(n, &mut rng));
    }
    sum
}
