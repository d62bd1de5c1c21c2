"""Benchmark a running TTS server (the same as `chatterbox-bench`):

python benchmark.py --register-voice voice.wav
python benchmark.py --voice-id ID --concurrency 1,2,4,8,16 --requests 50
python benchmark.py --voice-id ID --find-max-concurrency
python benchmark.py --voice-id ID --rate 0.5,1,2 --requests 40      # open loop, Poisson arrivals
"""

import sys

from chatterbox_server.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
