"""``python -m rafttool``: the ``raft`` command where its console script is not installed."""

from rafttool.cli.main import app

if __name__ == "__main__":
    app(prog_name="raft")
