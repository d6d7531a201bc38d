//! `LabelCap`: which names (tenants, or one tenant's departments) get a Prometheus label of
//! their own, so that the number of series stays bounded whatever the stream holds.
//!
//! # The rule
//! Each name has a running weight: the USD cost (in ticks) counted under it since the process
//! started. At most `max` names are *named*; every other name is reported as [`OTHER`].
//! After each stored epoch has added its weights, [`LabelCap::settle`] goes through the names
//! the epoch touched that are not named, heaviest first (ties: the smaller name first):
//! - while fewer than `max` names are named, the name takes a free slot;
//! - otherwise it takes the slot of the lightest named name (ties: the larger name) if its
//!   weight is strictly greater, and that name is *demoted*; else no later name can either,
//!   and settling stops.
//!
//! So the named set is the top `max` by cost, up to the order of epochs, and it only changes
//! when the order of running totals really changes: a tie never swaps, and a name close to
//! the boundary does not flap with each epoch. The outcome depends only on the sequence of
//! (name, weight) additions: deterministic. A demoted name's series are removed by the shell
//! and its later cost goes to [`OTHER`]; named again later, it starts new series at zero.
//!
//! Memory: one running total per name ever seen by this process (tens of bytes each).

use std::collections::{BTreeSet, HashMap};

/// The label value of everything beyond the cap.
pub const OTHER: &str = "other";

/// The top-`max` rule (module docs).
#[derive(Debug, Clone, Default)]
pub struct LabelCap {
    max: usize,
    totals: HashMap<String, i128>,
    named: BTreeSet<String>,
    /// Unnamed names whose weight changed since the last settle.
    touched: BTreeSet<String>,
}

impl LabelCap {
    /// At most `max` names of their own (0: everything is [`OTHER`]).
    pub fn new(max: usize) -> LabelCap {
        LabelCap {
            max,
            ..LabelCap::default()
        }
    }

    /// Adds `weight` (USD ticks, never negative in practice) to `name`'s running total.
    pub fn add(&mut self, name: &str, weight: i128) {
        match self.totals.get_mut(name) {
            Some(total) => *total = total.saturating_add(weight),
            None => {
                self.totals.insert(name.to_string(), weight);
            }
        }
        if !self.named.contains(name) && !self.touched.contains(name) {
            self.touched.insert(name.to_string());
        }
    }

    fn total(&self, name: &str) -> i128 {
        self.totals.get(name).copied().unwrap_or(0)
    }

    /// Applies the rule to the names added since the last call; returns the demoted names.
    pub fn settle(&mut self) -> Vec<String> {
        let mut candidates: Vec<String> = std::mem::take(&mut self.touched).into_iter().collect();
        // Heaviest first; the BTreeSet gave name order, which the stable sort keeps for ties.
        candidates.sort_by_key(|n| std::cmp::Reverse(self.total(n)));
        let mut demoted = Vec::new();
        for name in candidates {
            if self.named.len() < self.max {
                self.named.insert(name);
                continue;
            }
            // Lightest named; among equals the larger name (the one that sorts last).
            let Some(weakest) = self
                .named
                .iter()
                .min_by(|a, b| self.total(a).cmp(&self.total(b)).then_with(|| b.cmp(a)))
                .cloned()
            else {
                // `max` is 0: nothing is ever named.
                break;
            };
            if self.total(&name) <= self.total(&weakest) {
                break;
            }
            self.named.remove(&weakest);
            self.named.insert(name);
            demoted.push(weakest);
        }
        // A name demoted and named again in the same settle is not demoted.
        demoted.retain(|d| !self.named.contains(d));
        demoted
    }

    /// Whether `name` has a label of its own.
    pub fn is_named(&self, name: &str) -> bool {
        self.named.contains(name)
    }

    /// `name` if it is named, else [`OTHER`].
    pub fn label<'a>(&self, name: &'a str) -> &'a str {
        if self.is_named(name) {
            name
        } else {
            OTHER
        }
    }

    /// The named names, sorted.
    pub fn named(&self) -> impl Iterator<Item = &str> {
        self.named.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(cap: &mut LabelCap, adds: &[(&str, i128)]) -> Vec<String> {
        for (n, w) in adds {
            cap.add(n, *w);
        }
        cap.settle()
    }

    fn named(cap: &LabelCap) -> Vec<&str> {
        cap.named().collect()
    }

    #[test]
    fn free_slots_fill_heaviest_first_and_the_rest_is_other() {
        let mut cap = LabelCap::new(2);
        let demoted = epoch(&mut cap, &[("c", 5), ("a", 1), ("b", 5), ("d", 0)]);
        assert!(demoted.is_empty());
        // b and c tie at 5: the smaller name first, and c takes the second slot.
        assert_eq!(named(&cap), vec!["b", "c"]);
        assert_eq!(cap.label("a"), OTHER);
        assert_eq!(cap.label("b"), "b");
    }

    #[test]
    fn a_heavier_name_displaces_the_lightest_and_ties_never_swap() {
        let mut cap = LabelCap::new(2);
        epoch(&mut cap, &[("a", 10), ("b", 6)]);
        // c reaches b's total: a tie, no swap.
        assert!(epoch(&mut cap, &[("c", 6)]).is_empty());
        assert_eq!(named(&cap), vec!["a", "b"]);
        // c passes b: b is demoted.
        assert_eq!(epoch(&mut cap, &[("c", 1)]), vec!["b".to_string()]);
        assert_eq!(named(&cap), vec!["a", "c"]);
        // b's later cost still counts toward its running total, and it comes back only by
        // passing the lightest named.
        assert!(epoch(&mut cap, &[("b", 1)]).is_empty());
        assert_eq!(epoch(&mut cap, &[("b", 1)]), vec!["c".to_string()]);
        assert_eq!(named(&cap), vec!["a", "b"]);
    }

    #[test]
    fn several_candidates_in_one_epoch_take_slots_in_weight_order() {
        let mut cap = LabelCap::new(2);
        epoch(&mut cap, &[("a", 3), ("b", 2)]);
        let mut demoted = epoch(&mut cap, &[("x", 10), ("y", 4), ("z", 1)]);
        demoted.sort();
        assert_eq!(demoted, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(named(&cap), vec!["x", "y"]);
    }

    #[test]
    fn zero_cap_names_nothing() {
        let mut cap = LabelCap::new(0);
        assert!(epoch(&mut cap, &[("a", 3)]).is_empty());
        assert_eq!(cap.label("a"), OTHER);
    }

    #[test]
    fn the_outcome_depends_only_on_the_additions() {
        // The same additions in another order within each epoch: the same named set.
        let epochs: Vec<Vec<(&str, i128)>> = vec![
            vec![("t1", 5), ("t2", 7), ("t3", 1), ("t4", 7)],
            vec![("t3", 20), ("t5", 2)],
            vec![("t1", 9), ("t6", 9)],
        ];
        let run = |reverse: bool| {
            let mut cap = LabelCap::new(3);
            let mut log = Vec::new();
            for e in &epochs {
                let mut e = e.clone();
                if reverse {
                    e.reverse();
                }
                let mut d = epoch(&mut cap, &e);
                d.sort();
                log.push((
                    d,
                    named(&cap)
                        .into_iter()
                        .map(String::from)
                        .collect::<Vec<_>>(),
                ));
            }
            log
        };
        assert_eq!(run(false), run(true));
        assert_eq!(
            run(false).last().map(|(_, n)| n.clone()),
            Some(vec!["t1".to_string(), "t3".to_string(), "t6".to_string()])
        );
    }
}
