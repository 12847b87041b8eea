"""The detector side of the online system: batching frames of many domains through one backbone call."""
