//! Which of a worker's sources woke it, so that a turn polls only those.
//!
//! A worker waits on a dozen sources (its inbox, job results, TCP events, five UDP sockets,
//! its TUN queue, its timer, two intervals). `select!` would build, poll and drop a future
//! for every one of them on each wake, registering each source's waker again, and poll all of
//! them once more before the thread parks: at an idle ping that bookkeeping cost more than
//! decrypting the packet. Here each source is polled with a waker of its own, which marks
//! the source and wakes the worker's task; a wait polls the marked sources only (all of them
//! the first time), starting one further along each turn so that none is always last.
//!
//! The rule that keeps wake-ups from being lost: a source is polled again on the next wait
//! unless its last poll returned `Pending` with its own waker (which then marks it when it
//! is ready). So a source that was ready stays marked (its handler may have left items behind
//! or cleared readiness with a `try_` read that registers no waker), and so do marked
//! sources not reached because another was ready first.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// The worker's task, and the sources marked since the last wait.
#[derive(Default)]
struct Shared {
    marked: AtomicU32,
    task: Mutex<Option<Waker>>,
}

/// The waker one source is polled with.
struct SourceWaker {
    shared: Arc<Shared>,
    bit: u32,
}

impl Wake for SourceWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let before = self.shared.marked.fetch_or(self.bit, Ordering::AcqRel);
        if before & self.bit != 0 {
            // Marked since the last wait: whoever marked it woke the task already.
            return;
        }
        let task = {
            let task = self.shared.task.lock().unwrap_or_else(|e| e.into_inner());
            task.clone()
        };
        if let Some(task) = task {
            task.wake();
        }
    }
}

/// The wake-up state of `N` sources (at most 32).
pub(super) struct Wakes<const N: usize> {
    shared: Arc<Shared>,
    wakers: [Waker; N],
    /// Sources to poll on the next wait whatever wakes the task.
    again: u32,
    /// Where the next wait starts.
    turn: usize,
}

impl<const N: usize> Wakes<N> {
    const ALL: u32 = if N >= 32 { u32::MAX } else { (1 << N) - 1 };

    pub fn new() -> Self {
        assert!((1..=32).contains(&N), "1 to 32 sources");
        let shared = Arc::new(Shared::default());
        let wakers = std::array::from_fn(|i| {
            Waker::from(Arc::new(SourceWaker {
                shared: shared.clone(),
                bit: 1 << i,
            }))
        });
        Self {
            shared,
            wakers,
            again: Self::ALL,
            turn: 0,
        }
    }

    /// Polls source `i` on the next wait even if nothing wakes it (a timer that was reset,
    /// a source polled from elsewhere with another waker).
    pub fn mark(&mut self, i: usize) {
        self.again |= 1 << i;
    }

    /// Polls the marked sources, each with its own waker, until one is ready: `poll(i, cx)`
    /// polls source `i`. Pending when none is (each then holds its waker).
    pub fn poll<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut poll: impl FnMut(usize, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        // The task's waker first, then the marks: a source that becomes ready after the swap
        // below marks itself and wakes this task.
        {
            let mut task = self.shared.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        let mut todo = self.shared.marked.swap(0, Ordering::AcqRel) | self.again;
        self.again = 0;
        let start = self.turn;
        self.turn = (self.turn + 1) % N;
        for k in 0..N {
            let i = (start + k) % N;
            let bit = 1 << i;
            if todo & bit == 0 {
                continue;
            }
            todo &= !bit;
            let mut own = Context::from_waker(&self.wakers[i]);
            if let Poll::Ready(v) = poll(i, &mut own) {
                self.again = todo | bit;
                return Poll::Ready(v);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A task waker that counts its wakes.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Four sources, ready when `ready[i]` is set, each recording the waker it was polled
    /// with and how often it was polled; the task that waits on them counts its wakes.
    struct Rig {
        wakes: Wakes<4>,
        task: Arc<Count>,
        ready: [bool; 4],
        polled: [usize; 4],
        wakers: [Option<Waker>; 4],
    }

    impl Rig {
        fn new() -> Self {
            Self {
                wakes: Wakes::new(),
                task: Arc::new(Count(AtomicUsize::new(0))),
                ready: [false; 4],
                polled: [0; 4],
                wakers: Default::default(),
            }
        }

        fn wait(&mut self) -> Poll<usize> {
            let task = Waker::from(self.task.clone());
            let mut cx = Context::from_waker(&task);
            let Self {
                wakes,
                ready,
                polled,
                wakers,
                ..
            } = self;
            wakes.poll(&mut cx, |i, scx| {
                polled[i] += 1;
                wakers[i] = Some(scx.waker().clone());
                if ready[i] {
                    Poll::Ready(i)
                } else {
                    Poll::Pending
                }
            })
        }

        /// Source `i` wakes with the waker it was last polled with.
        fn wake(&mut self, i: usize) {
            self.wakers[i].take().unwrap().wake();
        }

        fn task_wakes(&self) -> usize {
            self.task.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn the_first_wait_polls_every_source_then_only_the_woken_one() {
        let mut r = Rig::new();
        assert!(r.wait().is_pending());
        assert_eq!(r.polled, [1, 1, 1, 1]);
        // Nothing woke: a spurious wake of the task polls nothing.
        assert!(r.wait().is_pending());
        assert_eq!(r.polled, [1, 1, 1, 1]);
        r.ready[2] = true;
        r.wake(2);
        assert_eq!(r.task_wakes(), 1, "the task was woken");
        assert_eq!(r.wait(), Poll::Ready(2));
        assert_eq!(r.polled, [1, 1, 2, 1]);
    }

    #[test]
    fn a_ready_source_is_polled_again_without_a_wake() {
        let mut r = Rig::new();
        r.ready[1] = true;
        assert_eq!(r.wait(), Poll::Ready(1));
        // Its handler drained it (a try_ read: no waker registered): the next wait polls it
        // and, finding it pending, leaves its waker with it.
        r.ready[1] = false;
        let before = r.polled[1];
        assert!(r.wait().is_pending());
        assert_eq!(r.polled[1], before + 1);
    }

    #[test]
    fn marked_sources_not_reached_are_kept_for_the_next_wait() {
        let mut r = Rig::new();
        assert!(r.wait().is_pending());
        // Both 0 and 3 become ready and wake; one wait serves one of them.
        r.ready[0] = true;
        r.ready[3] = true;
        r.wake(0);
        r.wake(3);
        let first = r.wait();
        r.ready = [false; 4];
        // The other one is polled on the next wait, though nothing woke it again.
        let polled = r.polled;
        assert!(r.wait().is_pending());
        let other = if first == Poll::Ready(0) { 3 } else { 0 };
        assert_eq!(r.polled[other], polled[other] + 1);
    }

    #[test]
    fn always_ready_sources_take_turns() {
        let mut r = Rig::new();
        r.ready = [true; 4];
        let mut served = [0; 4];
        for _ in 0..400 {
            if let Poll::Ready(i) = r.wait() {
                served[i] += 1;
            }
        }
        assert_eq!(served, [100, 100, 100, 100]);
    }

    #[test]
    fn a_marked_source_is_polled_and_a_second_wake_is_folded_into_the_first() {
        let mut r = Rig::new();
        assert!(r.wait().is_pending());
        r.wakes.mark(3);
        assert!(r.wait().is_pending());
        assert_eq!(r.polled, [1, 1, 1, 2]);
        // Two wakes of one source before the task runs: one task wake.
        let waker0 = r.wakers[0].clone().unwrap();
        waker0.wake_by_ref();
        waker0.wake_by_ref();
        assert_eq!(r.task_wakes(), 1);
        assert!(r.wait().is_pending());
        assert_eq!(r.polled, [2, 1, 1, 2]);
        // After that wait, a new wake wakes the task again.
        waker0.wake_by_ref();
        assert_eq!(r.task_wakes(), 2);
    }
}
