"""`python -m artifactkit ...` runs the CLI (same as the `artifactkit` script)."""

from artifactkit.entry import run

if __name__ == "__main__":
    run()
