"""Stand-ins for the hub models, built from configs and saved with `save_pretrained`: tiny ones
(`model_name: tiny`) and random-init ones of the real architectures' sizes (`model_name: random-base`:
ParsBERT's BERT-base with its 100k vocab, HuBERT-base), for timing the full-size grid without a hub.

Smoke runs and tests load them through the very `from_pretrained(path)` code that loads the real hub
ids on a cluster, so the whole path is exercised without a model hub. Built once per spec into the
cache dir; building into a temp dir and renaming makes concurrent jobs safe.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import torch

from hw5.io import share_like_umask

# 12 layers x 12 heads like bert-base (so freeze9 / first9 / prune50 mean the same), width 48 so a
# smoke epoch costs seconds on 2 CPU cores.
TINY_BERT = dict(vocab_size=4000, hidden_size=48, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=96, max_position_embeddings=512, type_vocab_size=2)
# ParsBERT (HooshvareLab/bert-base-parsbert-uncased) is BERT-base with a 100k WordPiece vocab; ours is
# trained on FarsTail (fewer pieces), the embedding table keeps ParsBERT's 100k rows.
BERT_BASE = dict(vocab_size=100_000, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)
# transformers' HubertConfig defaults are HuBERT-base (facebook/hubert-base-ls960's shape: group-norm CNN,
# 12 x 768 transformer, LayerDrop 0.1, SpecAugment 0.05).
HUBERT_BASE: dict = {}

# HuBERT-shaped: the real 320x downsampling (kernels 10-8-8, strides 5-8-8), group-norm CNN, tiny widths.
TINY_HUBERT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                   conv_dim=(32, 32, 32), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8),
                   feat_extract_norm="group", num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                   mask_time_prob=0.0, do_stable_layer_norm=False, layerdrop=0.0)


def _build_once(root: Path, spec: dict, build: Callable[[Path], None]) -> Path:
    """Directory `root/<name>-<spec hash>`, built by `build(tmpdir)` if it does not exist yet."""
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:8]
    final = root / f"{spec['name']}-{digest}"
    if (final / "config.json").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        build(tmp)
        share_like_umask(tmp, recursive=True)
        os.replace(tmp, final)          # atomic; loses only to an identical concurrent build
    except OSError:
        if not (final / "config.json").exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def tiny_bert(root: Path, texts: Callable[[], Iterable[str]], size: str = "tiny") -> Path:
    """A tiny (or BERT-base sized) BERT + WordPiece tokenizer trained on `texts()` (FarsTail train),
    random weights (seed 0), saved to a directory."""
    shape = TINY_BERT if size == "tiny" else BERT_BASE
    spec = {"name": "tiny-bert" if size == "tiny" else "random-bert-base", **shape, "tokenizer": "wordpiece-lowercase"}

    def build(out: Path) -> None:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
        from transformers import BertConfig, BertModel, BertTokenizerFast
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        tok.train_from_iterator(texts(), trainers.WordPieceTrainer(
            vocab_size=shape["vocab_size"], special_tokens=special, show_progress=False))
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        fast = BertTokenizerFast(tokenizer_object=tok, do_lower_case=True)
        fast.save_pretrained(out)
        with torch.random.fork_rng():   # same tiny weights everywhere; the run's RNG stream untouched
            torch.manual_seed(0)
            rows = tok.get_vocab_size() if size == "tiny" else max(shape["vocab_size"], tok.get_vocab_size())
            BertModel(BertConfig(**{**shape, "vocab_size": rows}), add_pooling_layer=False).save_pretrained(out)
    return _build_once(root, spec, build)


def tiny_hubert(root: Path, sample_rate: int = 16000, size: str = "tiny") -> Path:
    """A tiny (or HuBERT-base sized) random-init HuBERT + its Wav2Vec2FeatureExtractor config, saved."""
    shape = TINY_HUBERT if size == "tiny" else HUBERT_BASE
    spec = {"name": "tiny-hubert" if size == "tiny" else "random-hubert-base", **shape, "sample_rate": sample_rate}

    def build(out: Path) -> None:
        from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sample_rate, padding_value=0.0,
                                 do_normalize=True, return_attention_mask=True).save_pretrained(out)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            HubertModel(HubertConfig(**shape)).save_pretrained(out)
    return _build_once(root, spec, build)
