//! The Lucas-Lehmer test for Mersenne numbers `M_p = 2^p - 1`, resumable in slices.
//!
//! For an odd prime `p`, `M_p` is prime exactly when `s_{p-2} ≡ 0 (mod M_p)`, where `s_0 = 4`
//! and `s_{i+1} = s_i² - 2`. Reduction modulo `2^p - 1` needs no division:
//! `x mod (2^p - 1) = (x & M_p) + (x >> p)`, folded until below `M_p`.
//!
//! [`LucasLehmer::advance`] runs a bounded number of iterations and returns, and
//! [`LucasLehmer::advance_for`] runs for a bounded time, so a long test can be done in slices
//! (a tab's search worker rests between them; without a worker the page's event loop gets its
//! turn).
//!
//! With the `fft` feature, exponents from [`FFT_FROM`] on square by FFT (GIMPS's method, see
//! `fft_square.rs`), falling back to exact multiplication for any step whose rounding is in
//! doubt; below it, and without the feature, squares are exact (num-bigint's Karatsuba).

use num_bigint::BigUint;
use num_traits::{One, Zero};
use web_time::Duration;

/// Iterations between two clock reads in [`LucasLehmer::advance_for`]: a read costs about as
/// much as one iteration at the smallest exponents, nothing beside one at the others.
const ITERATIONS_PER_CLOCK_READ: u32 = 4;

/// The smallest exponent squared by FFT (with the `fft` feature): below it num-bigint's
/// multiplication is faster. In wasm, which has no 64 x 64 -> 128-bit product, num-bigint
/// multiplies 32-bit digits, four times the work of the 64-bit ones it uses natively, so FFT wins
/// much earlier there: from about p = 2000 in a tab's worker, and natively only from p = 20,000
/// to 40,000 depending on the build (`cargo xtask bench --only gimps` prints both ways).
#[cfg(target_arch = "wasm32")]
pub const FFT_FROM: u32 = 2000;
/// The smallest exponent squared by FFT (with the `fft` feature); see the wasm32 value.
#[cfg(not(target_arch = "wasm32"))]
pub const FFT_FROM: u32 = 30_000;

/// Exponents `p` of every known Mersenne prime `2^p - 1`, in increasing order (52 as of 2024).
pub const KNOWN_MERSENNE_EXPONENTS: [u32; 52] = [
    2, 3, 5, 7, 13, 17, 19, 31, 61, 89, 107, 127, 521, 607, 1279, 2203, 2281, 3217, 4253, 4423,
    9689, 9941, 11213, 19937, 21701, 23209, 44497, 86243, 110503, 132049, 216091, 756839, 859433,
    1257787, 1398269, 2976221, 3021377, 6972593, 13466917, 20996011, 24036583, 25964951, 30402457,
    32582657, 37156667, 42643801, 43112609, 57885161, 74207281, 77232917, 82589933, 136279841,
];

/// Every exponent below this has been tested and double-checked by GIMPS (milestone of 2024):
/// below it, [`KNOWN_MERSENNE_EXPONENTS`] is the complete list.
pub const VERIFIED_BELOW: u32 = 82_589_933;

/// Whether `n` is prime (trial division; exponents are small enough).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n < 4 {
        return true;
    }
    if n.is_multiple_of(2) {
        return false;
    }
    let mut d = 3u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// The smallest prime greater than `n` (the next exponent worth testing).
pub fn next_prime(n: u32) -> u32 {
    let mut candidate = n.saturating_add(1);
    while !is_prime(candidate) {
        candidate = candidate.saturating_add(1);
    }
    candidate
}

/// A Lucas-Lehmer test in progress.
#[derive(Debug, Clone)]
pub struct LucasLehmer {
    p: u32,
    modulus: BigUint,
    s: BigUint,
    done: u32,
    result: Option<bool>,
    #[cfg(feature = "fft")]
    fft: Option<super::fft_square::FftSquarer>,
}

impl LucasLehmer {
    /// Starts testing `2^p - 1`. Composite exponents are answered at once (`M_p` is then
    /// composite too), as is `p = 2` (`M_2 = 3` is prime).
    pub fn new(p: u32) -> Self {
        Self::with_fft(p, p >= FFT_FROM)
    }

    /// Starts testing `2^p - 1`, squaring by FFT or not whatever the exponent (FFT only with the
    /// `fft` feature): to compare the two.
    pub fn with_fft(p: u32, fft: bool) -> Self {
        #[cfg(not(feature = "fft"))]
        let _ = fft;
        let result = match p {
            2 => Some(true),
            _ if !is_prime(p) => Some(false),
            _ => None,
        };
        Self {
            p,
            modulus: (BigUint::one() << p) - BigUint::one(),
            s: BigUint::from(4u32),
            done: 0,
            #[cfg(feature = "fft")]
            fft: (fft && result.is_none()).then(|| super::fft_square::FftSquarer::new(p)),
            result,
        }
    }

    /// The exponent under test.
    pub fn exponent(&self) -> u32 {
        self.p
    }

    /// Iterations done so far, out of `p - 2`.
    pub fn progress(&self) -> (u32, u32) {
        (self.done, self.p.saturating_sub(2))
    }

    /// Runs at most `budget` iterations; returns the verdict once the test is complete.
    pub fn advance(&mut self, budget: u32) -> Option<bool> {
        if self.result.is_some() {
            return self.result;
        }
        let total = self.p - 2;
        let end = self.done.saturating_add(budget).min(total);
        while self.done < end {
            self.s = self.square_minus_two();
            self.done += 1;
        }
        if self.done == total {
            self.result = Some(self.s.is_zero());
        }
        self.result
    }

    /// Runs iterations until the verdict or until `budget` has passed on `clock` (read every few
    /// iterations; `clock` gives the time since any fixed origin): a slice of a given length
    /// whatever the exponent, so a caller needs no estimate of an iteration's cost.
    pub fn advance_for(
        &mut self,
        budget: Duration,
        mut clock: impl FnMut() -> Duration,
    ) -> Option<bool> {
        let start = clock();
        loop {
            if let Some(verdict) = self.advance(ITERATIONS_PER_CLOCK_READ) {
                return Some(verdict);
            }
            if clock().saturating_sub(start) >= budget {
                return None;
            }
        }
    }

    /// Whether this test squares by FFT.
    pub fn uses_fft(&self) -> bool {
        #[cfg(feature = "fft")]
        return self.fft.is_some();
        #[cfg(not(feature = "fft"))]
        false
    }

    fn square_minus_two(&mut self) -> BigUint {
        #[cfg(feature = "fft")]
        let square = match self.fft.as_mut().and_then(|fft| fft.square(&self.s)) {
            Some(square) => square,
            None => &self.s * &self.s,
        };
        #[cfg(not(feature = "fft"))]
        let square = &self.s * &self.s;
        let mut r = (&square & &self.modulus) + (square >> self.p);
        while r >= self.modulus {
            r -= &self.modulus;
        }
        // s² - 2 mod M_p, staying non-negative.
        if r < BigUint::from(2u32) {
            r += &self.modulus;
        }
        r - 2u32
    }
}

/// Runs the whole test: whether `2^p - 1` is prime.
pub fn is_mersenne_prime(p: u32) -> bool {
    LucasLehmer::new(p).advance(u32::MAX).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_runs_for_its_budget_on_the_given_clock_and_slices_add_up() {
        // A clock that moves 1 ms per read: a 10 ms slice reads it 11 times (start, then after
        // every ITERATIONS_PER_CLOCK_READ iterations until 10 ms are reached).
        let mut t = Duration::ZERO;
        let mut clock = || {
            t += Duration::from_millis(1);
            t
        };
        let mut test = LucasLehmer::new(4423);
        assert_eq!(
            test.advance_for(Duration::from_millis(10), &mut clock),
            None
        );
        assert_eq!(test.progress().0, 10 * ITERATIONS_PER_CLOCK_READ);
        // Slice after slice, the verdict is the whole test's.
        let verdict = loop {
            if let Some(v) = test.advance_for(Duration::from_millis(10), &mut clock) {
                break v;
            }
        };
        assert!(verdict);
        // A zero budget still makes progress; a test done in one slice says so at once.
        let mut small = LucasLehmer::new(607);
        assert_eq!(small.advance_for(Duration::ZERO, || Duration::ZERO), None);
        assert_eq!(small.progress().0, ITERATIONS_PER_CLOCK_READ);
        assert_eq!(
            LucasLehmer::new(521).advance_for(Duration::from_secs(1), || Duration::ZERO),
            Some(true)
        );
    }

    #[test]
    fn finds_every_mersenne_prime_exponent_up_to_4423_and_nothing_else() {
        let found: Vec<u32> = (2..=4423)
            .filter(|&p| is_prime(p) && is_mersenne_prime(p))
            .collect();
        let expected: Vec<u32> = KNOWN_MERSENNE_EXPONENTS
            .iter()
            .copied()
            .filter(|&p| p <= 4423)
            .collect();
        assert_eq!(found, expected);
    }

    #[test]
    fn refuses_composites_and_composite_exponents() {
        // 2^11 - 1 = 2047 = 23 * 89, the smallest prime exponent with a composite Mersenne number.
        assert!(!is_mersenne_prime(11));
        assert!(!is_mersenne_prime(4421));
        assert!(!is_mersenne_prime(4));
        assert!(!is_mersenne_prime(0));
        assert!(!is_mersenne_prime(1));
    }

    #[test]
    fn sliced_runs_agree_with_whole_runs() {
        let mut test = LucasLehmer::new(521);
        let mut slices = 0;
        let verdict = loop {
            slices += 1;
            if let Some(v) = test.advance(50) {
                break v;
            }
        };
        assert!(verdict);
        assert_eq!(slices, 11, "519 iterations in slices of 50");
        assert_eq!(test.progress(), (519, 519));
    }

    #[cfg(feature = "fft")]
    #[test]
    fn fft_squaring_finds_the_same_primes_and_the_same_residues() {
        // Every prime exponent up to 4423, squared by FFT whatever its size: the same verdicts.
        let found: Vec<u32> = (3..=4423)
            .filter(|&p| is_prime(p))
            .filter(|&p| {
                let mut test = LucasLehmer::with_fft(p, true);
                assert!(test.uses_fft());
                test.advance(u32::MAX).unwrap_or(false)
            })
            .collect();
        let expected: Vec<u32> = KNOWN_MERSENNE_EXPONENTS
            .iter()
            .copied()
            .filter(|&p| (3..=4423).contains(&p))
            .collect();
        assert_eq!(found, expected);
        // Step by step, the residues of composite and prime exponents alike are the exact ones.
        for p in [1009, 9941, 11_213, 21_701] {
            let (mut fft, mut exact) = (
                LucasLehmer::with_fft(p, true),
                LucasLehmer::with_fft(p, false),
            );
            assert!(!exact.uses_fft());
            for _ in 0..10 {
                fft.advance(25);
                exact.advance(25);
                assert_eq!(fft.s, exact.s, "p = {p} after {} iterations", fft.done);
            }
        }
        // The default: FFT from FFT_FROM on.
        assert!(LucasLehmer::new(next_prime(FFT_FROM)).uses_fft());
        assert!(!LucasLehmer::new(607).uses_fft());
    }

    #[test]
    fn next_prime_walks_the_exponents() {
        assert_eq!(next_prime(0), 2);
        assert_eq!(next_prime(2), 3);
        assert_eq!(next_prime(13), 17);
        assert_eq!(next_prime(4423), 4441);
    }
}
