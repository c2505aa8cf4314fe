"""``python -m ttc.cli``: the ``ttc`` command."""

from ttc.cli import app

if __name__ == "__main__":
    app()
