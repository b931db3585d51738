# SPDX-License-Identifier: Apache-2.0
"""Moving the pin (``--update-pin VERSION``): the llama.cpp of another llama-cpp-python release becomes
the pinned one. It writes ``pins.json`` and the regenerated declarations, and nothing else.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from llamabuild import cdef, paths, pins, probe
from llamabuild import source as sources
from llamabuild.files import fresh_log, sha256_file, write_text_atomic
from llamabuild.report import BuildError

#: The pinned declarations, identical, relative to the checkout.
PIN_FILES = ("include/llama.cdef.h", "embellama/_native/llama.cdef.h")
#: The pins, relative to the checkout (read by llamabuild.pins, embellama's compat module and noxfile.py).
PINS_FILE = "build_backend/llamabuild/pins.json"


def pinned_label(commit: str) -> str:
    """What the pinned declarations' heading names as their source."""
    return f"llama.cpp {commit} include/llama.h"


def update_pin(
    version: str,
    cache_dir: Path,
    *,
    commit: str | None = None,
    write: bool = True,
    root: Path | None = None,
) -> str:
    """Move the pin to the llama.cpp that llama-cpp-python ``version`` vendors; return the diff.

    Fetches that sdist, regenerates the pinned declarations from its llama.h and measures
    their struct layout with the probe. With ``write``, writes the two copies of the
    declarations (:data:`PIN_FILES`) and the pins (:data:`PINS_FILE`: version, sdist sha256,
    commit, llama.h sha256, the window ending at ``version``) into the checkout ``root``
    (default: this one). The next ``python build_llama.py`` builds it and records the layout
    in the manifest. ``commit`` is the full llama.cpp commit when known (the sdist's
    CHANGELOG abbreviates it; ``--source git`` needs the full one).
    """
    root = paths.ROOT if root is None else root
    pins_file = root / PINS_FILE
    if not pins_file.is_file():
        raise BuildError(f"--update-pin edits a checkout of embellama, and {root} is none (no {PINS_FILE})")
    logs = cache_dir / "update-pin"
    logs.mkdir(parents=True, exist_ok=True)
    source = sources.fetch_sdist_version(version, cache_dir, fresh_log(logs / "source.log"))
    commit = commit or source.commit
    if not commit:
        raise BuildError(f"the CHANGELOG of {pins.PROJECT} {version} names no llama.cpp commit: pass --commit")
    if not source.sdist_sha256:
        raise BuildError(f"the {pins.PROJECT} {version} sdist was not checked (no sha256 recorded)")
    header = source.directory / "include" / "llama.h"
    text = cdef.generate_cdef(header, pinned_label(commit))
    layout, _ = probe.run_probe(
        source.directory,
        logs / "probe",
        cdef.parse_cdef_structs(text),
        [],
        probe.probe_compiler([], logs),
        commit[:12],
        logs / "probe.log",
    )
    old = (root / PIN_FILES[0]).read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(old.splitlines(True), text.splitlines(True), PIN_FILES[0], f"{version}"))
    sizes = ", ".join(f"{name} {entry['size']} B" for name, entry in layout.items())
    if write:
        for rel in PIN_FILES:
            write_text_atomic(root / rel, text)
        moved = pins.read(pins_file).moved(version, commit, source.sdist_sha256, sha256_file(header))
        write_text_atomic(pins_file, pins.dumps(moved))
    return (f"{diff}\n" if diff else "") + f"layout of llama.cpp {commit[:12]}: {sizes}\n"
