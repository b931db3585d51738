# SPDX-License-Identifier: Apache-2.0
"""LoRA adapters and tasks: ``ModelConfig.lora`` loaded with the model, and the adapters a call's ``task`` sets.

An adapter whose GGUF names a task (``adapter.lora.task_name``, with its prompt in ``adapter.lora.prompt_prefix``:
what llama.cpp's converter writes for each of jina-embeddings-v3's task adapters) applies only to the calls of that
task; an adapter without one (``convert_lora_to_gguf.py``'s output) applies to every call. A ``{task: path}`` dict
in the config names the tasks itself. The context's adapters change only when a call's task differs from the last
one (:meth:`embellama.llama.Context.set_adapters` does nothing for the adapters already set).

Before llama.cpp reads an adapter, its header is checked against the model's (:func:`check_adapter`), so that a
LoRA of another model is refused with a message saying what differs, not only llama.cpp's log line.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from embellama._config import ModelConfig
from embellama._exceptions import ConfigurationError, ModelLoadError
from embellama._gguf.reader import Header, read_header
from embellama._hub.resolve import resolve_path
from embellama.llama import Context, LoraAdapter, Model

__all__ = ["TASK_NAME_KEY", "TASK_PROMPT_KEY", "TaskAdapter", "Tasks", "check_adapter"]

TASK_NAME_KEY = "adapter.lora.task_name"
"""The GGUF key of an adapter's task (llama.cpp's ``LLM_KV_ADAPTER_LORA_TASK_NAME``)."""
TASK_PROMPT_KEY = "adapter.lora.prompt_prefix"
"""The GGUF key of the prompt a task's texts start with (``LLM_KV_ADAPTER_LORA_PROMPT_PREFIX``)."""
_PAIR = (".lora_a", ".lora_b")


@dataclasses.dataclass(frozen=True)
class TaskAdapter:
    """One loaded adapter: its task (None: applied to every call), the prompt of its task, and the adapter."""

    task: str | None
    prompt: str | None
    adapter: LoraAdapter


def _shape(header: Header, name: str) -> tuple[int, ...]:
    return header.tensors[name][0]


def check_adapter(path: Path, model: Model, model_header: Header, who: str) -> Header:
    """The adapter GGUF ``path``'s header, checked against the model: a LoRA, of its architecture and shapes.

    llama.cpp checks the same when it loads the adapter (and refuses it with a log line); this says why in
    the exception.

    Raises
    ------
    ModelLoadError
        Not a LoRA adapter, an adapter of another architecture, a tensor the model lacks or of another shape.
    """
    header = read_header(path)
    meta = header.metadata
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        kind = f"general.type {meta.get('general.type')!r}, adapter.type {meta.get('adapter.type')!r}"
        raise ModelLoadError(str(path), f"not a LoRA adapter GGUF ({kind}; a model file is not an adapter)", who)
    if header.architecture != model.architecture:
        raise ModelLoadError(
            str(path),
            f"a LoRA adapter of a {header.architecture!r} model; {who} is {model.architecture!r}",
            who,
        )
    for name in header.tensors:
        if name.endswith("_norm.weight"):
            continue  # llama.cpp skips them
        if not name.endswith(_PAIR):
            raise ModelLoadError(str(path), f"tensor {name!r} is neither a lora_a nor a lora_b", who)
        base, side = name[: -len(".lora_a")], name[-1]
        other = f"{base}.lora_{'b' if side == 'a' else 'a'}"
        if other not in header.tensors:
            raise ModelLoadError(str(path), f"tensor {name!r} has no {other!r}", who)
        if base not in model_header.tensors:
            raise ModelLoadError(
                str(path), f"the adapter changes {base!r}, which {who} does not have: a LoRA of another model", who
            )
        if side == "b":
            continue
        a, b, w = _shape(header, name), _shape(header, other), _shape(model_header, base)
        if base == "token_embd.weight":  # llama.cpp's layout: A and B swapped
            fits = len(w) == 2 and w[0] == b[1] and w[1] == a[1]
        else:
            fits = len(w) == 2 and w[0] == a[0] and w[1] == b[1] and a[1] == b[0]
        if not fits:
            raise ModelLoadError(
                str(path),
                f"the adapter's {base!r} (lora_a {list(a)}, lora_b {list(b)}) does not fit {who}'s {list(w)}: a LoRA "
                "of another base model",
                who,
            )
    return header


def _specs(config: ModelConfig) -> list[tuple[str | None, str | os.PathLike[str]]]:
    lora = config.lora
    if lora is None:
        return []
    if isinstance(lora, dict):
        return list(lora.items())
    return [(None, item) for item in lora]


class Tasks:
    """The LoRA adapters of one loaded model by task, and the adapters each task sets on a context.

    Parameters
    ----------
    adapters : list of TaskAdapter
        The model's adapters, in the config's order.
    name : str
        The model's name, for errors.
    """

    def __init__(self, adapters: list[TaskAdapter], name: str) -> None:
        self.adapters = adapters
        self.name = name
        self._always = [a.adapter for a in adapters if a.task is None]
        self._by_task: dict[str, TaskAdapter] = {}
        for item in adapters:
            if item.task is None:
                continue
            if item.task in self._by_task:
                first = self._by_task[item.task].adapter.path
                raise ConfigurationError(
                    f"model {name!r}: two LoRA adapters for the task {item.task!r}: {first} and {item.adapter.path}"
                )
            self._by_task[item.task] = item

    @classmethod
    def load(cls, model: Model, config: ModelConfig) -> Tasks:
        """The adapters ``config.lora`` names, checked and loaded for ``model`` (``hf://`` ones from the cache).

        Raises
        ------
        ModelNotFoundError, HubNotFoundError
            An adapter file is missing.
        ModelLoadError
            Not a LoRA adapter of this model (see :func:`check_adapter`), or llama.cpp refused it.
        LibraryError
            The libllama has no LoRA functions.
        ConfigurationError
            Two adapters of one task.
        """
        specs = _specs(config)
        if not specs:
            return cls([], config.name)
        who = f"model {config.name!r}"
        model_header = read_header(model.path)
        loaded = []
        for task, spec in specs:
            path, _ = resolve_path(spec)
            header = check_adapter(path, model, model_header, who)
            adapter = model.load_lora(path)
            meta_task = header.metadata.get(TASK_NAME_KEY)
            prompt = header.metadata.get(TASK_PROMPT_KEY)
            chosen = task if task is not None else (meta_task if isinstance(meta_task, str) and meta_task else None)
            loaded.append(TaskAdapter(chosen, prompt if isinstance(prompt, str) else None, adapter))
        return cls(loaded, config.name)

    @property
    def names(self) -> list[str]:
        """The tasks, sorted."""
        return sorted(self._by_task)

    def check(self, task: str | None) -> str | None:
        """``task`` if the model has it (None: no task), else ConfigurationError listing the tasks."""
        if task is None:
            return None
        if not isinstance(task, str) or task not in self._by_task:
            have = ", ".join(repr(t) for t in self.names) or "none (no LoRA adapter with a task is loaded)"
            raise ConfigurationError(f"model {self.name!r}: unknown task {task!r}; its tasks: {have}")
        return task

    def prompt(self, task: str | None) -> str | None:
        """The prompt the task's adapter names (None: none, or no task)."""
        return None if task is None else self._by_task[task].prompt

    def activate(self, context: Context, task: str | None) -> None:
        """Set on ``context`` the adapters for ``task``: the task-less ones, and the task's (a no-op when set)."""
        if not self.adapters:
            return
        chosen = self._always if task is None else [*self._always, self._by_task[task].adapter]
        context.set_adapters(chosen)
