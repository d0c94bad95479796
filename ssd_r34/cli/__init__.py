"""The command lines: ssd_r34/cli/<tool>.py is tools/<tool>.py's code (docs/tools.md)."""
