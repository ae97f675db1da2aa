"""`segarena predict` on a finished cell reproduces its stored masks exactly; `segarena evaluate` on
those masks reproduces its per-case table (real Ray, real SQLite store, stochastic test plugin)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from segarena_test_fakes import write_probe

from segarena.platform.cli import main
from segarena.platform.run.driver import run_suite
from segarena.platform.scoring.predictions import load_npz
from segarena.platform.store.schema import Tag
from segarena.platform.store.tracking import KIND_EVAL, KIND_TRAIN, Tracker
from segarena.platform.store.workdir import WorkDir

SUITE = """
name: pred
methods:
  - name: traced
    hparams: {{trace: {trace}}}
    budgets: [{{ensemble: 1}}, {{ensemble: 3}}]
datasets:
  - name: synthetic
    params: {{size: 32, n_cases: 20}}
seeds: [3]
epochs: 1
steps_per_epoch: 2
evaluation: {{batch_size: 3, timing_repeats: 2, timing_warmup: 1, throughput_batch: 2, val_cases: 2,
              save_predictions: all}}
"""


@pytest.mark.ray
def test_predict_reproduces_stored_masks_and_evaluate_reproduces_the_table(ray_session, tmp_path, capsys):
    plugins = write_probe(tmp_path / "plugins", "traced", stochastic=True)  # the shared test plugin, noisy
    suite = tmp_path / "pred.yaml"
    suite.write_text(SUITE.format(trace=tmp_path / "trace.txt"))
    wd = WorkDir.at(tmp_path / "runs")
    summary = run_suite(suite, wd.root, plugin_dirs=[str(plugins)], echo=lambda _: None)
    assert summary.failures == []
    tracker = Tracker(wd.tracking_uri, wd)
    (train,) = tracker.runs([summary.experiment_id], KIND_TRAIN)
    evals = {r.data.tags[Tag.BUDGET]: r for r in tracker.runs([summary.experiment_id], KIND_EVAL)}
    assert set(evals) == {"direct-e1", "direct-e3"}

    from segarena.platform.plugins.registry import discover
    from segarena.platform.run.cell_data import load_cell_data

    data = load_cell_data(discover([plugins], use_env=False), "synthetic", None, {"size": 32, "n_cases": 20},
                          wd.cache, 3)
    images, truth = tmp_path / "images", tmp_path / "truth"
    images.mkdir()
    truth.mkdir()
    # named so that sorted file names keep the test split's order: the evaluation's batches and seeds
    order = {case.case_id: f"{i:03d}_{case.case_id}" for i, case in enumerate(data.cases("test"))}
    for case in data.cases("test"):
        name = f"{order[case.case_id]}.nii.gz"
        nib.save(nib.Nifti1Image(case.image[0].numpy().astype(np.float32), np.eye(4)), str(images / name))
        nib.save(nib.Nifti1Image(case.mask[0].numpy().astype(np.uint8), np.eye(4)), str(truth / name))
    for name, run in evals.items():
        stored = load_npz(tracker.fetch(run.info.run_id, "predictions/predictions.npz", tmp_path / "dl"))
        out = tmp_path / f"pred-{name}"
        code = main(["predict", train.info.run_id, "--input", str(images), "--output", str(out), "--budget", name,
                     "--workdir", str(wd.root), "--plugins", str(plugins)])
        assert code == 0, capsys.readouterr()
        for case_id, mask in zip(stored["case_ids"], stored["masks"], strict=True):
            written = np.asarray(nib.load(str(out / f"{order[case_id]}.nii.gz")).dataobj).astype(bool)
            assert np.array_equal(written, mask[0]), (name, case_id)
        table = tmp_path / f"table-{name}.csv"
        assert main(["evaluate", "--pred", str(out), "--truth", str(truth), "--output", str(table)]) == 0
        ours = pd.read_csv(table).set_index("case_id").sort_index()
        logged = tracker.load_table(run.info.run_id)
        logged = logged.assign(case_id=logged["case_id"].map(order)).set_index("case_id").sort_index()
        for col in ("dice", "iou", "hd95"):
            np.testing.assert_allclose(ours[col].to_numpy(), logged[col].to_numpy(), rtol=0, atol=1e-12)
    # both budgets saved the same test cases in the same order
    e1 = load_npz(tracker.fetch(evals["direct-e1"].info.run_id, "predictions/predictions.npz", tmp_path / "a"))
    e3 = load_npz(tracker.fetch(evals["direct-e3"].info.run_id, "predictions/predictions.npz", tmp_path / "b"))
    assert e1["case_ids"] == e3["case_ids"]
