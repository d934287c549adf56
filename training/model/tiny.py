"""An offline stand-in for FLAN-T5: a SentencePiece tokenizer trained on the chat and a small T5.

The model hub is unreachable on our machines, and the tests and the demo must run anywhere.
Both pieces are saved with ``save_pretrained`` so that the rest of the project loads them with
``AutoTokenizer`` / ``AutoModelForSeq2SeqLM`` exactly as it would load ``google/flan-t5-base``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as spm_model
from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

# T5's fixed layout: <pad>=0 doubles as the decoder start token, </s>=1, <unk>=2.
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


@dataclass(frozen=True)
class TinyShape:
    """Sizes of the offline model: small enough to learn a chat in a few CPU minutes."""

    vocab_size: int = 2000
    d_model: int = 128
    d_ff: int = 512
    num_layers: int = 2
    num_decoder_layers: int = 2
    num_heads: int = 4
    d_kv: int = 32


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> T5Tokenizer:
    """Train a unigram SentencePiece model on chat text and wrap it as a T5 tokenizer.

    The vocabulary comes from the chat itself, so names, slang and emoji become single
    pieces. ``hard_vocab_limit=False`` lets a small chat yield a smaller vocabulary instead of
    failing. Ids follow T5 (pad 0, eos 1, unk 2, no bos) so generation works unchanged.
    """
    sentences = [t.replace("\n", " ").strip() for t in texts]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError("cannot train a tokenizer on no text")
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=proto,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        pad_id=PAD_ID,
        eos_id=EOS_ID,
        unk_id=UNK_ID,
        bos_id=-1,
        character_coverage=1.0,
        byte_fallback=False,
        input_sentence_size=200_000,
        shuffle_input_sentence=False,  # deterministic: same chat, same vocabulary
        num_threads=1,
        minloglevel=2,
    )
    model = spm_model.ModelProto()
    model.ParseFromString(proto.getvalue())
    vocab = [(piece.piece, piece.score) for piece in model.pieces]
    # Special pieces carry score 0 in SentencePiece; the unigram model wants them unreachable.
    vocab = [(p, s if i > UNK_ID else 0.0) for i, (p, s) in enumerate(vocab)]
    return T5Tokenizer(
        vocab=vocab,
        _spm_precompiled_charsmap=model.normalizer_spec.precompiled_charsmap,
        extra_ids=0,
    )


def build_model(
    tokenizer: T5Tokenizer, shape: TinyShape | None = None, seed: int = 0
) -> T5ForConditionalGeneration:
    """A randomly initialised T5 sized by ``shape`` around ``tokenizer``'s vocabulary."""
    import torch

    shape = shape or TinyShape()
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=shape.d_model,
        d_ff=shape.d_ff,
        d_kv=shape.d_kv,
        num_layers=shape.num_layers,
        num_decoder_layers=shape.num_decoder_layers,
        num_heads=shape.num_heads,
        feed_forward_proj="gated-gelu",  # as in FLAN-T5 (T5 v1.1)
        tie_word_embeddings=False,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )
    return T5ForConditionalGeneration(config)
