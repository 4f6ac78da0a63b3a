"""One module per subcommand: an *Options dataclass, run(options) -> *Summary. No typer, never exits the process."""
