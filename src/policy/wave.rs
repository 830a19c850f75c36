//! The deployment wave: how the deployer groups the due writes it read
//! into batches, and when its check loop reads, waits or stops while the
//! writes go on beside it.
//!
//! Why batches: a `files` destination made durable name by name costs
//! eight `fsync`s per name; a batch of them shares one barrier
//! (`deploy::files::write_batch`) and one store transaction for the
//! results. Other destinations (a webhook, a Kubernetes Secret, an
//! install request) are written one at a time, several at once, as
//! before: their cost is a round trip, not a sync.
//!
//! Why a check loop beside the writes: after a swap, every name is
//! written and then checked over TLS. Run one after the other, the wave
//! takes the sum of both; with the checks of batch *k* running while
//! batch *k + 1* is written, it takes about the slower of the two.

/// How one due write is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind<'a> {
    /// A `files` destination with this id: batched with the other due
    /// writes to the same destination.
    Batched(&'a str),
    /// Written on its own (webhook, Kubernetes Secret, manual, a
    /// destination this worker does not know).
    Single,
}

/// Groups due writes (oldest first) into batches of at most `max` writes
/// to one destination, each batch in the order the writes came, batches
/// ordered by their oldest write; and the writes made on their own.
/// Returns indices into `kinds`: (batches, singles).
///
/// A destination's writes go into one batch until it is full: a batch
/// names each (name, destination) once, as the due queue does, so no two
/// writers ever hold one `live/NAME` in a batch.
pub fn batches(kinds: &[WriteKind<'_>], max: usize) -> (Vec<Vec<usize>>, Vec<usize>) {
    let max = max.max(1);
    let mut open: Vec<(&str, usize)> = Vec::new(); // destination → index in `out`
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut singles = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        match kind {
            WriteKind::Single => singles.push(i),
            WriteKind::Batched(dest) => match open.iter().position(|(d, _)| d == dest) {
                Some(p) if out[open[p].1].len() < max => out[open[p].1].push(i),
                found => {
                    if let Some(p) = found {
                        open.remove(p);
                    }
                    open.push((dest, out.len()));
                    out.push(vec![i]);
                }
            },
        }
    }
    (out, singles)
}

/// What the check loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStep {
    /// Read the due endpoints and check them.
    Read,
    /// Nothing is due now but writes are still going on: wait for the
    /// next batch to be recorded (or a short while), then read.
    Wait,
    /// The pass is over for the checks.
    Stop,
}

/// The check loop's next step, from what its last read returned (`None`
/// before the first read), the page size, and whether the writes had all
/// been recorded *before* that read began (a write recorded during the
/// read may not have been seen by it: then one more read is needed).
///
/// Endpoints written with a check delay become due after the pass; the
/// next pass checks them, as it always did.
pub fn next_check_step(last_read: Option<usize>, page: usize, writes_done: bool) -> CheckStep {
    match last_read {
        // Nothing read yet.
        None => CheckStep::Read,
        // A full page: there may be more due now.
        Some(n) if n >= page => CheckStep::Read,
        // Less than a page, and nothing can become due in this pass.
        Some(_) if writes_done => CheckStep::Stop,
        // Less than a page; the writes go on and will make more due.
        Some(_) => CheckStep::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WriteKind::{Batched, Single};

    #[test]
    fn due_writes_are_grouped_by_destination_into_bounded_batches() {
        // (case, kinds, max, batches, singles)
        type Case = (
            &'static str,
            Vec<WriteKind<'static>>,
            usize,
            Vec<Vec<usize>>,
            Vec<usize>,
        );
        let cases: Vec<Case> = vec![
            ("nothing due", vec![], 3, vec![], vec![]),
            (
                "one destination fits one batch",
                vec![Batched("a"), Batched("a"), Batched("a")],
                3,
                vec![vec![0, 1, 2]],
                vec![],
            ),
            (
                "a full batch starts the next",
                vec![Batched("a"); 5],
                2,
                vec![vec![0, 1], vec![2, 3], vec![4]],
                vec![],
            ),
            (
                "two destinations never share a batch",
                vec![Batched("a"), Batched("b"), Batched("a"), Batched("b")],
                10,
                vec![vec![0, 2], vec![1, 3]],
                vec![],
            ),
            (
                "webhooks and the like are written on their own",
                vec![Single, Batched("a"), Single, Batched("a")],
                10,
                vec![vec![1, 3]],
                vec![0, 2],
            ),
            (
                "a batch size of zero is one",
                vec![Batched("a"), Batched("a")],
                0,
                vec![vec![0], vec![1]],
                vec![],
            ),
            (
                "batches keep the queue's order",
                vec![Batched("b"), Batched("a"), Batched("b"), Batched("b")],
                2,
                vec![vec![0, 2], vec![1], vec![3]],
                vec![],
            ),
        ];
        for (case, kinds, max, want_batches, want_singles) in cases {
            let (got_batches, got_singles) = batches(&kinds, max);
            assert_eq!(got_batches, want_batches, "{case}");
            assert_eq!(got_singles, want_singles, "{case}");
            // Every write exactly once.
            let mut all: Vec<usize> = got_batches.concat();
            all.extend(&got_singles);
            all.sort_unstable();
            assert_eq!(all, (0..kinds.len()).collect::<Vec<_>>(), "{case}");
        }
    }

    #[test]
    fn the_check_loop_reads_while_writes_go_on_and_stops_after_them() {
        use CheckStep::{Read, Stop, Wait};
        // (case, last read, writes done before it, step)
        let cases = [
            ("first read", None, false, Read),
            ("first read, writes already done", None, true, Read),
            ("a full page: more may be due", Some(500), false, Read),
            ("a full page after the writes", Some(500), true, Read),
            ("a short page while writing", Some(12), false, Wait),
            ("nothing due while writing", Some(0), false, Wait),
            ("a short page after the writes", Some(12), true, Stop),
            ("nothing due after the writes", Some(0), true, Stop),
        ];
        for (case, last, done, want) in cases {
            assert_eq!(next_check_step(last, 500, done), want, "{case}");
        }
    }
}
