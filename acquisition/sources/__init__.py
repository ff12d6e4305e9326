"""Image sources, one module each. A source turns its config into a stream of SourceItems."""
