# SPDX-License-Identifier: Apache-2.0
"""The LoRA tests' models: a tiny random BERT, random PEFT LoRA adapters of it, converted by llama.cpp, cached.

- ``base.F32.gguf``: a ``BertModel`` (hidden 64, 2 layers) with all-MiniLM-L6-v2's WordPiece, by the pinned
  ``convert_hf_to_gguf.py``;
- three random PEFT LoRAs of it (rank 4, alpha 8, on the attention's query/key/value and every ``dense`` layer,
  ``init_lora_weights=False`` so that B is random too), each converted by the pinned ``convert_lora_to_gguf.py``:
  ``plain.gguf`` as the converter writes it (no task), and ``query.gguf`` and ``passage.gguf`` with the task
  metadata llama.cpp's converter writes for jina-embeddings-v3's adapters (``adapter.lora.task_name``,
  ``adapter.lora.prompt_prefix``; ``convert_lora_to_gguf.py`` has no option for them, so gguf-py adds them);
- ``other.gguf``: a LoRA of another BERT (hidden 32): the wrong base model;
- ``reference.npz``: transformers' mean-pooled, L2-normalized vectors of :func:`texts` on the base model and on
  each adapter merged into it (``merge_and_unload``), the task adapters' prompts prepended to the texts (and the
  query adapter's without its prompt), and on the task-less and the query adapter merged together.

    python -m tests.support.lora_models   # from the repository root: build (or find) and print the folder
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.support import arch_models, corpus, make_model

RANK, ALPHA = 4, 8
TASKS = {"query": ("retrieval.query", "Represent the query for retrieval: "),
         "passage": ("retrieval.passage", "Represent the document for retrieval: ")}  # fmt: skip
TARGETS = ["query", "key", "value", "dense"]


def texts() -> list[str]:
    """The texts the references are computed for: corpus sentences and a few odd ones."""
    s1, s2 = corpus.sentence_pairs()
    return [*s1[:20], *s2[:17], "A", "Ünïcödé and émojis 🙂 too.", "  spaced   out  "]


def recipe_key() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(arch_models.recipe_key().encode())
    return h.hexdigest()[:12]


def folder() -> Path:
    return make_model.cache_dir() / "lora" / f"tiny-bert-{recipe_key()}"


def ensure() -> Path:
    """The built folder, building it in a child process first (under a lock)."""
    arch_models.build_missing("tests.support.lora_models", {"tiny-bert": folder() / "reference.npz"})
    return folder()


def reference() -> dict[str, np.ndarray]:
    with np.load(ensure() / "reference.npz") as data:
        return {key: data[key] for key in data.files}


# -- building (child process) ---------------------------------------------------------------------------------


def _bert(hf_dir: Path, hidden: int, seed: int) -> None:
    import torch
    import transformers as tf

    vocab_size = arch_models.TOKENIZERS["wordpiece"](hf_dir)
    config = tf.BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=2 * hidden, max_position_embeddings=512, type_vocab_size=2)  # fmt: skip
    config.architectures = ["BertModel"]
    torch.manual_seed(seed)
    model = tf.BertModel(config, add_pooling_layer=False).eval()
    arch_models._spread(model, seed)
    model.save_pretrained(hf_dir)


def _lora(hf_dir: Path, out_dir: Path, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    base = AutoModel.from_pretrained(hf_dir).eval()
    torch.manual_seed(seed)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False)
    peft_model = get_peft_model(base, config)  # B random too: the adapter moves every vector far from the base's
    peft_model.save_pretrained(out_dir)


def _convert_lora(lora_dir: Path, hf_dir: Path, out: Path) -> None:
    src = make_model.llama_source()
    env = dict(os.environ, PYTHONPATH=str(src / "gguf-py"), HF_HUB_OFFLINE="1", NO_LOCAL_GGUF="")
    cmd = [sys.executable, str(src / "convert_lora_to_gguf.py"), "--base", str(hf_dir), "--outtype", "f32",
           "--outfile", str(out), str(lora_dir)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"convert_lora_to_gguf.py failed for {lora_dir}:\n{proc.stderr[-4000:]}")


def _vectors(model, tok, items: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        enc = tok(items, padding=True, return_tensors="pt")
        hidden = model(**enc).last_hidden_state.double()
        mask = enc["attention_mask"].unsqueeze(-1).double()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        return (pooled / pooled.norm(dim=1, keepdim=True)).numpy().astype(np.float32)


def _merged(hf_dir: Path, lora_dirs: list[Path]):  # type: ignore[no-untyped-def]
    from peft import PeftModel
    from transformers import AutoModel

    model = AutoModel.from_pretrained(hf_dir).eval()
    for lora_dir in lora_dirs:  # each adapter's delta B @ A * alpha / r adds to the weights
        model = PeftModel.from_pretrained(model, lora_dir).merge_and_unload().eval()
    return model


def build() -> Path:
    import gguf
    import torch
    from transformers import AutoModel, AutoTokenizer

    from embellama._gguf.reader import rewrite

    torch.set_num_threads(1)
    final = folder()
    tmp = final.with_name(final.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_dir, other_dir = tmp / "hf", tmp / "other-hf"
    _bert(hf_dir, arch_models.HIDDEN, arch_models.SEED)
    _bert(other_dir, 32, arch_models.SEED + 1)
    proc = arch_models.convert(arch_models.ARCHS["distilbert"], hf_dir, tmp / "base.F32.gguf", "f32")
    if proc.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed:\n{proc.stderr[-4000:]}")
    loras = {}
    for k, name in enumerate(("plain", "query", "passage", "other")):
        loras[name] = tmp / f"lora-{name}"
        _lora(other_dir if name == "other" else hf_dir, loras[name], arch_models.SEED + 10 + k)
        _convert_lora(loras[name], other_dir if name == "other" else hf_dir, tmp / f"{name}.gguf")
    string = gguf.GGUFValueType.STRING
    for name, (task, prompt) in TASKS.items():
        keys = {"adapter.lora.task_name": (task, string), "adapter.lora.prompt_prefix": (prompt, string)}
        rewrite(tmp / f"{name}.gguf", tmp / f"{name}.gguf", why="the test's task adapters", set_keys=keys)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    items = texts()
    refs = {"base": _vectors(AutoModel.from_pretrained(hf_dir).eval(), tok, items)}
    refs["plain"] = _vectors(_merged(hf_dir, [loras["plain"]]), tok, items)
    for name, (_, prompt) in TASKS.items():
        refs[name] = _vectors(_merged(hf_dir, [loras[name]]), tok, [prompt + t for t in items])
    refs["query-bare"] = _vectors(_merged(hf_dir, [loras["query"]]), tok, items)  # no prompt
    refs["plain+query"] = _vectors(_merged(hf_dir, [loras["plain"], loras["query"]]), tok,
                                   [TASKS["query"][1] + t for t in items])  # fmt: skip
    np.savez(tmp / "reference.npz", **refs)
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    return final


# -- jina-embeddings-v3's layout ------------------------------------------------------------------------------

JINA_TASKS = {"retrieval.query": "Represent the query for retrieving evidence documents: ",
              "retrieval.passage": "Represent the document for retrieval: "}  # fmt: skip
JINA_RANK, JINA_ALPHA = 4, 1.0


def jina_folder() -> Path:
    return make_model.cache_dir() / "lora" / f"tiny-jina-v3-{recipe_key()}"


def ensure_jina() -> Path:
    """A tiny checkpoint in jina-embeddings-v3's layout, converted by the pinned ``convert_hf_to_gguf.py`` (built in
    a child process first): ``jina.F32.gguf`` and the converter's ``lora-<task>-jina.F32.gguf`` per task, and
    ``merged-<task>.F32.gguf``: the same checkpoint with that task's LoRA merged into its weights (numpy)."""
    arch_models.build_missing("tests.support.lora_models", {"jina": jina_folder() / "done"})
    return jina_folder()


def _jina_tensors(hidden: int, vocab: int, seed: int) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, int]]]:
    """Random weights named as jina-embeddings-v3's checkpoint (XLM-RoBERTa with rotary positions, fused QKV), and
    the LoRA-parametrized ones: name to (fan_in, fan_out), the word embeddings' as an embedding (vocab, hidden)."""
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    plain: dict[str, np.ndarray] = {
        "roberta.embeddings.token_type_embeddings.weight": rand(1, hidden),
        "roberta.emb_ln.weight": 1 + rand(hidden, scale=0.1),
        "roberta.emb_ln.bias": rand(hidden, scale=0.1),
    }
    lora: dict[str, tuple[int, int]] = {"roberta.embeddings.word_embeddings": (vocab, hidden)}
    for i in range(2):
        pre = f"roberta.encoder.layers.{i}"
        lora.update({f"{pre}.mixer.Wqkv": (hidden, 3 * hidden), f"{pre}.mixer.out_proj": (hidden, hidden),
                     f"{pre}.mlp.fc1": (hidden, 2 * hidden), f"{pre}.mlp.fc2": (2 * hidden, hidden)})  # fmt: skip
        plain.update({f"{pre}.mixer.Wqkv.bias": rand(3 * hidden, scale=0.1),
                      f"{pre}.mixer.out_proj.bias": rand(hidden, scale=0.1),
                      f"{pre}.mlp.fc1.bias": rand(2 * hidden, scale=0.1), f"{pre}.mlp.fc2.bias": rand(hidden, scale=0.1),
                      f"{pre}.norm1.weight": 1 + rand(hidden, scale=0.1), f"{pre}.norm1.bias": rand(hidden, scale=0.1),
                      f"{pre}.norm2.weight": 1 + rand(hidden, scale=0.1), f"{pre}.norm2.bias": rand(hidden, scale=0.1)})  # fmt: skip
    for name, (fan_in, fan_out) in lora.items():
        embedding = name.endswith("word_embeddings")
        plain[f"{name}.parametrizations.weight.original"] = (
            rand(fan_in, fan_out, scale=1.0) if embedding else rand(fan_out, fan_in, scale=fan_in**-0.5)
        )
        n = len(JINA_TASKS)
        # jina's LoRAParametrization: linear A (tasks, rank, fan_in), B (tasks, fan_out, rank), delta B @ A;
        # embedding A (tasks, fan_in, rank), B (tasks, rank, fan_out), delta A @ B; both times alpha / rank
        if embedding:
            a, b = rand(n, fan_in, JINA_RANK, scale=0.5), rand(n, JINA_RANK, fan_out, scale=0.5)
        else:
            a, b = rand(n, JINA_RANK, fan_in, scale=fan_in**-0.5), rand(n, fan_out, JINA_RANK, scale=0.5)
        plain[f"{name}.parametrizations.weight.0.lora_A"] = a
        plain[f"{name}.parametrizations.weight.0.lora_B"] = b
    return plain, lora


def _merged_tensors(
    tensors: dict[str, np.ndarray], lora: dict[str, tuple[int, int]], task: int
) -> dict[str, np.ndarray]:
    """The checkpoint with task ``task``'s LoRA merged into the weights (and every LoRA zeroed)."""
    out = dict(tensors)
    for name in lora:
        key = f"{name}.parametrizations.weight"
        a, b = tensors[f"{key}.0.lora_A"][task], tensors[f"{key}.0.lora_B"][task]
        delta = a @ b if name.endswith("word_embeddings") else b @ a
        out[f"{key}.original"] = (tensors[f"{key}.original"] + delta * (JINA_ALPHA / JINA_RANK)).astype(np.float32)
        out[f"{key}.0.lora_A"] = np.zeros_like(tensors[f"{key}.0.lora_A"])
        out[f"{key}.0.lora_B"] = np.zeros_like(tensors[f"{key}.0.lora_B"])
    return out


def build_jina() -> Path:
    import json

    from safetensors.numpy import save_file

    final = jina_folder()
    tmp = final.with_name(final.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_dir = tmp / "hf"
    vocab = arch_models.TOKENIZERS["unigram"](hf_dir)
    hidden = arch_models.HIDDEN
    config = {
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "vocab_size": vocab,
        "hidden_size": hidden, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 2 * hidden,
        "hidden_act": "gelu", "max_position_embeddings": 8194, "type_vocab_size": 1, "layer_norm_eps": 1e-5,
        "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "position_embedding_type": "rotary",
        "rotary_emb_base": 20000.0, "lora_adaptations": list(JINA_TASKS), "task_instructions": JINA_TASKS,
        "lora_rank": JINA_RANK, "lora_alpha": JINA_ALPHA, "lora_main_params_trainable": False,
    }  # fmt: skip
    (hf_dir / "config.json").write_text(json.dumps(config, indent=1))
    tensors, lora = _jina_tensors(hidden, vocab, arch_models.SEED + 40)
    save_file(tensors, str(hf_dir / "model.safetensors"))
    arch = arch_models.ARCHS["xlm-roberta"]
    proc = arch_models.convert(arch, hf_dir, tmp / "jina.F32.gguf", "f32")
    if proc.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf.py failed on the jina-v3 layout:\n{proc.stderr[-4000:]}")
    for k, task in enumerate(JINA_TASKS):
        merged_dir = tmp / f"merged-{task}"
        shutil.copytree(hf_dir, merged_dir, ignore=shutil.ignore_patterns("model.safetensors"))
        save_file(_merged_tensors(tensors, lora, k), str(merged_dir / "model.safetensors"))
        out = tmp / "merged" / f"merged-{task}.F32.gguf"
        out.parent.mkdir(exist_ok=True)
        proc = arch_models.convert(arch, merged_dir, out, "f32")
        if proc.returncode != 0:
            raise RuntimeError(f"convert_hf_to_gguf.py failed on the merged checkpoint:\n{proc.stderr[-4000:]}")
        (tmp / "merged" / f"merged-{task}.F32.gguf").replace(tmp / f"merged-{task}.F32.gguf")
        shutil.rmtree(merged_dir)
    shutil.rmtree(tmp / "merged")  # the merged checkpoints' own (zero) adapters
    (tmp / "done").write_text("ok")
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    return final


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = argv or ["tiny-bert", "jina"]
    if "tiny-bert" in names:
        print(build() if not (folder() / "reference.npz").is_file() else folder())
    if "jina" in names:
        print(build_jina() if not (jina_folder() / "done").is_file() else jina_folder())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
