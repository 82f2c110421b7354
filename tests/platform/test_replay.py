"""A trial another sweep already ran is replayed, not computed (``trainables.replay``): the same
reports, checkpoints and trial-seconds as the original, training going on from the original's
last state where the original was stopped early; a trial that differs in anything that decides
its reports is computed."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import types
from pathlib import Path

import pytest
import torch

import promptinit.trainables.scoring as scoring
import promptinit.trainables.trainable as trainable
from promptinit.analysis.results import _curve_and_summary
from promptinit.search.phases.jobs import checkpoint_key
from promptinit.trainables import metrics as M
from promptinit.trainables.replay import Original, Report, find_original

BASELINE = {("a", 100): 0.5, ("b", 100): 0.4}
STEP_SECONDS = 100.0  # the fake Tune's trial-seconds per report


class Stop(Exception):
    """What Tune does to a trial its scheduler stops: report() does not return."""


class FakeTune:
    """Tune's side of a function trainable, on disk as Tune keeps a trial: ``result.json`` (one
    line per report, with ``time_total_s`` and ``checkpoint_dir_name``) and the checkpoints copied
    into ``checkpoint_<n>`` folders. ``stop_after``: reports before the scheduler stops the trial."""

    def __init__(self, trial_dir: Path, stop_after: int | None = None, restore: Path | None = None):
        self.dir, self.stop_after, self.restore = trial_dir, stop_after, restore
        self.lines: list[dict] = []
        self.checkpoints = 0
        self.Checkpoint = types.SimpleNamespace(from_directory=lambda folder: Path(folder))
        trial_dir.mkdir(parents=True, exist_ok=True)

    def get_checkpoint(self):
        if self.restore is None:
            return None
        folder = self.restore
        return types.SimpleNamespace(as_directory=lambda: contextlib.nullcontext(str(folder)))

    def report(self, metrics: dict, checkpoint: Path | None = None) -> None:
        line = {**metrics, "training_iteration": len(self.lines) + 1, "time_total_s": STEP_SECONDS * (len(self.lines) + 1)}
        if checkpoint is not None:
            name = f"checkpoint_{self.checkpoints:06d}"
            shutil.copytree(checkpoint, self.dir / name)
            self.checkpoints += 1
            line["checkpoint_dir_name"] = name
        self.lines.append(line)
        (self.dir / "result.json").write_text("".join(json.dumps(x, default=str) + "\n" for x in self.lines))
        if self.stop_after is not None and len(self.lines) >= self.stop_after:
            raise Stop


class _Method:
    """A method whose prompt counts its outer steps (so each report's scores differ)."""

    def __init__(self):
        self.prompt = torch.zeros(2, 4)

    def step(self) -> dict:
        self.prompt = self.prompt + 1
        return {M.TRAIN_LOSS: 1.0 / float(self.prompt[0, 0])}


@pytest.fixture
def fakes(monkeypatch):
    """The trainable with a fake backbone, method and validation; records the methods built and
    the checkpoint folders loaded."""
    import promptinit.backbones as backbones
    import promptinit.methods as methods
    import promptinit.methods.checkpoint as checkpoint

    seen = types.SimpleNamespace(built=0, loaded=[], dtype="bfloat16")

    def build(*a, **kw):
        seen.built += 1
        return _Method()

    def save(method, folder):
        (Path(folder) / checkpoint.STATE).write_text(json.dumps({"steps": float(method.prompt[0, 0])}))

    def load(method, folder):
        seen.loaded.append(Path(folder))
        method.prompt = torch.full((2, 4), json.loads((Path(folder) / checkpoint.STATE).read_text())["steps"])

    monkeypatch.setattr(trainable, "_node_id", lambda: "node")
    monkeypatch.setattr(trainable, "_node_dtype", lambda backbone: seen.dtype)
    monkeypatch.setattr(backbones, "Backbone", lambda config: object())
    monkeypatch.setattr(backbones, "BackboneConfig", lambda **kw: kw)
    monkeypatch.setattr(backbones, "save_prompt", lambda prompt, path, meta: Path(path).write_bytes(b"prompt"))
    monkeypatch.setattr(methods, "build_method", build)
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    monkeypatch.setattr(checkpoint, "load_checkpoint", load)
    # validation: the score rises by 1 point per outer step the prompt has seen
    monkeypatch.setattr(
        scoring,
        "tuned_scores",
        lambda backbone, prompt, *a, **kw: {k: v + 0.01 * float(prompt[0, 0]) for k, v in BASELINE.items()},
    )
    return seen


def _shared(replay_from: tuple[Path, ...] = (), **changes) -> trainable.Shared:
    base = dict(
        backbone={"model": "tiny"},
        source_tasks=(),
        validation_tasks=(),
        validation_seeds=(100,),
        validation_tuning={"steps": 1},
        baseline=dict(BASELINE),
        steps_per_report=2,
        code="c0de",
        replay_from=tuple(str(p) for p in replay_from),
    )
    return trainable.Shared(**{**base, **changes})


CONFIG = {"method": "mtl", "mtl": {"steps": 6, "lr": 0.5}}


def _run(monkeypatch, trial_dir: Path, shared: trainable.Shared, config: dict = CONFIG, **tune_kw) -> FakeTune:
    tune = FakeTune(trial_dir, **tune_kw)
    monkeypatch.setattr(trainable, "tune", tune)
    with contextlib.suppress(Stop):
        trainable.train_prompt_init(config, shared=shared)
    return tune


def _own(line: dict, timing: bool = True) -> dict:
    """A report's values that come from the trial (not Tune's bookkeeping, not the replay's marks;
    ``timing=False``: nor the clocks, which differ between two runs)."""
    drop = {"training_iteration", "time_total_s", "checkpoint_dir_name", M.REPLAY_OF, M.REPLAYED_SECONDS}
    clocks = {"placement", M.SECONDS_PER_STEP, M.VALIDATION_SECONDS, M.CPU_SECONDS}
    return {k: v for k, v in line.items() if k not in drop and (timing or k not in clocks)}


def test_a_trial_a_sibling_sweep_finished_is_replayed_whole_and_nothing_is_computed(tmp_path, monkeypatch, fakes):
    original = _run(monkeypatch, tmp_path / "tpe" / "mtl_a", _shared())
    assert fakes.built == 1 and len(original.lines) == 3
    again = _run(monkeypatch, tmp_path / "random" / "mtl_b", _shared((tmp_path / "tpe",)))
    assert fakes.built == 1  # no method built: every report replayed
    assert [_own(x) for x in again.lines] == [_own(x) for x in original.lines]
    assert [x[M.REPLAY_OF] for x in again.lines] == ["tpe/mtl_a"] * 3
    assert [x[M.REPLAYED_SECONDS] for x in again.lines] == [100.0, 200.0, 300.0]  # the original's trial-seconds
    # each checkpoint copied, its trial.json naming the same identity and the replayed report
    for name in ("checkpoint_000000", "checkpoint_000002"):
        doc = json.loads((tmp_path / "random" / "mtl_b" / name / "trial.json").read_text())
        first = json.loads((tmp_path / "tpe" / "mtl_a" / name / "trial.json").read_text())
        assert doc["identity"] == first["identity"] and doc["step"] == first["step"]
        assert doc["report"][M.REPLAY_OF] == "tpe/mtl_a"
        assert (tmp_path / "random" / "mtl_b" / name / "prompt.safetensors").read_bytes() == b"prompt"
    # the jobs that start from a copied checkpoint are the original's (a study's searches share them),
    # through a replay of the replay too; a computed checkpoint keeps its own name
    third = _run(monkeypatch, tmp_path / "grid" / "mtl_c", _shared((tmp_path / "random",)))
    assert [x[M.REPLAY_OF] for x in third.lines] == ["random/mtl_b"] * 3 and fakes.built == 1
    for folder in ("random/mtl_b", "grid/mtl_c", "tpe/mtl_a"):
        assert checkpoint_key(tmp_path / folder / "checkpoint_000002") == "tpe/mtl_a/checkpoint_000002"
    # the analysis counts the original's trial-seconds: 300 of them, plus the replay's own
    summary = _curve_and_summary(again.lines, tmp_path / "random" / "mtl_b", "delta")
    assert summary["wall_s"] == 300.0 + 300.0 and [p["time_s"] for p in summary["curve"]] == [200.0, 400.0, 600.0]
    assert _curve_and_summary(original.lines, None, "delta")["wall_s"] == 300.0


def test_a_trial_stopped_early_is_replayed_up_to_its_last_state_then_trained_on(tmp_path, monkeypatch, fakes):
    """The original's scheduler stopped it after 1 of 3 reports; this sweep's lets the trial go on:
    report 1 is replayed, reports 2 and 3 are computed from the original's checkpoint and equal
    those of a trial computed from scratch."""
    _run(monkeypatch, tmp_path / "tpe" / "mtl_a", _shared(), stop_after=1)
    whole = _run(monkeypatch, tmp_path / "alone" / "mtl_c", _shared())
    fakes.loaded.clear()
    again = _run(monkeypatch, tmp_path / "random" / "mtl_b", _shared((tmp_path / "tpe",)))
    assert fakes.loaded == [tmp_path / "tpe" / "mtl_a" / "checkpoint_000000"]
    assert [_own(x, timing=False) for x in again.lines] == [_own(x, timing=False) for x in whole.lines]
    assert [M.REPLAY_OF in x for x in again.lines] == [True, False, False]
    assert [x[M.REPLAYED_SECONDS] for x in again.lines] == [100.0] * 3  # carried by the computed reports
    assert checkpoint_key(tmp_path / "random" / "mtl_b" / "checkpoint_000000") == "tpe/mtl_a/checkpoint_000000"
    assert checkpoint_key(tmp_path / "random" / "mtl_b" / "checkpoint_000001") == "random/mtl_b/checkpoint_000001"
    # restarted after its second report (a stop, --resume): it goes on from its own checkpoint
    fakes.loaded.clear()
    own = tmp_path / "random" / "mtl_b" / "checkpoint_000001"
    resumed = _run(monkeypatch, tmp_path / "resumed" / "mtl_b", _shared((tmp_path / "tpe",)), restore=own)
    assert fakes.loaded == [own] and [x[M.STEP] for x in resumed.lines] == [6]
    assert resumed.lines[0][M.REPLAYED_SECONDS] == 100.0 and _own(resumed.lines[0], timing=False) == _own(whole.lines[2], timing=False)


def test_a_replay_restarted_from_a_prompt_only_checkpoint_replays_on_or_says_what_to_do(tmp_path, monkeypatch, fakes):
    """A sweep resumed from committed results keeps prompts, not the method's state: a replay of
    such a trial that was stopped after its first report replays the rest; with the original gone
    it cannot go on and says so."""
    import promptinit.methods.checkpoint as checkpoint
    from promptinit.errors import PromptinitError

    _run(monkeypatch, tmp_path / "tpe" / "mtl_a", _shared())
    for state in (tmp_path / "tpe").glob(f"*/checkpoint_*/{checkpoint.STATE}"):
        state.unlink()
    first = _run(monkeypatch, tmp_path / "random" / "mtl_b", _shared((tmp_path / "tpe",)), stop_after=1)
    own = tmp_path / "random" / "mtl_b" / "checkpoint_000000"
    again = _run(monkeypatch, tmp_path / "resumed" / "mtl_b", _shared((tmp_path / "tpe",)), restore=own)
    assert fakes.built == 1 and [x[M.STEP] for x in first.lines + again.lines] == [2, 4, 6]
    assert [x[M.REPLAYED_SECONDS] for x in again.lines] == [200.0, 300.0]
    with pytest.raises(PromptinitError, match="replayed from a trial that is gone.*delete the trial's folder"):
        _run(monkeypatch, tmp_path / "gone" / "mtl_b", _shared(), restore=own)


@pytest.mark.parametrize(
    "change",
    [
        {"config": {"method": "mtl", "mtl": {"steps": 6, "lr": 0.4}}},
        {"shared": {"baseline": {("a", 100): 0.5, ("b", 100): 0.41}}},
        {"shared": {"code": "beef"}},
        {"shared": {"steps_per_report": 3}},
        {"shared": {"validation_seeds": (13,)}},
    ],
    ids=["config", "baseline", "code", "report interval", "validation seeds"],
)
def test_a_trial_that_differs_in_what_decides_its_reports_is_computed(tmp_path, monkeypatch, fakes, change):
    _run(monkeypatch, tmp_path / "tpe" / "mtl_a", _shared())
    config = change.get("config", CONFIG)
    again = _run(monkeypatch, tmp_path / "random" / "mtl_b", _shared((tmp_path / "tpe",), **change.get("shared", {})), config)
    assert fakes.built == 2 and not any(M.REPLAY_OF in x for x in again.lines)


def test_the_identity_is_of_the_inputs_not_of_where_the_sweep_is():
    a, b = _shared(), _shared((Path("/elsewhere"),))
    assert a.identity(CONFIG, "bfloat16") == b.identity(CONFIG, "bfloat16") == a.identity(json.loads(json.dumps(CONFIG)), "bfloat16")
    assert a.identity(CONFIG, "bfloat16") != a.identity({"method": "mtl", "mtl": {"steps": 6, "lr": 0.5000001}}, "bfloat16")
    assert a.identity(CONFIG, "bfloat16") != a.identity(CONFIG, "float32")  # `dtype: auto` on another node


def test_a_node_that_resolves_the_dtype_otherwise_computes_the_trial(tmp_path, monkeypatch, fakes):
    _run(monkeypatch, tmp_path / "tpe" / "mtl_a", _shared())
    fakes.dtype = "float32"
    again = _run(monkeypatch, tmp_path / "random" / "mtl_b", _shared((tmp_path / "tpe",)))
    assert fakes.built == 2 and not any(M.REPLAY_OF in x for x in again.lines)


def _report(step: int, state: bool, folder: Path | None = Path("c")) -> Report:
    return Report({M.STEP: step}, step, 10.0 * step, folder, state)


def test_the_plan_replays_what_it_can_go_on_from():
    finished = Original("s/t", (_report(2, False), _report(4, False, None), _report(6, False)))
    assert [r.step for r in finished.plan(0, 6)[0]] == [2, 4, 6] and finished.plan(0, 6)[1] is None
    assert [r.step for r in finished.plan(4, 6)[0]] == [6]  # restarted after its 2nd replayed report
    stopped = Original("s/t", (_report(2, True), _report(4, False), _report(6, False)))
    reports, go_on = stopped.plan(0, 8)  # prompts only after step 2: replay to 2, train from there
    assert [r.step for r in reports] == [2] and go_on is not None and go_on.step == 2
    assert Original("s/t", (_report(2, False),)).plan(0, 8) == ([], None)  # no state at all: compute


def test_the_original_is_the_sibling_trial_with_the_most_reports(tmp_path, monkeypatch, fakes):
    _run(monkeypatch, tmp_path / "tpe" / "mtl_a", _shared(), stop_after=1)
    _run(monkeypatch, tmp_path / "random" / "mtl_b", _shared())
    (tmp_path / "random" / "mtl_b" / "result.json").write_text(
        (tmp_path / "random" / "mtl_b" / "result.json").read_text() + '{"cut sh'  # a trial writing its report
    )
    found = find_original(
        (str(tmp_path / "tpe"), str(tmp_path / "random"), str(tmp_path / "gone")), _shared().identity(CONFIG, "bfloat16")
    )
    assert found is not None and found.trial == "random/mtl_b" and [r.step for r in found.reports] == [2, 4, 6]
    assert [r.seconds for r in found.reports] == [100.0, 200.0, 300.0] and all(r.has_state for r in found.reports)
    assert find_original((str(tmp_path / "tpe"),), "another identity") is None
    assert math.isclose(found.reports[0].values[M.VAL_DELTA], 0.02)
