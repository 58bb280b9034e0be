"""Summarize several bench_save_load.py --json runs: per-run figures and their median.

    .venv/bin/python benchmarks/summarize.py run1.json run2.json run3.json [--markdown]

For every data set, method and mode it prints each run's median time and the median of those
(with GB/s), then every sealed/peer ratio per run and its median (ratio = peer time / sealed time,
above 1: sealedckpt is faster), then the lazy-read share of a full load. Runs disagree on these
noisy VMs; the median of run medians is the figure docs/PERFORMANCE.md quotes.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

KEY_RATIOS = [  # (sealed method, peer method) pairs the targets name
    ("sealed.load", "torch.load"),
    ("sealed.load", "safetensors.load_file+clone"),
    ("sealed.load", "tensorizer.load+dec"),
    ("sealed.load", "readinto (bound)"),
    ("sealed.load+verify", "torch.load"),
    ("sealed.save", "safetensors.save_file"),
    ("sealed.save", "tensorizer.save+enc"),
]


def _medians(run: dict[str, Any], ds: str) -> dict[tuple[str, str], float]:
    out = {}
    for r in run["datasets"][ds]["results"]:
        if r.get("median_s"):
            out[r["method"], r["mode"]] = r["median_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = ap.parse_args()
    runs = [json.loads(p.read_text()) for p in args.runs]
    sep = " | " if args.markdown else "  "
    for ds in runs[0]["datasets"]:
        logical = runs[0]["datasets"][ds]["info"].get("logical_bytes")
        meds = [_medians(r, ds) for r in runs]
        methods = list(dict.fromkeys(m for m, _ in meds[0]))
        print(f"\n== {ds} ({len(runs)} runs; median of per-run medians) ==")
        if args.markdown:
            print("| method | warm s (runs) | warm median | fresh s (runs) | fresh median |\n|---|---|---|---|---|")
        for m in methods:
            cells = [m]
            for mode in ("warm", "fresh"):
                vals = [x[m, mode] for x in meds if (m, mode) in x]
                if not vals:
                    cells += ["-", "-"]
                    continue
                med = statistics.median(vals)
                gbs = f" ({logical / med / 1e9:.2f} GB/s)" if logical else ""
                cells += [" / ".join(f"{v:.3f}" for v in vals), f"{med:.3f}{gbs}"]
            print(("| " if args.markdown else "  ") + sep.join(cells) + (" |" if args.markdown else ""))
        if args.markdown:
            print("\n| ratio | warm (runs) | warm median | fresh (runs) | fresh median |\n|---|---|---|---|---|")
        for sealed, peer in KEY_RATIOS:
            cells = [f"{sealed} / {peer}"]
            for mode in ("warm", "fresh"):
                rs = [x[peer, mode] / x[sealed, mode] for x in meds if (peer, mode) in x and (sealed, mode) in x]
                if not rs:
                    cells += ["-", "-"]
                    continue
                cells += [" / ".join(f"{v:.2f}x" for v in rs), f"{statistics.median(rs):.2f}x"]
            if cells[1] != "-" or cells[3] != "-":
                print(("| " if args.markdown else "  ") + sep.join(cells) + (" |" if args.markdown else ""))
        lazies = [r["datasets"][ds].get("lazy") for r in runs]
        if all(lazies):
            for mode in ("warm", "fresh"):
                shares = [lz["ratio_to_load"].get(mode) for lz in lazies if lz and lz.get("ratio_to_load")]
                shares = [s for s in shares if s is not None]
                if shares:
                    per = " / ".join(f"{s:.1%}" for s in shares)
                    med = statistics.median(shares)
                    print(f"  lazy get_tensor share of a full load, {mode}: {per}; median {med:.1%}")


if __name__ == "__main__":
    main()
