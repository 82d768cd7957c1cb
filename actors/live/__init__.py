"""The live actor: OpenAI Realtime transcription sessions (schemas/live.py)."""
