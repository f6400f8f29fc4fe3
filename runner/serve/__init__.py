"""`ccrun serve`: a trained run (or a Hugging Face model directory) over HTTP.

The editor endpoint speaks the Hugging Face Inference API's text generation, so GPT-Code-Clippy's
VS Code extension works by pointing its model URL here; OpenAI completions serve editors that speak
that. Requests that arrive together are decoded together (`batcher.Batcher`) with the evals'
token choice, in shapes compiled at start (`decode.Decoder`). GET / is a problem-solver page using
the APPS prompt of training.

  source.py   what is served (run directory or HF directory) and the listening socket (light imports)
  api.py      request bodies;  errors.py  clear 422 messages
  decode.py   the decoder: a few bucketed shapes, all compiled before the server says it is ready
  batcher.py  dynamic batching on one model thread;  app.py  the routes and uvicorn
  guard.py    limits below and around the routes: header and connection limits, Host, Origin
"""
