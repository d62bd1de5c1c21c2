"""Serve the API (the same as `chatterbox-server`):

python server.py [--model-dir DIR] [--host H] [--port P] [--stand-in] ...   (or ./run.sh)
"""

from chatterbox_server.cli.serve import main
from chatterbox_server.server import Settings, create_app

__all__ = ["Settings", "create_app", "main"]

if __name__ == "__main__":
    main()
