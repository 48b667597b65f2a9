"""Emitting Python source for `sw compile` (issue 5, in progress).

Values from a spec reach an emitted script only as literals built here (`literals.py`),
never as text pasted into code; the script's code comes from our own runtime modules,
extracted by name with `ast` (`extract.py`), so `sw run` and a compiled script run the same
source. Nothing here imports torch.
"""
