import os
import sys

from .cli import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # one of several torchrun processes: its process group is destroyed and its files written; leave without
    # the interpreter's teardown, where gloo's worker threads now and then abort the process (SIGABRT,
    # "terminate called without an active exception") after a run that succeeded
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
