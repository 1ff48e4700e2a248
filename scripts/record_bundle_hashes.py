#!/usr/bin/env python
"""Record the sha256 of every weight file of a bundle in its ``configs/metadata.json``.

Variants are listed under ``metadata["medgen"]["variants"]``; each ``models/<variant>.pt`` found is
added (or updated) with its ``file`` and ``sha256``; scale/degradation come from the file name
``x<scale>_<degradation>.pt``. ``models/model.pt`` (MONAI's default name) is the default variant.
``large_files.yml`` (every weight file with its sha256, the Model Zoo's format) is rewritten too.

    python scripts/record_bundle_hashes.py monai_bundles/brain_mri_super_resolution
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from medgen_core.bundles.large_files import write_large_files
from medgen_core.provenance import sha256_file


def record_hashes(bundle: Path) -> dict:
    meta_path = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    medgen = meta.setdefault("medgen", {})
    variants = medgen.setdefault("variants", {})
    for weights in sorted((bundle / "models").glob("x*_*.pt")):
        m = re.fullmatch(r"x(\d+)_(\w+)", weights.stem)
        if not m:
            continue
        entry = variants.setdefault(weights.stem, {})
        entry.update({"file": f"models/{weights.name}", "scale": int(m.group(1)), "degradation": m.group(2), "sha256": sha256_file(weights)})
    default = medgen.get("default_variant", {}).get("2")
    if default and (bundle / "models" / f"{default}.pt").exists():
        shutil.copyfile(bundle / "models" / f"{default}.pt", bundle / "models" / "model.pt")
        medgen["model_pt"] = {"file": "models/model.pt", "variant": default, "sha256": sha256_file(bundle / "models" / "model.pt")}
    meta_path.write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    write_large_files(bundle)
    return meta


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["monai_bundles/brain_mri_super_resolution"]:
        record_hashes(Path(arg))
        print(f"recorded weight hashes in {arg}/configs/metadata.json")
