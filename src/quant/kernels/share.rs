//! Chunks of one matmul shared between the calling thread and helpers on the rayon pool.
//!
//! A decode step runs ~200 matmuls of 10–200 µs each. `par_iter` from outside the pool parks
//! the caller on a latch and wakes a sleeping worker for every one of them; on small VMs a
//! cross-core wake-up can take a whole scheduler tick (measured: ~4 ms from `rayon::spawn` to
//! the job starting while the caller stays busy), far longer than the work. So:
//!
//! - the caller always works too: everyone claims chunk indices from one atomic counter, and
//!   the caller waits (spinning) only for chunks already claimed, never for a helper that has
//!   not started; a late helper finds the counter exhausted and touches nothing;
//! - helpers are rayon jobs that, once done, linger for [`LINGER`] polling for the next
//!   matmul instead of going back to sleep, so during a decode burst they are already running
//!   when work arrives (as llama.cpp's spinning threadpool is). At most `threads − 1` helpers
//!   exist, and a lingering helper keeps running whatever else is queued on the pool
//!   (`rayon::yield_now`), so it never holds up other rayon work.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an idle helper keeps polling before returning its thread to the pool.
const LINGER: Duration = Duration::from_millis(2);

/// The work, with its borrows' lifetime erased (`'static` is the alias's default bound).
type Task = dyn Fn(usize) + Sync;

struct Shared {
    next: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicBool,
    chunks: usize,
    /// The caller's closure, its lifetime erased: only dereferenced after claiming a chunk
    /// index below `chunks`, and the caller does not return before every claimed chunk is done.
    task: *const Task,
}

// SAFETY: `task` points to a `Sync` closure and is only used under the protocol above.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// Claim and run chunks until none are left.
    fn work(&self) {
        loop {
            let c = self.next.fetch_add(1, Ordering::Relaxed);
            if c >= self.chunks {
                return;
            }
            // SAFETY: c < chunks was claimed, so the caller is still waiting and `task` lives.
            let task = unsafe { &*self.task };
            if catch_unwind(AssertUnwindSafe(|| task(c))).is_err() {
                self.failed.store(true, Ordering::Relaxed);
            }
            self.done.fetch_add(1, Ordering::Release);
        }
    }
}

/// The latest posted matmul, for lingering helpers.
struct Board {
    /// Bumped on every post; helpers compare it with the last one they saw.
    epoch: AtomicUsize,
    current: Mutex<Option<Arc<Shared>>>,
    /// Helpers spawned and not yet returned (queued, working or lingering).
    helpers: AtomicUsize,
    /// Pool index of the thread that posted last (usize::MAX: not a pool thread).
    poster: AtomicUsize,
}

static BOARD: Board = Board {
    epoch: AtomicUsize::new(0),
    current: Mutex::new(None),
    helpers: AtomicUsize::new(0),
    poster: AtomicUsize::new(usize::MAX),
};

fn post(work: &Arc<Shared>) {
    if let Ok(mut cur) = BOARD.current.lock() {
        *cur = Some(work.clone());
    }
    let me = rayon::current_thread_index().unwrap_or(usize::MAX);
    BOARD.poster.store(me, Ordering::Relaxed);
    BOARD.epoch.fetch_add(1, Ordering::Release);
}

fn helper() {
    // A pool thread that posts matmuls itself (the caller runs on the pool) may run this job
    // while it waits inside some other rayon call: lingering there would stall the caller.
    let me = rayon::current_thread_index();
    let mut seen = usize::MAX;
    let mut idle_since = Instant::now();
    let mut polls = 0u32;
    loop {
        let e = BOARD.epoch.load(Ordering::Acquire);
        if e != seen {
            seen = e;
            let work = BOARD.current.lock().ok().and_then(|c| c.clone());
            if let Some(w) = work {
                w.work();
            }
            if me == Some(BOARD.poster.load(Ordering::Relaxed)) {
                break;
            }
            idle_since = Instant::now();
            continue;
        }
        std::hint::spin_loop();
        polls += 1;
        if polls.is_multiple_of(64) {
            // Still a pool thread: run any rayon work queued meanwhile (candle's ops).
            if rayon::yield_now() == Some(rayon::Yield::Executed) {
                idle_since = Instant::now();
            } else if idle_since.elapsed() > LINGER {
                break;
            }
        }
    }
    BOARD.helpers.fetch_sub(1, Ordering::AcqRel);
}

/// Run `task(0..chunks)` on the caller and up to `threads − 1` pool threads.
pub fn run(chunks: usize, threads: usize, task: &(dyn Fn(usize) + Sync + '_)) {
    if chunks <= 1 || threads <= 1 {
        (0..chunks).for_each(task);
        return;
    }
    // SAFETY: only the lifetime is erased; see `Shared::task`.
    let task: *const Task =
        unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static Task>(task) };
    let shared = Arc::new(Shared {
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        chunks,
        task,
    });
    post(&shared);
    // Never every pool thread: one stays free for other rayon work.
    let want = (threads.min(rayon::current_num_threads()) - 1).min(chunks - 1);
    while BOARD.helpers.load(Ordering::Acquire) < want {
        BOARD.helpers.fetch_add(1, Ordering::AcqRel);
        rayon::spawn(helper);
    }
    shared.work();
    let mut spins = 0u32;
    while shared.done.load(Ordering::Acquire) < chunks {
        spins += 1;
        if spins < 1 << 16 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    // Drop the board's reference so the closure pointer does not outlive this call in view.
    if let Ok(mut cur) = BOARD.current.lock() {
        if cur.as_ref().is_some_and(|c| Arc::ptr_eq(c, &shared)) {
            *cur = None;
        }
    }
    if shared.failed.load(Ordering::Relaxed) {
        panic!("a matmul chunk panicked on a pool thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_chunk_runs_once_from_outside_and_inside_the_pool() {
        for round in 0..50usize {
            let chunks = 1 + round % 37;
            let hits: Vec<AtomicU32> = (0..chunks).map(|_| AtomicU32::new(0)).collect();
            let task = |c: usize| {
                hits[c].fetch_add(1, Ordering::Relaxed);
            };
            if round.is_multiple_of(2) {
                run(chunks, 4, &task);
            } else {
                rayon::scope(|_| run(chunks, 4, &task));
            }
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "round {round}"
            );
        }
    }

    #[test]
    fn a_panicking_chunk_reaches_the_caller() {
        let r = catch_unwind(|| {
            run(8, 2, &|c| {
                if c == 5 {
                    panic!("chunk 5");
                }
            })
        });
        assert!(r.is_err());
        // And the machinery still works afterwards.
        let n = AtomicU32::new(0);
        run(8, 2, &|_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 8);
    }
}
