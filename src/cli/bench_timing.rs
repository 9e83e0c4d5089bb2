//! Timing shared by the bench subcommands (`bench.rs`, `bench_step.rs`): GPU timestamp
//! queries around each compute pass where the adapter has them (else wall time around a
//! blocking submit), after warm-up, median of many runs; and seeded random inputs.

use halfgrad::{Gpu, Result};
use std::time::Instant;

/// Per-run times of a benchmark and how they were taken.
#[derive(Debug, Clone)]
pub struct Timing {
    /// One entry per timed run, in milliseconds.
    pub samples_ms: Vec<f64>,
    /// "gpu timestamps" or "wall clock".
    pub method: &'static str,
}

impl Timing {
    pub fn median_ms(&self) -> f64 {
        let mut s = self.samples_ms.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            s[n / 2]
        } else {
            0.5 * (s[n / 2 - 1] + s[n / 2])
        }
    }
}

/// Runs `encode(pass, run_index)` in `warmup` untimed and then `iters` timed compute
/// passes, one pass per run. With timestamp queries each pass is timed on the GPU
/// (beginning and end of pass), many passes to a submission; without them each run is a
/// blocking submit timed on the host (which then includes submission latency).
pub fn time_passes(
    gpu: &Gpu,
    warmup: usize,
    iters: usize,
    mut encode: impl FnMut(&mut wgpu::ComputePass<'_>, usize),
) -> Result<Timing> {
    let iters = iters.max(1);
    for i in 0..warmup {
        let mut enc = gpu.encoder("bench warm-up");
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bench warm-up"),
                timestamp_writes: None,
            });
            encode(&mut pass, i);
        }
        gpu.submit(enc.finish())?;
    }
    gpu.wait_idle()?;

    if !gpu.caps().timestamps {
        let mut samples_ms = Vec::with_capacity(iters);
        for i in 0..iters {
            let start = Instant::now();
            let mut enc = gpu.encoder("bench run");
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("bench run"),
                    timestamp_writes: None,
                });
                encode(&mut pass, warmup + i);
            }
            gpu.submit(enc.finish())?;
            gpu.wait_idle()?;
            samples_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        return Ok(Timing {
            samples_ms,
            method: "wall clock",
        });
    }

    // Two timestamps a pass; a query set holds at most 4096, so submit in chunks.
    const PASSES_PER_SUBMIT: usize = 512;
    let period_ns = f64::from(gpu.queue().get_timestamp_period());
    let queries = (2 * PASSES_PER_SUBMIT.min(iters)) as u32;
    // A failure here surfaces through gpu.check() on the next submit.
    let query_set = gpu.device().create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("bench timestamps"),
        ty: wgpu::QueryType::Timestamp,
        count: queries,
    });
    let resolve = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("bench timestamps"),
        size: 8 * queries as u64,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut samples_ms = Vec::with_capacity(iters);
    let mut done = 0;
    while done < iters {
        let chunk = PASSES_PER_SUBMIT.min(iters - done);
        let mut enc = gpu.encoder("bench runs");
        for p in 0..chunk {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bench run"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &query_set,
                    beginning_of_pass_write_index: Some(2 * p as u32),
                    end_of_pass_write_index: Some(2 * p as u32 + 1),
                }),
            });
            encode(&mut pass, warmup + done + p);
        }
        enc.resolve_query_set(&query_set, 0..2 * chunk as u32, &resolve, 0);
        gpu.submit(enc.finish())?;
        let bytes = gpu.read_buffer_blocking(&resolve, 16 * chunk as u64)?;
        let ticks: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        for p in 0..chunk {
            let dt = ticks[2 * p + 1].wrapping_sub(ticks[2 * p]);
            samples_ms.push(dt as f64 * period_ns * 1e-6);
        }
        done += chunk;
    }
    Ok(Timing {
        samples_ms,
        method: "gpu timestamps",
    })
}

/// Uniform values in [-1, 1) from a seed (splitmix64; the binary has no `rand`).
pub fn random_values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}
