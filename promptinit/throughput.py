"""How many rows one forward (and backward) pass should carry, measured per backbone and device.

The prompt is an input of the frozen model, so many small problems (prompt-tuning problems,
the tasks of a MAML meta-batch, dev sets to score) can share one pass, each row carrying its
own prompt. That is only worth it while a bigger pass runs more tokens per second: on a GPU
until the device is saturated, on a CPU up to where larger matrices stop paying (or bigger
activations fall out of the caches). A MAML meta-batch of T = 8 tasks in one pass ran at
1.17x its task-by-task time on a 2-core CPU, so no pass size is fixed. The rule, for every
batched pass in promptinit:

    rows = max(floor, tokens_per_pass // tokens of the pass's longest row)

``floor`` is the pass size of the one-by-one run (a tuning problem's batch, a task's rows,
``eval_batch_size``), so a batched pass is never smaller than the passes it replaces.
``tokens_per_pass`` is measured once: a probe times one pass of r synthetic rows of
``PROBE_TOKENS`` tokens after the prompt for r = 1, 2, 4, ... (seconds; it stops at
``PASS_LIMIT_S`` per pass or ``PROBE_BUDGET_S`` in all) and keeps the r with the least time per
token. Passes of a few hundred tokens or more spend their time in matrix products whose cost
follows the token count, which is why one measurement in tokens serves rows of any length.

Other jobs on the same cores spoil a probe: with 2 torch threads on 2 busy cores a one-row pass
took 100 times its idle time, so the probe stopped at 4 rows where the idle machine gains up to
64. After the probe, one-row passes and the chosen pass are timed again; if either moved by more
than ``UNSTABLE`` times, the machine's load changed while probing and the probe runs again
(``PROBE_ATTEMPTS`` in all). The last probe is cached even so, with a warning, so that every
process of a run (Ray trials, a resumed run) sizes its passes alike. A load that stays for the
whole probe cannot be told from a slow machine; pin ``rows_per_pass`` where runs must repeat
exactly on any machine (a pass's size changes its rounding), as ``configs/sweep/demo.yaml`` does.

The measurement is cached on disk under ``cache_dir("throughput")``, keyed by the backbone's
fingerprint (model weights, dtype, device type, attention, prompt length, token caps, torch and
transformers versions), the device itself (GPU name; CPU model and thread count), the kind of
pass and the source of the code that runs the pass. A setting (``rows_per_pass`` of
``TuneConfig`` and of the upstream methods' configs) overrides the rule. To measure again (say
the probe ran while other jobs loaded the machine), delete the folder.
"""

from __future__ import annotations

import json
import platform
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from promptinit.backbones.backbone import IGNORE, Backbone, Batch, Family
from promptinit.errors import PromptinitError
from promptinit.files import atomic_write_json
from promptinit.fingerprints import digest, source_fingerprint
from promptinit.paths import cache_dir
from promptinit.tasks.task import Example

KINDS = ("train", "score")  # forward + backward to the prompts | forward only
CANDIDATES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)  # rows per pass, tried in order
PROBE_BUDGET_S = 12.0  # seconds: no larger candidate starts after this much probing
PASS_LIMIT_S = 4.0  # seconds: no larger candidate after a pass this long (per-pass costs are noise by then)
UNSTABLE = 1.5  # a re-timed pass this many times faster or slower than in the probe: the load changed
PROBE_ATTEMPTS = 2  # probes when the load changes during one (the last one is kept either way)
WORSE = 1.25  # stop once two passes in a row cost this many times the best time per row so far
REPEAT_S = 0.1  # seconds: quick passes are repeated until this much time is spent (or MAX_REPEATS)
MAX_REPEATS = 5  # timings of one candidate at most; the fastest is kept (load only adds time)
MIN_CANDIDATES = 3  # always measured (1, 2, 4 rows) unless memory runs out: one timing says nothing
PROBE_TOKENS = 16  # tokens of a probe row after the prompt (short: the probe reaches large passes in seconds)
DEFAULT_TOKENS = 64  # tokens of a row after the prompt, when a caller does not know its rows' length
TARGET_TOKENS = 2  # target tokens of a probe row

PassTimer = Callable[[int], float]
_MEMO: dict[tuple, int] = {}


def example_tokens(backbone: Backbone, examples: Sequence[Example], with_options: bool = False) -> list[int]:
    """Tokens each example puts in a pass besides the prompt: input + target (or its longest
    option), within the backbone's token caps. Used to sort rows and to size passes.

    Args:
        backbone: the model (its tokenizer and token caps).
        examples: the examples.
        with_options: count the longest option instead of the target (scoring).

    Returns:
        One count per example.
    """
    if not examples:
        return []
    c, tok = backbone.config, backbone.tokenizer
    answers = [list(ex.options or (ex.target,)) if with_options else [ex.target] for ex in examples]
    inputs = tok([ex.input for ex in examples], add_special_tokens=False).input_ids
    flat = tok([a for group in answers for a in group], add_special_tokens=False).input_ids
    out, at = [], 0
    for ids, group in zip(inputs, answers, strict=True):
        longest = max(len(a) for a in flat[at : at + len(group)])
        at += len(group)
        # + 2: the separating space a causal model's answer gets, and the closing eos
        out.append(min(len(ids), c.max_input_tokens) + min(longest + 2, c.max_target_tokens))
    return out


def choose_rows(seconds_per_row: Mapping[int, float]) -> int:
    """The row count with the least time per row (the smaller one on a tie)."""
    if not seconds_per_row:
        raise PromptinitError("no pass size was measured; set rows_per_pass to a positive integer")
    return min(seconds_per_row, key=lambda r: (seconds_per_row[r], r))


def probe(time_pass: PassTimer, candidates: Sequence[int] = CANDIDATES) -> dict[int, float]:
    """Seconds per row of one pass of each candidate row count, smallest first.

    A quick pass is timed again until ``REPEAT_S`` is spent (at most ``MAX_REPEATS`` times)
    and the fastest time kept: other load on a shared machine only ever adds time. Stops
    early, so it costs seconds: after a pass of ``PASS_LIMIT_S``, after ``PROBE_BUDGET_S`` in
    all, when a pass runs out of memory, or once two candidates in a row cost ``WORSE`` times
    the best time per row so far; the first ``MIN_CANDIDATES`` are always measured.

    Args:
        time_pass: ``time_pass(rows) -> seconds`` of one pass.
        candidates: row counts, increasing.

    Returns:
        ``{rows: seconds per row}`` of the candidates measured.
    """
    time_pass(candidates[0])  # warm-up: first calls allocate and pick kernels
    out: dict[int, float] = {}
    start = time.perf_counter()
    worse = 0
    for rows in candidates:
        try:
            seconds = _fastest(time_pass, rows)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        out[rows] = seconds / rows
        worse = worse + 1 if out[rows] > WORSE * min(out.values()) else 0
        if len(out) >= MIN_CANDIDATES and (
            seconds > PASS_LIMIT_S or worse >= 2 or time.perf_counter() - start > PROBE_BUDGET_S
        ):
            break
    return out


def _fastest(time_pass: PassTimer, rows: int) -> float:
    """The fastest of up to ``MAX_REPEATS`` timings of a pass (repeated while under ``REPEAT_S``)."""
    seconds = spent = time_pass(rows)
    for _ in range(MAX_REPEATS - 1):
        if spent >= REPEAT_S:
            break
        t = time_pass(rows)
        seconds, spent = min(seconds, t), spent + t
    return seconds


def stable(time_pass: PassTimer, seconds_per_row: Mapping[int, float]) -> bool:
    """Whether one-row passes and the chosen pass, timed again, still cost what the probe found
    (within ``UNSTABLE`` times): if not, the machine's load changed during the probe."""
    for rows in {min(seconds_per_row), choose_rows(seconds_per_row)}:
        ratio = _fastest(time_pass, rows) / rows / seconds_per_row[rows]
        if not 1 / UNSTABLE <= ratio <= UNSTABLE:
            return False
    return True


def pass_timer(backbone: Backbone, kind: str, tokens: int) -> PassTimer:
    """``time_pass(rows)``: seconds of one pass of ``rows`` synthetic rows of ``tokens`` tokens
    (prompt included), each with its own prompt, as the batched runs do."""
    gen = torch.Generator().manual_seed(0)
    L, d, dev = backbone.config.prompt_length, backbone.hidden_size, backbone.device
    vocab = min(len(backbone.tokenizer), backbone.model.get_input_embeddings().num_embeddings)
    n = max(tokens - L, TARGET_TOKENS + 1)

    def batch(rows: int) -> Batch:
        if backbone.family is Family.CAUSAL:
            ids = torch.randint(vocab, (rows, n), generator=gen)
            labels = torch.full_like(ids, IGNORE)
            labels[:, -TARGET_TOKENS:] = ids[:, -TARGET_TOKENS:]
        else:
            ids = torch.randint(vocab, (rows, n - TARGET_TOKENS), generator=gen)
            labels = torch.randint(vocab, (rows, TARGET_TOKENS), generator=gen)
        return Batch(ids, torch.ones_like(ids), labels).to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def time_pass(rows: int) -> float:
        b = batch(rows)
        prompt = (0.02 * torch.randn(rows, L, d, generator=gen)).to(dev, backbone.dtype)
        sync()
        t0 = time.perf_counter()
        if kind == "train":
            prompt.requires_grad_(True)
            torch.autograd.grad(backbone.loss(prompt, b, per_example=True).sum(), prompt)
        else:
            with torch.no_grad():
                backbone.loss(prompt, b, per_example=True)
        sync()
        return time.perf_counter() - t0

    return time_pass


def _device_detail(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        model = names[0] if names else model
    return f"{device.type}:{model}:threads{torch.get_num_threads()}"


def cache_path(backbone: Backbone, kind: str) -> Path:
    """Where the measurement of (backbone, device, kind of pass) is cached."""
    key = digest(
        backbone.fingerprint,
        _device_detail(backbone.device),
        kind,
        PROBE_TOKENS,
        source_fingerprint(__name__, "promptinit.backbones.backbone"),
        n=24,
    )
    return cache_dir("throughput") / f"{kind}-{key}.json"


def tokens_per_pass(backbone: Backbone, kind: str = "train", *, use_cache: bool = True) -> int:
    """The measured best pass size in tokens (prompt included) for this backbone and device.

    Args:
        backbone: the frozen model, on its device.
        kind: ``train`` (forward and backward to the prompts) or ``score`` (forward only).
        use_cache: read and write the on-disk measurement (the probe runs once per process
            either way).

    Returns:
        Tokens per pass (rows x tokens of a row).
    """
    if kind not in KINDS:
        raise PromptinitError(f"pass kind {kind!r} is not one of {', '.join(KINDS)}")
    memo_key = (backbone.config, str(backbone.device), torch.get_num_threads(), kind)
    if memo_key in _MEMO:
        return _MEMO[memo_key]
    path = cache_path(backbone, kind)
    if use_cache and path.exists():
        tokens = int(json.loads(path.read_text())["tokens_per_pass"])
    else:
        row = backbone.config.prompt_length + PROBE_TOKENS
        timer = pass_timer(backbone, kind, row)
        for _ in range(PROBE_ATTEMPTS):
            per_row = probe(timer)
            steady = stable(timer, per_row)
            if steady:
                break
        tokens = choose_rows(per_row) * row
        if not steady:
            warnings.warn(
                f"the {kind} pass-size probe of {backbone.config.model} saw the machine's load change "
                f"{PROBE_ATTEMPTS} times (other jobs on its cores?); it keeps {tokens} tokens per pass. "
                f"To measure again on a quiet machine delete {path.parent}; to fix the pass size set "
                "rows_per_pass.",
                RuntimeWarning,
                stacklevel=2,
            )
        if use_cache:
            record = {
                "tokens_per_pass": tokens,
                "kind": kind,
                "probe_row_tokens": row,
                "steady": steady,
                "fingerprint": backbone.fingerprint,
                "device": _device_detail(backbone.device),
                "seconds_per_token": {str(r): s / row for r, s in per_row.items()},
            }
            atomic_write_json(path, record, indent=1)
    _MEMO[memo_key] = tokens
    return tokens


def rows_per_pass(
    backbone: Backbone,
    kind: str = "train",
    tokens: int | None = None,
    *,
    floor: int = 1,
    override: int | None = None,
    use_cache: bool = True,
) -> int:
    """Rows one pass should carry: ``max(floor, tokens_per_pass // tokens)``, or the setting.

    Args:
        backbone: the frozen model, on its device.
        kind: ``train`` (forward and backward to the prompts) or ``score`` (forward only).
        tokens: tokens of the pass's longest row, prompt included (default: the prompt and
            ``DEFAULT_TOKENS``).
        floor: the pass size of the one-by-one run this pass replaces (never fewer rows).
        override: a fixed row count (the ``rows_per_pass`` setting); None or 0: measured.
        use_cache: see ``tokens_per_pass``.

    Returns:
        A row count >= 1.
    """
    if override:
        if isinstance(override, bool) or not isinstance(override, int) or override < 1:
            raise PromptinitError(f"field 'rows_per_pass': {override!r} must be an integer >= 1, or 0 to measure it")
        return override
    row = backbone.config.prompt_length + DEFAULT_TOKENS if tokens is None else max(int(tokens), 1)
    return max(floor, 1, tokens_per_pass(backbone, kind, use_cache=use_cache) // row)
