"""llseg repro: training stages side by side under DVC (a toy pipeline with real `dvc`)."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from llseg import cli, repro

ROOT = Path(__file__).resolve().parents[1]
DVC = [str(Path(sys.executable).with_name("dvc"))]


def test_training_stages_picks_foreach_instances_longest_kind_first():
    names = ["check", "preprocess", "train_stage1@01", "box_priors", "train_stage2@soleus", "train_variant@dense",
             "train_stage1@02", "predict", "train_stage2"]
    assert repro.training_stages(names) == ["train_stage1@01", "train_stage1@02", "train_variant@dense",
                                            "train_stage2@soleus"]


def test_study_training_stages_read_only_what_upstream_produces():
    """The premise of running them side by side: in dvc.yaml, every training stage depends only on
    source files and on outputs of the UPSTREAM stages, and no two write the same output."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    kinds = [k for k in stages if k in repro.TRAINING_STAGES]
    assert sorted(kinds) == sorted(repro.TRAINING_STAGES)

    def outs(stage):
        for key in ("outs", "metrics", "plots"):
            for o in stage.get("do", stage).get(key, []):
                yield next(iter(o)) if isinstance(o, dict) else o

    produced = {o: name for name, st in stages.items() for o in outs(st)}
    for kind in kinds:
        for dep in stages[kind]["do"]["deps"]:
            if dep in produced:
                assert produced[dep] in repro.UPSTREAM, f"{kind} reads {dep} from {produced[dep]}"
        assert all("${" in o for o in outs(stages[kind])), f"{kind}: every output must be per instance"


def test_run_parallel_runs_jobs_at_once():
    barrier = threading.Barrier(2, timeout=20)  # broken (-> failure) unless two stages run together

    def run_stage(stage):
        barrier.wait()
        return 0

    done = []
    assert repro.run_parallel(["a", "b"], jobs=2, run_stage=run_stage, on_done=lambda *a: done.append(a[:2])) == []
    assert sorted(done) == [("a", 0), ("b", 0)]


def test_run_parallel_stops_launching_after_a_failure():
    ran = []

    def run_stage(stage):
        ran.append(stage)
        if stage == "b":
            raise OSError("disk full")
        return 0

    assert repro.run_parallel(["a", "b", "c", "d"], jobs=1, run_stage=run_stage) == ["b"]
    assert ran == ["a", "b"]
    assert repro.run_parallel(["x"], jobs=1, run_stage=lambda s: 3) == ["x"]
    ran.clear()

    def interrupted(stage):  # Ctrl-C while a stage runs: it propagates, nothing else starts
        ran.append(stage)
        if stage == "b":
            raise KeyboardInterrupt
        return 0

    with pytest.raises(KeyboardInterrupt):
        repro.run_parallel(["a", "b", "c", "d"], jobs=1, run_stage=interrupted)
    assert ran == ["a", "b"]
    with pytest.raises(ValueError, match="jobs must be a positive int"):
        repro.run_parallel(["a"], jobs=0, run_stage=lambda s: 0)


def _toy_pipeline(path: Path, marks: Path, fail: str = "") -> Path:
    """upstream `preprocess` -> three `train_stage2@*` -> `report`. Each training command records
    its start in ``marks`` and waits (up to 60 s) until two have started: it only passes when
    trainings really run side by side."""
    path.mkdir()
    marks.mkdir()
    (path / "wait_for_two.py").write_text(
        "import sys, time, pathlib\n"
        "marks, item = pathlib.Path(sys.argv[1]), sys.argv[2]\n"
        "(marks / item).touch()\n"
        "t = time.time()\n"
        "while len(list(marks.iterdir())) < 2:\n"
        "    if time.time() - t > 60: sys.exit('alone')\n"
        "    time.sleep(0.05)\n"
        f"if item == {fail!r}: sys.exit(3)\n"
        "pathlib.Path('out').mkdir(exist_ok=True)\n"
        "pathlib.Path(f'out/{item}.txt').write_text(open('prep.txt').read() + item)\n")
    (path / "params.yaml").write_text("items: {a: 1, b: 2, c: 3}\n")
    py = sys.executable
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "preprocess": {"cmd": "echo prep > prep.txt", "outs": ["prep.txt"]},
        "train_stage2": {"foreach": "${items}", "do": {
            "cmd": f"{py} wait_for_two.py {marks} ${{key}}", "deps": ["prep.txt", "wait_for_two.py"],
            "outs": ["out/${key}.txt"]}},
        "report": {"cmd": "cat out/a.txt out/b.txt out/c.txt > report.txt",
                   "deps": ["out/a.txt", "out/b.txt", "out/c.txt"], "outs": ["report.txt"]}}}))
    subprocess.run([*DVC, "init", "--no-scm", "-q"], cwd=path, check=True)
    return path


def test_reproduce_runs_training_stages_side_by_side_under_dvc(tmp_path, capsys):
    repo = _toy_pipeline(tmp_path / "repo", tmp_path / "marks")
    assert repro.reproduce(jobs=2, cwd=repo, dvc=DVC, progress=False) == 0
    assert (repo / "report.txt").read_text() == "prep\naprep\nbprep\nc"
    assert sorted(p.name for p in (tmp_path / "marks").iterdir()) == ["a", "b", "c"]
    out = capsys.readouterr().out
    assert "3 of 3 training stages changed, 2 at a time" in out
    status = subprocess.run([*DVC, "status", "--json"], cwd=repo, capture_output=True, text=True, check=True)
    assert json.loads(status.stdout) == {}  # dvc.lock records every stage: nothing left to run
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert sorted(lock) == ["preprocess", "report", "train_stage2@a", "train_stage2@b", "train_stage2@c"]
    assert (repo / "work" / "logs" / "repro" / "train_stage2.a.log").exists()
    # up to date: nothing is retrained
    assert repro.reproduce(jobs=2, cwd=repo, dvc=DVC, progress=False) == 0
    assert "0 of 3 training stages changed" in capsys.readouterr().out


def test_reproduce_stops_at_a_failed_training_stage(tmp_path, capsys):
    repo = _toy_pipeline(tmp_path / "repo", tmp_path / "marks", fail="b")
    assert repro.reproduce(jobs=2, cwd=repo, dvc=DVC, progress=False) == 1
    err = capsys.readouterr().err
    assert "train_stage2@b failed; last lines of" in err and "train_stage2.b.log" in err
    assert not (repo / "report.txt").exists()  # step 3 never ran
    assert not (repo / "out" / "b.txt").exists()


def test_cli_repro_dry_run_and_bad_jobs(tmp_path, monkeypatch, capsys):
    repo = _toy_pipeline(tmp_path / "repo", tmp_path / "marks")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", f"{Path(DVC[0]).parent}:{os.environ['PATH']}")
    assert cli.main(["repro", "--dry", "-j", "2"]) == 0
    assert "3 training stages, 2 at a time" in capsys.readouterr().out
    assert not (repo / "prep.txt").exists()
    assert cli.main(["repro", "-j", "0"]) == 1
    assert "jobs must be a positive int" in capsys.readouterr().err


def test_default_jobs_is_bounded_by_cores_and_memory(monkeypatch):
    import psutil

    cores = len(os.sched_getaffinity(0))
    assert 1 <= repro.default_jobs() <= cores

    class Mem:
        available = 3 * 2**30  # room for one 2-GiB job

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Mem)
    assert repro.default_jobs() == 1
