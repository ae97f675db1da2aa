"""``segarena predict RUN_ID --input DIR --output DIR``: the stored weights of a finished cell, applied to
new images, masks written in the input's format (PNG or NIfTI).

Inputs are in the model's input space: the size and channels of the task it was trained on (the
dataset plugin's preprocessing is not re-applied): PNG grey or RGB scaled to [0, 1], NIfTI float
arrays as stored ((H, W) or (H, W, C)). Predictions use the evaluation's own batches and seeds, so
images given in test-split order reproduce the cell's stored masks exactly.

Building the parser imports nothing heavy: torch and MLflow load only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from segarena.platform.cli.flags import plugins_arg, store_args

EXAMPLES = """examples:
  segarena predict 3f2a9c... --input new_images/ --output masks/
  segarena predict 3f2a9c... --input scans/ --output masks/ --budget ddim10-e5 --format nifti"""

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".png")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="segment new images with a finished cell's stored weights",
                       description="Load the weights stored with a finished training run (or the training of an "
                                   "evaluation run), predict every image of --input at one budget (default: the "
                                   "run's best) and write one mask per image to --output.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_id", metavar="RUN_ID", help="an MLflow training or evaluation run id of a finished cell")
    p.add_argument("--input", required=True, metavar="DIR", help="images (.png, .nii, .nii.gz), in the model's size")
    p.add_argument("--output", required=True, metavar="DIR", help="where the masks go (created)")
    p.add_argument("--budget", default=None, metavar="NAME", help="an evaluated budget, e.g. ddim5-e3 (default: best)")
    p.add_argument("--format", default=None, choices=["png", "nifti"], help="mask format (default: the inputs')")
    store_args(p)
    plugins_arg(p)
    p.set_defaults(func=cmd_predict)


def read_image(path: Path) -> Any:
    """(C, H, W) float32: PNG / 255, NIfTI as stored."""
    import numpy as np

    from segarena.platform.errors import DataError

    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            arr = np.asarray(Image.open(path)).astype(np.float32) / 255.0
        else:
            import nibabel as nib

            arr = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    except Exception as exc:  # an unreadable file is bad input, named
        raise DataError(f"{path}: cannot read the image ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return np.moveaxis(arr, -1, 0)
    raise DataError(f"{path}: expected a 2D image (H, W) or (H, W, C), got shape {arr.shape}")


def _images(folder: Path, in_channels: int, size: tuple[int, int]) -> tuple[list[str], list[Any], str]:
    from segarena.platform.errors import DataError

    if not folder.is_dir():
        raise DataError(f"--input {folder}: not a folder")
    names, arrays, fmt = [], [], None
    for path in sorted(folder.iterdir()):
        suffix = next((s for s in IMAGE_SUFFIXES if path.name.lower().endswith(s)), None)
        if suffix is None:
            continue
        arr = read_image(path)
        if arr.shape != (in_channels, *size):
            raise DataError(f"{path}: image of shape {tuple(arr.shape)} (channels first), the model takes "
                            f"{(in_channels, *size)}")
        names.append(path.name[: -len(suffix)])
        arrays.append(arr)
        fmt = fmt or ("png" if suffix == ".png" else "nifti")
    if not arrays:
        raise DataError(f"--input {folder}: no .png, .nii or .nii.gz images")
    return names, arrays, fmt or "png"


def _budget_of(run: Any) -> Any:
    from segarena.platform.records import Budget

    p = run.data.params
    return Budget(steps=int(p["budget.steps"]), ensemble=int(p["budget.ensemble"]), sampler=p["budget.sampler"])


class _Chosen(NamedTuple):
    """The stored evaluation a prediction reproduces: its training run, its run, its budget."""

    train: Any
    evaluation: Any
    name: str
    budget: Any
    members_from: Any


def _choose(tracker: Any, run_id: str, budget_name: str | None) -> _Chosen:
    """The training behind ``run_id`` (a training or an evaluation run) and its newest finished evaluation at
    ``budget_name`` (default: the evaluation run's own budget, else the training's best)."""
    from segarena.platform.errors import SegarenaError
    from segarena.platform.store.schema import KIND_EVAL, STATUS_FINISHED, Tag

    try:
        run = tracker.client.get_run(run_id)
    except Exception as exc:
        raise SegarenaError(f"no run {run_id!r} in {tracker.uri}") from exc
    tags = run.data.tags
    train_id = tags.get(Tag.PARENT) if tags.get(Tag.KIND) == KIND_EVAL else run_id
    train = tracker.client.get_run(train_id)
    if train.data.tags.get(Tag.STATUS) != STATUS_FINISHED:
        raise SegarenaError(f"run {train_id}: its training is not finished (status {train.info.status})")
    evals = {r.data.tags.get(Tag.BUDGET): r
             for r in sorted(tracker.runs([train.info.experiment_id], KIND_EVAL), key=lambda r: r.info.start_time)
             if r.data.tags.get(Tag.PARENT) == train_id
             and r.data.tags.get(Tag.STATUS) == STATUS_FINISHED}  # the newest evaluation of each budget
    name = budget_name or (tags.get(Tag.BUDGET) if train_id != run_id else None) \
        or train.data.tags.get(Tag.BEST_BUDGET)
    if name not in evals:
        raise SegarenaError(f"run {train_id}: no finished evaluation at budget {name!r} "
                            f"(evaluated: {', '.join(sorted(k for k in evals if k)) or 'none'})")
    ev = evals[name]
    source = ev.data.tags.get(Tag.MEMBERS_FROM)
    members_from = _budget_of(evals[source]) if source and source != name and source in evals else None
    return _Chosen(train, ev, name, _budget_of(ev), members_from)


def _ticker(n_batches: int) -> Callable[[], None]:
    """A progress bar on a terminal, nothing in a pipe."""
    done = [0]

    def tick() -> None:
        done[0] += 1
        if sys.stdout.isatty():
            filled = int(30 * done[0] / n_batches)
            print(f"\rpredicting [{'#' * filled}{'.' * (30 - filled)}] {done[0]}/{n_batches} batches", end="",
                  flush=True)

    return tick


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from segarena.platform.cli.flags import tracker as _tracker
    from segarena.platform.plugins.registry import discover
    from segarena.platform.plugins.weights import load_model
    from segarena.platform.scoring.mask_files import write_masks
    from segarena.platform.scoring.sampling import predict_as_evaluated
    from segarena.platform.store.schema import Tag
    from segarena.platform.store.workdir import WorkDir

    tracker = _tracker(args)
    chosen = _choose(tracker, args.run_id, args.budget)
    train_id, budget = chosen.train.info.run_id, chosen.budget
    weights = tracker.fetch(train_id, "model", WorkDir.at(args.workdir).model_dir(train_id))
    method = load_model(weights, discover(args.plugins), torch.device("cpu"))
    task = method.task
    names, arrays, fmt = _images(Path(args.input), task.in_channels, tuple(task.image_size))
    images = torch.from_numpy(np.stack(arrays))
    seed = int(chosen.train.data.tags.get(Tag.SEED, 0))
    batch = int(chosen.evaluation.data.params.get("evaluation.batch_size", 8))
    masks = predict_as_evaluated(method, images, budget, seed, batch, members_from=chosen.members_from,
                                 on_batch=_ticker(-(-len(images) // batch)))
    if sys.stdout.isatty():
        print()
    written = write_masks(masks, names, args.output, args.format or fmt, class_names=list(task.class_names) or None,
                          spacing=task.spacing)
    print(f"predicted {len(names)} image(s) with {chosen.train.data.tags.get(Tag.METHOD)} at {chosen.name} "
          f"(nfe {budget.nfe}, seed {seed}) → {len(written)} mask file(s) in {args.output}")
    return 0
