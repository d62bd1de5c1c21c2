"""python -m chatterbox_server.model.stand_in OUT_DIR [--profile tiny|faithful] ..."""

from chatterbox_server.model.stand_in import main

raise SystemExit(main())
