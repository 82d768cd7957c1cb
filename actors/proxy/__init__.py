"""Model proxy actor: serves asr.transcribe.<model> and forwards audio to the model server."""

from actors.proxy.actor import ModelProxy

__all__ = ["ModelProxy"]
