//! Window keys. The store is generic over its key type; this module provides the
//! tenant × department × model key and the machinery that lets an event look its key up from
//! borrowed `&str`s, so the hot path neither allocates nor clones strings. A key is built
//! (from interned `Arc<str>`s) only when it is first seen.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A key the store can hold: hashable, comparable, and owned by one tenant (for the live
/// view). A later budget-scope key (any of tenant, department, user, project, model, feature,
/// API key) implements this and [`KeyLookup`] for itself.
pub trait SpendKey: Hash + Eq + Clone {
    /// The tenant the key belongs to.
    fn tenant(&self) -> &str;
}

/// How a caller names a key: `query()` finds it in the map without building it, and
/// `to_key` builds it when it is new. Every owned key type looks itself up with `Query = Self`.
pub trait KeyLookup<K> {
    /// What the map is searched with; the key type must `Borrow` it and hash it the same way.
    type Query: ?Sized + Hash + Eq;
    fn query(&self) -> &Self::Query;
    /// The owned key, with its strings taken from `strings`.
    fn to_key(&self, strings: &mut Interner) -> K;
}

/// Shares each distinct string among all keys that use it; strings no key holds any more are
/// dropped by the store's eviction.
#[derive(Debug, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
}

impl Interner {
    /// The shared copy of `s`, allocated on first use.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(Arc::clone(&shared));
        shared
    }

    /// Drops strings only the interner still holds.
    pub(crate) fn purge_unused(&mut self) {
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        if self.strings.capacity() > 4 * self.strings.len().max(16) {
            self.strings.shrink_to_fit();
        }
    }

    /// Number of distinct strings held.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// True if no string is held.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    /// Approximate heap bytes: the set's slots plus each string's `Arc` allocation
    /// (two counters and the bytes).
    pub fn heap_bytes(&self) -> usize {
        let slots = self.strings.capacity() * (std::mem::size_of::<Arc<str>>() + 1);
        let strings: usize = self.strings.iter().map(|s| 16 + s.len()).sum();
        slots + strings
    }
}

/// The parts of a tenant × department × model key, owned or borrowed.
pub trait TenantDepartmentModel {
    /// (tenant, department, model). The department is empty when the event had none.
    fn parts(&self) -> (&str, &str, &str);
}

impl Hash for dyn TenantDepartmentModel + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (t, d, m) = self.parts();
        // `str`'s Hash ends each string with a terminator, so ("ab", "c") != ("a", "bc").
        t.hash(state);
        d.hash(state);
        m.hash(state);
    }
}

impl PartialEq for dyn TenantDepartmentModel + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn TenantDepartmentModel + '_ {}

/// The rolling-window key: tenant × department × model, sharing its strings.
#[derive(Debug, Clone)]
pub struct WindowKey {
    tenant: Arc<str>,
    department: Arc<str>,
    model: Arc<str>,
}

impl WindowKey {
    /// A key with its own (not interned) strings; the store interns keys it builds itself.
    pub fn new(tenant: &str, department: &str, model: &str) -> WindowKey {
        WindowKey {
            tenant: tenant.into(),
            department: department.into(),
            model: model.into(),
        }
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn department(&self) -> &str {
        &self.department
    }

    pub fn model(&self) -> &str {
        &self.model
    }
}

impl TenantDepartmentModel for WindowKey {
    fn parts(&self) -> (&str, &str, &str) {
        (&self.tenant, &self.department, &self.model)
    }
}

// Must hash exactly like `dyn TenantDepartmentModel`, which `Borrow` requires.
impl Hash for WindowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self as &dyn TenantDepartmentModel).hash(state)
    }
}

impl PartialEq for WindowKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for WindowKey {}

impl PartialOrd for WindowKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for WindowKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

impl<'a> Borrow<dyn TenantDepartmentModel + 'a> for WindowKey {
    fn borrow(&self) -> &(dyn TenantDepartmentModel + 'a) {
        self
    }
}

impl SpendKey for WindowKey {
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl KeyLookup<WindowKey> for WindowKey {
    type Query = WindowKey;

    fn query(&self) -> &WindowKey {
        self
    }

    fn to_key(&self, strings: &mut Interner) -> WindowKey {
        WindowKeyRef::from(self).to_key(strings)
    }
}

/// A [`WindowKey`] named by borrowed strings: what the hot path passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowKeyRef<'a> {
    pub tenant: &'a str,
    pub department: &'a str,
    pub model: &'a str,
}

impl<'a> WindowKeyRef<'a> {
    pub fn new(tenant: &'a str, department: &'a str, model: &'a str) -> Self {
        WindowKeyRef {
            tenant,
            department,
            model,
        }
    }
}

impl<'a> From<&'a WindowKey> for WindowKeyRef<'a> {
    fn from(k: &'a WindowKey) -> Self {
        WindowKeyRef::new(&k.tenant, &k.department, &k.model)
    }
}

impl TenantDepartmentModel for WindowKeyRef<'_> {
    fn parts(&self) -> (&str, &str, &str) {
        (self.tenant, self.department, self.model)
    }
}

impl<'a> KeyLookup<WindowKey> for WindowKeyRef<'a> {
    type Query = dyn TenantDepartmentModel + 'a;

    fn query(&self) -> &(dyn TenantDepartmentModel + 'a) {
        self
    }

    fn to_key(&self, strings: &mut Interner) -> WindowKey {
        WindowKey {
            tenant: strings.intern(self.tenant),
            department: strings.intern(self.department),
            model: strings.intern(self.model),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn borrowed_parts_find_owned_keys_and_strings_are_shared() {
        let mut strings = Interner::default();
        let a = WindowKeyRef::new("t1", "eng", "gpt").to_key(&mut strings);
        let b = WindowKeyRef::new("t1", "ops", "gpt").to_key(&mut strings);
        assert!(Arc::ptr_eq(&a.tenant, &b.tenant));
        assert_eq!(strings.len(), 4);
        let mut map = HashMap::new();
        map.insert(a.clone(), 1);
        map.insert(b, 2);
        assert_eq!(
            map.get(WindowKeyRef::new("t1", "eng", "gpt").query()),
            Some(&1)
        );
        assert_eq!(map.get(WindowKeyRef::new("t1e", "ng", "gpt").query()), None);
        assert_eq!(map.get(&WindowKey::new("t1", "ops", "gpt")), Some(&2));
        drop(map);
        drop(a);
        strings.purge_unused();
        assert!(strings.is_empty());
    }
}
