//! `native-membw [threads] [MiB]`: the machine's read bandwidth, for comparing engine-native's
//! achieved bandwidth (weight bytes per token x tok/s) with what the memory system delivers, and
//! a fixed compute kernel's speed (the gate's drift probes: how fast the machine was).
//!
//! Each thread sums its share of a buffer (default 1 GiB, far larger than any cache) with 8
//! independent accumulators; the best of 7 passes is printed as GB/s (10^9 bytes per second).
//! Then an f32 GEMM of 256 x 256 matrices (rows split over the threads, a plain i-k-j loop the
//! compiler vectorizes for the baseline x86-64 target, so the same binary measures the same
//! work on every machine): the best of 15 as GFLOP/s (2·n³ per product).

use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    let n = mib * (1 << 20) / 8;
    let buf: Vec<u64> = (0..n as u64).collect();
    let mut best = f64::INFINITY;
    let mut checksum = 0u64;
    for _ in 0..7 {
        let start = Instant::now();
        let sums: Vec<u64> = std::thread::scope(|s| {
            let chunk = n.div_ceil(threads);
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        let mut acc = [0u64; 8];
                        for c in part.chunks_exact(8) {
                            for k in 0..8 {
                                acc[k] = acc[k].wrapping_add(c[k]);
                            }
                        }
                        acc.iter().fold(0u64, |a, b| a.wrapping_add(*b))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        best = best.min(start.elapsed().as_secs_f64());
        checksum = sums.iter().fold(checksum, |a, b| a.wrapping_add(*b));
    }
    let gbs = (n * 8) as f64 / best / 1e9;
    println!("read bandwidth: {gbs:.1} GB/s ({threads} threads, {mib} MiB, best of 7; checksum {checksum:x})");
    let (gflops, sum) = gemm(threads, 256, 15);
    println!("f32 gemm: {gflops:.1} GFLOP/s ({threads} threads, 256x256x256, best of 15; checksum {sum:.3e})");
}

/// The best GFLOP/s of `passes` products of two `n`×`n` f32 matrices, and the sum of the result.
fn gemm(threads: usize, n: usize, passes: usize) -> (f64, f64) {
    let a: Vec<f32> = (0..n * n)
        .map(|i| ((i * 7) % 13) as f32 / 13.0 - 0.5)
        .collect();
    let b: Vec<f32> = (0..n * n)
        .map(|i| ((i * 5) % 11) as f32 / 11.0 - 0.5)
        .collect();
    let mut c = vec![0f32; n * n];
    let rows = n.div_ceil(threads.max(1));
    let mut best = f64::INFINITY;
    for _ in 0..passes {
        let start = Instant::now();
        std::thread::scope(|s| {
            for (t, out) in c.chunks_mut(rows * n).enumerate() {
                let (a, b) = (&a, &b);
                s.spawn(move || {
                    out.fill(0.0);
                    for (r, row) in out.chunks_exact_mut(n).enumerate() {
                        let i = t * rows + r;
                        for k in 0..n {
                            let x = a[i * n + k];
                            for (o, w) in row.iter_mut().zip(&b[k * n..(k + 1) * n]) {
                                *o += x * w;
                            }
                        }
                    }
                });
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    let flops = 2.0 * (n * n * n) as f64;
    (flops / best / 1e9, c.iter().map(|&v| v as f64).sum())
}
