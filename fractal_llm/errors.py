"""FractalLLMError: the one base of the project's errors for bad input (a config value, a sweep, a record
directory, a plan). Its message names the field, the value and what is allowed. The CLI (fractal_llm/cli.py)
catches it once: one `error:` line and exit 2, no traceback. It is a ValueError, as each of them was before.
"""


class FractalLLMError(ValueError):
    """Bad input, refused before any expensive work; the message says what to change."""
