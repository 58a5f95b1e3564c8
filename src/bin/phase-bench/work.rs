//! Calibrated CPU work and the seeded heavy-tailed sample costs.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// Spin-loop iterations per millisecond on this CPU, measured once.
pub struct Work {
    per_ms: u64,
}

impl Work {
    /// Measure how many iterations fill a millisecond, taking the fastest
    /// of a few tries (the least disturbed).
    pub fn calibrate() -> Work {
        let mut best = 0;
        for _ in 0..5 {
            let t0 = Instant::now();
            let n = 200_000;
            spin(n);
            let per_ms = n * 1_000_000 / (t0.elapsed().as_nanos() as u64).max(1);
            best = best.max(per_ms);
        }
        Work {
            per_ms: best.max(1),
        }
    }

    /// About `ms` milliseconds of CPU on an idle CPU; longer when the CPU
    /// is shared, which is what the benchmark measures.
    pub fn run_ms(&self, ms: f64) {
        spin((self.per_ms as f64 * ms) as u64);
    }

    /// CPU work in units of 1/1000 ms, for hogs that count what they do.
    pub fn units_per_ms(&self) -> u64 {
        self.per_ms
    }
}

pub fn spin(iterations: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..iterations {
        x = black_box(
            x.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
    x
}

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Lognormal with the given median and log-space sigma (Box-Muller).
    pub fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
        let z = (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos();
        median * (sigma * z).exp()
    }
}

/// The cost of sample `index`: the same for a seed whichever loader draws it.
pub fn sample_ms(seed: u64, index: u64, median: f64, sigma: f64) -> f64 {
    Rng::new(seed ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03)).lognormal(median, sigma)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_costs_are_seeded_and_heavy_tailed() {
        assert_eq!(sample_ms(7, 3, 2.0, 0.8), sample_ms(7, 3, 2.0, 0.8));
        assert_ne!(sample_ms(7, 3, 2.0, 0.8), sample_ms(8, 3, 2.0, 0.8));
        let mut v: Vec<f64> = (0..20_000).map(|i| sample_ms(1, i, 2.0, 0.8)).collect();
        v.sort_by(f64::total_cmp);
        let median = v[v.len() / 2];
        let p99 = v[v.len() * 99 / 100];
        assert!((median - 2.0).abs() < 0.1, "median {median}");
        // exp(2.326 * 0.8) = 6.4x the median at p99.
        assert!(p99 > 5.0 * median && p99 < 8.0 * median, "p99 {p99}");
    }
}
