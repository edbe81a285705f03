"""Tasks, data loading and verifiable rewards. Algorithm-neutral: every script uses these as they are.

A task is a list of training rows, a list of held-out rows, and reward functions. A row is a dict with
"prompt" (a chat message list), "answer" (the gold answer as a normalised string) and any other
columns; the reward functions receive every column as a keyword argument, as in TRL.

Tasks:
  add    the offline synthetic task: multi-digit addition written as a per-column carry trace
  gsm8k  openai/gsm8k (hub) or a local json/jsonl/parquet file with "question" and "answer" columns
  math   MATH-style problems with a \\boxed{} answer: "problem" plus "solution" (or "answer") columns
"""

import functools
import json
import logging
import math
import os
import random
import re
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# The synthetic task: addition with a carry trace
# ---------------------------------------------------------------------------------------------
# "347+285" is answered column by column from the right, then the answer:
#     7+5=12,4+8+1=13,3+2+1=6
#     #### 632
# A column that receives a carry writes "+1". The warm-start model is fine-tuned on traces that
# *forget* that "+1" with probability `forget_prob` at every carry (the rest of the trace stays
# self-consistent, so the final answer is wrong). Sampling from it therefore fails more often the
# more carries a problem has: problems without a carry are solved by every sample (all-correct
# groups), 4-digit problems with three carries almost never (all-wrong groups). RL has one concrete
# behaviour to fix, and the trace length (12 to 45 characters) varies with the number of digits.

ADD_DIGIT_WEIGHTS = (1, 2, 3, 4)  # operands of 1, 2, 3 or 4 digits, longer ones more often


def addition_trace(a: int, b: int, forget_prob: float = 0.0, rng: random.Random | None = None) -> str:
    """The chain of thought and answer for a+b; each carry is forgotten with probability forget_prob."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, digits, carry = [], [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        if carry and forget_prob > 0 and rng is not None and rng.random() < forget_prob:
            carry = 0
        s = x + y + carry
        steps.append(f"{x}+{y}+1={s}" if carry else f"{x}+{y}={s}")
        digits.append(s % 10)
        carry = s // 10
    answer = ("1" if carry else "") + "".join(str(d) for d in reversed(digits))
    return ",".join(steps) + "\n#### " + str(int(answer))


def addition_problem(rng: random.Random) -> tuple[int, int]:
    """Two operands with the same number of digits (1 to 4, weighted by ADD_DIGIT_WEIGHTS)."""
    n = rng.choices(range(1, len(ADD_DIGIT_WEIGHTS) + 1), weights=ADD_DIGIT_WEIGHTS)[0]
    lo = 0 if n == 1 else 10 ** (n - 1)
    return rng.randint(lo, 10**n - 1), rng.randint(lo, 10**n - 1)


def addition_prompt(a: int, b: int) -> str:
    return f"{a}+{b}"


def addition_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = addition_problem(rng)
        carries = addition_trace(a, b).count("+1=")
        rows.append({"prompt": [{"role": "user", "content": addition_prompt(a, b)}], "answer": str(a + b),
                     "digits": len(str(max(a, b))), "carries": carries})
    return rows


# ---------------------------------------------------------------------------------------------
# Answer extraction and normalisation (linear time; nothing from a completion is ever evaluated)
# ---------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
_PLAIN_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")


def extract_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (nested braces allowed), or None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unbalanced: the completion was cut off inside the box


def extract_answer(text: str) -> str | None:
    """The final answer of a completion: last \\boxed{}, else what follows the last '####', else
    the last number in the text."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    k = text.rfind("####")
    if k >= 0:
        tail = text[k + 4:].strip()
        return tail.splitlines()[0] if tail else None
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def normalize_answer(ans: str | None) -> str | None:
    """Canonical form: strip $, commas, spaces, \\text{}, a trailing period; numbers as 12, -3, 0.5."""
    if ans is None:
        return None
    s = ans.strip()
    if re.search(r"\d\s+[\d.]", s):
        return None  # "1 2" is no number: removing the space would turn it into 12
    for junk in ("\\$", "$", ",", " ", "\\!", "\\left", "\\right", "\\%", "%"):
        s = s.replace(junk, "")
    if s.startswith("\\text{") and s.endswith("}"):
        s = s[len("\\text{"):-1]
    s = s.replace("dfrac", "frac").replace("tfrac", "frac").rstrip(".")
    if _PLAIN_NUMBER.fullmatch(s):
        sign = "-" if s.startswith("-") else ""
        s = s.lstrip("+-")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        s = s.lstrip("0") or "0"
        if s.startswith("."):
            s = "0" + s
        return "" + (sign if s != "0" else "") + s
    return s or None


def _text(completion) -> str:
    # TRL passes conversational completions as [{"role": "assistant", "content": ...}]; anything that is
    # neither (None, a number, an empty list) scores as an empty completion instead of raising.
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content")
        return content if isinstance(content, str) else ""
    return ""


def correctness_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 if the completion's final answer equals the gold answer after normalisation, else 0.0."""
    out = []
    for c, gold in zip(completions, answer):
        pred = normalize_answer(extract_answer(_text(c)))
        out.append(1.0 if pred is not None and pred == normalize_answer(gold) else 0.0)
    return out


def format_reward(completions, **kwargs) -> list[float]:
    """Strict format: exactly one \\boxed{...}, closed, and nothing after it but spaces, '.' or '$'."""
    out = []
    for c in completions:
        t = _text(c)
        ok = t.count("\\boxed{") == 1 and extract_boxed(t) is not None
        if ok:
            end = t.rfind("\\boxed{") + len("\\boxed{") + len(extract_boxed(t)) + 1
            ok = t[end:].strip(" \n.$") == ""
        out.append(1.0 if ok else 0.0)
    return out


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass
class Task:
    name: str
    train: list[dict]
    test: list[dict]
    reward_funcs: list[Callable]
    reward_weights: list[float]


def _fail(message: str):
    raise SystemExit(f"error: {message}")


def _read_json_rows(path: str) -> list[dict]:
    """A .jsonl file (one object a line) or a .json file (a list of objects, or one object per line)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.lower().endswith(".json") and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    _fail(f"--dataset_path {path}: line {n} is not valid JSON ({e.msg})")
    if not all(isinstance(r, dict) for r in rows):
        _fail(f"--dataset_path {path}: every row must be a JSON object")
    return rows


def _read_parquet_rows(path: str) -> list[dict]:
    """Every row of a parquet file, read by pyarrow (which datasets is built on)."""
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as e:  # not parquet, truncated, unreadable
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        _fail(f"--dataset_path {path} is not a valid parquet file ({first})")


def _load_rows(dataset_path: str | None, hub_id: str, hub_config: str | None, split: str):
    if dataset_path is None:
        import datasets  # imported lazily: the synthetic task and local files need no datasets machinery

        try:
            return list(datasets.load_dataset(hub_id, hub_config, split=split))
        except Exception as e:  # offline, unknown id, ...: the hub's own messages run to pages
            _fail(f"could not load {hub_id} from the hub ({type(e).__name__}); pass --dataset_path with a local file")
    ext = dataset_path.rsplit(".", 1)[-1].lower()
    if ext not in ("json", "jsonl", "parquet"):
        _fail(f"--dataset_path must end in .json, .jsonl or .parquet, got {dataset_path!r}")
    if not os.path.isfile(dataset_path):
        _fail(f"--dataset_path {dataset_path}: no such file")
    if ext == "parquet":
        return _read_parquet_rows(dataset_path)
    try:
        return _read_json_rows(dataset_path)
    except UnicodeDecodeError:
        _fail(f"--dataset_path {dataset_path} is not UTF-8 text")
    except ValueError as e:
        _fail(f"--dataset_path {dataset_path}: not valid JSON ({e})")
    except Exception as e:
        _fail(f"--dataset_path {dataset_path}: unreadable ({type(e).__name__}: {str(e)[:200]})")


# The keyword arguments a reward function receives besides the data columns (TRL's names): a column
# with one of these names would be passed twice, so it is left out of the rows (and said so).
REWARD_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric",
                    "environments")


def _to_rows(raw: list[dict], question_key: str, gold_fn: Callable, source: str) -> list[dict]:
    """Build rows; a row without a usable gold answer is reported and skipped.

    Every row gets every column of the file (None where a row lacks it, as datasets does), so the
    reward functions always receive whole columns, whichever rows a step draws."""
    columns = [k for k in dict.fromkeys(k for r in raw for k in r) if k not in REWARD_ARGUMENTS]
    dropped = sorted({k for r in raw for k in r} & set(REWARD_ARGUMENTS))
    if dropped:
        log.warning("%s: column(s) %s left out: the reward functions receive their own arguments of that name",
                    source, ", ".join(dropped))
    rows, skipped = [], 0
    for r in raw:
        gold = normalize_answer(gold_fn(r))
        if not r.get(question_key) or not gold:
            skipped += 1
            continue
        rows.append({**{k: r.get(k) for k in columns},
                     "prompt": [{"role": "user", "content": f"{r[question_key]}\n{MATH_INSTRUCTION}"}],
                     "answer": gold})
    if skipped:
        log.warning("%s: skipped %d of %d rows without a parsable answer", source, skipped, len(raw))
    return rows


def _number(value) -> str | None:
    """A gold answer written as a JSON number (42, 0.5) as text; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return str(value)


def _gsm8k_gold(row):
    a = row.get("answer")
    return a.split("####")[-1] if isinstance(a, str) and "####" in a else _number(a)


def _math_gold(row):
    a = row.get("answer")
    if isinstance(a, str) and a.strip():
        return a
    if _number(a) is not None:
        return _number(a)
    sol = row.get("solution")
    return extract_boxed(sol) if isinstance(sol, str) else None


def load_task(name: str, dataset_path: str | None = None, eval_size: int = 256, seed: int = 0) -> Task:
    """Load a task. With a local file, the last `eval_size` rows are held out for evaluation."""
    if name == "add":
        # Fixed seeds: the held-out set never depends on the run's seed.
        return Task("add", addition_rows(20000, seed=1), addition_rows(eval_size, seed=2),
                    [correctness_reward], [1.0])
    if name in ("gsm8k", "math"):
        q, gold = ("question", _gsm8k_gold) if name == "gsm8k" else ("problem", _math_gold)
        hub = ("openai/gsm8k", "main") if name == "gsm8k" else ("DigitalLearningGmbH/MATH-lighteval", None)
        if dataset_path is None:
            train = _to_rows(_load_rows(None, *hub, "train"), q, gold, name)
            test = _to_rows(_load_rows(None, *hub, "test"), q, gold, name)[:eval_size]
        else:
            raw = _load_rows(dataset_path, *hub, "train")
            rows = _to_rows(raw, q, gold, dataset_path)
            if len(rows) < 2:
                _fail(f"--dataset_path {dataset_path}: {len(rows)} usable rows of {len(raw)} (each needs "
                      f"{q!r} and a parsable answer); at least 2 are needed, one to train on and one to hold out")
            k = min(eval_size, len(rows) // 2)
            if k < eval_size:
                log.warning("%s: holding out %d rows, not --eval_size %d: at most half of the %d usable rows",
                            dataset_path, k, eval_size, len(rows))
                print(f"note: {dataset_path} has {len(rows)} usable rows; holding out {k} (half), not --eval_size {eval_size}")
            train, test = rows[: len(rows) - k], rows[len(rows) - k:]
        if not train or not test:
            _fail(f"task {name}: no usable rows (train {len(train)}, test {len(test)})")
        return Task(name, train, test, [correctness_reward, format_reward], [1.0, 0.1])
    raise ValueError(f"unknown task {name!r}; choose add, gsm8k or math")


def prompt_indices(num_rows: int, num_prompts: int, step: int, seed: int) -> list[int]:
    """The prompts of training step `step`: a fresh seeded shuffle per epoch, read in order.

    A pure function of (seed, step): every method sees the same prompt stream, and a resumed run
    continues it exactly without carrying any sampler state."""
    out, start = [], step * num_prompts
    for pos in range(start, start + num_prompts):
        epoch, k = divmod(pos, num_rows)
        out.append(_epoch_order(num_rows, seed, epoch)[k])
    return out


@functools.lru_cache(maxsize=4)
def _epoch_order(num_rows: int, seed: int, epoch: int) -> list[int]:
    order = list(range(num_rows))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def score_completions(task: Task, rows: list[dict], completions: list[str], num_generations: int):
    """Weighted sum of the task's reward functions, called the TRL way: completions plus every
    dataset column (repeated per generation) as keyword arguments. Returns (rewards, per-function
    means); a reward function's None counts as 0."""
    import torch

    keys = dict.fromkeys(k for r in rows for k in r)  # every column any row has, in order
    columns = {k: [r.get(k) for r in rows for _ in range(num_generations)] for k in keys}
    prompts = columns.pop("prompt")
    total = torch.zeros(len(completions))
    means = {}
    for fn, weight in zip(task.reward_funcs, task.reward_weights):
        values = torch.tensor([0.0 if v is None else float(v)
                               for v in fn(prompts=prompts, completions=completions, **columns)])
        total += weight * values
        means[f"rewards/{fn.__name__}/mean"] = values.mean().item()
    return total, means
