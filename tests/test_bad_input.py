"""Every bad input a new user can give: one line on stderr naming the file (or flag) and the
field, exit code 2, no traceback, and nothing written.

Each case builds its malformed input in a temporary folder and runs the command as a user
does (a subprocess of this interpreter: ``search/sweep.py --config ...`` or ``python -m
promptinit ...``). The test compares a snapshot of the whole temporary folder (inputs, the
sweep's storage path, output folders, the working directory and ``$PROMPTINIT_CACHE``) before
and after: a bad input may write no file and create no folder. ``$PROMPTINIT_CACHE`` is a
fresh folder with the real cache's BIG-bench files and built models linked in, and the hubs
are offline, so nothing is downloaded. The one thing outside the snapshot is the ``datasets``
library's own cache of the input files it parsed (``HF_DATASETS_CACHE``, a sibling folder).

The sweep cases also show that the input is refused before Ray starts (Ray's start alone
takes longer than the whole run may).
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "search" / "sweep.py"
TINY_TEST = ROOT / "configs" / "sweep" / "tiny-test.yaml"
TINY_PARTITION = ROOT / "configs" / "sweep" / "partitions" / "tiny-test.yaml"
NOT_UTF8 = b"\xff\xfe\x00\x81 not text \x80\x9f"  # a UTF-16 BOM and stray high bytes
SWEEP_SECONDS = 45  # a refused sweep ends well before a local Ray could have started and stopped
HIDDEN, LAYERS, HEADS = 64, 2, 4  # tiny-llama
TINY_LLAMA = {"name": "tiny-llama", "family": "causal", "hidden_size": HIDDEN, "num_layers": LAYERS,
              "num_attention_heads": HEADS, "base_model_name_or_path": "tiny-llama", "prompt_length": 4}


@dataclass
class Call:
    """A command line (arguments after the interpreter) and what its one error line must name."""

    argv: list[str]
    expect: tuple[str, ...]  # the file or flag, and the field (or place in the file)
    env: dict[str, str] = field(default_factory=dict)


class Work:
    """The case's temporary folder: inputs, storage, working directory and cache."""

    def __init__(self, root: Path):
        self.root = root
        self.inputs = root / "inputs"
        self.storage = root / "runs"
        self.cwd = root / "cwd"
        self.cache = root / "cache"
        self.hf_cache = root.parent / f"{root.name}-hf-datasets"  # outside the snapshot (see module doc)
        for d in (self.inputs, self.cwd, self.cache):
            d.mkdir(parents=True)
        real = _real_cache()
        for sub in ("bigbench", "models"):  # the pattern of tests.conftest.fresh_cache
            if (real / sub).is_dir():
                (self.cache / sub).symlink_to(real / sub, target_is_directory=True)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def folder(self, name: str) -> Path:
        path = self.inputs / name
        path.mkdir(parents=True)
        return path

    # ------------------------------------------------------------------ sweeps

    def sweep_yaml(self, name: str = "bad", **changes) -> Path:
        """A copy of ``tiny-test.yaml`` with ``changes``, its storage in ``self.storage``."""
        raw = yaml.safe_load(TINY_TEST.read_text())
        raw.update(name=name, partition=str(TINY_PARTITION), storage_path=str(self.storage))
        raw.update(changes)
        return self.write(f"{name}.yaml", yaml.safe_dump(raw, sort_keys=False))

    def sweep(self, config: Path, *flags: str) -> Call:
        return Call([str(SWEEP), "--config", str(config), *flags], ())

    def broken_sweep_dir(self, name: str, meta: str | bytes | None, tuner: bytes | None) -> Path:
        """``<storage>/<name>`` as an interrupted sweep leaves it, with the given files."""
        folder = self.storage / name
        folder.mkdir(parents=True)
        if meta is not None:
            (folder / "promptinit-sweep.json").write_bytes(meta if isinstance(meta, bytes) else meta.encode())
        if tuner is not None:
            (folder / "tuner.pkl").write_bytes(tuner)
        return folder

    # ------------------------------------------------------------------ catalogs and tasks

    def catalog(self, entries: list[dict] | str, name: str = "catalog.yaml") -> Path:
        text = entries if isinstance(entries, str) else yaml.safe_dump({"tasks": entries}, sort_keys=False)
        return self.write(name, text)

    def tune(self, *args: str) -> Call:
        return Call(["-m", "promptinit", "tune", "--model", "tiny-llama", "--prompt-length", "4", *args], ())

    def tune_task(self, entry: dict, *args: str) -> Call:
        """``promptinit tune`` on the one task of a catalog holding ``entry``."""
        return self.tune("--catalog", str(self.catalog([entry])), "--task", entry["name"], *args)

    def export_folder(self, name: str = "export") -> Path:
        """A valid export of a tiny-llama prompt (L = 4), for the cases to break."""
        import torch

        from promptinit.export import export_prompt

        return export_prompt(torch.randn(4, HIDDEN), TINY_LLAMA, self.inputs / name, method="mtl",
                             hyperparameters={}, metrics={}, model_name="tiny-llama", task_fingerprints={})

    def fake_sweep(self) -> Path:
        """A finished sweep folder (the analysis tests' fake one) under ``inputs/``."""
        from tests.analysis.conftest import make_sweep

        return make_sweep(self.inputs / "sweeps")


def _real_cache() -> Path:
    from promptinit.paths import CACHE_ENV

    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "promptinit").expanduser()


def keyword_rows(n: int = 80) -> list[dict]:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    return [{"text": f"{words[i % 10]} {words[(i // 10) % 10]} {i} good" if i % 2 else
             f"{words[i % 10]} {words[(i // 10) % 10]} {i} bad", "label": "yes" if i % 2 else "no"} for i in range(n)]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def csv_text(rows: list[dict], columns: tuple[str, ...] = ("text", "label")) -> str:
    return ",".join(columns) + "\n" + "".join(",".join(str(r[c]) for c in columns) + "\n" for r in rows)


def hf_entry(data_file: str, name: str = "keyword", **extra) -> dict:
    return {"name": name, "kind": "classification",
            "source": {"type": "hf", "data_files": data_file, "target_column": "label"},
            "template": "Text: {text}\nAnswer:", "options": ["yes", "no"], **extra}


def bigbench_entry(task_json: str, name: str = "bbfile", kind: str = "multiple_choice") -> dict:
    return {"name": name, "kind": kind, "source": {"type": "bigbench", "path": task_json}}


def bigbench_doc(n: int = 40) -> dict:
    return {"description": "made up", "examples": [
        {"input": f"question {i}?", "target_scores": {"yes": int(i % 2), "no": int(1 - i % 2)}} for i in range(n)
    ]}


# --------------------------------------------------------------------------- the cases

CASES: dict[str, Callable[[Work], Call]] = {}


def case(*expect: str):
    """Register a case; ``expect`` adds fixed substrings of the error line to the case's own."""
    def register(fn: Callable[[Work], Call]) -> Callable[[Work], Call]:
        def build(w: Work) -> Call:
            call = fn(w)
            call.expect = tuple(call.expect) + expect
            return call
        CASES[fn.__name__.removeprefix("case_").replace("_", "-")] = build
        return fn
    return register


def named(call: Call, *expect: str | Path) -> Call:
    call.expect = tuple(str(e) for e in expect)
    return call


# --- sweep YAMLs (search/sweep.py --config ...)


@case()
def case_sweep_yaml_not_utf8(w):
    path = w.write("binary.yaml", b"name: x\nmodel: tiny-llama\n" + NOT_UTF8)
    return named(w.sweep(path), path, "line 3", "UTF-8")


@case()
def case_sweep_yaml_syntax_error(w):
    path = w.write("syntax.yaml", "name: x\nmethods: [fomaml, mtl\nmodel: tiny-llama\n")
    return named(w.sweep(path), path, "line", "bad YAML")


@case()
def case_sweep_yaml_is_a_list(w):
    path = w.write("list.yaml", "- name: x\n- model: tiny-llama\n")
    return named(w.sweep(path), path, "mapping")


@case()
def case_sweep_config_is_a_folder(w):
    return named(w.sweep(w.folder("configs.yaml")), "configs.yaml", "no such sweep file")


@case()
def case_sweep_model_folder_missing(w):
    path = w.sweep_yaml(model=str(w.inputs / "models" / "no-such-model"))
    return named(w.sweep(path), path, "field 'model'", "no-such-model")


@case()
def case_sweep_model_folder_without_config(w):
    folder = w.folder("empty-model")
    path = w.sweep_yaml(model=str(folder))
    return named(w.sweep(path), path, "field 'model'", "config.json")


@case()
def case_sweep_model_config_not_json(w):
    folder = w.folder("broken-model")
    (folder / "config.json").write_bytes(NOT_UTF8)
    path = w.sweep_yaml(model=str(folder))
    return named(w.sweep(path), path, "field 'model'", "broken-model")


@case()
def case_sweep_model_hub_id_unreachable(w):
    path = w.sweep_yaml(model="nobody-xyz/no-such-model")
    return named(w.sweep(path), path, "field 'model'", "nobody-xyz/no-such-model")


@case()
def case_sweep_model_unknown_name(w):
    path = w.sweep_yaml(model="gpt-99")
    return named(w.sweep(path), path, "field 'model'", "gpt-99")


@case()
def case_sweep_storage_path_is_a_file(w):
    file = w.write("storage-file", "not a folder\n")
    path = w.sweep_yaml(storage_path=str(file))
    return named(w.sweep(path), path, "field 'storage_path'", "storage-file")


@case()
def case_sweep_storage_path_below_a_file(w):
    file = w.write("storage-file", "not a folder\n")
    path = w.sweep_yaml(storage_path=str(file / "runs"))
    return named(w.sweep(path), path, "field 'storage_path'", "storage-file")


@case()
def case_sweep_dir_is_a_file(w):
    w.storage.mkdir()
    (w.storage / "clash").write_text("a file where the sweep folder goes\n")
    path = w.sweep_yaml(name="clash")
    return named(w.sweep(path), path, "field 'name'", "clash")


@case()
def case_sweep_negative_prompt_length(w):
    path = w.sweep_yaml(prompt_length=-3)
    return named(w.sweep(path), path, "field 'prompt_length'")


@case()
def case_sweep_unknown_tuning_setting(w):
    raw = yaml.safe_load(TINY_TEST.read_text())
    path = w.sweep_yaml(validation={**raw["validation"], "tuning": {"lrr": 0.3}})
    return named(w.sweep(path), path, "field 'validation.tuning", "lrr")


@case()
def case_sweep_catalog_missing(w):
    path = w.sweep_yaml(catalog=str(w.inputs / "no-such-catalog.yaml"))
    return named(w.sweep(path), path, "field 'catalog'", "no-such-catalog.yaml")


@case()
def case_sweep_catalog_not_utf8(w):
    catalog = w.write("catalog.yaml", b"tasks:\n" + NOT_UTF8)
    path = w.sweep_yaml(catalog=str(catalog))
    return named(w.sweep(path), path, "field 'catalog'", "catalog.yaml", "UTF-8")


@case()
def case_sweep_partition_not_utf8(w):
    partition = w.write("part.yaml", NOT_UTF8)
    path = w.sweep_yaml(partition=str(partition))
    return named(w.sweep(path), path, "field 'partition'", "part.yaml", "UTF-8")


@case()
def case_sweep_partition_overlap(w):
    partition = w.write("overlap.yaml", "source: [bb_strategyqa, bbc_topic]\ntarget: [bbc_topic]\n"
                                        "validation: [bb_intent_recognition]\n")
    path = w.sweep_yaml(partition=str(partition))
    return named(w.sweep(path), path, "field 'partition'", "overlap.yaml", "'source' and 'target'")


@case()
def case_sweep_task_data_row_broken(w):
    rows = keyword_rows()
    rows[5] = {"label": "yes"}  # no text
    w.write("data.jsonl", jsonl(rows))
    catalog = w.catalog([hf_entry("data.jsonl", n) for n in ("src", "tgt", "val")])
    partition = w.write("part.yaml", "source: [src]\ntarget: [tgt]\nvalidation: [val]\n")
    path = w.sweep_yaml(catalog=str(catalog), partition=str(partition), methods=["mtl"],
                        search={"seed": 0, "space": {"mtl": {"batch_size": [2]}}})
    return named(w.sweep(path), "data.jsonl", "row 5", "field 'text'")


@case()
def case_sweep_resume_nothing_there(w):
    return named(w.sweep(w.sweep_yaml(name="never-ran"), "--resume"), "never-ran", "--resume", "tuner.pkl")


@case()
def case_sweep_rerun_without_resume(w):
    folder = w.broken_sweep_dir("ran", json.dumps({"parent_run_id": "abc", "tracking_uri": "sqlite:///x"}),
                                pickle.dumps({"state": 1}))
    return named(w.sweep(w.sweep_yaml(name="ran")), folder, "--resume", "field 'name'")


@case()
def case_sweep_resume_meta_not_json(w):
    folder = w.broken_sweep_dir("torn", '{"parent_run_id": "abc", "track', pickle.dumps({"state": 1}))
    return named(w.sweep(w.sweep_yaml(name="torn"), "--resume"), folder / "promptinit-sweep.json", "line 1")


@case()
def case_sweep_resume_meta_not_utf8(w):
    folder = w.broken_sweep_dir("binary-meta", NOT_UTF8, pickle.dumps({"state": 1}))
    return named(w.sweep(w.sweep_yaml(name="binary-meta"), "--resume"), folder / "promptinit-sweep.json", "UTF-8")


@case()
def case_sweep_resume_meta_missing(w):
    folder = w.broken_sweep_dir("no-meta", None, pickle.dumps({"state": 1}))
    return named(w.sweep(w.sweep_yaml(name="no-meta"), "--resume"), folder / "promptinit-sweep.json", "missing")


@case()
def case_sweep_resume_meta_without_parent_run(w):
    folder = w.broken_sweep_dir("no-parent", json.dumps({"tracking_uri": "sqlite:///x"}), pickle.dumps({"s": 1}))
    return named(w.sweep(w.sweep_yaml(name="no-parent"), "--resume"), folder / "promptinit-sweep.json",
                 "field 'parent_run_id'")


@case()
def case_sweep_resume_tuner_state_truncated(w):
    uri = f"sqlite:///{w.storage / 'cut'}/mlflow.db"
    folder = w.broken_sweep_dir("cut", json.dumps({"parent_run_id": "abc", "tracking_uri": uri}),
                                pickle.dumps({"state": list(range(100))})[:20])
    return named(w.sweep(w.sweep_yaml(name="cut"), "--resume"), folder / "tuner.pkl", "truncated")


@case()
def case_sweep_resume_experiment_state_corrupt(w):
    uri = f"sqlite:///{w.storage / 'garbled'}/mlflow.db"
    folder = w.broken_sweep_dir("garbled", json.dumps({"parent_run_id": "abc", "tracking_uri": uri}),
                                pickle.dumps({"state": 1}))
    (folder / "mlflow.db").write_bytes(b"")
    state = folder / "experiment_state-2025-01-01_00-00-00.json"
    state.write_text('{"trial_data": [["{\\"trial_id\\": ')
    return named(w.sweep(w.sweep_yaml(name="garbled"), "--resume"), state, "experiment state")


@case()
def case_sweep_resume_other_tracking_uri(w):
    folder = w.broken_sweep_dir("moved", json.dumps({"parent_run_id": "abc", "tracking_uri": "http://elsewhere:5000"}),
                                pickle.dumps({"state": 1}))
    return named(w.sweep(w.sweep_yaml(name="moved"), "--resume"), folder, "field 'tracking_uri'", "elsewhere")


# --- task catalogs and partitions (promptinit tasks ...)


def tasks(*args: str) -> Call:
    return Call(["-m", "promptinit", "tasks", *args], ())


@case()
def case_catalog_not_utf8(w):
    path = w.write("catalog.yaml", b"tasks:\n  - name: x\n" + NOT_UTF8)
    return named(tasks("--catalog", str(path)), path.name, "line 3", "UTF-8")


@case()
def case_catalog_entry_missing_kind(w):
    path = w.catalog([{"name": "x", "source": {"type": "bigbench", "task": "strategyqa"}}])
    return named(tasks("--catalog", str(path)), path.name, "tasks[0]", "field 'kind'")


@case()
def case_catalog_unknown_source_type(w):
    path = w.catalog([{"name": "x", "kind": "generation", "source": {"type": "s3", "bucket": "b"}}])
    return named(tasks("--catalog", str(path)), path.name, "field 'source.type'", "s3")


@case()
def case_catalog_duplicate_name(w):
    entry = {"name": "x", "kind": "generation", "source": {"type": "bigbench", "task": "strategyqa"}}
    path = w.catalog([entry, entry])
    return named(tasks("--catalog", str(path)), path.name, "tasks[1]", "field 'name'")


@case()
def case_catalog_bad_template(w):
    path = w.catalog([hf_entry("data.jsonl", template="Text: {text\nAnswer:")])
    return named(tasks("--catalog", str(path)), path.name, "field 'template'")


@case()
def case_catalog_bigbench_task_and_path(w):
    path = w.catalog([{"name": "x", "kind": "multiple_choice",
                       "source": {"type": "bigbench", "task": "strategyqa", "path": "task.json"}}])
    return named(tasks("--catalog", str(path)), path.name, "field 'source", "path")


@case()
def case_partition_not_utf8(w):
    path = w.write("part.yaml", b"source: [bb_strategyqa]\n" + NOT_UTF8)
    return named(tasks("--partition", str(path)), path.name, "line 2", "UTF-8")


@case()
def case_partition_unknown_task(w):
    path = w.write("part.yaml", "source: [bb_strategyqa]\ntarget: [bbc_topik]\nvalidation: [bb_navigate]\n")
    return named(tasks("--partition", str(path)), path.name, "field 'target'", "bbc_topik")


@case()
def case_partition_missing_validation(w):
    path = w.write("part.yaml", "source: [bb_strategyqa]\ntarget: [bbc_topic]\n")
    return named(tasks("--partition", str(path)), path.name, "field 'validation'")


@case()
def case_partition_validation_without_admission(w):
    path = w.write("part.yaml", "source: [bb_strategyqa]\ntarget: [bbc_topic]\nvalidation_candidates: [bb_navigate]\n"
                   "validation: [bb_navigate]\n")
    return named(tasks("--partition", str(path)), path.name, "field 'admission'", "promptinit admit")


# --- validation admission (promptinit admit ...)


def admit(*args: str) -> Call:
    return Call(["-m", "promptinit", "admit", "--model", "tiny-llama", "--prompt-length", "4", *args], ())


CANDIDATES = "source: [bb_strategyqa]\ntarget: [bbc_topic]\nvalidation_candidates: [{}]\n"


@case()
def case_admit_unknown_candidate(w):
    path = w.write("part.yaml", CANDIDATES.format("bb_navigate, bb_misconseptions"))
    return named(admit("--partition", str(path)), path.name, "field 'validation_candidates'", "bb_misconseptions")


@case()
def case_admit_generation_candidate(w):
    path = w.write("part.yaml", CANDIDATES.format("bb_navigate, bb_object_counting"))
    return named(admit("--partition", str(path)), path.name, "field 'validation_candidates'",
                 "bb_object_counting", "generation")


@case()
def case_admit_without_candidates(w):
    path = w.write("part.yaml", "source: [bb_strategyqa]\ntarget: [bbc_topic]\nvalidation: [bb_navigate]\n")
    return named(admit("--partition", str(path)), path.name, "fields 'validation_candidates' and 'target_candidates'", "missing")


@case()
def case_admit_two_learning_rates(w):
    path = w.write("part.yaml", CANDIDATES.format("bb_navigate"))
    return named(admit("--partition", str(path), "--lr", "0.3", "0.5"), "option '--lr'")


@case()
def case_sweep_partition_pending(w):
    partition = w.write("pending.yaml", CANDIDATES.format("bb_navigate, bb_snarks"))
    path = w.sweep_yaml(partition=str(partition))
    return named(w.sweep(path), path, "field 'partition'", "pending.yaml", "field 'validation'", "promptinit admit")


# --- task data files, one loader format each (promptinit tune --task ...)


@case()
def case_data_jsonl_bad_json_line(w):
    text = jsonl(keyword_rows()).splitlines(keepends=True)
    text[3] = '{"text": "cut off", "label": \n'
    path = w.write("data.jsonl", "".join(text))
    return named(w.tune_task(hf_entry("data.jsonl")), path.name, "line 4", "bad JSON")


@case()
def case_data_jsonl_row_missing_field(w):
    rows = keyword_rows()
    rows[7] = {"label": "no"}
    w.write("data.jsonl", jsonl(rows))
    return named(w.tune_task(hf_entry("data.jsonl")), "data.jsonl", "row 7", "field 'text'")


@case()
def case_data_json_not_utf8(w):
    w.write("data.json", json.dumps(keyword_rows()).encode()[:-40] + NOT_UTF8 + b"]")
    return named(w.tune_task(hf_entry("data.json")), "data.json", "UTF-8")


@case()
def case_data_json_label_not_an_option(w):
    rows = keyword_rows()
    rows[11]["label"] = "maybe"
    w.write("data.json", json.dumps(rows))
    return named(w.tune_task(hf_entry("data.json")), "data.json", "row 11", "field 'label'", "maybe")


@case()
def case_data_csv_missing_label_column(w):
    w.write("data.csv", csv_text(keyword_rows(), ("text",)))
    return named(w.tune_task(hf_entry("data.csv")), "data.csv", "field 'label'", "no such column")


@case()
def case_data_csv_not_utf8(w):
    w.write("data.csv", csv_text(keyword_rows()).encode() + b"caf\xe9 \xff,yes\n")
    return named(w.tune_task(hf_entry("data.csv")), "data.csv", "UTF-8")


@case()
def case_data_parquet_corrupt(w):
    w.write("data.parquet", b"PAR1" + bytes(range(256)) * 4)
    return named(w.tune_task(hf_entry("data.parquet")), "data.parquet", "parquet")


@case()
def case_data_parquet_empty_input(w):
    import pandas as pd

    rows = keyword_rows()
    rows[9]["text"] = "   "
    pd.DataFrame(rows).to_parquet(w.inputs / "data.parquet")
    return named(w.tune_task(hf_entry("data.parquet")), "data.parquet", "row 9", "field 'text'", "empty")


@case()
def case_data_file_missing(w):
    return named(w.tune_task(hf_entry("gone.jsonl")), "gone.jsonl", "data_files")


@case()
def case_bigbench_task_json_bad_json(w):
    w.write("task.json", json.dumps(bigbench_doc())[:-30])
    return named(w.tune_task(bigbench_entry("task.json")), "task.json", "line 1", "bad JSON")


@case()
def case_bigbench_task_json_not_utf8(w):
    w.write("task.json", NOT_UTF8)
    return named(w.tune_task(bigbench_entry("task.json")), "task.json", "UTF-8")


@case()
def case_bigbench_task_json_without_examples(w):
    w.write("task.json", json.dumps({"description": "no examples", "exmples": []}))
    return named(w.tune_task(bigbench_entry("task.json")), "task.json", "field 'examples'")


@case()
def case_bigbench_score_not_a_number(w):
    doc = bigbench_doc()
    doc["examples"][3]["target_scores"]["yes"] = "high"
    w.write("task.json", json.dumps(doc))
    return named(w.tune_task(bigbench_entry("task.json")), "task.json", "examples[3]", "field 'target_scores'")


@case()
def case_bigbench_task_json_missing(w):
    return named(w.tune_task(bigbench_entry("nowhere/task.json")), "nowhere/task.json", "source.path")


# --- promptinit tune flags and --init export folders


@case()
def case_tune_zero_steps(w):
    return named(w.tune("--task", "bb_strategyqa", "--steps", "0"), "--steps")


@case()
def case_tune_negative_lr(w):
    return named(w.tune("--task", "bb_strategyqa", "--lr", "-0.3"), "--lr")


@case()
def case_tune_zero_prompt_length(w):
    return named(w.tune("--task", "bb_strategyqa", "--prompt-length", "0"), "--prompt-length")


@case()
def case_tune_unknown_device(w):
    return named(w.tune("--task", "bb_strategyqa", "--device", "tpu"), "--device", "tpu")


@case()
def case_tune_model_folder_missing(w):
    call = w.tune("--task", "bb_strategyqa")
    call.argv[call.argv.index("tiny-llama")] = str(w.inputs / "no-such-model")
    return named(call, "--model", "no-such-model")


@case()
def case_tune_init_and_init_text(w):
    return named(w.tune("--task", "bb_strategyqa", "--init", str(w.export_folder()), "--init-text", "hi"),
                 "--init", "--init-text")


@case()
def case_tune_init_labels_and_init_text(w):
    return named(w.tune("--task", "bb_strategyqa", "--init-labels", "--init-text", "hi"), "--init-text", "--init-labels")


@case()
def case_tune_init_labels_of_a_generation_task(w):
    return named(w.tune("--task", "bb_word_unscrambling", "--init-labels"), "--init-labels", "bb_word_unscrambling",
                 "class labels")


@case()
def case_tune_init_file_missing(w):
    return named(w.tune("--task", "bb_strategyqa", "--init", str(w.inputs / "prompt.safetensors")),
                 "prompt.safetensors", "--init")


@case()
def case_tune_out_below_a_file(w):
    file = w.write("out-file", "a file\n")
    return named(w.tune("--task", "bb_strategyqa", "--out", str(file / "best.safetensors")), "--out", "out-file")


@case()
def case_export_folder_config_not_json(w):
    folder = w.export_folder()
    (folder / "adapter_config.json").write_text('{"peft_type": "PROMPT_TUNING", ')
    return named(w.tune("--task", "bb_strategyqa", "--init", str(folder)), "adapter_config.json", "line 1")


@case()
def case_export_folder_wrong_token_dim(w):
    folder = w.export_folder()
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "token_dim": 128}))
    return named(w.tune("--task", "bb_strategyqa", "--init", str(folder)), "adapter_config.json", "field 'token_dim'")


@case()
def case_export_folder_weights_missing(w):
    folder = w.export_folder()
    (folder / "adapter_model.safetensors").unlink()
    return named(w.tune("--task", "bb_strategyqa", "--init", str(folder)), "adapter_model.safetensors", "missing")


@case()
def case_export_folder_weights_truncated(w):
    folder = w.export_folder()
    data = (folder / "adapter_model.safetensors").read_bytes()
    (folder / "adapter_model.safetensors").write_bytes(data[:-50])
    return named(w.tune("--task", "bb_strategyqa", "--init", str(folder)), "adapter_model.safetensors", "truncated")


@case()
def case_export_folder_metadata_not_utf8(w):
    folder = w.export_folder()
    (folder / "promptinit.json").write_bytes(NOT_UTF8)
    return named(w.tune("--task", "bb_strategyqa", "--init", str(folder)), "promptinit.json", "UTF-8")


# --- promptinit upstream flags and checkpoint folders


def upstream(*args: str) -> Call:
    return Call(["-m", "promptinit", "upstream", "--model", "tiny-llama", "--prompt-length", "4", *args], ())


@case()
def case_upstream_unknown_method(w):
    return named(upstream("--method", "mamml", "--partition", "tiny"), "--method", "mamml")


@case()
def case_upstream_unknown_setting(w):
    return named(upstream("--method", "mtl", "--partition", "tiny", "--set", "inner_lr=1e-5"), "--set", "inner_lr")


@case()
def case_upstream_setting_not_a_number(w):
    return named(upstream("--method", "maml", "--partition", "tiny", "--set", "inner_lr=fast"), "--set", "inner_lr")


@case()
def case_upstream_partition_not_utf8(w):
    path = w.write("part.yaml", NOT_UTF8)
    return named(upstream("--method", "mtl", "--partition", str(path)), "--partition", "part.yaml", "UTF-8")


@case()
def case_upstream_zero_tune_steps(w):
    return named(upstream("--method", "mtl", "--partition", "tiny", "--tune-steps", "0"), "--tune-steps")


@case()
def case_upstream_out_is_a_file(w):
    file = w.write("out-file", "a file\n")
    return named(upstream("--method", "mtl", "--partition", "tiny", "--out", str(file)), "--out", "out-file")


def checkpoint_folder(w: Work, state: str | bytes | None, tensors: bytes | None = b"") -> Path:
    out = w.inputs / "upstream-out"
    ckpt = out / "checkpoint"
    ckpt.mkdir(parents=True)
    if state is not None:
        (ckpt / "state.json").write_bytes(state if isinstance(state, bytes) else state.encode())
    if tensors is not None:
        (ckpt / "tensors.safetensors").write_bytes(tensors)
    return out


@case()
def case_upstream_checkpoint_state_not_json(w):
    out = checkpoint_folder(w, '{"format": 1, "tensors": "tensors.safe')
    return named(upstream("--method", "mtl", "--partition", "tiny", "--out", str(out), "--resume"),
                 "state.json", "line 1")


@case()
def case_upstream_checkpoint_state_not_utf8(w):
    out = checkpoint_folder(w, NOT_UTF8)
    return named(upstream("--method", "mtl", "--partition", "tiny", "--out", str(out), "--resume"),
                 "state.json", "UTF-8")


@case()
def case_upstream_checkpoint_tensors_do_not_match(w):
    out = checkpoint_folder(w, json.dumps({"format": 1, "tensors": "tensors.safetensors", "sha256": "0" * 64,
                                           "state": {}}), tensors=b"not the saved tensors")
    return named(upstream("--method", "mtl", "--partition", "tiny", "--out", str(out), "--resume"),
                 "tensors.safetensors", "sha256")


@case()
def case_upstream_checkpoint_without_state(w):
    out = checkpoint_folder(w, None, tensors=b"half a save")
    return named(upstream("--method", "mtl", "--partition", "tiny", "--out", str(out), "--resume"),
                 "checkpoint", "state.json")


@case()
def case_upstream_checkpoint_of_another_method(w):
    import torch
    from safetensors.torch import save_file

    out = checkpoint_folder(w, None, tensors=None)
    ckpt = out / "checkpoint"
    save_file({"/prompt": torch.zeros(4, HIDDEN)}, str(ckpt / "tensors.safetensors"))
    from promptinit.methods.checkpoint import _sha256

    state = {"__dict__": [["method", "maml"], ["config", {"__dict__": []}], ["prompt", {"__tensor__": "/prompt"}],
                          ["step", 3]]}
    (ckpt / "state.json").write_text(json.dumps({"format": 1, "tensors": "tensors.safetensors",
                                                 "sha256": _sha256(ckpt / "tensors.safetensors"), "state": state}))
    return named(upstream("--method", "mtl", "--partition", "tiny", "--out", str(out), "--resume"),
                 "checkpoint", "field 'method'", "maml")


# --- promptinit selfsup flags


def selfsup(*args: str) -> Call:
    return Call(["-m", "promptinit", "selfsup", "--no-progress", *args], ())


@case()
def case_selfsup_one_cluster(w):
    return named(selfsup("--k", "1"), "--k")


@case()
def case_selfsup_unknown_format(w):
    return named(selfsup("--formats", "nsp", "qa"), "--formats", "qa")


@case()
def case_selfsup_corpus_file_missing(w):
    return named(selfsup("--corpus", str(w.inputs / "missing.txt")), "--corpus", "missing.txt")


@case()
def case_selfsup_corpus_folder_without_text(w):
    folder = w.folder("corpus")
    (folder / "notes.md").write_text("no .txt or .jsonl here\n")
    return named(selfsup("--corpus", str(folder)), "--corpus", "corpus")


@case()
def case_selfsup_min_words_above_max(w):
    return named(selfsup("--min-words", "30", "--max-words", "10"), "--min-words", "--max-words")


@case()
def case_selfsup_plot_below_a_file(w):
    file = w.write("plot-file", "a file\n")
    return named(selfsup("--plot", str(file / "clusters.png")), "--plot", "plot-file")


# --- promptinit export / report


@case()
def case_export_sweep_dir_missing(w):
    return named(Call(["-m", "promptinit", "export", str(w.inputs / "no-sweep"), "--method", "mtl",
                       "--out", str(w.inputs / "exp")], ()), "no-sweep", "sweep")


@case()
def case_export_unknown_method(w):
    sweep = w.fake_sweep()
    return named(Call(["-m", "promptinit", "export", str(sweep), "--method", "mamml", "--no-mlflow",
                       "--out", str(w.inputs / "exp")], ()), sweep, "method 'mamml'")


@case()
def case_export_out_below_a_file(w):
    sweep = w.fake_sweep()
    file = w.write("out-file", "a file\n")
    return named(Call(["-m", "promptinit", "export", str(sweep), "--method", "mtl", "--no-mlflow",
                       "--out", str(file / "exp")], ()), "--out", "out-file")


@case()
def case_report_zero_similarity_rank(w):
    return named(Call(["-m", "promptinit", "report", str(w.inputs), "--similarity-rank", "0"], ()),
                 "--similarity-rank")


@case()
def case_report_out_is_a_file(w):
    sweep = w.fake_sweep()
    file = w.write("report-file", "a file\n")
    return named(Call(["-m", "promptinit", "report", str(sweep), "--no-mlflow", "--out", str(file)], ()),
                 "--out", "report-file")


@case()
def case_report_task_prompts_missing(w):
    sweep = w.fake_sweep()
    return named(Call(["-m", "promptinit", "report", str(sweep), "--no-mlflow",
                       "--task-prompts", str(w.inputs / "no-prompts")], ()), "--task-prompts", "no-prompts")


@case()
def case_report_sweep_record_not_utf8(w):
    sweep = w.fake_sweep()
    (sweep / "promptinit-sweep.json").write_bytes(NOT_UTF8)
    return named(Call(["-m", "promptinit", "report", str(sweep), "--no-mlflow"], ()),
                 sweep / "promptinit-sweep.json", "UTF-8")


@case()
def case_report_sweep_record_not_an_object(w):
    sweep = w.fake_sweep()
    (sweep / "promptinit-sweep.json").write_text("[1, 2]\n")
    return named(Call(["-m", "promptinit", "report", str(sweep), "--no-mlflow"], ()),
                 sweep / "promptinit-sweep.json", "JSON object")


# --------------------------------------------------------------------------- the test


def snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    """Every path under ``root`` (links not followed) with its kind, size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in dirnames + filenames:
            p = here / name
            if p == skip:
                continue
            st = p.lstat()
            kind = "link" if p.is_symlink() else "dir" if p.is_dir() else "file"
            out[str(p.relative_to(root))] = (kind, st.st_size if kind == "file" else 0,
                                             st.st_mtime_ns if kind == "file" else 0)
    return out


def run(call: Call, w: Work) -> tuple[subprocess.CompletedProcess, float]:
    drop = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "PROMPTINIT_CONFIGS", "TRANSFORMERS_VERBOSITY")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=str(ROOT), PROMPTINIT_CACHE=str(w.cache), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_DATASETS_CACHE=str(w.hf_cache), RAY_TMPDIR=str(w.root / "ray"), PYTHONWARNINGS="ignore",
               **call.env)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *call.argv], cwd=w.cwd, env=env, capture_output=True, text=True,
                          timeout=180)
    return proc, time.perf_counter() - t0


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_nothing_written(name, tmp_path):
    w = Work(tmp_path / "w")
    call = CASES[name](w)
    before = snapshot(w.root, w.hf_cache)
    proc, seconds = run(call, w)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    assert proc.returncode == 2, output
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    for part in call.expect:
        assert part in line, f"{part!r} not named in: {line}"
    after = snapshot(w.root, w.hf_cache)
    created = sorted(set(after) - set(before))
    changed = sorted(p for p in set(before) & set(after) if before[p] != after[p])
    assert not created and not changed, f"created {created}, changed {changed}"
    if call.argv[0] == str(SWEEP):
        assert seconds < SWEEP_SECONDS and "Ray" not in proc.stdout, (seconds, proc.stdout)


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


# --------------------------------------------------------------------------- controls: the same inputs, unbroken, work


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "bigbench"])
def test_the_unbroken_data_file_loads(fmt, tmp_path):
    """The loader cases above fail for what was broken, not for the format or the catalog entry."""
    import pandas as pd

    from promptinit.tasks.catalog import load_task

    w = Work(tmp_path / "w")
    rows = keyword_rows()
    if fmt == "bigbench":
        w.write("task.json", json.dumps(bigbench_doc()))
        entry = bigbench_entry("task.json")
    else:
        name = f"data.{fmt}"
        if fmt == "parquet":
            pd.DataFrame(rows).to_parquet(w.inputs / name)
        else:
            w.write(name, {"jsonl": jsonl, "json": json.dumps, "csv": csv_text}[fmt](rows))
        entry = hf_entry(name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_CACHE", str(w.hf_cache))
        task = load_task(entry["name"], str(w.catalog([entry])))
    assert len(task.examples) == (40 if fmt == "bigbench" else len(rows))


def test_the_unbroken_sweep_passes_every_check(tmp_path):
    from promptinit.search.phases.config import check_model, check_storage, load_sweep_config

    w = Work(tmp_path / "w")
    path = w.sweep_yaml(name="fine")
    cfg = load_sweep_config(path)
    check_storage(cfg, str(path))
    info = check_model(cfg, str(path))
    assert info.hidden_size == HIDDEN and not w.storage.exists()
