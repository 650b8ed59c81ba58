"""Griffe extension: read Keras-style `Example:` docstring sections as examples.

Keras docstrings title their runnable snippet `Example:`; the Google-style parser only
knows `Examples:`, and would render the `>>>` lines as plain Markdown.
"""

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class KerasExampleSections(griffe.Extension):
    """Renames `Example:` section titles to `Examples:` before the docstring is parsed."""

    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
