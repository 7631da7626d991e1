"""Converts an LTX-Video source to orbax checkpoints (one per component) plus a JSON manifest.

  python tools/convert.py --source /models/ltxv --out /ckpt/ltxv-2b-0.9.1 --dtype bf16
  python tools/convert.py --source Lightricks/LTX-Video --file ltxv-2b-0.9.8-distilled.safetensors \
      --out /ckpt/ltxv-2b-0.9.8-distilled-fp8 --dtype fp8 --components transformer,vae

Errors (bad or truncated files, missing components, unknown releases, hub unreachable) print one
`error:` line and exit 1, leaving no output folder.
"""

from __future__ import annotations

import argparse
import sys

COMPONENTS = ('transformer', 'vae', 'text_encoder')


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--source', required=True,
                 help='diffusers folder, single-file folder or .safetensors, converted '
                      'checkpoint, or hub repo id')
  p.add_argument('--out', required=True, help='output folder (must not exist)')
  p.add_argument('--dtype', default='bf16', choices=('f32', 'bf16', 'fp8'))
  p.add_argument('--components', default=','.join(COMPONENTS),
                 help='comma-separated subset of ' + ','.join(COMPONENTS))
  p.add_argument('--file', default=None, help='which official .safetensors, when several')
  p.add_argument('--release', default=None, help="name the release, e.g. ltxv-2b-0.9.6-dev")
  p.add_argument('--allow-custom', action='store_true',
                 help='accept unreleased (e.g. tiny test) architectures as release "custom"')
  p.add_argument('--offline', action='store_true', help='hub repo ids: use the local cache only')
  p.add_argument('--no-progress', action='store_true')
  args = p.parse_args(argv)

  from ltx_jax.convert import convert
  from ltx_jax.sources import resolve_source
  try:
    source = resolve_source(args.source, file=args.file, release=args.release,
                            allow_custom=args.allow_custom, offline=args.offline or None)
    print(f"source: {source.kind} at {source.root}, release {source.release.name}")
    convert(source, args.out, dtype=args.dtype, progress=not args.no_progress,
            components=[c.strip() for c in args.components.split(',') if c.strip()])
  except (ValueError, OSError) as e:  # our errors subclass ValueError; files raise OSError
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
