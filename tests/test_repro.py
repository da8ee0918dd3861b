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


# ----------------------------------------------------------------------------- GPU placement

SMI = "0, 81559\n1, 81559\n"          # nvidia-smi --query-gpu=index,memory.total --format=csv,noheader,nounits


def test_parse_nvidia_smi_reads_gib_and_keeps_cuda_visible_devices():
    assert repro.parse_nvidia_smi(SMI) == [(0, pytest.approx(79.65, abs=0.01)), (1, pytest.approx(79.65, abs=0.01))]
    assert repro.parse_nvidia_smi("0, 16384\n") == [(0, 16.0)]
    four = "0, 16384\n1, 24576\n2, 40960\n3, 81920\n"
    assert repro.parse_nvidia_smi(four, "2,0") == [(2, 40.0), (0, 16.0)]     # CUDA's order
    assert repro.parse_nvidia_smi(four, " 3 , 3,7") == [(3, 80.0)]           # unknown and repeated: left out
    assert repro.parse_nvidia_smi(four, "1,-1,2") == [(1, 24.0)]             # CUDA stops at an invalid index
    assert repro.parse_nvidia_smi(four, "") == [] and repro.parse_nvidia_smi(four, "-1") == []
    assert repro.parse_nvidia_smi(four, "GPU-8d2c1a7e-0000") == []           # UUIDs cannot be matched
    assert repro.parse_nvidia_smi("") == []


def test_parse_nvidia_smi_skips_garbage(caplog):
    text = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
            "0, [N/A]\n\n1, 40960\n2, 40960, extra\nindex, memory.total [MiB]\n")
    assert repro.parse_nvidia_smi(text) == [(1, 40.0)]
    assert caplog.text.count("skipped line") == 4


def test_visible_gpus_from_a_fake_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '0, 81920\\n1, 81920\\n'\necho \"$@\" > {tmp_path / 'args'}\n")
    smi.chmod(0o755)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert repro.visible_gpus(nvidia_smi=str(smi)) == [(0, 80.0), (1, 80.0)]
    assert (tmp_path / "args").read_text().split() == ["--query-gpu=index,memory.total",
                                                       "--format=csv,noheader,nounits"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert repro.visible_gpus(nvidia_smi=str(smi)) == [(1, 80.0)]
    assert repro.visible_gpus(nvidia_smi=str(tmp_path / "absent")) == []
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed'\nexit 9\n")
    broken.chmod(0o755)
    assert repro.visible_gpus(nvidia_smi=str(broken)) == []


def test_gpu_slots_per_gpu_memory_and_round_robin():
    assert repro.gpu_slots([(0, 80.0)], 12.0) == ["0"] * 4                        # 6 fit, at most 4
    assert repro.gpu_slots([(0, 80.0)], 12.0, max_per_gpu=8) == ["0"] * 6
    assert repro.gpu_slots([(0, 80.0), (1, 80.0)], 12.0) == ["0", "1"] * 4        # interleaved
    assert repro.gpu_slots([(0, 16.0)], 24.0) == ["0"]                            # too small: still 1 slot
    assert repro.gpu_slots([(2, 24.0), (5, 40.0)], 12.0) == ["2", "5", "2", "5", "5"]
    assert repro.gpu_slots([], 12.0) == []
    with pytest.raises(ValueError, match="gib_per_job"):
        repro.gpu_slots([(0, 80.0)], 0)
    with pytest.raises(ValueError, match="max_per_gpu"):
        repro.gpu_slots([(0, 80.0)], 12.0, max_per_gpu=0)


def test_job_env():
    assert repro.job_env(None, 4) == {}                                          # CPU: environment unchanged
    env = repro.job_env("1", 3)
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in env
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS"):
        assert env[key] == "3"
    assert all(isinstance(v, str) for v in env.values())
    with pytest.raises(ValueError, match="threads"):
        repro.job_env("0", 0)


def _fake_dvc(path: Path, stages, record: Path, sleep_s: float = 0.4) -> list[str]:
    """A `dvc` stand-in: lists ``stages``, reports them all changed, and for `repro --single-item
    STAGE` appends the stage, its GPU environment and its start and end times to ``record``."""
    path.write_text(
        "import json, os, sys, time\n"
        f"stages = {list(stages)!r}\n"
        "args = [a for a in sys.argv[1:] if a != '--wait-for-lock']\n"
        "if args[:2] == ['stage', 'list']:\n"
        "    print('\\n'.join(stages))\n"
        "elif args[0] == 'status':\n"
        "    print(json.dumps({s: ['changed'] for s in args[2:]}))\n"
        "elif args[:2] == ['repro', '--single-item']:\n"
        "    t0 = time.time()\n"
        f"    time.sleep({sleep_s})\n"
        "    env = {k: os.environ.get(k) for k in ('CUDA_VISIBLE_DEVICES', 'OMP_NUM_THREADS',\n"
        "                                           'XLA_PYTHON_CLIENT_PREALLOCATE')}\n"
        f"    with open({str(record)!r}, 'a') as fh:\n"
        "        fh.write(json.dumps({'stage': args[2], 'env': env, 'start': t0, 'end': time.time()}) + '\\n')\n")
    return [sys.executable, str(path)]


def _peak_overlap(runs) -> int:
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])  # an end sorts first at a tie
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def test_reproduce_places_each_training_stage_on_a_free_gpu_slot(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    stages = ["preprocess", *[f"train_stage2@m{i}" for i in range(7)], "train_stage1@g1", "report"]
    record = tmp_path / "record.jsonl"
    dvc = _fake_dvc(tmp_path / "fake_dvc.py", stages, record)
    monkeypatch.setattr(repro, "_cores", lambda: 16)
    gpus = [(0, 24.0), (1, 40.0)]                                   # 2 and 3 slots of 12 GiB
    assert repro.reproduce(cwd=tmp_path, dvc=dvc, progress=False, gpus=gpus) == 0
    out = capsys.readouterr().out
    assert ("llseg repro: 2 GPU(s) visible (0: 24 GiB, 1: 40 GiB): 5 training jobs, per GPU 0: 2, 1: 3, "
            "3 CPU threads each") in out
    assert "8 of 8 training stages changed, 5 at a time" in out
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert sorted(r["stage"] for r in runs) == sorted(s for s in stages if s.startswith("train"))
    assert {r["env"]["CUDA_VISIBLE_DEVICES"] for r in runs} == {"0", "1"}
    assert all(r["env"]["OMP_NUM_THREADS"] == "3" and r["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
               for r in runs)
    for device, slots in (("0", 2), ("1", 3)):                      # never more jobs on a GPU than its slots
        assert _peak_overlap([r for r in runs if r["env"]["CUDA_VISIBLE_DEVICES"] == device]) <= slots
    assert 2 <= _peak_overlap(runs) <= 5

    # a given --jobs is spread over the slots round robin
    record.unlink()
    assert repro.reproduce(jobs=2, cwd=tmp_path, dvc=dvc, progress=False, gpus=[(0, 80.0), (1, 80.0)]) == 0
    assert "2 training jobs, 1 per GPU, 8 CPU threads each" in capsys.readouterr().out
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    for device in ("0", "1"):
        assert _peak_overlap([r for r in runs if r["env"]["CUDA_VISIBLE_DEVICES"] == device]) <= 1


def test_reproduce_without_gpus_keeps_the_cpu_path(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    stages = ["preprocess", "train_stage2@a", "train_stage2@b"]
    record = tmp_path / "record.jsonl"
    dvc = _fake_dvc(tmp_path / "fake_dvc.py", stages, record, sleep_s=0.0)
    assert repro.reproduce(jobs=2, cwd=tmp_path, dvc=dvc, progress=False, gpus=[]) == 0
    out = capsys.readouterr().out
    assert "GPU" not in out
    assert out.splitlines()[:2] == ["llseg repro: step 1 of 3, dvc repro preprocess",
                                    f"llseg repro: step 2 of 3, 2 of 2 training stages changed, 2 at a time "
                                    f"(logs in work/logs/repro/)"]
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert all(r["env"]["CUDA_VISIBLE_DEVICES"] is None and r["env"]["XLA_PYTHON_CLIENT_PREALLOCATE"] is None
               for r in runs)


def test_reproduce_dry_run_reports_the_placement(tmp_path, monkeypatch, capsys):
    stages = ["preprocess", "train_stage1@g1", "train_stage2@a", "report"]
    dvc = _fake_dvc(tmp_path / "fake_dvc.py", stages, tmp_path / "record.jsonl")
    monkeypatch.setattr(repro, "_cores", lambda: 16)
    monkeypatch.setattr(repro, "visible_gpus", lambda: [(0, 80.0)])       # gpus=None asks visible_gpus
    assert repro.reproduce(cwd=tmp_path, dvc=dvc, dry=True) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "llseg repro: 1 GPU(s) visible (0: 80 GiB): 4 training jobs, 4 per GPU, 4 CPU threads each"
    assert out[2] == "2. 2 training stages, 4 at a time (those dvc status reports changed)"
    assert not (tmp_path / "record.jsonl").exists()
    with pytest.raises(ValueError, match="jobs must be a positive int"):
        repro.reproduce(jobs=0, cwd=tmp_path, dvc=dvc, gpus=[(0, 80.0)])
