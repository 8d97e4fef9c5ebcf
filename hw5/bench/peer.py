"""Bench rows `peer-trainer` and `peer-trainer+compile`: what a user would run instead of hw5.

`transformers.Trainer` on the bench's own random-init model and examples, at the project's batch size,
set up the way a careful user would: a dynamic-padding collator, length-grouped sampling, bf16 and
fused AdamW on CUDA, dataloader workers on CUDA, no per-step logging and no per-step NaN check (the
Trainer's `logging_nan_inf_filter` syncs the host every step). `+compile` adds `torch_compile=True`.

  NLI  the run_glue.py way: BertForSequenceClassification holding the bench model's encoder weights,
       DataCollatorWithPadding (multiples of 8 on CUDA, as run_glue pads for mixed precision)
  SER  the run_audio_classification.py way (soxan's HuBERT recipe): a frame-mean head on HubertModel
       trained from waveforms: no CNN-feature cache, the CNN frozen through requires_grad, each batch
       padded to its longest clip by Wav2Vec2FeatureExtractor.pad, cuDNN's positional conv

Timing follows the other rows: a warm-up (here one whole epoch: the sampler's shapes, compilation),
then `repeat` epochs, the median reported, in real tokens or real audio seconds (padding not counted).
The Trainer needs accelerate: the `bench` extra (`pip install -e '.[bench]'`).
"""
from __future__ import annotations

import copy
import importlib.util
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hw5.bench.timing import PathResult, peak_mb, reset_peak, sync
from hw5.device import cuda_kernel_choices


@dataclass(frozen=True)
class Peer:
    compiled: bool      # TrainingArguments(torch_compile=True): the whole model through torch.compile


PEERS = {"peer-trainer": Peer(compiled=False), "peer-trainer+compile": Peer(compiled=True)}
CUDA_WORKERS = 4        # dataloader workers on a GPU node; the CPU keeps its cores for the model


def missing_dependency() -> str | None:
    """Why the peer rows cannot run here, or None."""
    if importlib.util.find_spec("accelerate") is None:
        return "the Trainer needs accelerate: pip install -e '.[bench]'"
    return None


class FrameMeanSER(nn.Module):
    """The usual audio-classification head: HubertModel's frames averaged over the real ones, a
    dropout and a linear layer; returns the loss as Hugging Face models do."""

    def __init__(self, encoder: nn.Module, num_labels: int = 6, dropout: float = 0.1):
        super().__init__()
        self.hubert = encoder
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> dict:
        from hw5.models.ser import masked_mean
        frames = self.hubert(input_values, attention_mask=attention_mask).last_hidden_state
        if attention_mask is None:
            pooled = frames.mean(1)
        else:
            pooled = masked_mean(frames, self.hubert._get_feature_vector_attention_mask(frames.shape[1], attention_mask))
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return {"loss": loss, "logits": logits}


def peer_model(work) -> nn.Module:
    """A fresh module holding the bench model's current encoder weights (the bench's own model is
    left as it is)."""
    device = next(work.model.parameters()).device
    if work.task == "nli":
        from transformers import BertForSequenceClassification
        encoder = work.model.encoder
        config = copy.deepcopy(encoder.config)
        config.num_labels = 3
        model = BertForSequenceClassification(config)
        model.set_attn_implementation("sdpa")    # the stock attention, not the project's
        model.bert.load_state_dict(encoder.state_dict(), strict=False)    # the pooler is the head's own
        return model.to(device)
    from hw5.models.posconv import fast_positional_conv
    from hw5.models.ser import freeze_feature_encoder
    encoder = copy.deepcopy(work.model.encoder)
    encoder.set_attn_implementation("sdpa")      # the stock attention, not the project's
    fast_positional_conv(encoder, "conv")       # stock HubertModel: the conv1d (cuDNN on CUDA)
    freeze_feature_encoder(encoder)             # what HF's freeze_feature_encoder() does
    return FrameMeanSER(encoder).to(device)


def peer_items(work) -> list[dict]:
    """One dataset item per example as a preprocessing map would leave it: token id lists (NLI,
    truncated at the study's max_length) or a float32 waveform (SER, cropped as the study crops)."""
    items = []
    for i, length in enumerate(work.lengths):
        one = work.make_batch([i], length)
        if work.task == "nli":
            items.append({key: x[0].tolist() for key, x in one.items()} | {"labels": 0})
        else:
            items.append({"input_values": one["input_values"][0].numpy(), "labels": 0})
    return items


class WaveformCollator:
    """Pads a batch of waveforms to its longest with the feature extractor (the usual recipe)."""

    def __init__(self, extractor):
        self.extractor = extractor

    def __call__(self, items: list[dict]) -> dict:
        batch = self.extractor.pad([{"input_values": x["input_values"]} for x in items], padding=True,
                                   return_attention_mask=True, return_tensors="pt")
        return {**batch, "labels": torch.tensor([x["labels"] for x in items])}


def processing_and_collator(work, device: torch.device):
    """(processing_class, data_collator): the processing class also tells group_by_length what to measure."""
    if work.task == "nli":
        from tokenizers import Tokenizer, models
        from transformers import DataCollatorWithPadding, PreTrainedTokenizerFast
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1}, "[UNK]")),
                                      pad_token="[PAD]", unk_token="[UNK]",
                                      model_input_names=["input_ids", "token_type_ids", "attention_mask"])
        return tok, DataCollatorWithPadding(tok, pad_to_multiple_of=8 if device.type == "cuda" else None)
    from transformers import Wav2Vec2FeatureExtractor
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=False, return_attention_mask=True)
    return extractor, WaveformCollator(extractor)


def training_arguments(out: Path, device: torch.device, peer: Peer, batch: int, epochs: int):
    from transformers import TrainingArguments
    cuda = device.type == "cuda"
    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=batch, num_train_epochs=epochs, learning_rate=1e-5,
        max_grad_norm=1.0, optim="adamw_torch_fused" if cuda else "adamw_torch", bf16=cuda,
        use_cpu=not cuda, train_sampling_strategy="group_by_length", torch_compile=peer.compiled,
        dataloader_num_workers=CUDA_WORKERS if cuda else 0, dataloader_persistent_workers=cuda,
        dataloader_pin_memory=cuda, logging_strategy="no", logging_nan_inf_filter=False, save_strategy="no",
        eval_strategy="no", report_to="none", disable_tqdm=True, remove_unused_columns=False, seed=0)


def study_scale_grouping(task: str, batch: int, dataset, input_name: str):
    """group_by_length's sampler, grouping as it does on the study's own training split. It sorts by
    length within mega-batches of min(50, examples // (4 x batch)) batches: on a bench-sized sample
    that is 1-5 batches, nearly random ones, a handicap the peer would not have in the study."""
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
    from hw5.bench.grid import SPLIT_SIZES

    class StudyScaleGrouping(LengthGroupedSampler):
        def __iter__(self):
            mult = min(50, SPLIT_SIZES[task]["train"] // (4 * batch))
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, mult, self.generator))
    return StudyScaleGrouping(batch, dataset=dataset, model_input_name=input_name)


def peer_trainer(work, device: torch.device, peer: Peer, out: Path, epochs: int):
    """A Trainer that also records each step's padded shape, and an epoch clock for the timing."""
    from transformers import Trainer, TrainerCallback

    class EpochClock(TrainerCallback):
        def __init__(self):
            self.marks: list[float] = []

        def on_epoch_begin(self, *_, **__):
            sync(device)
            self.marks.append(time.perf_counter())

    class ShapeRecordingTrainer(Trainer):
        shapes: list[tuple[int, int]]

        def _get_train_sampler(self, train_dataset=None):
            return study_scale_grouping(work.task, self.args.train_batch_size, self.train_dataset,
                                        self.processing_class.model_input_names[0])

        def training_step(self, model, inputs, num_items_in_batch=None):
            key = "input_ids" if "input_ids" in inputs else "input_values"
            self.shapes.append(tuple(inputs[key].shape))
            return super().training_step(model, inputs, num_items_in_batch)

    processing, collator = processing_and_collator(work, device)
    clock = EpochClock()
    trainer = ShapeRecordingTrainer(model=peer_model(work), args=training_arguments(out, device, peer,
                                    work.batch_size, epochs), train_dataset=peer_items(work),
                                    data_collator=collator, processing_class=processing, callbacks=[clock])
    trainer.shapes = []
    return trainer, clock


def peer_pass(work, name: str, peer: Peer, device: torch.device, repeat: int = 1):
    """Trainer.train over 1 warm-up + `repeat` epochs; the median timed epoch, as a PathResult."""
    if device.type == "cuda":
        cuda_kernel_choices(cudnn_attention=True)     # torch's defaults, as a user's run has them
    reset_peak(device)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hw5-peer-") as tmp:
        trainer, clock = peer_trainer(work, device, peer, Path(tmp), epochs=1 + repeat)
        trainer.train()
        sync(device)
        marks = clock.marks + [time.perf_counter()]
    epochs = np.diff(marks)
    seconds = float(np.median(epochs[1:]))
    steps = len(trainer.shapes) // (1 + repeat)
    timed = trainer.shapes[steps:]
    real = sum(work.lengths)
    padded = sum(rows * width for rows, width in timed) / repeat
    note = f"Trainer, {trainer.args.dataloader_num_workers} worker(s), group_by_length"
    return PathResult(work.task, name, steps, seconds, real * work.per_unit / seconds, len(work.lengths) / seconds,
                      1 - real / padded, peak_mb(device, rss0), marks[0] - started, float(epochs[0]), note)
