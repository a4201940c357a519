//! JSON pointers (RFC 6901): `/players/0/score` names key `players` of the
//! root, element 0 of that array, key `score` of that map; `~1` stands for
//! `/` and `~0` for `~` inside a key; the empty pointer names the root.
//! [`Node::get`](crate::Node::get) and [`Node::set_path`](crate::Node::set_path)
//! take them; [`escape`] writes a key as a segment of one.

use std::borrow::Cow;

use facsimile_core::{ObjectKind, Replica, Value as CoreValue};
use smol_str::SmolStr;

/// A map key as one segment of a JSON pointer: `~` becomes `~0` and `/`
/// becomes `~1`. Borrows the key when it has neither.
///
/// ```
/// use facsimile::typed::pointer::escape;
///
/// assert_eq!(escape("a/b~c"), "a~1b~0c");
/// assert_eq!(format!("/players/{}/score", escape("ann")), "/players/ann/score");
/// ```
pub fn escape(key: &str) -> Cow<'_, str> {
    if !key.contains(['~', '/']) {
        return Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len() + 2);
    for c in key.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The steps of a pointer, or `None` when it is malformed (not empty and not
/// starting with `/`, or a `~` not followed by `0` or `1`).
///
/// ```
/// use facsimile::typed::pointer::parse;
///
/// assert_eq!(parse("/a~1b/0").unwrap(), ["a/b", "0"]);
/// assert!(parse("").unwrap().is_empty());
/// assert!(parse("a").is_none() && parse("/~2").is_none());
/// ```
pub fn parse(pointer: &str) -> Option<Vec<SmolStr>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/').map(unescape).collect()
}

fn unescape(seg: &str) -> Option<SmolStr> {
    if !seg.contains('~') {
        return Some(SmolStr::new(seg));
    }
    let mut out = String::with_capacity(seg.len());
    let mut chars = seg.chars();
    while let Some(c) = chars.next() {
        match c {
            '~' => match chars.next()? {
                '0' => out.push('~'),
                '1' => out.push('/'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out.into())
}

/// An array index as RFC 6901 spells it: `0`, or digits without a leading
/// zero.
///
/// ```
/// use facsimile::typed::pointer::index;
///
/// assert_eq!(index("10"), Some(10));
/// assert_eq!(index("010"), None);
/// assert_eq!(index("-"), None);
/// ```
pub fn index(seg: &str) -> Option<usize> {
    if seg.is_empty() || (seg.len() > 1 && seg.starts_with('0')) {
        return None;
    }
    if !seg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seg.parse().ok()
}

/// The value at `segs` from `from`, if every step exists.
pub(crate) fn resolve(r: &Replica, from: CoreValue, segs: &[SmolStr]) -> Option<CoreValue> {
    let mut cur = from;
    for seg in segs {
        let o = cur.as_ref_id()?;
        cur = match r.kind(o)? {
            ObjectKind::Map => r.map_get(o, seg).ok()??,
            ObjectKind::Array => r.list_get(o, index(seg)?).ok()??,
        };
    }
    Some(cur)
}
