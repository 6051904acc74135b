//! A persistent thread pool for fork-join over matrix rows: workers spin on a generation counter
//! (a decode step dispatches ~150 jobs, so waking threads through the OS would cost more than the
//! work), then yield, then sleep briefly when idle for long.
//!
//! Panics: a panic in a worker's share is caught there (the worker goes on serving later jobs)
//! and raised again on the caller's thread once every worker has finished, as
//! `native pool: worker <i> panicked: <message>`; a panic in the caller's own share unwinds out of
//! [`Pool::run`] only after every worker has finished, so no worker ever calls the job after the
//! borrowed closure is gone.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// Incremented by the caller to publish a job.
    generation: AtomicUsize,
    /// Workers that finished the current job.
    done: AtomicUsize,
    quit: AtomicBool,
    /// Set while a `run` is in flight, so that a second `run` of the same pool (from inside a
    /// job, or from another thread) panics instead of republishing under running workers.
    busy: AtomicBool,
    /// Pointer to the current job (valid while `run` waits; `None` between runs). Stored as two
    /// words.
    job: Mutex<Option<JobPtr>>,
    /// Set by a worker whose share of the current job panicked (so that `run` checks `panic`
    /// without locking it when nothing went wrong).
    panicked: AtomicBool,
    /// The first worker panic of the current job: (worker index, message).
    panic: Mutex<Option<(usize, String)>>,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: a `JobPtr` is only a way to hand a `&Job` to the workers: the pointee is `Sync`, so
// calling it through a shared reference from another thread is allowed, and `Pool::run` keeps the
// closure borrowed until every worker has finished with it (see `Join`), which is what makes the
// erased lifetime valid wherever the pointer is used.
unsafe impl Send for JobPtr {}

/// Locks a mutex that no code panics while holding; poisoning is ignored so that the waiting
/// path can never panic (it runs during unwinding too).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The message of a panic payload (`panic!` with a format gives a `String`, with a literal a
/// `&str`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic payload".to_string())
}

pub struct Pool {
    n: usize,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool of `n` threads in all: the caller's thread plus `n - 1` workers.
    pub fn new(n: usize) -> Pool {
        let n = n.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            quit: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            job: Mutex::new(None),
            panicked: AtomicBool::new(false),
            panic: Mutex::new(None),
        });
        let workers = (1..n)
            .map(|idx| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("native-{idx}"))
                    .spawn(move || worker(idx, n, &s))
                    .expect("spawn worker thread")
            })
            .collect();
        Pool { n, shared, workers }
    }

    pub fn threads(&self) -> usize {
        self.n
    }

    /// Runs `f(thread_index, n_threads)` on every thread and returns when all are done.
    ///
    /// Panics (after every thread has finished) when a share panicked: the caller's own panic is
    /// passed on as it is; a worker's panic becomes `native pool: worker <i> panicked: <msg>`.
    /// Also panics, without running anything, when called while another `run` of this pool is in
    /// progress (from inside a job, or from another thread).
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        if self.n == 1 {
            f(0, 1);
            return;
        }
        let s = &*self.shared;
        if s.busy.swap(true, Ordering::Acquire) {
            panic!(
                "native pool: `Pool::run` called while another run of the same pool is in \
                 progress (from inside a job, or from another thread)"
            );
        }
        // SAFETY: only the lifetime is erased (same type otherwise). The pointer is published
        // to the workers below and used by them only until `done` reaches n - 1; `join` waits for
        // that before `run` returns or unwinds (its `Drop` runs if `f` panics, and `finish`
        // otherwise), so `f` is still borrowed whenever a worker calls it, and then `join`
        // clears the published pointer. `busy` keeps any other `run` from publishing meanwhile.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), &'static Job>(f) };
        *lock(&s.job) = Some(JobPtr(ptr));
        s.done.store(0, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::Release);
        let join = Join {
            shared: s,
            workers: self.n - 1,
        };
        f(0, self.n);
        if let Some((idx, msg)) = join.finish() {
            panic!("native pool: worker {idx} panicked: {msg}");
        }
    }
}

/// Ends a published job: waits (spinning, then yielding) until all `workers` have finished it,
/// clears the job pointer, takes the first worker panic and frees the pool for the next `run`.
/// Created right after publishing, so that a panic in the caller's own share waits for the
/// workers (in `Drop`) before it unwinds out of `run`.
struct Join<'a> {
    shared: &'a Shared,
    workers: usize,
}

impl Join<'_> {
    /// Waits for the workers; returns the first worker panic, if any. Never panics.
    fn wait(&self) -> Option<(usize, String)> {
        let s = self.shared;
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) != self.workers {
            spins += 1;
            if spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        *lock(&s.job) = None;
        let panic = if s.panicked.load(Ordering::Relaxed) {
            s.panicked.store(false, Ordering::Relaxed);
            lock(&s.panic).take()
        } else {
            None
        };
        s.busy.store(false, Ordering::Release);
        panic
    }

    /// [`Join::wait`] on the normal path (the caller's share returned).
    fn finish(self) -> Option<(usize, String)> {
        let panic = self.wait();
        // Already waited: skip `Drop` (which would wait again).
        std::mem::forget(self);
        panic
    }
}

impl Drop for Join<'_> {
    /// The caller's share panicked: wait for the workers before the unwind leaves `run` (the
    /// caller's panic is the one that propagates; a worker panic of this job is dropped).
    fn drop(&mut self) {
        let _ = self.wait();
    }
}

fn worker(idx: usize, n: usize, s: &Shared) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0u32;
        let mut idle_since: Option<Instant> = None;
        loop {
            if s.quit.load(Ordering::Acquire) {
                return;
            }
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins += 1;
            if spins < 1 << 14 {
                std::hint::spin_loop();
            } else {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() < Duration::from_millis(50) {
                    std::thread::yield_now();
                } else {
                    // Long idle (between scenarios): stop burning a core.
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        // A panic in this share must not kill the worker: `run` would wait for it forever.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let job = lock(&s.job).expect("native pool: no job published with the generation");
            // SAFETY: `run` published this pointer (from a `&Job`) before the generation just
            // seen, and keeps that closure borrowed until `done` counts this worker, which is
            // incremented only after this call has returned or its panic has been caught. The
            // closure is `Sync`, so calling it from this thread through `&` is allowed.
            unsafe { (*job.0)(idx, n) }
        }));
        if let Err(payload) = result {
            let msg = panic_message(&*payload);
            lock(&s.panic).get_or_insert((idx, msg));
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.quit.store(true, Ordering::Release);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// The `[start, end)` share of `total` items for thread `i` of `n`, in multiples of `align`.
pub fn split(total: usize, i: usize, n: usize, align: usize) -> (usize, usize) {
    let units = total.div_ceil(align);
    let per = units / n;
    let rem = units % n;
    let start = i * per + i.min(rem);
    let len = per + usize::from(i < rem);
    (
        (start * align).min(total),
        ((start + len) * align).min(total),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_done_exactly_once() {
        for n in [1, 2, 3, 4] {
            let pool = Pool::new(n);
            for total in [0, 1, 7, 64, 1000] {
                let hits: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
                for _ in 0..50 {
                    pool.run(&|i, n| {
                        let (a, b) = split(total, i, n, 4);
                        for h in &hits[a..b] {
                            h.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
                assert!(
                    hits.iter().all(|h| h.load(Ordering::Relaxed) == 50),
                    "n={n} total={total}"
                );
            }
        }
    }

    /// Runs `f` and returns its panic's message (as engine-kit reads it: a `String` payload
    /// first, then a `&str` one); panics when `f` returns normally.
    fn panic_of(f: impl FnOnce()) -> String {
        let payload = std::panic::catch_unwind(AssertUnwindSafe(f))
            .expect_err("the run should have panicked");
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .expect("a String or &str panic payload (engine-kit would report `unknown panic`)")
    }

    /// Every thread runs once more and nothing stale (a panic, a job) is left over.
    fn assert_usable(pool: &Pool) {
        let n = pool.threads();
        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..20 {
            pool.run(&|i, _| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
        }
        assert!(
            hits.iter().all(|h| h.load(Ordering::Relaxed) == 20),
            "n={n}"
        );
    }

    /// Sets its flag when dropped (so, during unwinding: after the panic hook has run).
    struct SetOnDrop<'a>(&'a AtomicBool);
    impl Drop for SetOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    #[test]
    fn a_panic_on_the_callers_thread_waits_for_the_workers() {
        for n in [2, 3, 4] {
            let pool = Pool::new(n);
            let finished = AtomicUsize::new(0);
            let unwinding = AtomicBool::new(false);
            let msg = panic_of(|| {
                // Owned by this frame, which the caller's panic unwinds: the workers must be
                // done with it before `run` lets the unwind through.
                let slots: [AtomicUsize; 4] = Default::default();
                pool.run(&|i, _| {
                    if i == 0 {
                        let _unwinding = SetOnDrop(&unwinding);
                        panic!("caller share failed");
                    }
                    // Slow workers: still busy while the caller's panic unwinds (waiting for the
                    // unwind itself, as the panic hook may take long to print a backtrace).
                    while !unwinding.load(Ordering::Acquire) {
                        std::thread::yield_now();
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    slots[i].store(i, Ordering::Relaxed);
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            });
            assert_eq!(msg, "caller share failed", "n={n}");
            assert_eq!(finished.load(Ordering::SeqCst), n - 1, "n={n}");
            assert_usable(&pool);
        }
    }

    #[test]
    fn a_panic_on_a_worker_reaches_the_caller() {
        for n in [2, 3, 4] {
            let pool = Pool::new(n);
            let ran = AtomicUsize::new(0);
            let msg = panic_of(|| {
                pool.run(&|i, _| {
                    ran.fetch_add(1, Ordering::SeqCst);
                    if i == 1 {
                        panic!("row {i} failed");
                    }
                })
            });
            assert_eq!(msg, "native pool: worker 1 panicked: row 1 failed", "n={n}");
            assert_eq!(ran.load(Ordering::SeqCst), n, "n={n}");
            assert_usable(&pool);
            // Every worker panicking: one of them is reported, and the pool goes on.
            let msg = panic_of(|| {
                pool.run(&|i, _| {
                    if i > 0 {
                        panic!("worker share failed");
                    }
                })
            });
            assert!(
                msg.starts_with("native pool: worker ") && msg.ends_with(" worker share failed"),
                "n={n}: {msg}"
            );
            assert_usable(&pool);
        }
    }

    #[test]
    fn the_callers_panic_wins_and_leaves_no_stale_worker_panic() {
        for n in [2, 3, 4] {
            let pool = Pool::new(n);
            let msg = panic_of(|| pool.run(&|i, _| panic!("share {i} failed")));
            assert_eq!(msg, "share 0 failed", "n={n}");
            // The workers' panics of that job are not reported by the next one.
            assert_usable(&pool);
        }
    }

    #[test]
    fn a_nested_run_panics_instead_of_racing_the_workers() {
        for n in [2, 3, 4] {
            let pool = Pool::new(n);
            // From the caller's share.
            let msg = panic_of(|| {
                pool.run(&|i, _| {
                    if i == 0 {
                        pool.run(&|_, _| {});
                    }
                })
            });
            assert!(msg.contains("in progress"), "n={n}: {msg}");
            assert_usable(&pool);
            // From a worker's share.
            let msg = panic_of(|| {
                pool.run(&|i, _| {
                    if i == 1 {
                        pool.run(&|_, _| {});
                    }
                })
            });
            assert!(
                msg.starts_with("native pool: worker 1 panicked: ") && msg.contains("in progress"),
                "n={n}: {msg}"
            );
            assert_usable(&pool);
        }
    }

    #[test]
    fn a_single_thread_pool_passes_panics_on() {
        let pool = Pool::new(1);
        assert_eq!(panic_of(|| pool.run(&|_, _| panic!("alone"))), "alone");
        assert_usable(&pool);
    }
}
