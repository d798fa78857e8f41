"""Zero-shot region-crop retrieval: ``python zeroshot.py dataset=coco dataset.root=DIR`` (configs/zeroshot.yaml)."""

from lsdo.cli.zeroshot import zeroshot_main

if __name__ == "__main__":
    zeroshot_main()
