"""Reports: console tables now; Markdown/HTML study reports build on the same numbers."""
