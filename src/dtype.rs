//! Element types, named as safetensors names them. Two are ckptio's own, for torch dtypes
//! safetensors has no name for: `C128` (complex128) and `C32` (complex32); ckptio stores them in
//! safetensors files as their real parts' type with a trailing dimension of 2
//! ([`DType::safetensors_view`]).

use std::fmt;
use std::str::FromStr;

/// A tensor element type. Names and widths follow the safetensors spec, and `C128`/`C32` are
/// ckptio's; sub-byte types (`F4`, `F6_*`) are packed, so only whole numbers of bytes are valid
/// tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
#[allow(non_camel_case_types, missing_docs)]
pub enum DType {
    BOOL,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F16,
    BF16,
    F32,
    F64,
    C64,
    C128,
    C32,
    F8_E4M3,
    F8_E5M2,
    F8_E8M0,
    F8_E4M3FNUZ,
    F8_E5M2FNUZ,
    F4,
    F6_E2M3,
    F6_E3M2,
}

/// Every dtype with its name and width in bits: the one table both directions use.
const TABLE: &[(DType, &str, u64)] = &[
    (DType::BOOL, "BOOL", 8),
    (DType::U8, "U8", 8),
    (DType::I8, "I8", 8),
    (DType::U16, "U16", 16),
    (DType::I16, "I16", 16),
    (DType::U32, "U32", 32),
    (DType::I32, "I32", 32),
    (DType::U64, "U64", 64),
    (DType::I64, "I64", 64),
    (DType::F16, "F16", 16),
    (DType::BF16, "BF16", 16),
    (DType::F32, "F32", 32),
    (DType::F64, "F64", 64),
    (DType::C64, "C64", 64),
    (DType::C128, "C128", 128),
    (DType::C32, "C32", 32),
    (DType::F8_E4M3, "F8_E4M3", 8),
    (DType::F8_E5M2, "F8_E5M2", 8),
    (DType::F8_E8M0, "F8_E8M0", 8),
    (DType::F8_E4M3FNUZ, "F8_E4M3FNUZ", 8),
    (DType::F8_E5M2FNUZ, "F8_E5M2FNUZ", 8),
    (DType::F4, "F4", 4),
    (DType::F6_E2M3, "F6_E2M3", 6),
    (DType::F6_E3M2, "F6_E3M2", 6),
];

impl DType {
    fn entry(self) -> &'static (DType, &'static str, u64) {
        TABLE
            .iter()
            .find(|(d, _, _)| *d == self)
            .expect("every dtype is in TABLE")
    }

    /// The safetensors name (`F32`, `BF16`, `F8_E4M3`, ...).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// Width of one element in bits.
    pub fn bits(self) -> u64 {
        self.entry().2
    }

    /// Whether the type holds complex numbers (a real and an imaginary part per element).
    pub fn is_complex(self) -> bool {
        matches!(self, Self::C64 | Self::C128 | Self::C32)
    }

    /// The type and shape a tensor of this type and `shape` has in a safetensors file, which
    /// names no `C128` or `C32`: complex numbers as pairs of their parts' type, in a trailing
    /// dimension of 2. Every other type is itself.
    pub fn safetensors_view(self, shape: &[u64]) -> (DType, Vec<u64>) {
        let part = match self {
            Self::C128 => Self::F64,
            Self::C32 => Self::F16,
            other => return (other, shape.to_vec()),
        };
        let mut shape = shape.to_vec();
        shape.push(2);
        (part, shape)
    }

    /// Bytes of `numel` elements, or `None` on overflow or a partial byte.
    pub fn byte_len(self, numel: u64) -> Option<u64> {
        let bits = numel.checked_mul(self.bits())?;
        (bits % 8 == 0).then_some(bits / 8)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not a known dtype.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype `{0}`")]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;

    fn from_str(name: &str) -> Result<Self, UnknownDType> {
        TABLE
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(d, _, _)| *d)
            .ok_or_else(|| UnknownDType(name.to_owned()))
    }
}

/// Elements of a tensor of `shape` (1 for a scalar), or `None` on overflow.
pub fn numel(shape: &[u64]) -> Option<u64> {
    shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for (dtype, name, _) in TABLE {
            assert_eq!(dtype.name(), *name);
            assert_eq!(name.parse::<DType>(), Ok(*dtype));
            assert_eq!(dtype.to_string(), *name);
        }
        let names: std::collections::BTreeSet<_> = TABLE.iter().map(|(_, n, _)| n).collect();
        assert_eq!(names.len(), TABLE.len(), "names are unique");
        assert!(
            "f32".parse::<DType>().is_err(),
            "names are case-sensitive, as in the spec"
        );
    }

    #[test]
    fn complex_types_without_a_safetensors_name_are_stored_as_pairs() {
        assert_eq!(DType::C128.safetensors_view(&[3]), (DType::F64, vec![3, 2]));
        assert_eq!(DType::C32.safetensors_view(&[]), (DType::F16, vec![2]));
        assert_eq!(DType::C64.safetensors_view(&[3]), (DType::C64, vec![3]));
        for (d, s) in [(DType::C128, &[4u64, 5][..]), (DType::C32, &[7][..])] {
            let (part, shape) = d.safetensors_view(s);
            let n = numel(s).unwrap();
            assert_eq!(d.byte_len(n), part.byte_len(numel(&shape).unwrap()), "{d}");
        }
        assert!(DType::C128.is_complex() && !DType::F64.is_complex());
    }

    #[test]
    fn byte_lengths_respect_packing_and_overflow() {
        assert_eq!(DType::F32.byte_len(3), Some(12));
        assert_eq!(DType::C64.byte_len(2), Some(16));
        assert_eq!(DType::F4.byte_len(2), Some(1));
        assert_eq!(DType::F4.byte_len(3), None, "half a byte");
        assert_eq!(DType::F6_E2M3.byte_len(4), Some(3));
        assert_eq!(DType::F6_E3M2.byte_len(1), None);
        assert_eq!(DType::F64.byte_len(u64::MAX / 4), None);
        assert_eq!(numel(&[]), Some(1));
        assert_eq!(numel(&[3, 0, 5]), Some(0));
        assert_eq!(numel(&[u64::MAX, 2]), None);
    }
}
