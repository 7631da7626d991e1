"""Speed of ltx_jax against diffusers / transformers, as a markdown table.

  python tools/bench.py --out bench.md                 # every case, f32 and bf16 (CPU sizes)
  python tools/bench.py --cases dit,vae --runs 5       # a subset
  python tools/bench.py --preset gpu                   # real sizes, bf16, cuDNN attention

On CPU, XLA gets the flags of `ltx_jax.bench.xla_flags.CPU` unless XLA_FLAGS is set, and PyTorch
as many threads as XLA (all cores). The logic is in ltx_jax/bench/.
"""

import sys

from ltx_jax.bench import xla_flags

if __name__ == '__main__':
  xla_flags.apply()  # before jax starts its backend
  from ltx_jax.bench import run
  run.main(sys.argv[1:])
