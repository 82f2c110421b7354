"""``promptinit selfsup``: build the SUPMER corpus and clusters, show sizes, examples and a plot."""

from __future__ import annotations

import argparse
import logging
import textwrap
import time

from promptinit.errors import PromptinitError, check_writable, flag_error

logger = logging.getLogger(__name__)

FLAGS = {
    "sources": "--corpus",
    "min_words": "--min-words",
    "max_words": "--max-words",
    "max_doc_sentences": "--max-doc-sentences",
    "max_sentences": "--max-sentences",
    "k": "--k",
    "encoder": "--encoder",
    "seed": "--seed",
}


def register(sub) -> None:
    p = sub.add_parser("selfsup", help="inspect the self-supervised corpus, its clusters and the SUPMER task formats")
    p.add_argument(
        "--corpus",
        nargs="+",
        default=None,
        metavar="SOURCE",
        help="sources: bbc, topical_chat, wordnet, bigbench:TASK, hf:NAME[:CONFIG][@SPLIT][#COLUMN], "
        "or .txt/.jsonl files and folders "
        "(default: topical_chat bigbench:understanding_fables bigbench:play_dialog_same_or_different)",
    )
    p.add_argument("--k", type=int, default=50, help="K-means clusters (default 50)")
    p.add_argument(
        "--max-sentences",
        type=int,
        default=6000,
        help="cap on the corpus size; 0 = no cap (default 6000: 1-3 min of encoding on 2 CPU cores, once)",
    )
    p.add_argument("--max-doc-sentences", type=int, default=16, help="leading sentences kept per document; 0 = all")
    p.add_argument("--min-words", type=int, default=5)
    p.add_argument("--max-words", type=int, default=40)
    p.add_argument("--encoder", default="all-minilm-l6-v2", help="sentence-transformers model (name, folder or hub id)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--formats", nargs="+", default=None, metavar="FORMAT", help="nsp nss scsp scss scc (default all)")
    p.add_argument("--examples", type=int, default=2, help="examples printed per format (default 2)")
    p.add_argument("--plot", default="selfsup_clusters.png", help="PNG of the 2-D projection (default %(default)s)")
    p.add_argument("--projection", default="pca", choices=["pca", "tsne"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar while encoding")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from promptinit.selfsup.clustering import ClusterConfig, cluster_corpus
    from promptinit.selfsup.corpus import DEFAULT_SOURCES, CorpusConfig, build_corpus
    from promptinit.selfsup.formats import FORMATS, SelfSupTaskSampler
    from promptinit.selfsup.plot import plot_clusters

    if args.examples < 0:
        raise PromptinitError(f"option '--examples': {args.examples} must be >= 0")
    # settings first: a bad flag fails before any text is read
    try:
        config = CorpusConfig(
            sources=tuple(args.corpus or DEFAULT_SOURCES),
            min_words=args.min_words,
            max_words=args.max_words,
            max_doc_sentences=args.max_doc_sentences or None,
            max_sentences=args.max_sentences or None,
            seed=args.seed,
        )
        cluster_config = ClusterConfig(k=args.k, encoder=args.encoder, seed=args.seed)
    except PromptinitError as err:
        raise flag_error(err, FLAGS) from None
    formats = args.formats or list(FORMATS)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise PromptinitError(f"option '--formats': {unknown} unknown; choose from {' '.join(FORMATS)}")
    check_writable(args.plot, "option '--plot'")
    t0 = time.perf_counter()
    try:
        corpus = build_corpus(config)
    except PromptinitError as err:
        if str(err).startswith(("source ", "corpus ")):
            raise PromptinitError(f"option '--corpus': {err}") from None
        raise
    t_corpus = time.perf_counter() - t0
    print(
        f"corpus {corpus.fingerprint}: {len(corpus)} sentences in {len(corpus.documents)} documents ({t_corpus:.1f} s)"
    )
    for source, c in corpus.source_counts().items():
        print(f"  {source:<16} {c['documents']:>6} documents {c['sentences']:>7} sentences")

    clusters = cluster_corpus(corpus, cluster_config, progress=not args.no_progress)
    enc, km = clusters.timings["encode"], clusters.timings["kmeans"]
    print(
        f"clusters {clusters.key}: k={clusters.k}, encoder {args.encoder}: encoding {enc:.1f} s, "
        f"k-means {km:.1f} s (0.0 = cached)"
    )
    sizes = clusters.sizes()
    order = sizes.argsort()[::-1]
    print(f"cluster sizes: min {sizes.min()}, median {int(sorted(sizes)[len(sizes) // 2])}, max {sizes.max()}")
    print("  " + "  ".join(f"c{c}:{sizes[c]}" for c in order))

    if args.examples:
        n = max(args.examples, 1)
        for fmt in formats:
            task = SelfSupTaskSampler(corpus, clusters, [fmt], n_support=n, n_query=n, seed=args.seed).sample()
            print(f"\n=== {fmt} (cluster {task.cluster}, aug cluster {task.aug_cluster}, {task.kind.value})")
            for ex in task.support[: args.examples]:
                print(textwrap.indent(ex.input, "  | "))
                shown = task.option_clusters.get(ex.uid)
                extra = f"   (markers <c0>..<c{len(shown) - 1}> = clusters {list(shown)})" if shown else ""
                print(f"  -> {ex.target}{extra}")

    t0 = time.perf_counter()
    path = plot_clusters(clusters, args.plot, method=args.projection, seed=args.seed)
    logger.info("wrote %s (%s, %.1f s)", path, args.projection, time.perf_counter() - t0)
    return 0
