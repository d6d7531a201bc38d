//! `SparseBins`: one series of (bin index, amounts), sorted by index, holding only non-empty
//! bins. Rolling windows and calendar periods both use it, so an idle key holds no bins.

use super::amounts::{Amounts, ExactSum, PackedAmounts};
use super::WindowError;

/// One non-empty bin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bin {
    pub index: i64,
    pub amounts: PackedAmounts,
}

/// Bins sorted by strictly increasing index.
#[derive(Debug, Default)]
pub(crate) struct SparseBins {
    bins: Vec<Bin>,
}

/// A checked addition, computed before anything is written so that a failure elsewhere in
/// the same event leaves every series as it was.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pending {
    at: Result<usize, usize>,
    index: i64,
    sum: PackedAmounts,
}

impl SparseBins {
    /// Where `index` is, or would be inserted. Events arrive mostly in order, so the last bin
    /// is checked before searching.
    fn position(&self, index: i64) -> Result<usize, usize> {
        match self.bins.last() {
            None => Err(0),
            Some(last) if last.index == index => Ok(self.bins.len() - 1),
            Some(last) if last.index < index => Err(self.bins.len()),
            Some(_) => self.bins.binary_search_by_key(&index, |b| b.index),
        }
    }

    /// The bin `index` plus `add`, not yet written.
    pub fn prepare(&self, index: i64, add: &Amounts) -> Result<Pending, WindowError> {
        let at = self.position(index);
        let sum = match at {
            Ok(i) => Amounts::from(self.bins[i].amounts)
                .checked_add(add)
                .ok_or(WindowError::Overflow)?,
            Err(_) => *add,
        };
        Ok(Pending {
            at,
            index,
            sum: sum.into(),
        })
    }

    /// The bin `index` minus `sub` (see [`Amounts::minus`]), not yet written; `None` when
    /// the bin is absent (nothing there to take back).
    pub fn prepare_sub(&self, index: i64, sub: &Amounts) -> Result<Option<Pending>, WindowError> {
        let Ok(i) = self.position(index) else {
            return Ok(None);
        };
        let sum = Amounts::from(self.bins[i].amounts)
            .minus(sub)
            .ok_or(WindowError::Overflow)?;
        Ok(Some(Pending {
            at: Ok(i),
            index,
            sum: sum.into(),
        }))
    }

    /// Writes a [`Pending`] prepared against the current contents.
    pub fn commit(&mut self, p: Pending) {
        match p.at {
            Ok(i) => self.bins[i].amounts = p.sum,
            Err(i) => {
                // Grow by half rather than doubling: most keys hold a handful of bins and
                // the default first allocation of four would dominate their memory.
                if self.bins.len() == self.bins.capacity() {
                    self.bins.reserve_exact((self.bins.len() / 2).max(1));
                }
                self.bins.insert(
                    i,
                    Bin {
                        index: p.index,
                        amounts: p.sum,
                    },
                );
            }
        }
    }

    /// The amounts of bin `index` (zero if absent).
    pub fn get(&self, index: i64) -> Amounts {
        match self.position(index) {
            Ok(i) => self.bins[i].amounts.into(),
            Err(_) => Amounts::ZERO,
        }
    }

    /// Sum of the bins with `after < index <= through`; fails only if that sum does not fit.
    pub fn sum(&self, after: i64, through: i64) -> Result<Amounts, WindowError> {
        let start = self.bins.partition_point(|b| b.index <= after);
        let mut sum = ExactSum::default();
        for b in self.bins[start..].iter().take_while(|b| b.index <= through) {
            sum.add(&b.amounts.into())?;
        }
        sum.finish()
    }

    /// Drops the bins with `index <= through` and returns how many; releases spare capacity
    /// so that a series that emptied costs nothing.
    pub fn evict_through(&mut self, through: i64) -> usize {
        let n = self.bins.partition_point(|b| b.index <= through);
        if n > 0 {
            self.bins.drain(..n);
        }
        if self.bins.is_empty() {
            self.bins = Vec::new();
        } else if self.bins.capacity() > 2 * self.bins.len() {
            self.bins.shrink_to_fit();
        }
        n
    }

    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.bins.len()
    }

    /// The highest index held.
    pub fn last_index(&self) -> Option<i64> {
        self.bins.last().map(|b| b.index)
    }

    /// Bytes of the bins' allocation.
    pub fn heap_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<Bin>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amt(cost: i128) -> Amounts {
        Amounts {
            cost_ticks: cost,
            tokens: [1, 0, 0, 0, 0, 0],
            events: 1,
        }
    }

    fn add(s: &mut SparseBins, index: i64, cost: i128) {
        let p = s.prepare(index, &amt(cost)).unwrap();
        s.commit(p);
    }

    #[test]
    fn out_of_order_inserts_stay_sorted_and_sum_by_range() {
        let mut s = SparseBins::default();
        for (i, c) in [(5, 1), (2, 10), (9, 100), (5, 1000), (-3, 10_000)] {
            add(&mut s, i, c);
        }
        assert_eq!(s.len(), 4);
        assert_eq!(s.get(5).cost_ticks, 1001);
        assert_eq!(s.get(5).events, 2);
        assert_eq!(s.get(6), Amounts::ZERO);
        assert_eq!(s.sum(2, 9).unwrap().cost_ticks, 1101);
        assert_eq!(s.sum(-4, 2).unwrap().cost_ticks, 10_010);
        assert_eq!(s.sum(9, 100).unwrap(), Amounts::ZERO);
        assert_eq!(s.evict_through(5), 3);
        assert_eq!(s.last_index(), Some(9));
        assert_eq!(s.evict_through(9), 1);
        assert!(s.is_empty());
        assert_eq!(s.heap_bytes(), 0);
    }

    #[test]
    fn an_overflowing_prepare_changes_nothing() {
        let mut s = SparseBins::default();
        add(&mut s, 1, i128::MAX);
        assert_eq!(s.prepare(1, &amt(1)).err(), Some(WindowError::Overflow));
        assert_eq!(s.get(1).cost_ticks, i128::MAX);
        add(&mut s, 2, i128::MAX);
        assert_eq!(s.sum(0, 2).err(), Some(WindowError::Overflow));
    }
}
