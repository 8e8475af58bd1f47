//! ggml's tensor types, as GGUF numbers them: plain element types map to ckptio's dtypes, block
//! quantizations keep their name and block geometry, and the ones ckptio decodes dequantize
//! through [`quant`]. Pure.

use crate::dtype::DType;
use crate::tree::BlockScheme;

use super::quant;

/// One ggml type.
#[derive(Debug)]
pub struct GgmlType {
    /// GGUF's number for it.
    pub id: u32,
    /// ggml's name (`Q4_K`).
    pub name: &'static str,
    /// Values per block (1 for a plain element type).
    pub block_values: u64,
    /// Bytes per block.
    pub block_bytes: u64,
    /// What it is.
    pub kind: Kind,
}

/// Whether a ggml type is plain elements, or blocks ckptio does or does not decode.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Elements of a ckptio dtype.
    Plain(DType),
    /// Blocks with a decoder: `(blocks, values out)`, both whole blocks.
    Decoded(fn(&[u8], &mut [f32])),
    /// Blocks ckptio keeps raw.
    Raw,
}

const fn plain(id: u32, name: &'static str, dtype: DType, bytes: u64) -> GgmlType {
    GgmlType {
        id,
        name,
        block_values: 1,
        block_bytes: bytes,
        kind: Kind::Plain(dtype),
    }
}

const fn blocks(id: u32, name: &'static str, values: u64, bytes: u64, kind: Kind) -> GgmlType {
    GgmlType {
        id,
        name,
        block_values: values,
        block_bytes: bytes,
        kind,
    }
}

/// Every type GGUF files carry today (ggml's `ggml_type`, with the block sizes of its
/// `type_traits`); numbers missing here (4, 5, 31–33, 36–38) were retired.
static TYPES: &[GgmlType] = &[
    plain(0, "F32", DType::F32, 4),
    plain(1, "F16", DType::F16, 2),
    blocks(2, "Q4_0", 32, 18, Kind::Decoded(quant::q4_0)),
    blocks(3, "Q4_1", 32, 20, Kind::Decoded(quant::q4_1)),
    blocks(6, "Q5_0", 32, 22, Kind::Decoded(quant::q5_0)),
    blocks(7, "Q5_1", 32, 24, Kind::Decoded(quant::q5_1)),
    blocks(8, "Q8_0", 32, 34, Kind::Decoded(quant::q8_0)),
    blocks(9, "Q8_1", 32, 36, Kind::Raw),
    blocks(10, "Q2_K", 256, 84, Kind::Decoded(quant::q2_k)),
    blocks(11, "Q3_K", 256, 110, Kind::Decoded(quant::q3_k)),
    blocks(12, "Q4_K", 256, 144, Kind::Decoded(quant::q4_k)),
    blocks(13, "Q5_K", 256, 176, Kind::Decoded(quant::q5_k)),
    blocks(14, "Q6_K", 256, 210, Kind::Decoded(quant::q6_k)),
    blocks(15, "Q8_K", 256, 292, Kind::Raw),
    blocks(16, "IQ2_XXS", 256, 66, Kind::Raw),
    blocks(17, "IQ2_XS", 256, 74, Kind::Raw),
    blocks(18, "IQ3_XXS", 256, 98, Kind::Raw),
    blocks(19, "IQ1_S", 256, 50, Kind::Raw),
    blocks(20, "IQ4_NL", 32, 18, Kind::Raw),
    blocks(21, "IQ3_S", 256, 110, Kind::Raw),
    blocks(22, "IQ2_S", 256, 82, Kind::Raw),
    blocks(23, "IQ4_XS", 256, 136, Kind::Raw),
    plain(24, "I8", DType::I8, 1),
    plain(25, "I16", DType::I16, 2),
    plain(26, "I32", DType::I32, 4),
    plain(27, "I64", DType::I64, 8),
    plain(28, "F64", DType::F64, 8),
    blocks(29, "IQ1_M", 256, 56, Kind::Raw),
    plain(30, "BF16", DType::BF16, 2),
    blocks(34, "TQ1_0", 256, 54, Kind::Raw),
    blocks(35, "TQ2_0", 256, 66, Kind::Raw),
    blocks(39, "MXFP4", 32, 17, Kind::Raw),
    blocks(40, "NVFP4", 64, 36, Kind::Raw),
    blocks(41, "Q1_0", 128, 18, Kind::Raw),
];

/// The type GGUF numbers `id`, if ggml has one.
pub fn by_id(id: u32) -> Option<&'static GgmlType> {
    TYPES.iter().find(|t| t.id == id)
}

/// The type named `name` (`Q4_K`), if ggml has one.
#[cfg(test)]
pub fn by_name(name: &str) -> Option<&'static GgmlType> {
    TYPES.iter().find(|t| t.name == name)
}

impl GgmlType {
    /// Bytes of one innermost row of `values` values, or `None` when the row is not a whole
    /// number of blocks (or overflows).
    pub fn row_bytes(&self, values: u64) -> Option<u64> {
        if !values.is_multiple_of(self.block_values) {
            return None;
        }
        (values / self.block_values).checked_mul(self.block_bytes)
    }
}

impl BlockScheme for GgmlType {
    fn name(&self) -> &'static str {
        self.name
    }

    fn block_values(&self) -> u64 {
        self.block_values
    }

    fn block_bytes(&self) -> u64 {
        self.block_bytes
    }

    fn decodes(&self) -> bool {
        matches!(self.kind, Kind::Decoded(_))
    }

    fn dequantize(&self, data: &[u8]) -> Result<Vec<f32>, String> {
        let Kind::Decoded(decode) = self.kind else {
            return Err(format!(
                "ckptio dequantizes Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K…Q6_K, not {}",
                self.name
            ));
        };
        let bytes = self.block_bytes as usize;
        if !data.len().is_multiple_of(bytes) {
            return Err(format!(
                "{} bytes are not whole {}-byte blocks",
                data.len(),
                bytes
            ));
        }
        let values = data.len() / bytes * self.block_values as usize;
        let mut out = Vec::new();
        out.try_reserve_exact(values)
            .map_err(|_| format!("{values} values do not fit in memory"))?;
        out.resize(values, 0.0);
        decode(data, &mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique_and_blocks_are_sane() {
        for (i, t) in TYPES.iter().enumerate() {
            assert!(
                TYPES[i + 1..]
                    .iter()
                    .all(|u| u.id != t.id && u.name != t.name)
            );
            assert!(t.block_values > 0 && t.block_bytes > 0, "{}", t.name);
            assert_eq!(by_id(t.id).unwrap().name, t.name);
            assert_eq!(by_name(t.name).unwrap().id, t.id);
        }
        assert!(by_id(4).is_none(), "retired Q4_2");
    }

    #[test]
    fn rows_are_whole_blocks() {
        let q4k = by_name("Q4_K").unwrap();
        assert_eq!(q4k.row_bytes(512), Some(288));
        assert_eq!(q4k.row_bytes(100), None);
        assert_eq!(by_name("F16").unwrap().row_bytes(3), Some(6));
        assert_eq!(by_name("Q8_0").unwrap().row_bytes(u64::MAX - 31), None);
    }

    #[test]
    fn raw_schemes_say_which_ones_decode() {
        let iq = by_name("IQ2_XXS").unwrap();
        let why = iq.dequantize(&[0; 66]).unwrap_err();
        assert!(why.contains("not IQ2_XXS"), "{why}");
        let q8 = by_name("Q8_0").unwrap();
        assert!(q8.dequantize(&[0; 33]).unwrap_err().contains("whole"));
    }
}
