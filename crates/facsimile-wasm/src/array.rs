//! The `Array` methods whose arguments JavaScript converts after it read
//! the array's length (`splice`, `fill`, `copyWithin`): a conversion runs
//! the program's code (`valueOf`), which may change the array in between.
//! The package converts them, then makes one engine call here, which reads
//! the array as it is then and writes what a plain array's method would:
//! nothing of the program runs between that read and the write.
//!
//! A plain array's method keeps the length it read. When the array is now
//! shorter, the elements it reads past the end are holes, and its writes
//! past the end extend the array; `splice` ends by setting the length, so
//! it also drops what was appended meanwhile. Arrays of a store are dense:
//! a hole is `null`.
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

fn nulls(n: usize) -> impl Iterator<Item = Input> {
    std::iter::repeat_with(|| Input::Value(Value::Null)).take(n)
}

/// `splice`: removes `delete` elements at `start` and inserts `items`
/// there, `start` and `delete` having been computed from the length `len`
/// (`start + delete <= len`). When the array is no longer `len` long, it is
/// taken as `len` long first, as a plain array's splice does: elements
/// past `len` are dropped, missing ones are `null` (and removed as `null`).
/// Returns the removed values.
pub(crate) fn splice(
    r: &mut Replica,
    id: ObjectId,
    len: usize,
    start: usize,
    delete: usize,
    items: Vec<Input>,
) -> Result<Vec<Value>, Error> {
    let start = start.min(len);
    let delete = delete.min(len - start);
    let now = r.list_len(id)?;
    if now == len {
        return r.list_splice(id, start, delete, items);
    }
    if now > len {
        let writes = [
            Write::Splice(len, now - len, Vec::new()),
            Write::Splice(start, delete, items),
        ];
        check_room(r, id, &writes)?;
        let [drop, splice] = writes;
        r.begin();
        // What was appended meanwhile goes: not the method's to return.
        let done = apply(r, id, vec![drop]).and_then(|_| apply(r, id, vec![splice]));
        r.commit();
        return done;
    }
    // Shorter: the elements from `now` to `len` are nulls.
    let missing;
    let writes = if start >= now {
        missing = delete;
        let tail = len - start - delete;
        let inserted = nulls(start - now).chain(items).chain(nulls(tail));
        vec![Write::Splice(now, 0, inserted.collect())]
    } else {
        let real = delete.min(now - start);
        missing = delete - real;
        let end = now - real + items.len();
        let tail = len - (start + delete).max(now);
        vec![
            Write::Splice(start, real, items),
            Write::Splice(end, 0, nulls(tail).collect()),
        ]
    };
    let mut removed = run(r, id, writes)?;
    removed.extend(std::iter::repeat_n(Value::Null, missing));
    Ok(removed)
}

/// `fill`: sets the elements `from..to` to `input`. Indices at or past
/// the end extend the array (as a plain array's fill does when converting
/// `from` and `to` shortened it), the gap before `from` padded with
/// `null`. An object is created once, at `from`, and referenced from the
/// other indices.
pub(crate) fn fill(
    r: &mut Replica,
    id: ObjectId,
    from: usize,
    to: usize,
    input: Input,
) -> Result<(), Error> {
    let len = r.list_len(id)?;
    // `value` at `from..to` from index `at` on: in place below `len`,
    // appended from there (after nulls up to `at`).
    let writes = |at: usize, value: &Input| {
        // A number over an element holding the same number, in the other
        // representation, keeps it: as `a[i] = a[i]`, it changes nothing.
        let kept = |i: usize| match value {
            Input::Value(new @ (Value::Int(_) | Value::Float(_))) => r
                .list_get(id, i)
                .ok()
                .flatten()
                .filter(|old| crate::same_number(new, old))
                .map(Input::Value),
            _ => None,
        };
        let set = (at..to.min(len))
            .map(|i| (i, kept(i).unwrap_or_else(|| value.clone())))
            .collect();
        let appended =
            nulls(at.saturating_sub(len)).chain((at.max(len)..to).map(|_| value.clone()));
        [Write::Set(set), Write::Splice(len, 0, appended.collect())]
    };
    if from + 1 >= to || !matches!(input, Input::Map(_) | Input::Array(_)) {
        run(r, id, writes(from, &input).into())?;
        return Ok(());
    }
    // The object at `from`, then the references, after it when the object
    // extended the array.
    let first = if from < len {
        Write::Set(vec![(from, input)])
    } else {
        Write::Splice(len, 0, nulls(from - len).chain([input]).collect())
    };
    let end = len.max(from + 1);
    let refs = |value: Value| {
        let value = Input::Value(value);
        let set = (from + 1..to.min(len))
            .map(|i| (i, value.clone()))
            .collect();
        let appended = (end..to).map(|_| value.clone()).collect();
        [Write::Set(set), Write::Splice(end, 0, appended)]
    };
    // Any reference's bound is that of a reference to the array.
    let mut planned = vec![first];
    planned.extend(refs(Value::Ref(id)).into_iter().filter(|w| !w.is_empty()));
    check_room(r, id, &planned)?;
    planned.truncate(1);
    r.begin();
    let filled = apply(r, id, planned).and_then(|_| {
        let created = r.list_get(id, from)?.expect("the element just set");
        let refs = refs(created)
            .into_iter()
            .filter(|w| !w.is_empty())
            .collect();
        apply(r, id, refs)
    });
    r.commit();
    filled.map(|_| ())
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
