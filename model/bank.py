"""A domain's prompt bank: what K normal reference images contribute to every query of that domain."""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable, TypeVar

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .coreset import layer_coresets, restrict_to_prompts, select_rows
from .neighbours import PatchSearch, create_patch_search
from .standardisation import held_out, leave_one_out_max_cosine

BANK_FORMAT = "inctrl-prompt-bank/1"

T = TypeVar("T")


@dataclass(frozen=True)
class ExposureViews:
    """What exposure views of the references (model/nuisance.py) give the standardisation of the global
    components (model/standardisation.py): more normal values of g and of the appearance distance a."""

    embeddings: torch.Tensor  # (V, E) f_v of the views
    appearance: torch.Tensor  # (V, L, W) u^l of the views
    owners: torch.Tensor  # (V,) int64: the reference each is a view of


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
    # (L, m) int64 rows of `patches` per layer: the greedy k-centre coreset searched for a budget of
    # `coreset_budget` rows (model/coreset.py). Selected when the detector builds the bank and stored with
    # it; banks stored without it (or for another budget) select it on first use.
    coreset: torch.Tensor | None = None
    coreset_budget: int | None = None
    # (V, E) f_v of exposure views of the references and (V,) int64 the reference each is a view of
    # (model/nuisance.py): extra normal values of the global distance g for its standardisation. Banks
    # stored without them standardise g by leave-one-out alone.
    view_embeddings: torch.Tensor | None = None
    view_owners: torch.Tensor | None = None
    # (V, L, W) u^l of the same views: extra normal values of the appearance distance a. Banks stored
    # without it (written before a existed) standardise a by leave-one-out alone.
    view_appearance: torch.Tensor | None = None
    _searches: dict[tuple[str, int, int | None], PatchSearch] = field(default_factory=dict, repr=False, compare=False)
    _copies: dict[torch.device, PromptBank] = field(default_factory=dict, repr=False, compare=False)
    _derived: dict[str, tuple[Hashable, object]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def shots(self) -> int:
        return int(self.embeddings.shape[0])

    def leave_one_out(self) -> torch.Tensor | None:
        """(H, L, N) LOO nearest-patch cosines (model/standardisation.py), computed once; None when K = 1."""
        if self.loo_max_cosine is None and self.shots >= 2:
            with torch.no_grad():
                self.loo_max_cosine = leave_one_out_max_cosine(self.patches, self.shots)
        return self.loo_max_cosine

    def derived(self, name: str, state: Hashable, compute: Callable[[], T]) -> T:
        """A value computed from this bank and something else in ``state`` (e.g. the heads' weights), kept
        with the bank until ``state`` changes; one value per name."""
        kept = self._derived.get(name)
        if kept is None or kept[0] != state:
            kept = self._derived[name] = (state, compute())
        return kept[1]  # type: ignore[return-value]

    def coreset_for(self, budget: int | None) -> torch.Tensor | None:
        """(L, m) coreset rows searched for ``budget``, selected once; None when the bank is searched exactly."""
        if budget is None or self.patches.shape[1] <= budget:
            return None
        if self.coreset is None or self.coreset_budget != budget:
            with torch.no_grad():
                self.coreset, self.coreset_budget = layer_coresets(self.patches, budget), budget
        return self.coreset

    def search(self, backend: str, chunk_rows: int, max_references: int | None = None) -> PatchSearch:
        """The nearest-patch search over this bank (its coreset above ``max_references`` rows per layer),
        built once per backend and budget and cached."""
        key = (backend, chunk_rows, max_references)
        if key not in self._searches:
            rows = self.coreset_for(max_references)
            references = self.patches if rows is None else select_rows(self.patches, rows)
            self._searches[key] = create_patch_search(references, backend, chunk_rows)
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
                None if self.coreset is None else self.coreset.to(device), self.coreset_budget,
                None if self.view_embeddings is None else self.view_embeddings.to(device),
                None if self.view_owners is None else self.view_owners.to(device),
                None if self.view_appearance is None else self.view_appearance.to(device),
            )
        return self._copies[device]

    def subset(self, keep: list[int]) -> PromptBank:
        """The bank of the prompts ``keep`` only (e.g. all but one, for leave-one-out calibration).

        patches (L, K*N, W) -> (L, len(keep)*N, W); text prototypes are shared, not recomputed; the coreset
        keeps this bank's selected rows of those prompts, so K leave-one-out banks cost no selection.
        """
        if not keep or len(set(keep)) != len(keep) or not all(0 <= i < self.shots for i in keep):
            raise PromptBankError(f"subset {keep} of a bank of {self.shots} prompts must be distinct, in range and non-empty")
        n_layers, rows, width = self.patches.shape
        index = torch.tensor(keep, device=self.patches.device)
        patches = self.patches.reshape(n_layers, self.shots, rows // self.shots, width)[:, index].reshape(n_layers, -1, width)
        coreset = None if self.coreset is None else restrict_to_prompts(self.coreset, self.shots, rows, keep)
        view_embeddings = view_owners = view_appearance = None
        if self.view_embeddings is not None and self.view_owners is not None:
            renumbered = torch.full((self.shots,), -1, dtype=torch.long, device=self.view_owners.device)
            renumbered[index.to(renumbered.device)] = torch.arange(len(keep), device=renumbered.device)
            kept = renumbered[self.view_owners] >= 0
            view_embeddings, view_owners = self.view_embeddings[kept], renumbered[self.view_owners[kept]]
            view_appearance = None if self.view_appearance is None else self.view_appearance[kept]
        return PromptBank(
            self.class_name, self.backbone_id, self.embeddings[index], patches.contiguous(), self.text,
            coreset=coreset, coreset_budget=None if coreset is None else self.coreset_budget,
            view_embeddings=view_embeddings, view_owners=view_owners, view_appearance=view_appearance,
        )  # fmt: skip

    def to_bytes(self) -> bytes:
        """safetensors with the metadata in its header: one self-describing object for the store."""
        tensors = {"embeddings": self.embeddings, "patches": self.patches, "text": self.text}
        if self.leave_one_out() is not None:
            tensors["loo_max_cosine"] = self.leave_one_out()
        metadata = {"format": BANK_FORMAT, "class_name": self.class_name, "backbone_id": self.backbone_id}
        stored = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
        if self.coreset is not None:
            stored["coreset"] = self.coreset.detach().long().cpu().contiguous()
            metadata["coreset_budget"] = str(self.coreset_budget)
        if self.view_embeddings is not None and self.view_owners is not None:
            stored["view_embeddings"] = self.view_embeddings.detach().float().cpu().contiguous()
            stored["view_owners"] = self.view_owners.detach().long().cpu().contiguous()
        if self.view_appearance is not None:
            stored["view_appearance"] = self.view_appearance.detach().float().cpu().contiguous()
        return save_tensors(stored, metadata)

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
        coreset, budget = _stored_coreset(tensors.get("coreset"), metadata.get("coreset_budget"), patches.shape, source)
        view_embeddings, view_owners = _stored_views(tensors.get("view_embeddings"), tensors.get("view_owners"), embeddings.shape, source)
        view_appearance = _stored_view_appearance(tensors.get("view_appearance"), view_owners, patches.shape, source)
        return cls(
            metadata["class_name"], metadata["backbone_id"], embeddings, patches, text, loo, coreset, budget,
            view_embeddings, view_owners, view_appearance,
        )  # fmt: skip

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> PromptBank:
        path = Path(path)
        if not path.is_file():
            raise PromptBankError(f"prompt bank file {path} does not exist")
        return cls.from_bytes(path.read_bytes(), str(path))


def _stored_coreset(
    coreset: torch.Tensor | None, budget: str | None, patches_shape: torch.Size, source: str
) -> tuple[torch.Tensor | None, int | None]:
    """The stored coreset rows (L, m) and their budget, checked against the patches (L, M, W); banks written
    before coreset indices existed have neither and select them on first use."""
    if coreset is None and budget is None:
        return None, None
    if coreset is None or budget is None or not budget.isdigit() or int(budget) < 1:
        raise PromptBankError(f"{source}: coreset indices and their budget must be stored together (budget {budget!r})")
    n_layers, rows = patches_shape[:2]
    valid = (
        coreset.dtype == torch.int64
        and coreset.ndim == 2
        and coreset.shape[0] == n_layers
        and 1 <= coreset.shape[1] <= int(budget)
        and int(coreset.min()) >= 0
        and int(coreset.max()) < rows
    )
    if not valid:
        raise PromptBankError(
            f"{source}: coreset indices {tuple(coreset.shape)} {coreset.dtype} must be int64 (L={n_layers}, m <= {budget}) "
            f"rows in [0, {rows})"
        )
    return coreset, int(budget)


def _stored_views(
    view_embeddings: torch.Tensor | None, view_owners: torch.Tensor | None, embeddings_shape: torch.Size, source: str
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The stored exposure views (V, E) and their owners (V,), checked against the embeddings (K, E); banks
    written before views existed have neither."""
    if view_embeddings is None and view_owners is None:
        return None, None
    shots, width = embeddings_shape
    valid = (
        view_embeddings is not None
        and view_owners is not None
        and view_embeddings.ndim == 2
        and view_embeddings.shape[1] == width
        and view_owners.dtype == torch.int64
        and tuple(view_owners.shape) == (view_embeddings.shape[0],)
        and (view_owners.numel() == 0 or (int(view_owners.min()) >= 0 and int(view_owners.max()) < shots))
    )
    if not valid:
        shapes = {name: None if t is None else (tuple(t.shape), str(t.dtype)) for name, t in (("view_embeddings", view_embeddings), ("view_owners", view_owners))}
        raise PromptBankError(f"{source}: exposure views {shapes} must be (V, {width}) embeddings with (V,) int64 owners in [0, {shots})")
    return view_embeddings, view_owners


def _stored_view_appearance(
    view_appearance: torch.Tensor | None, view_owners: torch.Tensor | None, patches_shape: torch.Size, source: str
) -> torch.Tensor | None:
    """The stored views' u^l (V, L, W), checked against the views' owners (V,) and the patches (L, K*N, W);
    banks written before the appearance distance existed have none."""
    if view_appearance is None:
        return None
    n_layers, _, width = patches_shape
    if view_owners is None or tuple(view_appearance.shape) != (len(view_owners), n_layers, width):
        expected = (None if view_owners is None else len(view_owners), n_layers, width)
        raise PromptBankError(f"{source}: views' appearance has shape {tuple(view_appearance.shape)}, expected {expected} (with view owners)")
    return view_appearance


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
