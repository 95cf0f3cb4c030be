"""Write per-image class pixel counts for rare class sampling: ``python -m experiments.dataprep``.

    python -m experiments.dataprep --dataset gta --root data/mini/gta --out data/mini/gta/class_stats.json

Training counts them itself on first use (cached under ``<runs_root>/cache``); this command
does it ahead of time, e.g. once for a large real dataset.
"""

from __future__ import annotations

import argparse

from experiments.data.class_stats import class_frequencies, class_statistics
from experiments.data.datasets import DATASETS, load


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write per-image class pixel counts for rare class sampling.")
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--root", required=True, help="dataset root in its published layout")
    parser.add_argument("--split", default=None, help="default: 'all' for gta/synthia, else 'train'")
    parser.add_argument("--condition", default=None, help="acdc only: fog, night, rain or snow")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    split = args.split or ("all" if args.dataset in ("gta", "synthia") else "train")
    options = {"condition": args.condition} if args.dataset == "acdc" else {}
    dataset = load(args.dataset, args.root, split, **options)
    records = class_statistics(dataset, args.out)
    frequencies = class_frequencies(records)
    present = ", ".join(f"{c}:{f:.3f}" for c, f in enumerate(frequencies) if f > 0)
    print(f"wrote {args.out}: {len(records)} images; class frequencies {present}")


if __name__ == "__main__":
    main()
