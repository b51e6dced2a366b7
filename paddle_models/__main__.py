"""``python -m paddle_models <command> [options]``: the project's commands (see ``paddle_models/commands``)."""
import sys

from .commands import main

if __name__ == "__main__":
    sys.exit(main())
