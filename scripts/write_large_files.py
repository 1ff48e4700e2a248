#!/usr/bin/env python
"""(Re)write ``large_files.yml`` of bundles from their ``models/`` weight files (path, ``url: ""``, sha256).

Run it after changing a bundle's weights; ``medgen bundle check`` (static check ``large_files``) and the
Model Zoo's ``verify_bundle_directory`` refuse a list whose hashes no longer match.

    python scripts/write_large_files.py monai_bundles/brain_tissue_genseg [more bundle folders]
    python scripts/write_large_files.py --all          # every bundle under monai_bundles/
"""

from __future__ import annotations

import sys
from pathlib import Path

from medgen_core.bundles.large_files import write_large_files

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    roots = sorted(p.parents[1] for p in Path("monai_bundles").glob("*/configs/metadata.json")) if args == ["--all"] else [Path(a) for a in args]
    for root in roots:
        print(f"wrote {write_large_files(root)}")
