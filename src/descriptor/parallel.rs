//! Spreading independent CPU work (certificates, descriptors) over the machine's cores.
//!
//! Scoped threads, made per call: the calls are few (a build or two per backend change) and
//! each carries milliseconds of signing, so a pool would save nothing worth its state. The
//! caller is a blocking thread, never the async reactor (see the service runner).

/// `f` of each item, in order, the items split into one run of consecutive items per core.
/// A panic in `f` is re-raised here.
pub(crate) fn map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let threads = cores.min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let runs: Vec<&[T]> = items.chunks(items.len().div_ceil(threads)).collect();
    each(runs, |run| run.iter().map(&f).collect::<Vec<U>>())
        .into_iter()
        .flatten()
        .collect()
}

/// `f` of each item, each on a thread of its own (the first on this one), in order: for a
/// few items that each carry milliseconds of work, such as the builds of both periods, and
/// may spread their own work further with [`map`]. A panic in `f` is re-raised here.
pub(crate) fn each<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    if items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|s| {
        let mut items = items.into_iter();
        let first = items.next();
        let others: Vec<_> = items.map(|item| s.spawn(move || f(item))).collect();
        let mut out: Vec<U> = first.into_iter().map(f).collect();
        for handle in others {
            match handle.join() {
                Ok(u) => out.push(u),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    /// Order kept whatever the split; empty and single inputs work.
    #[test]
    fn results_in_input_order() {
        for n in [0usize, 1, 2, 3, 7, 40] {
            let items: Vec<usize> = (0..n).collect();
            assert_eq!(
                super::map(&items, |i| i * 2),
                (0..n).map(|i| i * 2).collect::<Vec<_>>()
            );
            assert_eq!(
                super::each(items.clone(), |i| i * 3),
                (0..n).map(|i| i * 3).collect::<Vec<_>>()
            );
        }
    }
}
