//! The legacy `torch.save` format (PyTorch before 1.6, and `_use_new_zipfile_serialization=False`
//! since): five pickles one after another — a magic number, the format's version (1001), the
//! writer's system info, the object (storages as persistent ids
//! `('storage', type, key, location, numel, view)`), the sorted storage keys — then every
//! storage in key order as its element count (8 bytes) and its elements, little-endian.
//!
//! [`parse`] reads the pickles and lays the storages out from the element counts the object
//! pickle gives, so no storage header is read to find the next; the reader confirms each header
//! when the storage is read, and the layout must end exactly where the file does. Pure.

use std::collections::HashMap;

use crate::dtype::DType;
use crate::format::pickle::{self, Heap, Id, PickleError, PickleErrorKind, Policy, Value};

use super::codec::storage_dtype;

/// The first pickle of a legacy file: `0x1950a86a20f9469cfc6c`, as `LONG1` stores it.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// The second: the format's version.
const VERSION: i64 = 1001;

/// What the pickles at the start of a legacy file say.
#[derive(Debug)]
pub(crate) struct Head {
    /// The pickled object.
    pub object: Heap,
    /// Where the object's pickle is, for messages (`bytes 137..313`).
    pub object_bytes: std::ops::Range<u64>,
    /// The storages by key: where their elements are.
    pub storages: HashMap<String, Stored>,
    /// Storage views (very old files) by key: the storage they are part of, and the byte
    /// offset they start at in it.
    pub views: HashMap<String, (String, u64)>,
}

/// One storage's place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Its elements' offset in the file (its 8-byte count is just before).
    pub start: u64,
    /// Bytes of elements.
    pub len: u64,
    /// Element count, as its header must say.
    pub numel: u64,
}

/// Why the head cannot be had (yet).
#[derive(Debug)]
pub(crate) enum Problem {
    /// The bytes given end inside the pickles; more of the file is needed.
    Need,
    /// A pickle, but not a `torch.save` file.
    NotTorch,
    /// A pickle refused or broken, in the named one.
    Pickle(&'static str, Box<PickleError>),
    /// Anything else, said plainly.
    Bad(String),
}

/// Parses the head of a legacy file of `size` bytes from its first bytes `data`.
///
/// # Errors
///
/// [`Problem::Need`] when `data` ends inside the pickles and the file goes on; the others for
/// what is not a valid legacy file.
pub(crate) fn parse(data: &[u8], size: u64, policy: &Policy) -> Result<Head, Problem> {
    let mut at = 0usize;
    let mut next = |what: &'static str, policy: &Policy| -> Result<(Heap, usize), Problem> {
        let start = at;
        let heap = pickle::parse(&data[start..], policy).map_err(|e| {
            if cut(&e) && (data.len() as u64) < size {
                Problem::Need
            } else {
                Problem::Pickle(what, Box::new(e))
            }
        })?;
        at = start + heap.input_len();
        Ok((heap, start))
    };
    let any = Policy::permissive();
    // A file cut inside its first pickle says so; any other first pickle is not torch's.
    let (magic, _) = next("the magic number", &any).map_err(|p| match p {
        Problem::Pickle(what, e) if cut(&e) => Problem::Pickle(what, e),
        Problem::Need => Problem::Need,
        _ => Problem::NotTorch,
    })?;
    if !matches!(magic.get(magic.root()), Value::BigInt(b) if b[..] == MAGIC) {
        return Err(Problem::NotTorch);
    }
    let (version, _) = next("the format version", &any)?;
    match version.get(version.root()) {
        Value::Int(VERSION) => {}
        other => {
            return Err(Problem::Bad(format!(
                "format version {other:?}, not {VERSION}"
            )));
        }
    }
    let (info, _) = next("the system info", &any)?;
    if !matches!(info.get(info.root()), Value::Dict(_)) {
        return Err(Problem::Bad("the system info is not a dict".into()));
    }
    let (object, object_start) = next("the pickled object", policy)?;
    let object_bytes = object_start as u64..(object_start + object.input_len()) as u64;
    let (keys, keys_start) = next("the storage keys", &any)?;
    let data_start = (keys_start + keys.input_len()) as u64;
    let keys = key_list(&keys)?;
    let (sizes, views) = described(&object)?;
    let storages = lay_out(&keys, &sizes, data_start, size)?;
    Ok(Head {
        object,
        object_bytes,
        storages,
        views,
    })
}

/// Whether a pickle ran out of bytes.
fn cut(e: &PickleError) -> bool {
    matches!(
        e.kind,
        PickleErrorKind::Truncated | PickleErrorKind::LyingLength { .. }
    )
}

/// The storage keys, in the order their data follows.
fn key_list(heap: &Heap) -> Result<Vec<String>, Problem> {
    let bad = || Problem::Bad("the storage keys are not a list of strings".into());
    let Value::List(items) = heap.get(heap.root()) else {
        return Err(bad());
    };
    items
        .iter()
        .map(|&id| match heap.get(id) {
            Value::Str(s) => Ok(s.clone()),
            _ => Err(bad()),
        })
        .collect()
}

/// Each storage's element type and count, and the views, from the object's persistent ids.
#[allow(clippy::type_complexity)]
fn described(
    heap: &Heap,
) -> Result<
    (
        HashMap<String, (DType, u64)>,
        HashMap<String, (String, u64)>,
    ),
    Problem,
> {
    let mut sizes: HashMap<String, (DType, u64)> = HashMap::new();
    let mut views = HashMap::new();
    for pid in heap.persistent_ids() {
        let fields = heap
            .items(pid)
            .ok_or_else(|| Problem::Bad("a persistent id that is not a tuple".into()))?;
        let [tag, kind, key, _location, numel, rest @ ..] = fields else {
            return Err(Problem::Bad(
                "a storage persistent id with fewer than 5 fields".into(),
            ));
        };
        if !matches!(heap.get(*tag), Value::Str(t) if t == "storage") {
            return Err(Problem::Bad("a persistent id that is not a storage".into()));
        }
        let class = heap
            .global(*kind)
            .ok_or_else(|| Problem::Bad("a storage whose type is not a class".into()))?;
        let dtype = storage_dtype(&class.name)
            .ok_or_else(|| Problem::Bad(format!("storage type `{class}` is not supported")))?;
        let key = text(heap, *key, "a storage key")?;
        let numel = count(heap, *numel, "a storage's element count")?;
        if let Some(&(d, n)) = sizes.get(&key)
            && (d, n) != (dtype, numel)
        {
            return Err(Problem::Bad(format!(
                "storage `{key}` is described twice, as {d} × {n} and {dtype} × {numel}"
            )));
        }
        sizes.insert(key.clone(), (dtype, numel));
        if let Some(view) = rest.first().and_then(|&v| heap.items(v)) {
            let [view_key, offset, _size] = view else {
                return Err(Problem::Bad(format!(
                    "storage `{key}` has a view that is not (key, offset, size)"
                )));
            };
            let offset = count(heap, *offset, "a view's offset")?;
            let bytes = dtype
                .byte_len(offset)
                .ok_or_else(|| Problem::Bad(format!("a view of `{key}` starts past any byte")))?;
            views.insert(text(heap, *view_key, "a view key")?, (key, bytes));
        }
    }
    Ok((sizes, views))
}

fn text(heap: &Heap, id: Id, what: &str) -> Result<String, Problem> {
    match heap.get(id) {
        Value::Str(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        _ => Err(Problem::Bad(format!("{what} is not a string"))),
    }
}

fn count(heap: &Heap, id: Id, what: &str) -> Result<u64, Problem> {
    match heap.get(id) {
        Value::Int(n) if *n >= 0 => Ok(*n as u64),
        _ => Err(Problem::Bad(format!("{what} is not a count"))),
    }
}

/// Where each storage of `keys` is, given their sizes, from `start` on; the last must end
/// where the file does.
fn lay_out(
    keys: &[String],
    sizes: &HashMap<String, (DType, u64)>,
    start: u64,
    size: u64,
) -> Result<HashMap<String, Stored>, Problem> {
    let mut out = HashMap::with_capacity(keys.len().min(sizes.len()));
    let mut at = start;
    for key in keys {
        let &(dtype, numel) = sizes.get(key).ok_or_else(|| {
            Problem::Bad(format!(
                "storage `{key}` is listed, but no tensor says how large it is"
            ))
        })?;
        let len = dtype
            .byte_len(numel)
            .ok_or_else(|| Problem::Bad(format!("storage `{key}` is too large")))?;
        let begin = at
            .checked_add(8)
            .filter(|&b| b <= size)
            .ok_or_else(|| past(key, size))?;
        at = begin
            .checked_add(len)
            .filter(|&e| e <= size)
            .ok_or_else(|| past(key, size))?;
        if out
            .insert(
                key.clone(),
                Stored {
                    start: begin,
                    len,
                    numel,
                },
            )
            .is_some()
        {
            return Err(Problem::Bad(format!("storage `{key}` is listed twice")));
        }
    }
    if let Some(key) = sizes.keys().find(|k| !out.contains_key(*k)) {
        return Err(Problem::Bad(format!(
            "a tensor refers to storage `{key}`, which is not in the file's storage list"
        )));
    }
    if at != size {
        return Err(Problem::Bad(format!(
            "its storages end at byte {at}, but the file has {size} bytes"
        )));
    }
    Ok(out)
}

fn past(key: &str, size: u64) -> Problem {
    Problem::Bad(format!(
        "storage `{key}` runs past the end of the {size}-byte file"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(entries: &[(&str, DType, u64)]) -> HashMap<String, (DType, u64)> {
        entries
            .iter()
            .map(|&(k, d, n)| (k.to_owned(), (d, n)))
            .collect()
    }

    #[test]
    fn storages_follow_one_another_after_their_counts() {
        let keys = ["a".to_owned(), "b".to_owned()];
        let s = sizes(&[("a", DType::F32, 2), ("b", DType::I64, 1)]);
        let laid = lay_out(&keys, &s, 100, 100 + 8 + 8 + 8 + 8).unwrap();
        assert_eq!(
            laid["a"],
            Stored {
                start: 108,
                len: 8,
                numel: 2
            }
        );
        assert_eq!(
            laid["b"],
            Stored {
                start: 124,
                len: 8,
                numel: 1
            }
        );
    }

    #[test]
    fn a_layout_that_does_not_end_with_the_file_is_refused() {
        let keys = ["a".to_owned()];
        let s = sizes(&[("a", DType::F32, 2)]);
        let msg = |r: Result<_, Problem>| match r {
            Err(Problem::Bad(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(msg(lay_out(&keys, &s, 0, 17)).contains("end at byte 16"));
        assert!(msg(lay_out(&keys, &s, 0, 15)).contains("runs past the end"));
        let huge = sizes(&[("a", DType::F64, u64::MAX / 4)]);
        assert!(msg(lay_out(&keys, &huge, 0, 1 << 20)).contains("too large"));
        assert!(msg(lay_out(&keys, &sizes(&[]), 0, 8)).contains("no tensor says"));
        let unlisted = sizes(&[("a", DType::U8, 0), ("b", DType::U8, 0)]);
        assert!(msg(lay_out(&keys, &unlisted, 0, 8)).contains("`b`"));
    }

    #[test]
    fn a_plain_pickle_is_not_torch_and_a_short_prefix_asks_for_more() {
        let plain = b"\x80\x02}q\x00.";
        assert!(matches!(
            parse(plain, plain.len() as u64, &Policy::permissive()),
            Err(Problem::NotTorch)
        ));
        let mut magic = b"\x80\x02\x8a\x0a".to_vec();
        magic.extend(MAGIC);
        magic.push(b'.');
        assert!(matches!(
            parse(&magic[..6], 1000, &Policy::permissive()),
            Err(Problem::Need)
        ));
        assert!(matches!(
            parse(&magic, 1000, &Policy::permissive()),
            Err(Problem::Need)
        ));
        assert!(matches!(
            parse(&magic, magic.len() as u64, &Policy::permissive()),
            Err(Problem::Pickle("the format version", _))
        ));
    }
}
