//! Byte sizes on the command line: `8MiB`, `8M`, `512k`, `1.5G`, `1048576`. `K`, `M`, `G`, `T`
//! (with or without `iB`) are powers of 1024, as in curl's `--limit-rate`; `KB`, `MB`, `GB`,
//! `TB` are powers of 1000.

/// A size in bytes, parsed by clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("`{s}` is not a size (try 8MiB, 512k, 1G)"))?;
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "unknown unit `{other}` in `{s}` (use k, M, G, T, KiB.., KB..)"
                ));
            }
        };
        let bytes = number * multiplier as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(format!("`{s}` is out of range"));
        }
        Ok(Self(bytes as u64))
    }
}

/// The size in the largest binary unit it is a whole number of (`16MiB`, `1536KiB`, `100`):
/// what `--help` shows for a default, and parses back to the same size.
impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let units = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
        match units
            .iter()
            .find(|(shift, _)| self.0 != 0 && self.0.is_multiple_of(1u64 << shift))
        {
            Some((shift, unit)) => write!(f, "{}{unit}", self.0 >> shift),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    fn size(s: &str) -> Result<u64, String> {
        s.parse::<ByteSize>().map(|b| b.0)
    }

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(size("1048576"), Ok(1 << 20));
        assert_eq!(size("8MiB"), Ok(8 << 20));
        assert_eq!(size("8M"), Ok(8 << 20));
        assert_eq!(size("512k"), Ok(512 << 10));
        assert_eq!(size("1.5G"), Ok(3 << 29));
        assert_eq!(size("2MB"), Ok(2_000_000));
        assert_eq!(size(" 64 KiB "), Ok(64 << 10));
    }

    #[test]
    fn a_size_prints_in_its_largest_whole_binary_unit_and_parses_back() {
        for (bytes, shown) in [
            (16 << 20, "16MiB"),
            (1536 << 10, "1536KiB"),
            (3 << 40, "3TiB"),
            (100, "100"),
        ] {
            assert_eq!(ByteSize(bytes).to_string(), shown);
            assert_eq!(size(shown), Ok(bytes));
        }
    }

    #[test]
    fn bad_sizes_are_rejected() {
        for bad in ["", "M", "8 parsecs", "0", "-1M", "1e3"] {
            assert!(size(bad).is_err(), "{bad}");
        }
    }
}
