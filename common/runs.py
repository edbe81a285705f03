"""Run folders, checkpoints, resume and argument parsing: the plumbing every script shares.

A run folder (output_dir/run_name) holds config.json, metrics.jsonl, samples.jsonl, checkpoint.pt
and final/. The rules, so that two runs can never mix and a kill can never corrupt a run:
  - a fresh run refuses a folder that already holds a run unless --overwrite (which removes only
    the files a run writes, never anything else in the folder);
  - --resume needs a readable checkpoint written by the same script with the same training flags
    (RESUMABLE lists the flags that may change); a mismatch is refused with one line naming every
    difference, and a run that already reached max_steps exits 0 as "already complete";
  - the checkpoint, config.json and final/ are written to a temporary name and renamed, so a kill
    mid-write leaves the previous version; a torn last line of metrics.jsonl or samples.jsonl (a
    kill mid-append) is dropped on resume, with the records past the checkpoint.
Every problem is one `error: ...` line (SystemExit), raised before any model is loaded.
"""

import dataclasses
import json
import math
import os
import random
import re
import shutil

import numpy as np
import torch

# Flags that may differ between a run and its --resume: where it is written, how often it logs,
# and how long it runs (max_steps extends or shortens a run; D3S's schedule follows the new total).
RESUMABLE = {"resume", "overwrite", "max_steps", "save_every", "log_samples_every", "report_to", "device",
             "output_dir", "run_name"}
RUN_FILES = ("checkpoint.pt", "checkpoint.pt.tmp", "config.json", "metrics.jsonl", "samples.jsonl")


def fail(message: str):
    raise SystemExit(f"error: {message}")


def parse_args(args_class):
    """The script's dataclass from the command line; an unknown flag is one line, not a traceback."""
    from transformers import HfArgumentParser

    args, rest = HfArgumentParser(args_class).parse_args_into_dataclasses(return_remaining_strings=True)
    if rest:
        fail(f"unrecognized arguments: {' '.join(rest)} (see --help)")
    return args


def check_finite(**values):
    """Each named float flag must be a finite number (nan and inf pass every '>' test)."""
    for name, v in values.items():
        if v is not None and not math.isfinite(v):
            fail(f"--{name} must be a finite number, got {v}")


def check_model_name(name: str):
    """A --model that can never load fails here, before anything heavy starts."""
    if name == "tiny" or name.startswith("tiny:"):
        if not re.fullmatch(r"tiny(:\d+)?", name):
            fail(f"--model {name!r}: write tiny or tiny:SEED with an integer seed")
        return
    if name.startswith("qwen2.5-0.5b-shape"):
        from common.qwen_shape import shape_layers

        shape_layers(name)  # raises its own one-line error for a bad layer count
        return
    path = os.path.expanduser(name)
    if os.path.exists(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            fail(f"--model {name!r}: a local model must be a folder with config.json (as save_pretrained writes)")
        return
    if name.startswith(("/", ".", "~")) or os.sep + os.sep in name:
        fail(f"--model {name!r}: no such folder")
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?", name):
        fail(f"--model {name!r} is neither a local folder nor a hub id like Qwen/Qwen2.5-0.5B-Instruct")


def run_dir(args, script: str) -> str:
    name = args.run_name or f"{script}_{args.task}_seed{args.seed}"
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        fail(f"--run_name {name!r} must be a plain folder name (no '/', not '..'): runs live in --output_dir")
    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        fail(f"--output_dir {args.output_dir!r} is a file, not a folder")
    return os.path.join(args.output_dir, name)


def _writable(path: str):
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, ".write_test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        fail(f"cannot write the run folder {path!r}: {e.strerror or e}")


def write_json(path: str, obj) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def _read_jsonl(path: str) -> list[dict]:
    """The intact records of a jsonl log; a torn last line (a kill mid-append) is dropped."""
    out = []
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    return out


def _trim_jsonl(path: str, start_step: int) -> None:
    kept = [r for r in _read_jsonl(path) if isinstance(r, dict) and r.get("step", -1) < start_step]
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(path + ".tmp", path)


def _holds_a_run(path: str) -> bool:
    """A checkpoint, a final model or any logged step: what a fresh run must not silently mix with."""
    metrics = os.path.join(path, "metrics.jsonl")
    return (os.path.exists(os.path.join(path, "checkpoint.pt")) or os.path.exists(os.path.join(path, "final"))
            or (os.path.isfile(metrics) and os.path.getsize(metrics) > 0))


def load_checkpoint(path: str) -> dict:
    if not os.path.isfile(path):
        fail(f"--resume: no checkpoint at {path} (start the run without --resume)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        assert isinstance(ckpt, dict) and {"step", "model", "optimizer", "totals", "rng"} <= ckpt.keys()
    except Exception as e:  # a truncated or foreign file can fail in many ways inside torch.load
        fail(f"--resume: the checkpoint {path} is unreadable ({type(e).__name__}); it is truncated or not "
             f"one of ours. Start again with --overwrite")
    return ckpt


def prepare(args, script: str):
    """Check and set up the run folder. Returns (run_dir, checkpoint or None). Exits 0 when a resumed
    run is already complete; never touches a model."""
    path = run_dir(args, script)
    ckpt_path = os.path.join(path, "checkpoint.pt")
    config = {**dataclasses.asdict(args), "script": script}
    ckpt = None
    if args.resume:
        ckpt = load_checkpoint(ckpt_path)
        saved = ckpt.get("config") or {}
        differ = [k for k in sorted(set(saved) | set(config)) if k not in RESUMABLE and saved.get(k) != config.get(k)]
        if differ:
            shown = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in differ)
            fail(f"--resume: {path} was trained with other settings ({shown}); resume with the saved ones "
                 f"(see its config.json) or start a new run")
        if ckpt["step"] >= args.max_steps:
            print(f"{path}: already complete ({ckpt['step']} of {args.max_steps} steps); nothing to do")
            raise SystemExit(0)
        _writable(path)
        for name in ("metrics.jsonl", "samples.jsonl"):
            _trim_jsonl(os.path.join(path, name), ckpt["step"])
    else:
        if _holds_a_run(path):
            if not args.overwrite:
                fail(f"{path} already holds a run; pass --resume to continue it or --overwrite to replace it")
            for f in RUN_FILES:
                if os.path.exists(os.path.join(path, f)):
                    os.remove(os.path.join(path, f))
            for folder in ("final", "final.tmp", "tensorboard"):  # the run's own folders, nothing else
                shutil.rmtree(os.path.join(path, folder), ignore_errors=True)
        _writable(path)
        for name in ("metrics.jsonl", "samples.jsonl"):
            open(os.path.join(path, name), "w").close()
    write_json(os.path.join(path, "config.json"), config)
    return path, ckpt


def restore(ckpt: dict | None, model, optimizer, totals: dict) -> tuple[int, dict, dict]:
    """(start step, totals, method state) of a resumed run, after loading its weights, optimizer and every RNG
    (python, numpy, torch, CUDA) so that the run continues bit for bit; a fresh run (ckpt None): (0, totals, {})."""
    if ckpt is None:
        return 0, totals, {}
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    random.setstate(ckpt["rng"]["python"])
    np.random.set_state(ckpt["rng"]["numpy"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if ckpt["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu())
    return ckpt["step"], ckpt["totals"], ckpt.get("state", {})


def save_checkpoint(path: str, step: int, model, optimizer, totals: dict, state: dict, config: dict) -> None:
    """Everything `restore` needs, written atomically: a kill mid-write leaves the previous checkpoint intact.
    `config` is what a later --resume is checked against; `state` is the method's own (DPPO's history, ...)."""
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
    torch.save({"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "totals": totals,
                "rng": rng, "state": state, "config": config}, path + ".tmp")
    os.replace(path + ".tmp", path)


def save_final(model, tok, run_dir: str) -> None:
    """final/ is written beside the old one and swapped in, so it is never half-written."""
    final, tmp = os.path.join(run_dir, "final"), os.path.join(run_dir, "final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    from common.tiny import quiet_transformers

    with quiet_transformers():  # no "Writing model shards" bar at the end of every run
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def summarize(first_eval: dict | None, record: dict, totals: dict, run_dir: str) -> dict:
    """The last step's evaluation (eval/* keys); prints the accuracy before -> after for a run that began here."""
    last = {k.replace("eval_after/", "eval/"): v for k, v in record.items() if k.startswith("eval_after/")}
    if first_eval:
        print(f"held-out accuracy: greedy {first_eval['eval/greedy_acc']:.3f} -> {last['eval/greedy_acc']:.3f}, "
              f"sampled {first_eval['eval/sampled_acc']:.3f} -> {last['eval/sampled_acc']:.3f} "
              f"({totals['time/train_total']:.0f}s of training) in {run_dir}")
    return last


def weights_finite(model) -> bool:
    """All parameters finite, in one fused pass and one device sync: a norm is finite exactly when every
    element is (short of an overflow of the squares above ~1e19, which would be a blow-up all the same)."""
    norms = torch._foreach_norm([p.detach() for p in model.parameters()])
    return bool(torch.isfinite(torch.stack(norms)).all())

