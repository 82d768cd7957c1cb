"""Durable transcription jobs (issue 21): what is built so far is the checkpointed decode (`checkpoints`)."""
