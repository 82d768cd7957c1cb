"""HTTP model server: one ASR model behind ``GET /health`` and ``POST /transcribe``; ``python -m model_server``.

A program of its own (in a model image, or a child process of the local runtime). Importing it changes nothing in
the importing process: the control plane imports ``model_server.cuda_libs``. What the server sets for itself
(``HF_HUB_OFFLINE``) is set by ``__main__.main`` and by the engines, just before they load weights.
"""
