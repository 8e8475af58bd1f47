//! The opcode loop. Every read is checked against the remaining input before anything is
//! allocated, and every structure grows only by what one opcode adds.

use std::collections::HashMap;

use bytes::Bytes;

use super::limits::{MAX_LONG_BYTES, MAX_MARKS, MAX_MEMO, MAX_STACK, MAX_VALUES};
use super::opcode::Opcode;
use super::{Call, Global, Heap, Id, Items, PickleError, PickleErrorKind as Kind, Policy, Value};

/// Interprets the pickle in `data` into a [`Heap`], without running anything.
///
/// # Errors
///
/// A [`PickleError`] naming the offset of the opcode at fault: a truncated stream, an unknown
/// or unsupported opcode, a length running past the input, a stack or memo misuse, a limit
/// exceeded, or a global that is refused (always for `os.system` and the like; in strict mode
/// for anything `policy` does not know).
pub fn parse(data: &[u8], policy: &Policy) -> Result<Heap, PickleError> {
    let mut vm = Vm {
        input: data,
        pos: 0,
        policy,
        values: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Memo::default(),
    };
    loop {
        let at = vm.pos;
        match vm.step() {
            Ok(None) => {}
            Ok(Some(root)) => {
                return Ok(Heap {
                    values: vm.values,
                    root,
                    input_len: vm.pos,
                });
            }
            Err(kind) => return Err(PickleError { offset: at, kind }),
        }
    }
}

struct Vm<'a> {
    input: &'a [u8],
    pos: usize,
    policy: &'a Policy,
    values: Vec<Value>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: Memo,
}

/// The memo. Picklers number entries 0, 1, 2, … (`MEMOIZE` always does): those live in a
/// vector, which a DCP `.metadata` of 100,000 tensors fills two million times; an index out of
/// that order goes to a map.
#[derive(Default)]
struct Memo {
    dense: Vec<Id>,
    sparse: HashMap<u64, Id>,
}

impl Memo {
    fn len(&self) -> usize {
        self.dense.len() + self.sparse.len()
    }

    fn get(&self, index: u64) -> Option<Id> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.dense.get(i))
            .or_else(|| self.sparse.get(&index))
            .copied()
    }

    /// Every index lives in one place: below `dense.len()` in the vector, above it in the map.
    fn insert(&mut self, index: u64, id: Id) {
        match usize::try_from(index) {
            Ok(i) if i < self.dense.len() => self.dense[i] = id,
            Ok(i) if i == self.dense.len() => {
                self.sparse.remove(&index);
                self.dense.push(id);
            }
            _ => {
                self.sparse.insert(index, id);
            }
        }
    }
}

type Step<T> = Result<T, Kind>;

impl Vm<'_> {
    /// Runs one opcode; `Some(root)` after `STOP`.
    fn step(&mut self) -> Step<Option<Id>> {
        use Opcode as O;
        let op = Opcode::try_from(self.take(1)?[0]).map_err(Kind::UnknownOpcode)?;
        match op {
            O::Proto | O::Frame | O::Stop | O::Mark | O::Pop | O::PopMark | O::Dup => {
                return self.control(op);
            }
            O::None
            | O::NewTrue
            | O::NewFalse
            | O::Int
            | O::BinInt
            | O::BinInt1
            | O::BinInt2
            | O::Long
            | O::Long1
            | O::Long4
            | O::Float
            | O::BinFloat => self.number(op)?,
            O::BinString
            | O::ShortBinString
            | O::BinBytes
            | O::ShortBinBytes
            | O::BinBytes8
            | O::ByteArray8
            | O::ShortBinUnicode
            | O::BinUnicode
            | O::BinUnicode8 => self.text(op)?,
            O::EmptyList
            | O::Append
            | O::Appends
            | O::List
            | O::EmptyTuple
            | O::Tuple
            | O::Tuple1
            | O::Tuple2
            | O::Tuple3
            | O::EmptyDict
            | O::Dict
            | O::SetItem
            | O::SetItems
            | O::EmptySet
            | O::AddItems
            | O::FrozenSet => self.container(op)?,
            O::Get
            | O::BinGet
            | O::LongBinGet
            | O::Put
            | O::BinPut
            | O::LongBinPut
            | O::Memoize => self.memo(op)?,
            O::Global
            | O::StackGlobal
            | O::Reduce
            | O::Build
            | O::NewObj
            | O::NewObjEx
            | O::PersId
            | O::BinPersId => self.object(op)?,
            O::Inst => return Err(Kind::UnsupportedOpcode("INST (protocol 0 objects)")),
            O::Obj => return Err(Kind::UnsupportedOpcode("OBJ (protocol 1 objects)")),
            O::String => return Err(Kind::UnsupportedOpcode("STRING (protocol 0 text)")),
            O::Unicode => return Err(Kind::UnsupportedOpcode("UNICODE (protocol 0 text)")),
            O::Ext1 | O::Ext2 | O::Ext4 => {
                return Err(Kind::UnsupportedOpcode("EXT1/2/4 (extension registry)"));
            }
            O::NextBuffer | O::ReadonlyBuffer => {
                return Err(Kind::UnsupportedOpcode("out-of-band buffers"));
            }
        }
        Ok(None)
    }

    /// The protocol, framing, `STOP`, marks and the plain stack opcodes.
    fn control(&mut self, op: Opcode) -> Step<Option<Id>> {
        match op {
            Opcode::Proto => {
                let proto = self.take(1)?[0];
                if proto > 5 {
                    return Err(Kind::Protocol(proto));
                }
            }
            Opcode::Frame => {
                let len = self.uint(8)?;
                self.check_len(len)?;
            }
            Opcode::Stop => {
                let root = self.pop("STOP")?;
                if !self.stack.is_empty() || !self.marks.is_empty() {
                    return Err(Kind::Malformed("STOP leaves values on the stack"));
                }
                return Ok(Some(root));
            }
            Opcode::Mark => {
                if self.marks.len() >= MAX_MARKS {
                    return Err(Kind::Limit {
                        what: "open MARKs",
                        limit: MAX_MARKS,
                    });
                }
                self.marks.push(self.stack.len());
            }
            Opcode::Pop => {
                self.pop("POP")?;
            }
            Opcode::PopMark => {
                self.pop_mark("POP_MARK")?;
            }
            Opcode::Dup => {
                let top = *self.stack.last().ok_or(Kind::StackUnderflow("DUP"))?;
                self.push(top)?;
            }
            _ => unreachable!("{} is not a control opcode", op.name()),
        }
        Ok(None)
    }

    /// `None`, booleans, integers and floats.
    fn number(&mut self, op: Opcode) -> Step<()> {
        let value = match op {
            Opcode::None => Value::None,
            Opcode::NewTrue => Value::Bool(true),
            Opcode::NewFalse => Value::Bool(false),
            Opcode::BinInt => Value::Int(i32::from_le_bytes(self.array()?).into()),
            Opcode::BinInt1 => Value::Int(self.uint(1)? as i64),
            Opcode::BinInt2 => Value::Int(self.uint(2)? as i64),
            Opcode::Long1 => {
                let len = self.uint(1)?;
                return self.long(len);
            }
            Opcode::Long4 => {
                let len = u32::from_le_bytes(self.array()?);
                return self.long(len.into());
            }
            Opcode::BinFloat => Value::Float(f64::from_be_bytes(self.array()?)),
            Opcode::Int => match self.line()? {
                b"00" => Value::Bool(false),
                b"01" => Value::Bool(true),
                line => Value::Int(parse_decimal(line).ok_or(Kind::WrongType {
                    op: "INT",
                    expected: "a decimal integer",
                })?),
            },
            Opcode::Long => {
                let line = self.line()?;
                let digits = line.strip_suffix(b"L").unwrap_or(line);
                Value::Int(
                    parse_decimal(digits)
                        .ok_or(Kind::UnsupportedOpcode("LONG (text) beyond 64 bits"))?,
                )
            }
            Opcode::Float => Value::Float(
                std::str::from_utf8(self.line()?)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(Kind::WrongType {
                        op: "FLOAT",
                        expected: "a decimal float",
                    })?,
            ),
            _ => unreachable!("{} is not a number opcode", op.name()),
        };
        self.push_new(value)
    }

    /// Strings and bytes.
    fn text(&mut self, op: Opcode) -> Step<()> {
        match op {
            Opcode::BinUnicode => {
                let len = u32::from_le_bytes(self.array()?);
                self.string(len.into())
            }
            Opcode::ShortBinUnicode => {
                let len = self.uint(1)?;
                self.string(len)
            }
            Opcode::BinUnicode8 => {
                let len = self.uint(8)?;
                self.string(len)
            }
            Opcode::BinBytes => {
                let len = u32::from_le_bytes(self.array()?);
                self.bytes(len.into())
            }
            Opcode::ShortBinBytes => {
                let len = self.uint(1)?;
                self.bytes(len)
            }
            Opcode::BinBytes8 | Opcode::ByteArray8 => {
                let len = self.uint(8)?;
                self.bytes(len)
            }
            // Python 2 `str`: text when it is UTF-8, bytes otherwise.
            Opcode::BinString | Opcode::ShortBinString => {
                let len = if op == Opcode::BinString {
                    u32::from_le_bytes(self.array()?).into()
                } else {
                    self.uint(1)?
                };
                let raw = self.take_len(len)?;
                let v = match std::str::from_utf8(raw) {
                    Ok(s) => Value::Str(s.to_owned()),
                    Err(_) => Value::Bytes(Box::new(Bytes::copy_from_slice(raw))),
                };
                self.push_new(v)
            }
            _ => unreachable!("{} is not a text opcode", op.name()),
        }
    }

    /// Tuples, lists, dicts and sets: made, and filled.
    fn container(&mut self, op: Opcode) -> Step<()> {
        match op {
            Opcode::EmptyTuple => self.push_new(Value::Tuple(Items::new(&[]))),
            Opcode::EmptyList => self.push_new(Value::List(Vec::new())),
            Opcode::EmptyDict => self.push_new(Value::Dict(Vec::new())),
            Opcode::EmptySet => self.push_new(Value::Set(Vec::new())),
            Opcode::Tuple1 | Opcode::Tuple2 | Opcode::Tuple3 => {
                let n = op as usize - Opcode::Tuple1 as usize + 1;
                if self.stack.len() < n + self.floor() {
                    return Err(Kind::StackUnderflow("TUPLE1/2/3"));
                }
                let items = Items::new(&self.stack[self.stack.len() - n..]);
                self.stack.truncate(self.stack.len() - n);
                self.push_new(Value::Tuple(items))
            }
            Opcode::Tuple => {
                let mark = self.marks.pop().ok_or(Kind::NoMark("TUPLE"))?;
                let items = Items::new(&self.stack[mark..]);
                self.stack.truncate(mark);
                self.push_new(Value::Tuple(items))
            }
            Opcode::List => {
                let items = self.pop_mark("LIST")?;
                self.push_new(Value::List(items))
            }
            Opcode::Dict => {
                let items = self.pop_mark("DICT")?;
                let pairs = pairs(items, "DICT")?;
                self.push_new(Value::Dict(pairs))
            }
            Opcode::FrozenSet => {
                let items = self.pop_mark("FROZENSET")?;
                self.push_new(Value::Set(items))
            }
            Opcode::Append => {
                let item = self.pop("APPEND")?;
                let target = self.top("APPEND")?;
                self.append(target, vec![item], "APPEND")
            }
            Opcode::Appends => {
                let items = self.pop_mark("APPENDS")?;
                let target = self.top("APPENDS")?;
                self.append(target, items, "APPENDS")
            }
            Opcode::AddItems => {
                let items = self.pop_mark("ADDITEMS")?;
                let target = self.top("ADDITEMS")?;
                match &mut self.values[target.index()] {
                    Value::Set(set) => {
                        set.extend(items);
                        Ok(())
                    }
                    _ => Err(Kind::WrongType {
                        op: "ADDITEMS",
                        expected: "a set",
                    }),
                }
            }
            Opcode::SetItem => {
                let value = self.pop("SETITEM")?;
                let key = self.pop("SETITEM")?;
                let target = self.top("SETITEM")?;
                self.set_items(target, vec![(key, value)], "SETITEM")
            }
            Opcode::SetItems => {
                let items = self.pop_mark("SETITEMS")?;
                let pairs = pairs(items, "SETITEMS")?;
                let target = self.top("SETITEMS")?;
                self.set_items(target, pairs, "SETITEMS")
            }
            _ => unreachable!("{} is not a container opcode", op.name()),
        }
    }

    /// Putting values in the memo and getting them back.
    fn memo(&mut self, op: Opcode) -> Step<()> {
        let decimal = |vm: &mut Self, op: &'static str| -> Step<u64> {
            parse_decimal(vm.line()?)
                .and_then(|i| u64::try_from(i).ok())
                .ok_or(Kind::WrongType {
                    op,
                    expected: "a decimal index",
                })
        };
        match op {
            Opcode::BinPut => {
                let i = self.uint(1)?;
                self.put(i)
            }
            Opcode::LongBinPut => {
                let i = self.uint(4)?;
                self.put(i)
            }
            Opcode::Memoize => {
                let i = self.memo.len() as u64;
                self.put(i)
            }
            Opcode::Put => {
                let i = decimal(self, "PUT")?;
                self.put(i)
            }
            Opcode::BinGet => {
                let i = self.uint(1)?;
                self.get(i)
            }
            Opcode::LongBinGet => {
                let i = self.uint(4)?;
                self.get(i)
            }
            Opcode::Get => {
                let i = decimal(self, "GET")?;
                self.get(i)
            }
            _ => unreachable!("{} is not a memo opcode", op.name()),
        }
    }

    /// Globals (checked against the refusals and the policy), calls, `BUILD` and persistent
    /// ids: recorded, never run.
    fn object(&mut self, op: Opcode) -> Step<()> {
        match op {
            Opcode::Global => {
                let module = utf8(self.line()?)?.to_owned();
                let name = utf8(self.line()?)?.to_owned();
                self.global(Global { module, name })
            }
            Opcode::StackGlobal => {
                let name = self.pop("STACK_GLOBAL")?;
                let module = self.pop("STACK_GLOBAL")?;
                let (Value::Str(module), Value::Str(name)) = (self.value(module), self.value(name))
                else {
                    return Err(Kind::WrongType {
                        op: "STACK_GLOBAL",
                        expected: "two strings",
                    });
                };
                let global = Global {
                    module: module.clone(),
                    name: name.clone(),
                };
                self.global(global)
            }
            Opcode::Reduce | Opcode::NewObj => {
                let name = if op == Opcode::Reduce {
                    "REDUCE"
                } else {
                    "NEWOBJ"
                };
                let args = self.pop(name)?;
                let func = self.pop(name)?;
                self.expect_tuple(args, name)?;
                self.push_new(Value::Call(Box::new(Call::new(func, args, None))))
            }
            Opcode::NewObjEx => {
                let kwargs = self.pop("NEWOBJ_EX")?;
                let args = self.pop("NEWOBJ_EX")?;
                let cls = self.pop("NEWOBJ_EX")?;
                self.expect_tuple(args, "NEWOBJ_EX")?;
                if !matches!(self.value(kwargs), Value::Dict(_)) {
                    return Err(Kind::WrongType {
                        op: "NEWOBJ_EX",
                        expected: "a dict of keyword arguments",
                    });
                }
                self.push_new(Value::Call(Box::new(Call::new(cls, args, Some(kwargs)))))
            }
            Opcode::Build => {
                let state = self.pop("BUILD")?;
                let target = self.top("BUILD")?;
                match &mut self.values[target.index()] {
                    Value::Call(call) => {
                        call.state = Some(state);
                        Ok(())
                    }
                    _ => Err(Kind::WrongType {
                        op: "BUILD",
                        expected: "an object made by REDUCE or NEWOBJ",
                    }),
                }
            }
            Opcode::BinPersId => {
                let pid = self.pop("BINPERSID")?;
                self.push_new(Value::PersistentId(pid))
            }
            Opcode::PersId => {
                let pid = utf8(self.line()?)?.to_owned();
                let pid = self.alloc(Value::Str(pid))?;
                self.push_new(Value::PersistentId(pid))
            }
            _ => unreachable!("{} is not an object opcode", op.name()),
        }
    }

    fn take(&mut self, n: usize) -> Step<&[u8]> {
        let rest = &self.input[self.pos..];
        if rest.len() < n {
            return Err(Kind::Truncated);
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn array<const N: usize>(&mut self) -> Step<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    fn uint(&mut self, n: usize) -> Step<u64> {
        let mut buf = [0u8; 8];
        buf[..n].copy_from_slice(self.take(n)?);
        Ok(u64::from_le_bytes(buf))
    }

    fn check_len(&self, len: u64) -> Step<usize> {
        let remaining = self.input.len() - self.pos;
        match usize::try_from(len) {
            Ok(n) if n <= remaining => Ok(n),
            _ => Err(Kind::LyingLength { len, remaining }),
        }
    }

    fn take_len(&mut self, len: u64) -> Step<&[u8]> {
        let n = self.check_len(len)?;
        self.take(n)
    }

    /// A newline-terminated argument of a text opcode.
    fn line(&mut self) -> Step<&[u8]> {
        let rest = &self.input[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(Kind::Truncated)?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    fn long(&mut self, len: u64) -> Step<()> {
        let n = self.check_len(len)?;
        if n > MAX_LONG_BYTES {
            return Err(Kind::Limit {
                what: "an integer's length in bytes",
                limit: MAX_LONG_BYTES,
            });
        }
        let raw = self.take(n)?;
        let value = if n <= 8 {
            // Sign-extend little-endian two's complement.
            let fill = if raw.last().is_some_and(|&b| b & 0x80 != 0) {
                0xff
            } else {
                0
            };
            let mut buf = [fill; 8];
            buf[..n].copy_from_slice(raw);
            Value::Int(i64::from_le_bytes(buf))
        } else {
            Value::BigInt(raw.into())
        };
        self.push_new(value)
    }

    fn string(&mut self, len: u64) -> Step<()> {
        let s = utf8(self.take_len(len)?)?.to_owned();
        self.push_new(Value::Str(s))
    }

    fn bytes(&mut self, len: u64) -> Step<()> {
        let b = Bytes::copy_from_slice(self.take_len(len)?);
        self.push_new(Value::Bytes(Box::new(b)))
    }

    fn value(&self, id: Id) -> &Value {
        &self.values[id.index()]
    }

    fn alloc(&mut self, value: Value) -> Step<Id> {
        if self.values.len() >= MAX_VALUES {
            return Err(Kind::Limit {
                what: "values in one pickle",
                limit: MAX_VALUES,
            });
        }
        self.values.push(value);
        Ok(Id((self.values.len() - 1) as u32))
    }

    fn push(&mut self, id: Id) -> Step<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(Kind::Limit {
                what: "the stack",
                limit: MAX_STACK,
            });
        }
        self.stack.push(id);
        Ok(())
    }

    fn push_new(&mut self, value: Value) -> Step<()> {
        let id = self.alloc(value)?;
        self.push(id)
    }

    /// The floor below which the current opcode may not pop: the innermost mark.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, op: &'static str) -> Step<Id> {
        if self.stack.len() <= self.floor() {
            return Err(Kind::StackUnderflow(op));
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    fn top(&self, op: &'static str) -> Step<Id> {
        if self.stack.len() <= self.floor() {
            return Err(Kind::StackUnderflow(op));
        }
        Ok(*self.stack.last().expect("checked above"))
    }

    fn pop_mark(&mut self, op: &'static str) -> Step<Vec<Id>> {
        let mark = self.marks.pop().ok_or(Kind::NoMark(op))?;
        Ok(self.stack.split_off(mark))
    }

    fn put(&mut self, index: u64) -> Step<()> {
        let top = *self
            .stack
            .last()
            .ok_or(Kind::StackUnderflow("PUT/MEMOIZE"))?;
        if self.memo.len() >= MAX_MEMO && self.memo.get(index).is_none() {
            return Err(Kind::Limit {
                what: "the memo",
                limit: MAX_MEMO,
            });
        }
        self.memo.insert(index, top);
        Ok(())
    }

    fn get(&mut self, index: u64) -> Step<()> {
        let id = self.memo.get(index).ok_or(Kind::MissingMemo(index))?;
        self.push(id)
    }

    fn global(&mut self, spelled: Global) -> Step<()> {
        let (global, spelled) = match super::compat::modern(&spelled) {
            Some(modern) => (modern, Some(spelled)),
            None => (spelled, None),
        };
        if let Some(power) = super::deny::refusal(&global) {
            return Err(Kind::Refused {
                global,
                power,
                spelled,
            });
        }
        if self.policy.strict && !(self.policy.known)(&global) {
            return Err(Kind::NotAllowed(global));
        }
        self.push_new(Value::Global(Box::new(global)))
    }

    fn expect_tuple(&self, id: Id, op: &'static str) -> Step<()> {
        match self.value(id) {
            Value::Tuple(_) => Ok(()),
            _ => Err(Kind::WrongType {
                op,
                expected: "a tuple of arguments",
            }),
        }
    }

    fn append(&mut self, target: Id, items: Vec<Id>, op: &'static str) -> Step<()> {
        match &mut self.values[target.index()] {
            Value::List(list) => list.extend(items),
            Value::Call(call) => call.filled().appended.extend(items),
            _ => {
                return Err(Kind::WrongType {
                    op,
                    expected: "a list",
                });
            }
        }
        Ok(())
    }

    fn set_items(&mut self, target: Id, pairs: Vec<(Id, Id)>, op: &'static str) -> Step<()> {
        match &mut self.values[target.index()] {
            Value::Dict(dict) => dict.extend(pairs),
            Value::Call(call) => call.filled().items.extend(pairs),
            _ => {
                return Err(Kind::WrongType {
                    op,
                    expected: "a dict",
                });
            }
        }
        Ok(())
    }
}

impl Call {
    fn new(func: Id, args: Id, kwargs: Option<Id>) -> Self {
        Self {
            func,
            args,
            kwargs,
            state: None,
            filled: None,
        }
    }
}

fn pairs(items: Vec<Id>, op: &'static str) -> Step<Vec<(Id, Id)>> {
    if !items.len().is_multiple_of(2) {
        return Err(Kind::WrongType {
            op,
            expected: "key/value pairs",
        });
    }
    Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

fn utf8(raw: &[u8]) -> Step<&str> {
    std::str::from_utf8(raw).map_err(|_| Kind::InvalidUtf8)
}

fn parse_decimal(raw: &[u8]) -> Option<i64> {
    std::str::from_utf8(raw).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pickle::{Power, limits};

    fn run(data: &[u8]) -> Result<Heap, PickleError> {
        parse(data, &Policy::permissive())
    }

    fn kind(data: &[u8]) -> Kind {
        run(data).unwrap_err().kind
    }

    // Byte strings below are what CPython's pickle.dumps wrote for the value in the test name.

    #[test]
    fn protocol_2_nested_containers_and_scalars() {
        // pickle.dumps({"a": [1, -2, 300, 70000, 2**40, True, None, 1.5], "b": (b"x", "é")}, 2)
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01J\x70\x11\x01\x00\x8a\x06\x00\x00\x00\x00\x00\x01\x88NG?\xf8\x00\x00\x00\x00\x00\x00eX\x01\x00\x00\x00bq\x03c_codecs\nencode\nq\x04X\x01\x00\x00\x00xq\x05X\x06\x00\x00\x00latin1q\x06\x86q\x07Rq\x08X\x02\x00\x00\x00\xc3\xa9q\x09\x86q\x0au.";
        let heap = run(data).unwrap();
        let Value::Dict(items) = heap.get(heap.root()) else {
            panic!("root is a dict")
        };
        assert_eq!(items.len(), 2);
        let list = heap.items(items[0].1).unwrap();
        let ints: Vec<_> = list[..5]
            .iter()
            .map(|&i| match heap.get(i) {
                Value::Int(v) => *v,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ints, [1, -2, 300, 70000, 1 << 40]);
        assert!(matches!(heap.get(list[5]), Value::Bool(true)));
        assert!(matches!(heap.get(list[6]), Value::None));
        assert!(matches!(heap.get(list[7]), Value::Float(v) if *v == 1.5));
        let pair = heap.items(items[1].1).unwrap();
        let Value::Call(call) = heap.get(pair[0]) else {
            panic!("protocol 2 bytes are a call to _codecs.encode")
        };
        assert!(heap.global(call.func).unwrap().is("_codecs", "encode"));
        assert!(matches!(heap.get(pair[1]), Value::Str(s) if s == "é"));
    }

    #[test]
    fn protocol_4_frames_stack_global_and_memoize() {
        // pickle.dumps(collections.OrderedDict(w=b"\x00\x01"), 4)
        let data = b"\x80\x04\x95,\x00\x00\x00\x00\x00\x00\x00\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94\x8c\x01w\x94C\x02\x00\x01\x94s.";
        let heap = run(data).unwrap();
        let Value::Call(call) = heap.get(heap.root()) else {
            panic!()
        };
        assert!(
            heap.global(call.func)
                .unwrap()
                .is("collections", "OrderedDict")
        );
        assert_eq!(call.items().len(), 1);
        assert!(matches!(heap.get(call.items()[0].1), Value::Bytes(b) if b[..] == [0, 1]));
    }

    #[test]
    fn the_memo_shares_values_instead_of_copying_them() {
        // x = []; pickle.dumps([x, x], 2): the second is a BINGET of the first.
        let data = b"\x80\x02]q\x00(]q\x01h\x01e.";
        let heap = run(data).unwrap();
        let items = heap.items(heap.root()).unwrap();
        assert_eq!(items[0], items[1]);
    }

    #[test]
    fn memo_indices_out_of_order_and_overwritten_resolve_to_their_last_value() {
        // Written by hand: `[]` put at 3, `{}` at 0, then another `[]` over 3 and `{}`s at 1
        // and 2 (each popped), so that index 3 comes into order last; a tuple gets 0..=3 back.
        let data = b"\x80\x02]q\x030}q\x000]q\x030}q\x010}q\x020(h\x00h\x01h\x02h\x03t.";
        let heap = run(data).unwrap();
        let items = heap.items(heap.root()).unwrap();
        assert_eq!(items.len(), 4);
        let distinct: std::collections::HashSet<_> = items.iter().collect();
        assert_eq!(distinct.len(), 4, "four different values: {items:?}");
        assert!(
            heap.items(items[3]).is_some(),
            "index 3 holds the second list"
        );
        assert!(
            heap.items(items[0]).is_none(),
            "index 0 holds the first dict"
        );
    }

    #[test]
    fn mutation_after_memoizing_is_seen_through_the_memo() {
        // l = []; l.append(l): pickle.dumps(l, 2) — a cycle, which costs nothing here.
        let data = b"\x80\x02]q\x00h\x00a.";
        let heap = run(data).unwrap();
        assert_eq!(heap.items(heap.root()).unwrap(), [heap.root()]);
    }

    #[test]
    fn big_and_negative_longs_are_exact() {
        // pickle.dumps([-1, 2**64], 2)
        let data = b"\x80\x02]q\x00(J\xff\xff\xff\xff\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00\x01e.";
        let heap = run(data).unwrap();
        let items = heap.items(heap.root()).unwrap();
        assert!(matches!(heap.get(items[0]), Value::Int(-1)));
        assert!(matches!(heap.get(items[1]), Value::BigInt(b) if b.len() == 9));
        // Hand-made: LONG1 of -129 in two bytes sign-extends.
        let heap = run(b"\x80\x02\x8a\x02\x7f\xff.").unwrap();
        assert!(matches!(heap.get(heap.root()), Value::Int(-129)));
    }

    #[test]
    fn os_system_is_refused_with_its_name_in_every_mode() {
        // class P: __reduce__ = lambda self: (os.system, ("touch pwned",)); pickle.dumps(P(), 2)
        let data =
            b"\x80\x02cposix\nsystem\nq\x00X\x0b\x00\x00\x00touch pwnedq\x01\x85q\x02Rq\x03.";
        let err = run(data).unwrap_err();
        assert_eq!(err.offset, 2, "the GLOBAL opcode");
        assert_eq!(
            err.to_string(),
            "pickle byte 2: refused to load global `posix.system`: it can start processes"
        );
        // GLOBAL module\nname\n then STOP: every one refused at byte 2.
        for (module, name) in [
            ("os", "system"),
            ("subprocess", "Popen"),
            ("builtins", "eval"),
            ("__builtin__", "eval"),
            ("os.path", "join"),
        ] {
            let data = format!("\u{80}\u{2}c{module}\n{name}\n.");
            let data: Vec<u8> = data.chars().map(|c| c as u8).collect();
            assert!(
                matches!(kind(&data), Kind::Refused { .. }),
                "{module}.{name}"
            );
        }
        assert!(run(b"\x80\x02c__builtin__\nset\n.").is_ok());
    }

    #[test]
    fn python_2_names_are_judged_as_python_3_loads_them() {
        // Protocol 2, as Python 2 spelled `subprocess.call`.
        let err = run(b"\x80\x02ccommands\ncall\n.").unwrap_err();
        assert_eq!(
            err.kind,
            Kind::Refused {
                global: Global {
                    module: "subprocess".into(),
                    name: "call".into()
                },
                power: Power::StartProcesses,
                spelled: Some(Global {
                    module: "commands".into(),
                    name: "call".into()
                }),
            }
        );
        assert_eq!(
            err.to_string(),
            "pickle byte 2: refused to load global `subprocess.call` (pickled as `commands.call`): it can start processes"
        );
        let heap = run(b"\x80\x02c__builtin__\nset\n.").unwrap();
        assert!(heap.global(heap.root()).unwrap().is("builtins", "set"));
    }

    #[test]
    fn stack_global_is_refused_the_same_way() {
        // STACK_GLOBAL with "os", "system"
        let data = b"\x80\x04\x8c\x02os\x8c\x06system\x93.";
        assert_eq!(
            kind(data),
            Kind::Refused {
                global: Global {
                    module: "os".into(),
                    name: "system".into()
                },
                power: Power::StartProcesses,
                spelled: None,
            }
        );
    }

    #[test]
    fn strict_mode_names_an_unknown_global() {
        let data = b"\x80\x02cmymodule\nMyClass\n).";
        let strict = Policy {
            strict: true,
            known: |g| g.module == "collections",
        };
        let err = parse(data, &strict).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pickle byte 2: global `mymodule.MyClass` is not allowed in strict mode"
        );
        assert!(run(data).is_err(), "STOP with two values on the stack");
        assert!(run(b"\x80\x02cmymodule\nMyClass\n.").is_ok());
    }

    #[test]
    fn truncation_anywhere_is_an_error_not_a_panic() {
        // pickle.dumps({"a": [1, -2], "b": 2**9}, 2)
        let data = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffeX\x01\x00\x00\x00bq\x03M\x00\x02u.";
        run(data).unwrap();
        for cut in 0..data.len() {
            assert!(run(&data[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(kind(b"\x80\x02X\x05\x00\x00"), Kind::Truncated);
    }

    #[test]
    fn a_lying_length_is_refused_before_anything_is_allocated() {
        assert_eq!(
            kind(b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\x7fabc"),
            Kind::LyingLength {
                len: 0x7fff_ffff_ffff_ffff,
                remaining: 3
            }
        );
        assert_eq!(
            kind(b"\x80\x02X\x00\x00\x00\x10ab."),
            Kind::LyingLength {
                len: 0x1000_0000,
                remaining: 3
            }
        );
        assert!(matches!(
            kind(b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x01\x00N."),
            Kind::LyingLength { .. }
        ));
    }

    #[test]
    fn unknown_opcodes_and_protocols_are_named() {
        assert_eq!(kind(b"\x80\x02\xffN."), Kind::UnknownOpcode(0xff));
        assert_eq!(kind(b"\x80\x06N."), Kind::Protocol(6));
        assert_eq!(
            kind(b"\x80\x05\x97."),
            Kind::UnsupportedOpcode("out-of-band buffers")
        );
        let err = run(b"\x80\x02N\xfe").unwrap_err();
        assert_eq!(err.offset, 3);
    }

    #[test]
    fn stack_and_memo_misuse_are_errors() {
        assert_eq!(kind(b"\x80\x02."), Kind::StackUnderflow("STOP"));
        assert_eq!(kind(b"\x80\x02Ne."), Kind::NoMark("APPENDS"));
        assert_eq!(kind(b"\x80\x02h\x05."), Kind::MissingMemo(5));
        assert_eq!(kind(b"\x80\x02(a."), Kind::StackUnderflow("APPEND"));
        assert!(matches!(
            kind(b"\x80\x02K\x01K\x02a."),
            Kind::WrongType { .. }
        ));
        assert!(matches!(kind(b"\x80\x02NN."), Kind::Malformed(_)));
        // An odd number of items for SETITEMS.
        assert!(matches!(kind(b"\x80\x02}(Nu."), Kind::WrongType { .. }));
    }

    #[test]
    fn deep_nesting_parses_flat_and_drops_without_recursion() {
        // EMPTY_TUPLE then a million TUPLE1s: a million levels deep.
        let mut data = b"\x80\x02)".to_vec();
        data.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        data.push(b'.');
        let heap = run(&data).unwrap();
        assert_eq!(heap.len(), 1_000_001);
        drop(heap);
    }

    #[test]
    fn memo_bombs_cost_one_value_per_opcode() {
        // x0 = []; x(i+1) = [x(i), x(i)] ... 2**40 nodes as a tree, 41 lists here.
        let data = crate::format::pickle::memo_bomb(40);
        let heap = run(&data).unwrap();
        assert_eq!(heap.len(), 41);
    }

    #[test]
    fn limits_are_enforced() {
        let mut data = b"\x80\x02".to_vec();
        data.extend(std::iter::repeat_n(b'(', limits::MAX_MARKS + 1));
        assert!(matches!(
            kind(&data),
            Kind::Limit {
                what: "open MARKs",
                ..
            }
        ));
        let mut data = b"\x80\x02\x8b".to_vec();
        data.extend(5000u32.to_le_bytes());
        data.extend(vec![1u8; 5000]);
        data.push(b'.');
        assert!(matches!(kind(&data), Kind::Limit { .. }));
    }
}
