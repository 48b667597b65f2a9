"""The language server for `.sw` files (`sw lsp`): diagnostics as you type, formatting,
document symbols, go to definition and quick fixes, over the same front end `sw check` uses
(lsp/server.py). Never imports torch."""
