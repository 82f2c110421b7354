"""The shipped catalog (every task loads and gives the promised few-shot sizes) and the
catalog schema's one-line errors."""
from __future__ import annotations

import json
import textwrap
from collections import Counter
from statistics import median

import pytest

from promptinit.errors import PromptinitError
from promptinit.tasks import (
    SEEDS,
    TaskKind,
    list_tasks,
    load_catalog,
    load_task,
    sample_few_shot,
)
from promptinit.tasks.catalog import CONFIGS_ENV

CATALOG = load_catalog()


def test_catalog_has_enough_tasks_of_each_kind():
    kinds = Counter(spec.kind for spec in CATALOG.values())
    assert len(CATALOG) >= 100
    assert kinds[TaskKind.CLASSIFICATION] >= 43  # cls_to_cls_v2: 30 sources, 5 targets, 8+ validation candidates
    assert kinds[TaskKind.MULTIPLE_CHOICE] >= 40
    assert kinds[TaskKind.GENERATION] >= 5
    assert all(spec.description for spec in CATALOG.values())


@pytest.mark.parametrize("name", list(CATALOG))
def test_catalog_task_loads_and_gives_the_promised_few_shot_sizes(name, bigbench_files):
    task = load_task(name)  # cached in-process: later tests reuse it
    assert task.kind is CATALOG[name].kind and task.examples
    assert median(len(e.input) for e in task.examples) < 400, "inputs should be short for the CPU backbone"
    for seed in SEEDS:
        fs = sample_few_shot(task, seed)
        if task.kind is TaskKind.CLASSIFICATION:
            assert Counter(e.target for e in fs.train) == {label: 16 for label in task.labels}
            assert Counter(e.target for e in fs.dev) == {label: 16 for label in task.labels}
        else:
            assert (len(fs.train), len(fs.dev)) == (32, 32)
        assert 0 < len(fs.test) <= 200


def test_load_task_is_cached(bigbench_files):
    assert load_task("bb_strategyqa") is load_task("bb_strategyqa")


def test_unknown_task_lists_close_matches():
    with pytest.raises(PromptinitError, match=r"unknown task 'bb_strategy_qa'.*did you mean bb_strategyqa.*promptinit tasks"):
        load_task("bb_strategy_qa")


def _catalog(tmp_path, body: str):
    path = tmp_path / "tasks.yaml"
    path.write_text(textwrap.dedent(body))
    return path


GOOD = """\
tasks:
  - name: toy_ok
    description: fine
    kind: classification
    source: {type: hf, data_files: data.jsonl, target_column: label}
    template: "{text}"
    options: ["yes", "no"]
"""


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("    kind: mc\n", r"tasks\.yaml: tasks\[1\] \(bad\): field 'kind': 'mc' is not one of classification, multiple_choice, generation"),
        ("", r"tasks\.yaml: tasks\[1\] \(bad\): field 'kind': missing"),
        ("    kind: generation\n    colour: red\n", r"tasks\.yaml: tasks\[1\] \(bad\): field 'colour': unknown field"),
        ("    kind: generation\n    metric: accuracy\n", r"tasks\.yaml: tasks\[1\] \(bad\): field 'metric': 'accuracy' does not fit"),
        ("    kind: multiple_choice\n    options: [a, b]\n", r"tasks\.yaml: tasks\[1\] \(bad\): field 'options': only classification"),
        ("    kind: classification\n    options: [yes, no]\n", r"tasks\[1\] \(bad\): field 'options.0': YAML read True as a boolean; quote"),
    ],
)
def test_invalid_entries_name_file_entry_and_field(tmp_path, entry, message):
    body = GOOD + "  - name: bad\n    source: {type: bigbench, task: strategyqa}\n" + entry
    with pytest.raises(PromptinitError, match=message):
        load_catalog(_catalog(tmp_path, body))


def test_unknown_source_type_and_duplicate_names(tmp_path):
    bad_type = GOOD + "  - name: bad\n    kind: generation\n    source: {type: kaggle}\n"
    with pytest.raises(PromptinitError, match=r"tasks\[1\] \(bad\): field 'source.type': type 'kaggle' is not one of"):
        load_catalog(_catalog(tmp_path, bad_type))
    with pytest.raises(PromptinitError, match=r"tasks\[1\] \(toy_ok\): field 'name': 'toy_ok' repeats tasks\[0\]"):
        load_catalog(_catalog(tmp_path, GOOD + GOOD.removeprefix("tasks:\n")))


def test_local_files_resolve_next_to_the_catalog_and_env_var_is_honoured(tmp_path, monkeypatch):
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps({"text": f"t{i}", "label": "yes"}) for i in range(3)))
    _catalog(tmp_path, GOOD)
    monkeypatch.setenv(CONFIGS_ENV, str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)  # relative data_files must not depend on the working directory
    assert list_tasks() == ["toy_ok"]
    task = load_task("toy_ok")
    assert [e.target for e in task.examples] == ["yes"] * 3 and task.labels == ("yes", "no")
