//! Work split across the machine's cores: an ordered parallel map for start-up and
//! reload work that is the same for many independent items (reading and parsing tool
//! files, compiling tools). It owns no state and knows nothing of what it runs.

use std::num::NonZeroUsize;

/// The fewest items worth a thread of their own: below this, spawning costs more than
/// it saves.
const MIN_PER_THREAD: usize = 32;

/// At most this many threads, however many cores there are.
const MAX_THREADS: usize = 8;

/// `f` applied to every item, the results in the items' order. Runs on up to as many
/// scoped threads as there are cores (the caller's thread is one), each taking one
/// contiguous run of the items; few items run on the caller's thread alone.
pub fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    let threads = cores
        .min(MAX_THREADS)
        .min(items.len() / MIN_PER_THREAD)
        .max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let mut chunks = items.chunks(chunk);
        let first = chunks.next().unwrap_or_default();
        let handles: Vec<_> = chunks
            .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out: Vec<R> = first.iter().map(f).collect();
        out.reserve(items.len().saturating_sub(out.len()));
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                // A panic in `f` is a bug: pass it on as the caller's own.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::map;

    #[test]
    fn results_keep_the_items_order_whatever_the_split() {
        for n in [0, 1, 31, 32, 65, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let out = map(&items, |i| i * 2);
            assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>(), "{n}");
        }
    }
}
