"""`python -m artifactkit ...` runs the CLI (same as the `artifactkit` script)."""

from artifactkit.cli import main

if __name__ == "__main__":
    main(prog_name="artifactkit")
