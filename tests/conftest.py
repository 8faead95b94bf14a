import os

# Progress bars off in tests: their output is noise in pytest logs.
os.environ.setdefault("SPECROLL_PROGRESS", "0")
