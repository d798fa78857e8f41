"""Train an LSDO model: ``python train.py dataset=msrvtt variant=average`` (see configs/train.yaml)."""

from lsdo.cli import train_main

if __name__ == "__main__":
    train_main()
