//! Squaring by fast Fourier transform, the way GIMPS squares: the number is cut into digits of a
//! few bits, the digits' convolution with themselves (the square, before carries) is computed
//! with floating-point FFTs, rounded back to integers, and the carries are propagated.
//!
//! A coefficient of the convolution is a sum of up to `n` products of two digits, so it needs
//! `2 * bits + log2(n)` bits; digits are made small enough that this stays well inside an `f64`'s
//! 53-bit mantissa, and every coefficient's distance from the nearest integer is checked. When
//! the rounding is ever in doubt, [`FftSquarer::square`] says so and the caller squares exactly.
//!
//! This is the textbook zero-padded convolution: the product is `2p` bits and the reduction
//! modulo `2^p - 1` is done afterwards on the integer. (GIMPS's irrational-base weighted
//! transform folds the reduction into a transform half as long; not needed at a tab's exponents.)

use std::f64::consts::PI;
use std::sync::Arc;

use num_bigint::BigUint;
use rustfft::algorithm::Radix4;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftDirection};

/// Bound on the bits of a typical convolution coefficient (`2 * (bits - 1)` for a product of two
/// balanced digits, plus half of `log2(digits)` for a sum of that many of random sign): 53 - 45
/// = 8 bits of the mantissa are left for the transforms' rounding error. The same rule as
/// GIMPS's FFT length tables, more cautious (they allow ~1 bit more).
const COEFFICIENT_BITS: f64 = 45.0;

/// Most bits per digit.
const MAX_DIGIT_BITS: u32 = 24;

/// Largest distance from an integer a coefficient may show before the result is distrusted.
/// Correct runs stay far below (around 0.01 at the exponents tabs test).
const MAX_ROUNDING_ERROR: f64 = 0.25;

/// Squares numbers of up to a fixed size; holds its transforms and buffers between squarings.
///
/// The digits are balanced (from `-2^(bits-1)` to `2^(bits-1)`), which keeps the coefficients
/// small, and the real sequence of `len` digits is transformed as a complex one of `len / 2`
/// (even digits as real parts, odd ones as imaginary), which halves the work.
#[derive(Clone)]
pub(crate) struct FftSquarer {
    /// Bits per digit.
    bits: u32,
    /// Digits in an operand, one more than its bits need (balancing can carry out of the top).
    digits: usize,
    forward: Arc<dyn Fft<f64>>,
    inverse: Arc<dyn Fft<f64>>,
    /// `e^(-2 pi i k / len)` for `k` in `0..len / 2`, `len` the real sequence's length.
    twiddles: Vec<Complex<f64>>,
    buffer: Vec<Complex<f64>>,
    spectrum: Vec<Complex<f64>>,
    scratch: Vec<Complex<f64>>,
}

impl std::fmt::Debug for FftSquarer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FftSquarer")
            .field("bits", &self.bits)
            .field("digits", &self.digits)
            .field("transform_len", &self.buffer.len())
            .finish()
    }
}

impl FftSquarer {
    /// A squarer for operands below `2^max_bits`.
    pub(crate) fn new(max_bits: u32) -> Self {
        let max_bits = max_bits.max(1);
        let bits = (1..=MAX_DIGIT_BITS)
            .rev()
            .find(|&bits| {
                let digits = digits_for(max_bits, bits) as f64;
                2.0 * f64::from(bits - 1) + 0.5 * digits.log2() <= COEFFICIENT_BITS
            })
            .unwrap_or(1);
        Self::with_digit_bits(max_bits, bits)
    }

    /// A squarer for operands below `2^max_bits` in digits of `bits` bits (1 to 24).
    fn with_digit_bits(max_bits: u32, bits: u32) -> Self {
        let digits = digits_for(max_bits, bits);
        // The square has 2 * digits digits; the complex transforms are half as long.
        let half = (2 * digits).next_power_of_two().max(2) / 2;
        let forward: Arc<dyn Fft<f64>> = Arc::new(Radix4::new(half, FftDirection::Forward));
        let inverse: Arc<dyn Fft<f64>> = Arc::new(Radix4::new(half, FftDirection::Inverse));
        let scratch_len = forward
            .get_inplace_scratch_len()
            .max(inverse.get_inplace_scratch_len());
        let twiddles = (0..half)
            .map(|k| Complex::from_polar(1.0, -PI * k as f64 / half as f64))
            .collect();
        Self {
            bits,
            digits,
            forward,
            inverse,
            twiddles,
            buffer: vec![Complex::default(); half],
            spectrum: vec![Complex::default(); half],
            scratch: vec![Complex::default(); scratch_len],
        }
    }

    /// `x²`, or `None` when `x` is too large for this squarer or the transform's rounding was in
    /// doubt (then square exactly).
    pub(crate) fn square(&mut self, x: &BigUint) -> Option<BigUint> {
        let bits = self.bits as usize;
        if x.bits() > ((self.digits - 1) * bits) as u64 {
            return None;
        }
        let words = x.to_u32_digits();
        let half_base = 1i64 << (bits - 1);
        // Balanced digits, two per complex value: a digit of `half_base` or more borrows one
        // from the next.
        let mut reader = BitReader::new(&words, self.bits);
        let mut borrow = 0i64;
        let mut next_digit = || {
            let d = i64::from(reader.next()) + borrow;
            borrow = i64::from(d >= half_base);
            (d - (borrow << bits)) as f64
        };
        let used = self.digits.div_ceil(2);
        for (k, slot) in self.buffer.iter_mut().enumerate() {
            *slot = if k < used {
                let even = next_digit();
                Complex::new(even, next_digit())
            } else {
                Complex::default()
            };
        }
        self.forward
            .process_with_scratch(&mut self.buffer, &mut self.scratch);
        self.square_spectrum();
        self.inverse
            .process_with_scratch(&mut self.spectrum, &mut self.scratch);

        // The inverse transform leaves every value scaled by its length.
        let scale = 1.0 / self.spectrum.len() as f64;
        let mask = (1i64 << bits) - 1;
        let mut writer = BitWriter::new(2 * self.digits * bits, self.bits);
        let mut carry = 0i64;
        let (mut worst, mut largest) = (0.0f64, 0.0f64);
        for z in &self.spectrum[..self.digits] {
            for value in [z.re * scale, z.im * scale] {
                let (rounded, integer) = round(value);
                worst = worst.max((value - rounded).abs());
                largest = largest.max(value.abs());
                // Two's complement: the mask and the arithmetic shift split a negative carry too.
                carry += integer;
                writer.push((carry & mask) as u32);
                carry >>= bits;
            }
        }
        // The square of a number below 2^((digits - 1) * bits) leaves no carry past its digits.
        if worst > MAX_ROUNDING_ERROR || largest >= ROUNDING_RANGE || carry != 0 {
            return None;
        }
        Some(BigUint::new(writer.finish()))
    }

    /// From the transform of the packed digits in `buffer` to that of the packed square in
    /// `spectrum`: split into the transforms of the even and the odd digits, combine them into
    /// the real sequence's, square it, and pack the square the same way.
    fn square_spectrum(&mut self) {
        let half = self.buffer.len();
        let (buffer, spectrum) = (&self.buffer, &mut self.spectrum);
        for (k, (out, w)) in spectrum.iter_mut().zip(&self.twiddles).enumerate() {
            let z = buffer[k];
            let mirror = buffer[if k == 0 { 0 } else { half - k }].conj();
            // even = (z + mirror) / 2, odd = (z - mirror) / 2i
            let even = (z + mirror).scale(0.5);
            let d = (z - mirror).scale(0.5);
            let odd = Complex::new(d.im, -d.re);
            let turned = w * odd;
            let (low, high) = (even + turned, even - turned);
            let (low, high) = (low * low, high * high);
            let square_even = (low + high).scale(0.5);
            let square_odd = ((low - high) * w.conj()).scale(0.5);
            // square_even + i * square_odd
            *out = Complex::new(
                square_even.re - square_odd.im,
                square_even.im + square_odd.re,
            );
        }
    }
}

/// Digits of `bits` bits for an operand below `2^max_bits`: one more than its bits need, as
/// balancing can carry out of the top.
fn digits_for(max_bits: u32, bits: u32) -> usize {
    max_bits.div_ceil(bits) as usize + 1
}

/// `x` rounded to the nearest integer (ties to even), as a float and as an integer, for
/// `|x| < 2^51` ([`ROUNDING_RANGE`]): adding 1.5 * 2^52 leaves no bits below the units, and the
/// sum's low mantissa bits are then the integer. Plain additions, where `f64::round` is a library call on x86-64's
/// baseline and in wasm and a float-to-integer conversion checks its range.
fn round(x: f64) -> (f64, i64) {
    const SHIFTER: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
    let shifted = x + SHIFTER;
    (
        shifted - SHIFTER,
        // Out of range the integer is meaningless (and the caller rejects the result).
        (shifted.to_bits() as i64).wrapping_sub(SHIFTER.to_bits() as i64),
    )
}

/// Values [`round`] rounds correctly are below this.
const ROUNDING_RANGE: f64 = 2_251_799_813_685_248.0; // 2^51

/// Reads a little-endian number's bits in chunks of `bits` (at most 24); zeros past its end.
struct BitReader<'a> {
    words: std::slice::Iter<'a, u32>,
    bits: u32,
    held: u64,
    held_bits: u32,
}

impl<'a> BitReader<'a> {
    fn new(words: &'a [u32], bits: u32) -> Self {
        Self {
            words: words.iter(),
            bits,
            held: 0,
            held_bits: 0,
        }
    }

    fn next(&mut self) -> u32 {
        if self.held_bits < self.bits {
            let word = self.words.next().copied().unwrap_or(0);
            self.held |= u64::from(word) << self.held_bits;
            self.held_bits += 32;
        }
        let chunk = (self.held & ((1u64 << self.bits) - 1)) as u32;
        self.held >>= self.bits;
        self.held_bits -= self.bits;
        chunk
    }
}

/// Writes chunks of `bits` (at most 24) into a little-endian number of 32-bit words.
struct BitWriter {
    words: Vec<u32>,
    bits: u32,
    held: u64,
    held_bits: u32,
}

impl BitWriter {
    fn new(capacity_bits: usize, bits: u32) -> Self {
        Self {
            words: Vec::with_capacity(capacity_bits.div_ceil(32) + 1),
            bits,
            held: 0,
            held_bits: 0,
        }
    }

    fn push(&mut self, chunk: u32) {
        self.held |= u64::from(chunk) << self.held_bits;
        self.held_bits += self.bits;
        if self.held_bits >= 32 {
            self.words.push(self.held as u32);
            self.held >>= 32;
            self.held_bits -= 32;
        }
    }

    fn finish(mut self) -> Vec<u32> {
        if self.held_bits > 0 {
            self.words.push(self.held as u32);
        }
        self.words
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use num_traits::One;

    #[test]
    fn digits_stay_within_the_mantissa_budget_at_every_size() {
        for max_bits in [1, 7, 64, 521, 9941, 100_003, 1_000_003, 20_000_000] {
            let s = FftSquarer::new(max_bits);
            assert!((s.digits - 1) * s.bits as usize >= max_bits as usize);
            let typical = 2.0 * f64::from(s.bits - 1) + 0.5 * (s.digits as f64).log2();
            assert!(typical <= COEFFICIENT_BITS, "{max_bits}");
            assert!(2 * s.buffer.len() >= 2 * s.digits && s.buffer.len().is_power_of_two());
        }
        // p = 9941 in 474 digits of 21 bits (and one for the balancing's carry): the square's 950
        // in a real transform of 1024, a complex one of 512.
        let s = FftSquarer::new(9941);
        assert_eq!((s.bits, s.digits, s.buffer.len()), (21, 475, 512));
        assert!(FftSquarer::new(1_000_003).bits < 21);
    }

    #[test]
    fn squares_agree_with_exact_multiplication() {
        // All ones, a single high bit, and a mixed pattern, at sizes around digit and word edges.
        for max_bits in [1u32, 15, 16, 17, 31, 32, 33, 100, 607, 4423, 9941, 44_497] {
            let mut squarer = FftSquarer::new(max_bits);
            let ones = (BigUint::one() << max_bits) - BigUint::one();
            let top = BigUint::one() << (max_bits - 1);
            let mixed = BigUint::from_bytes_le(
                &(0..max_bits.div_ceil(8))
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect::<Vec<u8>>(),
            ) & &ones;
            for x in [BigUint::default(), BigUint::one(), ones, top, mixed] {
                assert_eq!(squarer.square(&x), Some(&x * &x), "{max_bits} bits: {x}");
            }
        }
    }

    #[test]
    fn distrusts_its_rounding_when_the_digits_are_too_large() {
        // 24-bit digits for a 200,000-bit number: coefficients of ~2^52, no bits left for the
        // transform's error. The squarer must say so rather than answer.
        let max_bits = 200_000;
        let mut squarer = FftSquarer::with_digit_bits(max_bits, 24);
        // Pseudo-random bits (xorshift), as a Lucas-Lehmer residue's are.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let x = BigUint::from_bytes_le(
            &(0..max_bits / 8)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 32) as u8
                })
                .collect::<Vec<u8>>(),
        );
        assert_eq!(squarer.square(&x), None);
        // With the digits it picks itself, the same number squares exactly.
        assert_eq!(FftSquarer::new(max_bits).square(&x), Some(&x * &x));
    }

    #[test]
    fn refuses_operands_too_large_for_it() {
        let mut squarer = FftSquarer::new(100);
        let digits_bits = squarer.digits * squarer.bits as usize;
        assert_eq!(squarer.square(&(BigUint::one() << digits_bits)), None);
    }

    #[test]
    fn bits_are_read_and_written_across_word_edges() {
        let words = [0xdead_beef, 0x0123_4567];
        let mut reader = BitReader::new(&words, 24);
        assert_eq!(
            [reader.next(), reader.next(), reader.next()],
            [0x00ad_beef, 0x0045_67de, 0x0123]
        );
        assert_eq!(reader.next(), 0, "zeros past the end");
        let mut writer = BitWriter::new(72, 24);
        for chunk in [0x00ad_beef, 0x0045_67de, 0x0123] {
            writer.push(chunk);
        }
        assert_eq!(writer.finish(), [0xdead_beef, 0x0123_4567, 0]);
        assert_eq!(round(2.5), (2.0, 2));
        assert_eq!(round(-2.5), (-2.0, -2));
        assert_eq!(round(-0.49), (0.0, 0));
        assert_eq!(round(-7.6), (-8.0, -8));
        assert_eq!(round(1e15 + 0.6), (1e15 + 1.0, 1_000_000_000_000_001));
    }
}
