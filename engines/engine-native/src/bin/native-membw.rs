//! `native-membw [threads] [MiB]`: the machine's read bandwidth, for comparing engine-native's
//! achieved bandwidth (weight bytes per token x tok/s) with what the memory system delivers.
//!
//! Each thread sums its share of a buffer (default 1 GiB, far larger than any cache) with 8
//! independent accumulators; the best of 7 passes is printed as GB/s (10^9 bytes per second).

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
}
