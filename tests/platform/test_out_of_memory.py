"""Ray's memory monitor killing a trial's worker ends Tune's whole run (Tune counts a
``ray.exceptions.OutOfMemoryError`` as no trial's failure: "Caught unexpected exception"; the v2
study's driver died so on 7 Dec). The sweep and the study say so in one line, name what to change
and that ``--resume`` goes on, and exit 1; any other error still raises."""
from __future__ import annotations

import pytest
from ray.exceptions import OutOfMemoryError

from promptinit.search import study, sweep
from promptinit.search.phases import check, prepare

RAY_SAYS = (
    "1 worker(s) were killed due to the node running low on memory. Memory on the node (IP: 192.0.2.2, ID: a5) "
    "was 22.37GB used / 23.54GB limit (0.950136)\nOOM kill reason: Memory usage 24020758528B exceeded threshold"
)


def job_crash() -> OutOfMemoryError:
    """What ``ray.get`` raises for a phase's job (an upstream run, a batched tuning) killed so."""
    return OutOfMemoryError(RAY_SAYS)


def tune_crash() -> RuntimeError:
    """What ``Tuner.fit`` raises (ray.air's actor manager), as the v2 study's log shows it."""
    try:
        try:
            raise OutOfMemoryError(RAY_SAYS)
        except OutOfMemoryError as oom:
            raise RuntimeError(f"Caught unexpected exception: {oom}") from oom
    except RuntimeError as err:
        return err


def test_the_advice_names_the_node_the_settings_and_resume():
    advice = prepare.out_of_memory(tune_crash())
    assert advice is not None and "\n" not in advice
    assert "22.37GB used / 23.54GB limit" in advice and "budget.max_concurrent_trials" in advice
    assert advice.endswith("--resume")
    assert prepare.out_of_memory(job_crash()) == advice
    assert prepare.out_of_memory(RuntimeError("something else")) is None


@pytest.mark.parametrize("error", [tune_crash, job_crash])
@pytest.mark.parametrize("program, main, target", [("sweep", sweep.main, (check, "sweep")),
                                                    ("study", study.main, (study, "run"))])
def test_an_out_of_memory_end_is_one_line_and_exit_1(monkeypatch, capsys, tmp_path, program, main, target, error):
    def crash(*args, **kwargs):
        raise error()

    monkeypatch.setattr(*target, crash)
    assert main(["--config", str(tmp_path / "any.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{program}: error: Ray's memory monitor killed a worker (1 worker(s)")

    def other(*args, **kwargs):
        raise RuntimeError("not memory")

    monkeypatch.setattr(*target, other)
    with pytest.raises(RuntimeError, match="not memory"):
        main(["--config", str(tmp_path / "any.yaml")])
