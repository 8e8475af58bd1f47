//! The Hugging Face shard index, both ways: `model.safetensors.index.json` maps each tensor to
//! the shard holding it. [`parse`] checks what it reads (shards are plain files next to the
//! index); [`render`] writes what [`parse`] accepts. Pure.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

/// The largest index accepted (a 10,000-tensor index is about 1 MB).
pub const MAX_INDEX_SIZE: u64 = 100_000_000;

/// What is wrong with an index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// More bytes than the limit (100 MB).
    #[error("{0} bytes is over the {MAX_INDEX_SIZE}-byte limit for an index")]
    TooLarge(u64),
    /// Not the JSON of an index.
    #[error("not a safetensors index: {0}")]
    NotAnIndex(String),
    /// A shard name that is not a plain file next to the index.
    #[error("shard `{0}` is not a file next to the index")]
    BadShard(String),
}

/// A parsed index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// Shard file names, sorted, each once.
    pub shards: Vec<String>,
    /// Tensor name → index into [`shards`](Self::shards), sorted by tensor name.
    pub weight_map: BTreeMap<String, usize>,
    /// The index's `metadata`, but `total_size` (values that are not strings are shown as
    /// JSON).
    pub metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct IndexJson {
    /// Kept as written: a value is rendered back as its own text, never built into a tree.
    #[serde(default)]
    metadata: BTreeMap<String, Box<RawValue>>,
    weight_map: BTreeMap<String, String>,
}

/// Parses an index.
///
/// # Errors
///
/// [`IndexError`] for an index over the size limit, JSON that is not an index, or a shard that
/// is not a plain file name.
pub fn parse(bytes: &[u8]) -> Result<Index, IndexError> {
    if bytes.len() as u64 > MAX_INDEX_SIZE {
        return Err(IndexError::TooLarge(bytes.len() as u64));
    }
    let parsed: IndexJson =
        serde_json::from_slice(bytes).map_err(|e| IndexError::NotAnIndex(e.to_string()))?;
    let mut shards: Vec<String> = parsed.weight_map.values().cloned().collect();
    shards.sort();
    shards.dedup();
    if let Some(bad) = shards.iter().find(|name| !is_plain_name(name)) {
        return Err(IndexError::BadShard(bad.clone()));
    }
    let weight_map = parsed
        .weight_map
        .into_iter()
        .map(|(tensor, shard)| {
            let i = shards
                .binary_search(&shard)
                .expect("every shard name was collected");
            (tensor, i)
        })
        .collect();
    // `total_size` is the index's bookkeeping (derivable from the tensors), not metadata of
    // the checkpoint: carried into converted files, it would be stale.
    let metadata = parsed
        .metadata
        .into_iter()
        .filter(|(k, _)| k != "total_size")
        .map(|(k, v)| {
            let text =
                serde_json::from_str::<String>(v.get()).unwrap_or_else(|_| v.get().to_owned());
            (k, text)
        })
        .collect();
    Ok(Index {
        shards,
        weight_map,
        metadata,
    })
}

/// The JSON of an index mapping each tensor to its shard, with the data's `total_size`.
pub fn render(weight_map: &BTreeMap<String, String>, total_size: u64) -> Vec<u8> {
    let index = json!({ "metadata": { "total_size": total_size }, "weight_map": weight_map });
    serde_json::to_vec_pretty(&index).expect("a JSON value always serializes")
}

/// A file name with no directory part: an index may not point outside its directory.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != ".."
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_then_parse_round_trips() {
        let map = BTreeMap::from([
            ("b".to_owned(), "m-00002-of-00002.safetensors".to_owned()),
            ("a".to_owned(), "m-00001-of-00002.safetensors".to_owned()),
            ("c".to_owned(), "m-00001-of-00002.safetensors".to_owned()),
        ]);
        let index = parse(&render(&map, 123)).unwrap();
        assert_eq!(
            index.shards,
            [
                "m-00001-of-00002.safetensors",
                "m-00002-of-00002.safetensors"
            ]
        );
        assert_eq!(index.weight_map["a"], 0);
        assert_eq!(index.weight_map["b"], 1);
        assert!(index.metadata.is_empty(), "total_size is not carried");
    }

    #[test]
    fn shards_outside_the_directory_and_bad_json_are_refused() {
        for shard in ["../../etc/passwd", "a/b.safetensors", "", ".."] {
            let json = format!(r#"{{"weight_map":{{"a":"{shard}"}}}}"#);
            assert_eq!(
                parse(json.as_bytes()),
                Err(IndexError::BadShard(shard.into())),
                "{shard}"
            );
        }
        assert!(matches!(
            parse(b"{\"metadata\":{}}"),
            Err(IndexError::NotAnIndex(_))
        ));
        let meta = parse(br#"{"metadata":{"n":3,"s":"x"},"weight_map":{}}"#).unwrap();
        assert_eq!(
            (meta.metadata["n"].as_str(), meta.metadata["s"].as_str()),
            ("3", "x")
        );
    }
}
