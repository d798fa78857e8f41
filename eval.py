"""Evaluate a checkpoint: ``python eval.py ckpt=path/to/model.ckpt`` (see configs/eval.yaml)."""

from lsdo.cli import eval_main

if __name__ == "__main__":
    eval_main()
