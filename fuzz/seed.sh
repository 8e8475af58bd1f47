#!/usr/bin/env bash
# Seeds the fuzz corpora from the committed fixtures: whole torch files for zip_directory,
# their data.pkl records for pickle_vm and torch_pickle, DCP .metadata files for
# dcp_metadata, a manifest ckptio writes for manifest, the legacy torch fixtures for
# torch_legacy, the GGUF fixtures for gguf, and torch zips and safetensors files (with DCP
# items cut out of their data files) for open_bytes. Run from the repository root.
set -euo pipefail
mkdir -p fuzz/corpus/{zip_directory,pickle_vm,torch_pickle,dcp_metadata,manifest,gguf,torch_legacy,orbax,open_bytes}
find fixtures/orbax/standard \( -name manifest.ocdbt -o -path '*/d/*' \) -exec cp {} fuzz/corpus/orbax/ \;
cp fixtures/torch/legacy*.pt fuzz/corpus/torch_legacy/
cp fixtures/gguf/*.gguf fuzz/corpus/gguf/
cp fixtures/torch/*.pt fixtures/torch/*.ckpt fuzz/corpus/zip_directory/
cp fixtures/torch/state_dict.pt fixtures/torch/views.pt fixtures/torch/expanded.pt fixtures/tiny.safetensors \
    fixtures/dtypes.safetensors fuzz/corpus/open_bytes/
head -c 2000 fixtures/torch/dcp_single/__0_0.distcp > fuzz/corpus/open_bytes/dcp_item.distcp
python3 - <<'PY'
import pathlib, zipfile
out = pathlib.Path("fuzz/corpus/pickle_vm")
for path in pathlib.Path("fixtures/torch").glob("*.*"):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.endswith(".pkl"):
                    # Stored entries, read raw: no_crc.pt records no CRC, which zipfile rejects.
                    with open(path, "rb") as f:
                        f.seek(info.header_offset + 26)
                        skip = int.from_bytes(f.read(2), "little") + int.from_bytes(f.read(2), "little")
                        f.seek(skip, 1)
                        (out / f"{path.stem}.pkl").write_bytes(f.read(info.compress_size))
PY
cp fixtures/torch/gib.data.pkl fuzz/corpus/pickle_vm/
cp fuzz/corpus/pickle_vm/* fuzz/corpus/torch_pickle/
for dir in fixtures/torch/dcp_*/; do
    cp "$dir.metadata" "fuzz/corpus/dcp_metadata/$(basename "$dir").metadata"
done
tmp=$(mktemp -d)
cargo run -q --bin ckptio -- convert fixtures/torch/training_state.pt "$tmp/ckpt" -q
cp "$tmp/ckpt/manifest.json" fuzz/corpus/manifest/training_state.json
rm -rf "$tmp"
