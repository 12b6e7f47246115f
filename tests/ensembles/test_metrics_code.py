import math

import pytest

from ensembles.metrics import get_metric
from ensembles.metrics.code import build_test_code, pass_at_k, run_tests

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


def test_a_correct_solution_passes_its_tests():
    result = run_tests(ADD, build_test_code(ADD_TESTS, "add"))
    assert result.passed and result.status == "passed" and result.returncode == 0


def test_a_wrong_solution_fails_with_the_assertion_in_the_output():
    result = run_tests("def add(a, b):\n    return a - b\n", build_test_code(ADD_TESTS, "add"))
    assert result.status == "failed" and not result.passed
    assert "AssertionError" in result.output


def test_a_syntax_error_fails():
    assert run_tests("def add(a, b) return a + b", "assert add(1, 2) == 3").status == "failed"


def test_an_infinite_loop_is_killed_at_the_time_limit():
    result = run_tests("while True:\n    pass\n", "", timeout_s=1.0)
    assert result.status == "timeout" and not result.passed
    assert result.seconds < 10


def test_a_sleeping_child_process_does_not_outlive_the_time_limit():
    program = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    result = run_tests(program, "", timeout_s=1.0)
    assert result.status == "timeout"
    assert result.seconds < 10


def test_a_memory_bomb_hits_the_address_space_limit_and_fails():
    program = "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n"
    result = run_tests(program, "", timeout_s=20.0, memory_bytes=256 * 1024 * 1024)
    assert result.status == "failed"
    assert "MemoryError" in result.output


def test_one_huge_allocation_is_refused_rather_than_swapping():
    result = run_tests("x = bytearray(8 * 1024 ** 3)\n", "", memory_bytes=256 * 1024 * 1024)
    assert result.status == "failed" and "MemoryError" in result.output


def test_the_program_runs_in_an_empty_environment_and_a_fresh_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("ARENA_SECRET_FOR_TEST", "leak")
    program = "import os\nassert 'ARENA_SECRET_FOR_TEST' not in os.environ\nassert sorted(os.listdir('.')) == ['candidate.py', 'output.txt']\n"
    assert run_tests(program, "").passed


def test_endless_output_is_cut_off_and_fails():
    result = run_tests("while True:\n    print('x' * 1000)\n", "", timeout_s=20.0)
    assert result.status == "failed"


def test_code_pass_metric_scores_program_against_test_code():
    metric = get_metric("code_pass")
    assert metric.score(ADD, build_test_code(ADD_TESTS, "add")) == 1.0
    assert metric.score("def add(a, b):\n    return 0\n", build_test_code(ADD_TESTS, "add")) == 0.0


def test_build_test_code_calls_check_only_when_an_entry_point_is_named():
    assert build_test_code("assert f() == 1") == "assert f() == 1"
    assert build_test_code(ADD_TESTS, "add").endswith("check(add)\n")


def test_run_tests_rejects_a_non_positive_time_limit():
    with pytest.raises(ValueError):
        run_tests(ADD, "", timeout_s=0)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 0, 1, 0.0),
        (10, 10, 5, 1.0),
        (10, 3, 1, 0.3),  # pass@1 is the fraction that passed
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
        (6, 5, 2, 1.0),  # fewer than k failures: every draw of k has a pass
    ],
)
def test_pass_at_k_matches_the_combinatorial_formula(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_agrees_with_binomials_for_large_n():
    n, c, k = 200, 13, 10
    assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), rel=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(0, 0, 1), (5, 6, 1), (5, 2, 0), (5, 2, 6), (5, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)
