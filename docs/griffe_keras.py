"""Griffe extension: read Keras-style `Example:` docstring sections as examples.

Keras docstrings end with an `Example:` title followed by an unindented `>>>` doctest; the
Google-style parser only knows an indented `Examples:` section, and would otherwise render
the doctest as plain Markdown (where `['a', 'b']` even looks like a link).
"""

import re

import griffe

_TITLE = re.compile(r"^Examples?:[ \t]*$")
_NEXT_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:[ \t]*$")


def keras_examples_to_google(text: str) -> str:
    """Rewrites an `Example:` section with an unindented body as an indented `Examples:`."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not _TITLE.match(line):
            continue
        body_start = i + 1
        while body_start < len(lines) and not lines[body_start].strip():
            body_start += 1
        if body_start >= len(lines) or lines[body_start].startswith((" ", "\t")):
            return text  # already Google style
        end = body_start
        while end < len(lines) and not _NEXT_SECTION.match(lines[end]):
            end += 1
        body = ["    " + x if x.strip() else x for x in lines[body_start:end]]
        return "\n".join(lines[:i] + ["Examples:"] + body + lines[end:])
    return text


class KerasExampleSections(griffe.Extension):
    """Applies `keras_examples_to_google` to every docstring before it is parsed."""

    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = keras_examples_to_google(obj.docstring.value)
