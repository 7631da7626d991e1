"""Preprocessing end to end with tiny random models: a real clip written here by ffmpeg, an image
set, a damaged set; bitwise equality with the package's VAE encode and T5; resume and crash
safety; the posterior draw; decoding the cache back to video."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ltx_jax import data, smoke
from ltx_jax.data import encode as encode_lib
from ltx_jax.data import media, records
from ltx_jax.errors import DataError, UsageError
from ltx_jax.models.random import random_weights
from ltx_jax.models.t5 import T5Encoder
from ltx_jax.models.vae import VAEConfig, VideoAutoencoder
from ltx_jax.pipeline import LTXPipeline

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BUCKETS = '96x64x9;64x64x1'
SEQ = 16
# The smallest VAE of the released layout's compression (8x temporal, 32x spatial): cheap to
# compile, so the tests spend their time on the data path.
TINY_VAE = VAEConfig.from_official({
    'dims': 3, 'in_channels': 3, 'out_channels': 3, 'latent_channels': 8,
    'encoder_blocks': [['compress_all', {'multiplier': 1}]] * 3,
    'decoder_blocks': [['compress_all', {'residual': True, 'multiplier': 2}]] * 2 + [
        ['compress_all', {'residual': True, 'multiplier': 1}]],
    'encoder_base_channels': 4, 'decoder_base_channels': 8, 'scaling_factor': 1.0,
    'norm_layer': 'pixel_norm', 'patch_size': 4, 'latent_log_var': 'uniform',
    'use_quant_conv': False, 'causal_decoder': False, 'timestep_conditioning': True})


def tiny_pipeline() -> LTXPipeline:
  vae = random_weights(lambda: VideoAutoencoder(TINY_VAE, rngs=nnx.Rngs(0)), 1)
  # Non-trivial latent statistics, so normalisation is exercised.
  vae.latents_mean.set_value(jnp.linspace(-0.5, 0.5, 8))
  vae.latents_std.set_value(jnp.linspace(0.5, 2.0, 8))
  t5 = random_weights(lambda: T5Encoder(smoke.T5, rngs=nnx.Rngs(0)), 2)
  return LTXPipeline(None, vae, t5, smoke.tokenizer(), release='tiny-test')


def write_clip(path, frames, width, height, fps, seed=0):
  import imageio_ffmpeg
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 256, (height // 8, width // 8, 3), np.uint8)
  gen = imageio_ffmpeg.write_frames(str(path), (width, height), fps=fps, codec='libx264',
                                    pix_fmt_out='yuv420p', macro_block_size=1,
                                    ffmpeg_log_level='error')
  gen.send(None)
  for i in range(frames):
    f = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), np.uint8))
    gen.send(np.ascontiguousarray(f).tobytes())
  gen.close()


def write_image(path, width, height, seed=0, **save):
  from PIL import Image
  a = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
  Image.fromarray(a).save(path, **save)


@pytest.fixture(scope='module')
def pipe():
  return tiny_pipeline()


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  """A listing with good clips (one with a reference-free short clip), images, and damaged
  inputs of every kind."""
  d = tmp_path_factory.mktemp('media')
  write_clip(d / 'wide.mp4', 20, 160, 96, 24)
  write_clip(d / 'square.mp4', 12, 96, 96, 30, seed=1)
  write_clip(d / 'short.mp4', 5, 96, 64, 24, seed=2)  # under 9 frames: the 1-frame bucket
  write_image(d / 'tall.png', 60, 80)
  write_image(d / 'photo.jpg', 120, 90, seed=3)
  (d / 'corrupt.mp4').write_bytes(b'\x00\x00\x00\x18ftypmp42' + bytes(300))
  (d / 'empty.mp4').write_bytes(b'')
  write_image(d / 'truncated.png', 64, 64, seed=4)
  (d / 'truncated.png').write_bytes((d / 'truncated.png').read_bytes()[:100])
  rows = [('a wide clip', 'wide.mp4'), ('a square clip', 'square.mp4'),
          ('a short clip', 'short.mp4'), ('a tall image', 'tall.png'),
          ('a photo', 'photo.jpg'), ('broken', 'corrupt.mp4'), ('nothing', 'empty.mp4'),
          ('cut', 'truncated.png'), ('   ', 'wide.mp4'), ('lost', 'missing.mp4'),
          ('doc', 'notes.doc'), ('a wide clip', 'wide.mp4')]  # a repeat is a second sample
  (d / 'dataset.jsonl').write_text(''.join(
      json.dumps({'text': c, 'path': m}) + '\n' for c, m in rows))
  return d


EXPECTED_PROBLEMS = {'corrupt.mp4': 'unreadable video', 'empty.mp4': 'unreadable video',
                     'truncated.png': 'image', 'line 9': 'empty caption',
                     'missing.mp4': 'no such file', 'line 11': "unknown extension '.doc'"}


def run(items, pipe, folder, *, problems=(), latents='mean', batch_size=2, shard_size=2,
        **kw):
  config = data.PreprocessConfig(data.parse_buckets(BUCKETS), batch_size=batch_size,
                                 shard_size=shard_size, **kw)
  enc = data.Encoders(pipe, latents=latents, max_sequence_length=SEQ, batch_size=batch_size)
  return data.preprocess(items, enc, folder, config, problems=problems, progress=False)


@pytest.fixture(scope='module')
def made(dataset, pipe, tmp_path_factory):
  items, problems = data.list_items(dataset / 'dataset.jsonl', caption_column='text',
                                    media_column='path', trigger_word='TOK')
  folder = tmp_path_factory.mktemp('cache') / 'c'
  summary = run(items, pipe, folder, problems=problems)
  return items, folder, summary


def test_the_damaged_inputs_are_skipped_and_reported(made):
  _, folder, summary = made
  assert summary.written == summary.total == 6 and summary.already_done == 0
  lines = [str(p) for p in summary.problems]
  assert len(lines) == len(EXPECTED_PROBLEMS), lines
  for where, why in EXPECTED_PROBLEMS.items():
    assert any(where in l and why in l for l in lines), (where, lines)
  assert all('\n' not in l for l in lines)
  assert not [f for f in folder.iterdir()  # no temporary files
              if f.name.startswith('.') and f.name != '.lock']


def test_the_index_describes_each_sample(made, dataset, pipe):
  _, folder, _ = made
  index = records.read_index(folder)
  by_source = {}
  for s in index.samples:
    by_source.setdefault(Path(s['source']).name, []).append(s)
  assert sorted(by_source) == ['photo.jpg', 'short.mp4', 'square.mp4', 'tall.png', 'wide.mp4']
  wide = by_source['wide.mp4']
  assert len(wide) == 2 and wide[0]['key'] != wide[1]['key']
  assert wide[0]['bucket'] == '96x64x9' and wide[0]['frames'] == 9 and wide[0]['fps'] == 24.0
  assert wide[0]['caption'] == 'TOK a wide clip'
  assert wide[0]['sha256'] == data.prepare.file_sha256(dataset / 'wide.mp4')
  assert wide[0]['latent_shape'] == [2, 2, 3, 8]
  # Aspect ratio first (the official rule): a square clip goes to the square 1-frame bucket;
  # a 5-frame clip fits only the 1-frame bucket.
  assert by_source['square.mp4'][0]['bucket'] == '64x64x1'
  assert by_source['short.mp4'][0]['bucket'] == '64x64x1'
  assert by_source['tall.png'][0]['fps'] == 1.0 and by_source['tall.png'][0]['kind'] == 'image'
  assert index.params['buckets'] == ['96x64x9', '64x64x1'] and index.params['latents'] == 'mean'
  assert index.models['vae'] == records.model_identity(pipe.vae, 'tiny-test').to_json()
  assert len(index.shards) == 3  # shard_size 2


def _batches(index):
  """The encode batches of the run: per bucket, records in order, 2 at a time."""
  groups = {}
  for s in index.samples:
    groups.setdefault(s['bucket'], []).append(s)
  for bucket, members in groups.items():
    for i in range(0, len(members), 2):
      yield data.parse_buckets(bucket)[0], members[i:i + 2]


def test_latents_and_embeddings_equal_the_package_encoders_bitwise(made, pipe):
  _, folder, _ = made
  samples = data.CachedSamples(folder)
  index = samples.index
  for bucket, batch in _batches(index):
    pixels = []
    for s in batch:
      clip = media.read_clip(s['source'], 9)
      pixels.append(media.to_bucket(clip.frames, bucket))
    x = np.stack(pixels + pixels[-1:] * (2 - len(pixels)))  # padded as the run pads
    want = np.asarray(pipe.vae.normalize(pipe.vae.encode(jnp.asarray(x))).astype(jnp.float32))
    captions = [s['caption'] for s in batch]
    emb, mask = pipe.encode_prompt(captions + captions[-1:] * (2 - len(captions)), SEQ)
    for i, s in enumerate(batch):
      got = samples[index.samples.index(s)]
      np.testing.assert_array_equal(got['latents'], want[i])
      np.testing.assert_array_equal(got['context'], np.asarray(emb[i], np.float32))
      np.testing.assert_array_equal(got['context_mask'], np.asarray(mask[i]))


def test_a_rerun_skips_finished_samples(made, dataset, pipe):
  items, folder, _ = made
  before = (folder / 'index.json').read_text()
  again = run(items, pipe, folder)
  assert again.written == 0 and again.already_done == 6
  assert (folder / 'index.json').read_text() == before
  with pytest.raises(UsageError, match='frame_rate'):
    run(items, pipe, folder, frame_rate=12.0)


def test_a_crash_leaves_no_partial_record_and_the_rerun_completes(made, pipe, tmp_path,
                                                                  monkeypatch):
  items, folder, _ = made
  target = tmp_path / 'crash'
  calls = {'n': 0}
  real = data.Encoders.encode_video

  def failing(self, pixels, keys):
    calls['n'] += 1
    if calls['n'] == 2:
      raise KeyboardInterrupt  # Ctrl-C in the middle of the second batch
    return real(self, pixels, keys)

  monkeypatch.setattr(data.Encoders, 'encode_video', failing)
  with pytest.raises(KeyboardInterrupt):
    run(items, pipe, target)
  monkeypatch.undo()
  index = records.read_index(target)
  assert len(index.samples) == 2 and len(index.shards) == 1
  assert sorted(f.name for f in target.iterdir()) == ['.lock', 'index.json',
                                                      records.shard_name(0)]
  stale = target / f".{records.shard_name(1)}.x1y2.tmp"  # what a killed run leaves behind:
  stale.write_bytes(b'partial')  # a temporary shard, and a complete shard the index does not
  (target / records.shard_name(1)).write_bytes(b'orphan')  # name yet (both replaced)
  done = run(items, pipe, target)
  assert done.already_done == 2 and done.written == 4 and not stale.exists()
  assert records.read_index(target).shards[1]['records'] == 2
  a, b = data.CachedSamples(folder), data.CachedSamples(target)
  key = {s['key']: i for i, s in enumerate(a.index.samples)}
  assert sorted(key) == sorted(s['key'] for s in b.index.samples)
  for j, s in enumerate(b.index.samples):
    np.testing.assert_array_equal(b[j]['latents'], a[key[s['key']]]['latents'])


def test_one_writer_per_folder(made, pipe, tmp_path):
  import fcntl
  items, _, _ = made
  (tmp_path / 'busy').mkdir()
  with open(tmp_path / 'busy' / '.lock', 'w') as f:
    fcntl.flock(f, fcntl.LOCK_EX)  # another run holds the folder
    with pytest.raises(UsageError, match='being written by another preprocess run'):
      run(items[:1], pipe, tmp_path / 'busy')


def test_strict_refuses_the_first_bad_input(dataset, pipe, tmp_path):
  items, problems = data.list_items(dataset / 'dataset.jsonl', caption_column='text',
                                    media_column='path')
  with pytest.raises(DataError, match='empty caption'):
    run(items, pipe, tmp_path / 's', problems=problems, strict=True)
  bad = [i for i in items if i.media.name == 'corrupt.mp4']
  with pytest.raises(DataError, match='corrupt.mp4: unreadable video'):
    run(bad, pipe, tmp_path / 's', strict=True)


def test_posterior_draws_follow_the_trainers_formula(pipe):
  """latents='sample': normalise(mean + exp(clip(logvar, -30, 20) / 2) * N(0, 1)) with the
  uniform log-variance channel, each row keyed by its sample key; 'mean' is the mean."""
  x = np.random.default_rng(0).uniform(-1, 1, (2, 1, 64, 64, 3)).astype(np.float32)
  enc = data.Encoders(pipe, latents='sample', max_sequence_length=SEQ, batch_size=2, seed=3)
  got = enc.encode_video(x, ['k1', 'k2'])
  moments = np.asarray(encode_lib._moments(*nnx.split(pipe.vae), jnp.asarray(x)))
  mean, logvar = moments[..., :8], moments[..., 8:9]
  for i, k in enumerate(['k1', 'k2']):
    s = encode_lib.sample_seed(f"3:{k}")
    eps = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.key(0), s), mean.shape[1:]))
    z = mean[i] + np.exp(0.5 * np.clip(logvar[i], -30, 20)) * eps
    want = np.asarray(pipe.vae.normalize(jnp.asarray(z)))
    np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)
  assert np.abs(got[0] - got[1]).max() > 0
  np.testing.assert_array_equal(got, enc.encode_video(x, ['k1', 'k2']))  # reproducible
  other = data.Encoders(pipe, latents='sample', max_sequence_length=SEQ, batch_size=2, seed=4)
  assert np.abs(other.encode_video(x, ['k1', 'k2']) - got).max() > 0


def test_an_image_folder_goes_end_to_end_with_references(pipe, tmp_path):
  """A folder of images + .txt captions; and a listing with IC-LoRA reference videos."""
  imgs = tmp_path / 'imgs'
  imgs.mkdir()
  for i, (w, h) in enumerate([(64, 64), (200, 150), (50, 90)]):
    write_image(imgs / f"im{i}.png", w, h, seed=i)
    (imgs / f"im{i}.txt").write_text(f"picture number {i}\n")
  write_image(imgs / 'nocap.png', 64, 64)
  items, problems = data.list_items(imgs)
  assert [str(p) for p in problems] == ['nocap.png: no caption file nocap.txt']
  summary = run(items, pipe, tmp_path / 'imgcache', problems=problems)
  assert summary.total == 3
  loader = data.BatchLoader(tmp_path / 'imgcache', 2, seed=0, process_index=0, process_count=1)
  b = next(iter(loader))
  assert b['latents'].shape == (2, 1, 2, 2, 8) and set(b['frame_rate']) == {1.0}

  vids = tmp_path / 'vids'
  vids.mkdir()
  write_clip(vids / 't.mp4', 9, 96, 64, 25)
  write_clip(vids / 'r.mp4', 9, 96, 64, 25, seed=5)
  write_clip(vids / 'small.mp4', 9, 64, 64, 25, seed=6)
  (vids / 'list.csv').write_text('caption,media_path,control\n"a, b",t.mp4,r.mp4\n'
                                 'x,t.mp4,small.mp4\n')
  items, problems = data.list_items(vids / 'list.csv', reference_column='control')
  assert len(items) == 2 and not problems and items[0].caption == 'a, b'
  summary = run(items, pipe, tmp_path / 'refcache')
  assert summary.total == 1 and 'small.mp4 is 64x64' in str(summary.problems[0])
  batch = next(iter(data.BatchLoader(tmp_path / 'refcache', 1, process_index=0,
                                     process_count=1)))
  ref = media.to_bucket(media.read_clip(vids / 'r.mp4', 9).frames,
                        data.parse_buckets('96x64x9')[0])
  x = jnp.asarray(np.stack([ref, ref]))  # the run's batch of 2, padded by repetition
  want = pipe.vae.normalize(pipe.vae.encode(x)).astype(jnp.float32)
  np.testing.assert_array_equal(batch['reference_latents'][0], np.asarray(want[0]))
  assert np.abs(batch['reference_latents'] - batch['latents']).max() > 0


def test_decoding_the_cache_writes_what_the_vae_decodes(made, pipe, tmp_path):
  _, folder, _ = made
  from PIL import Image
  from ltx_jax import video_io
  files = data.decode_samples(folder, pipe, tmp_path / 'dec')
  samples = data.CachedSamples(folder)
  assert [f.suffix for f in files] == [
      '.mp4' if s['frames'] > 1 else '.png' for s in samples.index.samples]
  for f, s in zip(files, samples.index.samples):
    if f.suffix == '.mp4':
      info = video_io.read_mp4_info(f)
      assert (info['frames'], info['width'], info['height']) == (9, 96, 64)
      assert info['fps'] == s['fps']
  want = pipe.decode(samples[0]['latents'][None], 0.05, 0.025)[0, 0]
  np.testing.assert_array_equal(np.asarray(Image.open(files[0])), want)
  other = tiny_pipeline()
  other.vae.latents_std.set_value(jnp.ones(8))
  with pytest.raises(DataError, match='preprocess the data again'):
    data.decode_samples(folder, other, tmp_path / 'dec2')


def _cli(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', 'ltx_jax.preprocess', '--config',
                         str(ROOT / 'configs/preprocess.py:smoke'), *args],
                        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                        env={'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(ROOT),
                             'PATH': '/usr/bin:/bin', 'LTX_JAX_COMPILATION_CACHE': '0'})


def test_the_command_exit_codes(dataset, tmp_path):
  r = _cli(f'--config.input={dataset / "dataset.jsonl"}', '--config.buckets=64x64x10')
  assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith(
      "error: config.buckets: '64x64x10'")
  listing = tmp_path / 'only_bad.json'
  listing.write_text(json.dumps([{'caption': '', 'media_path': 'x.mp4'},
                                 {'caption': 'y', 'media_path': 'y.xyz'}]))
  r = _cli(f'--config.input={listing}')
  assert r.returncode == 1 and 'nothing usable' in r.stderr.splitlines()[-1]
  with pytest.raises(UsageError, match="caption_column='caption' is not a column"):
    data.list_items(dataset / 'dataset.jsonl')


_DEVICES_SCRIPT = """
import sys
import numpy as np
from flax import nnx
import jax, jax.numpy as jnp
sys.path.insert(0, 'tests')
from test_data_preprocess import tiny_pipeline
from ltx_jax import data
from ltx_jax.data import encode as E
pipe = tiny_pipeline()
x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 64, 64, 3)).astype(np.float32)
enc = data.Encoders(pipe, latents='sample', max_sequence_length=16, batch_size=2)
got = enc.encode_video(x, ['a', 'b', 'c'])
graph, state = nnx.split(pipe.vae)
one = jax.devices()[0]
want = []
for rows, keys in ((x[:2], ['a', 'b']), (x[[2, 2]], ['c', 'c'])):
  m = E._moments(graph, jax.device_put(state, one), jax.device_put(jnp.asarray(rows), one))
  seeds = jnp.asarray([E.sample_seed(f'0:{k}') for k in keys], jnp.uint32)
  want.append(np.asarray(pipe.vae.normalize(E._draw(m, seeds, 8, 'uniform'))))
assert len(enc.devices) == 2 and enc.batch_size == 2, (enc.devices, enc.batch_size)
np.testing.assert_array_equal(got, np.concatenate(want)[:3])
print('ok')
"""


def test_batches_are_split_over_the_local_devices():
  """Two (simulated) devices: rows split over them, weights replicated; the same numbers as
  one device."""
  r = subprocess.run([sys.executable, '-c', _DEVICES_SCRIPT], capture_output=True, text=True,
                     timeout=600, cwd=ROOT,
                     env={'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin',
                          'XLA_FLAGS': '--xla_force_host_platform_device_count=2'})
  assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stderr[-2000:]


def test_videos_resampled_to_a_frame_rate(made, dataset, pipe, tmp_path):
  """frame_rate=12 on a 24 fps clip takes source frames 0, 2, ..., 16."""
  items = [i for i in made[0] if i.media.name == 'wide.mp4'][:1]
  summary = run(items, pipe, tmp_path / 'fps', frame_rate=12.0)
  assert summary.total == 1
  samples = data.CachedSamples(tmp_path / 'fps')
  assert samples.index.samples[0]['fps'] == 12.0
  frames = media.read_clip(dataset / 'wide.mp4', 20).frames[0:17:2]
  pixels = media.to_bucket(frames, data.parse_buckets('96x64x9')[0])
  x = jnp.asarray(np.stack([pixels, pixels]))
  want = pipe.vae.normalize(pipe.vae.encode(x)).astype(jnp.float32)
  np.testing.assert_array_equal(samples[0]['latents'], np.asarray(want[0]))


def test_the_command_runs_a_listing_into_the_default_folder(dataset, pipe, monkeypatch, capsys):
  """preprocess_run.run, the command's body, with the tiny models in place of config.model."""
  from ltx_jax.cli import preprocess_run
  monkeypatch.setattr(preprocess_run, '_load', lambda c: pipe)
  listing = dataset / 'images.json'
  listing.write_text(json.dumps([{'caption': 'a tall image', 'media_path': 'tall.png'},
                                 {'caption': 'a photo', 'media_path': 'photo.jpg'},
                                 {'caption': 'gone', 'media_path': 'missing.png'}]))
  c = preprocess_run.base_config('smoke')
  c.input, c.buckets, c.max_sequence_length, c.batch_size = str(listing), BUCKETS, SEQ, 2
  c.progress = False
  assert preprocess_run.run(c) == 2
  err = capsys.readouterr().err
  assert '2 samples written' in err and 'missing.png: no such file' in err
  assert records.read_index(dataset / '.precomputed').params['latents'] == 'sample'
  c.buckets = '96x64x9'  # other parameters into the same folder: refused
  with pytest.raises(UsageError, match="holds data made with buckets="):
    preprocess_run.run(c)


def test_encoders_load_from_a_diffusers_folder(tmp_path):
  """load_encoders: VAE, T5 and tokenizer of a source (no transformer), with the release."""
  pytest.importorskip('diffusers')
  from builders import tiny_repo
  tiny_repo(tmp_path / 'repo')
  a = data.load_encoders(str(tmp_path / 'repo'), dtype='float32', allow_custom=True)
  assert a.transformer is None and a.vae is not None and a.release
  b = data.load_encoders(str(tmp_path / 'repo'), dtype='bfloat16', allow_custom=True)
  ia = data.Encoders(a).identities()
  assert ia == data.Encoders(b).identities()  # the same weights, whichever compute dtype
  assert ia['vae'].release == a.release
  with pytest.raises(UsageError, match='bucket 100x64x9 does not fit this VAE'):
    data.preprocess([], data.Encoders(a), tmp_path / 'out',
                    data.PreprocessConfig(data.parse_buckets('100x64x9', spatial=1, temporal=1)))
