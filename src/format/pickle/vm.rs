//! The opcode loop. Every read is checked against the remaining input before anything is
//! allocated, and every structure grows only by what one opcode adds.

use std::collections::HashMap;

use bytes::Bytes;

use super::limits::{MAX_LONG_BYTES, MAX_MARKS, MAX_MEMO, MAX_STACK, MAX_VALUES};
use super::{Call, Global, Heap, Id, PickleError, PickleErrorKind as Kind, Policy, Value};

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
        memo: HashMap::new(),
    };
    loop {
        let at = vm.pos;
        match vm.step() {
            Ok(None) => {}
            Ok(Some(root)) => {
                return Ok(Heap {
                    values: vm.values,
                    root,
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
    memo: HashMap<u64, Id>,
}

type Step<T> = Result<T, Kind>;

impl Vm<'_> {
    /// Runs one opcode; `Some(root)` after `STOP`.
    fn step(&mut self) -> Step<Option<Id>> {
        let op = self.take(1)?[0];
        match op {
            0x80 => {
                let proto = self.take(1)?[0];
                if proto > 5 {
                    return Err(Kind::Protocol(proto));
                }
            }
            0x95 => {
                let len = self.uint(8)?;
                self.check_len(len)?;
            }
            b'.' => {
                let root = self.pop("STOP")?;
                if !self.stack.is_empty() || !self.marks.is_empty() {
                    return Err(Kind::Malformed("STOP leaves values on the stack"));
                }
                return Ok(Some(root));
            }
            b'(' => {
                if self.marks.len() >= MAX_MARKS {
                    return Err(Kind::Limit {
                        what: "open MARKs",
                        limit: MAX_MARKS,
                    });
                }
                self.marks.push(self.stack.len());
            }
            b'0' => {
                self.pop("POP")?;
            }
            b'1' => {
                self.pop_mark("POP_MARK")?;
            }
            b'2' => {
                let top = *self.stack.last().ok_or(Kind::StackUnderflow("DUP"))?;
                self.push(top)?;
            }

            // Constants and numbers.
            b'N' => self.push_new(Value::None)?,
            0x88 => self.push_new(Value::Bool(true))?,
            0x89 => self.push_new(Value::Bool(false))?,
            b'J' => {
                let v = i32::from_le_bytes(self.array()?);
                self.push_new(Value::Int(v.into()))?;
            }
            b'K' => {
                let v = self.uint(1)?;
                self.push_new(Value::Int(v as i64))?;
            }
            b'M' => {
                let v = self.uint(2)?;
                self.push_new(Value::Int(v as i64))?;
            }
            0x8a => {
                let len = self.uint(1)?;
                self.long(len)?;
            }
            0x8b => {
                let len = u32::from_le_bytes(self.array()?);
                self.long(len.into())?;
            }
            b'G' => {
                let v = f64::from_be_bytes(self.array()?);
                self.push_new(Value::Float(v))?;
            }
            b'I' => {
                let line = self.line()?;
                let v = match line {
                    b"00" => Value::Bool(false),
                    b"01" => Value::Bool(true),
                    _ => Value::Int(parse_decimal(line).ok_or(Kind::WrongType {
                        op: "INT",
                        expected: "a decimal integer",
                    })?),
                };
                self.push_new(v)?;
            }
            b'L' => {
                let line = self.line()?;
                let digits = line.strip_suffix(b"L").unwrap_or(line);
                let v = parse_decimal(digits)
                    .ok_or(Kind::UnsupportedOpcode("LONG (text) beyond 64 bits"))?;
                self.push_new(Value::Int(v))?;
            }
            b'F' => {
                let line = self.line()?;
                let v = std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(Kind::WrongType {
                        op: "FLOAT",
                        expected: "a decimal float",
                    })?;
                self.push_new(Value::Float(v))?;
            }

            // Strings and bytes.
            b'X' => {
                let len = u32::from_le_bytes(self.array()?);
                self.string(len.into())?;
            }
            0x8c => {
                let len = self.uint(1)?;
                self.string(len)?;
            }
            0x8d => {
                let len = self.uint(8)?;
                self.string(len)?;
            }
            b'B' => {
                let len = u32::from_le_bytes(self.array()?);
                self.bytes(len.into())?;
            }
            b'C' => {
                let len = self.uint(1)?;
                self.bytes(len)?;
            }
            0x8e | 0x96 => {
                let len = self.uint(8)?;
                self.bytes(len)?;
            }
            // Python 2 `str`: text when it is UTF-8, bytes otherwise.
            b'T' | b'U' => {
                let len = if op == b'T' {
                    u32::from_le_bytes(self.array()?).into()
                } else {
                    self.uint(1)?
                };
                let raw = self.take_len(len)?;
                let v = match std::str::from_utf8(raw) {
                    Ok(s) => Value::Str(s.to_owned()),
                    Err(_) => Value::Bytes(Bytes::copy_from_slice(raw)),
                };
                self.push_new(v)?;
            }

            // Containers.
            b')' => self.push_new(Value::Tuple(Vec::new()))?,
            b']' => self.push_new(Value::List(Vec::new()))?,
            b'}' => self.push_new(Value::Dict(Vec::new()))?,
            0x8f => self.push_new(Value::Set(Vec::new()))?,
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if self.stack.len() < n + self.marks.last().copied().unwrap_or(0) {
                    return Err(Kind::StackUnderflow("TUPLE1/2/3"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push_new(Value::Tuple(items))?;
            }
            b't' => {
                let items = self.pop_mark("TUPLE")?;
                self.push_new(Value::Tuple(items))?;
            }
            b'l' => {
                let items = self.pop_mark("LIST")?;
                self.push_new(Value::List(items))?;
            }
            b'd' => {
                let items = self.pop_mark("DICT")?;
                let pairs = pairs(items, "DICT")?;
                self.push_new(Value::Dict(pairs))?;
            }
            0x91 => {
                let items = self.pop_mark("FROZENSET")?;
                self.push_new(Value::Set(items))?;
            }
            b'a' => {
                let item = self.pop("APPEND")?;
                let target = self.top("APPEND")?;
                self.append(target, vec![item], "APPEND")?;
            }
            b'e' => {
                let items = self.pop_mark("APPENDS")?;
                let target = self.top("APPENDS")?;
                self.append(target, items, "APPENDS")?;
            }
            0x90 => {
                let items = self.pop_mark("ADDITEMS")?;
                let target = self.top("ADDITEMS")?;
                match &mut self.values[target.index()] {
                    Value::Set(set) => set.extend(items),
                    _ => {
                        return Err(Kind::WrongType {
                            op: "ADDITEMS",
                            expected: "a set",
                        });
                    }
                }
            }
            b's' => {
                let value = self.pop("SETITEM")?;
                let key = self.pop("SETITEM")?;
                let target = self.top("SETITEM")?;
                self.set_items(target, vec![(key, value)], "SETITEM")?;
            }
            b'u' => {
                let items = self.pop_mark("SETITEMS")?;
                let pairs = pairs(items, "SETITEMS")?;
                let target = self.top("SETITEMS")?;
                self.set_items(target, pairs, "SETITEMS")?;
            }

            // Memo.
            b'q' => {
                let i = self.uint(1)?;
                self.put(i)?;
            }
            b'r' => {
                let i = self.uint(4)?;
                self.put(i)?;
            }
            0x94 => {
                let i = self.memo.len() as u64;
                self.put(i)?;
            }
            b'p' => {
                let i = parse_decimal(self.line()?).ok_or(Kind::WrongType {
                    op: "PUT",
                    expected: "a decimal index",
                })?;
                self.put(i as u64)?;
            }
            b'h' => {
                let i = self.uint(1)?;
                self.get(i)?;
            }
            b'j' => {
                let i = self.uint(4)?;
                self.get(i)?;
            }
            b'g' => {
                let i = parse_decimal(self.line()?).ok_or(Kind::WrongType {
                    op: "GET",
                    expected: "a decimal index",
                })?;
                self.get(i as u64)?;
            }

            // Globals, calls, objects.
            b'c' => {
                let module = utf8(self.line()?)?.to_owned();
                let name = utf8(self.line()?)?.to_owned();
                self.global(Global { module, name })?;
            }
            0x93 => {
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
                self.global(global)?;
            }
            b'R' => {
                let args = self.pop("REDUCE")?;
                let func = self.pop("REDUCE")?;
                self.expect_tuple(args, "REDUCE")?;
                self.push_new(Value::Call(Call::new(func, args, None)))?;
            }
            0x81 => {
                let args = self.pop("NEWOBJ")?;
                let cls = self.pop("NEWOBJ")?;
                self.expect_tuple(args, "NEWOBJ")?;
                self.push_new(Value::Call(Call::new(cls, args, None)))?;
            }
            0x92 => {
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
                self.push_new(Value::Call(Call::new(cls, args, Some(kwargs))))?;
            }
            b'b' => {
                let state = self.pop("BUILD")?;
                let target = self.top("BUILD")?;
                match &mut self.values[target.index()] {
                    Value::Call(call) => call.state = Some(state),
                    _ => {
                        return Err(Kind::WrongType {
                            op: "BUILD",
                            expected: "an object made by REDUCE or NEWOBJ",
                        });
                    }
                }
            }
            b'Q' => {
                let pid = self.pop("BINPERSID")?;
                self.push_new(Value::PersistentId(pid))?;
            }
            b'P' => {
                let pid = utf8(self.line()?)?.to_owned();
                let pid = self.alloc(Value::Str(pid))?;
                self.push_new(Value::PersistentId(pid))?;
            }

            b'i' => return Err(Kind::UnsupportedOpcode("INST (protocol 0 objects)")),
            b'o' => return Err(Kind::UnsupportedOpcode("OBJ (protocol 1 objects)")),
            b'S' => return Err(Kind::UnsupportedOpcode("STRING (protocol 0 text)")),
            b'V' => return Err(Kind::UnsupportedOpcode("UNICODE (protocol 0 text)")),
            0x82..=0x84 => return Err(Kind::UnsupportedOpcode("EXT1/2/4 (extension registry)")),
            0x97 | 0x98 => return Err(Kind::UnsupportedOpcode("out-of-band buffers")),
            other => return Err(Kind::UnknownOpcode(other)),
        }
        Ok(None)
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
            Value::BigInt(Bytes::copy_from_slice(raw))
        };
        self.push_new(value)
    }

    fn string(&mut self, len: u64) -> Step<()> {
        let s = utf8(self.take_len(len)?)?.to_owned();
        self.push_new(Value::Str(s))
    }

    fn bytes(&mut self, len: u64) -> Step<()> {
        let b = Bytes::copy_from_slice(self.take_len(len)?);
        self.push_new(Value::Bytes(b))
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
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&index) {
            return Err(Kind::Limit {
                what: "the memo",
                limit: MAX_MEMO,
            });
        }
        self.memo.insert(index, top);
        Ok(())
    }

    fn get(&mut self, index: u64) -> Step<()> {
        let id = *self.memo.get(&index).ok_or(Kind::MissingMemo(index))?;
        self.push(id)
    }

    fn global(&mut self, global: Global) -> Step<()> {
        if super::is_refused(&global) {
            return Err(Kind::Refused(global));
        }
        if self.policy.strict && !(self.policy.known)(&global) {
            return Err(Kind::NotAllowed(global));
        }
        self.push_new(Value::Global(global))
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
            Value::Call(call) => call.appended.extend(items),
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
            Value::Call(call) => call.items.extend(pairs),
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
            items: Vec::new(),
            appended: Vec::new(),
        }
    }
}

fn pairs(items: Vec<Id>, op: &'static str) -> Step<Vec<(Id, Id)>> {
    if items.len() % 2 != 0 {
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
    use crate::format::pickle::{is_refused, limits};

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
        assert_eq!(call.items.len(), 1);
        assert!(matches!(heap.get(call.items[0].1), Value::Bytes(b) if b[..] == [0, 1]));
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
            "pickle byte 2: refused to load global `posix.system`: it can run code"
        );
        for (module, name) in [
            ("os", "system"),
            ("nt", "system"),
            ("subprocess", "Popen"),
            ("sys", "modules"),
            ("runpy", "_run_code"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("builtins", "getattr"),
            ("builtins", "__import__"),
            ("__builtin__", "eval"),
            ("os.path", "join"),
        ] {
            let g = Global {
                module: module.into(),
                name: name.into(),
            };
            assert!(is_refused(&g), "{g}");
        }
        let set = Global {
            module: "builtins".into(),
            name: "set".into(),
        };
        assert!(!is_refused(&set));
    }

    #[test]
    fn stack_global_is_refused_the_same_way() {
        // STACK_GLOBAL with "os", "system"
        let data = b"\x80\x04\x8c\x02os\x8c\x06system\x93.";
        assert_eq!(
            kind(data),
            Kind::Refused(Global {
                module: "os".into(),
                name: "system".into()
            })
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
