//! Orbax's `_METADATA`: the pytree's key paths (with whether each key is a dict key or a
//! sequence index), each leaf's value type, and how the arrays are stored. Pure.

use serde::Deserialize;

use super::OrbaxError;

/// One leaf of the saved pytree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// Its key path, each key with whether it indexes a sequence.
    pub keys: Vec<(String, bool)>,
    /// `jax.Array`, `np.ndarray`, `scalar`, `string`, ...
    pub value_type: String,
    /// Orbax did not write it (a placeholder).
    pub skipped: bool,
}

impl Leaf {
    /// The array's name in the store: its keys joined by dots (`params.dense.kernel`).
    pub fn param_name(&self) -> String {
        let keys: Vec<&str> = self.keys.iter().map(|(k, _)| k.as_str()).collect();
        keys.join(".")
    }
}

/// A checkpointable's `_METADATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The leaves, in the order the file lists them.
    pub leaves: Vec<Leaf>,
    /// Arrays live in one OCDBT database (else one directory each).
    pub ocdbt: bool,
    /// Arrays are zarr v3 (else v2).
    pub zarr3: bool,
}

#[derive(Deserialize)]
struct Raw {
    tree_metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    use_ocdbt: bool,
    #[serde(default)]
    use_zarr3: bool,
}

#[derive(Deserialize)]
struct RawLeaf {
    key_metadata: Vec<RawKey>,
    value_metadata: RawValue,
}

#[derive(Deserialize)]
struct RawKey {
    key: serde_json::Value,
    key_type: u8,
}

#[derive(Deserialize)]
struct RawValue {
    value_type: String,
    #[serde(default)]
    skip_deserialize: bool,
}

/// Orbax's `KeyType.SEQUENCE`.
const SEQUENCE: u8 = 1;

/// Parses `_METADATA`.
///
/// # Errors
///
/// [`OrbaxError::Metadata`] for JSON that is not Orbax's tree metadata.
pub fn parse(data: &[u8]) -> Result<Metadata, OrbaxError> {
    let raw: Raw = serde_json::from_slice(data)
        .map_err(|e| OrbaxError::Metadata(format!("not Orbax tree metadata: {e}")))?;
    let mut leaves = Vec::with_capacity(raw.tree_metadata.len());
    for (path, leaf) in raw.tree_metadata {
        let leaf: RawLeaf = serde_json::from_value(leaf)
            .map_err(|e| OrbaxError::Metadata(format!("leaf {path}: {e}")))?;
        if leaf.key_metadata.is_empty() {
            return Err(OrbaxError::Metadata(format!("leaf {path} has no keys")));
        }
        let keys = leaf
            .key_metadata
            .into_iter()
            .map(|k| {
                let text = match k.key {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                (text, k.key_type == SEQUENCE)
            })
            .collect();
        leaves.push(Leaf {
            keys,
            value_type: leaf.value_metadata.value_type,
            skipped: leaf.value_metadata.skip_deserialize,
        });
    }
    Ok(Metadata {
        leaves,
        ocdbt: raw.use_ocdbt,
        zarr3: raw.use_zarr3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orbaxs_tree_metadata_parses_with_key_kinds() {
        let m = parse(br#"{"tree_metadata": {"('opt', 0, 'mu')": {"key_metadata": [{"key": "opt", "key_type": 2}, {"key": "0", "key_type": 1}, {"key": "mu", "key_type": 2}], "value_metadata": {"value_type": "jax.Array", "skip_deserialize": false, "write_shape": [4]}}}, "use_ocdbt": true, "use_zarr3": false}"#).unwrap();
        assert!(m.ocdbt && !m.zarr3);
        assert_eq!(m.leaves[0].param_name(), "opt.0.mu");
        assert_eq!(m.leaves[0].keys[1], ("0".into(), true));
        assert!(
            parse(b"{}")
                .unwrap_err()
                .to_string()
                .contains("tree metadata")
        );
    }
}
