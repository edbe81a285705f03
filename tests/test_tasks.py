"""Answer extraction, rewards, the synthetic task and the data loaders (no model needed)."""

import json
import random

import pytest
import torch

from common.tasks import (addition_rows, addition_trace, correctness_reward, extract_answer, extract_boxed,
                          format_reward, load_task, normalize_answer, prompt_indices, score_completions)


@pytest.mark.parametrize("text, expected", [
    ("so the answer is \\boxed{42}.", "42"),
    ("\\boxed{1} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),           # last box, nested braces
    ("\\boxed{\\text{{a}}}", "\\text{{a}}"),
    ("half-open \\boxed{12", "12"),                                      # unclosed box: fall back to last number
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
    ("#### 1,234\nextra line", "1,234"),
    ("first 3 then -7.5 apples", "-7.5"),
    ("no digits at all", None),
    ("", None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("raw, expected", [
    ("1,234", "1234"), ("$5", "5"), ("\\$5.00", "5"), ("-0", "0"), ("+7", "7"), ("007", "7"),
    ("0.50", "0.5"), (".5", "0.5"), ("3.", "3"), ("-3.25", "-3.25"), ("\\text{12}", "12"),
    ("\\dfrac{1}{2}", "\\frac{1}{2}"), ("50%", "50"), (" 72 ", "72"), (None, None), ("", None),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_correctness_reward_matches_after_normalisation_and_accepts_chat_completions():
    completions = ["... \\boxed{1,000}", "#### 999", [{"role": "assistant", "content": "it is $1000$"}], "nothing"]
    assert correctness_reward(completions, answer=["1000"] * 4) == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("text, expected", [
    ("steps... \\boxed{3}", 1.0),
    ("steps... \\boxed{3}.\n", 1.0),
    ("\\boxed{3} and more words", 0.0),      # something after the box
    ("\\boxed{3} \\boxed{4}", 0.0),          # two boxes
    ("\\boxed{3", 0.0),                      # unclosed
    ("#### 3", 0.0),                         # no box at all
])
def test_format_reward(text, expected):
    assert format_reward([text]) == [expected]


def test_rewards_survive_hostile_strings():
    # Linear-time scanning: these would hang a backtracking regex or a quadratic brace matcher.
    hostile = ["\\boxed{" * 50_000, "{" * 100_000 + "}", "1," * 100_000 + "x", "1." * 100_000,
               "#" * 100_000, "9" * 200_000, "__import__('os').system('echo pwned')"]
    assert correctness_reward(hostile, answer=["1"] * len(hostile)) == [0.0] * len(hostile)
    assert format_reward(hostile) == [0.0] * len(hostile)
    assert extract_boxed("\\boxed{" * 50_000) is None


def test_addition_trace_spec():
    assert addition_trace(347, 285) == "7+5=12,4+8+1=13,3+2+1=6\n#### 632"
    assert addition_trace(5, 4) == "5+4=9\n#### 9"
    assert addition_trace(95, 17) == "5+7=12,9+1+1=11\n#### 112"
    # Forgetting every carry keeps the trace self-consistent and the answer wrong.
    assert addition_trace(347, 285, forget_prob=1.0, rng=random.Random(0)) == "7+5=12,4+8=12,3+2=5\n#### 522"
    assert correctness_reward([addition_trace(347, 285)], answer=["632"]) == [1.0]


def test_addition_rows_are_deterministic_and_correct():
    rows = addition_rows(200, seed=7)
    assert rows == addition_rows(200, seed=7)
    for r in rows:
        a, b = map(int, r["prompt"][0]["content"].split("+"))
        assert r["answer"] == str(a + b) and len(str(a)) == len(str(b)) == r["digits"]
    assert {r["digits"] for r in rows} == {1, 2, 3, 4}
    assert len({r["carries"] for r in rows}) >= 4  # a spread of difficulty


def test_prompt_indices_is_a_pure_function_and_each_epoch_a_permutation():
    steps = [prompt_indices(10, 5, s, seed=3) for s in range(4)]
    assert steps == [prompt_indices(10, 5, s, seed=3) for s in range(4)]
    assert sorted(steps[0] + steps[1]) == list(range(10)) and sorted(steps[2] + steps[3]) == list(range(10))
    assert steps[0] + steps[1] != steps[2] + steps[3]  # a new shuffle per epoch
    assert prompt_indices(10, 5, 0, seed=4) != steps[0]


def test_score_completions_weights_and_columns():
    task = load_task("add", eval_size=4)
    seen = {}

    def spy(prompts, completions, answer, digits, **kwargs):
        seen.update(prompts=prompts, digits=digits)
        return [None if i == 0 else 1.0 for i in range(len(completions))]

    task.reward_funcs, task.reward_weights = [correctness_reward, spy], [1.0, 0.5]
    rows = task.test[:2]
    completions = [f"#### {rows[0]['answer']}", "#### -1", "x", f"#### {rows[1]['answer']}"]
    rewards, means = score_completions(task, rows, completions, num_generations=2)
    assert torch.allclose(rewards, torch.tensor([1.0, 0.5, 0.5, 1.5]))   # None counts as 0
    assert seen["digits"] == [rows[0]["digits"]] * 2 + [rows[1]["digits"]] * 2
    assert seen["prompts"][2] == rows[1]["prompt"]
    assert means == {"rewards/correctness_reward/mean": 0.5, "rewards/spy/mean": 0.75}


def _write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def test_gsm8k_loader_on_local_fixture_skips_bad_rows(tmp_path, caplog):
    rows = [{"question": f"What is {i}+{i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i:,}"} for i in range(500, 510)]
    rows += [{"question": "no answer here", "answer": "I don't know"}, {"question": "missing", "answer": None}]
    path = _write(tmp_path / "gsm8k.jsonl", rows)
    with caplog.at_level("WARNING"):
        task = load_task("gsm8k", dataset_path=path, eval_size=3)
    assert "skipped 2 of 12 rows" in caplog.text
    assert len(task.train) == 7 and len(task.test) == 3
    assert task.train[0]["answer"] == "1000"                       # "1,000" normalised
    assert "\\boxed{}" in task.train[0]["prompt"][0]["content"]
    assert [f.__name__ for f in task.reward_funcs] == ["correctness_reward", "format_reward"]


def test_math_loader_uses_boxed_solution(tmp_path):
    rows = [{"problem": f"p{i}", "solution": f"so \\boxed{{\\frac{{{i}}}{{2}}}}"} for i in range(4)]
    task = load_task("math", dataset_path=_write(tmp_path / "m.jsonl", rows), eval_size=1)
    assert task.train[1]["answer"] == "\\frac{1}{2}" and len(task.test) == 1


def test_loader_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        load_task("chess")
    good = {"question": "q", "answer": "x #### 1"}

    def error(path):
        with pytest.raises(SystemExit) as e:
            load_task("gsm8k", dataset_path=str(path))
        message = str(e.value)
        assert message.startswith("error: ") and "\n" not in message, message
        return message

    assert ".json, .jsonl or .parquet" in error(tmp_path / "data.csv")
    assert "no such file" in error(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    assert "0 usable rows of 0" in error(tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes('{"question": "caf\xe9"}\n'.encode("latin-1"))
    assert "not UTF-8" in error(tmp_path / "latin1.jsonl")
    (tmp_path / "torn.jsonl").write_text(json.dumps(good) + "\n{\"question\": \n")
    assert "line 2 is not valid JSON" in error(tmp_path / "torn.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    assert "must be a JSON object" in error(tmp_path / "list.jsonl")
    assert "1 usable rows of 1" in error(_write(tmp_path / "one.jsonl", [good]))
    assert "0 usable rows of 1" in error(_write(tmp_path / "bad.jsonl", [{"question": "q", "answer": "none"}]))


def test_eval_size_larger_than_half_the_file_is_announced(tmp_path, capsys):
    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(20)]
    task = load_task("gsm8k", dataset_path=_write(tmp_path / "d.jsonl", rows), eval_size=1000)
    assert (len(task.train), len(task.test)) == (10, 10)
    assert "holding out 10 (half), not --eval_size 1000" in capsys.readouterr().out


def test_answers_with_inner_spaces_are_not_numbers_and_odd_completions_score_zero():
    assert normalize_answer(extract_answer("#### 1 2")) is None
    assert correctness_reward(["#### 1 2"], ["12"]) == [0.0]
    assert correctness_reward([None, 5, [], [{"content": None}], "#### 3"], ["3"] * 5) == [0.0, 0.0, 0.0, 0.0, 1.0]


def test_a_column_only_some_rows_have_reaches_the_rewards_as_none(tmp_path):
    # The first row lacks "level": a step that draws a row with it and one without must still score.
    rows = [{"question": "q0", "answer": "#### 0"}]
    rows += [{"question": f"q{i}", "answer": f"#### {i}", "level": f"L{i}"} for i in range(1, 6)]
    task = load_task("gsm8k", dataset_path=_write(tmp_path / "d.jsonl", rows), eval_size=1)
    assert task.train[0]["level"] is None and task.train[1]["level"] == "L1"
    seen = {}

    def spy(completions, level, **kwargs):
        seen["level"] = level
        return [0.0] * len(completions)

    task.reward_funcs, task.reward_weights = [spy], [1.0]
    score_completions(task, [task.train[1], task.train[0]], ["x", "y"], num_generations=1)
    assert seen["level"] == ["L1", None]
    # rows built elsewhere (a method's own) may still disagree on their columns: no KeyError either
    score_completions(task, [{"prompt": "p", "answer": "1", "level": "L"}, {"prompt": "p", "answer": "1"}],
                      ["x", "y"], num_generations=1)
    assert seen["level"] == ["L", None]


@pytest.mark.parametrize("column", ["completions", "prompts", "completion_ids"])
def test_a_column_named_like_a_reward_argument_is_left_out(tmp_path, caplog, column):
    rows = [{"question": f"q{i}", "answer": f"#### {i}", column: "data", "level": 1} for i in range(4)]
    with caplog.at_level("WARNING"):
        task = load_task("gsm8k", dataset_path=_write(tmp_path / "d.jsonl", rows), eval_size=1)
    assert column not in task.train[0] and task.train[0]["level"] == 1
    assert f"column(s) {column} left out" in caplog.text
    rewards, _ = score_completions(task, task.train[:2], ["#### 0", "#### 5"], num_generations=1)
    assert rewards.tolist() == [1.0, 0.0]


def test_numeric_answers_are_gold_answers(tmp_path):
    rows = [{"problem": "p0", "answer": 42}, {"problem": "p1", "answer": 0.5}, {"problem": "p2", "answer": -3},
            {"problem": "p3", "answer": True}, {"problem": "p4", "answer": "\\frac{1}{2}"}]
    task = load_task("math", dataset_path=_write(tmp_path / "m.jsonl", rows), eval_size=1)
    assert [r["answer"] for r in task.train + task.test] == ["42", "0.5", "-3", "\\frac{1}{2}"]  # a bool is no number
    rows = [{"question": f"q{i}", "answer": i} for i in range(4)]
    task = load_task("gsm8k", dataset_path=_write(tmp_path / "g.jsonl", rows), eval_size=1)
    assert [r["answer"] for r in task.train + task.test] == ["0", "1", "2", "3"]


def test_parquet_files_load_and_a_file_that_is_not_parquet_is_one_line(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    task = load_task("gsm8k", dataset_path=str(tmp_path / "d.parquet"), eval_size=1)
    assert [r["answer"] for r in task.train] == ["0", "1", "2"]
    for name, data in (("json.parquet", b'{"question": "q", "answer": "#### 1"}\n'), ("tiny.parquet", b"PAR"),
                       ("cut.parquet", (tmp_path / "d.parquet").read_bytes()[:-20])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SystemExit) as e:
            load_task("gsm8k", dataset_path=str(tmp_path / name))
        message = str(e.value)
        assert message.startswith(f"error: --dataset_path {tmp_path / name} is not a valid parquet file (")
        assert "\n" not in message and "JSON" not in message, message
