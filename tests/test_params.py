"""params.yaml: checked once at load against the schema; profiles complete and path-independent."""
import itertools
import shutil
import time
from pathlib import Path

import pytest
import yaml

from llseg import cli, params

ROOT = Path(__file__).resolve().parents[1]


def test_committed_params_pass_the_schema():
    loaded = params.load_params(ROOT / "params.yaml")
    assert loaded == yaml.safe_load((ROOT / "params.yaml").read_text())   # a plain dict, unchanged
    assert cli.load_params is params.load_params


def test_every_profile_sets_every_key_any_profile_sets():
    profiles = params.load_params(ROOT / "params.yaml")["profiles"]
    keys = set().union(*map(set, profiles.values()))
    for name in params.PROFILES:
        assert set(profiles[name]) == keys, f"profiles.{name} misses {sorted(keys - set(profiles[name]))}"


@pytest.mark.parametrize("path", list(itertools.permutations(params.PROFILES, 2))
                         + [("paper", "smoke", "cpu", "paper", "smoke"), ("smoke", "smoke", "paper", "cpu")])
def test_switching_does_not_depend_on_the_path_taken(path, tmp_path):
    direct = {}
    for name in set(path):
        p = tmp_path / f"direct_{name}.yaml"
        shutil.copy(ROOT / "params.yaml", p)
        cli.apply_profile(p, name)
        direct[name] = p.read_text()
    walked = tmp_path / "walked.yaml"
    shutil.copy(ROOT / "params.yaml", walked)
    for name in path:
        cli.apply_profile(walked, name)
        assert walked.read_text() == direct[name], f"{' -> '.join(path)}: differs at {name}"
        params.load_params(walked)                    # every switched file passes the schema


def test_cpu_profile_is_the_committed_file(tmp_path):
    p = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", p)
    assert cli.apply_profile(p, "cpu") == []
    assert p.read_text() == (ROOT / "params.yaml").read_text()


def _with(tmp_path, text_from, text_to):
    p = tmp_path / "p.yaml"
    p.write_text((ROOT / "params.yaml").read_text().replace(text_from, text_to, 1))
    return p


@pytest.mark.parametrize("old, new, message", [
    ("n_tta_boxes: 6 ", "n_tta_boxes: 2.7 ", "p.yaml: stage2.n_tta_boxes: expected an integer, got 2.7"),
    ("n_tta_boxes: 6 ", "n_tta_boxes: -1 ", "p.yaml: stage2.n_tta_boxes: expected a value >= 1, got -1"),
    ("threshold: 0.5 ", "threshold: m ", "p.yaml: postprocess.threshold: expected a number, got 'm'"),
    ("spacing_mm: [2.0, 2.0, 10.0]", "spacing_mm: [2.0, 2.0]",
     "p.yaml: preprocess.spacing_mm: expected a list of exactly 3 values, got [2.0, 2.0]"),
    ("n4: true ", "n4: maybe ", "p.yaml: preprocess.n4: expected true or false, got 'maybe'"),
    ("\nclaims:", "\nclaims_old:", "p.yaml: missing section 'claims'"),
    ("  n_tta_boxes: 6 ", "  n_tta_boxs: 6 ", "p.yaml: stage2.n_tta_boxs: unknown key (did you mean 'n_tta_boxes'?)"),
    ("ratio_min: 1.0 ", "ratio_min: 2.0 ", "p.yaml: stage2: expected ratio_min <= ratio_max, got 2.0 > 1.8"),
    ("    stage2.root_filters: 4\n", "    stage2.root_filters: 4.5\n",
     "p.yaml: profiles.smoke.stage2.root_filters: expected an integer, got 4.5"),
    ("    stage2.root_filters: 4\n", "    stage2.root_filter: 4\n", "p.yaml: profiles.smoke.stage2.root_filter: no such"),
    ("  soleus: {iterations_factor: 1.0}", "  soleus: {iterations_factor: 0}",
     "p.yaml: stage2_muscles.soleus.iterations_factor: expected a value > 0"),
    ("  muscle: adductor_brevis", "  muscle: bicep", "p.yaml: ablation.muscle: expected a muscle key"),
    ("profile: cpu", "profile: [cpu", "p.yaml:10:8: invalid YAML: expected ',' or ']', but got ':' (while parsing a "
     "flow sequence at line 8, column 10)"),
])
def test_one_line_error_names_file_key_value_and_expectation(tmp_path, old, new, message):
    path = _with(tmp_path, old, new)
    t0 = time.perf_counter()
    with pytest.raises(params.ParamsError) as err:
        params.load_params(path)
    assert time.perf_counter() - t0 < 1.0
    text = str(err.value)
    assert "\n" not in text and str(tmp_path) in text and message in text, text


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml: no such params file"):
        params.load_params(tmp_path / "nowhere.yaml")
    (tmp_path / "e.yaml").write_text("")
    with pytest.raises(params.ParamsError, match="e.yaml: expected a mapping of sections, got NoneType"):
        params.load_params(tmp_path / "e.yaml")
