//! Hostile pickles of a few kilobytes or megabytes that expand, through shared references,
//! into gigabytes or hours: each must fail with a clear error, using memory proportional to
//! the pickle (measured by the tests' counting allocator), never to what it expands to.

use super::convert::{NoHooks, to_node};
use super::limits::{BASE_BYTES, MAX_VALUES};

// At most 2 GiB of values in one pickle.
const _: () = assert!(MAX_VALUES * size_of::<super::Value>() <= 2 << 30);
use super::{Policy, memo_bomb, parse};
use crate::testing::alloc::{mib, peak};

/// A pickle writer for the shapes these tests need.
#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Self {
        Self(b"\x80\x02".to_vec())
    }

    fn op(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    fn string(self, s: &str) -> Self {
        let len = u32::try_from(s.len()).unwrap().to_le_bytes();
        self.op(b"X").op(&len).op(s.as_bytes())
    }

    fn global(self, module: &str, name: &str) -> Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }

    /// Memoizes the top of the stack as entry `i` (entries are numbered in order).
    fn memoize(self) -> Self {
        self.op(b"\x94")
    }

    /// Pushes memo entry `i`.
    fn get(self, i: u32) -> Self {
        self.op(b"j").op(&i.to_le_bytes())
    }

    /// Pushes memo entry `i` `n` times.
    fn gets(mut self, i: u32, n: usize) -> Self {
        for _ in 0..n {
            self = self.get(i);
        }
        self
    }

    fn stop(self) -> Vec<u8> {
        self.op(b".").0
    }
}

/// Parses and converts `data`, returning the conversion's error and the most memory the two
/// used at once.
fn fails(data: &[u8]) -> (String, usize) {
    let (result, most) = peak(|| {
        let heap = parse(data, &Policy::permissive()).map_err(|e| e.to_string())?;
        to_node(&heap, &mut NoHooks, "test").map(drop)
    });
    (result.expect_err("the pickle must be refused"), most)
}

/// What a conversion of `input` bytes may use: the base text budget, and a few dozen bytes
/// per pickle byte (values, the stack, nodes, text).
fn bound(input: usize) -> usize {
    BASE_BYTES + (16 << 20) + 48 * input
}

#[test]
fn a_string_shared_a_million_times_runs_out_of_budget_not_memory() {
    // s = "x" * 4096; [s] * 2**20: 4 GiB once expanded.
    let data = Pickle::new()
        .string(&"x".repeat(4096))
        .memoize()
        .op(b"0(")
        .gets(0, 1 << 20)
        .op(b"l")
        .stop();
    let (err, most) = fails(&data);
    assert!(err.contains("bytes of text"), "{err}");
    assert!(most < bound(data.len()), "{:.0} MiB", mib(most));
}

#[test]
fn a_big_integer_shared_a_million_times_is_rendered_once_and_runs_out_of_budget() {
    // n = 256**4095; [n] * 2**20: each reference would cost a quadratic decimal conversion.
    let mut long = vec![0u8; 4096];
    long[4094] = 1;
    let data = Pickle::new()
        .op(b"\x8b")
        .op(&4096u32.to_le_bytes())
        .op(&long)
        .memoize()
        .op(b"0(")
        .gets(0, 1 << 20)
        .op(b"l")
        .stop();
    let (err, most) = fails(&data);
    assert!(err.contains("bytes of text"), "{err}");
    assert!(most < bound(data.len()), "{:.0} MiB", mib(most));
}

#[test]
fn a_tuple_key_nested_eight_deep_is_not_rendered_into_its_leaves() {
    // t0 = "k" * 64; t(i+1) = (t(i),) * 12; {t8: 1}: 12**8 leaves in one key.
    let mut p = Pickle::new()
        .op(b"}")
        .memoize()
        .string(&"k".repeat(64))
        .memoize()
        .op(b"0");
    for level in 0..8u32 {
        p = p.op(b"(").gets(level + 1, 12).op(b"t").memoize();
        if level < 7 {
            p = p.op(b"0");
        }
    }
    let data = p.op(b"K\x01s").stop();
    let (err, most) = fails(&data);
    assert!(err.contains("more than"), "{err}");
    assert!(most < bound(data.len()), "{:.0} MiB", mib(most));
}

#[test]
fn path_arguments_are_paid_for_before_they_are_joined() {
    // pathlib.PurePosixPath(*["p" * 4096] * 2**19): a 2 GiB string.
    let data = Pickle::new()
        .global("pathlib", "PurePosixPath")
        .string(&"p".repeat(4096))
        .memoize()
        .op(b"0(")
        .gets(0, 1 << 19)
        .op(b"tR")
        .stop();
    let (err, most) = fails(&data);
    assert!(err.contains("bytes of text"), "{err}");
    assert!(most < bound(data.len()), "{:.0} MiB", mib(most));
}

#[test]
fn a_memo_bomb_fails_within_a_few_megabytes() {
    let data = memo_bomb(40);
    let (err, most) = fails(&data);
    assert!(err.contains("more than"), "{err}");
    assert!(most < 32 << 20, "{:.0} MiB", mib(most));
}

#[test]
fn values_that_contain_themselves_are_cycles_not_deep_nests() {
    // d = {}; d["d"] = d
    let data = Pickle::new()
        .op(b"}")
        .memoize()
        .string("d")
        .get(0)
        .op(b"s")
        .stop();
    let (err, _) = fails(&data);
    assert!(err.contains("contains itself"), "{err}");
}

#[test]
fn the_interpreter_holds_a_bounded_number_of_bytes_per_input_byte() {
    // Four million `None`s appended to one list, a thousand at a time: every `N` makes a
    // value.
    let batches = 4096;
    let mut data = b"\x80\x02]".to_vec();
    for _ in 0..batches {
        data.push(b'(');
        data.extend_from_slice(&[b'N'; 1024]);
        data.push(b'e');
    }
    data.push(b'.');
    let (heap, most) = peak(|| parse(&data, &Policy::permissive()).unwrap());
    assert_eq!(heap.len(), batches * 1024 + 1);
    // A 32-byte value per byte, held three times over while the value array doubles (the
    // allocator counts a moving realloc's two blocks), and the list's items.
    assert_eq!(size_of::<super::Value>(), 32);
    assert!(most < 104 * data.len(), "{:.0} MiB", mib(most));
}
