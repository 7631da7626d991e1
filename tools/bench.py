"""Speed of ltx_jax against diffusers / transformers, as a markdown table.

  python tools/bench.py --out bench.md                 # every case, f32 and bf16 (CPU sizes)
  python tools/bench.py --cases dit,vae --runs 5       # a subset
  python tools/bench.py --preset gpu                   # real sizes, bf16, cuDNN attention

The same as `python -m tools.bench` from the repository root; the code is in tools/bench/.
XLA runs with the XLA_FLAGS of the environment, PyTorch with as many threads as XLA (all cores).
"""

import os
import sys

if __name__ == '__main__':
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from tools.bench.run import main
  main(sys.argv[1:])
