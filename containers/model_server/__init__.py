"""HTTP model server: one ASR model behind ``GET /health`` and ``POST /transcribe``.

huggingface_hub reads ``HF_HUB_OFFLINE`` once, when it is first imported (faster_whisper imports it), so it is
set here, before any module of the server can import faster_whisper: weights come from a mounted directory or an
installed package, never from the network at request time.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
