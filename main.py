"""Synthesise one WAV file from the command line (the same as `chatterbox-tts`):

python main.py --text "Hello there." --voice voice.wav --output out.wav [--model-dir DIR]
"""

import sys

from chatterbox_server.cli.synthesize import main

if __name__ == "__main__":
    sys.exit(main())
