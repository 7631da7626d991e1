"""The loader over a data folder written here (no models): order, shares, resume, damage."""

import json
import re
import shutil

import numpy as np
import pytest

from ltx_jax.data import BatchLoader, CachedSamples, epoch_plan, records
from ltx_jax.errors import DataError, UsageError

C, L, D = 4, 8, 6
SHAPES = {'64x64x9': (2, 2, 2), '96x64x9': (2, 2, 3), '64x64x1': (1, 2, 2)}


def write_folder(folder, counts, *, shard_size=5, reference=False):
  """A data folder with counts[bucket] samples per bucket; sample i's latents are all i."""
  folder.mkdir(parents=True, exist_ok=True)
  index = records.Index(folder, {'buckets': list(counts)},
                        {'vae': {'release': 'test', 'weights_sha256': 'a' * 64},
                         'text_encoder': {'release': 'test', 'weights_sha256': 'b' * 64}},
                        [], [])
  names = [b for b, n in counts.items() for _ in range(n)]
  writer = None
  for i, bucket in enumerate(names):
    if writer is None:
      writer = records.ShardWriter(folder, len(index.shards))
      pending = []
    lat = np.full(SHAPES[bucket] + (C,), i, np.float32)
    arrays = {'latents': lat, 'context': np.full((L, D), i, np.float32),
              'context_mask': (np.arange(L) < 3).astype(np.uint8)}
    if reference:
      arrays['reference_latents'] = -lat
    rec = writer.write(records.encode_record(f"k{i}", arrays))
    pending.append({'key': f"k{i}", 'bucket': bucket, 'fps': 24.0 + i, 'shard': len(index.shards),
                    'record': rec, 'latent_shape': list(lat.shape), 'caption': f"c{i}"})
    if writer.count == shard_size or i == len(names) - 1:
      index.shards.append(writer.commit())
      index.samples.extend(pending)
      writer = None
  records.write_index(index)
  return folder


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  return write_folder(tmp_path_factory.mktemp('data') / 'cache',
                      {'64x64x9': 7, '96x64x9': 4, '64x64x1': 5}, reference=True)


def ids(batch):
  return [int(v) for v in batch['latents'][:, 0, 0, 0, 0]]


def test_batches_hold_one_bucket_with_the_interface_dtypes(folder):
  loader = BatchLoader(folder, 2, seed=0, process_index=0, process_count=1)
  samples = loader.index.samples
  it = loader.iterator()
  for _ in range(loader.steps_per_epoch * 2):
    b = next(it)
    assert {samples[i]['bucket'] for i in ids(b)} == {samples[ids(b)[0]]['bucket']}
    assert b['latents'].dtype == np.float32 and b['latents'].shape[0] == 2
    assert b['context'].shape == (2, L, D) and b['context'].dtype == np.float32
    assert b['context_mask'].dtype == np.int32 and b['context_mask'][:, :3].all()
    np.testing.assert_array_equal(b['reference_latents'], -b['latents'])
    np.testing.assert_array_equal(b['frame_rate'], [24.0 + i for i in ids(b)])
    np.testing.assert_array_equal(b['context'][:, 0, 0], ids(b))


def test_same_seed_same_order_other_seed_other_order(folder):
  def order(seed, epochs=2):
    loader = BatchLoader(folder, 3, seed=seed, process_index=0, process_count=1)
    it = loader.iterator()
    return [ids(next(it)) for _ in range(loader.steps_per_epoch * epochs)]
  a = order(5)
  assert a == order(5)
  assert a != order(6)
  spe = len(a) // 2
  assert a[:spe] != a[spe:]  # each epoch is shuffled anew


@pytest.mark.parametrize('remainder', ['wrap', 'drop'])
def test_two_processes_see_disjoint_shares_covering_the_set(tmp_path, remainder):
  # Bucket sizes divisible by the global batch (2 x 2): every sample exactly once per epoch.
  f = write_folder(tmp_path / 'even', {'64x64x9': 8, '64x64x1': 4})
  loaders = [BatchLoader(f, 2, seed=3, process_index=p, process_count=2, remainder=remainder)
             for p in range(2)]
  assert loaders[0].steps_per_epoch == loaders[1].steps_per_epoch == 3
  its = [l.iterator() for l in loaders]
  for epoch in range(2):
    seen = [[], []]
    for _ in range(3):
      batches = [next(it) for it in its]
      assert batches[0]['latents'].shape == batches[1]['latents'].shape  # one bucket per step
      for p in range(2):
        seen[p] += ids(batches[p])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(12)), epoch


def test_wrap_covers_every_sample_and_drop_drops_the_rest(folder):
  n = len(CachedSamples(folder))
  buckets = [s['bucket'] for s in records.read_index(folder).samples]
  wrap = epoch_plan(buckets, 4, seed=1, epoch=0, remainder='wrap')
  assert set(np.concatenate(wrap).tolist()) == set(range(n))
  assert all(len({buckets[i] for i in b}) == 1 and len(b) == 4 for b in wrap)
  drop = epoch_plan(buckets, 4, seed=1, epoch=0, remainder='drop')
  assert len(drop) == 7 // 4 + 4 // 4 + 5 // 4
  assert len(set(np.concatenate(drop).tolist())) == len(drop) * 4


@pytest.mark.parametrize('stop', [1, 4, 9])  # within the first epoch, at its end, in the third
def test_restoring_a_state_continues_with_the_exact_next_batch(folder, stop):
  loader = BatchLoader(folder, 2, seed=7, process_index=1, process_count=2)
  it = loader.iterator()
  for _ in range(stop):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
  want = [next(it) for _ in range(3)]
  fresh = BatchLoader(folder, 2, seed=7, process_index=1, process_count=2, num_threads=0)
  it2 = fresh.iterator(state)
  got = [next(it2) for _ in range(3)]
  for g, w in zip(got, want):
    for k in w:
      np.testing.assert_array_equal(g[k], w[k])
  assert it2.get_state()['next_step'] == stop + 3
  it.set_state(state)  # an iterator can also be rewound in place
  np.testing.assert_array_equal(next(it)['latents'], want[0]['latents'])


def test_a_state_from_another_run_is_refused(folder):
  state = BatchLoader(folder, 2, seed=1, process_index=0, process_count=1).iterator().get_state()
  with pytest.raises(UsageError, match='seed=1'):
    BatchLoader(folder, 2, seed=2, process_index=0, process_count=1).iterator(state)
  with pytest.raises(UsageError, match='global_batch_size=2'):
    BatchLoader(folder, 4, seed=1, process_index=0, process_count=1).iterator(state)
  with pytest.raises(UsageError, match='not a loader state'):
    BatchLoader(folder, 2, seed=1, process_index=0, process_count=1).iterator({'step': 3})


def test_latents_from_another_vae_are_refused(folder):
  other = records.Identity('ltxv-2b-0.9.8-distilled', 'c' * 64)
  with pytest.raises(DataError, match="made by the vae of release 'test'"):
    BatchLoader(folder, 2, process_index=0, process_count=1, vae=other)
  same = records.Identity('test', 'a' * 64)
  BatchLoader(folder, 2, process_index=0, process_count=1, vae=same)


def test_bad_loader_arguments(folder):
  with pytest.raises(UsageError, match='batch_size=0'):
    BatchLoader(folder, 0, process_index=0, process_count=1)
  with pytest.raises(UsageError, match="remainder='pad'"):
    BatchLoader(folder, 2, process_index=0, process_count=1, remainder='pad')
  with pytest.raises(UsageError, match='process_index=2'):
    BatchLoader(folder, 2, process_index=2, process_count=2)
  with pytest.raises(DataError, match='no bucket holds a full global batch'):
    BatchLoader(folder, 8, process_index=0, process_count=1, remainder='drop')


def _copy(folder, tmp_path):
  dst = tmp_path / 'copy'
  shutil.copytree(folder, dst)
  return dst


def test_damaged_index_and_shards_name_the_file(folder, tmp_path):
  f = _copy(folder, tmp_path)
  shard = f / records.shard_name(1)
  data = bytearray(shard.read_bytes())
  shard.write_bytes(bytes(data[:len(data) // 2]))  # truncated
  with pytest.raises(DataError, match=re.escape(f"damaged shard '{shard}'")):
    CachedSamples(f)
  shard.unlink()
  with pytest.raises(DataError, match=re.escape(f"missing shard '{shard}'")):
    CachedSamples(f)
  (f / 'index.json').write_text('{"format": "ltx_jax.data/1", "params": {}, "mod')
  with pytest.raises(DataError, match=re.escape(f"damaged index '{f / 'index.json'}'")):
    CachedSamples(f)
  (f / 'index.json').write_text(json.dumps({'format': 'other'}))
  with pytest.raises(DataError, match="format 'other'"):
    CachedSamples(f)
  with pytest.raises(DataError, match='not a preprocessed data folder'):
    CachedSamples(tmp_path)


def test_a_flipped_byte_in_a_record_is_caught_when_read(folder, tmp_path):
  f = _copy(folder, tmp_path)
  shard = f / records.shard_name(0)
  data = bytearray(shard.read_bytes())
  payload = records.encode_record('k0', CachedSamples(folder)[0] | {})
  at = bytes(data).find(payload[200:232])  # inside record 0's latents (stored uncompressed)
  assert at > 0
  data[at + 5] ^= 0x40
  shard.write_bytes(bytes(data))
  samples = CachedSamples(f)
  with pytest.raises(DataError, match=re.escape(f"damaged shard '{shard}': record 0")):
    samples[0]


def test_records_round_trip_and_store_bf16_values_in_half_the_bytes():
  import ml_dtypes
  rng = np.random.default_rng(0)
  f32 = rng.standard_normal((3, 4, 5, 8)).astype(np.float32)
  bf = f32.astype(ml_dtypes.bfloat16).astype(np.float32)  # values a bf16 model produces
  mask = (np.arange(16) < 5).astype(np.uint8)
  for lat in (f32, bf):
    data = records.encode_record('k', {'latents': lat, 'context': bf[0, 0], 'context_mask': mask})
    key, arrays = records.decode_record(data, 'here')
    assert key == 'k'
    for name, want in (('latents', lat), ('context', bf[0, 0]), ('context_mask', mask)):
      assert arrays[name].dtype == want.dtype
      np.testing.assert_array_equal(arrays[name], want)
  small = records.encode_record('k', {'latents': bf})
  assert len(small) < len(records.encode_record('k', {'latents': f32})) - bf.size
  with pytest.raises(DataError, match='damaged record in here'):
    records.decode_record(small[:-10], 'here')
