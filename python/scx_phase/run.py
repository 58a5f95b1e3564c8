"""Run a training script with scx_phase's PyTorch hooks on, unmodified:

    python -m scx_phase.run train.py ARGS...
"""

import runpy
import sys


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: python -m scx_phase.run SCRIPT.py [ARGS...]", file=sys.stderr)
        sys.exit(2)
    from . import torch as scx_torch
    scx_torch.enable()
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
