"""The orchestrator: the CLI, the pipeline and the Python API. It sits above every stage and is the
only part of `pocketml/` that imports them; the rest of `pocketml/` is the vocabulary every stage
shares and imports no stage (tests/pocketml/test_layering.py holds both to that).
"""
