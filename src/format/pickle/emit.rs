//! Writing pickles: the protocol-2 opcodes `torch.save` emits for plain data (the reader's
//! counterpart is [`vm`](super::vm)). The caller drives it value by value; the output is what
//! CPython's pickler writes for the same values, without memo entries (nothing is shared).

use super::opcode::Opcode;

/// Items per `SETITEMS`/`APPENDS` batch, as CPython batches them.
const BATCH: usize = 1000;

/// A pickle being written.
#[derive(Debug)]
pub struct Pickler {
    out: Vec<u8>,
}

impl Default for Pickler {
    fn default() -> Self {
        Self::new()
    }
}

impl Pickler {
    /// A protocol-2 pickle.
    pub fn new() -> Self {
        Self {
            out: vec![Opcode::Proto as u8, 2],
        }
    }

    fn op(&mut self, op: Opcode) {
        self.out.push(op as u8);
    }

    /// `None`.
    pub fn none(&mut self) {
        self.op(Opcode::None);
    }

    /// `True` or `False`.
    pub fn bool(&mut self, v: bool) {
        self.op(if v { Opcode::NewTrue } else { Opcode::NewFalse });
    }

    /// An integer, in the shortest opcode that holds it.
    pub fn int(&mut self, v: i64) {
        if let Ok(b) = u8::try_from(v) {
            self.op(Opcode::BinInt1);
            self.out.push(b);
        } else if let Ok(b) = u16::try_from(v) {
            self.op(Opcode::BinInt2);
            self.out.extend_from_slice(&b.to_le_bytes());
        } else if let Ok(b) = i32::try_from(v) {
            self.op(Opcode::BinInt);
            self.out.extend_from_slice(&b.to_le_bytes());
        } else {
            self.long(&v.to_le_bytes());
        }
    }

    /// An integer of any size, from its decimal digits (a leading `-` for negative ones).
    ///
    /// # Errors
    ///
    /// When `digits` is not a decimal integer.
    pub fn big_int(&mut self, digits: &str) -> Result<(), String> {
        let bytes =
            twos_complement(digits).ok_or_else(|| format!("`{digits}` is not an integer"))?;
        self.long(&bytes);
        Ok(())
    }

    /// `LONG1` (`LONG4` past 255 bytes): little-endian two's complement, trimmed to the bytes
    /// that carry the value.
    fn long(&mut self, le: &[u8]) {
        let mut len = le.len();
        while len > 1 {
            let (last, prev) = (le[len - 1], le[len - 2]);
            // A byte is redundant when it only repeats the sign of the one below it.
            if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
                len -= 1;
            } else {
                break;
            }
        }
        let len = if le.iter().all(|&b| b == 0) { 0 } else { len };
        match u8::try_from(len) {
            Ok(short) => {
                self.op(Opcode::Long1);
                self.out.push(short);
            }
            Err(_) => {
                self.op(Opcode::Long4);
                self.out.extend_from_slice(&(len as u32).to_le_bytes());
            }
        }
        self.out.extend_from_slice(&le[..len]);
    }

    /// A float (big-endian, as `BINFLOAT` takes it).
    pub fn float(&mut self, v: f64) {
        self.op(Opcode::BinFloat);
        self.out.extend_from_slice(&v.to_be_bytes());
    }

    /// A string.
    pub fn str(&mut self, s: &str) {
        self.op(Opcode::BinUnicode);
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// Bytes, as protocol 2 writes them: `_codecs.encode(text, "latin1")`.
    pub fn bytes(&mut self, b: &[u8]) {
        self.global("_codecs", "encode");
        let text: String = b.iter().map(|&c| char::from(c)).collect();
        self.str(&text);
        self.str("latin1");
        self.op(Opcode::Tuple2);
        self.op(Opcode::Reduce);
    }

    /// A `module.name` reference.
    pub fn global(&mut self, module: &str, name: &str) {
        self.op(Opcode::Global);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
    }

    /// Starts a tuple; `end_tuple(n)` closes it once its `n` items are written.
    pub fn start_tuple(&mut self, n: usize) {
        if n > 3 {
            self.op(Opcode::Mark);
        }
    }

    /// Closes a tuple of `n` items.
    pub fn end_tuple(&mut self, n: usize) {
        self.op(match n {
            0 => Opcode::EmptyTuple,
            1 => Opcode::Tuple1,
            2 => Opcode::Tuple2,
            3 => Opcode::Tuple3,
            _ => Opcode::Tuple,
        });
    }

    /// Starts a dict (or list): its items follow in batches, each opened by
    /// [`start_batch`](Self::start_batch) and closed by [`end_batch`](Self::end_batch).
    pub fn empty_dict(&mut self) {
        self.op(Opcode::EmptyDict);
    }

    /// Starts a list.
    pub fn empty_list(&mut self) {
        self.op(Opcode::EmptyList);
    }

    /// Opens the batch that item `i` starts, if it starts one.
    pub fn start_batch(&mut self, i: usize) {
        if i.is_multiple_of(BATCH) {
            self.op(Opcode::Mark);
        }
    }

    /// Closes the batch after item `i` of `n` (of a dict when `dict`), if it ends one.
    pub fn end_batch(&mut self, i: usize, n: usize, dict: bool) {
        if (i + 1).is_multiple_of(BATCH) || i + 1 == n {
            self.op(if dict {
                Opcode::SetItems
            } else {
                Opcode::Appends
            });
        }
    }

    /// Calls the callable below the argument tuple on top of the stack.
    pub fn reduce(&mut self) {
        self.op(Opcode::Reduce);
    }

    /// Replaces the value on top of the stack by the object it names (`persistent_load`).
    pub fn persistent_id(&mut self) {
        self.op(Opcode::BinPersId);
    }

    /// Ends the pickle.
    pub fn finish(mut self) -> Vec<u8> {
        self.op(Opcode::Stop);
        self.out
    }
}

/// Decimal digits as little-endian two's complement bytes, one sign byte to spare.
fn twos_complement(digits: &str) -> Option<Vec<u8>> {
    let (negative, magnitude) = match digits.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, digits),
    };
    if magnitude.is_empty() || !magnitude.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut le: Vec<u8> = vec![0];
    for d in magnitude.bytes() {
        // le = le * 10 + d
        let mut carry = u32::from(d - b'0');
        for b in &mut le {
            let v = u32::from(*b) * 10 + carry;
            *b = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            le.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    le.push(0);
    if negative {
        let mut carry = true;
        for b in &mut le {
            *b = !*b;
            if carry {
                let (v, c) = b.overflowing_add(1);
                *b = v;
                carry = c;
            }
        }
    }
    Some(le)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pickle::{Policy, Value, parse};

    fn read(p: Pickler) -> (crate::format::pickle::Heap, Vec<u8>) {
        let bytes = p.finish();
        (parse(&bytes, &Policy::permissive()).unwrap(), bytes)
    }

    #[test]
    fn integers_take_the_opcodes_cpython_gives_them() {
        // pickle.dumps(v, 2) for each v, as CPython writes them.
        let cases: &[(i64, &[u8])] = &[
            (0, b"K\x00"),
            (255, b"K\xff"),
            (256, b"M\x00\x01"),
            (-1, b"J\xff\xff\xff\xff"),
            (1 << 31, b"\x8a\x05\x00\x00\x00\x80\x00"),
            (-(1 << 40), b"\x8a\x06\x00\x00\x00\x00\x00\xff"),
            (i64::MIN, b"\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80"),
        ];
        for &(v, want) in cases {
            let mut p = Pickler::new();
            p.int(v);
            let bytes = p.finish();
            assert_eq!(&bytes[2..bytes.len() - 1], want, "{v}");
        }
    }

    #[test]
    fn big_integers_round_trip_through_the_reader() {
        // 10^700 takes 291 bytes: past LONG1's 255.
        let huge = format!("-1{}", "0".repeat(700));
        for digits in [
            huge.as_str(),
            "0",
            "18446744073709551616",
            "-1208925819614629174706176",
            "-1",
        ] {
            let mut p = Pickler::new();
            p.big_int(digits).unwrap();
            let (heap, _) = read(p);
            let got = match heap.get(heap.root()) {
                Value::Int(v) => v.to_string(),
                Value::BigInt(raw) => crate::format::pickle::convert::decimal(raw),
                other => panic!("{other:?}"),
            };
            assert_eq!(got, digits);
        }
        assert!(Pickler::new().big_int("12a").is_err());
    }

    #[test]
    fn containers_batch_their_items_and_read_back() {
        let mut p = Pickler::new();
        p.empty_list();
        let n = 2500;
        for i in 0..n {
            p.start_batch(i);
            p.int(i as i64);
            p.end_batch(i, n, false);
        }
        let (heap, _) = read(p);
        let Value::List(items) = heap.get(heap.root()) else {
            panic!()
        };
        let values: Vec<i64> = items
            .iter()
            .map(|&i| match heap.get(i) {
                Value::Int(v) => *v,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(values, (0..n as i64).collect::<Vec<_>>());
    }

    #[test]
    fn bytes_are_written_as_protocol_2_writes_them() {
        // pickle.dumps(b"\x00\xff", 2), less the memo puts
        let mut p = Pickler::new();
        p.bytes(&[0, 255]);
        let bytes = p.finish();
        assert_eq!(
            bytes,
            b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00\x00\xc3\xbfX\x06\x00\x00\x00latin1\x86R."
        );
    }
}
