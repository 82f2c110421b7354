#!/usr/bin/env bash
# The GPU checks in one call: on a machine with one CUDA GPU, at most 8 minutes, one table.
#
#   1. pytest -m gpu tests/gpu        device placement of every tensor, bfloat16, four trials of
#                                     0.25 GPU running at the same time on one GPU
#   2. benchmarks/meta_step.py        outer-step cost of each method vs a PT step, on cuda
#   3. benchmarks/eval_throughput.py  batched vs one-by-one downstream tuning, on cuda
#   4. benchmarks/utilisation.py      model FLOP rate of a tuning and a scoring pass as % of the
#                                     GPU's matmul peak, bf16 and fp32, eager and sdpa attention
#   5. search/sweep.py --smoke-test   the demo (configs/sweep/demo.yaml, resources.gpu: auto) on a
#                                     copy whose storage_path is this run's log folder, so the
#                                     user's runs/ sweeps and MLflow store are never touched
#
# Each check runs under `timeout` with its own budget (cut further so the whole call stays within
# TOTAL_S); its log goes to runs/gpu_check/<timestamp>/. The table at the end reads
# check | status (pass / fail / timeout) | seconds | key figure; the exit status is 1 when any
# check did not pass. Without CUDA nothing runs: one line says so, every row reads
# "not run (no CUDA)" and the exit status is 0.
#
# Usage: benchmarks/gpu_check.sh    (from any directory)
set -u

TOTAL_S=480    # the whole call, seconds (8 minutes)
GRACE_S=10     # a check over its budget gets SIGTERM, then SIGKILL this much later
RESERVE_S=20   # kept back for reading the last check's results and the table
MIN_S=20       # a check is not started with less time than this left
# Per-check budgets (seconds), each cut to what is left of TOTAL_S; the smoke test, last and
# the longest, gets the rest.
BUDGET_TESTS=110
BUDGET_META=75
BUDGET_EVAL=100
BUDGET_UTIL=60
BUDGET_SMOKE=$TOTAL_S

ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd) || exit 2
cd "$ROOT" || exit 2
PY=$ROOT/.venv/bin/python

NAMES=("pytest -m gpu tests/gpu" "benchmarks/meta_step.py --device cuda"
       "benchmarks/eval_throughput.py --device cuda" "benchmarks/utilisation.py --device cuda"
       "search/sweep.py --smoke-test (demo)")
STATUS=() SECS=() FIGURE=() BUDGET_USED=()

print_table() {
    local i w=5
    for i in "${!NAMES[@]}"; do (( ${#NAMES[i]} > w )) && w=${#NAMES[i]}; done
    printf '| %-*s | %-17s | %7s | %s |\n' "$w" check status seconds "key figure"
    printf '|-%s-|-------------------|--------:|------------|\n' "$(printf '%*s' "$w" '' | tr ' ' -)"
    for i in "${!NAMES[@]}"; do
        printf '| %-*s | %-17s | %7s | %s |\n' "$w" "${NAMES[i]}" "${STATUS[i]}" "${SECS[i]}" "${FIGURE[i]}"
    done
}

if [[ ! -x $PY ]]; then
    echo "gpu_check: $PY is missing; install the project first (./install.sh)" >&2
    exit 2
fi
# stdout only: torch may warn on stderr about a driver it cannot use.
if ! gpu=$("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>/dev/null); then
    echo "gpu_check: cannot import torch with $PY: $("$PY" -c 'import torch' 2>&1 | tail -1)" >&2
    exit 2
fi
if [[ -z $gpu ]]; then
    echo "gpu_check: these checks need a CUDA GPU and torch sees none here; nothing was run."
    for i in "${!NAMES[@]}"; do STATUS[i]="not run (no CUDA)" SECS[i]="-" FIGURE[i]="-"; done
    print_table
    exit 0
fi

# --------------------------------------------------------------------------- the GPU path

LOGS=$ROOT/runs/gpu_check/$(date +%Y%m%d-%H%M%S)
mkdir -p "$LOGS" || exit 2
# Temp dir of every check (TMPDIR, RAY_TMPDIR): short, because Ray's socket paths must stay
# under ~107 characters; whatever a check leaves running under it is ended after that check.
WORK=$(mktemp -d /tmp/gpuchk.XXXXXX) || exit 2
CHECK_ENV=(env -u RAY_ADDRESS -u MLFLOW_TRACKING_URI "TMPDIR=$WORK" "RAY_TMPDIR=$WORK" PYTHONUNBUFFERED=1)
CHILD="" INTERRUPTED=0

end_leftovers() {
    # Processes a check left behind (Ray's raylet, GCS and workers after a timeout): those whose
    # environment or command line names this run's temp dir. Ended by pid, nothing else.
    "$PY" - "$WORK" <<'EOF' 2>/dev/null
import os, sys
import psutil
key = sys.argv[1]
for p in psutil.process_iter(["pid", "cmdline"]):
    if p.pid == os.getpid():
        continue
    try:
        env = p.environ()
        if (env.get("TMPDIR") == key or env.get("RAY_TMPDIR", "").startswith(key)
                or f"{key}/" in " ".join(p.info["cmdline"] or [])):
            p.kill()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        pass
EOF
}
# shellcheck disable=SC2329  # both run from the traps below
on_exit() { end_leftovers; rm -rf "$WORK"; }
# shellcheck disable=SC2329
on_signal() {
    INTERRUPTED=1
    [[ -n $CHILD ]] && kill -TERM "$CHILD" 2>/dev/null  # timeout passes it on to the check
}
trap on_exit EXIT
trap on_signal INT TERM

now_us() { local t=${EPOCHREALTIME:-$SECONDS.000000}; echo "${t/[.,]/}"; }

# run_check INDEX BUDGET_S LOG COMMAND...: sets STATUS and SECS, and RAN=1 when the command
# ran (then FIGURE is the caller's to set from the log); returns the command's exit status
# (124 on timeout).
run_check() {
    local i=$1 budget=$2 log=$3 left rc t0 us
    shift 3
    RAN=0
    left=$(( TOTAL_S - SECONDS - GRACE_S - RESERVE_S ))
    (( budget > left )) && budget=$left
    if (( INTERRUPTED )); then
        STATUS[i]="not run" SECS[i]="-" FIGURE[i]="interrupted"
        return 130
    fi
    if (( budget < MIN_S )); then
        STATUS[i]="timeout" SECS[i]="0.0" FIGURE[i]="not started: ${budget} s left for it of the call's ${TOTAL_S} s"
        return 124
    fi
    echo "gpu_check: ${NAMES[i]} (budget ${budget} s) -> ${log#"$ROOT"/}" >&2
    RAN=1
    t0=$(now_us)
    timeout -k "$GRACE_S" "$budget" "${CHECK_ENV[@]}" "$@" >"$log" 2>&1 </dev/null &
    CHILD=$!
    wait "$CHILD"
    rc=$?
    (( INTERRUPTED )) && { wait "$CHILD"; rc=$?; }
    CHILD=""
    us=$(( $(now_us) - t0 ))
    SECS[i]=$(printf '%d.%d' $(( us / 1000000 )) $(( us % 1000000 / 100000 )))
    end_leftovers
    case $rc in
        0) STATUS[i]=pass ;;
        124|137) STATUS[i]=timeout BUDGET_USED[i]=$budget ;;
        *) STATUS[i]=fail ;;
    esac
    (( INTERRUPTED )) && STATUS[i]=interrupted
    return "$rc"
}

fail_with() {  # fail_with INDEX REASON: a check that exited 0 but did not show what it should
    [[ ${STATUS[$1]} == pass ]] && STATUS[$1]=fail
    FIGURE[$1]="$2; ${FIGURE[$1]}"
}

say_timeout() {  # say_timeout INDEX: a killed check's figure starts with its budget
    [[ ${STATUS[$1]} == timeout && -n ${BUDGET_USED[$1]:-} ]] || return 0
    FIGURE[$1]="killed at ${BUDGET_USED[$1]} s${FIGURE[$1]:+; ${FIGURE[$1]}}"
}

last_line() {  # the log's last error line, else its last line (100 characters)
    local line
    line=$(grep -E '(Error|error|FAILED)\b' "$1" 2>/dev/null | tail -1)
    [[ -n $line ]] || line=$(grep -v '^[[:space:]]*$' "$1" 2>/dev/null | tail -1)
    echo "${line:0:100}"
}

echo "gpu_check: $gpu; logs in ${LOGS#"$ROOT"/}/; at most $TOTAL_S s" >&2

# 1. the tests marked gpu -----------------------------------------------------------------------
log=$LOGS/pytest_gpu.log
run_check 0 "$BUDGET_TESTS" "$log" "$PY" -m pytest -m gpu tests/gpu -p no:cacheprovider --timeout 100
rc=$?
if (( RAN )); then
    summary=$(grep -E '[0-9]+ (passed|failed|skipped|errors?|deselected)[^=]* in [0-9.]+s' "$log" | tail -1 \
              | sed -E 's/^=+ //; s/ =+$//')
    FIGURE[0]=${summary:-$(last_line "$log")}
    if (( rc == 0 )) && [[ $summary == *skipped* ]]; then
        fail_with 0 "tests were skipped on a GPU machine"
    fi
    say_timeout 0
fi

# 2. meta_step.py on cuda -----------------------------------------------------------------------
log=$LOGS/meta_step.log
run_check 1 "$BUDGET_META" "$log" "$PY" benchmarks/meta_step.py --device cuda
rc=$?
# Rows: name in the first 18 columns, then s/step, x PT, peak MB, x PT, target; T rows: name,
# batched s, by task s, batched/by task. The figure is the last (largest) model's.
if (( RAN )); then
    FIGURE[1]=$(awk '
        /^## / { model = $2; dev = $4; if (dev != "cuda") off = off " " model "@" dev; fig = ""; next }
        model == "" { next }
        /^MAML meta-gradient vs higher/ { hi = ($NF == "(identical)") ? "0 (identical)" : $NF; next }
        {
            name = substr($0, 1, 18); sub(/ +$/, "", name); n = split(substr($0, 19), f, " ")
            if (name ~ /^(fomaml|maml|reptile k=[0-9]+)$/ && n >= 2) fig = fig sprintf(" %s %sx", name, f[2])
            else if (name ~ / T=[0-9]+$/ && n == 3) t = sprintf("; %s batched/by task %s", name, f[3])
        }
        END {
            if (model == "") exit
            out = model ": x PT step" fig t
            if (hi != "") out = out "; MAML vs higher " hi
            if (off != "") out = "NOT ON CUDA:" off "; " out
            print out
        }' "$log")
    [[ -n ${FIGURE[1]} ]] || FIGURE[1]=$(last_line "$log")
    if (( rc == 0 )) && [[ ${FIGURE[1]} == "NOT ON CUDA"* || ${FIGURE[1]} != *": x PT step"* ]]; then
        fail_with 1 "no cuda result"
    fi
    say_timeout 1
fi

# 3. eval_throughput.py on cuda -----------------------------------------------------------------
log=$LOGS/eval_throughput.log
run_check 2 "$BUDGET_EVAL" "$log" "$PY" benchmarks/eval_throughput.py --device cuda
rc=$?
# Rows: N, one-by-one s/problem-step, batched s/problem-step, batched/one, under a header
# "## <model> <dtype> on <device> (...)"; a dtype without rows yet (timed out) is left out.
if (( RAN )); then
    FIGURE[2]=$(awk '
        /^## / { dtype = $3; dev = $5; if (dev != "cuda") off = off " " dtype "@" dev; order[++k] = dtype; next }
        dtype != "" && NF == 4 && $1 ~ /^[0-9]+$/ { r[dtype] = r[dtype] (r[dtype] == "" ? "" : "/") $4; ns[dtype] = ns[dtype] (ns[dtype] == "" ? "" : "/") $1 }
        END {
            out = "batched/one-by-one"; sep = ""
            for (j = 1; j <= k; j++) if (r[order[j]] != "") {
                out = out sprintf("%s %s %s (N=%s)", sep, order[j], r[order[j]], ns[order[j]]); sep = ";"
            }
            if (sep == "") exit
            if (off != "") out = "NOT ON CUDA:" off "; " out
            print out
        }' "$log")
    [[ -n ${FIGURE[2]} ]] || FIGURE[2]=$(last_line "$log")
    if (( rc == 0 )) && [[ ${FIGURE[2]} == "NOT ON CUDA"* || ${FIGURE[2]} != "batched/one-by-one "* ]]; then
        fail_with 2 "no cuda result"
    fi
    say_timeout 2
fi

# 4. utilisation.py on cuda ---------------------------------------------------------------------
log=$LOGS/utilisation.log
# Eager passes only: a cold torch.compile of the 30-layer model would take most of the budget
# (run `benchmarks/utilisation.py --device cuda --compile off on` by hand for that).
run_check 3 "$BUDGET_UTIL" "$log" "$PY" benchmarks/utilisation.py --device cuda --dtype bfloat16 float32 \
    --attn eager sdpa --rounds 3
rc=$?
# Table rows: | device | dtype | threads | pass | attention | compiled | GFLOP/s | % of peak | ...
if (( RAN )); then
    FIGURE[3]=$(awk -F'|' '
        $2 ~ /^ *cuda *$/ && $9 ~ /%/ {
            d = $3; p = $5; a = $6; pct = $9; gsub(/ /, "", d); gsub(/ /, "", p); gsub(/ /, "", a); gsub(/ /, "", pct)
            sub(/bfloat16/, "bf16", d); sub(/float32/, "fp32", d)
            out = out sep d " " p " " a " " pct; sep = ", "
        }
        END { if (out != "") print "% of matmul peak: " out }' "$log")
    [[ -n ${FIGURE[3]} ]] || FIGURE[3]=$(last_line "$log")
    if (( rc == 0 )) && [[ ${FIGURE[3]} != "% of matmul peak: "* ]]; then
        fail_with 3 "no cuda result"
    fi
    say_timeout 3
fi

# 5. the demo's smoke test ----------------------------------------------------------------------
log=$LOGS/sweep_smoke.log
storage=$LOGS/smoke
config=$WORK/demo.yaml
# The demo's YAML with storage_path in this run's log folder and the MLflow store in the sweep
# folder; paths relative to configs/sweep/ are made absolute for the copy (as
# search/phases/config.py resolves them next to the YAML).
RAN=0
if "$PY" - "$ROOT/configs/sweep/demo.yaml" "$config" "$storage" >"$LOGS/smoke_config.log" 2>&1 <<'EOF'
import sys
from pathlib import Path

import yaml

src, dst, storage = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
raw = yaml.safe_load(src.read_text())
for key in ("partition", "catalog"):
    value = raw.get(key)
    if isinstance(value, str) and value.endswith((".yaml", ".yml")) and not Path(value).is_absolute() \
            and (src.parent / value).is_file():
        raw[key] = str((src.parent / value).resolve())
selection = raw.get("source_selection")
if isinstance(selection, dict) and isinstance(selection.get("prompts"), str) \
        and not Path(selection["prompts"]).is_absolute() and (src.parent / selection["prompts"]).is_dir():
    selection["prompts"] = str((src.parent / selection["prompts"]).resolve())
raw.update(storage_path=storage, tracking_uri=None)
dst.write_text(yaml.safe_dump(raw, sort_keys=False))
EOF
then
    run_check 4 "$BUDGET_SMOKE" "$log" "$PY" search/sweep.py --config "$config" --smoke-test
    rc=$?
else
    STATUS[4]=fail SECS[4]="-" FIGURE[4]="could not copy configs/sweep/demo.yaml: $(last_line "$LOGS/smoke_config.log")"
fi
if (( RAN )); then
    finished=$(grep -Eo 'sweep finished in [0-9]+ s \(search [0-9]+ s\)' "$log" | tail -1)
    # Tune's own record of each trial's reservation: with resources.gpu auto on a GPU machine,
    # every trial must have had 0.25 GPU.
    state=$(find "$storage" -maxdepth 2 -name 'experiment_state-*.json' -print -quit 2>/dev/null)
    trials=""
    if [[ -n $state ]]; then
        trials=$(timeout 15 "${CHECK_ENV[@]}" "$PY" - "$(dirname "$state")" 2>/dev/null <<'EOF'
import collections, sys
from ray.tune import ExperimentAnalysis
trials = ExperimentAnalysis(sys.argv[1]).trials
gpu = sorted({t.placement_group_factory.required_resources.get("GPU", 0.0) for t in trials})
status = collections.Counter(str(t.status) for t in trials)
print(f"{len(trials)} trials ({', '.join(f'{n} {s}' for s, n in sorted(status.items()))}), "
      f"GPU per trial {'/'.join(f'{g:g}' for g in gpu)}")
EOF
        )
    fi
    FIGURE[4]="${trials:-trials unreadable}; ${finished:-$(last_line "$log")}"
    if (( rc == 0 )) && [[ $trials != *"GPU per trial 0.25" ]]; then
        fail_with 4 "trials did not get 0.25 GPU each"
    fi
    say_timeout 4
fi

# --------------------------------------------------------------------------- the table

echo
print_table
echo "logs: ${LOGS#"$ROOT"/}/ ($(( SECONDS )) s in all)"
bad=0
for s in "${STATUS[@]}"; do [[ $s == pass ]] || bad=1; done
(( INTERRUPTED )) && exit 130
exit "$bad"
