"""Search spaces: conditional on the method, the papers' defaults first, every setting a real
field of the method's config, picklable for --resume."""
from __future__ import annotations

import dataclasses
import pickle

import optuna
import pytest

from promptinit.spaces import (
    ALL_SPACES, METHOD_KEY, Choice, Fixed, Float, Int, available_methods, build_space, check_space, parse_override,
    trial_settings,
)
from promptinit.spaces.qin import FOMAML, MAML, MTL, REPTILE

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_paper_defaults_lie_inside_their_ranges():
    for space in ALL_SPACES.values():
        for name, value in space.defaults.items():
            entry = space.params[name]
            assert entry.contains(value), (space.method, name, value, entry)


def test_qin_ranges_and_defaults():
    assert MAML.params["inner_lr"] == Float(2e-5, 5e-5, log=True)
    assert MAML.params["outer_lr"] == Float(0.2, 0.5)
    assert MAML.params["steps"] == Choice((2500, 5000, 10000))
    assert REPTILE.params["inner_steps"] == Int(2, 10)
    assert MAML.defaults == {"inner_lr": 3e-5, "outer_lr": 0.5, "steps": 5000, "inner_batch_size": 2, "inner_steps": 1}
    assert REPTILE.defaults["inner_steps"] == 10
    assert MTL.defaults == {"lr": 0.5, "batch_size": 4, "steps": 5000}  # Qin §5.3 (steps: the sweep's unit)


def test_wu_et_al_seven_inner_steps_are_reachable_for_maml_and_fomaml():
    """Wu et al. 2022 adapt with 7 inner steps (better-promptability configs/fomaml.jsonnet)."""
    for space in (MAML, FOMAML):
        assert space.params["inner_steps"].contains(7) and space.params["inner_steps"].contains(1)
        assert space.defaults["inner_steps"] == 1  # Qin


def test_supmer_default_point_is_the_released_run_and_budget_steps_override_it():
    from promptinit.methods import make_config
    from promptinit.spaces.supmer import SUPMER

    assert SUPMER.params["steps"] == Fixed(100_000) and SUPMER.defaults["steps"] == 100_000
    space = build_space(["supmer"])
    point = space.points_to_evaluate()[0]
    settings = space.space("supmer").settings({**point, **space(optuna.create_study().ask())})
    assert settings["steps"] == 100_000
    config = make_config("supmer", settings)
    assert (config.outer_lr, config.phi_lr, config.inner_lr, config.meta_batch_size) == (0.1, 1e-4, 0.1, 4)
    assert (config.inner_batch_size, config.query_batch_size) == (16, 16)
    assert (config.lr_schedule, config.mgr_rank) == ("linear", 0)
    # a CPU sweep's budget replaces the steps (and the linear schedule then decays over them)
    cut = build_space(["supmer"], steps=[200])
    consts = cut(optuna.create_study().ask())
    assert consts["supmer/steps"] == 200 and make_config("supmer", cut.space("supmer").settings(consts)).steps == 200
    yaml_cut = build_space(["supmer"], {"supmer": {"steps": 300}})
    assert yaml_cut.space("supmer").params["steps"] == Fixed(300)


def test_every_available_method_has_a_space_whose_settings_its_config_accepts():
    from promptinit.methods import REGISTRY, make_config

    methods = available_methods()
    assert {"mtl", "maml", "fomaml", "reptile"} <= set(methods)
    assert "pt" not in methods
    space = build_space(methods)
    check_space(space)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    for _ in range(3 * len(methods)):
        trial = study.ask()
        consts = space(trial)
        method = consts[METHOD_KEY]
        # Conditional: only the chosen method's parameters were suggested.
        assert {k.split("/")[0] for k in trial.params if k != METHOD_KEY} == {method}
        settings = space.space(method).settings({**trial.params, **consts})
        config = make_config(method, settings)
        fields = {f.name for f in dataclasses.fields(REGISTRY[method].config_cls)}
        assert set(settings) <= fields
        assert dataclasses.asdict(config)["steps"] == settings["steps"]
        study.tell(trial, 0.0)


def _searchers(space, tmp_path):
    """Ray's OptunaSearch and promptinit's StudySearcher, same space, sampler seed and defaults."""
    from ray.tune.search.optuna import OptunaSearch

    from promptinit.search.phases.searcher import StudySearcher

    points = space.points_to_evaluate()
    theirs = OptunaSearch(space, metric="val/arg", mode="max", points_to_evaluate=points,
                          sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    ours = StudySearcher(space, optuna.samplers.TPESampler(seed=0, n_startup_trials=2),
                         f"sqlite:///{tmp_path / 'optuna.db'}", "s", points, "val/arg", "max")
    return theirs, ours


def test_the_searcher_proposes_paper_defaults_first_as_nested_configs(tmp_path):
    space = build_space(["maml", "reptile"], steps=[10, 20])
    assert [p[METHOD_KEY] for p in space.points_to_evaluate()] == ["maml", "reptile"]
    _, searcher = _searchers(space, tmp_path)
    first = searcher.suggest("t1")
    method, settings = trial_settings(first)
    assert method == "maml"
    assert settings == {"inner_lr": 3e-5, "outer_lr": 0.5, "steps": 20, "inner_batch_size": 2,
                        "outer_optimizer": "adafactor", "inner_steps": 1}
    second = searcher.suggest("t2")
    assert trial_settings(second)[0] == "reptile" and second["reptile"]["inner_steps"] == 10
    third = searcher.suggest("t3")
    assert set(third) == {METHOD_KEY, third[METHOD_KEY]}  # nested: one method's settings only


def test_the_searcher_proposes_what_rays_optuna_search_proposes(tmp_path):
    """Owning the study changed where it lives, not what it proposes: with the same sampler seed,
    defaults and results (TPE past its start-up trials), Ray's OptunaSearch is the reference."""
    space = build_space(["maml", "reptile"], steps=[10, 20])
    theirs, ours = _searchers(space, tmp_path)
    for i in range(8):
        tid = f"t{i}"
        a, b = theirs.suggest(tid), ours.suggest(tid)
        assert a == b and list(a[a[METHOD_KEY]]) == list(b[b[METHOD_KEY]]), i  # same values, same key order
        result = {"val/arg": 0.1 * ((i * 7) % 5), "training_iteration": 1}
        theirs.on_trial_complete(tid, result)
        ours.on_trial_complete(tid, result)


def test_single_method_space_has_no_method_choice():
    space = build_space(["mtl"], steps=[8])
    trial = optuna.create_study().ask()
    consts = space(trial)
    assert consts[METHOD_KEY] == "mtl" and METHOD_KEY not in trial.params
    assert "mtl/steps" not in trial.params and consts["mtl/steps"] == 8  # one step choice is fixed
    assert space.points_to_evaluate() == [{"mtl/lr": 0.5, "mtl/batch_size": 4}]


def test_overrides_replace_ranges_and_move_defaults_into_them():
    space = build_space(["maml"], {"maml": {"outer_lr": {"low": 0.01, "high": 0.1, "log": True},
                                            "inner_batch_size": [2, 4], "outer_optimizer": "adam"}})
    maml = space.space("maml")
    assert maml.params["outer_lr"] == Float(0.01, 0.1, log=True)
    assert maml.params["outer_optimizer"] == Fixed("adam")
    assert space.points_to_evaluate()[0]["maml/outer_lr"] == 0.1  # paper's 0.5, clipped into range


@pytest.mark.parametrize("value,message", [([], "empty search space"), ({"low": 2, "high": 1}, "empty search space"),
                                           ({"low": 0, "high": 1, "log": True}, "log range"),
                                           ({"lo": 1, "high": 2}, "a range is")])
def test_bad_overrides_name_the_field(value, message):
    from promptinit.errors import PromptinitError

    with pytest.raises(PromptinitError, match=rf"field 'x\.y'.*{message}"):
        parse_override(value, "x.y")


def test_sweep_space_survives_pickling():
    # Tune pickles the searcher, space included, into the experiment state --resume restores.
    space = build_space(available_methods(), steps=[4])
    again = pickle.loads(pickle.dumps(space))
    assert again == space and again.points_to_evaluate() == space.points_to_evaluate()


def test_no_methods_is_an_empty_search_space():
    from promptinit.errors import PromptinitError

    with pytest.raises(PromptinitError, match="empty search space"):
        build_space([])
