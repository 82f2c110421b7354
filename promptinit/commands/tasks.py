"""``promptinit tasks``: list the task catalog."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("tasks", help="list the task catalog")
    p.add_argument("--catalog", default=None, help="catalog YAML (default configs/tasks.yaml)")
    p.add_argument("--kind", default=None, choices=["classification", "multiple_choice", "generation"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from promptinit.tasks.catalog import load_catalog

    specs = load_catalog(args.catalog)
    rows = [s for s in specs.values() if args.kind is None or _kind(s) == args.kind]
    width = max((len(s.name) for s in rows), default=4)
    for s in sorted(rows, key=lambda s: (_kind(s), s.name)):
        print(f"{s.name:<{width}}  {_kind(s):<16} {_metric(s):<12} {getattr(s, 'description', '') or ''}")
    counts = {k: sum(_kind(s) == k for s in rows) for k in ("classification", "multiple_choice", "generation")}
    print(f"{len(rows)} tasks: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return 0


def _kind(spec) -> str:
    return getattr(spec.kind, "value", spec.kind)


def _metric(spec) -> str:
    return getattr(spec.metric, "value", spec.metric)
