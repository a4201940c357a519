//! The `Array` methods whose arguments JavaScript converts after it read
//! the array's length (`copyWithin`): a conversion runs the program's code
//! (`valueOf`), which may change the array in between.
//! The package converts them, then makes one engine call here, which reads
//! the array as it is then and writes what a plain array's method would:
//! nothing of the program runs between that read and the write.
//!
//! A plain array's method keeps the length it read. When the array is now
//! shorter, the elements it reads past the end are holes, and its writes
//! past the end extend the array. Arrays of a store are dense: a hole is
//! `null`.
//!
//! Each method is one change and one message, and all or nothing: the
//! room of all its writes is checked before the first is made (the other
//! refusals, a lock or a sync, refuse the first write already).

use facsimile_core::{Error, Input, ObjectId, Planned, Replica, Value};

/// One write of a method.
pub(crate) enum Write {
    /// Sets elements in place (indices below the length).
    Set(Vec<(usize, Input)>),
    /// Removes `.1` elements at `.0` and inserts `.2` there.
    Splice(usize, usize, Vec<Input>),
}

impl Write {
    fn planned(&self, id: ObjectId) -> Planned<'_> {
        match self {
            Write::Set(sets) => Planned::ListSetMany(id, sets),
            Write::Splice(at, delete, items) => Planned::ListSplice(id, *at, *delete, items),
        }
    }

    /// Whether it changes nothing (and may be left out).
    fn is_empty(&self) -> bool {
        match self {
            Write::Set(sets) => sets.is_empty(),
            Write::Splice(_, delete, items) => *delete == 0 && items.is_empty(),
        }
    }
}

/// Refuses the writes when one of them could not go out (too large for
/// the message), before any is made.
fn check_room(r: &mut Replica, id: ObjectId, writes: &[Write]) -> Result<(), Error> {
    r.check_room(writes.iter().map(|w| w.planned(id)))
}

/// Makes the writes, checked by [`check_room`], in the group the caller
/// opened. Returns what the splices removed, in order.
fn apply(r: &mut Replica, id: ObjectId, writes: Vec<Write>) -> Result<Vec<Value>, Error> {
    let mut removed = Vec::new();
    for w in writes {
        match w {
            Write::Set(sets) => {
                r.list_set_many(id, sets)?;
            }
            Write::Splice(at, delete, items) => {
                removed.extend(r.list_splice(id, at, delete, items)?)
            }
        }
    }
    Ok(removed)
}

/// Checks, then makes the writes as one change and one message. With no
/// write at all, a lock held elsewhere still refuses the call, as it
/// refuses any array method.
fn run(r: &mut Replica, id: ObjectId, writes: Vec<Write>) -> Result<Vec<Value>, Error> {
    let writes: Vec<Write> = writes.into_iter().filter(|w| !w.is_empty()).collect();
    if writes.is_empty() {
        return r.list_set_many(id, Vec::new()).map(|_| Vec::new());
    }
    check_room(r, id, &writes)?;
    r.begin();
    let done = apply(r, id, writes);
    r.commit();
    done
}

/// `copyWithin`: copies `count` elements from `from` to `to`, the three
/// computed from the length the method read before converting its
/// arguments. The copy goes element by element over the array as it is
/// now, in the direction that reads each element before it is
/// overwritten: an element missing (past the end) makes its destination
/// `null`, and a destination past the end extends the array.
pub(crate) fn copy_within(
    r: &mut Replica,
    id: ObjectId,
    to: usize,
    from: usize,
    count: usize,
) -> Result<(), Error> {
    let values = r.list_values(id)?;
    // From a length the array had: far below the end of `usize`.
    let (Some(_), Some(_)) = (to.checked_add(count), from.checked_add(count)) else {
        return Err(Error::IndexOutOfBounds {
            object: id,
            index: to.max(from),
            len: values.len(),
        });
    };
    let len = values.len();
    let mut work: Vec<Option<Value>> = values.into_iter().map(Some).collect();
    let backwards = from < to && to < from + count;
    for k in 0..count {
        let k = if backwards { count - 1 - k } else { k };
        let (source, dest) = (from + k, to + k);
        match work.get(source).cloned().flatten() {
            Some(v) => {
                if dest >= work.len() {
                    work.resize(dest + 1, None);
                }
                work[dest] = Some(v);
            }
            None => {
                if let Some(slot) = work.get_mut(dest) {
                    *slot = None;
                }
            }
        }
    }
    let value = |v: Option<Value>| Input::Value(v.unwrap_or(Value::Null));
    let set = (to..(to + count).min(len))
        .map(|i| (i, value(work[i].clone())))
        .collect();
    let appended = work
        .split_off(len.min(work.len()))
        .into_iter()
        .map(value)
        .collect();
    run(
        r,
        id,
        vec![Write::Set(set), Write::Splice(len, 0, appended)],
    )?;
    Ok(())
}
