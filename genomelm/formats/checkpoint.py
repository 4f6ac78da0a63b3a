"""Model weights in and out (DESIGN.md §5, §7; house rules 3 and 4).

Native format: a directory with config.json (HyenaConfig + provenance), model.safetensors (the tied head
stored once) and README.md (model card). Official layouts are imported through explicit key tables:
  - Lightning: weights.ckpt (pickle, {'state_dict': ...}) + config.json; filter shift 0.0 (training code).
  - Hugging Face '-hf': model.safetensors + config.json (model_type hyenadna); filter shift 0.05.
Pickles are opened with torch.load(weights_only=True) only; anything that needs full unpickling requires
the caller's explicit opt-in (``trust_checkpoint=True``, the CLI's --trust-checkpoint).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genomelm.errors import FormatError, InputError, UsageError
from genomelm.formats import atomic
from genomelm.log import get_logger
from genomelm.model.config import PRESETS, HyenaConfig, config_problems, preset
from genomelm.model.lm import CLASSIFIER_POOLINGS, HyenaDNA, HyenaDNAClassifier
from genomelm.tokenizer import VOCAB

log = get_logger(__name__)

NATIVE_FORMAT = "genomelm-hyenadna"
CLASSIFIER_KEY = "classifier"  # config.json block of a fine-tuned classifier (classes, pooling, max length)
HEAD_PREFIX = "head."  # its head's tensors in model.safetensors, beside the backbone's
NATIVE_VERSION = 1
LIGHTNING_SHIFT = 0.0  # the official training code's ExponentialModulation default
HF_SHIFT = 0.05  # the official standalone / Hugging Face port's default
TRAINED_L_MAX = "trained_l_max"  # config.json extra: the l_max the weights were made with
PRESET_SEED = 0  # random weights of `--model PRESET` are drawn from this seed (identical outputs run to run)

# Buffers the official code stores but genomelm recomputes from l_max (checked, then dropped, on import).
_RECOMPUTED_SUFFIXES = ("filter_fn.pos_emb.z", "filter_fn.pos_emb.t", "filter_fn.modulation.deltas")


@dataclass
class LoadReport:
    """What an import found: which keys it mapped, dropped as duplicates, or could not place."""

    source: str
    mapped: int = 0
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- native format


def save_model(model: HyenaDNA, directory: str | os.PathLike, card: str | None = None, **provenance) -> Path:
    """Write ``model`` as a native checkpoint directory, atomically (temp dir + rename)."""
    target = Path(directory)
    with atomic.atomic_directory(target) as staging:
        write_native_files(model, staging, card, provenance)
    return target


def write_native_files(model: HyenaDNA, staging: Path, card: str | None, provenance: dict) -> None:
    """config.json, model.safetensors and README.md of ``model`` into the (empty) directory ``staging``."""
    from safetensors.torch import save_model as save_safetensors

    config = model.config.to_dict()
    config["extra"] = {**config.get("extra", {}), **provenance}
    # The implicit filters depend on l_max: remember the one the weights were made with (kept across re-saves).
    config["extra"].setdefault(TRAINED_L_MAX, model.config.l_max)
    meta = {"format": NATIVE_FORMAT, "format_version": NATIVE_VERSION, "vocab": VOCAB, "model": config}
    (staging / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    save_safetensors(model, str(staging / "model.safetensors"), metadata={"format": "pt"})
    (staging / "README.md").write_text(card or default_model_card(model))


def default_model_card(model: HyenaDNA) -> str:
    c = model.config
    source = c.extra.get("source", "genomelm")
    return (
        f"# HyenaDNA model (genomelm native format)\n\n"
        f"- architecture: HyenaDNA, d_model {c.d_model}, {c.n_layer} layers, d_inner {c.d_inner}, "
        f"max length {c.l_max}\n- parameters: {model.num_parameters():,}\n- filter shift: {c.filter_shift}\n"
        f"- source: {source}\n\nLoad with `genomelm.load_model(path)` or `--model path`.\n"
    )


def load_native(directory: Path) -> HyenaDNA:
    meta = _native_meta(directory)
    model = HyenaDNA(_config_from(meta["model"], directory))
    _warn_if_l_max_edited(model.config, directory)
    missing, unexpected = _load_safetensors(model, directory / "model.safetensors")
    if model.config.tie_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]  # stored once, as the embedding
    if CLASSIFIER_KEY in meta:  # a fine-tuned classifier loads as its backbone LM: its head is not needed
        unexpected = [k for k in unexpected if not k.startswith(HEAD_PREFIX)]
    _check_keys(directory, missing, unexpected)
    return model.eval()


def _warn_if_l_max_edited(config: HyenaConfig, directory: Path) -> None:
    trained = config.extra.get(TRAINED_L_MAX)
    if isinstance(trained, int) and trained != config.l_max:
        log.warning(
            "%s: l_max %d differs from the %d the weights were trained with: the implicit filters, and so every "
            "output, change; set it back unless that is intended",
            directory / "config.json",
            config.l_max,
            trained,
        )


def _native_meta(directory: Path) -> dict:
    """config.json of a native checkpoint, its envelope checked (the ``model`` section by ``_config_from``)."""
    path = directory / "config.json"
    meta = _read_json(path)
    version = meta.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise FormatError(f"{path}: format_version must be an integer, got {json.dumps(version)}")
    if version > NATIVE_VERSION:
        raise FormatError(f"{directory}: written by a newer genomelm (format_version {version})")
    if not isinstance(meta.get("model"), dict):
        raise FormatError(f"{path}: no 'model' section (an object with the architecture) in a genomelm config")
    return meta


def _config_from(values: dict, where: Path) -> HyenaConfig:
    try:
        config = HyenaConfig.from_dict(values)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{where / 'config.json'}: {exc}") from None
    return checked_config(config, where / "config.json")


def checked_config(config: HyenaConfig, path: Path) -> HyenaConfig:
    """``config`` if it describes a model genomelm can build, else FormatError naming ``path`` and the field
    (checked before anything is allocated)."""
    problems = config_problems(config)
    if problems:
        raise FormatError(f"{path}: {'; '.join(problems)}")
    return config


def _load_safetensors(model, path: Path) -> tuple[list[str], list[str]]:
    """Weights from a safetensors file into ``model`` (missing and unexpected keys returned), checked finite."""
    from safetensors.torch import load_model as load_safetensors

    try:
        missing, unexpected = load_safetensors(model, str(path), strict=False)
    except Exception as exc:  # safetensors raises RuntimeError/SafetensorError on shape or header problems
        raise FormatError(f"{path}: {_one_line(exc)}") from None
    check_finite(model.state_dict(), path)
    return missing, unexpected


def check_finite(tensors: dict[str, torch.Tensor], path: Path | str) -> None:
    """FormatError naming ``path`` and the first tensor with NaN or infinite values (a diverged training run)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FormatError(
                f"{path}: tensor {name} holds non-finite values (NaN or inf): the weights are broken "
                "(a training run that diverged?)"
            )


# --------------------------------------------------------------------------- official imports


def lightning_config(raw: dict) -> HyenaConfig:
    """HyenaConfig from an official Lightning config.json (d_model, n_layer, ..., layer{...})."""
    layer = raw.get("layer", {})
    if not isinstance(layer, dict) or "l_max" not in layer:
        raise KeyError("layer.l_max")
    return HyenaConfig(
        d_model=raw["d_model"],
        n_layer=raw["n_layer"],
        d_inner=raw.get("d_inner") or 4 * raw["d_model"],
        vocab_size=raw.get("vocab_size", 12),
        pad_vocab_size_multiple=raw.get("pad_vocab_size_multiple", 8),
        l_max=layer["l_max"],
        layer_norm_epsilon=raw.get("layer_norm_epsilon", 1e-5),
        residual_in_fp32=raw.get("residual_in_fp32", True),
        embed_dropout=raw.get("embed_dropout", 0.1),
        resid_dropout=raw.get("resid_dropout", 0.0),
        filter_order=layer.get("filter_order", 64),
        emb_dim=layer.get("emb_dim", 3),
        short_filter_order=layer.get("local_order", 3),
        activation_freq=float(layer.get("w", 1)),
        modulate=layer.get("modulate", True),
        filter_shift=float(layer.get("shift", LIGHTNING_SHIFT)),
        extra={"source": "lightning"},
    )


def hf_config(raw: dict) -> HyenaConfig:
    """HyenaConfig from an official Hugging Face config.json (model_type hyenadna)."""
    return HyenaConfig(
        d_model=raw["d_model"],
        n_layer=raw["n_layer"],
        d_inner=raw.get("d_inner") or 4 * raw["d_model"],
        vocab_size=raw.get("vocab_size", 12),
        pad_vocab_size_multiple=raw.get("pad_vocab_size_multiple", 8),
        l_max=raw["max_seq_len"],
        layer_norm_epsilon=raw.get("layer_norm_epsilon", 1e-5),
        residual_in_fp32=raw.get("residual_in_fp32", True),
        embed_dropout=raw.get("embed_dropout", 0.1),
        hyena_order=raw.get("hyena_order", 2),
        filter_order=raw.get("filter_order", 64),
        emb_dim=raw.get("emb_dim", 5),
        short_filter_order=raw.get("short_filter_order", 3),
        num_inner_mlps=raw.get("num_inner_mlps", 2),
        activation_freq=float(raw.get("activation_freq", 10)),
        filter_shift=HF_SHIFT,
        extra={"source": "huggingface"},
    )


def _official_key_to_native(key: str, prefix: str) -> str | None:
    """Map one official key to its genomelm name, or None if it does not belong to the model."""
    if key == "model.lm_head.weight" or key == "lm_head.weight":
        return "lm_head.weight"
    if not key.startswith(prefix):
        return None
    key = "backbone." + key[len(prefix) :]
    # Gradient-checkpointed models wrap mixer and mlp in a `.layer` module.
    return re.sub(r"\.(mixer|mlp)\.layer\.", r".\1.", key)


def import_state_dict(state: dict[str, torch.Tensor], config: HyenaConfig, prefix: str, source: str):
    """Build a model from official weights through the explicit key table; report what did not fit."""
    model = HyenaDNA(config)
    expected = model.state_dict()
    report = LoadReport(source=source)
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        native = _official_key_to_native(key, prefix)
        if native is None or native in mapped:
            report.unexpected.append(key) if native is None else report.dropped.append(key)
            continue
        if native.endswith(_RECOMPUTED_SUFFIXES):
            _check_recomputed(model, native, tensor, key)
            report.dropped.append(key)
            continue
        if native not in expected:
            report.unexpected.append(key)
            continue
        mapped[native] = tensor
    _place_weights(model, mapped, expected, report)
    return model.eval(), report


def _place_weights(model: HyenaDNA, mapped: dict, expected: dict, report: LoadReport) -> None:
    aliases = _shared_parameter_aliases(model)
    _check_aliases_agree(mapped, aliases)
    for name, target in expected.items():
        present = name if name in mapped else next((a for a in aliases.get(name, ()) if a in mapped), None)
        if present is None:
            report.missing.append(name)
        elif tuple(mapped[present].shape) != tuple(target.shape):
            raise FormatError(
                f"shape mismatch for {name}: checkpoint {tuple(mapped[present].shape)}, model {tuple(target.shape)}"
            )
    if report.missing or report.unexpected:
        raise FormatError(
            f"{report.source}: weights do not match the architecture; "
            f"missing: {', '.join(report.missing) or 'none'}; unexpected: {', '.join(report.unexpected) or 'none'}"
        )
    with torch.no_grad():
        model.load_state_dict(mapped, strict=False)
    report.mapped = len(mapped)


def _shared_parameter_aliases(model: HyenaDNA) -> dict[str, list[str]]:
    """Names that refer to one tensor (the shared Sin frequency, the tied head): name -> other names."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return {name: [n for n in names if n != name] for names in groups.values() for name in names}


def _check_aliases_agree(mapped: dict, aliases: dict) -> None:
    """A checkpoint that stores a shared tensor several times must store the same values each time."""
    for name, others in aliases.items():
        for other in others:
            if name in mapped and other in mapped and not torch.equal(mapped[name], mapped[other]):
                raise FormatError(f"{name} and {other} must be one shared tensor but differ in the checkpoint")


def _check_recomputed(model: HyenaDNA, native: str, stored: torch.Tensor, key: str) -> None:
    """The official z, t and deltas must equal what genomelm recomputes, or the import would be wrong."""
    ours = dict(model.named_buffers())[native]
    if tuple(ours.shape) != tuple(stored.shape) or not torch.allclose(ours, stored.float(), atol=1e-5):
        raise FormatError(
            f"{key}: stored buffer differs from the one implied by the config (shape {tuple(stored.shape)})"
        )


def _untie_if_head_differs(state: dict, config: HyenaConfig) -> HyenaConfig:
    """An untied head (HF allows it) is kept untied rather than silently replaced by the embedding."""
    head = state.get("lm_head.weight")
    embed = state.get("hyena.backbone.embeddings.word_embeddings.weight")
    if head is not None and embed is not None and not torch.equal(head, embed):
        return config.replace(tie_embeddings=False)
    return config


def _imported_config(builder, directory: Path) -> HyenaConfig:
    """An official config.json through ``builder``; a missing or mistyped field is a FormatError naming it."""
    path = directory / "config.json"
    try:
        config = builder(_read_json(path))
    except KeyError as exc:
        raise FormatError(f"{path}: missing field {exc.args[0]}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise FormatError(f"{path}: a field has the wrong type ({exc})") from None
    return checked_config(config, path)


def load_lightning(directory: Path, trust_checkpoint: bool = False) -> tuple[HyenaDNA, LoadReport]:
    config = _imported_config(lightning_config, directory)
    checkpoint = _torch_load(directory / "weights.ckpt", trust_checkpoint)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise FormatError(f"{directory / 'weights.ckpt'}: no state_dict inside")
    check_finite({k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, directory / "weights.ckpt")
    return import_state_dict(state, config, "model.backbone.", "lightning")


def load_hf(directory: Path, trust_checkpoint: bool = False) -> tuple[HyenaDNA, LoadReport]:
    from safetensors.torch import load_file

    config = _imported_config(hf_config, directory)
    weights = directory / "model.safetensors"
    if weights.exists():
        try:
            state = load_file(str(weights))
        except Exception as exc:  # a header or size problem
            raise FormatError(f"{weights}: {_one_line(exc)}") from None
    elif (directory / "pytorch_model.bin").exists():
        weights = directory / "pytorch_model.bin"
        state = _torch_load(weights, trust_checkpoint)
    else:
        raise FormatError(f"{directory}: no model.safetensors (or pytorch_model.bin) beside config.json")
    if not isinstance(state, dict):
        raise FormatError(f"{weights}: no state_dict inside")
    check_finite({k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, weights)
    config = _untie_if_head_differs(state, config)
    return import_state_dict(state, config, "hyena.backbone.", "huggingface")


def _torch_load(path: Path, trust_checkpoint: bool):
    """torch.load without unpickling arbitrary objects unless the user explicitly opted in."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_checkpoint)
    except Exception as exc:
        if not trust_checkpoint and "weights_only" in str(exc):
            raise FormatError(
                f"{path}: holds Python objects beyond tensors and refuses to load safely; if you trust its "
                "source, rerun with --trust-checkpoint (this unpickles the file and can run code from it)"
            ) from None
        raise FormatError(f"{path}: cannot be read as a PyTorch checkpoint ({_one_line(exc)})") from None


# --------------------------------------------------------------------------- detection and --model


def detect_layout(directory: Path) -> str:
    """'native', 'lightning' or 'huggingface' for a checkpoint directory."""
    config_path = directory / "config.json"
    if not config_path.exists():
        raise FormatError(f"{directory}: no config.json, not a model directory")
    config = _read_json(config_path)
    if config.get("format") == NATIVE_FORMAT:
        return "native"
    if (directory / "weights.ckpt").exists():
        return "lightning"
    if str(config.get("model_type", "")).lower() == "hyenadna" or "max_seq_len" in config:
        return "huggingface"
    raise FormatError(f"{directory}: config.json is neither genomelm, official Lightning nor Hugging Face HyenaDNA")


def load_checkpoint_dir(
    directory: str | os.PathLike, trust_checkpoint: bool = False, filter_shift: float | None = None
) -> HyenaDNA:
    """Load a checkpoint directory of any supported layout; ``filter_shift`` overrides the recorded one."""
    path = Path(directory)
    layout = detect_layout(path)
    if layout == "native":
        model = load_native(path)
    else:
        loader = load_lightning if layout == "lightning" else load_hf
        model, report = loader(path, trust_checkpoint)
        log.info("imported %s checkpoint %s: %d tensors mapped", layout, path, report.mapped)
        model.config.extra["source_path"] = str(path)
    if filter_shift is not None:
        _set_filter_shift(model, filter_shift)
    return model


def _set_filter_shift(model: HyenaDNA, shift: float) -> None:
    model.config.filter_shift = shift
    for layer in model.backbone.layers:
        layer.mixer.filter_fn.modulation.shift = shift


def builtin_model_dir() -> Path:
    """The default model shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "pretrained"


def load_model(
    spec: str | os.PathLike | None = None,
    trust_checkpoint: bool = False,
    filter_shift: float | None = None,
) -> HyenaDNA:
    """Resolve ``--model``: None/'default' (the shipped model), a local directory, a model named in
    $GENOMELM_HOME/models/, a preset (random weights, with a warning), or a Hugging Face Hub id (only with
    huggingface_hub installed and online; downloads go to $GENOMELM_HOME/hub when that is set)."""
    if spec is None or str(spec) == "default":
        return _load_builtin(filter_shift)
    path = Path(spec)
    if path.is_dir():
        return load_checkpoint_dir(path, trust_checkpoint, filter_shift)
    named = named_model_dir(str(spec))
    if named is not None:  # before presets: a trained copy the user put there beats random weights
        log.info("model %s: %s (from $%s)", spec, named, HOME_ENV)
        return load_checkpoint_dir(named, trust_checkpoint, filter_shift)
    if str(spec) in PRESETS:
        log.warning("model %s: randomly initialised weights (a preset, not a trained model)", spec)
        # Seeded, without touching the caller's RNG: two runs, or the shards of one workflow, use the same weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(PRESET_SEED)
            model = HyenaDNA(preset(str(spec))).eval()
        if filter_shift is not None:
            _set_filter_shift(model, filter_shift)
        return model
    if path.exists():
        raise UsageError(f"--model {spec}: expected a model directory (config.json + weights), got a file")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", str(spec)) and not path.parent.is_dir():
        return load_checkpoint_dir(_download_from_hub(str(spec)), trust_checkpoint, filter_shift)
    if path.parent.is_dir() and str(path.parent) not in ("", "."):  # a mistyped local path, not a Hub id
        raise UsageError(f"--model {spec}: no such directory ({path.parent} has no '{path.name}')")
    raise UsageError(
        f"--model {spec}: no such directory, model in $GENOMELM_HOME/models, preset ({', '.join(PRESETS)}) "
        "or Hugging Face id (org/name)"
    )


# --------------------------------------------------------------------------- $GENOMELM_HOME

HOME_ENV = "GENOMELM_HOME"
_MODEL_NAME = re.compile(r"[\w.-]+(/[\w.-]+)?")  # 'small-32k' or 'org/name'; never '..' or an absolute path


def genomelm_home() -> Path | None:
    """The directory named by $GENOMELM_HOME, or None when it is unset or empty.

    Clusters often give jobs no writable home directory. GENOMELM_HOME moves everything genomelm looks up
    or caches by name to one place: named models in ``models/<name>/`` (``models/<org>/<name>/`` for Hub
    ids), Hugging Face downloads in ``hub/``, Triton's kernel cache in ``triton/`` (set by the CLI).
    Unset, nothing changes: huggingface_hub and Triton keep their own defaults.
    """
    value = os.environ.get(HOME_ENV, "").strip()
    return Path(value).expanduser() if value else None


def named_model_dir(name: str) -> Path | None:
    """$GENOMELM_HOME/models/<name> when it holds a checkpoint (a config.json), else None."""
    home = genomelm_home()
    if home is None or not _MODEL_NAME.fullmatch(name) or {".", ".."} & set(name.split("/")):
        return None
    candidate = home / "models" / name
    return candidate if (candidate / "config.json").is_file() else None


def hub_cache_dir() -> str | None:
    """Where Hugging Face downloads go: $GENOMELM_HOME/hub, or None for huggingface_hub's own default."""
    home = genomelm_home()
    return str(home / "hub") if home is not None else None


def _load_builtin(filter_shift: float | None) -> HyenaDNA:
    directory = builtin_model_dir()
    if not (directory / "model.safetensors").exists():
        raise UsageError(
            "no default model is shipped with this installation yet; pass --model "
            "(a checkpoint directory, an official HyenaDNA directory, or a preset name)"
        )
    return load_checkpoint_dir(directory, filter_shift=filter_shift)


def _download_from_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download  # optional dependency
    except ImportError:
        raise UsageError(
            f"--model {repo_id}: looks like a Hugging Face Hub id, but huggingface_hub is not installed "
            "(pip install huggingface_hub), or download the model and pass its directory"
        ) from None
    try:
        return Path(
            snapshot_download(
                repo_id, cache_dir=hub_cache_dir(), allow_patterns=["*.json", "*.safetensors", "*.ckpt", "*.md"]
            )
        )
    except Exception as exc:  # offline, unknown id, or no permission
        raise InputError(f"--model {repo_id}: cannot fetch from the Hugging Face Hub ({_one_line(exc)})") from None


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; anything else (a list, null, a string, bad JSON) is a FormatError."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise FormatError(f"{path}: missing") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, not a file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        kind = "null" if value is None else type(value).__name__
        raise FormatError(f"{path}: must hold a JSON object, got {kind}")
    return value


def _check_keys(where: Path, missing, unexpected) -> None:
    if missing or unexpected:
        raise FormatError(
            f"{where}: weights do not match config.json; missing: {', '.join(missing) or 'none'}; "
            f"unexpected: {', '.join(unexpected) or 'none'}"
        )


def _one_line(exc: BaseException) -> str:
    """The whole message of ``exc`` on one line (torch's shape-mismatch errors list one tensor per line)."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    return text or type(exc).__name__


# --------------------------------------------------------------------------- fine-tuned classifiers

TRUNCATIONS = ("error", "left", "right")


@dataclass
class ClassifierMeta:
    """The ``classifier`` block of a fine-tuned checkpoint's config.json: what predict needs besides weights."""

    classes: list[str]  # class names; position = the model's output index
    pooling: str = "mean"  # mean / last / first over real tokens (HyenaDNAClassifier)
    max_length: int = 1025  # longest input in bases ([SEP] not counted); longer inputs follow ``truncate``
    truncate: str = "error"  # error; left = drop bases from the start; right = drop bases from the end
    add_sep: bool = True  # [SEP] appended to each sequence, as official pretraining windows end with it
    training: dict = field(default_factory=dict)  # provenance: base model, data, settings, metrics

    def to_dict(self) -> dict:
        return {
            "classes": list(self.classes),
            "pooling": self.pooling,
            "max_length": self.max_length,
            "truncate": self.truncate,
            "add_sep": self.add_sep,
            "training": self.training,
        }

    @classmethod
    def from_dict(cls, values: dict, where: Path) -> ClassifierMeta:
        """Validated block; anything inconsistent is a FormatError naming ``where``."""
        try:
            meta = cls(**values)
        except TypeError as exc:
            raise FormatError(f"{where}: invalid classifier block ({exc})") from None
        problems = []
        if not isinstance(meta.classes, list) or len(meta.classes) < 2:
            problems.append("needs a list of at least 2 classes")
        if meta.pooling not in CLASSIFIER_POOLINGS:
            problems.append(f"unknown pooling {meta.pooling!r}")
        if meta.truncate not in TRUNCATIONS:
            problems.append(f"unknown truncate {meta.truncate!r}")
        if not isinstance(meta.max_length, int) or meta.max_length < 1:
            problems.append(f"max_length must be a positive integer, got {meta.max_length!r}")
        if problems:
            raise FormatError(f"{where}: invalid classifier block: {'; '.join(problems)}")
        meta.classes = [str(c) for c in meta.classes]
        return meta


def save_classifier(
    model: HyenaDNAClassifier,
    meta: ClassifierMeta,
    directory: str | os.PathLike,
    card: str | None = None,
    extra_files: dict[str, str] | None = None,
    **provenance,
) -> Path:
    """Write a fine-tuned classifier as a native checkpoint, atomically: the backbone as ``save_model``
    writes it (so ``load_model`` still reads it as an LM), ``head.*`` tensors beside it, the ``classifier``
    block in config.json, and ``extra_files`` (name -> text, e.g. metrics.json) in the directory."""
    target = Path(directory)
    with atomic.atomic_directory(target) as staging:
        write_native_files(model, staging, card, provenance)
        config_path = staging / "config.json"
        config = json.loads(config_path.read_text())
        config[CLASSIFIER_KEY] = meta.to_dict()
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
    return target


def is_classifier_dir(directory: str | os.PathLike) -> bool:
    """True for a native checkpoint directory written by ``save_classifier``."""
    config_path = Path(directory) / "config.json"
    if not config_path.is_file():
        return False
    try:
        meta = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False
    return isinstance(meta, dict) and meta.get("format") == NATIVE_FORMAT and CLASSIFIER_KEY in meta


def load_classifier(directory: str | os.PathLike) -> tuple[HyenaDNAClassifier, ClassifierMeta]:
    """A fine-tuned classifier (eval mode) and its ``classifier`` block, from a ``save_classifier`` directory."""
    path = Path(directory)
    if not path.is_dir():
        raise InputError(f"model directory not found: {path}")
    if not is_classifier_dir(path):
        raise UsageError(
            f"{path}: not a fine-tuned classifier (no '{CLASSIFIER_KEY}' block in a genomelm config.json); "
            "make one with `genomelm finetune`"
        )
    meta = _native_meta(path)
    if not isinstance(meta[CLASSIFIER_KEY], dict):
        raise FormatError(f"{path / 'config.json'}: the '{CLASSIFIER_KEY}' section must be an object")
    info = ClassifierMeta.from_dict(meta[CLASSIFIER_KEY], path / "config.json")
    model = HyenaDNAClassifier(_config_from(meta["model"], path), len(info.classes), info.pooling)
    missing, unexpected = _load_safetensors(model, path / "model.safetensors")
    if model.config.tie_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    _check_keys(path, missing, unexpected)
    return model.eval(), info
