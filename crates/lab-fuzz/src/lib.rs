//! A small seeded mutational fuzzer for the lab's parsers (what reads a file or a pipe that
//! something else wrote: GGUF, requests and reports, result and baseline files, manifests).
//!
//! [`run`] first replays every committed input under `fuzz/corpus/<name>/` at the project root
//! (each is a regression test), then feeds `cases` mutated inputs to the target, each under
//! `catch_unwind` with a [`GuardedAlloc`] limit on the memory it may hold. A panic, an
//! allocation beyond [`ALLOC_LIMIT`], a case slower than [`SLOW_CASE`] or one that hangs
//! ([`HANG`]) saves the input as
//! `fuzz/corpus/<name>/crash-<hash>` (shortened where it still fails) and fails naming that
//! file; commit it with the fix. A target states the parser's contract itself: it panics (an
//! `assert!`) when an error does not name the file and the field or offset.
//!
//! Mutations are drawn from a [`SplitMix64`] stream seeded by the target's name and
//! `LAB_FUZZ_SEED` (default 0), so a run is reproducible; `LAB_FUZZ_CASES` replaces the
//! target's number of cases (a longer campaign). Binary inputs get bit flips, byte sets,
//! interesting values (0, 1, `0x7f…`, `0xff…`, huge lengths) written anywhere and especially
//! over what looks like a length or count field, arithmetic, truncation, deletion, duplication
//! and splicing of chunks. JSON inputs also get structural mutations (a node replaced by an
//! interesting value or by another node, arrays emptied, cut or grown, keys removed, renamed or
//! added) and text ones (characters deleted or inserted, numbers swapped for huge, negative or
//! NaN-like literals, strings for odd ones, deep nesting).
//!
//! A test binary that fuzzes declares the allocator once:
//! `#[global_allocator] static ALLOC: lab_fuzz::GuardedAlloc = lab_fuzz::GuardedAlloc;`
//! ([`run`] refuses to start without it).

pub mod gguf;
mod json;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The checkout (the corpus lives under `fuzz/corpus/`): the first directory above the working
/// directory (a test's is its package) that has one, else the one this crate was compiled in. The
/// compile-time path alone is not enough: a build cache shared by two checkouts keeps the first
/// one's.
fn root() -> PathBuf {
    let here = std::env::current_dir().ok();
    here.iter()
        .flat_map(|d| d.ancestors())
        .find(|d| d.join("fuzz").join("corpus").is_dir())
        .map(Path::to_path_buf)
        .or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .canonicalize()
                .ok()
        })
        .expect("project root: no fuzz/corpus above the working directory")
}

/// Replaces a target's number of mutated cases (a longer campaign: `LAB_FUZZ_CASES=200000`).
pub const CASES_ENV: &str = "LAB_FUZZ_CASES";
/// Seeds the mutation stream (default 0; the target's name is mixed in).
pub const SEED_ENV: &str = "LAB_FUZZ_SEED";
/// The most memory one case may hold at once. Inputs are a few KiB: anything near this came from
/// a length field, not from the input's size.
pub const ALLOC_LIMIT: usize = 256 << 20;
/// A case that takes longer than this is a failure too (a loop bounded by a length field rather
/// than by the bytes present).
pub const SLOW_CASE: Duration = Duration::from_secs(5);
/// A case still running after this is a hang: a watchdog saves its input and aborts the process.
pub const HANG: Duration = Duration::from_secs(30);

/// The SplitMix64 generator (Steele, Lea, Flood 2014), as in `lab_protocol::micro::fill`.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// FNV-1a, 64 bits: names crash files after their content and mixes names into seeds.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `fuzz/corpus/<name>` at the project root.
pub fn corpus_dir(name: &str) -> PathBuf {
    root().join("fuzz/corpus").join(name)
}

/// The project-relative name of a corpus file (what messages print).
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

// --- the allocation guard ----------------------------------------------------------------------

/// The case running on this thread: its input and target name (borrowed from [`run`]'s frame
/// for the duration of the case), for the allocation guard to save before it aborts.
#[derive(Clone, Copy)]
struct Current {
    input: (*const u8, usize),
    name: (*const u8, usize),
}

thread_local! {
    /// Bytes allocated minus bytes freed on this thread since the case began.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// The case's limit on `LIVE`; 0 outside a case (no accounting).
    static LIMIT: Cell<usize> = const { Cell::new(0) };
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
    /// Panics on this thread are expected (a case runs): the hook records them instead of
    /// printing.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    /// Cases the target accepted ([`accepted`]), for the summary line.
    static ACCEPTED: Cell<usize> = const { Cell::new(0) };
}

/// Called by a target when the parser accepted the input (it went on to use it): the summary
/// line counts them, to show that the mutations reach past the parser.
pub fn accepted() {
    ACCEPTED.set(ACCEPTED.get() + 1);
}

/// The system allocator with a per-thread limit while a fuzz case runs: a case that would hold
/// more than [`ALLOC_LIMIT`] bytes at once has its input saved to the corpus, and the process
/// aborts (an allocation cannot unwind) with a line naming the file. Outside a case it only
/// forwards to [`System`].
pub struct GuardedAlloc;

impl GuardedAlloc {
    fn account(size: usize, grow: bool) {
        let limit = LIMIT.get();
        if limit == 0 {
            return;
        }
        let live = if grow {
            LIVE.get().saturating_add(size as isize)
        } else {
            LIVE.get().saturating_sub(size as isize)
        };
        if grow && (size > limit || live > limit as isize) {
            too_much_memory(size);
        }
        LIVE.set(live);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the added
// accounting touches only `const`-initialized thread-locals without destructors (no allocation,
// no re-entry), and the one path that allocates (`too_much_memory`) first turns the accounting
// off and never returns.
unsafe impl GlobalAlloc for GuardedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::account(layout.size(), true);
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::account(layout.size(), true);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        Self::account(layout.size(), false);
        // SAFETY: `ptr` was allocated by `System` through this allocator with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            Self::account(new_size - layout.size(), true);
        } else {
            Self::account(layout.size() - new_size, false);
        }
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Saves the running case's input and aborts: called from the allocator when a case asks for
/// more than [`ALLOC_LIMIT`].
#[cold]
fn too_much_memory(size: usize) -> ! {
    LIMIT.set(0);
    QUIET.set(false);
    let saved = CURRENT.get().map(|c| {
        // SAFETY: `CURRENT` is set only by `run_case`, to slices borrowed for the whole case, and
        // cleared before they end; this runs inside the case, on its thread.
        let (input, name) = unsafe {
            (
                std::slice::from_raw_parts(c.input.0, c.input.1),
                std::slice::from_raw_parts(c.name.0, c.name.1),
            )
        };
        let name = String::from_utf8_lossy(name).into_owned();
        (name.clone(), save_crash(&name, input))
    });
    // Straight to stderr: the test harness's capture of `eprintln!` would be lost in the abort.
    let line = match saved {
        Some((name, path)) => format!(
            "fuzz target `{name}`: one input asked for {size} bytes (more than the {ALLOC_LIMIT}-byte limit of a case: an allocation sized by a length field); saved as {path} (run the test again to replay it)\n"
        ),
        None => format!("fuzz: an allocation of {size} bytes outside a case\n"),
    };
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    std::process::abort()
}

/// Refuses to fuzz without [`GuardedAlloc`] (the memory limit would silently not apply).
fn assert_guard_installed() {
    LIVE.set(0);
    LIMIT.set(usize::MAX >> 1);
    let v = std::hint::black_box(Vec::<u8>::with_capacity(64));
    let counted = LIVE.get();
    LIMIT.set(0);
    drop(v);
    assert!(
        counted >= 64,
        "this test binary does not use the fuzzer's allocator: declare `#[global_allocator] static ALLOC: lab_fuzz::GuardedAlloc = lab_fuzz::GuardedAlloc;`"
    );
}

/// Set to print every panic of a case as usual (with `RUST_BACKTRACE=1`, its backtrace): for
/// fixing a crasher.
pub const VERBOSE_ENV: &str = "LAB_FUZZ_VERBOSE";

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        let verbose = std::env::var_os(VERBOSE_ENV).is_some();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.get() && !verbose {
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(at));
            } else {
                previous(info)
            }
        }));
    });
}

// --- running ------------------------------------------------------------------------------------

/// Why one input failed; `slow` when it did not panic but took too long (not shrunk: every try
/// would take as long).
#[derive(Debug)]
struct Failure {
    why: String,
    slow: bool,
}

/// A case in progress: its thread, target, input and start.
struct Running {
    thread: std::thread::ThreadId,
    name: String,
    input: Vec<u8>,
    start: Instant,
}

/// The cases running now: what the watchdog saves when one hangs.
static RUNNING: std::sync::Mutex<Vec<Running>> = std::sync::Mutex::new(Vec::new());

/// Starts (once) the thread that ends the process when a case runs longer than [`HANG`], after
/// saving its input (a hang cannot be caught like a panic).
fn start_watchdog() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(Running {
                name, input, start, ..
            }) = running.iter().find(|r| r.start.elapsed() > HANG)
            {
                let path = save_crash(name, input);
                let line = format!(
                    "fuzz target `{name}`: one input has run for {:.0} s (a hang); saved as {path} (run the test again to replay it)\n",
                    start.elapsed().as_secs_f64()
                );
                let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
                std::process::abort();
            }
        });
    });
}

fn running(entry: Option<(&str, &[u8])>) {
    let me = std::thread::current().id();
    let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    running.retain(|r| r.thread != me);
    if let Some((name, input)) = entry {
        running.push(Running {
            thread: me,
            name: name.to_string(),
            input: input.to_vec(),
            start: Instant::now(),
        });
    }
}

fn run_case(name: &str, target: &dyn Fn(&[u8]), input: &[u8]) -> Result<(), Failure> {
    running(Some((name, input)));
    LAST_PANIC.with(|p| p.borrow_mut().take());
    CURRENT.set(Some(Current {
        input: (input.as_ptr(), input.len()),
        name: (name.as_ptr(), name.len()),
    }));
    QUIET.set(true);
    LIVE.set(0);
    let start = Instant::now();
    LIMIT.set(ALLOC_LIMIT);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| target(input)));
    LIMIT.set(0);
    let took = start.elapsed();
    QUIET.set(false);
    CURRENT.set(None);
    running(None);
    match outcome {
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            let at = LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_default();
            Err(Failure {
                why: format!("panicked{at}: {message}"),
                slow: false,
            })
        }
        Ok(()) if took > SLOW_CASE => Err(Failure {
            why: format!(
                "took {:.1} s (more than {} s: work bounded by a length field, not by the input)",
                took.as_secs_f64(),
                SLOW_CASE.as_secs()
            ),
            slow: true,
        }),
        Ok(()) => Ok(()),
    }
}

/// Writes a failing input as `fuzz/corpus/<name>/crash-<hash>` (project-relative in the result).
fn save_crash(name: &str, input: &[u8]) -> String {
    let dir = corpus_dir(name);
    let path = dir.join(format!("crash-{:016x}", fnv1a(input)));
    let written = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input));
    match written {
        Ok(()) => shown(&path),
        Err(e) => format!("(not saved: {}: {e})", path.display()),
    }
}

/// A shorter input that still fails (chunks removed while the target still fails), within a
/// bounded number of tries.
fn shrink(name: &str, target: &dyn Fn(&[u8]), input: &[u8]) -> Vec<u8> {
    let mut best = input.to_vec();
    let mut tries = 0;
    let mut chunk = best.len() / 2;
    while chunk > 0 && tries < 400 {
        let mut at = 0;
        while at + chunk <= best.len() && tries < 400 {
            let mut candidate = best[..at].to_vec();
            candidate.extend_from_slice(&best[at + chunk..]);
            tries += 1;
            if run_case(name, target, &candidate).is_err_and(|f| !f.slow) {
                best = candidate;
            } else {
                at += chunk;
            }
        }
        chunk /= 2;
    }
    best
}

/// Files of `fuzz/corpus/<name>/` (sorted; dotfiles and READMEs are not inputs).
fn corpus(name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(corpus_dir(name)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            !n.starts_with('.') && !n.ends_with(".md")
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// The number of mutated cases: `LAB_FUZZ_CASES` when set, else `default`.
pub fn cases(default: usize) -> usize {
    match std::env::var(CASES_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{CASES_ENV}={v}: expected a number of cases")),
        _ => default,
    }
}

fn base_seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_ENV}={v}: expected an unsigned number")),
        _ => 0,
    }
}

/// Fuzzes `target` (see the module docs): replays `seeds` and the committed corpus of `name`,
/// then `cases` mutated inputs (`LAB_FUZZ_CASES` overrides). Panics, naming the saved input,
/// on the first input that fails.
pub fn run(name: &str, seeds: &[Vec<u8>], cases: usize, target: impl Fn(&[u8])) {
    assert!(
        !seeds.is_empty(),
        "fuzz target `{name}` needs at least one seed"
    );
    assert_guard_installed();
    install_panic_hook();
    start_watchdog();
    let target: &dyn Fn(&[u8]) = &target;
    let start = Instant::now();
    for (i, s) in seeds.iter().enumerate() {
        if let Err(Failure { why, .. }) = run_case(name, target, s) {
            panic!("fuzz target `{name}`: seed {i} (valid input) {why}");
        }
    }
    let committed = corpus(name);
    for (path, bytes) in &committed {
        if let Err(Failure { why, .. }) = run_case(name, target, bytes) {
            panic!(
                "fuzz target `{name}`: regression: committed input {} {why}",
                shown(path)
            );
        }
    }
    let cases = self::cases(cases);
    let seed = base_seed();
    let mut rng = SplitMix64::new(fnv1a(name.as_bytes()) ^ seed);
    let pool: Vec<&[u8]> = seeds
        .iter()
        .map(Vec::as_slice)
        .chain(committed.iter().map(|(_, b)| b.as_slice()))
        .collect();
    let json: Vec<Option<serde_json::Value>> = pool.iter().map(|b| json::parse(b)).collect();
    ACCEPTED.set(0);
    for case in 0..cases {
        let k = rng.below(pool.len());
        let input = mutate(&mut rng, pool[k], json[k].as_ref(), &pool, &json);
        if let Err(Failure { why, slow }) = run_case(name, target, &input) {
            let small = if slow {
                input
            } else {
                shrink(name, target, &input)
            };
            let why = match run_case(name, target, &small) {
                Err(Failure { why, .. }) => why,
                Ok(()) => why,
            };
            let path = save_crash(name, &small);
            panic!(
                "fuzz target `{name}`: case {case} ({SEED_ENV}={seed}) {why}\n  input saved as {path}: fix the parser and commit the file (it is replayed by every run from now on)"
            );
        }
    }
    eprintln!(
        "fuzz target `{name}`: {} seeds, {} committed inputs and {cases} cases ({SEED_ENV}={seed}; {} accepted) in {:.2} s",
        seeds.len(),
        committed.len(),
        ACCEPTED.get(),
        start.elapsed().as_secs_f64()
    );
}

// --- mutations ----------------------------------------------------------------------------------

/// One mutated input from `base` (one to eight stacked mutations; `others` for splicing).
pub fn mutate_bytes(rng: &mut SplitMix64, base: &[u8], others: &[&[u8]]) -> Vec<u8> {
    mutate(rng, base, None, others, &[])
}

fn mutate(
    rng: &mut SplitMix64,
    base: &[u8],
    base_json: Option<&serde_json::Value>,
    others: &[&[u8]],
    others_json: &[Option<serde_json::Value>],
) -> Vec<u8> {
    let mut out = match base_json {
        // Most JSON cases keep the syntax and change the meaning (what finds panics past the
        // parser); the rest break the syntax.
        Some(v) if rng.below(10) < 6 => {
            let donors: Vec<&serde_json::Value> = others_json.iter().flatten().collect();
            json::mutate_value(rng, v, &donors)
        }
        Some(_) if rng.below(4) < 3 => json::mutate_text(rng, base),
        _ => base.to_vec(),
    };
    let stacked = 1 + (rng.next_u64().trailing_zeros() as usize).min(7);
    // JSON gets a byte-level mutation now and then (mostly a syntax error, which the text
    // mutations already cover)
    let bytes = match base_json {
        None => stacked,
        Some(_) => usize::from(rng.one_in(8)),
    };
    for _ in 0..bytes {
        mutate_once(rng, &mut out, others);
    }
    out
}

/// Values that break parsers when they stand where a length, count, type or offset was.
const INTERESTING: [u64; 22] = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    16,
    32,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// Offsets that look like a little-endian length or count: a u64 in `1..=2^24` or a u32 in
/// `1..=2^16` (GGUF's string lengths, array and tensor counts, dimensions; most binary formats'
/// sizes).
fn length_fields(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for i in 0..b.len().saturating_sub(3) {
        if i + 8 <= b.len() {
            let v = u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
            if (1..=1 << 24).contains(&v) {
                out.push((i, 8));
                continue;
            }
        }
        let v = u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        if (1..=1 << 16).contains(&v) {
            out.push((i, 4));
        }
    }
    out
}

fn write_le(out: &mut [u8], at: usize, width: usize, v: u64) {
    let end = (at + width).min(out.len());
    out[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
}

fn read_le(b: &[u8], at: usize, width: usize) -> u64 {
    let mut buf = [0u8; 8];
    let end = (at + width).min(b.len());
    buf[..end - at].copy_from_slice(&b[at..end]);
    u64::from_le_bytes(buf)
}

/// One byte-level mutation in place.
fn mutate_once(rng: &mut SplitMix64, out: &mut Vec<u8>, others: &[&[u8]]) {
    let len = out.len();
    if len == 0 {
        let n = 1 + rng.below(16);
        out.extend((0..n).map(|_| rng.next_u64() as u8));
        return;
    }
    let at = rng.below(len);
    let chunk = |rng: &mut SplitMix64, len: usize| {
        let most = if rng.one_in(4) { 4096 } else { 64 };
        let n = 1 + rng.below(len.min(most));
        let start = rng.below(len - n + 1);
        (start, n)
    };
    match rng.below(12) {
        0 => out[at] ^= 1 << rng.below(8),
        1 => out[at] = rng.next_u64() as u8,
        2 | 3 => {
            // An interesting value over a length-like field (or anywhere).
            let fields = length_fields(out);
            let (pos, width) = if !fields.is_empty() && !rng.one_in(4) {
                *rng.pick(&fields)
            } else {
                (at, *rng.pick(&[1, 2, 4, 8]))
            };
            let old = read_le(out, pos, width);
            let remaining = (len - pos) as u64;
            let v = match rng.below(6) {
                0 => old.wrapping_mul(2),
                1 => old.wrapping_add(1),
                2 => old.wrapping_sub(1),
                3 => remaining.wrapping_add(rng.below(3) as u64).wrapping_sub(1),
                _ => *rng.pick(&INTERESTING),
            };
            write_le(out, pos, width, v);
        }
        4 => {
            let width = *rng.pick(&[1, 2, 4, 8]);
            let delta = 1 + rng.below(35) as u64;
            let old = read_le(out, at, width);
            let v = if rng.one_in(2) {
                old.wrapping_add(delta)
            } else {
                old.wrapping_sub(delta)
            };
            write_le(out, at, width, v);
        }
        5 => out.truncate(at),
        6 => {
            let (s, n) = chunk(rng, len);
            out.drain(s..s + n);
        }
        7 => {
            let (s, n) = chunk(rng, len);
            let piece = out[s..s + n].to_vec();
            let to = rng.below(len + 1);
            out.splice(to..to, piece);
        }
        8 => {
            let (s, n) = chunk(rng, len);
            let to = rng.below(len - n + 1);
            out.copy_within(s..s + n, to);
        }
        9 | 10 if !others.is_empty() => {
            let other = *rng.pick(others);
            if other.is_empty() {
                return;
            }
            let (s, n) = chunk(rng, other.len());
            let piece = &other[s..s + n];
            if rng.one_in(2) {
                // overwrite at the same offset: keeps the format's structure around it
                let to = s.min(len);
                let end = (to + n).min(len);
                out[to..end].copy_from_slice(&piece[..end - to]);
            } else {
                out.splice(at..at, piece.iter().copied());
            }
        }
        _ => {
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            out.splice(at..at, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_seeded_and_varied() {
        let base = b"GGUF\x03\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00hello world".to_vec();
        let run = |seed| {
            let mut rng = SplitMix64::new(seed);
            (0..200)
                .map(|_| mutate_bytes(&mut rng, &base, &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let distinct: std::collections::BTreeSet<_> = run(7).into_iter().collect();
        assert!(distinct.len() > 150, "{} distinct inputs", distinct.len());
    }

    #[test]
    fn length_fields_are_found() {
        let mut b = vec![0xaau8; 4];
        b.extend_from_slice(&5u64.to_le_bytes());
        b.extend_from_slice(b"abcde");
        assert!(length_fields(&b).contains(&(4, 8)));
    }
}
