//! Memory budgets for untrusted work: a chat template from a model file is a program, and a
//! hostile one can grow a string by doubling it in a loop until the process aborts. Fuel bounds
//! its instructions, an output cap bounds what it prints; this bounds what it allocates.
//!
//! [`Budgeted`] wraps the process's global allocator (installed in `main.rs`) and charges every
//! allocation to a per-thread budget when one is set. [`run_limited`] runs a closure on a worker
//! thread with such a budget. An allocation over the budget is never made: the thread sets its
//! flag and sleeps forever inside the allocator (it cannot fail the allocation without
//! aborting, nor unwind out of it), the caller returns [`OverBudget`] and the next call gets a
//! new worker. The stuck thread keeps at most the budget; callers make one overrun disable the
//! template for good, so a hostile template strands at most one thread.
//!
//! Without the wrapper installed (library users, tests that do not install it) budgets are not
//! enforced and [`run_limited`] simply runs the closure.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A global allocator that charges allocations to the current thread's budget, if any.
pub struct Budgeted<A>(pub A);

/// No budget on this thread.
const UNLIMITED: usize = usize::MAX;

thread_local! {
    /// Bytes this thread may still allocate ([`UNLIMITED`]: no budget).
    static LEFT: Cell<usize> = const { Cell::new(UNLIMITED) };
    /// The budget it started with: frees never raise it above that.
    static CAP: Cell<usize> = const { Cell::new(UNLIMITED) };
    /// Set when the budget runs out (points into an `Arc` the thread's closure keeps alive).
    static TRIPPED: Cell<*const AtomicBool> = const { Cell::new(std::ptr::null()) };
}

/// Whether a [`Budgeted`] allocator is the global one (it says so on its first use).
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn charge(n: usize) {
    let over = LEFT
        .try_with(|left| {
            let v = left.get();
            if v == UNLIMITED {
                false
            } else if n > v {
                true
            } else {
                left.set(v - n);
                false
            }
        })
        .unwrap_or(false);
    if over {
        if let Ok(p) = TRIPPED.try_with(Cell::get) {
            if !p.is_null() {
                // SAFETY: set by `run_limited` from an `Arc` that this thread's closure owns;
                // the closure is still running (this is one of its allocations).
                unsafe { (*p).store(true, Ordering::SeqCst) };
            }
        }
        // Never return: the allocation cannot fail gracefully. `sleep` does not allocate.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

fn refund(n: usize) {
    let _ = LEFT.try_with(|left| {
        let v = left.get();
        if v != UNLIMITED {
            let cap = CAP.try_with(Cell::get).unwrap_or(UNLIMITED);
            left.set(v.saturating_add(n).min(cap));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the wrapped allocator; only bookkeeping is
// added (thread-local cells, const-initialised and without destructors, so they are usable
// from inside the allocator).
unsafe impl<A: GlobalAlloc> GlobalAlloc for Budgeted<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
        charge(layout.size());
        self.0.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        self.0.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        refund(layout.size());
        self.0.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            charge(new_size - layout.size());
        } else {
            refund(layout.size() - new_size);
        }
        self.0.realloc(ptr, layout, new_size)
    }
}

/// The closure wanted more memory than its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget;

type Job = Box<dyn FnOnce() + Send>;

/// The thread budgeted work runs on, kept between calls (spawning one per render cost ~0.15 ms
/// on a busy 2-core machine; handing a job over costs a few µs). Replaced when a job overran
/// (its thread is stuck for good) or panicked.
static WORKER: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>> = std::sync::Mutex::new(None);

fn spawn_worker() -> Option<std::sync::mpsc::Sender<Job>> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("ft-budgeted".into())
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                job();
            }
        })
        .ok()?;
    Some(tx)
}

/// Run `f` with at most `bytes` of allocations (net of frees) when [`Budgeted`] is the global
/// allocator; plainly otherwise. Calls are served one at a time by one worker thread.
/// `Err(Some(OverBudget))`: `f` wanted more; `Err(None)`: `f` panicked or no thread could start.
pub fn run_limited<T: Send + 'static>(
    bytes: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Option<OverBudget>> {
    if !INSTALLED.load(Ordering::Relaxed) {
        return Ok(f());
    }
    let mut worker = WORKER.lock().unwrap_or_else(|p| p.into_inner());
    if worker.is_none() {
        *worker = spawn_worker();
    }
    let Some(sender) = worker.as_ref() else {
        return Err(None);
    };
    let flag = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let mine = flag.clone();
    let job: Job = Box::new(move || {
        TRIPPED.with(|t| t.set(Arc::as_ptr(&mine)));
        CAP.with(|c| c.set(bytes));
        LEFT.with(|l| l.set(bytes));
        // Unwinding out of `f` must not leave the worker budgeted.
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                LEFT.with(|l| l.set(UNLIMITED));
                CAP.with(|c| c.set(UNLIMITED));
                TRIPPED.with(|t| t.set(std::ptr::null()));
            }
        }
        let reset = Reset;
        let out = f();
        drop(reset);
        let _ = tx.send(out);
        drop(mine);
    });
    if sender.send(job).is_err() {
        *worker = None;
        return Err(None);
    }
    loop {
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(v) => return Ok(v),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if flag.load(Ordering::SeqCst) {
                    *worker = None;
                    return Err(Some(OverBudget));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                *worker = None;
                return Err(None);
            }
        }
    }
}

/// Whether budgets are enforced in this process.
pub fn enforced() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}
