"""The progress callback without Ray: fake trials (``.trial_id``, ``.config``), a fake clock, and a
small event simulator standing in for Tune's FIFO scheduler over ``concurrency`` slots."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import pytest

from segarena.platform.run.eta import eta_errors, schedule_end
from segarena.platform.run.progress import Progress, headline_key, job_info


@dataclass
class FakeTrial:
    trial_id: str
    config: dict


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def job(method: str, epochs: int, spe: int | None, dataset: str = "synthetic", seed: int = 0,
        kind: str = "train") -> dict:
    return {"job": {"kind": kind, "method": method, "dataset": dataset, "seed": seed, "epochs": epochs,
                    "steps_per_epoch": spe, "cell": {"method": method}}}


def make(total: int, concurrency: int, plan: list[dict] | None = None):
    clock, lines = Clock(), []
    progress = Progress(total, concurrency, echo=lines.append, plan=plan, live=False, clock=clock)
    return progress, clock, lines


def test_job_info_reads_job_configs():
    assert job_info(job("unet", 4, 20, seed=1)) == ("unet × synthetic · seed 1", "unet", 80, 4)
    assert job_info(job("cdal", 5, 10, "mni152-gm", 2)) == ("cdal × mni152-gm · seed 2", "cdal", 50, 5)
    assert job_info(job("unet", 4, None)).planned_steps == 0  # learned from the first epoch
    info = job_info(job("sdseg", 20, 20, kind="evaluate"))
    assert info.planned_steps == 0 and info.epochs == 0 and info.label.endswith("(evaluate)")


def test_headline_is_the_plugins_key_else_the_first_loss():
    result = {"train/d_real": 0.7, "train/g_mse": 0.01, "train/steps": 20.0}
    assert headline_key({**result, "headline": "g_mse"}) == "train/g_mse"
    assert headline_key({**result, "headline": "train/g_mse"}) == "train/g_mse"
    assert headline_key(result) == "train/d_real"
    assert headline_key({"train/steps": 20.0, "train/stage": 1.0, "train/ae_loss": 0.3}) == "train/ae_loss"


def test_schedule_end_fills_free_slots_in_order():
    assert schedule_end([10.0], [5.0, 5.0], 2) == 10.0  # free slot takes both pending cells: 5 + 5
    assert schedule_end([10.0, 2.0], [5.0], 2) == 10.0
    assert schedule_end([], [3.0, 3.0, 3.0], 1) == 9.0


def test_eta_uses_each_methods_step_time_and_the_planned_steps():
    plan = [job("unet", 4, 20), job("medsegdiff", 20, 20), job("unet", 4, 20, "mni152-gm"),
            job("medsegdiff", 20, 20, "mni152-gm")]
    progress, clock, lines = make(4, 1, plan)
    a1 = FakeTrial("a1", plan[0])
    progress.on_trial_start(0, [], a1)
    assert progress.remaining() is None and "ETA ?" in lines[-1]
    assert "starting workers" in lines[-1]
    clock.t = 10.0  # 6 s start-up, then a 4 s epoch of 20 steps: 0.2 s/step for unet
    progress.on_trial_result(0, [], a1, {"phase": "train", "epoch": 0, "train/steps": 20.0, "epoch_s": 4.0,
                                         "train/loss": 0.5})
    # unet: 60 steps left × 0.2; medsegdiff not seen yet: unet's step time, 400 steps, + 6 s start-up each
    assert progress.remaining() == pytest.approx(12 + (6 + 80) + (6 + 16) + (6 + 80))
    for e in (1, 2, 3):
        clock.t = 10.0 + 4 * e
        progress.on_trial_result(0, [], a1, {"phase": "train", "epoch": e, "train/steps": 20.0, "epoch_s": 4.0})
    clock.t = 25.0  # 3 s of evaluation and logging after the last epoch
    progress.on_trial_result(0, [], a1, {"cell_status": "finished"})
    b1 = FakeTrial("b1", plan[1])
    progress.on_trial_start(0, [], b1)
    clock.t = 51.0  # 6 s start-up + one 20 s epoch of 20 steps: medsegdiff takes 1 s/step
    progress.on_trial_result(0, [], b1, {"phase": "train", "epoch": 0, "train/steps": 20.0, "epoch_s": 20.0})
    # b1: 380 steps + 3 s tail; a2: 6 + 16 + 3; b2: 6 + 400 + 3 — what this schedule really takes from here
    assert progress.remaining() == pytest.approx(383 + 25 + 409)
    assert "epoch 1/20" in lines[-1] and "ETA 13:37" in lines[-1]


def test_steps_per_epoch_left_open_is_learned_from_the_first_epoch():
    plan = [job("unet", 10, None)]
    progress, clock, _ = make(1, 1, plan)
    trial = FakeTrial("t", plan[0])
    progress.on_trial_start(0, [], trial)
    clock.t = 5.0
    progress.on_trial_result(0, [], trial, {"phase": "train", "epoch": 0, "train/steps": 12.0, "epoch_s": 3.0})
    assert progress.remaining() == pytest.approx(9 * 3.0)


def test_resumed_cell_counts_the_epochs_already_done():
    plan = [job("unet", 10, 10)]
    progress, clock, _ = make(1, 1, plan)
    trial = FakeTrial("t", plan[0])
    progress.on_trial_start(0, [], trial)
    clock.t = 4.0  # resumed from a checkpoint: the first result is epoch 6
    progress.on_trial_result(0, [], trial, {"phase": "train", "epoch": 6, "train/steps": 10.0, "epoch_s": 2.0})
    assert progress.remaining() == pytest.approx(3 * 2.0)


@dataclass(frozen=True)
class SimCell:
    method: str
    epochs: int
    spe: int
    step_s: float
    dataset: str


def simulate(cells: list[SimCell], concurrency: int, startup: float = 8.0, tails: dict | None = None,
             prior: dict | None = None):
    """Drive the callback the way Tune would: FIFO over ``concurrency`` slots; returns (progress, end, lines)."""
    tails = tails or {}
    plan = [job(c.method, c.epochs, c.spe, c.dataset) for c in cells]
    clock, lines = Clock(), []
    progress = Progress(len(cells), concurrency, echo=lines.append, plan=plan, live=False, clock=clock, prior=prior)
    events: list[tuple[float, int, str, int, int]] = []  # (time, order, kind, cell, epoch)
    order = 0
    queue = list(range(len(cells)))

    def launch(now: float) -> None:
        nonlocal order
        i = queue.pop(0)
        clock.t = now
        progress.on_trial_start(0, [], FakeTrial(str(i), plan[i]))
        t = now + startup
        for e in range(cells[i].epochs):
            t += cells[i].spe * cells[i].step_s
            heapq.heappush(events, (t, order := order + 1, "epoch", i, e))
        heapq.heappush(events, (t + tails.get(cells[i].method, 2.0), order := order + 1, "end", i, -1))

    for _ in range(min(concurrency, len(queue))):
        launch(0.0)
    end = 0.0
    while events:
        t, _, kind, i, e = heapq.heappop(events)
        clock.t = end = t
        trial = FakeTrial(str(i), plan[i])
        if kind == "epoch":
            c = cells[i]
            progress.on_trial_result(0, [], trial, {"phase": "train", "epoch": e, "train/steps": float(c.spe),
                                                    "epoch_s": c.spe * c.step_s, "train/loss": 0.1})
        else:
            progress.on_trial_result(0, [], trial, {"cell_status": "finished"})
            if queue:
                launch(t)
    return progress, end, lines


# the default suite's shape: long diffusion cells first, short baselines after, two at a time
MIXED = ([SimCell("medsegdiff", 20, 20, 0.5, d) for d in ("a", "b")]
         + [SimCell("sdseg", 20, 20, 0.4, d) for d in ("a", "b")]
         + [SimCell(m, 4, 20, s, d) for m, s in (("cdal", 0.6), ("unet", 0.1), ("transunet", 0.12))
            for d in ("a", "b")])
TAILS = {"medsegdiff": 30.0, "sdseg": 10.0}


def test_eta_is_exact_once_every_method_left_was_measured():
    cells = MIXED + [SimCell(c.method, c.epochs, c.spe, c.step_s, c.dataset + "-seed1") for c in MIXED]
    progress, end, lines = simulate(cells, 2, tails=TAILS)
    errors = eta_errors(progress.eta_samples, end)
    assert len(errors) == len(cells) and progress.done == len(cells)
    assert errors[0] is None  # nothing measured at the first start: "?" rather than a guess
    checked = 0
    for k, err in enumerate(errors):  # equal pairs finish together: cells 2j, 2j+1 start once all before ended
        if {c.method for c in cells[k:]} <= {c.method for c in cells[:k - k % 2]}:
            assert err is not None and abs(err) < 0.01, (k, err)
            checked += 1
    assert checked == len(MIXED)  # the whole second seed
    assert lines[-1].startswith(f"[{len(cells)}/{len(cells)} cells") and "ETA 0:00" in lines[-1]


def test_costs_of_an_earlier_run_make_the_first_etas_right():
    first, _, _ = simulate(MIXED, 2, tails=TAILS)
    prior = first.model.costs()
    assert prior["step_s"]["medsegdiff"] == pytest.approx(0.5) and prior["tail_s"]["sdseg"] == pytest.approx(10.0)
    progress, end, _ = simulate(MIXED, 2, tails=TAILS, prior=prior)
    errors = eta_errors(progress.eta_samples, end)
    assert all(e is not None and abs(e) < 0.01 for e in errors), errors
    without, end2, _ = simulate(MIXED, 2, tails=TAILS)
    third = eta_errors(without.eta_samples, end2)[2]
    assert third is not None and abs(third) > 0.3  # what the prior fixes: unmeasured methods guessed wrong


def test_sdseg_stage_change_is_noted_once():
    plan = [job("sdseg", 4, 10)]
    progress, clock, lines = make(1, 1, plan)
    trial = FakeTrial("s", plan[0])
    progress.on_trial_start(0, [], trial)
    for e, stage in enumerate((1.0, 1.4, 2.0, 2.0)):
        clock.t = 5.0 + e
        progress.on_trial_result(0, [], trial, {"phase": "train", "epoch": e, "train/steps": 10.0, "epoch_s": 1.0,
                                                "train/stage": stage, "train/loss": 0.2})
    notes = [ln for ln in lines if "stage" in ln]
    assert len(notes) == 1 and "stage 1 → 2 in epoch 2" in notes[0]


def test_failures_are_counted_and_listed():
    plan = [job("unet", 1, 1), job("unet", 1, 1, seed=1)]
    progress, _, lines = make(2, 2, plan)
    t0, t1 = FakeTrial("0", plan[0]), FakeTrial("1", plan[1])
    progress.on_trial_start(0, [], t0)
    progress.on_trial_start(0, [], t1)
    progress.on_trial_result(0, [], t0, {"cell_status": "failed", "error": "unet produced loss=nan"})
    progress.on_trial_error(0, [], t1)
    assert progress.failed == 2 and progress.failures[0] == ("unet × synthetic · seed 0", "unet produced loss=nan")
    assert "FAILED" in lines[-1] and "\x1b" not in "".join(lines)  # plain lines carry no colour codes


def test_live_mode_pins_one_line_per_running_cell():
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream, clock = Tty(), Clock()
    plan = [job("unet", 4, 10), job("cdal", 4, 10)]
    progress = Progress(2, 2, plan=plan, stream=stream, clock=clock)
    assert progress.live is not None  # echo is print and the stream is a terminal
    a, b = FakeTrial("a", plan[0]), FakeTrial("b", plan[1])
    progress.on_trial_start(0, [], a)
    progress.on_trial_start(0, [], b)
    clock.t = 3.0
    progress.on_trial_result(0, [], b, {"phase": "train", "epoch": 0, "train/steps": 10.0, "epoch_s": 2.0,
                                        "train/d_real": 0.7, "train/g_mse": 0.25, "headline": "g_mse"})
    block = progress._block()
    assert len(block) == 3  # the head line and one per running cell
    assert "starting workers" in block[1] and "epoch 1/4" in block[2] and "g_mse=0.25" in block[2]
    assert "d_real" not in block[2]
    progress.on_experiment_end([])
    assert "\x1b[" in stream.getvalue()  # cursor movement happened on the terminal
