"""Export formats, registered by name with ``@register_format``: each turns a model and an example input into a
file, and loads that file back as a runner (a tensor in, the model's output tensor out) for parity checks
and inference cells. The exporters are the field's own: ``torch.jit.trace``, ``torch.onnx.export(...,
dynamo=True)`` run through ONNX Runtime, and ``torch.export``."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

Runner = Callable[[torch.Tensor], torch.Tensor]


class Format:
    """One export format. ``needs``: modules it imports (missing ones make it unavailable, with the reason)."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()

    def missing(self) -> list[str]:
        return [m for m in self.needs if importlib.util.find_spec(m) is None]

    def export(self, model: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool) -> dict[str, Any]:
        """Write the exported model to ``path``; returns what the manifest should say about it."""
        raise NotImplementedError

    def load(self, path: Path, device: torch.device) -> Runner:
        raise NotImplementedError


FORMATS: dict[str, Format] = {}


def register_format(name: str) -> Callable[[type[Format]], type[Format]]:
    def deco(cls: type[Format]) -> type[Format]:
        if name in FORMATS:
            raise ValueError(f"export format {name!r} is registered twice")
        cls.name = name
        FORMATS[name] = cls()
        return cls

    return deco


def batch_dim(dynamic_batch: bool) -> tuple[dict[int, Any], ...] | None:
    """torch.export's dynamic shape for the one input: its first dim free from 1 up (the exporters otherwise
    specialise a dim of size 0 or 1, and freeze every dim to the example's size)."""
    return ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None


@register_format("torchscript")
class TorchScript(Format):
    """``torch.jit.trace``: records the ops one example runs, so Python control flow is frozen to the
    branch that example took (the parity check is what catches a model for which that is wrong)."""

    suffix = ".ts"

    def export(self, model: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool) -> dict[str, Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript is deprecated in torch 2.x; the manifest says so
            traced = torch.jit.trace(model, (example,), check_trace=False)
        torch.jit.save(traced, str(path))
        return {"exporter": "torch.jit.trace", "note": "TorchScript is deprecated in torch 2.x (use exported-program)"}

    def load(self, path: Path, device: torch.device) -> Runner:
        module = torch.jit.load(str(path), map_location=device).eval()
        return lambda x: module(x)


@register_format("exported-program")
class ExportedProgram(Format):
    """``torch.export``: a whole-graph capture (a data-dependent branch is an error, not a frozen branch),
    saved as a ``.pt2`` archive."""

    suffix = ".pt2"

    def export(self, model: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool) -> dict[str, Any]:
        program = torch.export.export(model, (example,), dynamic_shapes=batch_dim(dynamic_batch))
        torch.export.save(program, str(path))
        return {"exporter": "torch.export.export"}

    def load(self, path: Path, device: torch.device) -> Runner:
        module = torch.export.load(str(path)).module()
        return lambda x: module(x)


@register_format("onnx")
class Onnx(Format):
    """``torch.onnx.export(..., dynamo=True)`` (torch.export underneath), run with ONNX Runtime."""

    suffix = ".onnx"
    needs = ("onnx", "onnxscript", "onnxruntime")

    def export(self, model: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool) -> dict[str, Any]:
        import onnx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (example,), dynamo=True, dynamic_shapes=batch_dim(dynamic_batch), verbose=False
            )
        assert program is not None
        program.save(str(path))
        opsets = {o.domain or "ai.onnx": o.version for o in onnx.load(str(path), load_external_data=False).opset_import}
        return {"exporter": "torch.onnx.export(dynamo=True)", "opset": opsets.get("ai.onnx"), "onnx": onnx.__version__}

    def load(self, path: Path, device: torch.device) -> Runner:
        import onnxruntime as ort

        wanted = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
        providers = [p for p in (wanted, "CPUExecutionProvider") if p in ort.get_available_providers()]
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the cell's threads, as torch runs with
        session = ort.InferenceSession(str(path), options, providers=list(dict.fromkeys(providers)))
        name = session.get_inputs()[0].name

        def run(x: torch.Tensor) -> torch.Tensor:
            out = session.run(None, {name: x.detach().cpu().numpy()})[0]
            return torch.from_numpy(out).to(x.device)

        return run


def format_named(name: str) -> Format:
    """A registered format; an unknown name is a one-line error naming the known ones."""
    from trainer_core.errors import ConfigError

    if name not in FORMATS:
        raise ConfigError(f"--format {name}: unknown export format; known: {', '.join(FORMATS)}")
    return FORMATS[name]
