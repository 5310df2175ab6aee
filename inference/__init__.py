"""Talking to models: the Ollama client and (lazily loaded) embeddings. Imports nothing of ours."""

from inference.ollama import (
    Completion,
    LLMError,
    OllamaClient,
    PermanentLLMError,
    TransientLLMError,
)

__all__ = ["Completion", "LLMError", "OllamaClient", "PermanentLLMError", "TransientLLMError"]
