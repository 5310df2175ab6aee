"""Talking to models: the Ollama client, the embedded GGUF backend and MiniLM embeddings.

Imports nothing of ours; heavy libraries (torch, onnxruntime, xllamacpp) load lazily.
"""

from inference.embedded import DEFAULT_MODEL_NAME, EmbeddedLLM, default_gguf_path
from inference.embeddings import (
    EMBEDDING_DIM,
    Embedder,
    EmbeddingError,
    OnnxEmbedder,
    SentenceTransformerEmbedder,
    load_embedder,
)
from inference.ollama import (
    Completion,
    LLMError,
    OllamaClient,
    PermanentLLMError,
    TransientLLMError,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "EMBEDDING_DIM",
    "Completion",
    "EmbeddedLLM",
    "Embedder",
    "EmbeddingError",
    "LLMError",
    "OllamaClient",
    "OnnxEmbedder",
    "PermanentLLMError",
    "SentenceTransformerEmbedder",
    "TransientLLMError",
    "default_gguf_path",
    "load_embedder",
]
