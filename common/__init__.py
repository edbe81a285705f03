"""Algorithm-neutral helpers shared by every script: tasks and rewards (tasks.py), the offline tiny
model (tiny.py), and loading, generation, log-probs and evaluation (rollout.py)."""
