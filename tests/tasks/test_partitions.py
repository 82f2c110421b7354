"""Partitions: shipped settings are valid and disjoint; overlaps and unknown names raise."""
from __future__ import annotations

import textwrap

import pytest

from promptinit.errors import PromptinitError
from promptinit.tasks import (
    Partition,
    TaskKind,
    list_partitions,
    load_catalog,
    load_partition,
)
from promptinit.tasks.partitions import partitions_dir

CATALOG = load_catalog()


def test_shipped_partitions_load_and_are_disjoint():
    names = list_partitions()
    assert {"random_to_random", "cls_to_cls", "noncls_to_cls", "tiny"} <= set(names)
    for name in names:
        p = load_partition(name)
        assert not (set(p.source) & set(p.target) or set(p.source) & set(p.validation) or set(p.target) & set(p.validation))


def test_settings_follow_their_names():
    kind = {name: spec.kind for name, spec in CATALOG.items()}
    cls, noncls = load_partition("cls_to_cls"), load_partition("noncls_to_cls")
    assert all(kind[n] is TaskKind.CLASSIFICATION for n in cls.tasks)
    assert all(kind[n] is not TaskKind.CLASSIFICATION for n in noncls.source)
    assert (cls.target, cls.validation) == (noncls.target, noncls.validation)
    tiny = load_partition("tiny")
    assert (len(tiny.source), len(tiny.target), len(tiny.validation)) == (4, 3, 2)
    assert all(kind[n] is not TaskKind.GENERATION for n in tiny.tasks)


def _write(tmp_path, body: str):
    path = tmp_path / "mine.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_overlap_names_file_both_fields_and_the_shared_tasks(tmp_path):
    path = _write(tmp_path, """\
        source: [bb_strategyqa, bb_navigate]
        target: [bb_navigate]
        validation: [bb_snarks]
    """)
    with pytest.raises(PromptinitError, match=r"mine\.yaml: fields 'source' and 'target' share tasks \['bb_navigate'\]"):
        load_partition(path)


def test_unknown_task_names_file_and_field(tmp_path):
    path = _write(tmp_path, "source: [bb_strategyqa]\ntarget: [bb_snarks]\nvalidation: [bb_navigat]\n")
    with pytest.raises(PromptinitError, match=r"mine\.yaml: field 'validation': unknown tasks \['bb_navigat'\].*bb_navigate"):
        load_partition(path)
    missing = _write(tmp_path, "source: [bb_strategyqa]\ntarget: [bb_snarks]\n")
    with pytest.raises(PromptinitError, match=r"mine\.yaml: field 'validation': missing"):
        load_partition(missing)
    with pytest.raises(PromptinitError, match=r"no such partition file; known partitions: .*tiny"):
        load_partition("no_such_setting")


def test_fingerprint_ignores_order_and_tracks_names():
    a = Partition(name="a", source=("x", "y"), target=("z",), validation=("w",))
    b = Partition(name="b", source=("y", "x"), target=("z",), validation=("w",))
    c = Partition(name="a", source=("x",), target=("z", "y"), validation=("w",))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert load_partition("tiny").fingerprint == load_partition(partitions_dir() / "tiny.yaml").fingerprint
