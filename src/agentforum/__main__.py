"""``python -m agentforum``: the command line (see :mod:`agentforum.cli`)."""

from agentforum.cli import main

if __name__ == "__main__":
    main()
