//! Synthetic simulation-like fields for demos, examples and benchmarks: smooth sums of sines
//! plus small noise (the data ndbridge is built for), and incompressible noise.
//!
//! Not part of the library: the targets that need it include this file as a module of their
//! own (`#[path]`): the crate's unit tests, the command line's demo, the benchmarks and the
//! integration tests. Each uses part of it.
#![allow(dead_code)]

/// A small, fast, deterministic generator (SplitMix64), so fields are the same on every run.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in `[-1, 1)`.
    pub(crate) fn next_signed_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// A smooth 2-d field of `rows x cols` values at time `t`: a sum of sines, plus uniform noise of
/// relative amplitude `1e-3`, in row-major order.
pub(crate) fn smooth_field(rows: usize, cols: usize, t: f64, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        let y = i as f64 / rows.max(1) as f64;
        let row_part = (6.0 * y + 0.7 * t).sin() + 0.5 * (13.0 * y - 0.3 * t).cos();
        for j in 0..cols {
            let x = j as f64 / cols.max(1) as f64;
            let v =
                row_part + (9.0 * x + t).sin() * (4.0 * y).cos() + 0.25 * (31.0 * (x + y)).sin();
            out.push(v + 1e-3 * rng.next_signed_unit());
        }
    }
    out
}

/// `n` values of incompressible noise in `[-1, 1)`.
pub(crate) fn noise(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.next_signed_unit()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_are_bounded_and_repeatable() {
        let f = super::smooth_field(4, 8, 0.0, 1);
        assert_eq!(f.len(), 32);
        assert!(f.iter().all(|v| v.abs() < 3.0));
        assert_eq!(f, super::smooth_field(4, 8, 0.0, 1));
        assert_ne!(f, super::smooth_field(4, 8, 0.0, 2));
        assert!(super::noise(100, 3).iter().all(|v| (-1.0..1.0).contains(v)));
    }
}
