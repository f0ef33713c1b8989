"""The local daemon (`differential-inpaint serve`): websocket server, job queue, pixel formats.

- `server`: connections, handshake, security checks, message dispatch, outboxes
- `jobs`: the one queue for every client, the worker thread running the engine, cancel
- `pixels`: wire pixel formats <-> the engine's float32 RGBA arrays
- `security`: Origin/Host policy and the token file
- `models`: the model names the daemon offers
- `cli`: the `serve` subcommand
"""
