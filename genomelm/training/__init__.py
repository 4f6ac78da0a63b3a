"""Training pieces shared by pretrain, finetune and in-context, and the pretraining engine.

- optim: optimiser groups, warmup + cosine schedule, sequence-length warmup
- distributed: torchrun/DDP helpers (no-ops in one process)
- state: seeding and RNG states, divergence checks, stop signals, atomic checkpoints, metrics.jsonl
- windows: the pretraining data (genome split, random training windows, fixed validation windows)
- losses, meter, pretrainer: next-token losses, step timing (tokens/s, ETA) and the pretraining loop (``Trainer``)

Official recipe (HyenaDNA): AdamW (0.9, 0.999), weight decay on weight matrices only; the implicit filter
(its MLP, Sin frequencies and the filter's D term), biases, norms and embeddings' positional features get none.
"""

from genomelm.training.distributed import (
    DistInfo,
    all_reduce,
    close_distributed,
    gather_objects,
    init_distributed,
    launched_by_torchrun,
)
from genomelm.training.optim import (
    cosine_lr_factor,
    make_optimizer,
    make_scheduler,
    param_groups,
    seqlen_at,
    seqlen_stages,
    sequences_per_batch,
)
from genomelm.training.state import (
    CHECKPOINT_DIR,
    TRAINING_STATE,
    MetricsLog,
    StopRequest,
    load_training_state,
    portable_rng_state,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
    stop_if_diverged,
)

__all__ = [
    "CHECKPOINT_DIR",
    "TRAINING_STATE",
    "DistInfo",
    "MetricsLog",
    "StopRequest",
    "all_reduce",
    "close_distributed",
    "cosine_lr_factor",
    "gather_objects",
    "init_distributed",
    "launched_by_torchrun",
    "load_training_state",
    "make_optimizer",
    "make_scheduler",
    "param_groups",
    "portable_rng_state",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "seqlen_at",
    "seqlen_stages",
    "sequences_per_batch",
    "set_rng_state",
    "stop_if_diverged",
]
