//! `Amounts`: what a window sums — cost as exact integer ticks, tokens by kind, and an event
//! count. All arithmetic is checked; nothing here rounds, wraps or uses floating point.

use rust_decimal::Decimal;

use super::WindowError;

/// Decimal places of a cost tick: one tick is 10^-12 of the billing currency's unit, the
/// scale the pricing crate rounds billing costs to.
pub const COST_SCALE: u32 = 12;

/// Number of token kinds, see [`TokenKind`].
pub const TOKEN_KINDS: usize = 6;

/// The index of each token count in [`Amounts::tokens`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    Input = 0,
    Output = 1,
    CachedInput = 2,
    /// Cache writes with the 5-minute lifetime.
    CacheWrite5m = 3,
    Reasoning = 4,
    /// Cache writes with the 1-hour lifetime.
    CacheWrite1h = 5,
}

impl TokenKind {
    /// Every kind, in index order.
    pub const ALL: [TokenKind; TOKEN_KINDS] = [
        TokenKind::Input,
        TokenKind::Output,
        TokenKind::CachedInput,
        TokenKind::CacheWrite5m,
        TokenKind::Reasoning,
        TokenKind::CacheWrite1h,
    ];
}

/// Cost, tokens and events of one event or of a sum of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Amounts {
    /// Cost in the billing currency, in units of 10^-12 (see [`COST_SCALE`]). Signed so that
    /// credits and corrections can be summed too.
    pub cost_ticks: i128,
    /// Token counts, indexed by [`TokenKind`]: input, output, cached input, cache write
    /// (5 min), reasoning, cache write (1 h).
    pub tokens: [u64; TOKEN_KINDS],
    /// Number of events summed.
    pub events: u64,
}

impl Amounts {
    /// Nothing.
    pub const ZERO: Amounts = Amounts {
        cost_ticks: 0,
        tokens: [0; TOKEN_KINDS],
        events: 0,
    };

    /// One event's amounts from its billing cost. Fails if the cost has more than
    /// [`COST_SCALE`] significant decimal places or does not fit in ticks.
    pub fn from_decimal(
        cost: Decimal,
        tokens: [u64; TOKEN_KINDS],
        events: u64,
    ) -> Result<Amounts, WindowError> {
        Ok(Amounts {
            cost_ticks: cost_ticks(cost)?,
            tokens,
            events,
        })
    }

    /// The cost as a decimal with scale [`COST_SCALE`]. Fails only when the sum has grown
    /// past the 96-bit mantissa of `Decimal` (about 7.9 * 10^16 currency units).
    pub fn cost_decimal(&self) -> Result<Decimal, WindowError> {
        Decimal::try_from_i128_with_scale(self.cost_ticks, COST_SCALE)
            .map_err(|_| WindowError::Overflow)
    }

    /// The count of one token kind.
    pub fn token(&self, kind: TokenKind) -> u64 {
        self.tokens[kind as usize]
    }

    /// `self + other`, or `None` if any field would overflow.
    pub fn checked_add(&self, other: &Amounts) -> Option<Amounts> {
        let mut tokens = [0u64; TOKEN_KINDS];
        for (out, (a, b)) in tokens
            .iter_mut()
            .zip(self.tokens.iter().zip(other.tokens.iter()))
        {
            *out = a.checked_add(*b)?;
        }
        Some(Amounts {
            cost_ticks: self.cost_ticks.checked_add(other.cost_ticks)?,
            tokens,
            events: self.events.checked_add(other.events)?,
        })
    }

    /// `self − other` (taking a counted amount back out, for a correction): the cost exactly,
    /// tokens and events floored at zero (a bin restored at minute granularity may hold less
    /// than the event's own time did). `None` if the cost would overflow.
    pub fn minus(&self, other: &Amounts) -> Option<Amounts> {
        let mut tokens = [0u64; TOKEN_KINDS];
        for (out, (a, b)) in tokens
            .iter_mut()
            .zip(self.tokens.iter().zip(other.tokens.iter()))
        {
            *out = a.saturating_sub(*b);
        }
        Some(Amounts {
            cost_ticks: self.cost_ticks.checked_sub(other.cost_ticks)?,
            tokens,
            events: self.events.saturating_sub(other.events),
        })
    }

    /// True if every field is zero.
    pub fn is_zero(&self) -> bool {
        *self == Amounts::ZERO
    }
}

/// `cost` as ticks, exactly. Trailing zeros beyond [`COST_SCALE`] places are fine; any other
/// digit there is refused rather than rounded, because rounding is the pricing crate's call.
pub fn cost_ticks(cost: Decimal) -> Result<i128, WindowError> {
    // Integer arithmetic on the mantissa, not `normalize`: normalizing strips trailing zeros
    // one division at a time, and it was 5 % of the aggregator's CPU (one call per event).
    let scale = cost.scale();
    let mantissa = cost.mantissa();
    if scale <= COST_SCALE {
        return 10i128
            .checked_pow(COST_SCALE - scale)
            .and_then(|factor| mantissa.checked_mul(factor))
            .ok_or(WindowError::Overflow);
    }
    // A Decimal's scale is at most 28, so the divisor fits an i128.
    let excess = 10i128.pow(scale - COST_SCALE);
    if mantissa % excess != 0 {
        return Err(WindowError::InexactCost {
            scale: cost.normalize().scale(),
        });
    }
    Ok(mantissa / excess)
}

/// Sums any number of [`Amounts`] exactly, whatever their order: the cost is accumulated in
/// two halves, so a sum that fits is never refused because a partial sum did not (with
/// signed costs, `MAX/2 + MAX/2 + MIN/2` in that order would).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ExactSum {
    cost_hi: i128,
    cost_lo: u128,
    tokens: [u64; TOKEN_KINDS],
    events: u64,
}

impl ExactSum {
    pub fn add(&mut self, a: &Amounts) -> Result<(), WindowError> {
        let overflow = || WindowError::Overflow;
        self.cost_hi = self
            .cost_hi
            .checked_add(a.cost_ticks >> 64)
            .ok_or_else(overflow)?;
        self.cost_lo = self
            .cost_lo
            .checked_add(u128::from(a.cost_ticks as u64))
            .ok_or_else(overflow)?;
        for (t, x) in self.tokens.iter_mut().zip(a.tokens) {
            *t = t.checked_add(x).ok_or_else(overflow)?;
        }
        self.events = self.events.checked_add(a.events).ok_or_else(overflow)?;
        Ok(())
    }

    pub fn finish(self) -> Result<Amounts, WindowError> {
        // cost = hi * 2^64 + lo; carry lo's excess into hi, then hi must fit 64 signed bits.
        let hi = i128::try_from(self.cost_lo >> 64)
            .ok()
            .and_then(|carry| self.cost_hi.checked_add(carry))
            .and_then(|hi| i64::try_from(hi).ok())
            .ok_or(WindowError::Overflow)?;
        let lo = self.cost_lo as u64;
        Ok(Amounts {
            cost_ticks: (i128::from(hi) << 64) | i128::from(lo),
            tokens: self.tokens,
            events: self.events,
        })
    }
}

/// [`Amounts`] as stored in a bin: the i128 split into two words so the record keeps 8-byte
/// alignment (an i128 field would pad every bin to a multiple of 16 bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PackedAmounts {
    cost_lo: u64,
    cost_hi: i64,
    tokens: [u64; TOKEN_KINDS],
    events: u64,
}

impl From<Amounts> for PackedAmounts {
    fn from(a: Amounts) -> Self {
        PackedAmounts {
            // Two's-complement split; `unpack` reassembles the same bits.
            cost_lo: a.cost_ticks as u64,
            cost_hi: (a.cost_ticks >> 64) as i64,
            tokens: a.tokens,
            events: a.events,
        }
    }
}

impl From<PackedAmounts> for Amounts {
    fn from(p: PackedAmounts) -> Self {
        Amounts {
            cost_ticks: (i128::from(p.cost_hi) << 64) | i128::from(p.cost_lo),
            tokens: p.tokens,
            events: p.events,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn decimal_costs_convert_exactly_both_ways() {
        let a = Amounts::from_decimal(dec!(1.000000000001), [1, 2, 3, 4, 5, 6], 1).unwrap();
        assert_eq!(a.cost_ticks, 1_000_000_000_001);
        assert_eq!(a.cost_decimal().unwrap(), dec!(1.000000000001));
        assert_eq!(a.token(TokenKind::CacheWrite1h), 6);
        assert_eq!(cost_ticks(dec!(-0.5)).unwrap(), -500_000_000_000);
        // Trailing zeros past 12 places are not precision.
        assert_eq!(
            cost_ticks(dec!(0.1000000000000000)).unwrap(),
            100_000_000_000
        );
        assert_eq!(
            cost_ticks(dec!(0.0000000000001)),
            Err(WindowError::InexactCost { scale: 13 })
        );
        assert_eq!(cost_ticks(Decimal::MAX), Err(WindowError::Overflow));
    }

    proptest::proptest! {
        /// The mantissa arithmetic agrees with normalizing first (the former implementation,
        /// slow but plainly right) for every mantissa and scale a Decimal can hold.
        #[test]
        fn ticks_agree_with_normalizing_first(
            lo in proptest::prelude::any::<u32>(),
            mid in proptest::prelude::any::<u32>(),
            hi in proptest::prelude::any::<u32>(),
            negative in proptest::prelude::any::<bool>(),
            scale in 0u32..=28,
            zeros in 0usize..=3,
        ) {
            // Trailing zeros are the interesting case, so some mantissas are made of them.
            let mut cost = Decimal::from_parts(lo, mid, hi, negative, scale);
            if zeros > 0 {
                let m = cost.mantissa() / 10i128.pow(zeros as u32 * 9) * 10i128.pow(zeros as u32 * 9);
                cost = Decimal::from_i128_with_scale(m, scale);
            }
            let normal = cost.normalize();
            let expected = if normal.scale() > COST_SCALE {
                Err(WindowError::InexactCost { scale: normal.scale() })
            } else {
                10i128
                    .checked_pow(COST_SCALE - normal.scale())
                    .and_then(|f| normal.mantissa().checked_mul(f))
                    .ok_or(WindowError::Overflow)
            };
            proptest::prop_assert_eq!(cost_ticks(cost), expected);
        }
    }

    #[test]
    fn packing_round_trips_extremes() {
        for ticks in [0, 1, -1, i128::MAX, i128::MIN, 1 << 64, -(1 << 64) - 7] {
            let a = Amounts {
                cost_ticks: ticks,
                tokens: [u64::MAX, 0, 1, 2, 3, 4],
                events: 9,
            };
            assert_eq!(Amounts::from(PackedAmounts::from(a)), a);
        }
    }

    #[test]
    fn exact_sums_do_not_depend_on_order() {
        let c = |cost_ticks| Amounts {
            cost_ticks,
            tokens: [0; TOKEN_KINDS],
            events: 1,
        };
        let half = i128::MAX / 2 + 1;
        let mut s = ExactSum::default();
        for a in [c(half), c(half), c(-half), c(-1)] {
            s.add(&a).unwrap();
        }
        assert_eq!(s.finish().unwrap().cost_ticks, half - 1);
        assert_eq!(s.finish().unwrap().events, 4);
        let mut s = ExactSum::default();
        for a in [c(i128::MIN), c(-1), c(1)] {
            s.add(&a).unwrap();
        }
        assert_eq!(s.finish().unwrap().cost_ticks, i128::MIN);
        s.add(&c(-1)).unwrap();
        assert_eq!(s.finish(), Err(WindowError::Overflow));
        let mut s = ExactSum::default();
        s.add(&c(i128::MAX)).unwrap();
        s.add(&c(i128::MAX)).unwrap();
        s.add(&c(i128::MIN)).unwrap();
        assert_eq!(s.finish().unwrap().cost_ticks, i128::MAX - 1);
    }

    #[test]
    fn checked_add_refuses_every_overflowing_field() {
        let one = Amounts {
            cost_ticks: 1,
            tokens: [1; TOKEN_KINDS],
            events: 1,
        };
        let mut max = Amounts::ZERO;
        max.cost_ticks = i128::MAX;
        assert_eq!(max.checked_add(&one), None);
        for i in 0..TOKEN_KINDS {
            let mut m = Amounts::ZERO;
            m.tokens[i] = u64::MAX;
            assert_eq!(m.checked_add(&one), None);
        }
        let mut m = Amounts::ZERO;
        m.events = u64::MAX;
        assert_eq!(m.checked_add(&one), None);
        assert_eq!(one.checked_add(&one).map(|s| s.events), Some(2));
    }
}
