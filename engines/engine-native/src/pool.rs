//! A persistent thread pool for fork-join over matrix rows: workers spin on a generation counter
//! (a decode step dispatches ~150 jobs, so waking threads through the OS would cost more than the
//! work), then yield, then sleep briefly when idle for long.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// Incremented by the caller to publish a job.
    generation: AtomicUsize,
    /// Workers that finished the current job.
    done: AtomicUsize,
    quit: AtomicBool,
    /// Pointer to the current job (valid while `run` waits). Stored as two words.
    job: std::sync::Mutex<Option<JobPtr>>,
}

#[derive(Clone, Copy)]
struct JobPtr(*const Job);
// SAFETY: the pointee is `Sync` and outlives every use (run() waits for all workers).
unsafe impl Send for JobPtr {}

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
            job: std::sync::Mutex::new(None),
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
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        if self.n == 1 {
            f(0, 1);
            return;
        }
        // SAFETY: erase the lifetime; the pointer is only used until `done` reaches n - 1,
        // which this function waits for before returning.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), &'static Job>(f) };
        *self.shared.job.lock().unwrap() = Some(JobPtr(ptr));
        self.shared.done.store(0, Ordering::Relaxed);
        self.shared.generation.fetch_add(1, Ordering::Release);
        f(0, self.n);
        let mut spins = 0u32;
        while self.shared.done.load(Ordering::Acquire) != self.n - 1 {
            spins += 1;
            if spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
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
        let job = s
            .job
            .lock()
            .unwrap()
            .expect("job published with the generation");
        // SAFETY: see `Pool::run`.
        unsafe { (*job.0)(idx, n) };
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
}
