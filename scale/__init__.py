"""scale: the methods of this repository as plug-ins for TRL's GRPOTrainer (optional extra, see scale/README.md).

`scale.trainers` holds one GRPOTrainer subclass per method, built on the reference scripts' pure
functions; `scale/train.py` is the launcher (one process, or many under `accelerate launch`).
"""
