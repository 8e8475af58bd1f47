//! A state tree as the `data.pkl` of a `torch.save` archive: what `torch.load` (with
//! `weights_only=True`) rebuilds into the same dicts, lists, tuples, scalars and tensors. Pure:
//! the tensors' bytes are written by the caller, as records `data/{key}`.
//!
//! Tensors are written as torch writes them: `torch._utils._rebuild_tensor_v2` over a typed
//! storage (`torch.FloatStorage`) for the classic dtypes, `_rebuild_tensor_v3` over an untyped
//! storage with the dtype for the newer ones (float8, uint16–64, complex32); contiguous, on the
//! CPU, without gradients.

use std::collections::HashMap;

use super::codec::{DTYPES, STORAGES};
use crate::dtype::DType;
use crate::format::pickle::emit::Pickler;
use crate::tree::{Dict, Int, KeyKind, LazyTensor, Leaf, Node, contiguous_strides, path};

/// Dtypes torch pickles over a typed storage (`torch.storage._dtype_to_storage_type_map`); the
/// others it has go over an untyped one, with `_rebuild_tensor_v3`.
const TYPED: &[DType] = &[
    DType::F32,
    DType::F64,
    DType::F16,
    DType::BF16,
    DType::I64,
    DType::I32,
    DType::I16,
    DType::I8,
    DType::U8,
    DType::BOOL,
    DType::C64,
    DType::C128,
];

/// The pickle of the tree whose root is `root`; `key_of` numbers each tensor's storage by its
/// path. A root holding only the key `""` (a file whose top object was not a dict) pickles that
/// object.
///
/// # Errors
///
/// A message naming the path of what torch cannot hold: an object ckptio kept inert, a dtype
/// torch has no name for, a tensor without a storage key.
pub fn pickle_tree(root: &Dict, key_of: &HashMap<String, usize>) -> Result<Vec<u8>, String> {
    let mut w = Writer {
        p: Pickler::new(),
        key_of,
    };
    match root.get("") {
        Some(only) if root.len() == 1 => w.node(only, "")?,
        _ => w.dict(root, "")?,
    }
    Ok(w.p.finish())
}

struct Writer<'a> {
    p: Pickler,
    key_of: &'a HashMap<String, usize>,
}

impl Writer<'_> {
    fn node(&mut self, node: &Node, at: &str) -> Result<(), String> {
        match node {
            Node::Dict(d) => self.dict(d, at),
            Node::List(items) if items.is_tuple() => {
                self.p.start_tuple(items.len());
                for (i, item) in items.iter().enumerate() {
                    self.node(item, &path::join(at, &i.to_string()))?;
                }
                self.p.end_tuple(items.len());
                Ok(())
            }
            Node::List(items) => {
                self.p.empty_list();
                let n = items.len();
                for (i, item) in items.iter().enumerate() {
                    self.p.start_batch(i);
                    self.node(item, &path::join(at, &i.to_string()))?;
                    self.p.end_batch(i, n, false);
                }
                Ok(())
            }
            Node::Leaf(leaf) => self.leaf(leaf, at),
        }
    }

    fn dict(&mut self, d: &Dict, at: &str) -> Result<(), String> {
        self.p.empty_dict();
        let n = d.len();
        for (i, (key, value)) in d.iter().enumerate() {
            self.p.start_batch(i);
            match key.parse::<i64>() {
                Ok(k) if d.key_kind() == KeyKind::Int => self.p.int(k),
                _ => self.p.str(key),
            }
            self.node(value, &path::join(at, &path::escape(key)))?;
            self.p.end_batch(i, n, true);
        }
        Ok(())
    }

    fn leaf(&mut self, leaf: &Leaf, at: &str) -> Result<(), String> {
        match leaf {
            Leaf::None => self.p.none(),
            Leaf::Bool(b) => self.p.bool(*b),
            Leaf::Int(Int::Small(v)) => self.p.int(*v),
            Leaf::Int(Int::Big(digits)) => self.p.big_int(digits).map_err(|e| at_path(at, &e))?,
            Leaf::Float(v) => self.p.float(*v),
            Leaf::Str(s) => self.p.str(s),
            Leaf::Bytes(b) => self.p.bytes(b),
            Leaf::Tensor(t) => self.tensor(t, at)?,
            Leaf::Opaque(o) => {
                return Err(at_path(
                    at,
                    &format!(
                        "an object of class {}.{} (read, never executed) cannot be written to \
                         a torch file; leave it out with an ignore glob",
                        o.module, o.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn tensor(&mut self, t: &LazyTensor, at: &str) -> Result<(), String> {
        let key = *self
            .key_of
            .get(at)
            .ok_or_else(|| at_path(at, "no storage was planned for this tensor"))?;
        let dtype_name = torch_name(t.dtype)
            .ok_or_else(|| at_path(at, &format!("torch has no dtype for {}", t.dtype)))?;
        let typed = TYPED.contains(&t.dtype);
        let (storage, numel) = if typed {
            (
                typed_storage(t.dtype).unwrap_or("UntypedStorage"),
                t.numel(),
            )
        } else {
            ("UntypedStorage", t.nbytes())
        };
        self.p.global(
            "torch._utils",
            if typed {
                "_rebuild_tensor_v2"
            } else {
                "_rebuild_tensor_v3"
            },
        );
        let args = if typed { 6 } else { 7 };
        self.p.start_tuple(args);
        // The storage, by persistent id: ("storage", class, key, location, numel).
        self.p.start_tuple(5);
        self.p.str("storage");
        // Where torch's pickler finds each class (and its weights-only reader allows it).
        self.p
            .global(if typed { "torch" } else { "torch.storage" }, storage);
        self.p.str(&key.to_string());
        self.p.str("cpu");
        self.p.int(numel as i64);
        self.p.end_tuple(5);
        self.p.persistent_id();
        self.p.int(0);
        self.ints(&t.shape);
        self.ints(&contiguous_strides(&t.shape));
        self.p.bool(false);
        // The backward hooks: an empty `OrderedDict`.
        self.p.global("collections", "OrderedDict");
        self.p.end_tuple(0);
        self.p.reduce();
        if !typed {
            self.p.global("torch", dtype_name);
        }
        self.p.end_tuple(args);
        self.p.reduce();
        Ok(())
    }

    fn ints(&mut self, values: &[u64]) {
        self.p.start_tuple(values.len());
        for &v in values {
            self.p.int(v as i64);
        }
        self.p.end_tuple(values.len());
    }
}

/// The name torch gives `dtype` (`float32`), if it has one.
fn torch_name(dtype: DType) -> Option<&'static str> {
    DTYPES.iter().find(|(_, d)| *d == dtype).map(|&(n, _)| n)
}

/// The typed storage class of `dtype` (`FloatStorage`).
fn typed_storage(dtype: DType) -> Option<&'static str> {
    STORAGES
        .iter()
        .find(|(n, d)| *d == dtype && !n.starts_with('Q') && *n != "UntypedStorage")
        .map(|&(n, _)| n)
}

fn at_path(at: &str, what: &str) -> String {
    if at.is_empty() {
        what.to_owned()
    } else {
        format!("`{at}`: {what}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pickle::{Policy, parse};
    use crate::format::torch::codec;
    use crate::tree::{List, StateTree};

    /// Records which storage bytes each tensor asks for.
    struct Keys(std::cell::RefCell<Vec<(String, std::ops::Range<u64>)>>);

    impl codec::Storages for Keys {
        fn data(
            &self,
            key: &str,
            bytes: std::ops::Range<u64>,
        ) -> Result<crate::tree::TensorData, String> {
            self.0.borrow_mut().push((key.to_owned(), bytes));
            Ok(crate::tree::TensorData::Abstract)
        }

        fn origin(&self) -> std::sync::Arc<str> {
            "test".into()
        }
    }

    fn tensor(dtype: DType, shape: Vec<u64>) -> Node {
        Node::from(LazyTensor::abstract_(dtype, shape))
    }

    #[test]
    fn a_tree_reads_back_as_the_torch_reader_sees_it() {
        let mut root = Dict::new();
        root.insert("w".into(), tensor(DType::F32, vec![2, 3]));
        root.insert("f8".into(), tensor(DType::F8_E4M3, vec![4]));
        root.insert("scalar".into(), tensor(DType::BF16, vec![]));
        let state = Dict::from([("1".to_owned(), Node::Leaf(Leaf::Int(5.into())))])
            .with_key_kind(KeyKind::Int);
        root.insert("state".into(), Node::Dict(state));
        root.insert(
            "betas".into(),
            Node::List(List::tuple(vec![
                Node::Leaf(Leaf::Float(0.9)),
                Node::Leaf(Leaf::Float(0.999)),
            ])),
        );
        root.insert(
            "big".into(),
            Node::Leaf(Leaf::Int(Int::Big("-18446744073709551617".into()))),
        );
        root.insert("blob".into(), Node::Leaf(Leaf::Bytes(vec![0, 200].into())));
        let keys = HashMap::from([
            ("w".to_owned(), 0),
            ("f8".to_owned(), 1),
            ("scalar".to_owned(), 2),
        ]);
        let bytes = pickle_tree(&root, &keys).unwrap();
        // Only globals the torch reader's strict mode accepts are written.
        let strict = Policy {
            strict: true,
            known: |g| codec::is_known(g) || crate::format::pickle::convert::is_known(g),
        };
        let heap = parse(&bytes, &strict).unwrap();
        let keys = Keys(Default::default());
        let node = codec::to_node(&heap, &keys, "test").unwrap();
        assert_eq!(
            keys.0.into_inner(),
            [("0".into(), 0..24), ("1".into(), 0..4), ("2".into(), 0..2)]
        );
        let Node::Dict(back) = node else { panic!() };
        let tree = StateTree::from_dict(back);
        let t = |p: &str| match tree.get(p) {
            Some(Node::Leaf(Leaf::Tensor(t))) => (t.dtype, t.shape.clone(), t.nbytes()),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(t("w"), (DType::F32, vec![2, 3], 24));
        assert_eq!(t("f8"), (DType::F8_E4M3, vec![4], 4));
        assert_eq!(t("scalar"), (DType::BF16, vec![], 2));
        assert!(matches!(tree.get("state"), Some(Node::Dict(d)) if d.key_kind() == KeyKind::Int));
        assert!(matches!(tree.get("betas"), Some(Node::List(l)) if l.is_tuple()));
        assert!(
            matches!(tree.get("big"), Some(Node::Leaf(Leaf::Int(Int::Big(d)))) if d == "-18446744073709551617")
        );
        assert!(matches!(tree.get("blob"), Some(Node::Leaf(Leaf::Bytes(b))) if b[..] == [0, 200]));
    }

    #[test]
    fn what_torch_cannot_hold_is_named_by_its_path() {
        let mut root = Dict::new();
        root.insert(
            "cfg".into(),
            Node::from(crate::tree::Opaque {
                module: "my".into(),
                name: "Config".into(),
                args: vec![],
                kwargs: None,
                state: None,
            }),
        );
        let err = pickle_tree(&root, &HashMap::new()).unwrap_err();
        assert!(err.contains("`cfg`: an object of class my.Config"), "{err}");
        let mut root = Dict::new();
        root.insert("w".into(), tensor(DType::F32, vec![1]));
        let err = pickle_tree(&root, &HashMap::new()).unwrap_err();
        assert!(err.contains("`w`: no storage"), "{err}");
    }
}
