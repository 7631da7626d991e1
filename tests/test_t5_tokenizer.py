"""T5 tokenizer: the prompt convention over sentencepiece, and vocabularies carried by GGUF files."""

import io
import logging

import gguf
import numpy as np
import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from ltx_jax.models.t5 import load_tokenizer

TEXT = """A cat walks slowly across a sunlit wooden floor, its tail held high.
The camera pans left to reveal a quiet street at dusk with glowing lamps.
Waves crash against black volcanic rocks while seagulls circle overhead.
A woman in a red coat opens an umbrella as heavy rain begins to fall.
Close-up of hands kneading dough on a floured kitchen table.
Ein Hund läuft über die grüne Wiese. Café, naïve façade, jalapeño, Zürich.
東京の夜景、ネオンが光る。 Снег падает на тихий город.
Numbers 12345 and symbols: #, %, &, (brackets) and "quotes".
""".splitlines()

PROMPTS = [
    '',
    'A cat walks across the street.',
    '   A   dog   runs   on   the   beach   ',
    'Café naïve 東京の夜景 Снег ☃ 🚀',
    ' '.join(TEXT) * 3,  # far beyond any max_length below
    'unseen wordz xqzj with rare letters',
]


@pytest.fixture(scope='module')
def spiece(tmp_path_factory):
  """A small unigram model with T5's special ids, written as spiece.model in a diffusers repo."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(TEXT * 20), model_writer=model, vocab_size=150,
      model_type='unigram', pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0,
      pad_piece='<pad>', eos_piece='</s>', unk_piece='<unk>', minloglevel=2)
  repo = tmp_path_factory.mktemp('repo')
  (repo / 'tokenizer').mkdir()
  path = repo / 'tokenizer' / 'spiece.model'
  path.write_bytes(model.getvalue())
  return path


def expected(sp, prompt, max_length):
  pieces = sp.encode(prompt, out_type=int)[:max_length - 1] + [1]
  ids = pieces + [0] * (max_length - len(pieces))
  return ids, [1] * len(pieces) + [0] * (max_length - len(pieces))


@pytest.mark.parametrize('max_length', [1, 8, 128, 256])
def test_convention(spiece, max_length):
  sp = spm.SentencePieceProcessor(model_file=str(spiece))
  ids, mask = load_tokenizer(spiece)(PROMPTS, max_length=max_length)
  assert ids.dtype == np.int32 and mask.dtype == np.int32
  assert ids.shape == mask.shape == (len(PROMPTS), max_length)
  for row, prompt in enumerate(PROMPTS):
    want_ids, want_mask = expected(sp, prompt, max_length)
    assert ids[row].tolist() == want_ids, prompt
    assert mask[row].tolist() == want_mask, prompt


def test_hand_checked(spiece):
  tok = load_tokenizer(spiece)
  ids, mask = tok('', max_length=4)
  assert ids.tolist() == [[1, 0, 0, 0]] and mask.tolist() == [[1, 0, 0, 0]]
  ids, mask = tok(['A cat'], max_length=6)
  n = int(mask.sum())
  assert ids[0, n - 1] == 1 and (ids[0, n:] == 0).all() and (ids[0, :n - 1] > 2).all()
  # sentencepiece folds runs of spaces, so space padding does not change the tokens
  assert (tok('  A   cat  ', max_length=6)[0] == ids).all()


def test_truncation_warning_names_dropped_words(spiece, caplog):
  tok = load_tokenizer(spiece)
  with caplog.at_level(logging.WARNING):
    tok('A cat walks slowly across a sunlit wooden floor', max_length=5)
  assert len(caplog.records) == 1
  message = caplog.records[0].getMessage()
  assert 'wooden floor' in message and 'A cat' not in message
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    tok('A cat', max_length=128)
  assert not caplog.records


def test_sources(spiece):
  want = load_tokenizer(spiece)(PROMPTS, max_length=32)
  for source in (spiece.parent, spiece.parent.parent, str(spiece)):
    got = load_tokenizer(source)(PROMPTS, max_length=32)
    assert all((g == w).all() for g, w in zip(got, want))


def test_bad_source(tmp_path):
  with pytest.raises(FileNotFoundError, match='no T5 tokenizer found'):
    load_tokenizer(tmp_path / 'nowhere')


def write_vocab_gguf(path, model_file, extra_ids=4, padded_vocab=None, charsmap=True):
  """A T5 GGUF carrying a vocabulary the way llama.cpp's converter writes one."""
  proto = sp_pb2.ModelProto()
  proto.ParseFromString(model_file.read_bytes())
  tokens = [p.piece for p in proto.pieces]
  scores = [p.score for p in proto.pieces]
  types = [int(p.type) for p in proto.pieces]
  for i in range(extra_ids):  # transformers' <extra_id_N>, user-defined
    tokens.append(f'<extra_id_{extra_ids - 1 - i}>')
    scores.append(0.0)
    types.append(gguf.TokenType.USER_DEFINED)
  for i in range(len(tokens), padded_vocab or len(tokens)):
    tokens.append(f'[PAD{i}]')
    scores.append(0.0)
    types.append(gguf.TokenType.UNUSED)
  w = gguf.GGUFWriter(str(path), 't5encoder')
  w.add_tokenizer_model('t5')
  w.add_token_list(tokens)
  w.add_token_scores(scores)
  w.add_token_types(types)
  w.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)
  w.add_remove_extra_whitespaces(proto.normalizer_spec.remove_extra_whitespaces)
  if charsmap:
    w.add_precompiled_charsmap(proto.normalizer_spec.precompiled_charsmap)
  w.add_eos_token_id(1)
  w.add_pad_token_id(0)
  w.add_unk_token_id(2)
  w.add_tensor('enc.output_norm.weight', np.ones(4, np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def test_gguf_vocabulary(spiece, tmp_path):
  path = tmp_path / 't5.gguf'
  write_vocab_gguf(path, spiece, padded_vocab=200)
  sp = spm.SentencePieceProcessor(model_file=str(spiece))
  tok = load_tokenizer(path)
  assert tok.vocab_size == 200
  prompts = PROMPTS + TEXT + [t.upper() for t in TEXT] + ['ｆｕｌｌｗｉｄｔｈ ① ﬁ']
  for prompt in prompts:  # the rebuilt model tokenizes exactly as the original
    assert tok.sp.encode(prompt, out_type=int) == sp.encode(prompt, out_type=int), prompt
  ids, mask = tok(prompts, max_length=64)
  want = load_tokenizer(spiece)(prompts, max_length=64)
  assert (ids == want[0]).all() and (mask == want[1]).all()


def test_gguf_without_vocabulary(tmp_path):
  w = gguf.GGUFWriter(str(tmp_path / 'weights.gguf'), 't5encoder')
  w.add_tensor('enc.output_norm.weight', np.ones(4, np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  with pytest.raises(ValueError, match='no tokenizer vocabulary'):
    load_tokenizer(tmp_path / 'weights.gguf')
