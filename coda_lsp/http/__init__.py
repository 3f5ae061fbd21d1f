"""The engine over HTTP (`coda-lsp serve`) and the remote-engine client the language server uses.

app.py (Starlette routes, API key, body limit, SSE) -> schemas.py (request fields -> HoleSpec) ->
worker.py (model thread, bounded queue, batches) -> responses.py (llama.cpp / OpenAI answers);
hole_text.py (settled text, stop strings); remote.py (the client); serve.py (the command).
"""
