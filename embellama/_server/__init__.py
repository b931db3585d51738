# SPDX-License-Identifier: Apache-2.0
"""``embellama serve``: an OpenAI-compatible embeddings server over an :class:`EmbeddingEngine`.

Starlette and uvicorn come with the optional extra ``embellama[server]``; ``import embellama``
never imports this package. Endpoints:

- ``POST /v1/embeddings``: OpenAI's request and response (``input`` as a string, a list of
  strings, a token array or a list of token arrays; ``model``; ``encoding_format`` float or
  base64; ``dimensions``), errors in OpenAI's error shape;
- ``POST /v1/rerank`` (and ``/rerank``) for reranker (cross-encoder) models, in Jina's and Cohere's shape:
  ``{"model", "query", "documents": [str, ...], "top_n", "return_documents"}`` answered with
  ``{"model", "object": "list", "results": [{"index", "relevance_score"[, "document": {"text"}]}, ...],
  "usage"}``, best first; the score is the model's default activation (sigmoid for one output);
- ``GET /v1/models`` and ``GET /v1/models/{id}`` (each model's ``kind``: "embedding", "reranker", "classifier",
  "sparse" or "multi_vector");
  ``GET /health``; ``GET /metrics`` (Prometheus text);
- TEI's API (``tei``): ``/embed``, ``/embed_all``, ``/rerank`` (TEI's body), ``/tokenize``, ``/decode``, ``/info``,
  ``POST /`` by model kind, ``/predict`` (a classifier's texts, a reranker's pairs), ``/embed_sparse`` (a sparse
  model) and embellama's ``/embed_multi`` (a multi-vector model's token vectors); 424 where no such model is
  served; Ollama's (``ollama``): ``/api/embed``,
  ``/api/embeddings``, ``/api/tags``, ``/api/show``, ``/api/version``; llama-server's (``llamacpp``): ``/tokenize``
  (``content``) and ``/detokenize``. Each answers errors in its API's shape, behind the same key, limits,
  backpressure and metrics (docs/guide/apis.md).

Concurrent requests meet in the engine's dynamic batching: requests waiting for the same
copy of a model share one llama.cpp call. A client that disconnects cancels its request if
it has not started. SIGTERM (and SIGINT) drain: the listening socket closes, requests
already received finish, new ones get 503, then the models are freed and the process exits 0.

Modules: ``app`` (create_app: routes and the guard around each handler), ``routes`` (the handlers),
``schemas`` (limits, the served models' views, request parsing), ``state`` (what the handlers share),
``errors`` (the error shapes), ``metrics`` (Prometheus text), ``run`` (serve: uvicorn, signals, drain), ``tei``,
``ollama``, ``llamacpp`` (the other APIs), ``texts`` (their texts: prompt, count, left or right cut).
"""

from embellama._server.app import create_app
from embellama._server.run import serve
from embellama._server.schemas import ServerLimits

__all__ = ["ServerLimits", "create_app", "serve"]
