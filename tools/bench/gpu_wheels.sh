#!/bin/sh
# The wheels the GPU suite needs that the device machine's image lacks (its package list:
# /work/.library/device/KINDS.md), downloaded into .whl/ for the device tool's `carry`.
# imageio-ffmpeg (68 MB, over the 64 MiB carry limit) is left out: without an ffmpeg there the
# cold_start section records its failure and the others run.
# Run from the repository root on a machine with pip and network:  sh tools/bench/gpu_wheels.sh
set -e
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform any -d .whl \
  diffusers==0.42.1 ltx-video==0.1.2 ml_collections==1.1.0 gguf==0.19.0
du -sh .whl
