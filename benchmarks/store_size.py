"""What the results store costs per image and method: a measured weak-localisation run (Table 3, the
experiment with the most rows per item), extrapolated to the 50,000 ImageNet validation images.

    python benchmarks/store_size.py                 # the offline set (48 items), 9 methods, ~2 minutes on a CPU
    python benchmarks/store_size.py --db old.db     # measure a store written elsewhere (schema 1 or 2)

Table 3's default methods are 9; Score-CAM is replaced by HiResCAM here only to keep the run
short on a CPU (its rows and its cached 7 x 7 map weigh the same), and RISE runs 100 masks (its map is not
cached: it is larger than 64 x 64, whatever the masks). Bytes are SQLite's own page accounting (`dbstat`),
per table; the gallery (a fixed few items) is left out of the per-item cost.
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

IMAGES, METHODS = 50_000, 9
RUN_METHODS = "random,centre,gradcam,gradcam++,xgradcam,hirescam,ablationcam,rise,jittercam"


def table_bytes(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        rows = connection.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    return dict(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", type=Path, help="measure this store instead of running one")
    parser.add_argument("--limit", type=int, default=48, help="offline items to run (default: all 48)")
    args = parser.parse_args()
    db = args.db
    if db is None:
        from jittercam.cli import main as jittercam

        db = Path(tempfile.mkdtemp()) / "table3.db"
        code = jittercam(["bench", "weak-localisation", "--dataset", "offline", "--methods", RUN_METHODS,
                          "--option", "rise.masks=100", "--limit", str(args.limit), "--db", str(db), "--quiet"])
        if code:
            return code
    sizes = table_bytes(db)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        pairs = connection.execute("SELECT count(*) FROM (SELECT DISTINCT method, item FROM done)").fetchone()[0] \
            if "done" in sizes else 0
        rows = connection.execute("SELECT count(*) FROM results").fetchone()[0]
    if not pairs:
        print(f"{db} has no finished (method, item)", file=sys.stderr)
        return 2
    per_item = {name: size for name, size in sizes.items() if "gallery" not in name and name != "sqlite_schema"}
    total = sum(per_item.values())
    print(f"{db} ({os.path.getsize(db) / 1e6:.2f} MB on disk): {pairs} (method, item) pairs, {rows} result rows "
          f"({rows / pairs:.1f} per pair)")
    for name, size in sorted(per_item.items(), key=lambda kv: -kv[1]):
        print(f"  {name:40s} {size / pairs:8.0f} bytes per pair")
    print(f"  {'all but the gallery':40s} {total / pairs:8.0f} bytes per pair")
    estimate = total / pairs * IMAGES * METHODS
    print(f"Table 3 on {IMAGES:,} images x {METHODS} methods: {estimate / 1e9:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
