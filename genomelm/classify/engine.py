"""Classifier training and inference: token or cached-feature inputs, the epoch loop with early stopping on
a validation metric, probabilities and evaluation. ``train`` reads a ``genomelm.commands.finetune.FinetuneOptions``
(any object with its fields)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from genomelm.classify.data import Dataset, to_batch
from genomelm.classify.metrics import classification_metrics, format_metric
from genomelm.log import get_logger, progress
from genomelm.model.lm import HyenaDNAClassifier
from genomelm.runtime import autocast
from genomelm.training import make_optimizer, make_scheduler, stop_if_diverged

log = get_logger(__name__)

GRAD_CLIP = 1.0  # max global gradient norm (the official HyenaDNA fine-tuning recipe clips at 1.0)
Options = Any  # a FinetuneOptions (the engine does not import commands)


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------- inputs: tokens or cached features


class TokenInputs:
    """A dataset fed through the whole model at every step (full fine-tuning, or evaluation)."""

    def __init__(self, data: Dataset, device: torch.device, precision: str):
        self.data, self.device, self.precision = data, device, precision

    def logits(self, model: HyenaDNAClassifier, index: np.ndarray, reverse=None) -> torch.Tensor:
        """(B, C) logits of the rows ``index``; ``reverse`` (B,) bools pick the reverse strand."""
        tokens, lengths = to_batch([self.data.ids[i] for i in index], self.device, reverse=reverse)
        with autocast(self.device, self.precision):
            return model(tokens, lengths)


class FeatureInputs:
    """A frozen backbone's pooled features, computed once per strand; only the head runs per step."""

    def __init__(self, model: HyenaDNAClassifier, data: Dataset, device, precision, batch_size, both_strands):
        self.data = data
        self.forward = self._features(model, data, device, precision, batch_size, reverse=False)  # (N, D)
        self.reverse = self._features(model, data, device, precision, batch_size, True) if both_strands else None

    @staticmethod
    @torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
    def _features(model, data, device, precision, batch_size, reverse: bool) -> torch.Tensor:
        model.eval()
        chunks = []
        for start in range(0, len(data), batch_size):
            rows = data.ids[start : start + batch_size]
            tokens, lengths = to_batch(rows, device, reverse=[reverse] * len(rows))
            with autocast(device, precision):
                chunks.append(model.features(tokens, lengths).float())
        return torch.cat(chunks)

    def logits(self, model: HyenaDNAClassifier, index: np.ndarray, reverse=None) -> torch.Tensor:
        rows = torch.as_tensor(index, device=self.forward.device)
        features = self.forward[rows]  # (B, D)
        if reverse is not None and self.reverse is not None:
            flip = torch.as_tensor(np.asarray(reverse), device=features.device)[:, None]
            features = torch.where(flip, self.reverse[rows], features)
        return model.classify(features)


def _inputs(model, data: Dataset, device, precision, opts: Options, training: bool):
    if opts.freeze_backbone:
        return FeatureInputs(model, data, device, precision, opts.batch_size, both_strands=training and opts.rc_aug)
    return TokenInputs(data, device, precision)


# --------------------------------------------------------------------------- training


@dataclass
class _Trained:
    best_state: dict
    best_epoch: int
    history: list[dict]


def train(model: HyenaDNAClassifier, splits: dict[str, Dataset], opts: Options, device, precision):
    """Epochs of training with validation after each; returns the best epoch's weights and the history."""
    train = _inputs(model, splits["train"], device, precision, opts, training=True)
    val = _inputs(model, splits["val"], device, precision, opts, training=False)
    steps = opts.epochs * math.ceil(len(splits["train"]) / opts.batch_size)
    optimizer = make_optimizer(model, opts.lr, opts.weight_decay)
    scheduler = make_scheduler(optimizer, int(opts.warmup_ratio * steps), steps)
    rng = np.random.default_rng(opts.seed)
    best, best_score, best_epoch, stale, history = _state(model), -math.inf, 0, 0, []
    for epoch in range(1, opts.epochs + 1):
        loss = _train_epoch(model, train, optimizer, scheduler, rng, opts, epoch)
        metrics = _evaluate_inputs(model, val, splits["val"].labels, opts.batch_size)
        score = -metrics["loss"] if opts.metric == "loss" else (metrics[opts.metric] or 0.0)
        improved = score > best_score
        if improved:
            best, best_score, best_epoch, stale = _state(model), score, epoch, 0
        else:
            stale += 1
        history.append({"epoch": epoch, "train_loss": loss, "lr": scheduler.get_last_lr()[0], "val": metrics})
        _log_epoch(epoch, opts, loss, metrics, improved)
        if opts.patience and stale >= opts.patience:
            log.info("early stop: no %s improvement for %d epoch(s)", opts.metric, stale)
            break
    return _Trained(best, best_epoch, history)


def _train_epoch(model, inputs, optimizer, scheduler, rng: np.random.Generator, opts: Options, epoch=1) -> float:
    """One pass over the shuffled training set; returns the mean training loss."""
    model.train()
    if opts.freeze_backbone:
        model.backbone.eval()  # a probe reads the frozen backbone without dropout
    order = rng.permutation(len(inputs.data))
    total, seen = 0.0, 0
    with progress("seq") as bar:
        task = bar.add_task("train", total=len(order))
        for start in range(0, len(order), opts.batch_size):
            index = order[start : start + opts.batch_size]
            reverse = rng.random(len(index)) < 0.5 if opts.rc_aug else None
            loss = _step(model, inputs, index, reverse, optimizer, scheduler)
            stop_if_diverged(loss, model, f"epoch {epoch}, step {start // opts.batch_size + 1}")
            total, seen = total + loss * len(index), seen + len(index)
            bar.advance(task, len(index))
    return total / max(seen, 1)


def _step(model, inputs, index, reverse, optimizer, scheduler) -> float:
    labels = torch.as_tensor(inputs.data.labels[index])
    logits = inputs.logits(model, index, reverse)  # (B, C)
    loss = nn.functional.cross_entropy(logits, labels.to(logits.device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], GRAD_CLIP)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def _state(model: nn.Module) -> dict:
    """A CPU copy of the weights (the best epoch's, kept while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _log_epoch(epoch: int, opts: Options, loss: float, metrics: dict, improved: bool) -> None:
    shown = " ".join(f"{k} {format_metric(metrics[k])}" for k in ("loss", "accuracy", "mcc", "auroc"))
    log.info("epoch %d/%d: train loss %.4f | val %s%s", epoch, opts.epochs, loss, shown, " (best)" if improved else "")


# --------------------------------------------------------------------------- evaluation


def evaluate(model, data: Dataset, batch_size: int, device, precision: str, frozen: bool = False) -> dict:
    """Metrics of ``model`` on a labelled dataset (see ``classification_metrics``)."""
    inputs = (
        FeatureInputs(model, data, device, precision, batch_size, False)
        if frozen
        else TokenInputs(data, device, precision)
    )
    return _evaluate_inputs(model, inputs, data.labels, batch_size)


def _evaluate_inputs(model, inputs, labels: np.ndarray, batch_size: int) -> dict:
    return classification_metrics(labels, _probabilities(model, inputs, batch_size))


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def _probabilities(model, inputs, batch_size: int) -> np.ndarray:
    """(N, C) class probabilities in dataset order, model in eval mode."""
    model.eval()
    n = len(inputs.data)
    chunks = [
        torch.softmax(inputs.logits(model, np.arange(s, min(s + batch_size, n))).float(), dim=-1).cpu()
        for s in range(0, n, batch_size)
    ]
    return torch.cat(chunks).numpy()


@torch.no_grad()  # not inference_mode: cached filters and spectra need version counters
def predict_probabilities(
    model: HyenaDNAClassifier, rows: list[np.ndarray], device: torch.device, precision: str, add_sep: bool = True
) -> np.ndarray:
    """(B, C) class probabilities of token-id rows (bases only; [SEP] added here), as predict computes them."""
    tokens, lengths = to_batch(rows, device, add_sep=add_sep)
    with autocast(device, precision):
        logits = model(tokens, lengths)
    return torch.softmax(logits.float(), dim=-1).cpu().numpy()
