"""T5 prompt tokenization with sentencepiece, following the convention LTX-Video's pipelines use.

A prompt becomes its sentencepiece ids, truncated to `max_length - 1`, then `</s>`, then `<pad>`
up to `max_length`; the mask is 1 on the real tokens (including `</s>`). The vocabulary comes from
`spiece.model` (diffusers' `tokenizer/` folder) or from a GGUF file that carries it
(`tokenizer.ggml.*`, as llama.cpp's converter writes for T5).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

logger = logging.getLogger(__name__)

PAD_ID, EOS_ID = 0, 1  # T5's fixed ids for <pad> and </s>


class T5Tokenizer:
  """`tok(prompts, max_length=N) -> (ids int32 [B, N], mask int32 [B, N])` as numpy."""

  def __init__(self, processor: spm.SentencePieceProcessor):
    for want, got, piece in ((PAD_ID, processor.pad_id(), '<pad>'),
                             (EOS_ID, processor.eos_id(), '</s>')):
      if got != want:
        raise ValueError(f"not a T5 vocabulary: {piece} has id {got}, T5 expects {want}")
    self.sp = processor

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def __call__(self, prompts: str | Sequence[str], max_length: int = 128
               ) -> tuple[np.ndarray, np.ndarray]:
    if max_length < 1:
      raise ValueError(f"max_length must be at least 1 (room for </s>), got {max_length}")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    ids = np.full((len(prompts), max_length), PAD_ID, np.int32)
    mask = np.zeros((len(prompts), max_length), np.int32)
    for row, prompt in enumerate(prompts):
      pieces = self.sp.encode(prompt, out_type=int)
      kept, dropped = pieces[:max_length - 1], pieces[max_length - 1:]
      if dropped:
        logger.warning("prompt %d is longer than %d tokens; dropped: %r", row, max_length,
                       self.sp.decode(dropped))
      n = len(kept) + 1
      ids[row, :n] = kept + [EOS_ID]
      mask[row, :n] = 1
    return ids, mask


def _processor_from_gguf(path: Path) -> spm.SentencePieceProcessor:
  """Rebuilds a unigram sentencepiece model from the vocabulary a GGUF file carries."""
  from ltx_jax.weights.gguf_io import GGUFStore

  store = GGUFStore(path)
  tokens = store.get('tokenizer.ggml.tokens')
  if not tokens:
    raise ValueError(f"{path}: this GGUF file carries no tokenizer vocabulary "
                     "(tokenizer.ggml.tokens); pass the spiece.model file instead")
  kind = store.get('tokenizer.ggml.model')
  if kind not in (None, 't5'):
    raise ValueError(f"{path}: tokenizer.ggml.model is {kind!r}, expected 't5' (unigram)")
  scores = store.get('tokenizer.ggml.scores') or [0.0] * len(tokens)
  # llama.cpp's token types use sentencepiece's numbering (1 normal ... 6 byte).
  types = store.get('tokenizer.ggml.token_type') or [1] * len(tokens)

  proto = sp_pb2.ModelProto()
  for piece, score, kind in zip(tokens, scores, types):
    proto.pieces.add(piece=piece, score=float(score), type=int(kind))
  unk = next((i for i, t in enumerate(types) if t == 2), 2)
  trainer = proto.trainer_spec
  trainer.model_type = sp_pb2.TrainerSpec.UNIGRAM
  trainer.vocab_size = len(tokens)
  trainer.unk_id = int(store.get('tokenizer.ggml.unknown_token_id', unk))
  trainer.eos_id = int(store.get('tokenizer.ggml.eos_token_id', EOS_ID))
  trainer.pad_id = int(store.get('tokenizer.ggml.padding_token_id', PAD_ID))
  trainer.bos_id = -1
  trainer.unk_piece, trainer.eos_piece = tokens[trainer.unk_id], tokens[trainer.eos_id]
  trainer.pad_piece = tokens[trainer.pad_id]
  norm = proto.normalizer_spec
  norm.name = 'nmt_nfkc'  # informative only: at run time only the compiled charsmap is used
  charsmap = store.get('tokenizer.ggml.precompiled_charsmap')
  if charsmap:
    norm.precompiled_charsmap = bytes(np.asarray(charsmap, np.uint8))
  norm.add_dummy_prefix = bool(store.get('tokenizer.ggml.add_space_prefix', True))
  norm.remove_extra_whitespaces = bool(
      store.get('tokenizer.ggml.remove_extra_whitespaces', True))
  norm.escape_whitespaces = True
  return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def find_spiece(source: Path) -> Path | None:
  """The spiece.model of a file, a tokenizer/ folder or the repo folder above it."""
  for candidate in (source, source / 'spiece.model', source / 'tokenizer' / 'spiece.model'):
    if candidate.is_file() and candidate.suffix == '.model':
      return candidate
  return None


def load_tokenizer(source: str | os.PathLike) -> T5Tokenizer:
  """From spiece.model, a `tokenizer/` folder, the diffusers repo folder, or a T5 .gguf file."""
  path = Path(source)
  if path.is_file() and path.suffix == '.gguf':
    return T5Tokenizer(_processor_from_gguf(path))
  spiece = find_spiece(path)
  if spiece is None:
    raise FileNotFoundError(
        f"{path}: no T5 tokenizer found; expected a spiece.model file, a folder holding one "
        "(tokenizer/ or the repo folder above it), or a .gguf file with a vocabulary")
  processor = spm.SentencePieceProcessor()
  processor.load(str(spiece))
  return T5Tokenizer(processor)
