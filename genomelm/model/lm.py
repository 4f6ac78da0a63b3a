"""The HyenaDNA language model: embedding, Hyena blocks, final norm, head tied to the embedding."""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from genomelm.errors import UsageError
from genomelm.kernels import add_layer_norm, compile_requested, prepare_for_compile, resolve_backend
from genomelm.log import get_logger
from genomelm.model.config import HyenaConfig
from genomelm.model.cuda_graphs import GraphedForward, cuda_graphs_requested
from genomelm.model.hyena import Block

log = get_logger(__name__)


def check_conv_backend(backend: str | None, device: torch.device) -> None:
    """UsageError (exit 2, with the choices) for an unknown --conv-backend or $GENOMELM_CONV_BACKEND, or for
    'cuda' where it cannot run: checked before the model is loaded, not at its first forward pass."""
    try:
        resolve_backend(backend, device)
    except (ValueError, RuntimeError) as exc:
        raise UsageError(f"--conv-backend: {exc}") from None


class Embeddings(nn.Module):
    def __init__(self, config: HyenaConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, config.d_model)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(input_ids)


class Backbone(nn.Module):
    """Embedding -> n_layer blocks -> ln_f. Hidden states of any layer are reachable (``upto_layer``)."""

    def __init__(self, config: HyenaConfig):
        super().__init__()
        self.embeddings = Embeddings(config)
        self.drop_embed = nn.Dropout(config.embed_dropout)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.gradient_checkpointing = False
        self.kernel_backend: str | None = None  # None = kernels' default (env var or auto); see set_conv_backend
        self.compiled = False  # blocks compiled by torch.compile (set_compile): filters computed outside them
        self._compiled_keys: set[tuple] = set()  # (shape, grad, autocast) already compiled: for the log line
        self.graphs: GraphedForward | None = None  # CUDA graphs of fixed-shape inference (set_cuda_graphs)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        upto_layer: int | None = None,
    ) -> torch.Tensor:
        """(B, L) ids or (B, L, D) embeddings -> (B, L, D).

        upto_layer None (or n_layer): the final normalised output (what the LM head reads).
        upto_layer i in [0, n_layer): the residual stream after i blocks (0 = the token embeddings).
        """
        if self.graphs is not None and inputs_embeds is None and not self.compiled:
            return self.graphs(input_ids, upto_layer)  # eager unless CUDA inference of a shape seen before
        if not self.compiled:
            return self._forward(input_ids, inputs_embeds, upto_layer)
        return self._compiled_forward(input_ids, inputs_embeds, upto_layer)

    def _compiled_forward(self, input_ids, inputs_embeds, upto_layer) -> torch.Tensor:
        """_forward, logging the time of the first call of each shape (what torch.compile's compilation costs)."""
        shape = tuple((input_ids if inputs_embeds is None else inputs_embeds).shape)
        key = (shape, torch.is_grad_enabled(), torch.is_autocast_enabled(self.ln_f.weight.device.type))
        if key in self._compiled_keys:
            return self._forward(input_ids, inputs_embeds, upto_layer)
        started = time.perf_counter()
        out = self._forward(input_ids, inputs_embeds, upto_layer)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        self._compiled_keys.add(key)
        log.info("torch.compile: first forward of shape %s took %.1f s (compilation included)", shape,
                 time.perf_counter() - started)  # fmt: skip
        return out

    def train(self, mode: bool = True) -> Backbone:
        """A train()/eval() switch also drops the CUDA graphs, as HyenaFilter drops its cached filter: an optimiser
        that changes weights without bumping their version counters (torch's fused AdamW) cannot leave a graph
        replaying filters of the old weights."""
        if self.graphs is not None and mode != self.training:  # eval() on an eval model (api calls) keeps them
            self.graphs.clear()
        return super().train(mode)

    def _forward(self, input_ids, inputs_embeds, upto_layer) -> torch.Tensor:
        hidden = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        residual, branch = self.drop_embed(hidden), None  # (B, L, D); the stream is residual + branch
        n_blocks = len(self.layers) if upto_layer is None else upto_layer
        for layer in self.layers[:n_blocks]:
            residual, branch = self._block(layer, residual, branch)
        if n_blocks < len(self.layers):
            return residual.float() if branch is None else residual.float() + branch.float()
        ln_f = self.ln_f
        out, _ = add_layer_norm(
            branch, residual, ln_f.weight, ln_f.bias, ln_f.eps, ln_f.weight.dtype, self.kernel_backend
        )
        return out

    def _block(self, layer: Block, residual: torch.Tensor, branch: torch.Tensor | None):
        """One block. Compiled blocks get their long filter from here: its inference cache (keyed on the weights'
        versions) stays outside the traced graph."""
        k = layer.mixer.long_filter(residual.shape[1]) if self.compiled else None
        if self.gradient_checkpointing and self.training:
            return checkpoint(layer, residual, branch, k, use_reentrant=False)
        return layer(residual, branch, k)


def mean_over_lengths(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, L, D) hidden states of right-padded rows, (B,) true lengths -> (B, D): each row's mean over its real
    positions (a masked sum, one batched reduction; rows of length 0 give 0). The classifier's mean pooling
    and the window methods' mean embedding. (`genomelm embed` averages each row's slice instead: its own
    float rounding, kept so that embeddings stay bit-identical across versions.)"""
    mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]  # (B, L)
    summed = (hidden * mask[..., None]).sum(dim=1)  # (B, D)
    return summed / lengths[:, None].clamp(min=1).to(summed.dtype)


class HyenaDNA(nn.Module):
    """HyenaDNA causal language model over the official character vocabulary."""

    def __init__(self, config: HyenaConfig):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        self.apply(self._init_weights)
        self._rescale_residual_projections()
        if config.tie_embeddings:
            self.lm_head.weight = self.backbone.embeddings.word_embeddings.weight

    def _init_weights(self, module: nn.Module) -> None:
        # The official initialisation: N(0, 0.02) for every Linear (implicit filter included) and the embedding.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _rescale_residual_projections(self) -> None:
        # GPT-2 style: projections that write into the residual stream scaled by 1/sqrt(2 n_layer).
        std = self.config.initializer_range / math.sqrt(2 * self.config.n_layer)
        for name, param in self.named_parameters():
            if name.endswith(("mixer.out_proj.weight", "mlp.fc2.weight")):
                nn.init.normal_(param, std=std)

    @property
    def l_max(self) -> int:
        return self.config.l_max

    def set_conv_backend(self, backend: str | None) -> None:
        """'torch', 'cuda', 'auto' or None (GENOMELM_CONV_BACKEND / auto) for every fused kernel of the model.

        Every command calls this when it sets up its model: GENOMELM_COMPILE=1 (--compile) compiles the blocks here.
        """
        for layer in self.backbone.layers:
            layer.mixer.conv_backend = backend
        self.backbone.kernel_backend = backend
        if compile_requested():
            self.set_compile(True)
        if cuda_graphs_requested():
            self.set_cuda_graphs(True)

    def set_cuda_graphs(self, enabled: bool) -> None:
        """Replay CUDA graphs for inference batches of a shape seen before (opt-in: GENOMELM_CUDA_GRAPHS=1; see
        model/cuda_graphs.py), or drop them. Training, CPU tensors and first-seen shapes run eagerly."""
        backbone = self.backbone
        backbone.graphs = (
            GraphedForward(lambda ids, upto: backbone._forward(ids, None, upto), backbone) if enabled else None
        )

    def set_compile(self, enabled: bool) -> None:
        """Compile every block with torch.compile (opt-in: --compile / GENOMELM_COMPILE=1), or undo it.

        The fused kernels are torch custom ops, so a block traces as one graph; shapes are static (one compilation
        per input shape: fixed windows and passes compile once). The first call of each shape pays the compilation.
        """
        if enabled:
            prepare_for_compile()
        for layer in self.backbone.layers:
            if enabled:
                layer.compile(dynamic=False)
            else:
                layer._compiled_call_impl = None
        self.backbone.compiled = enabled

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.backbone.gradient_checkpointing = enabled

    def hidden_states(self, input_ids: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """(B, L) -> (B, L, D). layer -1 / n_layer: final normalised output; 0..n_layer-1 see Backbone."""
        n = self.config.n_layer
        if not -1 <= layer <= n:
            raise UsageError(f"layer {layer} out of range for a {n}-layer model (use 0..{n}, or -1 for the last)")
        return self.backbone(input_ids, upto_layer=None if layer in (-1, n) else layer)

    def forward(self, input_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) ids (or (B, L, D) embeddings) -> (B, L, padded_vocab) next-token logits."""
        hidden = self.backbone(input_ids, inputs_embeds=inputs_embeds)
        return self.lm_head(hidden)

    def num_parameters(self) -> int:
        """Unique trainable parameters (the tied head counted once)."""
        return sum(p.numel() for p in self.parameters())


CLASSIFIER_POOLINGS = ("mean", "last", "first")


class HyenaDNAClassifier(HyenaDNA):
    """HyenaDNA backbone + a sequence classification head: pool the final hidden states over the real
    (unpadded) tokens, then one Linear layer to ``num_classes`` logits.

    It keeps the LM's modules and parameter names (``backbone.*``, the tied ``lm_head``) and adds only
    ``head.*``, so its weights still load as a plain HyenaDNA language model. Pooling: ``mean`` over real
    tokens, ``last`` real token (the only one that has seen the whole sequence in this causal model), or
    ``first`` token (it sees only itself in a causal model; kept for parity with encoder models).
    """

    def __init__(self, config: HyenaConfig, num_classes: int, pooling: str = "mean"):
        super().__init__(config)
        if pooling not in CLASSIFIER_POOLINGS:
            raise UsageError(f"pooling must be one of {', '.join(CLASSIFIER_POOLINGS)}, got {pooling!r}")
        if num_classes < 2:
            raise UsageError(f"a classifier needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.pooling = pooling
        self.head = nn.Linear(config.d_model, num_classes)
        nn.init.normal_(self.head.weight, std=config.initializer_range)
        nn.init.zeros_(self.head.bias)

    def pool(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L, D) hidden states of right-padded rows, (B,) true lengths -> (B, D) in fp32."""
        hidden = hidden.float()
        if self.pooling == "first":
            return hidden[:, 0]
        if self.pooling == "last":
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]
        return mean_over_lengths(hidden, lengths)

    def features(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, L) right-padded ids, (B,) true lengths -> (B, D) pooled features (what the head reads)."""
        return self.pool(self.backbone(input_ids), lengths)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled features -> (B, num_classes) logits in fp32."""
        return self.head(features.to(self.head.weight.dtype)).float()

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """(B, L) right-padded ids, (B,) true lengths -> (B, num_classes) class logits (fp32).

        Right padding never changes a real position's hidden state (causal model), so the logits of a
        sequence do not depend on its batch mates.
        """
        return self.classify(self.features(input_ids, lengths))
