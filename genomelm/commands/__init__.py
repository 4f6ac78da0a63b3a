"""One module per subcommand: an *Options dataclass, run(options) -> *Summary. No typer, no sys.exit."""
