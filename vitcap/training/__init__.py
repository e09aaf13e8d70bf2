"""Lightning plumbing shared by the tasks and the CLI: crash-safe checkpoint files, callbacks, signal handling."""
