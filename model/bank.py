"""A domain's prompt bank: what K normal reference images contribute to every query of that domain."""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .neighbours import PatchSearch, create_patch_search
from .standardisation import held_out, leave_one_out_max_cosine

BANK_FORMAT = "inctrl-prompt-bank/1"


class PromptBankError(ValueError):
    """A prompt bank that cannot be used: malformed file or built with another backbone."""


@dataclass
class PromptBank:
    """Reference features of one domain. Head-independent, so a bank outlives retraining of the heads."""

    class_name: str
    backbone_id: str  # the backbone (name, weights, layers) that produced these features
    embeddings: torch.Tensor  # (K, E) f_v of the prompts, before psi
    patches: torch.Tensor  # (L, K * N, W), L2-normalised patch tokens of all prompts per layer
    text: torch.Tensor  # (2, E), rows F_n, F_a
    # (H, L, N) nearest-patch cosines of the held-out references against the others (K >= 2); derived
    # from `patches`, so banks stored without it get it computed on first use.
    loo_max_cosine: torch.Tensor | None = None
    _searches: dict[tuple[str, int, int | None], PatchSearch] = field(default_factory=dict, repr=False, compare=False)
    _copies: dict[torch.device, PromptBank] = field(default_factory=dict, repr=False, compare=False)

    @property
    def shots(self) -> int:
        return int(self.embeddings.shape[0])

    def leave_one_out(self) -> torch.Tensor | None:
        """(H, L, N) LOO nearest-patch cosines (model/standardisation.py), computed once; None when K = 1."""
        if self.loo_max_cosine is None and self.shots >= 2:
            with torch.no_grad():
                self.loo_max_cosine = leave_one_out_max_cosine(self.patches, self.shots)
        return self.loo_max_cosine

    def search(self, backend: str, chunk_rows: int, max_references: int | None = None) -> PatchSearch:
        """The nearest-patch search over this bank, built once per backend and budget and cached."""
        key = (backend, chunk_rows, max_references)
        if key not in self._searches:
            self._searches[key] = create_patch_search(self.patches, backend, chunk_rows, max_references)
        return self._searches[key]

    def on(self, device: torch.device) -> PromptBank:
        """This bank on ``device``; the copy (and its search indexes) is made once and kept."""
        if self.embeddings.device == device:
            return self
        if device not in self._copies:
            loo = self.leave_one_out()
            self._copies[device] = PromptBank(
                self.class_name, self.backbone_id, self.embeddings.to(device), self.patches.to(device), self.text.to(device),
                None if loo is None else loo.to(device),
            )
        return self._copies[device]

    def subset(self, keep: list[int]) -> PromptBank:
        """The bank of the prompts ``keep`` only (e.g. all but one, for leave-one-out calibration).

        patches (L, K*N, W) -> (L, len(keep)*N, W); text prototypes are shared, not recomputed.
        """
        if not keep or len(set(keep)) != len(keep) or not all(0 <= i < self.shots for i in keep):
            raise PromptBankError(f"subset {keep} of a bank of {self.shots} prompts must be distinct, in range and non-empty")
        n_layers, rows, width = self.patches.shape
        index = torch.tensor(keep, device=self.patches.device)
        patches = self.patches.reshape(n_layers, self.shots, rows // self.shots, width)[:, index].reshape(n_layers, -1, width)
        return PromptBank(self.class_name, self.backbone_id, self.embeddings[index], patches.contiguous(), self.text)

    def to_bytes(self) -> bytes:
        """safetensors with the metadata in its header: one self-describing object for the store."""
        tensors = {"embeddings": self.embeddings, "patches": self.patches, "text": self.text}
        if self.leave_one_out() is not None:
            tensors["loo_max_cosine"] = self.leave_one_out()
        metadata = {"format": BANK_FORMAT, "class_name": self.class_name, "backbone_id": self.backbone_id}
        return save_tensors({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, metadata)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> PromptBank:
        metadata = _safetensors_metadata(data, source)
        if metadata.get("format") != BANK_FORMAT:
            raise PromptBankError(f"{source}: not a prompt bank (format {metadata.get('format')!r})")
        try:
            tensors = load_tensors(data)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for corrupt bodies
            raise PromptBankError(f"{source}: corrupt prompt bank ({exc})") from exc
        missing = {"embeddings", "patches", "text"} - tensors.keys()
        if missing or not {"class_name", "backbone_id"} <= metadata.keys():
            raise PromptBankError(f"{source}: prompt bank lacks tensors {sorted(missing)} or its metadata")
        embeddings, patches, text = tensors["embeddings"], tensors["patches"], tensors["text"]
        consistent = (
            embeddings.ndim == 2
            and patches.ndim == 3
            and text.shape == (2, embeddings.shape[1])
            and embeddings.shape[0] > 0
            and patches.shape[1] % embeddings.shape[0] == 0
        )
        if not consistent:
            shapes = {k: tuple(v.shape) for k, v in tensors.items()}
            raise PromptBankError(f"{source}: inconsistent prompt bank shapes {shapes}; expected (K, E), (L, K*N, W), (2, E)")
        loo = tensors.get("loo_max_cosine")  # absent in banks written before it existed: recomputed on use
        n_layers, rows = patches.shape[:2]
        expected_loo = (len(held_out(embeddings.shape[0])), n_layers, rows // embeddings.shape[0])
        if loo is not None and (embeddings.shape[0] < 2 or tuple(loo.shape) != expected_loo):
            raise PromptBankError(f"{source}: leave-one-out cosines have shape {tuple(loo.shape)}, expected {expected_loo}")
        return cls(metadata["class_name"], metadata["backbone_id"], embeddings, patches, text, loo)

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> PromptBank:
        path = Path(path)
        if not path.is_file():
            raise PromptBankError(f"prompt bank file {path} does not exist")
        return cls.from_bytes(path.read_bytes(), str(path))


def _safetensors_metadata(data: bytes, source: str) -> dict[str, str]:
    """The __metadata__ of a safetensors blob (the format: u64 header length, JSON header, tensors)."""
    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + length])
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise PromptBankError(f"{source}: not a safetensors file ({exc})") from exc
    if not isinstance(header, dict):
        raise PromptBankError(f"{source}: not a safetensors file (header is not a JSON object)")
    return header.get("__metadata__") or {}
