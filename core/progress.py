"""The one shape of progress report: long work in `core` takes a callback instead of drawing anything."""

from collections.abc import Callable

# progress(done, total, message): `done` of `total` steps, and a sentence for a person.
Progress = Callable[[int, int, str], None]
