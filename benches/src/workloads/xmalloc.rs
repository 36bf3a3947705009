//! `xmalloc`: producers and consumers, after Lever & Boreham's
//! `xmalloc-test` as run by mimalloc-bench (`xmalloc-test -w N -t 5 -s -1`).
//!
//! Half of `threads()` threads (at least one) produce: they allocate objects
//! of random sizes (16..=512 bytes) in batches of 256 and send each batch
//! over a bounded channel to a consumer of their own, which checks and frees
//! them. Every object, and every batch's vector, is freed by a thread other
//! than the one that allocated it: the remote-free path of an allocator
//! (UMA's cross-domain frees, mimalloc's thread-delayed free list) carries
//! the whole load.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use super::object::{Fill, Obj};
use super::{Scale, threads};
use crate::Rng;

const BATCH: usize = 256;
const MIN_SIZE: u64 = 16;
const MAX_SIZE: u64 = 512;
/// Batches in flight per producer/consumer pair.
const QUEUE: usize = 16;

/// Allocates `batches` batches and sends them; returns the bytes allocated.
fn produce(out: SyncSender<Vec<Obj>>, batches: usize, seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let mut bytes = 0;
    for _ in 0..batches {
        let batch: Vec<Obj> = (0..BATCH)
            .map(|_| {
                let size = (MIN_SIZE + rng.below(MAX_SIZE - MIN_SIZE + 1)) as usize;
                Obj::new(size, Fill::Ends)
            })
            .collect();
        bytes += batch.iter().map(|o| o.len() as u64).sum::<u64>();
        out.send(batch).expect("the consumer outlives its producer");
    }
    bytes
}

/// Frees every batch received until the producer hangs up; returns the bytes
/// freed.
fn consume(inbox: Receiver<Vec<Obj>>) -> u64 {
    inbox
        .iter()
        .map(|batch| batch.iter().map(|o| o.len() as u64).sum::<u64>())
        .sum()
}

/// Runs the pairs; the checksum is the bytes that crossed threads.
pub(super) fn run(scale: Scale) -> u64 {
    let pairs = (threads() / 2).max(1);
    let batches = scale.pick(20, 4000, 12_000) / pairs;
    let handles: Vec<_> = (0..pairs)
        .map(|p| {
            let (tx, rx) = sync_channel(QUEUE);
            let consumer = thread::spawn(move || consume(rx));
            let producer = thread::spawn(move || produce(tx, batches, 0x5eed + p as u64));
            (producer, consumer)
        })
        .collect();
    let mut total = 0;
    for (producer, consumer) in handles {
        let made = producer.join().expect("an xmalloc producer panicked");
        let freed = consumer.join().expect("an xmalloc consumer panicked");
        assert_eq!(made, freed, "xmalloc: bytes produced and consumed differ");
        total += made;
    }
    total
}
