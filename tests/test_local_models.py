"""model_name: random-base builds ParsBERT's and HuBERT-base's shapes from configs, with no hub."""
from __future__ import annotations

import dataclasses

import pytest

from hw5.config import resolve_config
from hw5.data.farstail import load_farstail
from hw5.models.hub import from_pretrained


@pytest.mark.slow
def test_random_base_models_have_the_real_architectures_sizes(data_dir):
    from transformers import AutoModel, AutoTokenizer
    from hw5.tasks import nli, ser
    cfg = resolve_config("nli-full")
    bert_cfg = dataclasses.replace(cfg, model_name="random-base")
    path = nli.model_path(bert_cfg, load_farstail(data_dir))
    bert = from_pretrained(AutoModel, path, bert_cfg, add_pooling_layer=False)
    assert (bert.config.vocab_size, bert.config.hidden_size, bert.config.num_hidden_layers) == (100_000, 768, 12)
    assert sum(p.numel() for p in bert.parameters()) == 162_250_752          # ParsBERT-base less its pooler
    assert len(from_pretrained(AutoTokenizer, path, bert_cfg)) > 4000         # a WordPiece trained on FarsTail
    scfg = resolve_config("ser-mean")
    hubert_cfg = dataclasses.replace(scfg, model_name="random-base")
    hubert = from_pretrained(AutoModel, ser.model_path(hubert_cfg), hubert_cfg)
    assert (hubert.config.hidden_size, hubert.config.num_hidden_layers, hubert.config.conv_dim[-1]) == (768, 12, 512)
    assert sum(p.numel() for p in hubert.parameters()) == 94_371_712          # HuBERT-base
