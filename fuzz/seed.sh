#!/usr/bin/env bash
# Seeds the fuzz corpora from the committed fixtures: whole torch files for zip_directory,
# their data.pkl records for pickle_vm. Run from the repository root.
set -euo pipefail
mkdir -p fuzz/corpus/zip_directory fuzz/corpus/pickle_vm
cp fixtures/torch/*.pt fixtures/torch/*.ckpt fuzz/corpus/zip_directory/
python3 - <<'PY'
import pathlib, zipfile
out = pathlib.Path("fuzz/corpus/pickle_vm")
for path in pathlib.Path("fixtures/torch").glob("*.*"):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith(".pkl"):
                    (out / f"{path.stem}.pkl").write_bytes(z.read(name))
PY
cp fixtures/torch/gib.data.pkl fuzz/corpus/pickle_vm/
