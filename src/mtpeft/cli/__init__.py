"""Command line: one entry point; each sub-command module only parses and calls into the packages."""
