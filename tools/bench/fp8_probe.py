"""Which fp8 matmul forms XLA lowers to fp8 tensor-core GEMMs on this GPU, and how fast
(python -m tools.bench.fp8_probe): prints each form's custom-call targets / fusion kinds and
its TFLOP/s at 8192^3 and at a 13B FFN shape."""

import re
import statistics
import time

import jax
import jax.numpy as jnp

F8 = jnp.float8_e4m3fn


def forms():
  def bf16(x, w, s):
    return jnp.dot(x, w.astype(jnp.bfloat16))

  def direct(x, w, s):  # fp8 x fp8 -> bf16, scales outside
    xq = jax.lax.optimization_barrier((x / s).astype(F8))
    y = jax.lax.dot_general(xq, w, (((1,), (0,)), ((), ())), preferred_element_type=jnp.bfloat16)
    return y * s.astype(jnp.bfloat16)

  def scaled(x, w, s):  # dequantise -> dot, both sides scaled
    xq = jax.lax.optimization_barrier((x / s).astype(F8))
    one = jnp.ones((), jnp.bfloat16)
    return jnp.dot(xq.astype(jnp.bfloat16) * s.astype(jnp.bfloat16), w.astype(jnp.bfloat16) * one)

  def scaled_f32(x, w, s):
    xq = jax.lax.optimization_barrier((x.astype(jnp.float32) / s).astype(F8))
    one = jnp.ones((), jnp.float32)
    y = jnp.dot(xq.astype(jnp.float32) * s, w.astype(jnp.float32) * one)
    return y.astype(jnp.bfloat16)

  def pre_quantised(xq, w, s):  # both operands fp8 arrays from outside
    return jax.lax.dot_general(xq, w, (((1,), (0,)), ((), ())), preferred_element_type=jnp.bfloat16)

  return dict(bf16=bf16, direct=direct, scaled=scaled, scaled_f32=scaled_f32,
              pre_quantised=pre_quantised)


def main():
  print(jax.devices()[0].device_kind, jax.__version__)
  for m, k, n in ((8192, 8192, 8192), (26752, 4096, 16384)):
    key = jax.random.key(0)
    x = jax.random.normal(key, (m, k), jnp.bfloat16)
    w = (jax.random.normal(jax.random.fold_in(key, 1), (k, n), jnp.float32) * 0.02).astype(F8)
    s = jnp.max(jnp.abs(x)).astype(jnp.float32) / 448
    for name, fn in forms().items():
      a = x.astype(F8) if name == 'pre_quantised' else x
      f = jax.jit(fn)
      hlo = f.lower(a, w, s).compile().as_text()
      targets = sorted(set(re.findall(r'custom_call_target="([^"]+)"', hlo)))
      kinds = sorted(set(re.findall(r'"kind":"(__[a-z_]+)"', hlo)))
      f(a, w, s).block_until_ready()
      ts = []
      for _ in range(5):
        t = time.perf_counter()
        f(a, w, s).block_until_ready()
        ts.append(time.perf_counter() - t)
      tf = 2 * m * k * n / statistics.median(ts) / 1e12
      print(f"{m}x{k}x{n} {name:14s} {tf:7.1f} TFLOP/s  calls {targets} fusions {kinds}",
            flush=True)


if __name__ == '__main__':
  main()
