"""Converts an LTX-Video source to orbax checkpoints (one per component) plus a JSON manifest.

  python tools/convert.py --source /models/ltxv --out /ckpt/ltxv-2b-0.9.1 --dtype bf16
  python tools/convert.py --source Lightricks/LTX-Video --file ltxv-2b-0.9.8-distilled.safetensors \
      --out /ckpt/ltxv-2b-0.9.8-distilled-fp8 --dtype fp8
  python tools/convert.py --source /models/tiny --out /ckpt/tiny --release custom   # test model
  python tools/convert.py --source /models/ltxv --out /ckpt/ltxv-styled --lora style.safetensors:0.8

Errors print one `error:` line and leave no output folder: exit status 2 for usage errors (bad
--dtype or --components, an existing --out), 1 for data errors (bad or truncated files, missing
components, unknown releases, weights out of the dtype's range, hub unreachable). A checkpoint
converted with every component (the default) is a model source for `python -m ltx_jax.generate
--config.model.source=OUT`; one with fewer components serves the Python loaders
(`load_transformer(OUT)`).
"""

from __future__ import annotations

import argparse
import sys

from ltx_jax.errors import LTXError, ReleaseError, UsageError
from ltx_jax.sources import resolve_source
from ltx_jax.weights.convert import COMPONENTS, convert


def _lora(text: str) -> tuple[str, float]:
  """'PATH' or 'PATH:SCALE' -> (path, scale)."""
  path, _, scale = text.rpartition(':')
  try:
    return (path, float(scale)) if path else (text, 1.0)
  except ValueError:
    return text, 1.0  # a ':' inside the path


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--source', required=True,
                 help='diffusers folder, single-file folder or .safetensors, converted '
                      'checkpoint, or hub repo id')
  p.add_argument('--out', required=True, help='output folder (must not exist)')
  p.add_argument('--dtype', default='bf16', help="storage dtype: 'f32', 'bf16', 'fp16' or 'fp8'")
  p.add_argument('--components', default=','.join(COMPONENTS),
                 help='comma-separated subset of ' + ','.join(COMPONENTS))
  p.add_argument('--file', default=None, help='which official .safetensors, when several')
  p.add_argument('--release', default=None, help="name the release, e.g. ltxv-2b-0.9.6-dev")
  p.add_argument('--allow-custom', action='store_true',
                 help='accept unreleased (e.g. tiny test) architectures as release "custom" '
                      '(the same as --release custom)')
  p.add_argument('--offline', action='store_true', help='hub repo ids: use the local cache only')
  p.add_argument('--lora', action='append', default=[], metavar='PATH[:SCALE]',
                 help='a LoRA merged into the transformer (repeatable; scale default 1)')
  p.add_argument('--no-progress', action='store_true')
  args = p.parse_args(argv)

  try:
    source = resolve_source(args.source, file=args.file, release=args.release,
                            allow_custom=args.allow_custom, offline=args.offline or None)
    print(f"source: {source.kind} at {source.root}, release {source.release.name}")
    convert(source, args.out, dtype=args.dtype, progress=not args.no_progress,
            components=[c.strip() for c in args.components.split(',') if c.strip()],
            loras=[_lora(text) for text in args.lora])
  except ReleaseError as e:  # its message names the library's arguments
    print(f"error: {e} (here: --release NAME names the release, --allow-custom or --release "
          "custom accepts a custom or test model)", file=sys.stderr)
    return 1
  except (LTXError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2 if isinstance(e, UsageError) else 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
