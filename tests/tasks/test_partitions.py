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
    assert {"random_to_random", "cls_to_cls", "noncls_to_cls", "tiny", "cls_to_cls_v2", "demo_v2"} <= set(names)
    for name in names:
        p = load_partition(name, pending_ok=True)
        assert not (set(p.source) & set(p.target) or set(p.source) & set(p.validation) or set(p.target) & set(p.validation))
        assert not set(p.validation_candidates) & (set(p.source) | set(p.target))
        if not p.pending:
            load_partition(name)  # what a sweep reads


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


# --------------------------------------------------------------------------- the larger catalog's partitions

STUDY_TARGETS = ("bbc_topic", "bb_intent_recognition", "bb_multiemo_hotels_en")  # configs/study/partitions/cpu.yaml


def test_cls_to_cls_v2_has_30_classification_sources_5_targets_and_admitted_validation_tasks():
    kind = {name: spec.kind for name, spec in CATALOG.items()}
    p = load_partition("cls_to_cls_v2")
    assert all(kind[n] is TaskKind.CLASSIFICATION for n in (*p.source, *p.target))
    assert len(p.source) >= 30 and len(p.target) >= 5
    assert set(STUDY_TARGETS) <= set(p.target)
    # chosen by `promptinit admit` (5 Dec 2026, SmolLM2) from classification and multiple-choice
    # candidates: >= 4 tasks, each with PT's dev score >= majority + 10 points recorded
    assert p.admission is not None and len(p.validation) >= 4
    assert all(kind[n] is not TaskKind.GENERATION for n in p.validation_candidates)
    assert set(p.admission.admitted) == set(p.validation)
    for score in p.admission.admitted.values():
        assert score.majority + 0.10 - 1e-9 <= score.pt_dev <= 0.90


def test_demo_v2_has_the_demos_targets_16_sources_and_admitted_validation_tasks():
    demo, v2 = load_partition("demo"), load_partition("demo_v2")
    assert v2.target == demo.target
    assert len(v2.source) >= 16 and set(demo.source) <= set(v2.source)
    assert all(CATALOG[n].kind is not TaskKind.GENERATION for n in v2.source)
    # chosen by `promptinit admit` (5 Dec 2026, SmolLM2): >= 4 tasks, each with its PT dev score
    # >= majority + 10 points recorded; the demo's own two validation tasks were refused
    assert v2.admission is not None and len(v2.validation) >= 4
    assert set(v2.admission.admitted) == set(v2.validation)
    assert set(demo.validation) <= set(v2.admission.refused)
    for score in v2.admission.admitted.values():
        assert score.majority + 0.10 - 1e-9 <= score.pt_dev <= 0.90
        assert len(score.seeds) == 3


def _shared_text(name: str) -> str:
    """Tasks with the same texts get the same key: a MultiEmo domain in every language."""
    src = CATALOG[name].source
    task = getattr(src, "task", None) or name
    if task.startswith("multiemo/"):
        return "multiemo/" + task.split("/")[1].split("_")[0]
    return task


@pytest.mark.parametrize("name", ["cls_to_cls_v2", "demo_v2"])
def test_tasks_that_share_their_texts_stay_in_one_field(name):
    p = load_partition(name, pending_ok=True)
    fields = {"source": p.source, "target": p.target, "validation": (*p.validation, *p.validation_candidates)}
    where = {}
    for field, names in fields.items():
        for n in names:
            where.setdefault(_shared_text(n), set()).add(field)
    assert {k: v for k, v in where.items() if len(v) > 1} == {}


CANDIDATES_YAML = """\
source: [bb_strategyqa]
target: [bbc_topic]
validation_candidates: [bb_navigate, bb_snarks]
"""


def test_validation_must_come_from_an_admission_record(tmp_path):
    pending = _write(tmp_path, CANDIDATES_YAML)
    assert load_partition(pending, pending_ok=True).pending
    with pytest.raises(PromptinitError, match=r"mine\.yaml: field 'validation': not chosen yet from the 2 validation_candidates"):
        load_partition(pending)
    hand_picked = _write(tmp_path, CANDIDATES_YAML + "validation: [bb_navigate]\n")
    with pytest.raises(PromptinitError, match=r"mine\.yaml: field 'admission': missing, so nothing admitted \['bb_navigate'\]"):
        load_partition(hand_picked)
    outside = _write(tmp_path, CANDIDATES_YAML + "validation: [bb_winowhy]\n")
    with pytest.raises(PromptinitError, match=r"field 'validation': \['bb_winowhy'\] not among validation_candidates"):
        load_partition(outside)
    unknown = _write(tmp_path, CANDIDATES_YAML.replace("bb_snarks", "bb_snark"))
    with pytest.raises(PromptinitError, match=r"mine\.yaml: field 'validation_candidates': unknown tasks \['bb_snark'\]"):
        load_partition(unknown, pending_ok=True)
    overlap = _write(tmp_path, CANDIDATES_YAML.replace("target: [bbc_topic]", "target: [bb_snarks]"))
    with pytest.raises(PromptinitError, match=r"fields 'target' and 'validation_candidates' share tasks \['bb_snarks'\]"):
        load_partition(overlap, pending_ok=True)


def test_an_admission_record_must_match_validation_and_candidates(tmp_path):
    score = "{pt_dev: 0.6, majority: 0.5, seeds: {100: {pt_dev: 0.6, majority: 0.5}}}"
    record = (f"admission: {{rule: r, margin: 0.1, ceiling: 0.9, model: m, seeds: [100], "
              f"admitted: {{bb_navigate: {score}}}, refused: {{bb_snarks: {score}}}}}\n")
    good = _write(tmp_path, CANDIDATES_YAML + "validation: [bb_navigate]\n" + record)
    p = load_partition(good)
    assert p.validation == ("bb_navigate",) and p.admission.admitted["bb_navigate"].seeds[100].majority == 0.5
    wrong = _write(tmp_path, CANDIDATES_YAML + "validation: [bb_snarks]\n" + record)
    with pytest.raises(PromptinitError, match=r"field 'admission': admitted \['bb_navigate'\], but 'validation' lists"):
        load_partition(wrong)
    half = _write(tmp_path, CANDIDATES_YAML + "validation: [bb_navigate]\n" + record.replace(", refused: {bb_snarks: " + score + "}", ""))
    with pytest.raises(PromptinitError, match=r"field 'admission': admitted and refused tasks \['bb_navigate'\] are not"):
        load_partition(half)
