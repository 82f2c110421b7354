"""``promptinit tasks``: list the task catalog, or the tasks of a partition."""

from __future__ import annotations

import argparse

KINDS = ("classification", "multiple_choice", "generation")


def register(sub) -> None:
    p = sub.add_parser("tasks", help="list the task catalog (or a partition's tasks)")
    p.add_argument("--catalog", default=None, help="catalog YAML (default configs/tasks.yaml)")
    p.add_argument("--kind", default=None, choices=KINDS)
    p.add_argument("--partition", default=None, help="show a partition's source/target/validation tasks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from promptinit.tasks.catalog import load_catalog

    specs = load_catalog(args.catalog)
    if args.partition:
        from promptinit.tasks.partitions import load_partition

        part = load_partition(args.partition, specs, pending_ok=True)
        roles = ("source", "target", "validation") + (("validation_candidates",) if part.validation_candidates else ())
        groups = [(role, [specs[n] for n in getattr(part, role)]) for role in roles]
    else:
        groups = [("", list(specs.values()))]
    for role, rows in groups:
        rows = [s for s in rows if args.kind is None or s.kind.value == args.kind]
        if role:
            print(f"{role}:")
        width = max((len(s.name) for s in rows), default=4)
        for s in sorted(rows, key=lambda s: (s.kind.value, s.name)):
            print(f"{'  ' if role else ''}{s.name:<{width}}  {s.kind.value:<16} {_metric(s):<12} {s.description}")
        counts = ", ".join(f"{sum(s.kind.value == k for s in rows)} {k}" for k in KINDS)
        print(f"{'  ' if role else ''}{len(rows)} tasks: {counts}")
    return 0


def _metric(spec) -> str:
    if spec.metric is not None:
        return spec.metric.value
    return "rouge_l" if spec.kind.value == "generation" else "accuracy"
