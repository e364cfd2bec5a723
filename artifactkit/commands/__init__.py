"""One module per CLI subcommand (or small family). Each module exposes
`COMMANDS: list[click.Command]`; `artifactkit.cli` discovers them."""
