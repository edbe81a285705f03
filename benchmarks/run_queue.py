"""The comparison's runs in pairs: each config's seed beside its baseline's same seed, resumable, safe to kill.

    nohup python benchmarks/run_queue.py --configs pods cppo dppo d3s gvm_raft++ dgg --seeds 0 1 2 3 4 5 6 7 8 9 &
    python benchmarks/run_queue.py --configs cppo_paper --seeds 0 1 2 3 4 --dry_run      # the plan, nothing run
    kill <pid>                                      # stops both runs of the pair; start the queue again to go on

Why pairs. A run's CPU seconds depend on what shares the machine with it (up to ~25% here), so a
speed-up in CPU time is only fair between two runs that ran at the same time beside the same
co-runner. The queue runs a config's seed s and its baseline's seed s together, two processes of one
thread each, on an otherwise idle machine, and nothing else. The baseline of the first config paired
with seed s is the baseline's own run (benchmarks/results/<baseline>_steps<T>/seed<s>); every further
config gets a twin of it (<baseline>_beside_<config>_steps<T>/seed<s>: the same seed, so the same
curve, and its own clock), which compare.py uses for that config's paired CPU times. Beside each run
folder, <folder>.beside names what it ran beside (and <folder>.log, <folder>.pid while it runs).

Safe to stop. A finished run is reused; an interrupted one resumes from its last checkpoint (every 10
steps) or starts again if it had none. Where one run of a pair is finished and the other is not, the
finished config runs again as a co-runner only (into <results>/_corunner, discarded), so that the
other still has its partner's load beside it. SIGTERM or Ctrl-C stops the pair's processes before the
queue exits; a lock file refuses a second queue, and a run whose process survived a `kill -9` of the
queue is waited for, not started twice. After each pair, both runs' compact copies are written to
--save (docs/results/runs by default), ready to commit and to report with `compare.py --existing`.
"""

import argparse
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402
import harness  # noqa: E402

SAVE_EVERY = ["--save_every", "10"]  # checkpoints, so that an interrupted run resumes instead of starting over


def beside(path):
    try:
        with open(f"{path}.beside") as f:
            return f.read().strip()
    except OSError:
        return None


def plan(configs, seeds, steps=harness.STEPS, results=harness.RESULTS):
    """[(config, seed, [(label, config to run, run folder)] x 2)] in order: seed by seed, so that a queue stopped
    early leaves every config at fewer seeds. The baseline's own run goes to the first config paired with it
    (or the one it already ran beside); every other config gets a twin."""
    jobs, claimed = [], {}
    for s in seeds:
        for c in configs:
            base = compare.baseline_of(c)
            if c == base:
                continue
            own = harness.run_dir(base, s, steps, results)
            mine = beside(own) == c or (beside(own) is None and not os.path.exists(own)
                                        and claimed.setdefault((base, s), c) == c)
            label = base if mine else f"{base}_beside_{c}"
            jobs.append((c, s, [(c, c, harness.run_dir(c, s, steps, results)),
                                (label, base, own if mine else harness.run_dir(label, s, steps, results))]))
    return jobs


def alive(pid_file):
    """The pid in pid_file if that process is still running (a run left behind by a killed queue), else None."""
    try:
        with open(pid_file) as f:
            pid = int(f.read())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


class Queue:
    def __init__(self, args):
        self.args, self.procs = args, []
        self.log = open(os.path.join(args.results, "run_queue.log"), "a")

    def say(self, text):
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def start(self, config, seed, path, partner):
        """Start one run (resumed or restarted as its folder says) on one thread; returns its process."""
        a = self.args
        cmd = harness.command(config, seed, path, a.steps, SAVE_EVERY)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(f"{path}.beside", "w") as f:
            f.write(partner)
        log = open(f"{path}.log", "a")
        proc = subprocess.Popen(cmd, cwd=harness.ROOT, env=harness.ENV, stdout=log, stderr=subprocess.STDOUT)
        with open(f"{path}.pid", "w") as f:
            f.write(str(proc.pid))
        proc.path, proc.partner = path, partner
        self.procs.append(proc)
        self.say(f"start {os.path.relpath(path, a.results)} beside {partner}"
                 + (" (resumed)" if "--resume" in cmd else " (restarted)" if "--overwrite" in cmd else ""))
        return proc

    def stop(self):
        """Stop the pair's processes (called on SIGTERM / Ctrl-C, outside any wait for them)."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            p.wait()
            if os.path.exists(f"{p.path}.pid"):
                os.remove(f"{p.path}.pid")
        self.say("stopped: start the queue again to go on (finished runs are kept, the others resume)")

    def pair(self, config, seed, members):
        a = self.args
        todo = [(label, run_cfg, path) for label, run_cfg, path in members if not harness.finished(path)]
        for _, _, path in todo:
            if (pid := alive(f"{path}.pid")):
                self.say(f"waiting: {os.path.relpath(path, a.results)} is still running from an earlier queue (pid {pid})")
                while alive(f"{path}.pid"):
                    time.sleep(10)
        todo = [m for m in members if not harness.finished(m[2])]
        if not todo:
            return True
        self.procs = []
        runs = [self.start(run_cfg, seed, path, members[1 - i][0]) for i, (label, run_cfg, path) in enumerate(members)
                if (label, run_cfg, path) in todo]  # both at once: each is the other's co-runner
        corunner = None
        if len(todo) == 1:  # its partner finished earlier: run that config again, only for its load, and discard it
            label, run_cfg, _ = next(m for m in members if m not in todo)
            scratch = os.path.join(a.results, "_corunner", f"{label}_seed{seed}")
            corunner = self.start(run_cfg, seed, scratch, f"{todo[0][0]} (as its co-runner only)")
        ok = True
        for p in runs:
            done = p.wait() == 0 and harness.finished(p.path)
            ok &= done
            self.say(("done  " if done else f"FAILED (exit {p.returncode}, no final/ written; see {p.path}.log) ")
                     + os.path.relpath(p.path, a.results))
            os.remove(f"{p.path}.pid")
        if corunner:
            corunner.terminate()
            corunner.wait()
            os.remove(f"{corunner.path}.pid")
        for label, _, path in members:
            if harness.finished(path):
                harness.save(harness.load(path), os.path.join(a.save, label, f"seed{seed}.jsonl"))
        return ok


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", required=True, help="configs to pair with their baselines (compare.py's names)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--steps", type=int, default=harness.STEPS)
    parser.add_argument("--results", default=harness.RESULTS)
    parser.add_argument("--save", default=os.path.join(harness.ROOT, "docs", "results", "runs"),
                        help="where each finished run's compact copy goes")
    parser.add_argument("--dry_run", action="store_true", help="print the plan and run nothing")
    args = parser.parse_args(argv)
    configs = [harness.resolve(c) for c in args.configs]
    jobs = plan(configs, args.seeds, args.steps, args.results)
    if args.dry_run:
        for c, s, members in jobs:
            state = lambda p: ("finished" if harness.finished(p) else "resume" if os.path.exists(  # noqa: E731
                os.path.join(p, "checkpoint.pt")) else "restart" if os.path.exists(p) else "new")
            print(f"seed {s}: " + "  beside  ".join(f"{label} ({state(p)})" for label, _, p in members))
        return jobs
    os.makedirs(args.results, exist_ok=True)
    lock = os.path.join(args.results, "run_queue.pid")
    if (pid := alive(lock)):
        raise SystemExit(f"error: another queue is running (pid {pid}); stop it first (kill {pid})")
    with open(lock, "w") as f:
        f.write(str(os.getpid()))
    queue = Queue(args)

    def interrupted(*_):  # leave the wait for the runs first: a handler that waited for them itself would deadlock
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        failed = [(c, s) for c, s, members in jobs if not queue.pair(c, s, members)]
    except KeyboardInterrupt:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        queue.stop()
        raise SystemExit(1)
    finally:
        os.remove(lock)
    queue.say(f"queue finished: {len(jobs) - len(failed)} of {len(jobs)} pairs done"
              + (f"; failed: {', '.join(f'{c} seed {s}' for c, s in failed)}" if failed else ""))
    if failed:
        raise SystemExit(1)
    return jobs


if __name__ == "__main__":
    main()
