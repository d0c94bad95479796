"""benchmarks/gpu_check.py without a GPU: its arguments, its JSON and its table (--dry-run),
the parsing of pytest's summary, and (slow) every phase run on CPU at tiny sizes (--smoke)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_check  # noqa: E402

SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")


def test_dry_run_prints_the_plan_and_the_table_and_writes_the_json(tmp_path, capsys):
    assert gpu_check.main(["--dry-run", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert doc["schema"] == gpu_check.SCHEMA and doc["mode"] == "dry-run"
    assert list(doc["phases"]) == ["setup", "cuda_tests", "inference_speed", "training_speed"]
    assert all(p["status"] == "not run" and p["seconds"] is None for p in doc["phases"].values())
    # the whole check, set-up included, fits in 8 minutes
    assert sum(p["budget_s"] for p in doc["phases"].values()) == doc["budget_s"] <= 480
    # 1200x1200 inference: batch 1, 8, 32 x float32, bfloat16, float16, channels-last
    inf = doc["inference"]
    assert sorted((r["batch"], r["dtype"]) for r in inf) == sorted(
        (b, d) for b in (1, 8, 32) for d in ("float32", "bfloat16", "float16"))
    assert all(r["size"] == 1200 and r["channels_last"] and r["network_images_per_s"] is None
               for r in inf)
    assert [(r["size"], r["dtype"]) for r in doc["training"]] == [(300, "float16"),
                                                                 (1200, "float16")]
    assert {a["kind"]: a["images_per_s"] for a in doc["anchors"]} == {"inference": 990,
                                                                      "training": 724}
    assert doc["summary"] == {"passed": 0, "failed": 0, "skipped": 0, "not run": 4}
    # the printed table is the one written beside the JSON, one row per phase and figure
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.strip() in out
    assert sum(line.startswith("| 1200 | ") for line in table.splitlines()) == 9 + 1
    assert "| training_speed | not run | - | 75 |" in table


@pytest.mark.parametrize("argv,message", [
    (["--phases", "cuda_tests,warp_drive"], "unknown phase(s) ['warp_drive']"),
    (["--phases", ","], "unknown phase(s) (none given)"),
    (["--budget", "0"], "--budget must be a positive number"),
    (["--budget", "nan"], "--budget must be a positive number"),
    (["--dry-run", "--smoke"], "not allowed with argument"),
    (["--wheels", "/nonexistent/wheels"], "make gpu-wheels"),
])
def test_bad_arguments_are_refused_with_the_fix(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        gpu_check.parse_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_phase_subset_runs_in_fixed_order_and_budgets_scale(tmp_path):
    args = gpu_check.parse_args(["--phases", "training_speed,cuda_tests", "--budget", "170",
                                 "--dry-run"])
    assert args.phases == ["cuda_tests", "training_speed"]
    b = gpu_check.budgets(args)
    assert b == {"setup": 22.5, "cuda_tests": 75.0, "training_speed": 37.5}


def test_table_and_summary_of_a_filled_run():
    args = gpu_check.parse_args(["--dry-run"])
    doc = gpu_check.empty_results(args, "gpu")
    doc["inference"], doc["training"] = gpu_check.planned_rows("gpu")
    doc["inference"][0].update(network_images_per_s=812.5, end_to_end_images_per_s=640.0,
                               status="ok")
    doc["training"][1].update(batch=64, images_per_s=301.25, peak_memory_gib=101.3, status="ok")
    doc["cuda_tests"] = [{"test": "tests/layers/test_gpu.py::test_a", "outcome": "PASSED"}]
    statuses = ["passed", "timeout", "failed", "skipped"]
    for ph, status in zip(doc["phases"].values(), statuses):
        ph["status"] = status
    doc["phases"]["inference_speed"]["checks"] = [{"name": "a", "passed": True},
                                                  {"name": "b", "passed": False}]
    doc["phases"]["inference_speed"]["error"] = "exit status 1\nmore"
    assert gpu_check.summarize(doc) == {"passed": 1, "failed": 2, "skipped": 1, "not run": 0}
    table = gpu_check.render_table(doc)
    assert "| 1200 | 1 | float32 | 812 | 640 | ok |" in table
    assert "| 1200 | 64 | float16 | 301 | 101.3 | ok |" in table
    assert "| inference_speed | failed | - | 70 | 1/2 | exit status 1 |" in table
    assert "| tests/layers/test_gpu.py::test_a | PASSED |" in table
    assert "phases: 1 passed, 2 failed, 1 skipped, 0 not run" in table


def test_pytest_verbose_lines_are_parsed():
    out = "\n".join([
        "tests/layers/test_gpu.py::test_x PASSED                                [ 14%]",
        "tests/layers/test_gpu.py::test_y[float16] FAILED                       [ 28%]",
        "tests/layers/test_gpu.py::test_z SKIPPED (needs a CUDA device)         [ 42%]",
        "FAILED tests/layers/test_gpu.py::test_y[float16] - AssertionError: boom",
        "1 failed, 1 passed, 1 skipped in 3.2s"])
    assert gpu_check.parse_pytest(out) == [
        {"test": "tests/layers/test_gpu.py::test_x", "outcome": "PASSED"},
        {"test": "tests/layers/test_gpu.py::test_y[float16]", "outcome": "FAILED"},
        {"test": "tests/layers/test_gpu.py::test_z", "outcome": "SKIPPED"}]


def test_pytest_summary_lines_are_parsed_with_skip_counts():
    out = "\n".join([
        "=========================== short test summary info ============================",
        "PASSED tests/layers/test_gpu.py::test_x",
        "FAILED tests/layers/test_gpu.py::test_y[float16] - AssertionError: boom",
        "SKIPPED [5] tests/layers/test_gpu.py:19: needs a CUDA device",
        "ERROR tests/layers/test_gpu.py::test_z - RuntimeError",
        "1 failed, 1 passed, 5 skipped, 1 error in 3.2s"])
    tests = gpu_check.parse_pytest(out)
    assert [t["outcome"] for t in tests] == ["PASSED", "FAILED"] + ["SKIPPED"] * 5 + ["ERROR"]
    assert tests[1]["test"] == "tests/layers/test_gpu.py::test_y[float16]"


def count_cuda_tests():
    """Tests collected from the files with tests marked cuda."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda",
                          os.path.join("tests", "layers", "test_gpu.py")], cwd=ROOT, capture_output=True,
                         text=True).stdout
    return sum(1 for line in out.splitlines() if "::" in line)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SSD_R34_GPU_SMOKE"),
                    reason="several minutes on 2 cores: SSD_R34_GPU_SMOKE=1 runs it")
def test_smoke_runs_every_phase_on_cpu(tmp_path):
    """--smoke: the phases' own code on CPU at 64x64 (the device model is the plain float32
    one, float16 AMP is left out), as the GPU run will execute it."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, SCRIPT, "--smoke", "--output-dir", str(tmp_path),
                           "--work-dir", str(tmp_path / "work"), "--budget", "1500"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    failed = {k: (p["error"], [c for c in p["checks"] if not c["passed"]])
              for k, p in doc["phases"].items() if p["status"] != "passed"}
    assert proc.returncode == 0 and not failed, (failed, proc.stdout[-4000:])
    assert doc["mode"] == "smoke" and doc["environment"]["cuda_available"] is False
    # the tests marked cuda were run and all skipped (no GPU here), each one counted
    assert len(doc["cuda_tests"]) == count_cuda_tests() >= 6
    assert {t["outcome"] for t in doc["cuda_tests"]} == {"SKIPPED"}
    assert all(r["status"] == "ok" and r["network_images_per_s"] > 0
               and r["end_to_end_images_per_s"] > 0 for r in doc["inference"])
    assert all(r["status"] == "ok" and r["images_per_s"] > 0 for r in doc["training"])
    assert (tmp_path / "logs" / "cuda_tests.log").exists()
    assert "phases: 4 passed, 0 failed" in proc.stdout
