import json

import pytest

from promptinit.errors import PromptinitError
from promptinit.selfsup.corpus import (
    CorpusConfig,
    _dedup_key,
    _wordnet,
    build_corpus,
    corpus_from_texts,
    split_sentences,
)


def test_split_sentences_breaks_on_sentence_ends_but_not_abbreviations():
    text = ('Mr. Smith flew to the U.S. in Jan. 2004. He said: "It was fine." Then J. K. Rowling wrote! '
            "Prices rose 2.5% to $1.13bn. (A new one.) last\nA new line")
    assert split_sentences(text) == [
        "Mr. Smith flew to the U.S. in Jan. 2004.",
        'He said: "It was fine."',
        "Then J. K. Rowling wrote!",
        "Prices rose 2.5% to $1.13bn.",
        "(A new one.) last",
        "A new line",
    ]


def test_corpus_filters_lengths_deduplicates_and_keeps_source_positions(corpus):
    cfg = corpus.config
    assert len(corpus) == cfg.max_sentences
    assert all(cfg.min_words <= len(s.split()) <= cfg.max_words for s in corpus.sentences)
    assert len({_dedup_key(s) for s in corpus.sentences}) == len(corpus)
    for d in range(len(corpus.documents)):
        span = corpus.doc_span(d)
        assert cfg.min_doc_sentences <= len(span) <= cfg.max_doc_sentences
        positions = [int(corpus.pos[i]) for i in span]
        assert positions == sorted(set(positions))  # original order, no repeats
    assert all(name.startswith("bbc/") for name in corpus.documents)
    # next_sentence only links sentences that were adjacent in the article
    for i in range(len(corpus)):
        j = corpus.next_sentence(i)
        if j is not None:
            assert corpus.doc[j] == corpus.doc[i] and corpus.pos[j] == corpus.pos[i] + 1


def test_corpus_fingerprint_is_stable_and_follows_settings(corpus):
    again = build_corpus(corpus.config)
    assert again.fingerprint == corpus.fingerprint and again.sentences == corpus.sentences
    other = build_corpus(CorpusConfig(sources=("bbc",), max_sentences=480, max_doc_sentences=12, seed=1))
    assert other.fingerprint != corpus.fingerprint


def test_corpus_reads_txt_and_jsonl_files_and_folders(tmp_path):
    doc = "The first sentence is here today. The second sentence follows it now. A third sentence ends the text."
    (tmp_path / "a.txt").write_text(doc)
    (tmp_path / "b.jsonl").write_text(json.dumps({"body": doc.replace("sentence", "line")}) + "\n")
    corpus = build_corpus(CorpusConfig(sources=(str(tmp_path / "a.txt"), f"{tmp_path / 'b.jsonl'}#body"),
                                       max_sentences=None))
    assert len(corpus.documents) == 2 and len(corpus) == 6
    assert corpus.adjacent(0, 1) and not corpus.adjacent(0, 2)
    with pytest.raises(PromptinitError, match="no field 'text'"):
        build_corpus(CorpusConfig(sources=(str(tmp_path / "b.jsonl"),), max_sentences=None))
    (tmp_path / "b.jsonl").unlink()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jsonl").write_text(json.dumps({"text": doc.replace("sentence", "row")}) + "\n")
    folder = build_corpus(CorpusConfig(sources=(str(tmp_path),), max_sentences=None))
    assert len(folder.documents) == 2 and len(folder) == 6


def test_in_memory_documents_and_empty_result():
    corpus = corpus_from_texts(["One two three four five. Six seven eight nine ten. Eleven twelve thirteen fourteen fifteen."],
                               CorpusConfig(sources=("mem",), max_sentences=None))
    assert corpus.documents == ("texts/000000",) and len(corpus) == 3
    with pytest.raises(PromptinitError, match="relax min_words"):
        corpus_from_texts(["Too short."], CorpusConfig(sources=("mem",), max_sentences=None))


def test_unknown_source_and_bad_settings_raise():
    with pytest.raises(PromptinitError, match="not a known source"):
        build_corpus(CorpusConfig(sources=("no_such_source_or_file",)))
    with pytest.raises(PromptinitError, match="min_words"):
        CorpusConfig(min_words=10, max_words=5)
    # an optional source that is not installed is skipped
    assert len(build_corpus(CorpusConfig(sources=("bbc", "/nonexistent/wordnet-like?"), max_sentences=100)))


def test_wordnet_glosses_become_documents_per_lexicographer_file(tmp_path):
    (tmp_path / "lexnames").write_text("05\tnoun.animal\t1\n")
    (tmp_path / "data.noun").write_text(
        "  1 licence header line\n"
        "00001 05 n 01 dog 0 000 | a member of the genus Canis that has been domesticated; "
        '"the dog barked all night long at the moon"\n'
    )
    docs = list(_wordnet(tmp_path))
    assert [d.name for d in docs] == ["wordnet/noun.animal"]
    assert docs[0].units == ["A member of the genus Canis that has been domesticated",
                             "The dog barked all night long at the moon"]


def test_topical_chat_conversations_are_documents_in_turn_order():
    # install.sh extracts the BIG-bench task files; without them this fails with that hint.
    corpus = build_corpus(CorpusConfig(sources=("topical_chat",), max_sentences=300))
    assert all(name.startswith("topical_chat/") for name in corpus.documents)
    assert len(corpus) == 300 and len(corpus.documents) >= 300 // 16


def test_datasets_source_reads_a_column_of_a_local_dataset(tmp_path):
    (tmp_path / "train.csv").write_text(
        'text,label\n"The first sentence is here today. The second sentence follows it now. '
        'A third sentence ends the text.",1\n'
    )
    corpus = build_corpus(CorpusConfig(sources=(f"hf:{tmp_path}",), max_sentences=None))
    assert len(corpus) == 3 and corpus.next_sentence(0) == 1
    with pytest.raises(PromptinitError, match="no column 'body'"):
        build_corpus(CorpusConfig(sources=(f"hf:{tmp_path}#body",), max_sentences=None))


def test_default_corpus_uses_no_text_a_catalog_task_is_built_from():
    """SUPMER's unlabelled corpus must not hold the inputs of the tasks promptinit evaluates on."""
    from promptinit.selfsup.corpus import DEFAULT_SOURCES
    from promptinit.tasks.catalog import load_catalog

    used = set()
    for spec in load_catalog().values():
        src = spec.source
        if src.type == "bigbench":
            used.update({f"bigbench:{src.task}", f"bigbench:{src.task.split('/')[0]}"})
            if src.task.split("/")[0] == "topical_chat":
                used.add("topical_chat")
        elif src.type == "bbc_news":
            used.add("bbc")
    assert used and not used & set(DEFAULT_SOURCES), used & set(DEFAULT_SOURCES)
    corpus = build_corpus(CorpusConfig(max_sentences=600))
    prefixes = {name.split("/")[0] for name in corpus.documents}
    assert len(corpus.sentences) >= 500 and len(prefixes) >= 2, prefixes
