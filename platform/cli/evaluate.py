"""``segarena evaluate --pred DIR --truth DIR``: score a folder of predicted masks against a folder of truth
masks under the same metric contract as a suite (Dice, IoU, HD95, NSD), so a lab can score a method that
is not a plugin yet. Files pair by name; PNG or NIfTI; one class per flat folder, or one sub-folder per class.

Building the parser imports nothing heavy: numpy, torch and MONAI load only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  segarena evaluate --pred out/masks --truth data/labels --output per_case.csv
  segarena evaluate --pred out --truth labels --spacing 0.8 0.8     # PNG has no spacing: give it in mm
  segarena evaluate --pred out --truth labels --nsd-tolerance 2 --output per_case.parquet"""

TABLE_SUFFIXES = (".csv", ".parquet")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="score a folder of predicted masks against truth masks",
                       description="Score predicted masks against truth masks with the suite's metric contract: "
                                   "Dice, IoU, HD95 and NSD per case and class, empty masks by the same rules. "
                                   "Files pair by name (x.png with x.png, x.nii.gz with x.nii); a folder holds "
                                   "one class, or one sub-folder per class. Prints the means; --output writes "
                                   "the per-case table.",
                       epilog=EXAMPLES)
    p.add_argument("--pred", required=True, metavar="DIR", help="predicted masks (binary: 0/1, or 0/255 in PNG)")
    p.add_argument("--truth", required=True, metavar="DIR", help="ground-truth masks, same names and layout")
    p.add_argument("--spacing", type=float, nargs="+", default=None, metavar="MM",
                   help="voxel size per axis in mm (default: the truth NIfTI header; PNG: pixels)")
    p.add_argument("--nsd-tolerance", type=float, default=None, metavar="T",
                   help="NSD tolerance in the distance unit (mm with spacing, else px; default 1)")
    p.add_argument("--class-name", default=None, metavar="NAME",
                   help="the class name of flat folders (default 1; class sub-folders are named by their folder)")
    p.add_argument("--output", default=None, metavar="FILE", help="write the per-case table (.csv or .parquet)")
    p.set_defaults(func=cmd_evaluate)


def score_folders(pred_dir: str | Path, truth_dir: str | Path, spacing: list[float] | None = None,
                  nsd_tolerance_mm: float | None = None, class_name: str | None = None) -> Any:
    """The per-case table (pandas) of every paired case: the suite's per-case columns plus NSD.
    ``class_name`` names the single class of flat folders (default ``1``, as the harness names it)."""
    import numpy as np
    import pandas as pd

    from segarena.platform.errors import DataError
    from segarena.platform.scoring.mask_files import SINGLE_CLASS, pair_folders, read_mask
    from segarena.platform.scoring.metrics import nsd, nsd_tolerance, per_case_metrics

    tolerance = nsd_tolerance(nsd_tolerance_mm)
    classes, pairs = pair_folders(pred_dir, truth_dir)
    rows: list[dict[str, Any]] = []
    for name, by_class in pairs.items():
        preds, truths, case_spacing = [], [], None
        for cls in classes:
            pred_path, truth_path = by_class[cls]
            p, t = read_mask(pred_path), read_mask(truth_path)
            if p.array.shape != t.array.shape:
                raise DataError(f"{pred_path}: shape {p.array.shape} != truth {truth_path.name} {t.array.shape}")
            if truths and t.array.shape != truths[0].shape:
                raise DataError(f"{truth_path}: shape {t.array.shape} differs from class {classes[0]}'s "
                                f"{truths[0].shape}")
            preds.append(p.array)
            truths.append(t.array)
            case_spacing = case_spacing or t.spacing
        s = spacing if spacing is not None else case_spacing
        if s is not None and len(s) != truths[0].ndim:
            raise DataError(f"{by_class[classes[0]][1]}: spacing {tuple(s)} has {len(s)} values for a "
                            f"{truths[0].ndim}D mask {truths[0].shape}")
        pred, gt = np.stack(preds), np.stack(truths)
        names = [class_name] if class_name and classes == [SINGLE_CLASS] else classes
        case_rows = per_case_metrics(pred, gt, s, name, names, channels_first=True)
        for k, row in enumerate(case_rows):
            row["nsd"] = nsd(pred[k], gt[k], tolerance, s)
            row["nsd_tolerance"] = tolerance
        rows += case_rows
    return pd.DataFrame(rows)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from segarena.platform.errors import SegarenaError
    from segarena.platform.scoring.aggregate import aggregate

    output = Path(args.output) if args.output else None
    if output is not None and output.suffix.lower() not in TABLE_SUFFIXES:
        raise SegarenaError(f"--output {output}: the per-case table is written as .csv or .parquet")
    if args.nsd_tolerance is not None and args.nsd_tolerance <= 0:
        raise SegarenaError(f"--nsd-tolerance {args.nsd_tolerance}: must be > 0")
    table = score_folders(args.pred, args.truth, args.spacing, args.nsd_tolerance, args.class_name)
    means = aggregate(table)
    per_case = table.groupby("case_id")["nsd"].mean()
    unit = "/".join(sorted(table["hd95_unit"].unique()))  # mm with spacing, px without
    print(f"{int(means['n_cases'])} cases · {table['class'].nunique()} class(es) · "
          f"dice {means['dice']:.4f} · iou {means['iou']:.4f} · hd95 {means['hd95']:.2f} {unit} · "
          f"nsd@{table['nsd_tolerance'].iloc[0]:g}{unit} {per_case.mean():.4f}")
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.suffix.lower() == ".csv":
            table.to_csv(output, index=False)
        else:
            table.to_parquet(output, index=False)
        print(f"per-case table: {output}")
    return 0
