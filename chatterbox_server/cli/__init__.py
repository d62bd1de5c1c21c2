"""Command-line entry points: serve (server.py), synthesize one file (main.py), benchmark (benchmark.py)."""
